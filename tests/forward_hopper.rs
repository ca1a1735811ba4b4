//! The Hopper fused forward (`lora_forward_gemm_<T>_sm90a`: TMA, mbarriers,
//! wgmma) on a compute capability 9.0 device: the emulator presents itself
//! as one (`PTX_EMU_COMPUTE_CAPABILITY=90`, set here, with
//! `FUSED_LORA_HOPPER=1`), a GPU must be one
//! (else the tests skip, saying so). Ragged M, N and K (TMA's zero fill,
//! the epilogue's bounds), ranks shorter than one K-step, both half types,
//! against the f64 reference; bit-identical reruns; the kernel the launch
//! took; and that `FUSED_LORA_HOPPER=0` and a CC 8.0 device keep the
//! mma.sync kernel with results inside the same tolerance.

mod device;
mod forward_support;

use std::sync::Mutex;

use forward_support::{assert_close, assert_p_next_to_shrink, download, poisoned, random, MultiCase};
use fused_lora::{ForwardOutput, LoraDType};

/// The tests of this binary change the process's environment (the device's
/// capability, the path override): one at a time.
static ENV: Mutex<()> = Mutex::new(());

/// (m, k, n, r, bias): M and N past whole 128 x 256 tiles, K past whole
/// 64-long steps (K = 136: two steps and 8 columns), ranks of 8 to 64, an
/// odd N (element stores), and K short enough that the mma.sync path would
/// not split it (the Hopper kernel takes only unsplit launches).
const CASES: &[(usize, usize, usize, usize, bool)] =
    &[(131, 136, 200, 16, true), (64, 72, 136, 8, false), (200, 64, 72, 24, true), (129, 200, 129, 64, true)];

fn case<T: LoraDType>(m: usize, k: usize, n: usize, r: usize, bias: bool, seed: u64) -> MultiCase<T> {
    MultiCase {
        m,
        k,
        n,
        r_max: r,
        x: random(seed, m * k),
        w: random(seed + 1, n * k),
        bias: bias.then(|| random(seed + 2, n)),
        a: random(seed + 3, r * k),
        b: random(seed + 4, n * r),
        ranks: vec![r],
        scales: vec![-0.625],
        index: vec![0; m],
    }
}

/// Runs `forward` on the case; returns (P, Y, the fused launch's kernel on the emulator).
fn run<T: LoraDType>(dev: &device::Device, case: &MultiCase<T>) -> (Vec<T>, Vec<T>, Option<String>) {
    let stream = &dev.stream;
    let (m, k, n, r) = (case.m, case.k, case.n, case.r_max);
    let on = case.upload(stream);
    let mut y = poisoned::<T>(stream, m * n);
    let mut p = poisoned::<T>(stream, m * r);
    let linear = on.linear(n, k);
    let adapter = on.adapter(case);
    let mut out = ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) };
    dev.kernels.forward(stream, &on.x.as_view(), &linear, &adapter, None, &mut out).expect("forward");
    let kernel = device::last_launch_counters().map(|c| c["kernel"].as_str().unwrap_or_default().to_string());
    (download(stream, &p), download(stream, &y), kernel)
}

fn ragged_shapes_against_the_reference<T: LoraDType>() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device::device_as("90") else { return };
    let hopper = format!("lora_forward_gemm_{}_sm90a", T::DTYPE.kernel_suffix());
    for (i, &(m, k, n, r, bias)) in CASES.iter().enumerate() {
        let case = case::<T>(m, k, n, r, bias, 900 + 10 * i as u64);
        let (p, y, kernel) = run(&dev, &case);
        let what = format!("m={m} k={k} n={n} r={r} bias={bias}");
        if let Some(kernel) = kernel {
            assert_eq!(kernel, hopper, "{what}: the fused launch on a 9.0 device");
        }
        assert_close(&format!("P {what}"), &p, &case.p_reference());
        assert_close(&format!("Y {what}"), &y, &case.y_reference(&p));
    }
}

