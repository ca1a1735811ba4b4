//! nvcc-compiled kernels run on the emulator with every check on, compared
//! with CPU results on seeded inputs. Outputs start poisoned (0xFF bytes) so
//! an element a kernel fails to write cannot pass.

mod common;

use common::{
    assert_bit_exact, assert_close, assert_gemm_close, assert_within_ulps, blocks_for, compile_ptx_with, gemm_f64,
    grid_1d, Device, Rng,
};
use half::{bf16, f16};
use ptx_emu::LaunchConfig;

const BASICS: &str = "basics.cu";

// ---------------------------------------------------------------- indexing

#[test]
fn vector_add_with_tail() {
    let dev = Device::load(BASICS);
    let n = 1003; // not a multiple of the block: the last block is partial
    let mut rng = Rng::new(1);
    let (a, b) = (rng.uniform_vec(n, -10.0, 10.0), rng.uniform_vec(n, -10.0, 10.0));
    let (da, db, dc) = (dev.upload(&a), dev.upload(&b), dev.alloc_poisoned::<f32>(n));
    let params = dev.params("vec_add_f32").ptr(da).ptr(db).ptr(dc).i32(n as i32).finish();
    dev.launch_clean("vec_add_f32", grid_1d(blocks_for(n, 128), 128), &params);
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_bit_exact("c", &dev.download::<f32>(dc, n), &want);
}

#[test]
fn vector_add_compiled_for_sm_90() {
    let dev = Device::from_ptx(compile_ptx_with(BASICS, "sm_90", &[]));
    assert!(dev.ptx.contains(".target sm_90"), "PTX not built for sm_90");
    let n = 77;
    let mut rng = Rng::new(2);
    let (a, b) = (rng.uniform_vec(n, -1.0, 1.0), rng.uniform_vec(n, -1.0, 1.0));
    let (da, db, dc) = (dev.upload(&a), dev.upload(&b), dev.alloc_poisoned::<f32>(n));
    let params = dev.params("vec_add_f32").ptr(da).ptr(db).ptr(dc).i32(n as i32).finish();
    dev.launch_clean("vec_add_f32", grid_1d(1, 96), &params);
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_bit_exact("c", &dev.download::<f32>(dc, n), &want);
}

#[test]
fn grid_stride_loop_covers_every_element() {
    let dev = Device::load(BASICS);
    let n = 5000; // 4 blocks of 128 threads: each thread handles about 10 elements
    let mut rng = Rng::new(3);
    let (x, y) = (rng.uniform_vec(n, -4.0, 4.0), rng.uniform_vec(n, -4.0, 4.0));
    let alpha = 1.75f32;
    let (dx, dy) = (dev.upload(&x), dev.upload(&y));
    let params = dev.params("saxpy_grid_stride").f32(alpha).ptr(dx).ptr(dy).i32(n as i32).finish();
    dev.launch_clean("saxpy_grid_stride", grid_1d(4, 128), &params);
    let want: Vec<f32> = x.iter().zip(&y).map(|(x, y)| alpha.mul_add(*x, *y)).collect();
    assert_bit_exact("y", &dev.download::<f32>(dy, n), &want);
}

#[test]
fn three_dimensional_grid_and_block_coordinates() {
    let dev = Device::load(BASICS);
    let (grid, block) = ([3u32, 2, 2], [4u32, 3, 2]);
    let total = (grid.iter().product::<u32>() * block.iter().product::<u32>()) as usize;
    let out = dev.alloc_poisoned::<u32>(total);
    let params = dev.params("grid_coordinates").ptr(out).finish();
    dev.launch_clean("grid_coordinates", LaunchConfig { grid, block, dynamic_shared_bytes: 0 }, &params);

    let mut want = vec![0u32; total];
    for (bz, by, bx) in itertools3(grid) {
        for (tz, ty, tx) in itertools3(block) {
            let block_linear = (bz * grid[1] + by) * grid[0] + bx;
            let thread_linear = (tz * block[1] + ty) * block[0] + tx;
            let threads = block.iter().product::<u32>();
            want[(block_linear * threads + thread_linear) as usize] =
                bx | by << 4 | bz << 8 | tx << 12 | ty << 16 | tz << 20;
        }
    }
    assert_bit_exact("coordinates", &dev.download::<u32>(out, total), &want);
}

