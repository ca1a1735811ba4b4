//! Device and page-locked host memory: allocation, copies, memsets,
//! pointer attributes. Every operation completes before the call returns,
//! the `Async` forms included (the stream is only validated).

use crate::context::CUcontext;
use crate::guard::{ffi_guard, write_out};
use crate::leaks::AllocationSite;
use crate::result::{
    CUresult, DriverResult, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_NOT_SUPPORTED, CUDA_ERROR_OUT_OF_MEMORY,
};
use crate::state::{driver, handle_of, pointer_of, DeviceState, Handle};
use crate::stream::CUstream;
use ptx_emu::memory::MemError;
use std::alloc::Layout;
use std::ffi::{c_uint, c_void};

/// `CUdeviceptr`: a device address.
pub type CUdeviceptr = u64;

/// Alignment of page-locked host allocations (a page, as the driver gives).
const HOST_ALLOCATION_ALIGN: usize = 4096;

/// Maps a refused memory operation to the code the driver returns for it.
pub fn mem_error_code(error: &MemError) -> CUresult {
    match error {
        MemError::OutOfMemory { .. } => CUDA_ERROR_OUT_OF_MEMORY,
        MemError::NotAnAllocation { .. } | MemError::OutOfBounds { .. } => CUDA_ERROR_INVALID_VALUE,
    }
}

fn mem_result<T>(result: Result<T, MemError>) -> DriverResult<T> {
    result.map_err(|error| mem_error_code(&error))
}

/// Common prologue of a stream-ordered operation: a healthy current context
/// and a valid stream.
fn begin(state: &DeviceState, stream: CUstream) -> DriverResult<Handle> {
    let context = state.current_healthy()?;
    state.check_stream(handle_of(stream))?;
    Ok(context)
}

/// How an allocation call answers a request for zero bytes.
#[derive(Clone, Copy, PartialEq)]
enum ZeroBytes {
    /// `cuMemAlloc`: `CUDA_ERROR_INVALID_VALUE`, as its documentation says.
    Refused,
    /// `cuMemAllocAsync`: success and the null pointer, as the driver does
    /// (cudarc's `CudaStream::null` and candle's empty tensors rely on it);
    /// freeing that pointer on a stream is a no-op.
    Null,
}

fn alloc(
    pointer: *mut CUdeviceptr,
    bytes: usize,
    stream: CUstream,
    zero: ZeroBytes,
    call: &'static str,
) -> DriverResult {
    let mut state = driver().lock()?;
    let context = begin(&state, stream)?;
    if pointer.is_null() || (bytes == 0 && zero == ZeroBytes::Refused) {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    if bytes == 0 {
        // SAFETY: checked non-null; the caller guarantees it is writable.
        return unsafe { write_out(pointer, 0) };
    }
    let address = mem_result(driver().memory().alloc(bytes as u64))?;
    state.allocations.insert(address, context);
    state.allocations_made += 1;
    let site = AllocationSite::record(call, state.allocations_made, bytes as u64);
    state.allocation_sites.insert(address, site);
    // SAFETY: checked non-null; the caller guarantees it is writable.
    unsafe { write_out(pointer, address) }
}

fn free(address: CUdeviceptr, stream: CUstream, zero: ZeroBytes) -> DriverResult {
    let mut state = driver().lock()?;
    let context = state.current()?;
    state.check_stream(handle_of(stream))?;
    if address == 0 && zero == ZeroBytes::Null {
        return state.check_healthy(context);
    }
    state.allocation_sites.remove(&address);
    if state.allocations.remove(&address).is_none() {
        // As compute-sanitizer reports an invalid free: what the pointer is.
        let why = match state.modules.values().find_map(|m| m.module.global_containing(address)) {
            Some(name) => format!("it is module global `{name}`, freed with its module"),
            None => driver().memory().describe_bad_free(address),
        };
        eprintln!("ptx-emu: invalid free: {address:#x} is not a live allocation of cuMemAlloc: {why}");
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    mem_result(driver().memory().free(address))?;
    // Freed even in a faulted context (no leak), but the fault is reported,
    // as a real device reports it from every call.
    state.check_healthy(context)
}

/// # Safety
/// `pointer` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(pointer: *mut CUdeviceptr, bytes: usize) -> CUresult {
    ffi_guard(|| alloc(pointer, bytes, std::ptr::null_mut(), ZeroBytes::Refused, "cuMemAlloc_v2"))
}

/// # Safety
/// `pointer` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocAsync(pointer: *mut CUdeviceptr, bytes: usize, stream: CUstream) -> CUresult {
    ffi_guard(|| alloc(pointer, bytes, stream, ZeroBytes::Null, "cuMemAllocAsync"))
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuMemFree_v2(address: CUdeviceptr) -> CUresult {
    ffi_guard(|| free(address, std::ptr::null_mut(), ZeroBytes::Refused))
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuMemFreeAsync(address: CUdeviceptr, stream: CUstream) -> CUresult {
    ffi_guard(|| free(address, stream, ZeroBytes::Null))
}

/// # Safety
/// `free` and `total` must be null or valid for one write each.
#[no_mangle]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    ffi_guard(|| {
        driver().lock()?.current()?;
        let memory = driver().memory();
        if free.is_null() || total.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        write_out(free, memory.capacity().saturating_sub(memory.used()) as usize)?;
        write_out(total, memory.capacity() as usize)
    })
}

