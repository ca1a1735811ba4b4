//! PTX forms beyond plain arithmetic that real-world kernels emit
//! (`kernels/ptx_coverage.cu`): scoped register declarations, min/max.NaN on
//! f16/bf16, half-precision `set` and packed `setp`, `brx.idx`, `.b128`
//! accesses, carry chains (`add.cc`…`madc`), the device-side `assert`,
//! integer `mma` (int8 inputs, s32 accumulators), `ldmatrix` on generic
//! addresses and device `printf`.
//! Each runs with every check on against a CPU reference on seeded inputs,
//! outputs poisoned so an unwritten element fails.

mod common;

use common::{assert_bit_exact, blocks_for, compile_ptx_with, grid_1d, Device, Rng};
use half::{bf16, f16};
use ptx_emu::{CheckOptions, FindingKind};

const SOURCE: &str = "ptx_coverage.cu";

/// `setp.bf16x2` needs sm_90; everything else here is sm_80 PTX.
fn device() -> Device {
    Device::from_ptx(ptx())
}

fn ptx() -> String {
    compile_ptx_with(SOURCE, "sm_90", &["-std=c++17".to_string()])
}

/// Half-precision bit patterns: mostly random bits (which include NaNs and
/// infinities), with the special values mixed in often.
fn half_bits(rng: &mut Rng, n: usize, specials: &[u16]) -> Vec<u16> {
    (0..n)
        .map(|_| {
            let r = rng.next_u32();
            if r % 4 == 0 {
                specials[(r / 4) as usize % specials.len()]
            } else {
                (r >> 16) as u16
            }
        })
        .collect()
}

const F16_SPECIALS: [u16; 10] = [0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0xFE01, 0x7C01, 0x0001, 0x3C00, 0xBC00];
const BF16_SPECIALS: [u16; 10] = [0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0xFFC1, 0x7F81, 0x0001, 0x3F80, 0xBF80];

#[derive(Clone, Copy)]
enum Half {
    F16,
    Bf16,
}

impl Half {
    fn value(self, bits: u16) -> f32 {
        match self {
            Half::F16 => f16::from_bits(bits).to_f32(),
            Half::Bf16 => bf16::from_bits(bits).to_f32(),
        }
    }
}

/// `max.NaN`/`min.NaN`: the canonical NaN if either operand is NaN, else
/// the larger/smaller value with −0 below +0.
fn minmax_nan(kind: Half, a: u16, b: u16, is_max: bool) -> u16 {
    let (x, y) = (kind.value(a), kind.value(b));
    if x.is_nan() || y.is_nan() {
        return 0x7FFF;
    }
    let key = |bits: u16, v: f32| (v, (bits & 0x8000) == 0);
    let a_wins = if is_max { key(a, x) >= key(b, y) } else { key(a, x) <= key(b, y) };
    if a_wins {
        a
    } else {
        b
    }
}

fn lanes(word: u32) -> [u16; 2] {
    [word as u16, (word >> 16) as u16]
}

fn pack(lo: u16, hi: u16) -> u32 {
    u32::from(lo) | u32::from(hi) << 16
}

// ---------------------------------------------------------------- scoped registers

#[test]
fn nested_scopes_declare_and_shadow_registers() {
    let dev = device();
    let n = 300;
    let mut rng = Rng::new(41);
    let x: Vec<u32> = rng.u32_vec(n);
    let (dx, dout) = (dev.upload(&x), dev.alloc_poisoned::<u32>(n));
    let params = dev.params("scoped_registers").ptr(dx).ptr(dout).i32(n as i32).finish();
    dev.launch_clean("scoped_registers", grid_1d(blocks_for(n, 128), 128), &params);
    let want: Vec<u32> = x.iter().map(|v| v.wrapping_add(100).wrapping_add(7).wrapping_add(*v)).collect();
    assert_bit_exact("out", &dev.download::<u32>(dout, n), &want);
}