/// Every (z, y, x) of a 3-D extent.
fn itertools3(extent: [u32; 3]) -> Vec<(u32, u32, u32)> {
    let mut all = Vec::new();
    for z in 0..extent[2] {
        for y in 0..extent[1] {
            for x in 0..extent[0] {
                all.push((z, y, x));
            }
        }
    }
    all
}

// ---------------------------------------------------------------- warp collectives

#[test]
fn warp_shuffle_reductions() {
    let dev = Device::load(BASICS);
    let n = 256;
    let input = Rng::new(4).uniform_vec(n, -100.0, 100.0);
    let (din, ddown, dxor) = (dev.upload(&input), dev.alloc_poisoned::<f32>(n / 32), dev.alloc_poisoned::<f32>(n));
    let params = dev.params("warp_reduce_f32").ptr(din).ptr(ddown).ptr(dxor).finish();
    dev.launch_clean("warp_reduce_f32", grid_1d(2, 128), &params);

    let mut want_down = Vec::new();
    let mut want_xor = Vec::new();
    for warp in input.chunks(32) {
        // shfl.down: a lane whose source lane is out of range reads its own value.
        let mut v = warp.to_vec();
        for offset in [16, 8, 4, 2, 1] {
            v = (0..32).map(|l| v[l] + if l + offset < 32 { v[l + offset] } else { v[l] }).collect();
        }
        want_down.push(v[0]);
        let mut v = warp.to_vec();
        for mask in [1, 2, 4, 8, 16] {
            v = (0..32).map(|l| v[l] + v[l ^ mask]).collect();
        }
        want_xor.extend(v);
    }
    assert_bit_exact("shfl.down sums", &dev.download::<f32>(ddown, n / 32), &want_down);
    assert_bit_exact("shfl.bfly sums", &dev.download::<f32>(dxor, n), &want_xor);
}

#[test]
fn warp_vote_ballot_any_all() {
    let dev = Device::load(BASICS);
    let warps = 6;
    let mut rng = Rng::new(5);
    let mut input: Vec<i32> = (0..warps * 32).map(|_| (rng.next_u32() % 21) as i32 - 10).collect();
    input[..32].fill(3); // warp 0: all positive
    input[32..64].fill(-1); // warp 1: none positive
    input[64..96].iter_mut().enumerate().for_each(|(l, v)| *v = if l == 31 { 1 } else { 0 }); // only lane 31
    let din = dev.upload(&input);
    let (dballot, dany, dall) =
        (dev.alloc_poisoned::<u32>(warps), dev.alloc_poisoned::<i32>(warps), dev.alloc_poisoned::<i32>(warps));
    let params = dev.params("warp_vote").ptr(din).ptr(dballot).ptr(dany).ptr(dall).finish();
    dev.launch_clean("warp_vote", grid_1d(3, 64), &params);

    let ballots: Vec<u32> = input
        .chunks(32)
        .map(|w| w.iter().enumerate().fold(0u32, |acc, (l, &v)| acc | (u32::from(v > 0) << l)))
        .collect();
    assert_eq!(&ballots[..3], &[u32::MAX, 0, 1 << 31], "reference ballots of the planted warps");
    let any: Vec<i32> = ballots.iter().map(|&b| i32::from(b != 0)).collect();
    let all: Vec<i32> = ballots.iter().map(|&b| i32::from(b == u32::MAX)).collect();
    assert_bit_exact("ballot", &dev.download::<u32>(dballot, warps), &ballots);
    // __any_sync/__all_sync return non-zero for true: normalise before comparing.
    let normalise = |v: Vec<i32>| v.into_iter().map(|x| i32::from(x != 0)).collect::<Vec<_>>();
    assert_bit_exact("any", &normalise(dev.download::<i32>(dany, warps)), &any);
    assert_bit_exact("all", &normalise(dev.download::<i32>(dall, warps)), &all);
}

// ---------------------------------------------------------------- shared memory

