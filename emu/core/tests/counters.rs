//! Counters on small kernels (kernels/counted.cu, tensor_core_gemm.cu) whose
//! counts can be worked out by hand, and their determinism across host threads.

mod common;

use common::{assert_bit_exact, blocks_for, grid_1d, Device, Rng};
use ptx_emu::{CheckOptions, Counters, LaunchConfig};

const COUNTED: &str = "counted.cu";

/// One warp of `load_with_stride`: `in` holds 32 * stride floats.
fn strided_load(stride: usize) -> Counters {
    let dev = Device::load(COUNTED);
    let input = Rng::new(31).uniform_vec(32 * stride, -1.0, 1.0);
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<f32>(32));
    let params = dev.params("load_with_stride").ptr(din).ptr(dout).i32(stride as i32).finish();
    let counters = dev.launch_clean("load_with_stride", grid_1d(1, 32), &params);
    let want: Vec<f32> = (0..32).map(|l| input[l * stride]).collect();
    assert_bit_exact("gathered", &dev.download::<f32>(dout, 32), &want);
    counters
}

#[test]
fn coalesced_and_strided_loads_count_sectors() {
    // stride (floats) -> distinct 32-byte sectors of the one load request
    for (stride, sectors) in [(1, 4), (2, 8), (8, 32), (32, 32)] {
        let c = strided_load(stride);
        assert_eq!(c.kernel, "load_with_stride");
        assert_eq!((c.grid, c.block), ([1, 1, 1], [32, 1, 1]));
        assert_eq!(c.global_load_requests, 1, "stride {stride}: one warp, one ld.global");
        assert_eq!(c.global_load_sectors, sectors, "stride {stride}");
        assert_eq!(c.global_store_requests, 1, "stride {stride}");
        assert_eq!(c.global_store_sectors, 4, "stride {stride}: 128 contiguous bytes stored");
        assert_eq!(c.global_bytes_read, 128, "stride {stride}: 32 distinct floats read");
        assert_eq!(c.global_bytes_written, 128, "stride {stride}");
    }
}

#[test]
fn broadcast_reads_four_distinct_bytes() {
    let dev = Device::load(COUNTED);
    let (blocks, threads) = (4u32, 64u32);
    let total = (blocks * threads) as usize;
    let (din, dout) = (dev.upload(&[2.5f32]), dev.alloc_poisoned::<f32>(total));
    let params = dev.params("broadcast_first").ptr(din).ptr(dout).finish();
    let c = dev.launch_clean("broadcast_first", grid_1d(blocks, threads), &params);
    assert_bit_exact("out", &dev.download::<f32>(dout, total), &vec![2.5f32; total]);
    let warps = u64::from(blocks * threads / 32);
    assert_eq!(c.global_load_requests, warps);
    assert_eq!(c.global_load_sectors, warps, "every lane reads the same sector");
    assert_eq!(c.global_store_sectors, 4 * warps);
    assert_eq!(c.global_bytes_read, 4);
    assert_eq!(c.global_bytes_written, 4 * total as u64);
}

fn shared_stride(stride: u32) -> Counters {
    let dev = Device::load(COUNTED);
    let dout = dev.alloc_poisoned::<f32>(32);
    let params = dev.params("shared_with_stride").ptr(dout).i32(stride as i32).finish();
    let counters = dev.launch_clean("shared_with_stride", grid_1d(1, 32), &params);
    let want: Vec<f32> = (0..32).map(|l| l as f32).collect();
    assert_bit_exact("round trip", &dev.download::<f32>(dout, 32), &want);
    counters
}

#[test]
fn shared_bank_conflicts() {
    // stride 1 and 33: 32 lanes in 32 banks; stride 32: all in bank 0, 32 wavefronts each.
    for (stride, wavefronts_per_request) in [(1u32, 1u64), (33, 1), (32, 32)] {
        let c = shared_stride(stride);
        assert_eq!(c.shared_requests, 2, "stride {stride}: one st.shared, one ld.shared");
        assert_eq!(c.shared_wavefronts, 2 * wavefronts_per_request, "stride {stride}");
        assert_eq!(c.shared_bank_conflicts, 2 * (wavefronts_per_request - 1), "stride {stride}");
        assert_eq!(c.ldmatrix_bank_conflicts, 0);
        assert_eq!(c.barriers, 1, "one warp, one __syncthreads");
    }
}

