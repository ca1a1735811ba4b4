//! The runtime API over the driver's: devices, memory, copies, streams and
//! errors. Every call runs in the thread's current context (see `state`),
//! and stream handles are the driver's `CUstream`s, so a stream cudarc
//! created can be passed to code compiled against the runtime.

use crate::driver::{self, CuStream, DevicePtr};
use crate::null_stream::{null_stream_entry_points, NullStream};
use crate::state::{self, entry, CudaError, CUDA_ERROR_INVALID_VALUE};
use std::ffi::{c_char, c_int, c_uint, c_void};

/// CUDA 13.0, as the toolkit the emulator's tests compile with.
const RUNTIME_VERSION: c_int = 13_000;

fn out<T>(pointer: *mut T, value: T) -> Result<(), CudaError> {
    if pointer.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: callers pass a pointer valid for one write (the API's contract).
    unsafe { pointer.write(value) };
    Ok(())
}

/// # Safety
/// `count` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cudaGetDeviceCount(count: *mut c_int) -> CudaError {
    entry(|| out(count, state::device_count()?))
}

/// The device of the thread's current context, else the selected one.
///
/// # Safety
/// `device` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cudaGetDevice(device: *mut c_int) -> CudaError {
    entry(|| {
        let mut current = 0;
        let ordinal = if driver::cuCtxGetDevice(&mut current) == driver::CUDA_SUCCESS {
            current
        } else {
            state::selected_device()
        };
        out(device, ordinal)
    })
}

/// # Safety
/// Any value may be passed.
#[no_mangle]
pub unsafe extern "C" fn cudaSetDevice(device: c_int) -> CudaError {
    entry(|| state::select_device(device))
}

/// The runtime's device attributes are the driver's, same numbers.
///
/// # Safety
/// `value` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cudaDeviceGetAttribute(value: *mut c_int, attribute: c_int, device: c_int) -> CudaError {
    entry(|| {
        let device = state::device(device)?;
        if value.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        driver::check(driver::cuDeviceGetAttribute(value, attribute, device))
    })
}

/// # Safety
/// Takes no pointers.
#[no_mangle]
pub unsafe extern "C" fn cudaDeviceSynchronize() -> CudaError {
    entry(|| {
        state::context()?;
        driver::check(driver::cuCtxSynchronize())
    })
}

/// # Safety
/// `version` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cudaRuntimeGetVersion(version: *mut c_int) -> CudaError {
    entry(|| out(version, RUNTIME_VERSION))
}

/// # Safety
/// `version` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cudaDriverGetVersion(version: *mut c_int) -> CudaError {
    entry(|| {
        if version.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        driver::check(driver::cuDriverGetVersion(version))
    })
}

/// `cudaMalloc(&p, 0)` succeeds with a null pointer, as NVIDIA's runtime.
///
/// # Safety
/// `pointer` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cudaMalloc(pointer: *mut *mut c_void, bytes: usize) -> CudaError {
    entry(|| {
        state::context()?;
        let mut address: DevicePtr = 0;
        if bytes > 0 {
            driver::check(driver::cuMemAlloc_v2(&mut address, bytes))?;
        }
        out(pointer, address as *mut c_void)
    })
}

/// # Safety
/// `pointer` is null or a device allocation.
#[no_mangle]
pub unsafe extern "C" fn cudaFree(pointer: *mut c_void) -> CudaError {
    entry(|| {
        if pointer.is_null() {
            return Ok(());
        }
        state::context()?;
        driver::check(driver::cuMemFree_v2(pointer as DevicePtr))
    })
}

unsafe fn malloc_async(
    pointer: *mut *mut c_void,
    bytes: usize,
    stream: CuStream,
    null_stream: NullStream,
) -> Result<(), CudaError> {
    state::context()?;
    let mut address: DevicePtr = 0;
    driver::check(driver::cuMemAllocAsync(&mut address, bytes, null_stream.resolve(stream)))?;
    out(pointer, address as *mut c_void)
}

unsafe fn free_async(pointer: *mut c_void, stream: CuStream, null_stream: NullStream) -> Result<(), CudaError> {
    driver::check(driver::cuMemFreeAsync(pointer as DevicePtr, null_stream.resolve(stream)))
}