/// cuda_fp16.h's `hexp`/`h2exp` are inline asm with nested `{ .reg … }`
/// blocks (ex2.approx plus per-value fix-ups); the result is within one f16
/// ulp of exp(x).
#[test]
fn cuda_fp16_exp_runs_its_scoped_inline_asm() {
    let dev = device();
    let n = 500;
    let mut rng = Rng::new(42);
    let x: Vec<f16> = (0..n).map(|_| f16::from_f32(rng.uniform(-9.0, 9.0))).collect();
    let x2: Vec<f16> = (0..2 * n).map(|_| f16::from_f32(rng.uniform(-9.0, 9.0))).collect();
    let (dx, dout) = (dev.upload(&x), dev.alloc_poisoned::<f16>(n));
    let (dx2, dout2) = (dev.upload(&x2), dev.alloc_poisoned::<f16>(2 * n));
    let params = dev.params("half_exp").ptr(dx).ptr(dout).ptr(dx2).ptr(dout2).i32(n as i32).finish();
    dev.launch_clean("half_exp", grid_1d(blocks_for(n, 128), 128), &params);
    let check = |what: &str, input: &[f16], got: &[f16]| {
        for (i, (x, y)) in input.iter().zip(got).enumerate() {
            let want = f64::from(x.to_f32()).exp();
            let ulp = {
                let r = f16::from_f64(want);
                f64::from(f16::from_bits(r.to_bits() + 1).to_f32() - r.to_f32())
            };
            let err = (f64::from(y.to_f32()) - want).abs();
            assert!(err <= ulp, "{what}[{i}]: exp({}) = {want}, got {} (error {err}, ulp {ulp})", x, y);
        }
    };
    check("hexp", &x, &dev.download::<f16>(dout, n));
    check("h2exp", &x2, &dev.download::<f16>(dout2, 2 * n));
}

// ---------------------------------------------------------------- min/max.NaN

#[test]
fn min_max_nan_on_f16_bf16_and_packed_pairs() {
    let dev = device();
    let n = 700;
    let mut rng = Rng::new(43);
    let a = half_bits(&mut rng, n, &F16_SPECIALS);
    let b = half_bits(&mut rng, n, &F16_SPECIALS);
    let c = half_bits(&mut rng, n, &BF16_SPECIALS);
    let d = half_bits(&mut rng, n, &BF16_SPECIALS);
    let a2 = half_bits(&mut rng, 2 * n, &F16_SPECIALS);
    let b2 = half_bits(&mut rng, 2 * n, &F16_SPECIALS);
    let c2 = half_bits(&mut rng, 2 * n, &BF16_SPECIALS);
    let d2 = half_bits(&mut rng, 2 * n, &BF16_SPECIALS);
    let ins: Vec<u64> = [&a, &b, &c, &d, &a2, &b2, &c2, &d2].iter().map(|v| dev.upload(v)).collect();
    let outs: Vec<u64> = [2 * n, 2 * n, 4 * n, 4 * n].iter().map(|&k| dev.alloc_poisoned::<u16>(k)).collect();
    let params = dev
        .params("minmax_nan")
        .ptr(ins[0])
        .ptr(ins[1])
        .ptr(outs[0])
        .ptr(ins[2])
        .ptr(ins[3])
        .ptr(outs[1])
        .ptr(ins[4])
        .ptr(ins[5])
        .ptr(outs[2])
        .ptr(ins[6])
        .ptr(ins[7])
        .ptr(outs[3])
        .i32(n as i32)
        .finish();
    dev.launch_clean("minmax_nan", grid_1d(blocks_for(n, 128), 128), &params);
    let scalar = |kind, x: &[u16], y: &[u16]| -> Vec<u16> {
        x.iter().zip(y).flat_map(|(&p, &q)| [minmax_nan(kind, p, q, true), minmax_nan(kind, p, q, false)]).collect()
    };
    // Packed: element i holds [max pair, min pair], each pair lane-wise.
    let packed = |kind, x: &[u16], y: &[u16]| -> Vec<u16> {
        (0..n)
            .flat_map(|i| {
                let lane = |k: usize, is_max| minmax_nan(kind, x[2 * i + k], y[2 * i + k], is_max);
                [lane(0, true), lane(1, true), lane(0, false), lane(1, false)]
            })
            .collect()
    };
    assert_bit_exact("f16", &dev.download::<u16>(outs[0], 2 * n), &scalar(Half::F16, &a, &b));
    assert_bit_exact("bf16", &dev.download::<u16>(outs[1], 2 * n), &scalar(Half::Bf16, &c, &d));
    assert_bit_exact("f16x2", &dev.download::<u16>(outs[2], 4 * n), &packed(Half::F16, &a2, &b2));
    assert_bit_exact("bf16x2", &dev.download::<u16>(outs[3], 4 * n), &packed(Half::Bf16, &c2, &d2));
}

// ---------------------------------------------------------------- half comparisons

