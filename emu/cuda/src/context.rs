//! Contexts: the primary context (retained and released, one stable handle)
//! and created ones, and each host thread's stack of current contexts.

use crate::device::CUdevice;
use crate::guard::{ffi_guard, write_out};
use crate::result::{
    CUresult, DriverResult, CUDA_ERROR_INVALID_CONTEXT, CUDA_ERROR_INVALID_DEVICE, CUDA_ERROR_INVALID_VALUE,
    CUDA_ERROR_NOT_SUPPORTED, CUDA_ERROR_UNSUPPORTED_LIMIT,
};
use crate::state::{driver, handle_of, pointer_of, ContextRecord, DeviceState, Handle, PRIMARY_CONTEXT};
use std::cell::RefCell;
use std::ffi::{c_int, c_uint, c_void};

/// `CUcontext`: an opaque handle.
pub type CUcontext = *mut c_void;

/// `CU_CTX_FLAGS_MASK`: the flag bits a context may carry.
const CONTEXT_FLAGS_MASK: c_uint = 0xff;
/// What `cuCtxGetApiVersion` reports: the API version of `cuCtxCreate_v2`
/// and later contexts, as real drivers report it.
const CONTEXT_API_VERSION: c_uint = 3020;

thread_local! {
    /// This host thread's context stack; the top is the current context.
    static CONTEXT_STACK: RefCell<Vec<Handle>> = const { RefCell::new(Vec::new()) };
}

/// The calling thread's current context (not checked for liveness).
pub(crate) fn current_context() -> Option<Handle> {
    CONTEXT_STACK.with(|stack| stack.borrow().last().copied())
}

fn set_current(context: Option<Handle>) {
    CONTEXT_STACK.with(|stack| {
        let mut stack = stack.borrow_mut();
        match (context, stack.last_mut()) {
            (Some(context), Some(top)) => *top = context,
            (Some(context), None) => stack.push(context),
            (None, _) => {
                stack.pop();
            }
        }
    })
}

fn push_current(context: Handle) {
    CONTEXT_STACK.with(|stack| stack.borrow_mut().push(context))
}

fn pop_current() -> Option<Handle> {
    CONTEXT_STACK.with(|stack| stack.borrow_mut().pop())
}

fn forget_on_this_thread(context: Handle) {
    CONTEXT_STACK.with(|stack| stack.borrow_mut().retain(|entry| *entry != context))
}

fn check_device(device: CUdevice) -> DriverResult {
    if device == 0 {
        Ok(())
    } else {
        Err(CUDA_ERROR_INVALID_DEVICE)
    }
}

fn live(state: &DeviceState, context: Handle) -> DriverResult {
    if state.contexts.contains_key(&context) {
        Ok(())
    } else {
        Err(CUDA_ERROR_INVALID_CONTEXT)
    }
}

/// Destroys `context` with everything it owns.
fn tear_down(state: &mut DeviceState, context: Handle) {
    state.tear_down_context(context, driver().memory_if_created());
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuInit(flags: c_uint) -> CUresult {
    ffi_guard(|| {
        if flags != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        driver().initialize();
        Ok(())
    })
}

/// # Safety
/// `context` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(context: *mut CUcontext, device: CUdevice) -> CUresult {
    ffi_guard(|| {
        let mut state = driver().lock()?;
        check_device(device)?;
        if context.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        if state.primary_refcount == 0 {
            let flags = state.primary_flags;
            state.contexts.insert(PRIMARY_CONTEXT, ContextRecord::new(flags));
        }
        state.primary_refcount += 1;
        write_out(context, pointer_of(PRIMARY_CONTEXT))
    })
}

/// The last release destroys the primary context's resources (and clears a
/// sticky fault); the next retain gets the same handle, fresh.
///
/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease_v2(device: CUdevice) -> CUresult {
    ffi_guard(|| {
        let mut state = driver().lock()?;
        check_device(device)?;
        if state.primary_refcount == 0 {
            return Err(CUDA_ERROR_INVALID_CONTEXT);
        }
        state.primary_refcount -= 1;
        if state.primary_refcount == 0 {
            tear_down(&mut state, PRIMARY_CONTEXT);
        }
        Ok(())
    })
}

/// # Safety
/// `flags` and `active` must be null or valid for one write each.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxGetState(
    device: CUdevice,
    flags: *mut c_uint,
    active: *mut c_int,
) -> CUresult {
    ffi_guard(|| {
        let state = driver().lock()?;
        check_device(device)?;
        if flags.is_null() || active.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        write_out(flags, state.primary_flags)?;
        write_out(active, c_int::from(state.primary_refcount > 0))
    })
}