#[test]
fn block_reduction_through_shared_memory() {
    let dev = Device::load(BASICS);
    let n = 1000; // 4 blocks of 256, the last one partly zero-padded
    let input = Rng::new(6).uniform_vec(n, -1.0, 1.0);
    let blocks = blocks_for(n, 256) as usize;
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<f32>(blocks));
    let params = dev.params("block_reduce_f32").ptr(din).ptr(dout).i32(n as i32).finish();
    dev.launch_clean("block_reduce_f32", grid_1d(blocks as u32, 256), &params);

    let want: Vec<f32> = (0..blocks)
        .map(|b| {
            let mut partial: Vec<f32> = (0..256).map(|t| input.get(b * 256 + t).copied().unwrap_or(0.0)).collect();
            let mut stride = 128;
            while stride > 0 {
                for t in 0..stride {
                    partial[t] += partial[t + stride];
                }
                stride /= 2;
            }
            partial[0]
        })
        .collect();
    assert_bit_exact("block sums", &dev.download::<f32>(dout, blocks), &want);
}

#[test]
fn dynamic_shared_memory_above_48_kib() {
    let dev = Device::load(BASICS);
    let n = 16384; // 64 KiB of f32
    let input = Rng::new(7).uniform_vec(n, -1.0, 1.0);
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<f32>(n));
    let params = dev.params("reverse_dynamic_shared").ptr(din).ptr(dout).i32(n as i32).finish();
    let config = LaunchConfig { grid: [1, 1, 1], block: [256, 1, 1], dynamic_shared_bytes: (n * 4) as u32 };
    dev.launch_clean("reverse_dynamic_shared", config, &params);
    let want: Vec<f32> = input.iter().rev().copied().collect();
    assert_bit_exact("reversed", &dev.download::<f32>(dout, n), &want);
}

#[test]
fn atomics_on_global_and_shared_memory() {
    let dev = Device::load(BASICS);
    let n = 3001;
    let mut rng = Rng::new(8);
    let keys = rng.u32_vec(n);
    let values = rng.uniform_vec(n, -1.0, 1.0);
    let (dkeys, dvalues) = (dev.upload(&keys), dev.upload(&values));
    let (dbins, dbins_shared) = (dev.alloc_zeroed::<i32>(16), dev.alloc_zeroed::<i32>(16));
    let (dsum, dsum_shared) = (dev.alloc_zeroed::<f32>(1), dev.alloc_zeroed::<f32>(1));
    let params = dev
        .params("atomic_histogram")
        .ptr(dkeys)
        .ptr(dvalues)
        .i32(n as i32)
        .ptr(dbins)
        .ptr(dbins_shared)
        .ptr(dsum)
        .ptr(dsum_shared)
        .finish();
    dev.launch_clean("atomic_histogram", grid_1d(blocks_for(n, 256), 256), &params);

    let mut bins = vec![0i32; 16];
    keys.iter().for_each(|k| bins[(k % 16) as usize] += 1);
    assert_eq!(bins.iter().sum::<i32>(), n as i32);
    assert_bit_exact("bins (global atomics)", &dev.download::<i32>(dbins, 16), &bins);
    assert_bit_exact("bins (shared atomics)", &dev.download::<i32>(dbins_shared, 16), &bins);
    // Float atomics add in an unspecified order: any order of n f32 additions
    // is within n * 2^-24 * Σ|v| of the exact sum.
    let exact: f64 = values.iter().map(|&v| f64::from(v)).sum();
    let magnitude: f64 = values.iter().map(|&v| f64::from(v).abs()).sum();
    let atol = n as f64 * f64::powi(2.0, -24) * magnitude;
    assert_close("sum (global atomics)", &dev.download::<f32>(dsum, 1), &[exact], 0.0, atol);
    assert_close("sum (shared atomics)", &dev.download::<f32>(dsum_shared, 1), &[exact], 0.0, atol);
}

