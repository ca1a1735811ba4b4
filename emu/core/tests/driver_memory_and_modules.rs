//! Memory, modules, function attributes and launches through the exported
//! functions, in-process. Each test works in a context of its own (created,
//! not the primary one), so a deliberate fault stays in its context.

mod driver_toolchain;

use cuda::context::*;
use cuda::introspection::*;
use cuda::launch::cuLaunchKernel;
use cuda::memory::*;
use cuda::module::*;
use cuda::result::*;
use driver_toolchain::{compile_test_kernels, scratch_dir};
use std::ffi::{c_void, CString};
use std::ptr::null_mut;
use std::sync::OnceLock;

/// Held by the tests that read or set `PTX_EMU_COMPUTE_CAPABILITY` (the
/// process's environment is shared by the tests running at once).
static COMPUTE_CAPABILITY_ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn ok(code: CUresult) {
    assert_eq!(code, CUDA_SUCCESS);
}

/// A fresh context, current on this test's thread; destroyed on drop.
struct Context(CUcontext);

impl Context {
    fn new() -> Self {
        let mut context = null_mut();
        unsafe {
            ok(cuInit(0));
            ok(cuCtxCreate_v4(&mut context, null_mut(), 0, 0));
        }
        Context(context)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        unsafe { ok(cuCtxDestroy_v2(self.0)) }
    }
}

/// The test kernels' PTX, NUL-terminated, compiled once per test binary.
fn test_ptx() -> &'static CString {
    static PTX: OnceLock<CString> = OnceLock::new();
    PTX.get_or_init(|| {
        let path = compile_test_kernels(&scratch_dir("driver_memory_and_modules"));
        CString::new(std::fs::read(path).expect("read PTX")).expect("PTX has no NUL")
    })
}

fn load_test_module() -> CUmodule {
    let mut module = null_mut();
    unsafe { ok(cuModuleLoadData(&mut module, test_ptx().as_ptr().cast())) };
    module
}

fn function(module: CUmodule, name: &str) -> CUfunction {
    let name = CString::new(name).unwrap();
    let mut function = null_mut();
    unsafe { ok(cuModuleGetFunction(&mut function, module, name.as_ptr())) };
    function
}