#[test]
fn packed_setp_and_half_set() {
    let dev = device();
    let n = 900;
    let mut rng = Rng::new(44);
    // Half the pairs share bits (so equality happens), the rest are independent.
    let a: Vec<u32> = (0..n)
        .map(|_| pack(half_bits(&mut rng, 1, &F16_SPECIALS)[0], half_bits(&mut rng, 1, &BF16_SPECIALS)[0]))
        .collect();
    let b: Vec<u32> = a
        .iter()
        .map(|&x| {
            let r = rng.next_u32();
            match r % 4 {
                0 => x,
                1 => x ^ 0x8000_8000, // the negated pair (±0 against each other)
                _ => pack(half_bits(&mut rng, 1, &F16_SPECIALS)[0], half_bits(&mut rng, 1, &BF16_SPECIALS)[0]),
            }
        })
        .collect();
    let (da, db) = (dev.upload(&a), dev.upload(&b));
    let (flags, mask, gt, eq) = (
        dev.alloc_poisoned::<u32>(n),
        dev.alloc_poisoned::<u32>(n),
        dev.alloc_poisoned::<u32>(n),
        dev.alloc_poisoned::<u16>(n),
    );
    let params = dev.params("half_compare").ptr(da).ptr(db).ptr(flags).ptr(mask).ptr(gt).ptr(eq).i32(n as i32).finish();
    dev.launch_clean("half_compare", grid_1d(blocks_for(n, 128), 128), &params);

    let f = |bits: u16| Half::F16.value(bits);
    let bf = |bits: u16| Half::Bf16.value(bits);
    let mut want_flags = Vec::new();
    let mut want_mask = Vec::new();
    let mut want_gt = Vec::new();
    let mut want_eq = Vec::new();
    for i in 0..n {
        let (x, y) = (lanes(a[i]), lanes(b[i]));
        let mut bits = 0;
        for k in 0..2 {
            let (p, q) = (f(x[k]), f(y[k]));
            let (r, s) = (bf(x[k]), bf(y[k]));
            bits |= u32::from(p < q) << k; // setp.lt.f16x2
            bits |= u32::from(r.is_nan() || s.is_nan() || r < s) << (2 + k); // setp.ltu.bf16x2
            bits |= u32::from(p >= q && i % 2 == 1) << (4 + k); // setp.ge.and.f16x2 with c = (i odd)
        }
        want_flags.push(bits);
        let gt_lane = |k: usize| f(x[k]) > f(y[k]);
        want_mask.push(pack(if gt_lane(0) { 0xFFFF } else { 0 }, if gt_lane(1) { 0xFFFF } else { 0 }));
        want_gt.push(pack(if gt_lane(0) { 0x3C00 } else { 0 }, if gt_lane(1) { 0x3C00 } else { 0 }));
        want_eq.push(if f(x[0]) == f(y[0]) { 0x3C00u16 } else { 0 });
    }
    assert_bit_exact("setp flags", &dev.download::<u32>(flags, n), &want_flags);
    assert_bit_exact("__hgt2_mask", &dev.download::<u32>(mask, n), &want_mask);
    assert_bit_exact("__hgt2", &dev.download::<u32>(gt, n), &want_gt);
    assert_bit_exact("set.eq.f16.f16", &dev.download::<u16>(eq, n), &want_eq);
}

// ---------------------------------------------------------------- brx.idx

#[test]
fn brx_idx_branches_each_lane_through_its_target_list() {
    let dev = device();
    let n = 333;
    let mut rng = Rng::new(45);
    let sel: Vec<u32> = (0..n).map(|_| rng.next_u32() % 4).collect();
    let x = rng.u32_vec(n);
    let (dsel, dx, dout) = (dev.upload(&sel), dev.upload(&x), dev.alloc_poisoned::<u32>(n));
    let params = dev.params("indirect_branch").ptr(dsel).ptr(dx).ptr(dout).i32(n as i32).finish();
    dev.launch_clean("indirect_branch", grid_1d(blocks_for(n, 64), 64), &params);
    let want: Vec<u32> = sel
        .iter()
        .zip(&x)
        .map(|(s, v)| match s {
            0 => 10,
            1 => v.wrapping_add(1),
            2 => v.wrapping_mul(3),
            _ => 0u32.wrapping_sub(*v),
        })
        .collect();
    assert_bit_exact("out", &dev.download::<u32>(dout, n), &want);
}