/// Destroys the primary context's resources and clears its sticky fault;
/// callers still holding a retain keep a usable (empty) context.
///
/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxReset_v2(device: CUdevice) -> CUresult {
    ffi_guard(|| {
        let mut state = driver().lock()?;
        check_device(device)?;
        tear_down(&mut state, PRIMARY_CONTEXT);
        if state.primary_refcount > 0 {
            let flags = state.primary_flags;
            state.contexts.insert(PRIMARY_CONTEXT, ContextRecord::new(flags));
        }
        Ok(())
    })
}

fn create_context(context: *mut CUcontext, flags: c_uint, device: CUdevice) -> DriverResult {
    let mut state = driver().lock()?;
    check_device(device)?;
    if context.is_null() || flags & !CONTEXT_FLAGS_MASK != 0 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let handle = state.new_handle();
    state.contexts.insert(handle, ContextRecord::new(flags));
    push_current(handle);
    // SAFETY: checked non-null above; the caller guarantees it is writable.
    unsafe { write_out(context, pointer_of(handle)) }
}

/// # Safety
/// `context` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuCtxCreate_v2(context: *mut CUcontext, flags: c_uint, device: CUdevice) -> CUresult {
    ffi_guard(|| create_context(context, flags, device))
}

/// `CUctxCreateParams` of cuda.h: execution-affinity and CIG parameters,
/// neither of which the emulator supports.
#[repr(C)]
pub struct CUctxCreateParams {
    pub exec_affinity_params: *mut c_void,
    pub num_exec_affinity_params: c_int,
    pub cig_params: *mut c_void,
}

/// # Safety
/// `context` must be null or valid for one write; `params` null or valid for one read.
#[no_mangle]
pub unsafe extern "C" fn cuCtxCreate_v4(
    context: *mut CUcontext,
    params: *mut CUctxCreateParams,
    flags: c_uint,
    device: CUdevice,
) -> CUresult {
    ffi_guard(|| {
        if let Some(params) = params.as_ref() {
            let plain = params.exec_affinity_params.is_null()
                && params.num_exec_affinity_params == 0
                && params.cig_params.is_null();
            if !plain {
                return Err(CUDA_ERROR_NOT_SUPPORTED);
            }
        }
        create_context(context, flags, device)
    })
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuCtxDestroy_v2(context: CUcontext) -> CUresult {
    ffi_guard(|| {
        let mut state = driver().lock()?;
        let handle = handle_of(context);
        // The primary context is released, never destroyed.
        if handle == PRIMARY_CONTEXT {
            return Err(CUDA_ERROR_INVALID_CONTEXT);
        }
        live(&state, handle)?;
        tear_down(&mut state, handle);
        forget_on_this_thread(handle);
        Ok(())
    })
}

/// # Safety
/// `context` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCurrent(context: *mut CUcontext) -> CUresult {
    ffi_guard(|| {
        driver().require_init()?;
        write_out(context, current_context().map_or(std::ptr::null_mut(), pointer_of))
    })
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSetCurrent(context: CUcontext) -> CUresult {
    ffi_guard(|| {
        let state = driver().lock()?;
        if context.is_null() {
            set_current(None);
            return Ok(());
        }
        let handle = handle_of(context);
        live(&state, handle)?;
        set_current(Some(handle));
        Ok(())
    })
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuCtxPushCurrent_v2(context: CUcontext) -> CUresult {
    ffi_guard(|| {
        let state = driver().lock()?;
        let handle = handle_of(context);
        live(&state, handle)?;
        push_current(handle);
        Ok(())
    })
}

/// # Safety
/// `context` must be null or valid for one write (null: the popped handle is dropped).
#[no_mangle]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(context: *mut CUcontext) -> CUresult {
    ffi_guard(|| {
        driver().require_init()?;
        let popped = pop_current().ok_or(CUDA_ERROR_INVALID_CONTEXT)?;
        if !context.is_null() {
            context.write(pointer_of(popped));
        }
        Ok(())
    })
}

/// # Safety
/// `device` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevice(device: *mut CUdevice) -> CUresult {
    ffi_guard(|| {
        driver().lock()?.current()?;
        write_out(device, 0)
    })
}

/// Execution is eager, so there is nothing to wait for: returns the
/// context's sticky fault, if a launch in it faulted.
///
/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSynchronize() -> CUresult {
    ffi_guard(|| driver().lock()?.current_healthy().map(|_| ()))
}

/// # Safety
/// `version` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetApiVersion(context: CUcontext, version: *mut c_uint) -> CUresult {
    ffi_guard(|| {
        let state = driver().lock()?;
        if context.is_null() {
            state.current()?;
        } else {
            live(&state, handle_of(context))?;
        }
        write_out(version, CONTEXT_API_VERSION)
    })
}