#[test]
fn tiled_sgemm_with_odd_tails() {
    let dev = Device::load(BASICS);
    let (m, n, k) = (37usize, 29usize, 53usize);
    let mut rng = Rng::new(9);
    let (a, b) = (rng.uniform_vec(m * k, -1.0, 1.0), rng.uniform_vec(k * n, -1.0, 1.0));
    let (da, db, dc) = (dev.upload(&a), dev.upload(&b), dev.alloc_poisoned::<f32>(m * n));
    let params = dev.params("sgemm_tiled").i32(m as i32).i32(n as i32).i32(k as i32).ptr(da).ptr(db).ptr(dc).finish();
    let config =
        LaunchConfig { grid: [blocks_for(n, 16), blocks_for(m, 16), 1], block: [16, 16, 1], dynamic_shared_bytes: 0 };
    dev.launch_clean("sgemm_tiled", config, &params);
    let got = dev.download::<f32>(dc, m * n);

    // The kernel's order is fixed (one fma per k, ascending; padding adds
    // 0 * 0), so the f32 result is reproducible bit for bit...
    let mut want = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            want[i * n + j] = (0..k).fold(0.0f32, |acc, p| a[i * k + p].mul_add(b[p * n + j], acc));
        }
    }
    assert_bit_exact("C (f32 fma order)", &got, &want);
    // ...and close to the exact product.
    let to_f64 = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
    let (exact, magnitude) = gemm_f64(m, n, k, &to_f64(&a), &to_f64(&b));
    assert_gemm_close("C (vs f64)", &got, &exact, &magnitude, k);
}

// ---------------------------------------------------------------- integer, calls, math

#[test]
fn integer_instructions_prmt_lop3_bfe_mulhi_shf() {
    let dev = Device::load(BASICS);
    for instruction in ["prmt.b32", "lop3.b32", "bfe.u32", "mul.hi.u32", "mul.hi.s32", "shf.l.wrap.b32", "brev.b32"] {
        assert!(dev.ptx.contains(instruction), "nvcc no longer emits {instruction}: the test would not cover it");
    }
    let n = 300;
    let mut rng = Rng::new(10);
    let (a, b, c, sel) = (rng.u32_vec(n), rng.u32_vec(n), rng.u32_vec(n), rng.u32_vec(n));
    let (da, db, dc, dsel) = (dev.upload(&a), dev.upload(&b), dev.upload(&c), dev.upload(&sel));
    let dout = dev.alloc_poisoned::<u32>(8 * n);
    let params = dev.params("integer_ops").ptr(da).ptr(db).ptr(dc).ptr(dsel).ptr(dout).i32(n as i32).finish();
    dev.launch_clean("integer_ops", grid_1d(blocks_for(n, 128), 128), &params);

    let want: Vec<u32> = (0..n).flat_map(|i| integer_ops_reference(a[i], b[i], c[i], sel[i])).collect();
    assert_bit_exact("integer results", &dev.download::<u32>(dout, 8 * n), &want);
}

/// The eight results of `integer_ops` for one element (see basics.cu).
fn integer_ops_reference(x: u32, y: u32, z: u32, s: u32) -> [u32; 8] {
    let pool = (u64::from(y) << 32 | u64::from(x)).to_le_bytes();
    let byte_perm = (0..4).fold(0u32, |acc, i| acc | u32::from(pool[((s >> (4 * i)) & 7) as usize]) << (8 * i));
    let (pos, len) = (s & 31, (s >> 8) & 31);
    let field = if len == 0 { 0 } else { (x >> pos) & ((1u32 << len) - 1) };
    let funnel = ((u64::from(y) << 32 | u64::from(x)) << (s & 31) >> 32) as u32;
    [
        byte_perm,
        (x & y) | (!x & z),
        field,
        ((u64::from(x) * u64::from(y)) >> 32) as u32,
        ((i64::from(x as i32) * i64::from(y as i32)) >> 32) as u32,
        funnel,
        x.count_ones() + y.leading_zeros() * 64,
        x.reverse_bits(),
    ]
}

#[test]
fn noinline_device_function_call() {
    let dev = Device::load("calls.cu");
    assert!(dev.ptx.contains(".func"), "the callee was inlined: no .func in the PTX");
    assert!(dev.ptx.contains("call"), "no call instruction in the PTX");
    let n = 200;
    let x = Rng::new(11).uniform_vec(n, -2.0, 2.0);
    let coeffs = [0.5f32, -1.25, 0.75, 2.0];
    let (dx, dcoeffs, dout) = (dev.upload(&x), dev.upload(&coeffs), dev.alloc_poisoned::<f32>(n));
    let params = dev.params("call_noinline").ptr(dx).ptr(dcoeffs).ptr(dout).i32(n as i32).finish();
    dev.launch_clean("call_noinline", grid_1d(2, 128), &params);
    let want: Vec<f32> =
        x.iter().map(|&v| coeffs[3].mul_add(v, coeffs[2]).mul_add(v, coeffs[1]).mul_add(v, coeffs[0])).collect();
    assert_bit_exact("cubic", &dev.download::<f32>(dout, n), &want);
}