#[test]
fn brx_idx_outside_the_list_stops_the_kernel() {
    let dev = device();
    let n = 64;
    let mut sel = vec![1u32; n];
    sel[37] = 4;
    let (dsel, dx, dout) = (dev.upload(&sel), dev.upload(&vec![5u32; n]), dev.alloc_poisoned::<u32>(n));
    let params = dev.params("indirect_branch").ptr(dsel).ptr(dx).ptr(dout).i32(n as i32).finish();
    let report = dev.launch_with("indirect_branch", grid_1d(1, 64), &params, &CheckOptions::default());
    let finding = report.findings.first().expect("an out-of-range brx.idx is reported");
    assert_eq!(finding.kind, FindingKind::Trap, "{finding}");
    assert_eq!(finding.thread, [37, 0, 0], "{finding}");
    assert!(finding.instruction.starts_with("brx.idx"), "{finding}");
    assert!(finding.detail.contains("index 4"), "{finding}");
}

// ---------------------------------------------------------------- .b128

#[test]
fn b128_loads_stores_and_moves() {
    let dev = device();
    let n = 200;
    let mut rng = Rng::new(46);
    let input: Vec<u64> = (0..2 * n + 2).map(|_| rng.next_u64()).collect();
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<u64>(2 * n + 2));
    let params = dev.params("b128_swap_halves").ptr(din).ptr(dout).i32(0).i32(n as i32).finish();
    dev.launch_clean("b128_swap_halves", grid_1d(blocks_for(n, 128), 128), &params);
    let want: Vec<u64> = (0..n).flat_map(|i| [input[2 * i + 1], input[2 * i]]).collect();
    assert_bit_exact("out", &dev.download::<u64>(dout, 2 * n), &want);

    // Shifted by 8 bytes, every 16-byte access is misaligned: memcheck says so.
    let params = dev.params("b128_swap_halves").ptr(din).ptr(dout).i32(1).i32(n as i32).finish();
    let report = dev.launch_with("b128_swap_halves", grid_1d(1, 32), &params, &CheckOptions::default());
    let finding = report.findings.first().expect("a misaligned .b128 load is reported");
    assert_eq!(finding.kind, FindingKind::Misaligned, "{finding}");
    assert!(finding.instruction.starts_with("ld.global.b128"), "{finding}");
}

// ---------------------------------------------------------------- carry chains

#[test]
fn carry_chains_of_multiword_arithmetic() {
    let dev = device();
    let n = 257;
    let mut rng = Rng::new(47);
    // Extremes mixed in, so every carry is exercised.
    let word = |rng: &mut Rng| match rng.next_u32() % 5 {
        0 => u64::MAX,
        1 => u64::MAX << 32,
        2 => u64::from(u32::MAX),
        _ => rng.next_u64(),
    };
    let a: Vec<u64> = (0..n).map(|_| word(&mut rng)).collect();
    let b: Vec<u64> = (0..n).map(|_| word(&mut rng)).collect();
    let c: Vec<u64> = (0..2 * n).map(|_| word(&mut rng)).collect();
    let d: Vec<u64> = (0..2 * n).map(|_| word(&mut rng)).collect();
    let ins: Vec<u64> = [&a, &b, &c, &d].iter().map(|v| dev.upload(v)).collect();
    let outs: Vec<u64> = (0..5).map(|_| dev.alloc_poisoned::<u64>(2 * n)).collect();
    let mut p = dev.params("carry_chains");
    for addr in ins.iter().chain(&outs) {
        p = p.ptr(*addr);
    }
    let params = p.i32(n as i32).finish();
    dev.launch_clean("carry_chains", grid_1d(blocks_for(n, 64), 64), &params);

    let u128_at = |v: &[u64], i: usize| u128::from(v[2 * i]) | u128::from(v[2 * i + 1]) << 64;
    let split = |x: u128| [x as u64, (x >> 64) as u64];
    let want = |f: &dyn Fn(usize) -> u128| -> Vec<u64> { (0..n).flat_map(|i| split(f(i))).collect() };
    let product = |i: usize| u128::from(a[i]) * u128::from(b[i]);
    assert_bit_exact(
        "mad.lo.cc/madc.hi",
        &dev.download::<u64>(outs[0], 2 * n),
        &want(&|i| product(i).wrapping_add(u128_at(&c, i))),
    );
    assert_bit_exact(
        "add.cc/addc",
        &dev.download::<u64>(outs[1], 2 * n),
        &want(&|i| u128_at(&c, i).wrapping_add(u128_at(&d, i))),
    );
    assert_bit_exact(
        "sub.cc/subc",
        &dev.download::<u64>(outs[2], 2 * n),
        &want(&|i| u128_at(&c, i).wrapping_sub(u128_at(&d, i))),
    );
    assert_bit_exact("madc on 32-bit limbs", &dev.download::<u64>(outs[3], 2 * n), &want(&product));
    assert_bit_exact(
        "unsigned __int128",
        &dev.download::<u64>(outs[4], 2 * n),
        &want(&|i| {
            let v = u128_at(&c, i);
            v.wrapping_mul(3).wrapping_add(v >> 7)
        }),
    );
}

