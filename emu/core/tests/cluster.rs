//! sm_90 thread-block clusters on the emulator (kernels/cluster.cu, compiled
//! by nvcc for sm_90): the CTAs of a cluster run together, the cluster
//! registers, `barrier.cluster` holding every thread of the cluster,
//! distributed shared memory through `mapa` and `ld/st.shared::cluster`
//! (cooperative_groups' `map_shared_rank` and inline PTX), the remote
//! traffic counters, sampling by whole clusters, and one planted bug per
//! finding beside its clean twin.

mod common;

use common::{assert_no_findings, Device};
use ptx_emu::{launch_with_cluster, CheckOptions, FindingKind, LaunchConfig, LaunchError, LaunchReport};

fn device() -> Device {
    Device::from_ptx(common::compile_ptx_with("cluster.cu", "sm_90", &[]))
}

fn config(grid: [u32; 3], threads: u32) -> LaunchConfig {
    LaunchConfig { grid, block: [threads, 1, 1], dynamic_shared_bytes: 0 }
}

fn launch(
    dev: &Device,
    kernel: &str,
    config: LaunchConfig,
    cluster: Option<[u32; 3]>,
    params: &[u8],
    opts: &CheckOptions,
) -> Result<LaunchReport, LaunchError> {
    launch_with_cluster(&dev.module, kernel, &config, cluster, params, &dev.mem, opts)
}

#[track_caller]
fn expect(report: &LaunchReport, kind: FindingKind, opcode: &str, detail: &str) {
    let listed: Vec<String> = report.findings.iter().map(|f| format!("  {f}")).collect();
    let f = report.findings.first().unwrap_or_else(|| panic!("expected a {kind:?} finding ({detail}), got none"));
    assert_eq!(f.kind, kind, "{}", listed.join("\n"));
    assert!(f.instruction.contains(opcode), "finding at `{}`, not a `{opcode}`:\n{}", f.instruction, listed.join("\n"));
    assert!(f.detail.contains(detail), "finding does not say `{detail}`:\n{}", listed.join("\n"));
}

/// `exchange` over a `grid` in clusters of `dims`: every thread reads its
/// right-hand neighbour CTA's row and reports the cluster registers.
fn run_exchange(dev: &Device, grid: [u32; 3], dims: [u32; 3], opts: &CheckOptions) -> (LaunchReport, Vec<u32>) {
    let threads = 128u32;
    let ctas = grid.iter().product::<u32>() as usize;
    let out = dev.alloc_poisoned::<u32>(ctas * threads as usize * 8);
    let params = dev.params("exchange").ptr(out).i32(0).finish();
    let report = launch(dev, "exchange", config(grid, threads), Some(dims), &params, opts).expect("launch");
    (report, dev.download::<u32>(out, ctas * threads as usize * 8))
}

/// What thread `t` of the CTA at `(x, y)` of `exchange` must write.
fn exchange_want(grid: [u32; 3], dims: [u32; 3], x: u32, y: u32, t: u32) -> [u32; 8] {
    let threads = 128;
    let size = dims[0] * dims[1];
    let (cx, cy) = (x % dims[0], y % dims[1]);
    let rank = cx + cy * dims[0];
    let next = (rank + 1) % size;
    let (nx, ny) = (x - cx + next % dims[0], y - cy + next / dims[0]);
    let neighbour = nx + grid[0] * ny;
    [neighbour * 1000 + (t + 33) % threads, rank, size, x / dims[0], y / dims[1], cx, cy, 1]
}