/// # Safety
/// `source` must be valid for `bytes` bytes of reads.
unsafe fn copy_host_to_device(
    destination: CUdeviceptr,
    source: *const c_void,
    bytes: usize,
    stream: CUstream,
) -> DriverResult {
    let state = driver().lock()?;
    begin(&state, stream)?;
    if bytes == 0 {
        return Ok(());
    }
    if source.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let data = std::slice::from_raw_parts(source.cast::<u8>(), bytes);
    mem_result(driver().memory().write(destination, data))
}

/// # Safety
/// `destination` must be valid for `bytes` bytes of writes.
unsafe fn copy_device_to_host(
    destination: *mut c_void,
    source: CUdeviceptr,
    bytes: usize,
    stream: CUstream,
) -> DriverResult {
    let state = driver().lock()?;
    begin(&state, stream)?;
    if bytes == 0 {
        return Ok(());
    }
    if destination.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let out = std::slice::from_raw_parts_mut(destination.cast::<u8>(), bytes);
    mem_result(driver().memory().read(source, out))
}

fn copy_device_to_device(
    destination: CUdeviceptr,
    source: CUdeviceptr,
    bytes: usize,
    stream: CUstream,
) -> DriverResult {
    let state = driver().lock()?;
    begin(&state, stream)?;
    if bytes == 0 {
        return Ok(());
    }
    mem_result(driver().memory().copy(destination, source, bytes as u64))
}

fn memset(destination: CUdeviceptr, value: u32, element_bytes: u32, count: usize, stream: CUstream) -> DriverResult {
    let state = driver().lock()?;
    begin(&state, stream)?;
    if count == 0 {
        return Ok(());
    }
    if destination % u64::from(element_bytes) != 0 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    mem_result(driver().memory().memset(destination, value, element_bytes, count as u64))
}

/// # Safety
/// `source` must be valid for `bytes` bytes of reads.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(destination: CUdeviceptr, source: *const c_void, bytes: usize) -> CUresult {
    ffi_guard(|| copy_host_to_device(destination, source, bytes, std::ptr::null_mut()))
}

/// # Safety
/// `source` must be valid for `bytes` bytes of reads.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(
    destination: CUdeviceptr,
    source: *const c_void,
    bytes: usize,
    stream: CUstream,
) -> CUresult {
    ffi_guard(|| copy_host_to_device(destination, source, bytes, stream))
}