// ---------------------------------------------------------------- assert

/// The line of `checked_double`'s `assert` in the source, as the message names it.
fn assert_line() -> usize {
    let source = std::fs::read_to_string(common::kernel_source(SOURCE)).expect("kernel source readable");
    1 + source.lines().position(|l| l.contains("assert(x[i] < limit);")).expect("the assert is in the source")
}

/// What the CUDA runtime prints for the failing thread (the file as nvcc was given it).
fn assert_message(block: u32, thread: u32) -> String {
    format!(
        "{}:{}: void checked_double(const float *, float *, float, int): block: [{block},0,0], thread: [{thread},0,0] Assertion `x[i] < limit` failed.",
        common::kernel_source(SOURCE).display(),
        assert_line()
    )
}

#[test]
fn assert_that_holds_changes_nothing() {
    let dev = device();
    let n = 300;
    let mut rng = Rng::new(48);
    let x = rng.uniform_vec(n, -5.0, 5.0);
    let (dx, dout) = (dev.upload(&x), dev.alloc_poisoned::<f32>(n));
    let params = dev.params("checked_double").ptr(dx).ptr(dout).f32(5.0).i32(n as i32).finish();
    dev.launch_clean("checked_double", grid_1d(blocks_for(n, 128), 128), &params);
    let want: Vec<f32> = x.iter().map(|v| 2.0 * v).collect();
    assert_bit_exact("out", &dev.download::<f32>(dout, n), &want);
}

#[test]
fn failed_assert_is_a_finding_with_the_runtime_message() {
    let dev = device();
    let n = 300;
    let mut x = vec![1.0f32; n];
    x[128 + 3] = 9.0; // block 1, thread 3
    let (dx, dout) = (dev.upload(&x), dev.alloc_poisoned::<f32>(n));
    let params = dev.params("checked_double").ptr(dx).ptr(dout).f32(5.0).i32(n as i32).finish();
    let report = dev.launch_with("checked_double", grid_1d(blocks_for(n, 128), 128), &params, &CheckOptions::default());
    let finding = report.findings.first().expect("a failed assert is reported");
    assert_eq!(finding.kind, FindingKind::Assert, "{finding}");
    assert_eq!(finding.kind.cuda_error_code(), 710, "CUDA_ERROR_ASSERT");
    assert_eq!((finding.cta, finding.thread), ([1, 0, 0], [3, 0, 0]), "{finding}");
    assert_eq!(finding.detail, assert_message(1, 3));
}

/// Through the driver API in a child process (a failed assert leaves the
/// context in a sticky error, which must not reach other tests): the launch
/// returns CUDA_ERROR_ASSERT and the runtime's line appears on stderr.
#[test]
fn failed_assert_through_the_driver_api() {
    let output = std::process::Command::new(std::env::current_exe().expect("test binary path"))
        .args(["--ignored", "--exact", "assert_child_process", "--nocapture", "--test-threads=1"])
        // The kernels are sm_90 PTX, which the driver loads only on a device
        // presenting compute capability 9.0.
        .env("PTX_EMU_COMPUTE_CAPABILITY", "90")
        .output()
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("1 passed"), "the child test did not run:\n{stdout}");
    let want = assert_message(2, 7);
    assert!(stderr.lines().any(|l| l == want), "no line `{want}` on stderr:\n{stderr}");
}