#[test]
fn exchange_in_clusters_reads_the_neighbours_shared_memory() {
    let dev = device();
    for (grid, dims) in [([8, 1, 1], [4, 1, 1]), ([4, 4, 1], [2, 2, 1]), ([6, 2, 1], [2, 1, 1])] {
        let (report, got) = run_exchange(&dev, grid, dims, &CheckOptions::default());
        assert_no_findings(&report);
        for y in 0..grid[1] {
            for x in 0..grid[0] {
                for t in 0..128 {
                    let g = ((x + grid[0] * y) * 128 + t) as usize;
                    let want = exchange_want(grid, dims, x, y, t);
                    assert_eq!(
                        &got[g * 8..g * 8 + 8],
                        &want,
                        "grid {grid:?} clusters {dims:?} CTA ({x},{y}) thread {t}"
                    );
                }
            }
        }
        // One remote load per warp: 4 warps of 128 threads, 4 bytes a lane.
        let ctas = u64::from(grid.iter().product::<u32>());
        assert_eq!(report.counters.cluster_shared_requests, ctas * 4, "grid {grid:?}");
        assert_eq!(report.counters.cluster_shared_bytes, ctas * 128 * 4, "grid {grid:?}");
    }
}

#[test]
fn kernel_cluster_dims_are_honoured_and_checked() {
    let dev = device();
    let out = dev.alloc_poisoned::<u32>(8 * 64);
    let params = dev.params("exchange_static").ptr(out).finish();
    assert_eq!(dev.kernel_info("exchange_static").cluster_dims, Some([4, 1, 1]));
    let report =
        launch(&dev, "exchange_static", config([8, 1, 1], 64), None, &params, &CheckOptions::default()).unwrap();
    assert_no_findings(&report);
    let got = dev.download::<u32>(out, 8 * 64);
    for b in 0..8u32 {
        for t in 0..64u32 {
            let next = b / 4 * 4 + (b % 4 + 1) % 4;
            assert_eq!(got[(b * 64 + t) as usize], next * 100 + t, "CTA {b} thread {t}");
        }
    }
    // A grid that is not a whole number of clusters, a different cluster, too large a cluster.
    let refused = |grid: [u32; 3], kernel: &str, dims: Option<[u32; 3]>| {
        let params = match kernel {
            "exchange" => dev.params(kernel).ptr(out).i32(0).finish(),
            _ => dev.params(kernel).ptr(out).finish(),
        };
        match launch(&dev, kernel, config(grid, 64), dims, &params, &CheckOptions::default()) {
            Err(LaunchError::InvalidConfig(why)) => why,
            other => panic!("launch of {kernel} in {grid:?} / {dims:?} not refused: {:?}", other.map(|r| r.findings)),
        }
    };
    assert!(refused([6, 1, 1], "exchange_static", None).contains("whole number of clusters"));
    assert!(refused([8, 1, 1], "exchange_static", Some([2, 1, 1])).contains("requires [4, 1, 1]"));
    assert!(refused([16, 1, 1], "exchange", Some([16, 1, 1])).contains("CTAs per cluster"));
    assert!(refused([3, 2, 1], "exchange", Some([1, 4, 1])).contains("whole number of clusters"));
}

#[test]
fn sampling_runs_whole_clusters() {
    let dev = device();
    let grid = [4, 16, 1];
    let dims = [4, 1, 1];
    let opts = CheckOptions { sample_ctas: Some(8), ..Default::default() };
    let (report, got) = run_exchange(&dev, grid, dims, &opts);
    assert_no_findings(&report);
    assert!(report.counters.sampled);
    assert_eq!(report.counters.sampled_ctas % 4, 0, "{} CTAs sampled", report.counters.sampled_ctas);
    assert_eq!(report.counters.total_ctas, 64);
    // Every CTA of a sampled cluster ran, with the right neighbour data;
    // the others left their output poisoned.
    let mut ran = 0;
    for y in 0..grid[1] {
        let written: Vec<bool> = (0..grid[0]).map(|x| got[((x + 4 * y) * 128 * 8) as usize] != u32::MAX).collect();
        assert!(written.iter().all(|w| *w == written[0]), "row {y}: {written:?}");
        if written[0] {
            ran += 4;
            for x in 0..grid[0] {
                let g = ((x + 4 * y) * 128) as usize;
                assert_eq!(&got[g * 8..g * 8 + 8], &exchange_want(grid, dims, x, y, 0));
            }
        }
    }
    assert_eq!(ran, report.counters.sampled_ctas);
    // Counts scale to the whole grid: one remote load per warp.
    assert_eq!(report.counters.cluster_shared_requests, 64 * 4);
}