#[test]
fn math_functions_within_documented_error() {
    let dev = Device::load(BASICS);
    let mut x = Rng::new(12).uniform_vec(1000, -10.0, 10.0);
    x.extend([1.0, -1.0, 0.5, 1e-3, -1e-3, 4.0, 9.0, 1e-20]);
    let n = x.len();
    let (dx, dout) = (dev.upload(&x), dev.alloc_poisoned::<f32>(5 * n));
    let params = dev.params("math_functions").ptr(dx).ptr(dout).i32(n as i32).finish();
    dev.launch_clean("math_functions", grid_1d(blocks_for(n, 128), 128), &params);
    let out = dev.download::<f32>(dout, 5 * n);
    let column = |j: usize| (0..n).map(|i| out[5 * i + j]).collect::<Vec<f32>>();
    let exact = |f: fn(f64) -> f64| x.iter().map(|&v| f(f64::from(v))).collect::<Vec<f64>>();

    // Bounds from the CUDA C++ Programming Guide's mathematical-functions tables.
    assert_within_ulps("expf", &column(0), &exact(f64::exp), |_| 2.0);
    assert_within_ulps("__expf", &column(1), &exact(f64::exp), |i| 2.0 + (1.173 * f64::from(x[i]).abs()).floor());
    assert_within_ulps("rsqrtf", &column(2), &exact(|v| 1.0 / v.abs().sqrt()), |_| 2.0);
    assert_within_ulps("sqrtf", &column(3), &exact(|v| v.abs().sqrt()), |_| 0.5);
    assert_within_ulps("tanhf", &column(4), &exact(f64::tanh), |_| 2.0);
}

// ---------------------------------------------------------------- f16 / bf16

/// Values exercising the formats: ordinary magnitudes of both signs, and
/// overflow, subnormal products and exact cancellation as special cases.
fn half_inputs(rng: &mut Rng, count: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..count)
        .map(|_| {
            let magnitude = rng.uniform(0.25, 4.0);
            if rng.next_u32() % 2 == 0 {
                magnitude
            } else {
                -magnitude
            }
        })
        .collect();
    let specials = [60000.0, 60000.0, -60000.0, 1.0 / 4096.0, 1.0 / 1024.0, 3.0, -3.0, 0.0, 1.5, 1.5];
    v[..specials.len()].copy_from_slice(&specials);
    v
}

const HALF: &str = "half_precision.cu";

#[test]
fn f16x2_add_and_fma_bit_exact() {
    let dev = Device::load(HALF);
    let pairs = 301;
    let mut rng = Rng::new(13);
    let to_f16 = |v: Vec<f32>| v.into_iter().map(f16::from_f32).collect::<Vec<_>>();
    let (a, b, c) = (
        to_f16(half_inputs(&mut rng, 2 * pairs)),
        to_f16(half_inputs(&mut rng, 2 * pairs)),
        to_f16(rng.uniform_vec(2 * pairs, -8.0, 8.0)),
    );
    let (da, db, dc) = (dev.upload(&a), dev.upload(&b), dev.upload(&c));
    let (dsum, dfma) = (dev.alloc_poisoned::<f16>(2 * pairs), dev.alloc_poisoned::<f16>(2 * pairs));
    let params = dev.params("half2_add_fma").ptr(da).ptr(db).ptr(dc).ptr(dsum).ptr(dfma).i32(pairs as i32).finish();
    dev.launch_clean("half2_add_fma", grid_1d(blocks_for(pairs, 128), 128), &params);

    // f16 operands add and multiply exactly in f64 at these magnitudes, so one
    // rounding f64 -> f16 is the correctly rounded f16 result.
    let want_sum: Vec<f16> = (0..2 * pairs).map(|i| f16::from_f64(a[i].to_f64() + b[i].to_f64())).collect();
    let want_fma: Vec<f16> =
        (0..2 * pairs).map(|i| f16::from_f64(a[i].to_f64() * b[i].to_f64() + c[i].to_f64())).collect();
    assert!(want_sum[0].is_infinite(), "60000 + 60000 overflows f16");
    assert_bit_exact("__hadd2", &dev.download::<f16>(dsum, 2 * pairs), &want_sum);
    assert_bit_exact("__hfma2", &dev.download::<f16>(dfma, 2 * pairs), &want_fma);
}

