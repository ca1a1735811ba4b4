//! `cublasStatus_t` values, and how the driver's codes map onto them.

use ptx_emu_private::CuResult;

pub type cublasStatus_t = u32;

pub const CUBLAS_STATUS_SUCCESS: cublasStatus_t = 0;
pub const CUBLAS_STATUS_NOT_INITIALIZED: cublasStatus_t = 1;
pub const CUBLAS_STATUS_INVALID_VALUE: cublasStatus_t = 7;
pub const CUBLAS_STATUS_EXECUTION_FAILED: cublasStatus_t = 13;
pub const CUBLAS_STATUS_INTERNAL_ERROR: cublasStatus_t = 14;
pub const CUBLAS_STATUS_NOT_SUPPORTED: cublasStatus_t = 15;

/// `Err` carries a status other than success.
pub type Status = Result<(), cublasStatus_t>;

pub fn status_code(status: Status) -> cublasStatus_t {
    status.err().unwrap_or(CUBLAS_STATUS_SUCCESS)
}

/// A driver error from the operation on the stream (a finding, a faulted
/// context, a bad stream): the work did not complete.
pub fn from_driver(_code: CuResult) -> cublasStatus_t {
    CUBLAS_STATUS_EXECUTION_FAILED
}

/// `cublasGetStatusName`.
pub fn name(status: cublasStatus_t) -> &'static std::ffi::CStr {
    match status {
        0 => c"CUBLAS_STATUS_SUCCESS",
        1 => c"CUBLAS_STATUS_NOT_INITIALIZED",
        3 => c"CUBLAS_STATUS_ALLOC_FAILED",
        7 => c"CUBLAS_STATUS_INVALID_VALUE",
        8 => c"CUBLAS_STATUS_ARCH_MISMATCH",
        11 => c"CUBLAS_STATUS_MAPPING_ERROR",
        13 => c"CUBLAS_STATUS_EXECUTION_FAILED",
        14 => c"CUBLAS_STATUS_INTERNAL_ERROR",
        15 => c"CUBLAS_STATUS_NOT_SUPPORTED",
        16 => c"CUBLAS_STATUS_LICENSE_ERROR",
        _ => c"CUBLAS_STATUS_UNKNOWN",
    }
}

/// `cublasGetStatusString`.
pub fn description(status: cublasStatus_t) -> &'static std::ffi::CStr {
    match status {
        0 => c"the operation completed successfully",
        1 => c"the library was not initialized",
        3 => c"the resource allocation failed",
        7 => c"an invalid numeric value was used as an argument",
        8 => c"an absent device architectural feature is required",
        11 => c"an access to GPU memory space failed",
        13 => c"the GPU program failed to execute",
        14 => c"an internal operation failed",
        15 => c"the functionality requested is not supported",
        16 => c"error detected trying to check the license",
        _ => c"unknown error",
    }
}