/// Two runs give the same bits; the mma.sync path (`FUSED_LORA_HOPPER=0`,
/// and a CC 8.0 device) meets the same tolerance on the same case.
fn deterministic_and_overridable<T: LoraDType>() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device::device_as("90") else { return };
    let case = case::<T>(131, 136, 200, 16, true, 950);
    let (p, first, _) = run(&dev, &case);
    let (_, second, _) = run(&dev, &case);
    assert_eq!(first, second, "two runs of the Hopper kernel differ");
    assert_close("Y", &first, &case.y_reference(&p));

    let mma_sync = format!("lora_forward_gemm_{}", T::DTYPE.kernel_suffix());
    std::env::set_var(fused_lora::HOPPER_ENV, "0");
    let (p, y, kernel) = run(&dev, &case);
    std::env::set_var(fused_lora::HOPPER_ENV, "1");
    if let Some(kernel) = kernel {
        assert!(kernel.starts_with(&mma_sync) && !kernel.ends_with("_sm90a"), "FUSED_LORA_HOPPER=0 took {kernel}");
    }
    assert_close("Y with FUSED_LORA_HOPPER=0", &y, &case.y_reference(&p));

    if device::is_emulator() {
        // A fresh context's kernels on the device presenting 8.0: the sm_90a
        // module is never loaded there.
        let Some(dev) = device::device_as("80") else { return };
        let (p, y, kernel) = run(&dev, &case);
        let kernel = kernel.expect("the emulator reports the kernel");
        assert!(kernel.starts_with(&mma_sync) && !kernel.ends_with("_sm90a"), "CC 8.0 took {kernel}");
        assert_close("Y on CC 8.0", &y, &case.y_reference(&p));
    }
}

#[test]
fn ragged_shapes_against_the_reference_f16() {
    ragged_shapes_against_the_reference::<half::f16>();
}

#[test]
fn ragged_shapes_against_the_reference_bf16() {
    ragged_shapes_against_the_reference::<half::bf16>();
}

#[test]
fn deterministic_and_overridable_f16() {
    deterministic_and_overridable::<half::f16>();
}

#[test]
fn deterministic_and_overridable_bf16() {
    deterministic_and_overridable::<half::bf16>();
}

/// The fused-P tile in clusters (`lora_forward_gemm_<T>_128x256_p_cluster`,
/// sm_90: the 4 column tiles of a row block as one cluster, each CTA
/// computing 16 of P's rank columns and reading the others' through
/// distributed shared memory), which `takes_fused_p_cluster` picks on a 9.0
/// device of 132 SMs with the Hopper path off for 32 x 4 tiles of
/// 128 x 256 and ranks past 16: one launch, P and Y against the reference,
/// P against the shrink's within the fused-P tile's bound (the same value
/// or an adjacent one of T, at least 95 % the same bits), the same bits on
/// a rerun; M, N and K tails on the first case.
fn fused_p_cluster_tile<T: LoraDType>(cases: &[(usize, usize, usize, usize, bool)]) {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device::device_as("90") else { return };
    // The mma.sync path on 132 SMs, until the end of the test (even a failed one).
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            std::env::remove_var("PTX_EMU_MULTIPROCESSORS");
            std::env::set_var(fused_lora::HOPPER_ENV, "1");
        }
    }
    let _restore = Restore;
    std::env::set_var(fused_lora::HOPPER_ENV, "0");
    std::env::set_var("PTX_EMU_MULTIPROCESSORS", "132");
    let stream = &dev.stream;
    for (i, &(m, k, n, r, bias)) in cases.iter().enumerate() {
        let what = format!("m={m} k={k} n={n} r={r} bias={bias}");
        let case = case::<T>(m, k, n, r, bias, 700 + 10 * i as u64);
        let on = case.upload(stream);
        // A marker launch (a one-row shrink: grid 1 x 1), then the forward.
        let (mx, ma) = (forward_support::upload(stream, &case.x[..k]), forward_support::upload(stream, &case.a[..k]));
        let mut mp = poisoned::<T>(stream, 1);
        dev.kernels.shrink(stream, &mx.as_view(), &ma.as_view(), 1, &mut mp.as_view_mut()).expect("marker");
        let (p, y, _) = run(&dev, &case);
        if device::is_emulator() {
            let launches = device::recent_launch_counters(2).expect("counters");
            let names: Vec<&str> = launches.iter().map(|c| c["kernel"].as_str().unwrap_or_default()).collect();
            assert!(
                names[0].starts_with("lora_rank_shrink") && launches[0]["grid"][0].as_u64() == Some(1),
                "{what}: the marker right before the forward's one launch: {names:?}"
            );
            let want = format!("lora_forward_gemm_{}_128x256_p_cluster", T::DTYPE.kernel_suffix());
            assert_eq!(names[1], want, "{what}: one launch, the cluster tile");
            // The other 3 CTAs' slices: 128 rows x 16 columns each, per CTA.
            let json = &launches[1];
            let ctas = json["total_ctas"].as_u64().expect("CTAs");
            assert_eq!(json["cluster_shared_bytes"].as_u64(), Some(ctas * 3 * 128 * 16 * 2), "{what}");
            eprintln!("{} fused-P cluster {what}: {json}", T::DTYPE);
            if m % 128 == 0 && n % 256 == 0 && k % 32 == 0 {
                // mma: X.W0^T and the expand's 4 k16 (rank padded to 64), and
                // P once (each rank column in one CTA of the cluster), not
                // once per column tile.
                let mma = device::object_sum(json, "tensor_instructions") as usize;
                let (base, p_mma) = ((m / 16) * (n / 8) * (k / 16 + 4), (m / 16) * (64 / 8) * (k / 16));
                assert_eq!(mma, base + p_mma, "{what}: mma, P computed once");
                // Every input byte read once (A's rows and B's columns past
                // the rank zero-filled, not read); Y and P written once.
                let elem = T::DTYPE.size_bytes() as u64;
                let inputs = ((m * k + n * k + r * k + n * r) as u64) * elem;
                assert_eq!(device::counter(json, "global_bytes_read"), inputs, "{what}: distinct bytes read");
                assert_eq!(device::counter(json, "global_bytes_written"), ((m * n + m * r) as u64) * elem, "{what}");
            }
        }
        assert_close(&format!("P {what}"), &p, &case.p_reference());
        assert_close(&format!("Y {what}"), &y, &case.y_reference(&p));
        let (p_again, y_again, _) = run(&dev, &case);
        let bits = |v: &[T]| v.iter().map(|e| e.to_f64().to_bits()).collect::<Vec<_>>();
        assert!(bits(&p_again) == bits(&p) && bits(&y_again) == bits(&y), "{what}: a rerun differs");

        let mut p_shrink = poisoned::<T>(stream, m * r);
        dev.kernels.shrink(stream, &on.x.as_view(), &on.a.as_view(), r, &mut p_shrink.as_view_mut()).expect("shrink");
        let p_shrink = download(stream, &p_shrink);
        assert_p_next_to_shrink(&what, &p, &p_shrink);
    }
}