#[test]
fn bf16x2_add_and_fma_bit_exact() {
    let dev = Device::load(HALF);
    let pairs = 301;
    let mut rng = Rng::new(14);
    let to_bf16 = |v: Vec<f32>| v.into_iter().map(bf16::from_f32).collect::<Vec<_>>();
    let (a, b, c) = (
        to_bf16(half_inputs(&mut rng, 2 * pairs)),
        to_bf16(half_inputs(&mut rng, 2 * pairs)),
        to_bf16(rng.uniform_vec(2 * pairs, -8.0, 8.0)),
    );
    let (da, db, dc) = (dev.upload(&a), dev.upload(&b), dev.upload(&c));
    let (dsum, dfma) = (dev.alloc_poisoned::<bf16>(2 * pairs), dev.alloc_poisoned::<bf16>(2 * pairs));
    let params = dev.params("bfloat162_add_fma").ptr(da).ptr(db).ptr(dc).ptr(dsum).ptr(dfma).i32(pairs as i32).finish();
    dev.launch_clean("bfloat162_add_fma", grid_1d(blocks_for(pairs, 128), 128), &params);

    let want_sum: Vec<bf16> = (0..2 * pairs).map(|i| bf16::from_f64(a[i].to_f64() + b[i].to_f64())).collect();
    let want_fma: Vec<bf16> =
        (0..2 * pairs).map(|i| bf16::from_f64(a[i].to_f64() * b[i].to_f64() + c[i].to_f64())).collect();
    assert_bit_exact("__hadd2 (bf16)", &dev.download::<bf16>(dsum, 2 * pairs), &want_sum);
    assert_bit_exact("__hfma2 (bf16)", &dev.download::<bf16>(dfma, 2 * pairs), &want_fma);
}

#[test]
fn f32_to_f16_and_bf16_conversions_round_to_nearest_even() {
    let dev = Device::load(HALF);
    let mut x = Rng::new(15).uniform_vec(200, -1000.0, 1000.0);
    x.extend([
        65504.0, // f16 max
        65519.0, // rounds down to f16 max
        65520.0, // rounds to f16 infinity
        1.0e6,   // f16 overflow
        f32::INFINITY,
        -0.0,
        1.0e-7,             // f16 subnormal
        1.0 + 1.0 / 2048.0, // f16 tie: to even (1.0)
        1.0 + 3.0 / 2048.0, // f16 tie: to even (up)
        1.0 + 1.0 / 256.0,  // bf16 tie
        f32::from_bits(1),  // f32 subnormal: zero in f16, subnormal bf16
        3.0e38,             // finite in bf16 range
        f32::MAX,           // bf16 rounds to infinity
    ]);
    let n = x.len();
    let dx = dev.upload(&x);
    let (dh, dbf) = (dev.alloc_poisoned::<f16>(n), dev.alloc_poisoned::<bf16>(n));
    let (dh_back, dbf_back) = (dev.alloc_poisoned::<f32>(n), dev.alloc_poisoned::<f32>(n));
    let params =
        dev.params("convert_half_bfloat16").ptr(dx).ptr(dh).ptr(dbf).ptr(dh_back).ptr(dbf_back).i32(n as i32).finish();
    dev.launch_clean("convert_half_bfloat16", grid_1d(blocks_for(n, 64), 64), &params);

    let want_h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
    let want_bf: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    assert_bit_exact("__float2half_rn", &dev.download::<f16>(dh, n), &want_h);
    assert_bit_exact("__float2bfloat16", &dev.download::<bf16>(dbf, n), &want_bf);
    assert_bit_exact(
        "__half2float",
        &dev.download::<f32>(dh_back, n),
        &want_h.iter().map(|h| h.to_f32()).collect::<Vec<_>>(),
    );
    assert_bit_exact(
        "__bfloat162float",
        &dev.download::<f32>(dbf_back, n),
        &want_bf.iter().map(|h| h.to_f32()).collect::<Vec<_>>(),
    );
}

// ---------------------------------------------------------------- tensor cores