/// # Safety
/// `flags` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetFlags(flags: *mut c_uint) -> CUresult {
    ffi_guard(|| {
        let state = driver().lock()?;
        let handle = state.current()?;
        write_out(flags, state.contexts[&handle].flags)
    })
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSetFlags(flags: c_uint) -> CUresult {
    ffi_guard(|| {
        let mut state = driver().lock()?;
        let handle = state.current()?;
        if flags & !CONTEXT_FLAGS_MASK != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        if let Some(record) = state.contexts.get_mut(&handle) {
            record.flags = flags;
        }
        Ok(())
    })
}

/// Stream priorities of an sm_80 device: 0 (lowest) to -5 (highest).
///
/// # Safety
/// Each pointer must be null (not wanted) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetStreamPriorityRange(least: *mut c_int, greatest: *mut c_int) -> CUresult {
    ffi_guard(|| {
        driver().lock()?.current()?;
        if !least.is_null() {
            least.write(0);
        }
        if !greatest.is_null() {
            greatest.write(-5);
        }
        Ok(())
    })
}

/// The default of a `CUlimit` an sm_80 context supports (values of a real
/// device); the limits the emulator never enforces are only remembered.
pub fn default_limit(limit: c_uint) -> DriverResult<usize> {
    Ok(match limit {
        0 => 1024,    // CU_LIMIT_STACK_SIZE (bytes per thread)
        1 => 1 << 20, // CU_LIMIT_PRINTF_FIFO_SIZE
        2 => 8 << 20, // CU_LIMIT_MALLOC_HEAP_SIZE
        3 => 2,       // CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH
        4 => 2048,    // CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT
        5 => 64,      // CU_LIMIT_MAX_L2_FETCH_GRANULARITY
        6 => 0,       // CU_LIMIT_PERSISTING_L2_CACHE_SIZE
        // SHMEM_SIZE and the CIG limits belong to CUDA-in-graphics contexts.
        _ => return Err(CUDA_ERROR_UNSUPPORTED_LIMIT),
    })
}

/// # Safety
/// `value` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetLimit(value: *mut usize, limit: c_uint) -> CUresult {
    ffi_guard(|| {
        let state = driver().lock()?;
        let handle = state.current()?;
        let stored = state.contexts[&handle].limits.get(&limit).copied();
        write_out(value, stored.map_or_else(|| default_limit(limit), Ok)?)
    })
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSetLimit(limit: c_uint, value: usize) -> CUresult {
    ffi_guard(|| {
        let mut state = driver().lock()?;
        let handle = state.current()?;
        default_limit(limit)?;
        if let Some(record) = state.contexts.get_mut(&handle) {
            record.limits.insert(limit, value);
        }
        Ok(())
    })
}

/// Always `CU_FUNC_CACHE_PREFER_NONE`: the preference changes nothing here.
///
/// # Safety
/// `config` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCacheConfig(config: *mut c_int) -> CUresult {
    ffi_guard(|| {
        driver().lock()?.current()?;
        write_out(config, 0)
    })
}

/// Validated and ignored (see `cuCtxGetCacheConfig`).
///
/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSetCacheConfig(config: c_int) -> CUresult {
    ffi_guard(|| {
        driver().lock()?.current()?;
        if (0..=3).contains(&config) {
            Ok(())
        } else {
            Err(CUDA_ERROR_INVALID_VALUE)
        }
    })
}

/// There is no profiler to start; succeeds so that profiled code runs.
///
/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuProfilerStart() -> CUresult {
    ffi_guard(|| driver().lock()?.current().map(|_| ()))
}

/// See `cuProfilerStart`.
///
/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuProfilerStop() -> CUresult {
    ffi_guard(|| driver().lock()?.current().map(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_stack_set_push_pop() {
        // Runs on its own test thread, so the stack starts empty.
        assert_eq!(current_context(), None);
        set_current(Some(0x10));
        assert_eq!(current_context(), Some(0x10));
        push_current(0x20);
        assert_eq!(current_context(), Some(0x20));
        set_current(Some(0x30));
        assert_eq!(pop_current(), Some(0x30));
        assert_eq!(current_context(), Some(0x10));
        forget_on_this_thread(0x10);
        assert_eq!(current_context(), None);
        set_current(None);
        assert_eq!(pop_current(), None);
    }

    #[test]
    fn limits_have_sm80_defaults() {
        assert_eq!(default_limit(0), Ok(1024));
        assert_eq!(default_limit(2), Ok(8 << 20));
        assert_eq!(default_limit(7), Err(CUDA_ERROR_UNSUPPORTED_LIMIT));
        assert_eq!(default_limit(100), Err(CUDA_ERROR_UNSUPPORTED_LIMIT));
    }
}