#[test]
#[ignore = "run in a child process by failed_assert_through_the_driver_api"]
fn assert_child_process() {
    use cuda::context::{cuCtxSetCurrent, cuCtxSynchronize, cuDevicePrimaryCtxRetain, cuInit};
    use cuda::launch::cuLaunchKernel;
    use cuda::memory::{cuMemAlloc_v2, cuMemcpyHtoD_v2};
    use cuda::module::{cuModuleGetFunction, cuModuleLoadData};
    use std::ffi::{c_void, CString};
    use std::ptr::{from_mut, null_mut};

    let ptx = CString::new(ptx()).expect("PTX has no NUL");
    let n = 300usize;
    let mut x = vec![0.5f32; n];
    x[2 * 128 + 7] = 6.0; // block 2, thread 7
    unsafe {
        assert_eq!(cuInit(0), 0);
        let mut context = null_mut();
        assert_eq!(cuDevicePrimaryCtxRetain(&mut context, 0), 0);
        assert_eq!(cuCtxSetCurrent(context), 0);
        let mut module = null_mut();
        assert_eq!(cuModuleLoadData(&mut module, ptx.as_ptr().cast()), 0);
        let mut function = null_mut();
        let name = CString::new("checked_double").unwrap();
        assert_eq!(cuModuleGetFunction(&mut function, module, name.as_ptr()), 0);
        let (mut dx, mut dout) = (0u64, 0u64);
        assert_eq!(cuMemAlloc_v2(&mut dx, 4 * n), 0);
        assert_eq!(cuMemAlloc_v2(&mut dout, 4 * n), 0);
        assert_eq!(cuMemcpyHtoD_v2(dx, x.as_ptr().cast(), 4 * n), 0);
        let (mut limit, mut count) = (5.0f32, n as i32);
        let mut args: [*mut c_void; 4] = [
            from_mut(&mut dx).cast(),
            from_mut(&mut dout).cast(),
            from_mut(&mut limit).cast(),
            from_mut(&mut count).cast(),
        ];
        let code = cuLaunchKernel(function, 3, 1, 1, 128, 1, 1, 0, null_mut(), args.as_mut_ptr(), null_mut());
        assert_eq!(code, 710, "CUDA_ERROR_ASSERT from the launch");
        assert_eq!(cuCtxSynchronize(), 710, "the error is sticky");
    }
}

// ---------------------------------------------------------------- WARP_SZ

#[test]
fn warp_size_constant_in_half2_shuffles() {
    let dev = device();
    let warps = 6;
    let mut rng = Rng::new(49);
    // Small integers: every partial sum is exact in f16, so any order agrees.
    let x: Vec<f16> = (0..64 * warps).map(|_| f16::from_f32((rng.next_u32() % 17) as f32 - 8.0)).collect();
    let (dx, dout) = (dev.upload(&x), dev.alloc_poisoned::<f16>(2 * warps));
    let params = dev.params("half2_warp_sum").ptr(dx).ptr(dout).finish();
    dev.launch_clean("half2_warp_sum", grid_1d(2, 96), &params);
    let want: Vec<f16> = (0..warps)
        .flat_map(|w| {
            let lane_sum = |k: usize| (0..32).map(|l| x[2 * (32 * w + l) + k].to_f32()).sum::<f32>();
            [f16::from_f32(lane_sum(0)), f16::from_f32(lane_sum(1))]
        })
        .collect();
    assert_bit_exact("warp sums", &dev.download::<f16>(dout, 2 * warps), &want);
}

// ---------------------------------------------------------------- integer mma

/// Lane `lane`'s registers for A (16 x k, row-major bytes), B (k x 8) and
/// element `i` of C/D, from the PTX ISA's per-element tables for `.s8`/`.u8`:
/// `a_i` at row `g` (i % 8 < 4) or `g + 8`, column `4t + i % 4` (+16 for i >= 8);
/// `b_i` at row `4t + i % 4` (+16 for i >= 4), column `g`; `c_i` at row `g`
/// (i < 2) or `g + 8`, column `2t + i % 2`.
fn int8_fragments(a: &[Vec<u8>], b: &[Vec<u8>], k: usize) -> (Vec<u32>, Vec<u32>) {
    let (mut fa, mut fb) = (vec![0u32; 4 * 32], vec![0u32; 2 * 32]);
    for lane in 0..32 {
        let (g, t) = (lane / 4, lane % 4);
        for i in 0..k / 2 {
            let (row, col) = (if i % 8 < 4 { g } else { g + 8 }, 4 * t + i % 4 + if i >= 8 { 16 } else { 0 });
            fa[4 * lane + i / 4] |= u32::from(a[row][col]) << (8 * (i % 4));
        }
        for i in 0..k / 4 {
            let row = 4 * t + i % 4 + if i >= 4 { 16 } else { 0 };
            fb[2 * lane + i / 4] |= u32::from(b[row][g]) << (8 * (i % 4));
        }
    }
    (fa, fb)
}

