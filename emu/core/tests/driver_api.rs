//! The exported driver functions called in-process through the `rlib`:
//! devices, contexts, streams, events, error names, and the argument checks
//! that need no executor. (Kernels and memory: `driver_c_client.rs`,
//! `cudarc_on_emulator.rs`.)

use cuda::context::*;
use cuda::device::*;
use cuda::launch::cuLaunchHostFunc;
use cuda::module::cuModuleLoadData;
use cuda::result::*;
use cuda::stream::*;
use std::ffi::{c_char, c_void, CStr};
use std::ptr::{null, null_mut};

fn ok(code: CUresult) {
    assert_eq!(code, CUDA_SUCCESS);
}

/// Initialises, retains the primary context and makes it current on this
/// test's thread (each test runs on its own thread with its own stack).
fn primary_context() -> CUcontext {
    let mut context = null_mut();
    unsafe {
        ok(cuInit(0));
        ok(cuDevicePrimaryCtxRetain(&mut context, 0));
        ok(cuCtxSetCurrent(context));
    }
    context
}

fn release_primary() {
    unsafe { ok(cuDevicePrimaryCtxRelease_v2(0)) }
}

#[test]
fn device_queries() {
    unsafe {
        ok(cuInit(0));
        assert_eq!(cuInit(1), CUDA_ERROR_INVALID_VALUE);
        let mut value = 0;
        ok(cuDriverGetVersion(&mut value));
        assert_eq!(value, 13000);
        ok(cuDeviceGetCount(&mut value));
        assert_eq!(value, 1);
        let mut device = -1;
        ok(cuDeviceGet(&mut device, 0));
        assert_eq!(device, 0);
        assert_eq!(cuDeviceGet(&mut device, 1), CUDA_ERROR_INVALID_DEVICE);
        assert_eq!(cuDeviceGet(null_mut(), 0), CUDA_ERROR_INVALID_VALUE);

        for (attribute, expected) in [(75, 8), (76, 0), (16, 108), (10, 32), (1, 1024), (97, 163 * 1024), (115, 1)] {
            ok(cuDeviceGetAttribute(&mut value, attribute, 0));
            assert_eq!(value, expected, "attribute {attribute}");
        }
        assert_eq!(cuDeviceGetAttribute(&mut value, 9999, 0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuDeviceGetAttribute(&mut value, 75, 3), CUDA_ERROR_INVALID_DEVICE);

        let mut name = [0 as c_char; 8];
        ok(cuDeviceGetName(name.as_mut_ptr(), name.len() as i32, 0));
        let short = CStr::from_ptr(name.as_ptr()).to_str().unwrap();
        assert_eq!(short.len(), 7, "truncated to the buffer with a NUL");
        assert!(DEVICE_NAME.starts_with(short));

        let mut total = 0usize;
        ok(cuDeviceTotalMem_v2(&mut total, 0));
        assert!(total > 1 << 30);

        let (mut first, mut second) = ([0u8; 16], [1u8; 16]);
        ok(cuDeviceGetUuid(&mut first, 0));
        ok(cuDeviceGetUuid_v2(&mut second, 0));
        assert_eq!(first, second);
    }
}

#[test]
fn primary_context_handle_is_stable_and_context_stack_works() {
    let primary = primary_context();
    unsafe {
        let mut again = null_mut();
        ok(cuDevicePrimaryCtxRetain(&mut again, 0));
        assert_eq!(again, primary);
        release_primary();

        let (mut flags, mut active) = (99u32, 0);
        ok(cuDevicePrimaryCtxGetState(0, &mut flags, &mut active));
        assert_eq!(active, 1);

        // A created context becomes current, above the primary one.
        let mut created = null_mut();
        ok(cuCtxCreate_v4(&mut created, null_mut(), 0, 0));
        assert_ne!(created, primary);
        let mut current = null_mut();
        ok(cuCtxGetCurrent(&mut current));
        assert_eq!(current, created);
        let mut popped = null_mut();
        ok(cuCtxPopCurrent_v2(&mut popped));
        assert_eq!(popped, created);
        ok(cuCtxGetCurrent(&mut current));
        assert_eq!(current, primary);

        ok(cuCtxPushCurrent_v2(created));
        let mut device = -1;
        ok(cuCtxGetDevice(&mut device));
        assert_eq!(device, 0);
        let mut version = 0u32;
        ok(cuCtxGetApiVersion(null_mut(), &mut version));
        ok(cuCtxDestroy_v2(created));
        // Destroyed: gone from this thread's stack, and unusable.
        ok(cuCtxGetCurrent(&mut current));
        assert_eq!(current, primary);
        assert_eq!(cuCtxSetCurrent(created), CUDA_ERROR_INVALID_CONTEXT);
        assert_eq!(cuCtxDestroy_v2(created), CUDA_ERROR_INVALID_CONTEXT);
        // The primary context is released, not destroyed.
        assert_eq!(cuCtxDestroy_v2(primary), CUDA_ERROR_INVALID_CONTEXT);
        ok(cuCtxSynchronize());
    }
    release_primary();
}

#[test]
fn no_current_context_is_invalid_context() {
    unsafe {
        ok(cuInit(0));
        // A fresh test thread has no current context.
        let mut current = 1 as CUcontext;
        ok(cuCtxGetCurrent(&mut current));
        assert!(current.is_null());
        assert_eq!(cuCtxSynchronize(), CUDA_ERROR_INVALID_CONTEXT);
        let mut stream = null_mut();
        assert_eq!(cuStreamCreate(&mut stream, 0), CUDA_ERROR_INVALID_CONTEXT);
        assert_eq!(cuCtxPopCurrent_v2(null_mut()), CUDA_ERROR_INVALID_CONTEXT);
    }
}

#[test]
fn streams_and_events() {
    primary_context();
    unsafe {
        let mut stream = null_mut();
        ok(cuStreamCreate(&mut stream, 1));
        assert_eq!(cuStreamCreate(&mut stream, 0x10), CUDA_ERROR_INVALID_VALUE);
        let mut other = null_mut();
        ok(cuStreamCreateWithPriority(&mut other, 0, -1));
        assert_ne!(stream, other);

        let (mut start, mut end, mut untimed) = (null_mut(), null_mut(), null_mut());
        ok(cuEventCreate(&mut start, 0));
        ok(cuEventCreate(&mut end, 0));
        ok(cuEventCreate(&mut untimed, 2)); // CU_EVENT_DISABLE_TIMING
                                            // Waiting on an event never recorded is fine (cudarc does it).
        ok(cuStreamWaitEvent(other, untimed, 0));
        ok(cuEventQuery(start));

        let mut ms = -1.0f32;
        assert_eq!(cuEventElapsedTime_v2(&mut ms, start, end), CUDA_ERROR_INVALID_HANDLE);
        ok(cuEventRecord(start, stream));
        std::thread::sleep(std::time::Duration::from_millis(20));
        ok(cuEventRecord(end, stream));
        ok(cuEventSynchronize(end));
        ok(cuEventElapsedTime_v2(&mut ms, start, end));
        assert!((20.0..2000.0).contains(&ms), "{ms} ms");
        ok(cuEventRecord(untimed, null_mut()));
        assert_eq!(cuEventElapsedTime(&mut ms, start, untimed), CUDA_ERROR_INVALID_HANDLE);

        ok(cuStreamSynchronize(stream));
        ok(cuStreamQuery(null_mut()));
        ok(cuStreamSynchronize(2 as CUstream)); // CU_STREAM_PER_THREAD
        for event in [start, end, untimed] {
            ok(cuEventDestroy_v2(event));
        }
        assert_eq!(cuEventDestroy_v2(start), CUDA_ERROR_INVALID_HANDLE);
        ok(cuStreamDestroy_v2(stream));
        ok(cuStreamDestroy_v2(other));
        assert_eq!(cuStreamSynchronize(stream), CUDA_ERROR_INVALID_HANDLE);
    }
    release_primary();
}

#[test]
fn limits_cache_config_host_functions() {
    let primary = primary_context();
    unsafe {
        let mut value = 0usize;
        ok(cuCtxGetLimit(&mut value, 2)); // CU_LIMIT_MALLOC_HEAP_SIZE
        assert_eq!(value, 8 << 20);
        ok(cuCtxSetLimit(0, 4096)); // CU_LIMIT_STACK_SIZE
        ok(cuCtxGetLimit(&mut value, 0));
        assert_eq!(value, 4096);
        assert_eq!(cuCtxGetLimit(&mut value, 7), CUDA_ERROR_UNSUPPORTED_LIMIT);

        let mut config = -1;
        ok(cuCtxSetCacheConfig(1));
        ok(cuCtxGetCacheConfig(&mut config));
        assert_eq!(config, 0);
        assert_eq!(cuCtxSetCacheConfig(9), CUDA_ERROR_INVALID_VALUE);

        let mut stream = null_mut();
        ok(cuStreamCreate(&mut stream, 0));
        let mut owner = null_mut();
        ok(cuStreamGetCtx(stream, &mut owner));
        assert_eq!(owner, primary);

        // Runs before the call returns: all earlier work is already done.
        unsafe extern "C" fn bump(counter: *mut c_void) {
            *counter.cast::<u32>() += 1;
        }
        let mut counter = 0u32;
        ok(cuLaunchHostFunc(stream, Some(bump), (&mut counter as *mut u32).cast()));
        assert_eq!(counter, 1);
        assert_eq!(cuLaunchHostFunc(stream, None, null_mut()), CUDA_ERROR_INVALID_VALUE);
        ok(cuStreamDestroy_v2(stream));
    }
    release_primary();
}

#[test]
fn binary_images_are_refused() {
    primary_context();
    unsafe {
        let mut module = null_mut();
        let elf = *b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0";
        assert_eq!(cuModuleLoadData(&mut module, elf.as_ptr().cast()), CUDA_ERROR_INVALID_IMAGE);
        let fatbin = [0xBA55_ED50u32, 0x0010_0001, 0, 0];
        assert_eq!(cuModuleLoadData(&mut module, fatbin.as_ptr().cast()), CUDA_ERROR_INVALID_IMAGE);
        assert_eq!(cuModuleLoadData(&mut module, c"no directives".as_ptr().cast()), CUDA_ERROR_INVALID_IMAGE);
        assert_eq!(cuModuleLoadData(&mut module, null::<c_void>()), CUDA_ERROR_INVALID_VALUE);
    }
    release_primary();
}

#[test]
fn error_names_and_strings() {
    unsafe {
        let mut text: *const c_char = null();
        for (code, name) in
            [(0, "CUDA_SUCCESS"), (700, "CUDA_ERROR_ILLEGAL_ADDRESS"), (719, "CUDA_ERROR_LAUNCH_FAILED")]
        {
            ok(cuGetErrorName(code, &mut text));
            assert_eq!(CStr::from_ptr(text).to_str().unwrap(), name);
            ok(cuGetErrorString(code, &mut text));
            assert!(!CStr::from_ptr(text).to_bytes().is_empty());
        }
        assert_eq!(cuGetErrorName(12345, &mut text), CUDA_ERROR_INVALID_VALUE);
        assert!(text.is_null());
        assert_eq!(cuGetErrorString(0, null_mut()), CUDA_ERROR_INVALID_VALUE);
    }
}