const TENSOR_GEMM: &str = "tensor_core_gemm.cu";

/// Runs `kernel` of tensor_core_gemm.cu on seeded inputs rounded to the
/// 16-bit type by `round`, and compares with the f64 product of the rounded
/// values (so only f32 accumulation error remains).
fn check_tensor_core_gemm<T: common::Elem>(kernel: &str, m: usize, n: usize, k: usize, round: fn(f32) -> (T, f64)) {
    let dev = Device::load(TENSOR_GEMM);
    for needed in ["cp.async.cg.shared.global", "cp.async.wait_group", "ldmatrix.sync.aligned.m8n8.x4.trans"] {
        assert!(dev.ptx.contains(needed), "PTX lacks {needed}");
    }
    let mut rng = Rng::new(16 + k as u64);
    let (a, a64): (Vec<T>, Vec<f64>) = rng.uniform_vec(m * k, -1.0, 1.0).into_iter().map(round).unzip();
    let (b, b64): (Vec<T>, Vec<f64>) = rng.uniform_vec(k * n, -1.0, 1.0).into_iter().map(round).unzip();
    let (da, db, dc) = (dev.upload(&a), dev.upload(&b), dev.alloc_poisoned::<f32>(m * n));
    let params = dev.params(kernel).i32(m as i32).i32(n as i32).i32(k as i32).ptr(da).ptr(db).ptr(dc).finish();
    let config =
        LaunchConfig { grid: [(n / 64) as u32, (m / 64) as u32, 1], block: [128, 1, 1], dynamic_shared_bytes: 0 };
    let counters = dev.launch_clean(kernel, config, &params);
    let (exact, magnitude) = gemm_f64(m, n, k, &a64, &b64);
    assert_gemm_close(kernel, &dev.download::<f32>(dc, m * n), &exact, &magnitude, k);
    // One m16n8k16 per 16x8x16 piece of the product.
    let mma_count: u64 = counters.tensor_instructions.values().sum();
    assert_eq!(mma_count, (m / 16 * n / 8 * k / 16) as u64, "tensor instructions {:?}", counters.tensor_instructions);
}

fn round_bf16(x: f32) -> (bf16, f64) {
    let v = bf16::from_f32(x);
    (v, v.to_f64())
}

fn round_f16(x: f32) -> (f16, f64) {
    let v = f16::from_f32(x);
    (v, v.to_f64())
}

#[test]
fn tensor_core_gemm_bf16_three_k_tiles() {
    // K = 96: exactly the 3-stage ring, filled by the prologue and one refill.
    check_tensor_core_gemm("tc_gemm_bf16", 128, 192, 96, round_bf16);
}

#[test]
fn tensor_core_gemm_bf16_ring_wraps() {
    // K = 224: seven k-tiles, the ring of three slots wraps twice.
    check_tensor_core_gemm("tc_gemm_bf16", 64, 128, 224, round_bf16);
}

#[test]
fn tensor_core_gemm_f16() {
    check_tensor_core_gemm("tc_gemm_f16", 128, 64, 160, round_f16);
}

// ---------------------------------------------------------------- the sources themselves

/// Every test kernel source compiles with nvcc and declares the entries the
/// tests launch (needs only nvcc, not the emulator).
#[test]
fn every_test_kernel_source_compiles_to_ptx() {
    let expected: [(&str, &[&str]); 7] = [
        (
            BASICS,
            &[
                "vec_add_f32",
                "saxpy_grid_stride",
                "grid_coordinates",
                "warp_reduce_f32",
                "warp_vote",
                "block_reduce_f32",
                "reverse_dynamic_shared",
                "atomic_histogram",
                "sgemm_tiled",
                "integer_ops",
                "math_functions",
            ],
        ),
        (HALF, &["half2_add_fma", "bfloat162_add_fma", "convert_half_bfloat16"]),
        (TENSOR_GEMM, &["tc_gemm_bf16", "tc_gemm_f16"]),
        (
            "planted_bugs.cu",
            &[
                "write_past_end",
                "write_within_bounds",
                "load_at_byte_offset",
                "copy_f32",
                "shared_index_past_end",
                "shared_index_wrapped",
                "rotate_without_barrier",
                "rotate_with_barrier",
                "read_shared_partly_written",
                "barrier_in_divergent_branch",
                "barrier_in_uniform_code",
                "shuffle_full_mask_half_warp",
                "shuffle_half_mask_half_warp",
                "barriers_never_complete",
                "barriers_complete",
                "two_separate_races",
            ],
        ),
        ("async_copy_bugs.cu", &["async_copy_then_read"]),
        ("calls.cu", &["call_noinline"]),
        ("counted.cu", &["load_with_stride", "broadcast_first", "shared_with_stride", "barrier_rounds"]),
    ];
    for (source, entries) in expected {
        let ptx = common::compile_ptx(source);
        assert!(ptx.contains(".target sm_80"), "{source}: not compiled for sm_80");
        for entry in entries {
            assert!(ptx.contains(&format!(".entry {entry}(")), "{source}: no entry `{entry}`");
        }
        let declared = ptx.matches(".entry ").count();
        assert_eq!(declared, entries.len(), "{source}: an entry without a test, or a test without an entry");
    }
}