#[test]
fn integer_mma_m16n8k32_and_m16n8k16() {
    let dev = device();
    let mut rng = Rng::new(50);
    for (k, mixed) in [(32, false), (32, true), (16, false)] {
        let a: Vec<Vec<u8>> = (0..16).map(|_| (0..k).map(|_| rng.next_u32() as u8).collect()).collect();
        let b: Vec<Vec<u8>> = (0..k).map(|_| (0..8).map(|_| rng.next_u32() as u8).collect()).collect();
        let c: Vec<i32> = (0..4 * 32).map(|_| rng.next_u32() as i32 >> 8).collect();
        let (fa, fb) = int8_fragments(&a, &b, k);
        let (da, db, dc) = (dev.upload(&fa), dev.upload(&fb), dev.upload(&c));
        let dd = dev.alloc_poisoned::<i32>(4 * 32);
        let params =
            dev.params("int8_mma").ptr(da).ptr(db).ptr(dc).ptr(dd).i32((k == 32) as i32).i32(mixed as i32).finish();
        dev.launch_clean("int8_mma", grid_1d(1, 32), &params);
        let b_value = |v: u8| if mixed { i32::from(v) } else { i32::from(v as i8) };
        let want: Vec<i32> = (0..4 * 32)
            .map(|e| {
                let (lane, i) = (e / 4, e % 4);
                let (row, col) = (if i < 2 { lane / 4 } else { lane / 4 + 8 }, 2 * (lane % 4) + i % 2);
                (0..k).fold(c[e], |s, j| s.wrapping_add(i32::from(a[row][j] as i8) * b_value(b[j][col])))
            })
            .collect();
        assert_bit_exact(&format!("m16n8k{k} mixed={mixed}"), &dev.download::<i32>(dd, 4 * 32), &want);
    }
}

// ---------------------------------------------------------------- generic ldmatrix

#[test]
fn ldmatrix_on_generic_addresses_reads_shared_memory() {
    let dev = device();
    let mut rng = Rng::new(51);
    let input: Vec<u32> = (0..128).map(|_| rng.next_u32()).collect();
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<u32>(8 * 32));
    let params = dev.params("ldmatrix_generic").ptr(din).ptr(dout).i32(0).finish();
    dev.launch_clean("ldmatrix_generic", grid_1d(1, 32), &params);
    let out = dev.download::<u32>(dout, 8 * 32);
    for lane in 0..32 {
        let (shared, generic) = (&out[8 * lane..8 * lane + 4], &out[8 * lane + 4..8 * lane + 8]);
        assert_eq!(generic, shared, "lane {lane}: generic and .shared ldmatrix agree");
        // ldmatrix.x4: register q of lane l holds row l / 4 of matrix q, words l % 4.
        let want: Vec<u32> = (0..4).map(|q| input[(8 * q + lane / 4) * 4 + lane % 4]).collect();
        assert_eq!(shared, want.as_slice(), "lane {lane}");
    }

    // A generic address outside the shared window names no shared memory.
    let params = dev.params("ldmatrix_generic").ptr(din).ptr(dout).i32(1).finish();
    let report = dev.launch_with("ldmatrix_generic", grid_1d(1, 32), &params, &CheckOptions::default());
    let finding = report.findings.first().expect("a generic ldmatrix row in global memory is reported");
    assert_eq!(finding.kind, FindingKind::OutOfBounds, "{finding}");
    assert!(finding.detail.contains("outside shared memory"), "{finding}");
}

// ---------------------------------------------------------------- printf

/// Device `printf` returns the number of characters it printed (the line
/// itself goes to stdout).
#[test]
fn device_printf_formats_its_arguments() {
    let dev = device();
    let result = dev.alloc_poisoned::<i32>(1);
    let params = dev.params("device_printf").ptr(result).i32(-42).f32(2.71875).u64(1 << 40).finish();
    dev.launch_clean("device_printf", grid_1d(1, 32), &params);
    let line = format!("printf: -42 {:5.2} {} text ff%\n", 2.71875f32, 1i64 << 40);
    assert_eq!(dev.download::<i32>(result, 1), [line.len() as i32]);
}