/// # Safety
/// `destination` must be valid for `bytes` bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(destination: *mut c_void, source: CUdeviceptr, bytes: usize) -> CUresult {
    ffi_guard(|| copy_device_to_host(destination, source, bytes, std::ptr::null_mut()))
}

/// # Safety
/// `destination` must be valid for `bytes` bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(
    destination: *mut c_void,
    source: CUdeviceptr,
    bytes: usize,
    stream: CUstream,
) -> CUresult {
    ffi_guard(|| copy_device_to_host(destination, source, bytes, stream))
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoD_v2(destination: CUdeviceptr, source: CUdeviceptr, bytes: usize) -> CUresult {
    ffi_guard(|| copy_device_to_device(destination, source, bytes, std::ptr::null_mut()))
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoDAsync_v2(
    destination: CUdeviceptr,
    source: CUdeviceptr,
    bytes: usize,
    stream: CUstream,
) -> CUresult {
    ffi_guard(|| copy_device_to_device(destination, source, bytes, stream))
}

/// A copy between two contexts' memory. Every context lives on the one
/// emulated device and shares its memory, so this is a device-to-device copy
/// (the contexts are not otherwise checked: any pointer is range-checked by
/// the copy itself).
///
/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyPeerAsync(
    destination: CUdeviceptr,
    _destination_context: CUcontext,
    source: CUdeviceptr,
    _source_context: CUcontext,
    bytes: usize,
    stream: CUstream,
) -> CUresult {
    ffi_guard(|| copy_device_to_device(destination, source, bytes, stream))
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8_v2(destination: CUdeviceptr, value: u8, count: usize) -> CUresult {
    ffi_guard(|| memset(destination, value.into(), 1, count, std::ptr::null_mut()))
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD16_v2(destination: CUdeviceptr, value: u16, count: usize) -> CUresult {
    ffi_guard(|| memset(destination, value.into(), 2, count, std::ptr::null_mut()))
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD32_v2(destination: CUdeviceptr, value: u32, count: usize) -> CUresult {
    ffi_guard(|| memset(destination, value, 4, count, std::ptr::null_mut()))
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8Async(
    destination: CUdeviceptr,
    value: u8,
    count: usize,
    stream: CUstream,
) -> CUresult {
    ffi_guard(|| memset(destination, value.into(), 1, count, stream))
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD16Async(
    destination: CUdeviceptr,
    value: u16,
    count: usize,
    stream: CUstream,
) -> CUresult {
    ffi_guard(|| memset(destination, value.into(), 2, count, stream))
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD32Async(
    destination: CUdeviceptr,
    value: u32,
    count: usize,
    stream: CUstream,
) -> CUresult {
    ffi_guard(|| memset(destination, value, 4, count, stream))
}

/// Page-locked host memory is ordinary host memory here: every copy is
/// synchronous anyway.
fn host_alloc(pointer: *mut *mut c_void, bytes: usize) -> DriverResult {
    let mut state = driver().lock()?;
    state.current()?;
    if pointer.is_null() || bytes == 0 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let layout = Layout::from_size_align(bytes, HOST_ALLOCATION_ALIGN).map_err(|_| CUDA_ERROR_OUT_OF_MEMORY)?;
    // SAFETY: the layout has a non-zero size.
    let allocation = unsafe { std::alloc::alloc_zeroed(layout) };
    if allocation.is_null() {
        return Err(CUDA_ERROR_OUT_OF_MEMORY);
    }
    state.host_allocations.insert(allocation as usize, layout);
    // SAFETY: checked non-null; the caller guarantees it is writable.
    unsafe { write_out(pointer, allocation.cast()) }
}

/// # Safety
/// `pointer` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocHost_v2(pointer: *mut *mut c_void, bytes: usize) -> CUresult {
    ffi_guard(|| host_alloc(pointer, bytes))
}

/// Flags (portable, device-mapped, write-combined) change nothing on the
/// emulator; device-mapped access is not supported (attribute
/// CAN_MAP_HOST_MEMORY reads 0), so that flag is refused.
///
/// # Safety
/// `pointer` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuMemHostAlloc(pointer: *mut *mut c_void, bytes: usize, flags: c_uint) -> CUresult {
    const CU_MEMHOSTALLOC_DEVICEMAP: c_uint = 0x02;
    ffi_guard(|| {
        if flags & CU_MEMHOSTALLOC_DEVICEMAP != 0 {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        host_alloc(pointer, bytes)
    })
}

/// # Safety
/// `pointer` must come from `cuMemAllocHost_v2`/`cuMemHostAlloc` (anything
/// else is refused with `CUDA_ERROR_INVALID_VALUE`).
#[no_mangle]
pub unsafe extern "C" fn cuMemFreeHost(pointer: *mut c_void) -> CUresult {
    ffi_guard(|| {
        let mut state = driver().lock()?;
        let layout = state.host_allocations.remove(&(pointer as usize)).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        std::alloc::dealloc(pointer.cast(), layout);
        Ok(())
    })
}

/// `CU_POINTER_ATTRIBUTE_*` values answered.
const POINTER_ATTRIBUTE_CONTEXT: c_uint = 1;
const POINTER_ATTRIBUTE_MEMORY_TYPE: c_uint = 2;
const POINTER_ATTRIBUTE_DEVICE_POINTER: c_uint = 3;
const POINTER_ATTRIBUTE_DEVICE_ORDINAL: c_uint = 9;
const POINTER_ATTRIBUTE_RANGE_START_ADDR: c_uint = 11;
const POINTER_ATTRIBUTE_RANGE_SIZE: c_uint = 12;
const CU_MEMORYTYPE_DEVICE: c_uint = 2;

/// Device pointers only (anything else: `CUDA_ERROR_INVALID_VALUE`); the
/// attributes answered are context, memory type, device pointer, device
/// ordinal and the allocation's range; others `CUDA_ERROR_NOT_SUPPORTED`.
///
/// # Safety
/// `data` must be null or valid for a write of the attribute's type.
#[no_mangle]
pub unsafe extern "C" fn cuPointerGetAttribute(data: *mut c_void, attribute: c_uint, pointer: CUdeviceptr) -> CUresult {
    ffi_guard(|| {
        let state = driver().lock()?;
        if data.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let (base, size) = driver().memory().allocation_containing(pointer).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let owner = *state.allocations.get(&base).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        match attribute {
            POINTER_ATTRIBUTE_CONTEXT => write_out(data.cast::<CUcontext>(), pointer_of(owner)),
            POINTER_ATTRIBUTE_MEMORY_TYPE => write_out(data.cast::<c_uint>(), CU_MEMORYTYPE_DEVICE),
            POINTER_ATTRIBUTE_DEVICE_POINTER => write_out(data.cast::<CUdeviceptr>(), pointer),
            POINTER_ATTRIBUTE_DEVICE_ORDINAL => write_out(data.cast::<i32>(), 0),
            POINTER_ATTRIBUTE_RANGE_START_ADDR => write_out(data.cast::<CUdeviceptr>(), base),
            POINTER_ATTRIBUTE_RANGE_SIZE => write_out(data.cast::<usize>(), size as usize),
            _ => Err(CUDA_ERROR_NOT_SUPPORTED),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_errors_map_to_driver_codes() {
        let oom = MemError::OutOfMemory { requested: 10, available: 5 };
        assert_eq!(mem_error_code(&oom), CUDA_ERROR_OUT_OF_MEMORY);
        assert_eq!(mem_error_code(&MemError::NotAnAllocation { addr: 0x10 }), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(mem_error_code(&MemError::OutOfBounds { addr: 0x10, len: 4 }), CUDA_ERROR_INVALID_VALUE);
    }
}