// ---------------------------------------------------------------- the references themselves

mod reference_checks {
    use super::common::{assert_close, f32_ulp, gemm_f64, Rng};
    use super::integer_ops_reference;

    #[test]
    fn gemm_reference_matches_a_hand_computed_product() {
        // [1 2; 3 4] [5 6; 7 8] = [19 22; 43 50]
        let (c, magnitude) = gemm_f64(2, 2, 2, &[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0]);
        assert_eq!(c, vec![19.0, 22.0, 43.0, 50.0]);
        assert_eq!(magnitude, vec![19.0, 22.0, 43.0, 50.0]);
        let (c, magnitude) = gemm_f64(1, 1, 2, &[1.0, -2.0], &[3.0, 4.0]);
        assert_eq!((c[0], magnitude[0]), (-5.0, 11.0));
    }

    #[test]
    fn integer_reference_matches_hand_worked_values() {
        let [perm, select, field, hi_u, hi_s, funnel, counts, reversed] =
            integer_ops_reference(0x4433_2211, 0x8877_6655, 0x0f0f_0f0f, 0x0000_0504);
        assert_eq!(perm, 0x1166_1155, "selector nibbles 4, 0, 5, 0 pick bytes of y:x");
        assert_eq!(select, 0x0b3f_2f1f, "x ? y : z bit by bit");
        assert_eq!(field, 0x01, "bits [4, 9) of x");
        assert_eq!(hi_u, 0x245a_f920);
        assert_eq!(hi_s, 0xe027_d70f, "y is negative as i32");
        assert_eq!(funnel, 0x8776_6554, "(y:x << 4) >> 32");
        assert_eq!(counts, 10, "popc(x) = 10, clz(y) = 0");
        assert_eq!(reversed, 0x8844_CC22);
        let [_, _, zero_len, ..] = integer_ops_reference(u32::MAX, 0, 0, 0x0000_0003);
        assert_eq!(zero_len, 0, "bfe with length 0 is 0");
    }

    #[test]
    fn f32_ulp_is_the_spacing_of_floats() {
        assert_eq!(f32_ulp(1.0), f64::from(f32::EPSILON));
        assert_eq!(f32_ulp(-2.0), 2.0 * f64::from(f32::EPSILON));
        assert_eq!(f32_ulp(0.0), f64::from(f32::from_bits(1)));
    }

    #[test]
    #[should_panic(expected = "first at index 2")]
    fn assert_close_names_the_first_bad_index() {
        assert_close("t", &[1.0, 2.0, 3.5, f32::NAN], &[1.0, 2.0, 3.0, 4.0], 1e-6, 0.0);
    }

    #[test]
    #[should_panic(expected = "first at index 1")]
    fn assert_close_rejects_an_unexpected_nan() {
        assert_close("t", &[1.0, f32::NAN], &[1.0, 2.0], 1.0, 1.0);
    }

    #[test]
    fn rng_is_seeded_and_in_range() {
        let a = Rng::new(7).uniform_vec(100, -1.0, 1.0);
        assert_eq!(a, Rng::new(7).uniform_vec(100, -1.0, 1.0));
        assert_ne!(a, Rng::new(8).uniform_vec(100, -1.0, 1.0));
        assert!(a.iter().all(|&x| (-1.0..1.0).contains(&x)));
    }
}