#[test]
fn push_left_stores_into_the_neighbours_shared_memory() {
    let dev = device();
    let out = dev.alloc_poisoned::<u32>(8 * 64);
    let params = dev.params("push_left").ptr(out).i32(0).finish();
    let report =
        launch(&dev, "push_left", config([8, 1, 1], 64), Some([4, 1, 1]), &params, &CheckOptions::default()).unwrap();
    assert_no_findings(&report);
    let got = dev.download::<u32>(out, 8 * 64);
    for b in 0..8u32 {
        let right = (b % 4 + 1) % 4;
        for t in 0..64u32 {
            assert_eq!(got[(b * 64 + t) as usize], right * 1000 + t, "CTA {b} thread {t}");
        }
    }
    // One remote store per warp; the load of the own row is local.
    assert_eq!(report.counters.cluster_shared_requests, 8 * 2);
    assert_eq!(report.counters.cluster_shared_bytes, 8 * 64 * 4);
}

#[test]
fn planted_cluster_bugs_are_found() {
    let dev = device();
    let opts = CheckOptions::default();
    let exchange = |mode: i32| {
        let out = dev.alloc_poisoned::<u32>(8 * 128 * 8);
        let params = dev.params("exchange").ptr(out).i32(mode).finish();
        launch(&dev, "exchange", config([8, 1, 1], 128), Some([4, 1, 1]), &params, &opts).unwrap()
    };
    let push = |mode: i32| {
        let out = dev.alloc_poisoned::<u32>(8 * 64);
        let params = dev.params("push_left").ptr(out).i32(mode).finish();
        launch(&dev, "push_left", config([8, 1, 1], 64), Some([4, 1, 1]), &params, &opts).unwrap()
    };
    assert_no_findings(&exchange(0));
    assert_no_findings(&push(0));
    // No cluster barrier between the fills and the remote reads.
    expect(&exchange(1), FindingKind::Race, "", "not ordered by a cluster barrier");
    // mapa to a rank outside the cluster.
    expect(&exchange(2), FindingKind::OutOfBounds, "mapa", "rank 4 of a cluster of 4 CTAs");
    // No cluster barrier before exit: a CTA reads a neighbour that has gone.
    expect(&exchange(3), FindingKind::OutOfBounds, "ld", "has exited");
    // The owner reads its row while the neighbour's store to it is unordered.
    expect(&push(1), FindingKind::Race, "", "not ordered by a cluster barrier");
    expect(&push(2), FindingKind::DivergentSync, "barrier.cluster.arrive", "arrive again");
    expect(&push(3), FindingKind::DivergentSync, "barrier.cluster.wait", "without a barrier.cluster.arrive");
    expect(&push(4), FindingKind::Deadlock, "", "neither arrived nor exited");
    expect(
        &push(5),
        FindingKind::OutOfBounds,
        "st.shared::cluster",
        "outside the 256 bytes of shared memory of CTA rank",
    );
    // The same race is missed with racecheck off (the check is what finds it).
    let quiet = CheckOptions { racecheck: false, ..Default::default() };
    let out = dev.alloc_poisoned::<u32>(8 * 64);
    let params = dev.params("push_left").ptr(out).i32(1).finish();
    assert_no_findings(&launch(&dev, "push_left", config([8, 1, 1], 64), Some([4, 1, 1]), &params, &quiet).unwrap());
}

// ---------------------------------------------------------------- through the driver

mod driver {
    use super::*;
    use cuda::context::{cuCtxSetCurrent, cuDevicePrimaryCtxRelease_v2, cuDevicePrimaryCtxRetain, cuInit};
    use cuda::launch::cuLaunchKernel;
    use cuda::launch_ex::{cuLaunchKernelEx, CUlaunchAttribute, CUlaunchConfig};
    use cuda::memory::{cuMemAlloc_v2, cuMemFree_v2, cuMemcpyDtoH_v2};
    use cuda::module::{cuModuleGetFunction, cuModuleLoadData, cuModuleUnload};
    use cuda::result::*;
    use std::ffi::{c_void, CString};
    use std::ptr::null_mut;