#[test]
fn allocate_copy_set_and_free() {
    let _context = Context::new();
    unsafe {
        let mut base: CUdeviceptr = 0;
        assert_eq!(cuMemAlloc_v2(&mut base, 0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuMemAlloc_v2(null_mut(), 16), CUDA_ERROR_INVALID_VALUE);
        ok(cuMemAlloc_v2(&mut base, 1024));
        assert_ne!(base, 0);

        let (mut free, mut total) = (0usize, 0usize);
        ok(cuMemGetInfo_v2(&mut free, &mut total));
        assert!(free <= total - 1024, "free {free} total {total}");

        let data: Vec<u8> = (0..1024u32).map(|i| (i * 7 % 251) as u8).collect();
        ok(cuMemcpyHtoD_v2(base, data.as_ptr().cast(), data.len()));
        let mut back = vec![0u8; 1024];
        ok(cuMemcpyDtoH_v2(back.as_mut_ptr().cast(), base, back.len()));
        assert_eq!(back, data);

        // Out of bounds and unknown pointers are refused.
        assert_eq!(cuMemcpyHtoD_v2(base + 1000, data.as_ptr().cast(), 100), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuMemcpyDtoH_v2(back.as_mut_ptr().cast(), base + 4096 * 1024, 4), CUDA_ERROR_INVALID_VALUE);

        let mut other: CUdeviceptr = 0;
        ok(cuMemAlloc_v2(&mut other, 1024));
        ok(cuMemcpyDtoD_v2(other, base + 512, 512));
        ok(cuMemsetD16_v2(other + 512, 0xBEEF, 256));
        ok(cuMemcpyDtoH_v2(back.as_mut_ptr().cast(), other, 1024));
        assert_eq!(back[..512], data[512..]);
        assert!(back[512..].chunks(2).all(|pair| pair == [0xEF, 0xBE]));
        assert_eq!(cuMemsetD32_v2(other + 2, 1, 4), CUDA_ERROR_INVALID_VALUE, "misaligned D32");
        ok(cuMemsetD32Async(other, 0x0102_0304, 4, null_mut()));
        ok(cuMemsetD8Async(other + 16, 0xAA, 3, null_mut()));
        ok(cuMemcpyDtoHAsync_v2(back.as_mut_ptr().cast(), other, 20, null_mut()));
        assert_eq!(back[..4], [4, 3, 2, 1]);
        assert_eq!(back[16..20], [0xAA, 0xAA, 0xAA, data[512 + 19]]);

        let mut memory_type = 0u32;
        ok(cuPointerGetAttribute((&mut memory_type as *mut u32).cast(), 2, other + 100));
        assert_eq!(memory_type, 2); // CU_MEMORYTYPE_DEVICE
        let mut range_start: CUdeviceptr = 0;
        ok(cuPointerGetAttribute((&mut range_start as *mut u64).cast(), 11, other + 100));
        assert_eq!(range_start, other);

        ok(cuMemFree_v2(base));
        assert_eq!(cuMemFree_v2(base), CUDA_ERROR_INVALID_VALUE, "double free");
        assert_eq!(cuMemFree_v2(other + 16), CUDA_ERROR_INVALID_VALUE, "free of an address inside an allocation");
        assert_eq!(cuMemFree_v2(0x7_0000_0000), CUDA_ERROR_INVALID_VALUE, "free of an address never allocated");
        assert_eq!(cuMemcpyHtoD_v2(base, data.as_ptr().cast(), 4), CUDA_ERROR_INVALID_VALUE, "use after free");
        ok(cuMemFreeAsync(other, null_mut()));
    }
}

/// The leak-check child's allocations, from a frame of its own that the
/// report's host stack must name.
#[inline(never)]
fn leak_child_allocate(kept: &mut CUdeviceptr, gone: &mut CUdeviceptr, queued: &mut CUdeviceptr) {
    unsafe {
        ok(cuMemAlloc_v2(kept, 1000));
        ok(cuMemAlloc_v2(gone, 8));
        ok(cuMemAllocAsync(queued, 24, null_mut()));
    }
}

/// Set in the child process of the leak-check test.
const LEAK_CHILD_ENV: &str = "PTX_EMU_LEAK_TEST_CHILD";

#[test]
fn leak_check_lists_the_live_allocations_of_a_destroyed_context() {
    if std::env::var_os(LEAK_CHILD_ENV).is_some() {
        unsafe {
            // A context that frees everything: a summary of nothing.
            let clean = Context::new();
            let mut freed: CUdeviceptr = 0;
            ok(cuMemAlloc_v2(&mut freed, 64));
            ok(cuMemFree_v2(freed));
            drop(clean);
            let leaky = Context::new();
            let (mut kept, mut gone, mut queued): (CUdeviceptr, CUdeviceptr, CUdeviceptr) = (0, 0, 0);
            leak_child_allocate(&mut kept, &mut gone, &mut queued);
            ok(cuMemFree_v2(gone));
            println!("child allocations: {kept:#x} {queued:#x}");
            drop(leaky);
        }
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().expect("test executable"))
        .args(["--exact", "leak_check_lists_the_live_allocations_of_a_destroyed_context", "--nocapture"])
        .env(LEAK_CHILD_ENV, "1")
        .env("PTX_EMU_LEAK_CHECK", "1")
        .output()
        .expect("re-run the test executable");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let addresses: Vec<&str> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("child allocations: "))
        .unwrap_or_else(|| panic!("child printed no addresses:\n{stdout}"))
        .split(' ')
        .collect();
    let summaries: Vec<&str> = stderr.lines().filter(|l| l.contains("LEAK SUMMARY")).collect();
    assert_eq!(
        summaries,
        [
            "ptx-emu: LEAK SUMMARY: 0 bytes leaked in 0 allocations",
            "ptx-emu: LEAK SUMMARY: 1024 bytes leaked in 2 allocations"
        ],
        "{stderr}"
    );
    let leaks: Vec<&str> = stderr.lines().filter(|l| l.contains("leak check: leaked")).collect();
    assert_eq!(leaks.len(), 2, "{stderr}");
    assert!(
        leaks[0].contains(&format!("leaked 1000 bytes at {} (allocation #2 by cuMemAlloc_v2)", addresses[0])),
        "{stderr}"
    );
    assert!(
        leaks[1].contains(&format!("leaked 24 bytes at {} (allocation #4 by cuMemAllocAsync)", addresses[1])),
        "{stderr}"
    );
    // The host stack below the driver call names this test's code.
    assert!(stderr.lines().any(|l| l.contains("allocated from") && l.contains("leak_child_allocate")), "{stderr}");
}