#[test]
fn barriers_count_one_per_warp_per_barrier() {
    let dev = Device::load(COUNTED);
    let (blocks, threads, rounds) = (3u32, 128u32, 5);
    let total = (blocks * threads) as usize;
    let dout = dev.alloc_poisoned::<i32>(total);
    let params = dev.params("barrier_rounds").ptr(dout).i32(rounds).finish();
    let c = dev.launch_clean("barrier_rounds", grid_1d(blocks, threads), &params);
    assert_bit_exact("rounds seen", &dev.download::<i32>(dout, total), &vec![rounds; total]);
    assert_eq!(c.barriers, u64::from(blocks * threads / 32) * rounds as u64);
}

#[test]
fn tensor_instructions_of_a_known_mma_kernel() {
    let dev = Device::load("tensor_core_gemm.cu");
    let (m, n, k) = (64usize, 64usize, 64usize);
    let mut rng = Rng::new(32);
    let a: Vec<half::bf16> = rng.uniform_vec(m * k, -1.0, 1.0).into_iter().map(half::bf16::from_f32).collect();
    let b: Vec<half::bf16> = rng.uniform_vec(k * n, -1.0, 1.0).into_iter().map(half::bf16::from_f32).collect();
    let (da, db, dc) = (dev.upload(&a), dev.upload(&b), dev.alloc_poisoned::<f32>(m * n));
    let params = dev.params("tc_gemm_bf16").i32(m as i32).i32(n as i32).i32(k as i32).ptr(da).ptr(db).ptr(dc).finish();
    let c = dev.launch_clean("tc_gemm_bf16", grid_1d(1, 128), &params);
    // 4 warps x 2 (m16) x 4 (n8) tiles x 4 k16 steps.
    let expected = [("mma.m16n8k16.f32.bf16.bf16.f32".to_string(), 128u64)].into_iter().collect();
    assert_eq!(c.tensor_instructions, expected);
    assert!(c.warp_instructions_by_class.get("tensor").copied().unwrap_or(0) >= 128, "{c:?}");
    // Every byte of A and B is read, every byte of C written.
    assert_eq!(c.global_bytes_read, 2 * (m * k + k * n) as u64);
    assert_eq!(c.global_bytes_written, 4 * (m * n) as u64);
    // Two k-tiles of 32 in the loop, each behind one barrier per warp.
    assert_eq!(c.barriers, 4 * 2);
}

#[test]
fn counters_do_not_depend_on_the_number_of_host_threads() {
    let dev = Device::load("basics.cu");
    let (m, n, k) = (45usize, 70usize, 33usize);
    let mut rng = Rng::new(33);
    let (a, b) = (rng.uniform_vec(m * k, -1.0, 1.0), rng.uniform_vec(k * n, -1.0, 1.0));
    let (da, db, dc) = (dev.upload(&a), dev.upload(&b), dev.alloc_poisoned::<f32>(m * n));
    let params = dev.params("sgemm_tiled").i32(m as i32).i32(n as i32).i32(k as i32).ptr(da).ptr(db).ptr(dc).finish();
    let config =
        LaunchConfig { grid: [blocks_for(n, 16), blocks_for(m, 16), 1], block: [16, 16, 1], dynamic_shared_bytes: 0 };
    let run = |threads: usize| {
        let opts = CheckOptions { threads, ..CheckOptions::default() };
        let report = dev.launch_with("sgemm_tiled", config, &params, &opts);
        common::assert_no_findings(&report);
        report.counters
    };
    let one = run(1);
    assert!(one.thread_instructions > 0 && one.warp_instructions > 0, "{one:?}");
    assert!(one.thread_instructions >= one.warp_instructions, "{one:?}");
    assert_eq!(one.warp_instructions_by_class.values().sum::<u64>(), one.warp_instructions, "{one:?}");
    for threads in [2, 4, 0] {
        assert_eq!(run(threads), one, "counters with {threads} host threads differ from 1");
    }
}