/// Synchronous: the legacy entry point with the driver's synchronous call,
/// the per-thread one ordered on the thread's default stream and waiting
/// for it.
unsafe fn memset(pointer: *mut c_void, value: c_int, count: usize, null_stream: NullStream) -> Result<(), CudaError> {
    state::context()?;
    match null_stream.synchronous() {
        None => driver::check(driver::cuMemsetD8_v2(pointer as DevicePtr, value as u8, count)),
        Some(stream) => {
            driver::check(driver::cuMemsetD8Async(pointer as DevicePtr, value as u8, count, stream))?;
            driver::check(driver::cuStreamSynchronize(stream))
        }
    }
}

unsafe fn memset_async(
    pointer: *mut c_void,
    value: c_int,
    count: usize,
    stream: CuStream,
    null_stream: NullStream,
) -> Result<(), CudaError> {
    driver::check(driver::cuMemsetD8Async(pointer as DevicePtr, value as u8, count, null_stream.resolve(stream)))
}

null_stream_entry_points! {
    malloc_async(pointer: *mut *mut c_void, bytes: usize, stream: CuStream) => {
        /// # Safety
        /// `pointer` is valid for one write.
        cudaMallocAsync / cudaMallocAsync_ptsz;
    }
    free_async(pointer: *mut c_void, stream: CuStream) => {
        /// # Safety
        /// `pointer` is null or a device allocation.
        cudaFreeAsync / cudaFreeAsync_ptsz;
    }
    memset(pointer: *mut c_void, value: c_int, count: usize) => {
        /// # Safety
        /// `pointer` is a device address of `count` bytes.
        cudaMemset / cudaMemset_ptds;
    }
    memset_async(pointer: *mut c_void, value: c_int, count: usize, stream: CuStream) => {
        /// # Safety
        /// `pointer` is a device address of `count` bytes.
        cudaMemsetAsync / cudaMemsetAsync_ptsz;
    }
}

/// `cudaMemcpyKind`.
const HOST_TO_HOST: c_int = 0;
const HOST_TO_DEVICE: c_int = 1;
const DEVICE_TO_HOST: c_int = 2;
const DEVICE_TO_DEVICE: c_int = 3;
const DEFAULT: c_int = 4;

/// Whether `pointer` lies in a device allocation (what `cudaMemcpyDefault`
/// infers the direction from).
unsafe fn is_device(pointer: *const c_void) -> bool {
    let mut memory_type: c_uint = 0;
    // CU_POINTER_ATTRIBUTE_MEMORY_TYPE; CU_MEMORYTYPE_DEVICE = 2.
    let known = driver::cuPointerGetAttribute((&mut memory_type as *mut c_uint).cast(), 2, pointer as DevicePtr);
    known == driver::CUDA_SUCCESS && memory_type == 2
}