    fn ok(code: CUresult) {
        assert_eq!(code, CUDA_SUCCESS);
    }

    /// `exchange` launched by cuLaunchKernelEx with a cluster dimension
    /// attribute and `exchange_static` (`.reqnctapercluster 4`) by plain
    /// cuLaunchKernel both run in clusters of 4; an attribute that
    /// disagrees with the kernel's own dimensions, or does not divide the
    /// grid, is refused.
    #[test]
    fn clusters_through_cu_launch_kernel_ex_and_cu_launch_kernel() {
        // sm_90 PTX loads only on a device presenting compute capability 9.0.
        std::env::set_var("PTX_EMU_COMPUTE_CAPABILITY", "90");
        let ptx = CString::new(common::compile_ptx_with("cluster.cu", "sm_90", &[])).unwrap();
        let mut context = null_mut();
        unsafe {
            ok(cuInit(0));
            ok(cuDevicePrimaryCtxRetain(&mut context, 0));
            ok(cuCtxSetCurrent(context));
            let mut module = null_mut();
            ok(cuModuleLoadData(&mut module, ptx.as_ptr().cast()));
            let (mut exchange, mut fixed) = (null_mut(), null_mut());
            ok(cuModuleGetFunction(&mut exchange, module, c"exchange".as_ptr()));
            ok(cuModuleGetFunction(&mut fixed, module, c"exchange_static".as_ptr()));
            let words = 8 * 128 * 8;
            let mut out = 0u64;
            ok(cuMemAlloc_v2(&mut out, words * 4));
            let mut mode = 0i32;
            let mut params: [*mut c_void; 2] = [(&mut out as *mut u64).cast(), (&mut mode as *mut i32).cast()];
            let launch_ex = |function, grid: u32, threads: u32, cluster_x: u64, params: *mut *mut c_void| {
                let mut attrs =
                    [CUlaunchAttribute { id: 4, pad: [0; 4], value: [cluster_x | 1 << 32, 1, 0, 0, 0, 0, 0, 0] }];
                let config = CUlaunchConfig {
                    grid_dim: [grid, 1, 1],
                    block_dim: [threads, 1, 1],
                    shared_mem_bytes: 0,
                    stream: null_mut(),
                    attrs: attrs.as_mut_ptr(),
                    num_attrs: 1,
                };
                cuLaunchKernelEx(&config, function, params, null_mut())
            };
            ok(launch_ex(exchange, 8, 128, 4, params.as_mut_ptr()));
            let mut got = vec![0u32; words];
            ok(cuMemcpyDtoH_v2(got.as_mut_ptr().cast(), out, words * 4));
            for x in 0..8u32 {
                for t in 0..128u32 {
                    let g = ((x * 128 + t) * 8) as usize;
                    assert_eq!(&got[g..g + 8], &exchange_want([8, 1, 1], [4, 1, 1], x, 0, t), "CTA {x} thread {t}");
                }
            }
            assert_eq!(launch_ex(exchange, 6, 128, 4, params.as_mut_ptr()), 912, "CUDA_ERROR_INVALID_CLUSTER_SIZE");
            let mut fixed_params: [*mut c_void; 1] = [(&mut out as *mut u64).cast()];
            ok(cuLaunchKernel(fixed, 8, 1, 1, 64, 1, 1, 0, null_mut(), fixed_params.as_mut_ptr(), null_mut()));
            ok(cuMemcpyDtoH_v2(got.as_mut_ptr().cast(), out, 8 * 64 * 4));
            for b in 0..8u32 {
                for t in 0..64u32 {
                    let next = b / 4 * 4 + (b % 4 + 1) % 4;
                    assert_eq!(got[(b * 64 + t) as usize], next * 100 + t, "CTA {b} thread {t}");
                }
            }
            assert_eq!(launch_ex(fixed, 8, 64, 2, fixed_params.as_mut_ptr()), CUDA_ERROR_INVALID_VALUE);
            ok(cuMemFree_v2(out));
            ok(cuModuleUnload(module));
            ok(cuDevicePrimaryCtxRelease_v2(0));
        }
    }
}
