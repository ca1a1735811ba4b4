//! The driver API of the emulated `libcuda.so` that the runtime is built on
//! (the names are listed in `driver_names.rs` for the link-time stub).

use std::ffi::{c_char, c_int, c_uint, c_void};

pub type CuResult = c_uint;
pub type CuDevice = c_int;
pub type CuContext = *mut c_void;
pub type CuModule = *mut c_void;
pub type CuFunction = *mut c_void;
pub type CuStream = *mut c_void;
pub type DevicePtr = u64;

pub const CUDA_SUCCESS: CuResult = 0;
pub const CUDA_ERROR_INVALID_VALUE: CuResult = 1;

extern "C" {
    pub fn cuInit(flags: c_uint) -> CuResult;
    pub fn cuDriverGetVersion(version: *mut c_int) -> CuResult;
    pub fn cuDeviceGet(device: *mut CuDevice, ordinal: c_int) -> CuResult;
    pub fn cuDeviceGetCount(count: *mut c_int) -> CuResult;
    pub fn cuDeviceGetAttribute(value: *mut c_int, attribute: c_int, device: CuDevice) -> CuResult;
    pub fn cuDevicePrimaryCtxRetain(context: *mut CuContext, device: CuDevice) -> CuResult;
    pub fn cuCtxGetCurrent(context: *mut CuContext) -> CuResult;
    pub fn cuCtxSetCurrent(context: CuContext) -> CuResult;
    pub fn cuCtxGetDevice(device: *mut CuDevice) -> CuResult;
    pub fn cuCtxSynchronize() -> CuResult;
    pub fn cuModuleLoadData(module: *mut CuModule, image: *const c_void) -> CuResult;
    pub fn cuModuleGetFunction(function: *mut CuFunction, module: CuModule, name: *const c_char) -> CuResult;
    pub fn cuFuncGetAttribute(value: *mut c_int, attribute: c_int, function: CuFunction) -> CuResult;
    pub fn cuFuncSetAttribute(function: CuFunction, attribute: c_int, value: c_int) -> CuResult;
    pub fn cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
        blocks: *mut c_int,
        function: CuFunction,
        block_size: c_int,
        dynamic_shared: usize,
        flags: c_uint,
    ) -> CuResult;
    #[allow(clippy::too_many_arguments)]
    pub fn cuLaunchKernel(
        function: CuFunction,
        grid_x: c_uint,
        grid_y: c_uint,
        grid_z: c_uint,
        block_x: c_uint,
        block_y: c_uint,
        block_z: c_uint,
        shared_bytes: c_uint,
        stream: CuStream,
        params: *mut *mut c_void,
        extra: *mut *mut c_void,
    ) -> CuResult;
    pub fn cuStreamCreate(stream: *mut CuStream, flags: c_uint) -> CuResult;
    pub fn cuStreamDestroy_v2(stream: CuStream) -> CuResult;
    pub fn cuStreamSynchronize(stream: CuStream) -> CuResult;
    pub fn cuMemAlloc_v2(pointer: *mut DevicePtr, bytes: usize) -> CuResult;
    pub fn cuMemFree_v2(pointer: DevicePtr) -> CuResult;
    pub fn cuMemAllocAsync(pointer: *mut DevicePtr, bytes: usize, stream: CuStream) -> CuResult;
    pub fn cuMemFreeAsync(pointer: DevicePtr, stream: CuStream) -> CuResult;
    pub fn cuMemsetD8_v2(pointer: DevicePtr, value: u8, count: usize) -> CuResult;
    pub fn cuMemsetD8Async(pointer: DevicePtr, value: u8, count: usize, stream: CuStream) -> CuResult;
    pub fn cuMemcpyHtoD_v2(destination: DevicePtr, source: *const c_void, bytes: usize) -> CuResult;
    pub fn cuMemcpyDtoH_v2(destination: *mut c_void, source: DevicePtr, bytes: usize) -> CuResult;
    pub fn cuMemcpyDtoD_v2(destination: DevicePtr, source: DevicePtr, bytes: usize) -> CuResult;
    pub fn cuMemcpyHtoDAsync_v2(destination: DevicePtr, source: *const c_void, bytes: usize, s: CuStream) -> CuResult;
    pub fn cuMemcpyDtoHAsync_v2(destination: *mut c_void, source: DevicePtr, bytes: usize, s: CuStream) -> CuResult;
    pub fn cuMemcpyDtoDAsync_v2(destination: DevicePtr, source: DevicePtr, bytes: usize, s: CuStream) -> CuResult;
    pub fn cuPointerGetAttribute(data: *mut c_void, attribute: c_uint, pointer: DevicePtr) -> CuResult;
    pub fn cuGetErrorString(error: CuResult, text: *mut *const c_char) -> CuResult;
}

/// A driver result as a `Result`; the runtime's error codes are the
/// driver's for every code the two share (which is every one the emulated
/// driver returns), so the code passes through unchanged.
pub fn check(code: CuResult) -> Result<(), CuResult> {
    if code == CUDA_SUCCESS {
        Ok(())
    } else {
        Err(code)
    }
}