#[test]
fn fused_p_cluster_tile_f16() {
    // M, N and K tails, rank 64: every CTA's slice full.
    fused_p_cluster_tile::<half::f16>(&[(4000, 72, 1000, 64, true)]);
}

#[test]
fn fused_p_cluster_tile_bf16() {
    // Rank 40: the third CTA's slice half full, the fourth's empty.
    fused_p_cluster_tile::<half::bf16>(&[(4096, 64, 1024, 40, false)]);
}

/// The decode path in one launch on a 9.0 device (`lora_decode_cluster_<T>`,
/// cuda/decode_sm90a.cu: the 8 K splits of a column tile as one cluster,
/// summed through distributed shared memory, P recomputed per column
/// tile), with the Hopper path off (it is part of the mma.sync path there):
/// one launch right after a marker, writing Y and P once and no partials
/// (every distinct input byte read, no other byte written), P and Y against
/// the reference, the same bits on a rerun. The cases: K ragged against
/// the splits (K = 1288: 192 per split, the seventh 136 long, the eighth
/// empty) and short enough to leave more splits empty (K = 72: 3 of the 8
/// hold a chunk), N ragged and one row, ranks 1 to 256
/// (P's columns at the cluster form's limit), one adapter per row with 4
/// of 5 adapters used (5 slots, one of them empty; every row its own slot's
/// P), and rows without one. Past that limit (16 slots of 72) the two
/// launches remain; on an 8.0 device too.
fn decode_in_one_cluster_launch<T: LoraDType>() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device::device_as("90") else { return };
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            std::env::set_var(fused_lora::HOPPER_ENV, "1");
        }
    }
    let _restore = Restore;
    std::env::set_var(fused_lora::HOPPER_ENV, "0");
    let stream = &dev.stream;
    let suffix = T::DTYPE.kernel_suffix();
    // (m, k, n, ranks, r_max, row adapters, bias)
    type DecodeCase = (usize, usize, usize, &'static [usize], usize, &'static [i32], bool);
    let cases: &[DecodeCase] = &[
        (16, 1288, 1000, &[16], 16, &[0; 16], true),
        (3, 72, 300, &[64], 64, &[0, 0, 0], false),
        (1, 136, 77, &[1], 1, &[0], true),
        (9, 520, 264, &[256], 256, &[0, 0, 0, 0, 0, 0, 0, 0, 0], false),
        (12, 1032, 520, &[16, 3, 9, 12, 16], 16, &[2, 0, -1, 4, 4, 1, 0, 2, -1, 1, 4, 0], true),
        (16, 264, 100, &[72; 18], 72, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], true),
    ];
    for (i, &(m, k, n, ranks, r_max, index, bias)) in cases.iter().enumerate() {
        let what = format!("m={m} k={k} n={n} ranks={ranks:?} r_max={r_max} bias={bias}");
        let seed = 1200 + 10 * i as u64;
        let l = ranks.len();
        let mut case = MultiCase::<T> {
            m,
            k,
            n,
            r_max,
            x: random(seed, m * k),
            w: random(seed + 1, n * k),
            bias: bias.then(|| random(seed + 2, n)),
            a: random(seed + 3, l * r_max * k),
            b: random(seed + 4, l * n * r_max),
            ranks: ranks.to_vec(),
            scales: (0..l).map(|j| 0.375 * (j as f32 - 1.5)).collect(),
            index: index.to_vec(),
        };
        forward_support::poison_padding(&mut case.a, &mut case.b, ranks, r_max, n, k);
        // A marker launch (a one-row shrink: grid 1 x 1), then the forward.
        let (mx, ma) = (forward_support::upload(stream, &case.x[..k]), forward_support::upload(stream, &case.x[..k]));
        let mut mp = poisoned::<T>(stream, 1);
        dev.kernels.shrink(stream, &mx.as_view(), &ma.as_view(), 1, &mut mp.as_view_mut()).expect("marker");
        let (p, y) = case.run(&dev.kernels, stream, None).expect("forward_multi");
        // The host's slots: min(M, adapters), whichever the rows use.
        let one_launch = m.min(l) * r_max <= 256;
        if device::is_emulator() {
            let launches = device::recent_launch_counters(2).expect("counters");
            let names: Vec<&str> = launches.iter().map(|c| c["kernel"].as_str().unwrap_or_default()).collect();
            if one_launch {
                assert!(names[0].starts_with("lora_rank_shrink"), "{what}: the marker right before: {names:?}");
                assert_eq!(names[1], format!("lora_decode_cluster_{suffix}"), "{what}: one launch");
                let json = &launches[1];
                let elem = T::DTYPE.size_bytes() as u64;
                assert_eq!(
                    device::counter(json, "global_bytes_written"),
                    ((m * n + m * r_max) as u64) * elem,
                    "{what}"
                );
                let used: std::collections::BTreeSet<i32> = index.iter().copied().filter(|&a| a >= 0).collect();
                let adapter_rows: usize = used.iter().map(|&a| ranks[a as usize]).sum();
                let inputs = (m * k + n * k + adapter_rows * k + adapter_rows * n + if bias { n } else { 0 }) as u64;
                // The row indices, and the used adapters' ranks and scales (4 bytes each).
                let lists = (m + 2 * used.len()) as u64 * 4;
                assert_eq!(
                    device::counter(json, "global_bytes_read"),
                    inputs * elem + lists,
                    "{what}: distinct bytes read"
                );
                assert!(device::counter(json, "cluster_shared_bytes") > 0, "{what}: the splits summed on chip");
            } else {
                let two = [format!("lora_decode_gemm_{suffix}"), format!("lora_decode_finish_{suffix}")];
                assert_eq!(names, two, "{what}: past the cluster form's P columns, two launches");
            }
        }
        assert_close(&format!("P {what}"), &p, &case.p_reference());
        assert_close(&format!("Y {what}"), &y, &case.y_reference(&p));
        let (p_again, y_again) = case.run(&dev.kernels, stream, None).expect("forward_multi");
        let bits = |v: &[T]| v.iter().map(|e| e.to_f64().to_bits()).collect::<Vec<_>>();
        assert!(bits(&p_again) == bits(&p) && bits(&y_again) == bits(&y), "{what}: a rerun differs");
    }

    if device::is_emulator() {
        // A fresh context's kernels on a device presenting 8.0: two launches.
        let Some(dev) = device::device_as("80") else { return };
        let (m, k, n) = (16, 1288, 1000);
        let case = case::<T>(m, k, n, 16, true, 1300);
        let (p, y, kernel) = run(&dev, &case);
        assert_eq!(kernel.as_deref(), Some(format!("lora_decode_finish_{suffix}").as_str()), "CC 8.0");
        assert_close("P on CC 8.0", &p, &case.p_reference());
        assert_close("Y on CC 8.0", &y, &case.y_reference(&p));
    }
}

#[test]
fn decode_in_one_cluster_launch_f16() {
    decode_in_one_cluster_launch::<half::f16>();
}

#[test]
fn decode_in_one_cluster_launch_bf16() {
    decode_in_one_cluster_launch::<half::bf16>();
}