/// One copy, ordered on `stream` when there is one (else synchronous).
unsafe fn copy(
    destination: *mut c_void,
    source: *const c_void,
    bytes: usize,
    kind: c_int,
    stream: Option<CuStream>,
) -> Result<(), CudaError> {
    state::context()?;
    let kind = match kind {
        DEFAULT => match (is_device(destination), is_device(source)) {
            (false, false) => HOST_TO_HOST,
            (true, false) => HOST_TO_DEVICE,
            (false, true) => DEVICE_TO_HOST,
            (true, true) => DEVICE_TO_DEVICE,
        },
        other => other,
    };
    let (to, from) = (destination as DevicePtr, source as DevicePtr);
    driver::check(match (kind, stream) {
        (HOST_TO_HOST, stream) => {
            if let Some(stream) = stream {
                driver::check(driver::cuStreamSynchronize(stream))?;
            }
            if bytes > 0 && (destination.is_null() || source.is_null()) {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            std::ptr::copy(source.cast::<u8>(), destination.cast::<u8>(), bytes);
            driver::CUDA_SUCCESS
        }
        (HOST_TO_DEVICE, None) => driver::cuMemcpyHtoD_v2(to, source, bytes),
        (HOST_TO_DEVICE, Some(s)) => driver::cuMemcpyHtoDAsync_v2(to, source, bytes, s),
        (DEVICE_TO_HOST, None) => driver::cuMemcpyDtoH_v2(destination, from, bytes),
        (DEVICE_TO_HOST, Some(s)) => driver::cuMemcpyDtoHAsync_v2(destination, from, bytes, s),
        (DEVICE_TO_DEVICE, None) => driver::cuMemcpyDtoD_v2(to, from, bytes),
        (DEVICE_TO_DEVICE, Some(s)) => driver::cuMemcpyDtoDAsync_v2(to, from, bytes, s),
        _ => return Err(CUDA_ERROR_INVALID_VALUE),
    })
}

/// Synchronous, as [`memset`].
unsafe fn memcpy(
    destination: *mut c_void,
    source: *const c_void,
    bytes: usize,
    kind: c_int,
    null_stream: NullStream,
) -> Result<(), CudaError> {
    let stream = null_stream.synchronous();
    copy(destination, source, bytes, kind, stream)?;
    match stream {
        None => Ok(()),
        Some(stream) => driver::check(driver::cuStreamSynchronize(stream)),
    }
}

unsafe fn memcpy_async(
    destination: *mut c_void,
    source: *const c_void,
    bytes: usize,
    kind: c_int,
    stream: CuStream,
    null_stream: NullStream,
) -> Result<(), CudaError> {
    copy(destination, source, bytes, kind, Some(null_stream.resolve(stream)))
}

null_stream_entry_points! {
    memcpy(destination: *mut c_void, source: *const c_void, bytes: usize, kind: c_int) => {
        /// # Safety
        /// The addresses hold `bytes` bytes on the sides `kind` names.
        cudaMemcpy / cudaMemcpy_ptds;
    }
    memcpy_async(destination: *mut c_void, source: *const c_void, bytes: usize, kind: c_int, stream: CuStream) => {
        /// # Safety
        /// As [`cudaMemcpy`].
        cudaMemcpyAsync / cudaMemcpyAsync_ptsz;
    }
}

/// # Safety
/// `stream` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cudaStreamCreate(stream: *mut CuStream) -> CudaError {
    cudaStreamCreateWithFlags(stream, 0)
}

/// # Safety
/// `stream` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cudaStreamCreateWithFlags(stream: *mut CuStream, flags: c_uint) -> CudaError {
    entry(|| {
        state::context()?;
        if stream.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        driver::check(driver::cuStreamCreate(stream, flags))
    })
}

/// # Safety
/// Any handle may be passed; the driver checks it.
#[no_mangle]
pub unsafe extern "C" fn cudaStreamDestroy(stream: CuStream) -> CudaError {
    entry(|| driver::check(driver::cuStreamDestroy_v2(stream)))
}

unsafe fn stream_synchronize(stream: CuStream, null_stream: NullStream) -> Result<(), CudaError> {
    state::context()?;
    driver::check(driver::cuStreamSynchronize(null_stream.resolve(stream)))
}

null_stream_entry_points! {
    stream_synchronize(stream: CuStream) => {
        /// # Safety
        /// Any handle may be passed; the driver checks it.
        cudaStreamSynchronize / cudaStreamSynchronize_ptsz;
    }
}

/// Returns the thread's last error and resets it.
///
/// # Safety
/// Takes no pointers.
#[no_mangle]
pub unsafe extern "C" fn cudaGetLastError() -> CudaError {
    state::last_error(true)
}

/// Returns the thread's last error, leaving it.
///
/// # Safety
/// Takes no pointers.
#[no_mangle]
pub unsafe extern "C" fn cudaPeekAtLastError() -> CudaError {
    state::last_error(false)
}

/// The driver's description of the code (the runtime's codes are the
/// driver's for every code the emulator returns).
///
/// # Safety
/// Any value may be passed.
#[no_mangle]
pub unsafe extern "C" fn cudaGetErrorString(error: CudaError) -> *const c_char {
    let mut text: *const c_char = std::ptr::null();
    if driver::cuGetErrorString(error, &mut text) == driver::CUDA_SUCCESS && !text.is_null() {
        return text;
    }
    c"unrecognized error code".as_ptr()
}

/// The error's enumerator name.
///
/// # Safety
/// Any value may be passed.
#[no_mangle]
pub unsafe extern "C" fn cudaGetErrorName(error: CudaError) -> *const c_char {
    crate::names::error_name(error).as_ptr()
}
