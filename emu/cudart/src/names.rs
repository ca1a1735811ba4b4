//! `cudaGetErrorName`'s answers: the runtime's enumerator names for the codes
//! the emulated runtime and driver return.

use std::ffi::CStr;

const NAMES: [(u32, &CStr); 22] = [
    (0, c"cudaSuccess"),
    (1, c"cudaErrorInvalidValue"),
    (2, c"cudaErrorMemoryAllocation"),
    (3, c"cudaErrorInitializationError"),
    (4, c"cudaErrorCudartUnloading"),
    (9, c"cudaErrorInvalidConfiguration"),
    (52, c"cudaErrorMissingConfiguration"),
    (98, c"cudaErrorInvalidDeviceFunction"),
    (100, c"cudaErrorNoDevice"),
    (101, c"cudaErrorInvalidDevice"),
    (201, c"cudaErrorDeviceUninitialized"),
    (209, c"cudaErrorNoKernelImageForDevice"),
    (218, c"cudaErrorInvalidPtx"),
    (400, c"cudaErrorInvalidResourceHandle"),
    (500, c"cudaErrorSymbolNotFound"),
    (600, c"cudaErrorNotReady"),
    (700, c"cudaErrorIllegalAddress"),
    (701, c"cudaErrorLaunchOutOfResources"),
    (710, c"cudaErrorAssert"),
    (715, c"cudaErrorIllegalInstruction"),
    (719, c"cudaErrorLaunchFailure"),
    (999, c"cudaErrorUnknown"),
];

pub fn error_name(code: u32) -> &'static CStr {
    NAMES.iter().find(|(known, _)| *known == code).map_or(c"unrecognized error code", |(_, name)| name)
}