/// A stream-ordered allocation of zero bytes succeeds with the null pointer
/// (cudarc's `CudaStream::null`, candle's empty tensors), and freeing it on a
/// stream is a no-op; the synchronous pair keeps refusing both.
#[test]
fn zero_byte_stream_allocations_are_null() {
    let _context = Context::new();
    unsafe {
        let mut empty: CUdeviceptr = 0xdead;
        ok(cuMemAllocAsync(&mut empty, 0, null_mut()));
        assert_eq!(empty, 0);
        assert_eq!(cuMemAllocAsync(null_mut(), 0, null_mut()), CUDA_ERROR_INVALID_VALUE);
        // Zero-length operations on it, as candle issues them.
        ok(cuMemsetD8Async(empty, 0, 0, null_mut()));
        ok(cuMemcpyHtoDAsync_v2(empty, [0u8; 4].as_ptr().cast(), 0, null_mut()));
        ok(cuMemFreeAsync(empty, null_mut()));
        assert_eq!(cuMemFree_v2(0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuMemAlloc_v2(&mut empty, 0), CUDA_ERROR_INVALID_VALUE);
        // Nothing was allocated: a real allocation still is one, and frees once.
        let mut real: CUdeviceptr = 0;
        ok(cuMemAllocAsync(&mut real, 16, null_mut()));
        assert_ne!(real, 0);
        ok(cuMemFreeAsync(real, null_mut()));
        assert_eq!(cuMemFreeAsync(real, null_mut()), CUDA_ERROR_INVALID_VALUE);
    }
}

/// A function is looked up through its module, which names its context: a
/// thread with no current context may do it (candle's tensors used from a
/// spawned thread), but not once the module's context is gone.
#[test]
fn functions_are_found_from_a_thread_without_a_context() {
    let context = Context::new();
    let module = load_test_module() as usize;
    let found = std::thread::spawn(move || {
        let name = CString::new("vec_add").unwrap();
        let mut current = 1 as CUcontext;
        let mut handle = null_mut();
        unsafe {
            ok(cuCtxGetCurrent(&mut current));
            assert!(current.is_null(), "a new thread has no current context");
            ok(cuModuleGetFunction(&mut handle, module as CUmodule, name.as_ptr()));
        }
        handle as usize
    })
    .join()
    .unwrap();
    assert_eq!(found, function(module as CUmodule, "vec_add") as usize, "the same handle as on the owning thread");
    drop(context);
    let name = CString::new("vec_add").unwrap();
    let mut handle = null_mut();
    let code = unsafe { cuModuleGetFunction(&mut handle, module as CUmodule, name.as_ptr()) };
    assert_ne!(code, CUDA_SUCCESS, "the module went with its context");
}

#[test]
fn host_allocations() {
    let _context = Context::new();
    unsafe {
        let mut host: *mut c_void = null_mut();
        ok(cuMemAllocHost_v2(&mut host, 4096));
        assert_eq!(host as usize % 4096, 0);
        host.cast::<u8>().write_bytes(0x5A, 4096);
        ok(cuMemFreeHost(host));
        assert_eq!(cuMemFreeHost(host), CUDA_ERROR_INVALID_VALUE);
        ok(cuMemHostAlloc(&mut host, 100, 0x1)); // CU_MEMHOSTALLOC_PORTABLE
        ok(cuMemFreeHost(host));
    }
}

#[test]
fn module_functions_globals_and_attributes() {
    let _env = COMPUTE_CAPABILITY_ENV.lock().unwrap_or_else(|e| e.into_inner());
    let _context = Context::new();
    let module = load_test_module();
    unsafe {
        let first = function(module, "vec_add");
        assert_eq!(function(module, "vec_add"), first, "the same name gives the same handle");
        let missing = CString::new("missing").unwrap();
        let mut handle = null_mut();
        assert_eq!(cuModuleGetFunction(&mut handle, module, missing.as_ptr()), CUDA_ERROR_NOT_FOUND);

        let block_sum = function(module, "block_sum");
        let mut value = -1;
        ok(cuFuncGetAttribute(&mut value, 8, block_sum)); // MAX_DYNAMIC_SHARED_SIZE_BYTES
        assert_eq!(value, 48 * 1024);
        ok(cuFuncGetAttribute(&mut value, 5, block_sum)); // PTX_VERSION
        assert!(value >= 90, "PTX ISA {value}");
        ok(cuFuncGetAttribute(&mut value, 6, block_sum)); // BINARY_VERSION
        assert_eq!(value, 80);
        ok(cuFuncSetAttribute(block_sum, 8, 100 * 1024));
        ok(cuFuncGetAttribute(&mut value, 8, block_sum));
        assert_eq!(value, 100 * 1024);
        assert_eq!(cuFuncSetAttribute(block_sum, 8, 164 * 1024), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuFuncSetAttribute(block_sum, 1, 0), CUDA_ERROR_INVALID_VALUE, "read-only attribute");
        ok(cuFuncSetCacheConfig(block_sum, 1));

        // The module-scope variable, with its initialiser, and a kernel changing it.
        let name = CString::new("module_counter").unwrap();
        let (mut address, mut size): (CUdeviceptr, usize) = (0, 0);
        ok(cuModuleGetGlobal_v2(&mut address, &mut size, module, name.as_ptr()));
        assert_eq!(size, 4);
        let mut counter = 0i32;
        ok(cuMemcpyDtoH_v2((&mut counter as *mut i32).cast(), address, 4));
        assert_eq!(counter, 7);
        let mut by = 5i32;
        let mut params = [(&mut by as *mut i32).cast::<c_void>()];
        let bump = function(module, "bump_counter");
        ok(cuLaunchKernel(bump, 1, 1, 1, 32, 1, 1, 0, null_mut(), params.as_mut_ptr(), null_mut()));
        ok(cuMemcpyDtoH_v2((&mut counter as *mut i32).cast(), address, 4));
        assert_eq!(counter, 12);
        // A module's variable is not cuMemAlloc's to free; it stays usable.
        assert_eq!(cuMemFree_v2(address), CUDA_ERROR_INVALID_VALUE, "free of a module global");
        ok(cuMemcpyDtoH_v2((&mut counter as *mut i32).cast(), address, 4));
        assert_eq!(counter, 12);

        ok(cuModuleUnload(module));
        assert_eq!(cuModuleUnload(module), CUDA_ERROR_INVALID_HANDLE);
        assert_eq!(
            cuFuncGetAttribute(&mut value, 0, block_sum),
            CUDA_ERROR_INVALID_HANDLE,
            "function of an unloaded module"
        );
    }
}

/// `PTX_EMU_COMPUTE_CAPABILITY=90` presents a 9.0 device: its attributes and
/// name say so and sm_90a PTX loads; on the default 8.0 device the same
/// module is refused as the driver's JIT refuses a newer target.
#[test]
fn compute_capability_9_0_loads_sm_90a_and_8_0_refuses_it() {
    let _env = COMPUTE_CAPABILITY_ENV.lock().unwrap_or_else(|e| e.into_inner());
    let _context = Context::new();
    let sm90a =
        CString::new(".version 8.0\n.target sm_90a\n.address_size 64\n.visible .entry k()\n{\nret;\n}\n").unwrap();
    let attribute = |which| {
        let mut value = -1;
        unsafe { ok(cuda::device::cuDeviceGetAttribute(&mut value, which, 0)) };
        value
    };
    let name = || {
        let mut buffer = [0 as std::ffi::c_char; 64];
        unsafe { ok(cuda::device::cuDeviceGetName(buffer.as_mut_ptr(), 64, 0)) };
        unsafe { std::ffi::CStr::from_ptr(buffer.as_ptr()) }.to_string_lossy().into_owned()
    };
    let mut module = null_mut();

    std::env::remove_var("PTX_EMU_COMPUTE_CAPABILITY");
    assert_eq!((attribute(75), attribute(76)), (8, 0));
    assert_eq!((attribute(97), attribute(81)), (163 * 1024, 164 * 1024), "sm_80's shared memory");
    assert!(name().contains("sm_80"), "{}", name());
    unsafe { assert_eq!(cuModuleLoadData(&mut module, sm90a.as_ptr().cast()), CUDA_ERROR_INVALID_PTX) };

    std::env::set_var("PTX_EMU_COMPUTE_CAPABILITY", "9.0");
    assert_eq!((attribute(75), attribute(76)), (9, 0));
    assert_eq!((attribute(97), attribute(81)), (227 * 1024, 228 * 1024), "sm_90's shared memory");
    assert!(name().contains("sm_90"), "{}", name());
    unsafe {
        ok(cuModuleLoadData(&mut module, sm90a.as_ptr().cast()));
        let k = function(module, "k");
        let mut value = -1;
        ok(cuFuncGetAttribute(&mut value, 6, k)); // BINARY_VERSION
        assert_eq!(value, 90);
        ok(cuModuleUnload(module));
        // sm_80 PTX runs on the 9.0 device too.
        let older = load_test_module();
        ok(cuModuleUnload(older));
    }
    std::env::remove_var("PTX_EMU_COMPUTE_CAPABILITY");
}

#[test]
fn ptx_the_executor_rejects_is_invalid_ptx() {
    let _context = Context::new();
    let text = CString::new(".version 9.0\n.target sm_80\n.address_size 64\n\nthis is not an instruction;\n").unwrap();
    let mut module = null_mut();
    unsafe { assert_eq!(cuModuleLoadData(&mut module, text.as_ptr().cast()), CUDA_ERROR_INVALID_PTX) };
}

#[test]
fn launch_checks_counters_and_sticky_fault() {
    let _context = Context::new();
    let module = load_test_module();
    unsafe {
        let n = 300usize;
        let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..n).map(|i| 1000.0 - i as f32).collect();
        let mut buffers = [0u64; 3];
        for buffer in &mut buffers {
            ok(cuMemAlloc_v2(buffer, n * 4));
        }
        ok(cuMemcpyHtoD_v2(buffers[0], a.as_ptr().cast(), n * 4));
        ok(cuMemcpyHtoD_v2(buffers[1], b.as_ptr().cast(), n * 4));
        let vec_add = function(module, "vec_add");
        let mut count = n as i32;
        let mut params: [*mut c_void; 4] = [
            (&mut buffers[0] as *mut u64).cast(),
            (&mut buffers[1] as *mut u64).cast(),
            (&mut buffers[2] as *mut u64).cast(),
            (&mut count as *mut i32).cast(),
        ];
        // Refused before running: a 2048-thread block, both parameter forms.
        assert_eq!(
            cuLaunchKernel(vec_add, 1, 1, 1, 2048, 1, 1, 0, null_mut(), params.as_mut_ptr(), null_mut()),
            CUDA_ERROR_INVALID_VALUE
        );
        let end: [*mut c_void; 1] = [null_mut()];
        assert_eq!(
            cuLaunchKernel(vec_add, 3, 1, 1, 128, 1, 1, 0, null_mut(), params.as_mut_ptr(), end.as_ptr().cast_mut()),
            CUDA_ERROR_INVALID_VALUE
        );
        ok(cuLaunchKernel(vec_add, 3, 1, 1, 128, 1, 1, 0, null_mut(), params.as_mut_ptr(), null_mut()));
        let mut c = vec![0f32; n];
        ok(cuMemcpyDtoH_v2(c.as_mut_ptr().cast(), buffers[2], n * 4));
        for i in 0..n {
            assert_eq!(c[i], a[i] + b[i], "index {i}");
        }

        // The counters of that launch, through the dlsym-able export.
        let needed = ptxEmuGetLastLaunchCountersJson(null_mut(), 0);
        assert!(needed > 0);
        let mut json = vec![0u8; needed + 1];
        assert_eq!(ptxEmuGetLastLaunchCountersJson(json.as_mut_ptr().cast(), json.len()), needed);
        let json = std::str::from_utf8(&json[..needed]).unwrap();
        assert!(json.starts_with('{') && json.contains("vec_add"), "{json}");

        // The thread's recent launches, newest first: a second launch with
        // another grid; the one before it is still there.
        ok(cuLaunchKernel(vec_add, 2, 1, 1, 128, 1, 1, 0, null_mut(), params.as_mut_ptr(), null_mut()));
        let recent = |back: usize| {
            let needed = ptxEmuGetRecentLaunchCountersJson(back, null_mut(), 0);
            let mut json = vec![0u8; needed + 1];
            assert_eq!(ptxEmuGetRecentLaunchCountersJson(back, json.as_mut_ptr().cast(), json.len()), needed);
            String::from_utf8(json[..needed].to_vec()).unwrap()
        };
        assert!(recent(0).contains("\"grid\":[2,1,1]"), "{}", recent(0));
        assert!(recent(1).contains("\"grid\":[3,1,1]"), "{}", recent(1));
        // Older than this thread's history (two launches): nothing.
        assert_eq!(ptxEmuGetRecentLaunchCountersJson(2, null_mut(), 0), 0);

        // A fault: returned by the launch, then by everything in the context.
        let write_past_end = function(module, "write_past_end");
        let mut small: CUdeviceptr = 0;
        ok(cuMemAlloc_v2(&mut small, 64 * 4));
        let mut small_len = 64i32;
        let mut params: [*mut c_void; 2] = [(&mut small as *mut u64).cast(), (&mut small_len as *mut i32).cast()];
        assert_eq!(
            cuLaunchKernel(write_past_end, 1, 1, 1, 128, 1, 1, 0, null_mut(), params.as_mut_ptr(), null_mut()),
            CUDA_ERROR_ILLEGAL_ADDRESS
        );
        assert_eq!(cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_ADDRESS);
        let mut more: CUdeviceptr = 0;
        assert_eq!(cuMemAlloc_v2(&mut more, 16), CUDA_ERROR_ILLEGAL_ADDRESS);
        assert_eq!(cuMemcpyDtoH_v2(c.as_mut_ptr().cast(), buffers[2], 4), CUDA_ERROR_ILLEGAL_ADDRESS);
    }
    // Destroying the context (on drop) clears the fault with it.
}

#[test]
fn a_fault_stays_in_its_context() {
    // Faults are per context: the deliberate one of the test above (which
    // may be running at the same time) never reaches a context of its own.
    let _context = Context::new();
    unsafe {
        ok(cuCtxSynchronize());
        let mut buffer: CUdeviceptr = 0;
        ok(cuMemAlloc_v2(&mut buffer, 16));
        ok(cuMemFree_v2(buffer));
    }
}
