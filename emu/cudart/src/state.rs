//! The runtime's per-thread state (the last error, the launch configurations
//! pushed by `<<<>>>`, the selected device) and its context: the device's
//! primary context, made current on a thread that has none, as NVIDIA's
//! runtime does; a context the program made current itself (cudarc's) is
//! used as it is, so runtime calls share the driver API's streams and memory.

use crate::driver::{self, CuContext, CuResult, CuStream};
use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_uint};
use std::sync::OnceLock;

pub type CudaError = c_uint;
pub const CUDA_SUCCESS: CudaError = 0;
pub const CUDA_ERROR_INVALID_VALUE: CudaError = 1;
pub const CUDA_ERROR_INVALID_CONFIGURATION: CudaError = 9;
pub const CUDA_ERROR_MISSING_CONFIGURATION: CudaError = 52;
pub const CUDA_ERROR_INVALID_DEVICE_FUNCTION: CudaError = 98;
pub const CUDA_ERROR_INVALID_DEVICE: CudaError = 101;
pub const CUDA_ERROR_NO_KERNEL_IMAGE_FOR_DEVICE: CudaError = 209;
pub const CUDA_ERROR_INVALID_PTX: CudaError = 218;
pub const CUDA_ERROR_UNKNOWN: CudaError = 999;

/// `dim3`, passed by value as nvcc's host code does.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Dim3 {
    pub x: c_uint,
    pub y: c_uint,
    pub z: c_uint,
}

/// One `<<<grid, block, shared, stream>>>`, pushed before the host stub runs.
#[derive(Clone, Copy)]
pub struct LaunchConfig {
    pub grid: Dim3,
    pub block: Dim3,
    pub shared_bytes: usize,
    pub stream: CuStream,
}

thread_local! {
    static LAST_ERROR: Cell<CudaError> = const { Cell::new(CUDA_SUCCESS) };
    static CONFIGS: RefCell<Vec<LaunchConfig>> = const { RefCell::new(Vec::new()) };
    static DEVICE: Cell<c_int> = const { Cell::new(0) };
}

/// Runs an entry point's body: records a failure as the thread's last error
/// (what `cudaGetLastError` returns) and turns a panic into
/// `cudaErrorUnknown` rather than unwinding into C.
pub fn entry(body: impl FnOnce() -> Result<(), CudaError>) -> CudaError {
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(())) => CUDA_SUCCESS,
        Ok(Err(code)) => code,
        Err(_) => CUDA_ERROR_UNKNOWN,
    };
    if code != CUDA_SUCCESS {
        LAST_ERROR.with(|last| last.set(code));
    }
    code
}

/// The last error, reset to success when `reset`.
pub fn last_error(reset: bool) -> CudaError {
    LAST_ERROR.with(|last| if reset { last.replace(CUDA_SUCCESS) } else { last.get() })
}

pub fn push_config(config: LaunchConfig) {
    CONFIGS.with(|configs| configs.borrow_mut().push(config));
}

pub fn pop_config() -> Option<LaunchConfig> {
    CONFIGS.with(|configs| configs.borrow_mut().pop())
}

pub fn selected_device() -> c_int {
    DEVICE.with(Cell::get)
}

/// `cuInit(0)`, once per process; its result every time.
fn initialized() -> Result<(), CuResult> {
    static INIT: OnceLock<CuResult> = OnceLock::new();
    // SAFETY: plain driver call.
    driver::check(*INIT.get_or_init(|| unsafe { driver::cuInit(0) }))
}

/// The number of devices.
pub fn device_count() -> Result<c_int, CudaError> {
    initialized()?;
    let mut count = 0;
    // SAFETY: `count` is valid for one write.
    driver::check(unsafe { driver::cuDeviceGetCount(&mut count) })?;
    Ok(count)
}

/// The driver's handle of device `ordinal`.
pub fn device(ordinal: c_int) -> Result<driver::CuDevice, CudaError> {
    if ordinal < 0 || ordinal >= device_count()? {
        return Err(CUDA_ERROR_INVALID_DEVICE);
    }
    let mut device = 0;
    // SAFETY: `device` is valid for one write.
    driver::check(unsafe { driver::cuDeviceGet(&mut device, ordinal) })?;
    Ok(device)
}

/// Makes device `ordinal`'s primary context current on this thread.
pub fn select_device(ordinal: c_int) -> Result<(), CudaError> {
    let device = device(ordinal)?;
    let mut context: CuContext = std::ptr::null_mut();
    // SAFETY: `context` is valid for one write.
    driver::check(unsafe { driver::cuDevicePrimaryCtxRetain(&mut context, device) })?;
    // SAFETY: a context the driver just handed out.
    driver::check(unsafe { driver::cuCtxSetCurrent(context) })?;
    DEVICE.with(|d| d.set(ordinal));
    Ok(())
}

/// The thread's current context, the selected device's primary context made
/// current first if there is none.
pub fn context() -> Result<CuContext, CudaError> {
    initialized()?;
    let mut context: CuContext = std::ptr::null_mut();
    // SAFETY: `context` is valid for one write.
    driver::check(unsafe { driver::cuCtxGetCurrent(&mut context) })?;
    if context.is_null() {
        select_device(selected_device())?;
        // SAFETY: as above.
        driver::check(unsafe { driver::cuCtxGetCurrent(&mut context) })?;
    }
    Ok(context)
}
