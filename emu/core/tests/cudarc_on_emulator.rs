//! cudarc's safe API, the crate's own path to the driver, on the emulator's
//! `libcuda.so`: contexts, streams, copies, module loading, launches (one
//! with more than 48 KB of dynamic shared memory), events, and a second
//! stream that waits on the first.
//!
//! cudarc `dlopen`s `libcuda.so` through `LD_LIBRARY_PATH`, which a process
//! reads only at start. So the test re-runs its own executable with
//! `LD_LIBRARY_PATH` pointing at the built library and a marker variable;
//! the child runs the checks (this works whether or not the parent's
//! environment already names a `libcuda.so`).

mod driver_toolchain;

use cudarc::driver::sys::{CUevent_flags, CUfunction_attribute_enum, CUresult};
use cudarc::driver::{CudaContext, DriverError, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use driver_toolchain::{compile_test_kernels, libcuda_dir, scratch_dir};
use std::process::Command;

/// Set in the child: the path of the compiled test kernels' PTX.
const CHILD_PTX_ENV: &str = "PTX_EMU_CUDARC_CHILD_PTX";
const CHILD_DONE: &str = "cudarc checks passed on the emulator";

#[test]
fn cudarc_safe_api_runs_on_emulator() {
    if let Some(ptx_path) = std::env::var_os(CHILD_PTX_ENV) {
        let ptx = std::fs::read_to_string(ptx_path).expect("read PTX");
        run_checks(&ptx).expect("driver call failed");
        println!("{CHILD_DONE}");
        return;
    }
    let dir = scratch_dir("cudarc_on_emulator");
    let ptx_path = compile_test_kernels(&dir);
    let output = Command::new(std::env::current_exe().expect("test executable"))
        .args(["--exact", "cudarc_safe_api_runs_on_emulator", "--nocapture", "--test-threads=1"])
        .env(CHILD_PTX_ENV, &ptx_path)
        .env("LD_LIBRARY_PATH", libcuda_dir())
        .output()
        .expect("re-run the test executable");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    assert!(stdout.contains(CHILD_DONE), "child did not run the checks:\n{stdout}\n{stderr}");
}

/// A fixed-seed generator of small values whose sums are exact in f32.
fn test_values(count: usize, seed: u32) -> Vec<f32> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((state >> 8) % 2001) as f32 / 8.0 - 125.0
        })
        .collect()
}

fn run_checks(ptx: &str) -> Result<(), DriverError> {
    let ctx = CudaContext::new(0)?;
    assert_eq!(ctx.compute_capability()?, (8, 0));
    assert!(ctx.name()?.contains("sm_80"));
    assert_eq!(ctx.uuid()?.bytes, ctx.uuid()?.bytes);
    assert!(ctx.total_mem()? > 1 << 30);
    let stream = ctx.default_stream();
    let second = ctx.new_stream()?;
    let module = ctx.load_module(Ptx::from_src(ptx))?;

    // vec_add on the default stream.
    let n = 1000usize;
    let (a_host, b_host) = (test_values(n, 1), test_values(n, 2));
    let a = stream.clone_htod(&a_host)?;
    let b = stream.clone_htod(&b_host)?;
    let mut c = stream.alloc_zeros::<f32>(n)?;
    let vec_add = module.load_function("vec_add")?;
    let config = LaunchConfig { grid_dim: (n.div_ceil(128) as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    let n_arg = n as i32;
    let start = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    let end = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    start.record(&stream)?;
    let mut launch = stream.launch_builder(&vec_add);
    launch.arg(&a).arg(&b).arg(&mut c).arg(&n_arg);
    // SAFETY: vec_add(const float*, const float*, float*, int) with n-element buffers.
    unsafe { launch.launch(config) }?;
    end.record(&stream)?;
    end.synchronize()?;
    assert!(start.elapsed_ms(&end)? >= 0.0);
    let c_host = stream.clone_dtoh(&c)?;
    for i in 0..n {
        assert_eq!(c_host[i], a_host[i] + b_host[i], "vec_add at {i}");
    }
    let mut c_copy = stream.alloc_zeros::<f32>(n)?;
    stream.memcpy_dtod(&c, &mut c_copy)?;
    assert_eq!(stream.clone_dtoh(&c_copy)?, c_host);

    // block_sum with 64 KB of dynamic shared memory, on the second stream,
    // after the input was written on the first.
    let block = 256usize;
    let input_host: Vec<i32> = test_values(5000, 3).iter().map(|v| (*v * 8.0) as i32).collect();
    let blocks = input_host.len().div_ceil(block);
    let mut input = stream.alloc_zeros::<i32>(input_host.len())?;
    stream.memcpy_htod(&input_host, &mut input)?;
    let written = stream.record_event(None)?;
    second.wait(&written)?;
    let mut sums = second.alloc_zeros::<i32>(blocks)?;
    let block_sum = module.load_function("block_sum")?;
    let big_shared = 64 * 1024;
    let config =
        LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (block as u32, 1, 1), shared_mem_bytes: big_shared };
    let count = input_host.len() as i32;
    let mut refused = second.launch_builder(&block_sum);
    refused.arg(&input).arg(&mut sums).arg(&count);
    // SAFETY: block_sum(const int*, int*, int) with `blocks` sums; refused before it runs.
    let refusal = unsafe { refused.launch(config) };
    assert_eq!(refusal.err(), Some(DriverError(CUresult::CUDA_ERROR_INVALID_VALUE)), "above 48 KB without opt-in");
    block_sum
        .set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, big_shared as i32)?;
    let mut launch = second.launch_builder(&block_sum);
    launch.arg(&input).arg(&mut sums).arg(&count);
    // SAFETY: as above, now with the limit raised.
    unsafe { launch.launch(config) }?;
    let sums_host = second.clone_dtoh(&sums)?;
    let expected: Vec<i32> = input_host.chunks(block).map(|chunk| chunk.iter().sum()).collect();
    assert_eq!(sums_host, expected);
    second.synchronize()?;
    ctx.synchronize()?;
    let (free, total) = ctx.mem_get_info()?;
    assert!(free < total);

    // Page-locked host memory (cuMemHostAlloc) as a copy source.
    // SAFETY: the slice is written before it is read.
    let mut pinned = unsafe { ctx.alloc_pinned::<f32>(n) }?;
    pinned.as_mut_slice()?.copy_from_slice(&b_host);
    let mut from_pinned = stream.alloc_zeros::<f32>(n)?;
    stream.memcpy_htod(&pinned, &mut from_pinned)?;
    assert_eq!(stream.clone_dtoh(&from_pinned)?, b_host);

    // A kernel that writes past its buffer: the launch reports the fault,
    // and, as on a GPU, the context keeps returning it.
    let write_past_end = module.load_function("write_past_end")?;
    let mut small = stream.alloc_zeros::<f32>(64)?;
    let small_len = 64i32;
    let mut launch = stream.launch_builder(&write_past_end);
    launch.arg(&mut small).arg(&small_len);
    let config = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: deliberately not: 128 threads write a 64-element buffer, which
    // the emulator's memcheck catches instead of corrupting memory.
    let fault = unsafe { launch.launch(config) };
    let illegal_address = DriverError(CUresult::CUDA_ERROR_ILLEGAL_ADDRESS);
    assert_eq!(fault.err(), Some(illegal_address));
    assert_eq!(ctx.synchronize().err(), Some(illegal_address));
    Ok(())
}
