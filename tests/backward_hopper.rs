//! The backward's Hopper dX (`lora_backward_dx_<T>_sm90a`: TMA, mbarriers,
//! wgmma with MN-major W0 and A) on a compute capability 9.0 device: the
//! emulator presents itself as one (`PTX_EMU_COMPUTE_CAPABILITY=90`, set
//! here, with `FUSED_LORA_HOPPER=1`), a GPU must be one (else the tests
//! skip, saying so). Ragged M (past a 128-row tile), K (past a 256-column
//! tile and a 64-column box) and N (past a 64-long step), ranks of 8 to 64,
//! both half types, overwriting and accumulating, against the f64 reference
//! with the contract's tolerance (every gradient, so the launches around dX
//! are checked too); bit-identical reruns; the kernel dX's launch took; and
//! that `FUSED_LORA_HOPPER=0`, a CC 8.0 device, dropout and a rank TMA
//! cannot read (G's rows not 16-byte multiples) keep the mma.sync dX, inside
//! the same tolerance.

mod common;
mod device;
mod forward_support;

use std::sync::Mutex;

use common::assert_close_2d;
use forward_support::{download, random, upload};
use fused_lora::reference::{backward_multi, Base, Dropout, MultiAdapters, MultiGradients, Precision};
use fused_lora::{Adapter, BackwardInputs, BackwardOutput, GradMode, Linear, LoraDType, MultiAdapterShape};
use half::{bf16, f16};

/// The tests of this binary change the process's environment (the device's
/// capability, the path override): one at a time.
static ENV: Mutex<()> = Mutex::new(());

/// (m, k, n, r): M past one 128-row tile, K past one 256-column tile (and
/// 8 columns into a box), N past 64-long steps, ranks of 8 to 64 (24: the
/// adapter step part zero-filled); N short enough that the mma.sync dX
/// would not split (the Hopper kernel takes only unsplit launches).
const CASES: &[(usize, usize, usize, usize)] =
    &[(131, 264, 72, 16), (70, 40, 24, 8), (129, 72, 136, 64), (40, 136, 8, 24)];

/// One single-adapter backward problem on the host.
struct Case<T> {
    m: usize,
    k: usize,
    n: usize,
    r: usize,
    scale: f32,
    x: Vec<T>,
    w: Vec<T>,
    a: Vec<T>,
    b: Vec<T>,
    p: Vec<T>,
    dy: Vec<T>,
    dropout: Option<Dropout>,
}

impl<T: LoraDType> Case<T> {
    fn new(m: usize, k: usize, n: usize, r: usize, seed: u64) -> Self {
        Case {
            m,
            k,
            n,
            r,
            scale: -0.625,
            x: random(seed, m * k),
            w: random(seed + 1, n * k),
            a: random(seed + 2, r * k),
            b: random(seed + 3, n * r),
            p: random(seed + 4, m * r),
            dy: random(seed + 5, m * n),
            dropout: None,
        }
    }

    fn reference(&self, precision: Precision) -> MultiGradients {
        let shape = MultiAdapterShape { m: self.m, k: self.k, n: self.n, num_adapters: 1, r_max: self.r };
        let base = Base { x: &self.x, w0: &self.w, bias: None };
        let indices = vec![0i64; self.m];
        let scales = [f64::from(self.scale)];
        let adapters =
            MultiAdapters { a_all: &self.a, b_all: &self.b, ranks: &[self.r], scales: &scales, indices: &indices };
        backward_multi(shape, &base, &adapters, self.dropout.as_ref(), &self.dy, &self.p, precision).expect("reference")
    }
}

/// The gradients of a run (G, dA, dB, dX) and the kernel of its last launch
/// (dX's) on the emulator.
struct Got<T> {
    grads: [Vec<T>; 4],
    kernel: Option<String>,
}

/// Runs `backward` on the case; the gradient buffers start as `old` (NaN
/// poison when overwriting).
fn run<T: LoraDType>(dev: &device::Device, case: &Case<T>, old: &[Vec<T>; 3], mode: GradMode) -> Got<T> {
    let stream = &dev.stream;
    let (m, k, n, r) = (case.m, case.k, case.n, case.r);
    let (x, w, a, b, p, dy) = (
        upload(stream, &case.x),
        upload(stream, &case.w),
        upload(stream, &case.a),
        upload(stream, &case.b),
        upload(stream, &case.p),
        upload(stream, &case.dy),
    );
    let (mut da, mut db, mut dx) = (upload(stream, &old[0]), upload(stream, &old[1]), upload(stream, &old[2]));
    let mut g = upload(stream, &vec![T::nan(); m * r]);
    let linear = Linear { weight: w.as_view(), bias: None, n, k };
    let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: r, scale: case.scale };
    let inputs = BackwardInputs { dy: dy.as_view(), x: x.as_view(), p: Some(p.as_view()), dropout: case.dropout };
    let mut out = BackwardOutput {
        da: da.as_view_mut(),
        db: db.as_view_mut(),
        dx: dx.as_view_mut(),
        g: Some(g.as_view_mut()),
        mode,
    };
    dev.kernels.backward(stream, &inputs, &linear, &adapter, &mut out).expect("backward");
    let kernel = device::last_launch_counters().map(|c| c["kernel"].as_str().unwrap_or_default().to_string());
    Got { grads: [download(stream, &g), download(stream, &da), download(stream, &db), download(stream, &dx)], kernel }
}

fn nan_grads<T: LoraDType>(case: &Case<T>) -> [Vec<T>; 3] {
    [vec![T::nan(); case.r * case.k], vec![T::nan(); case.n * case.r], vec![T::nan(); case.m * case.k]]
}

/// Every gradient against the exact and naive references (docs/contract.md's
/// tolerance); with `old`, the reference is old + gradient (the naive side
/// rounded as the kernels store it).
fn check<T: LoraDType>(what: &str, case: &Case<T>, got: &Got<T>, old: Option<&[Vec<T>; 3]>) {
    let (exact, naive) = (case.reference(Precision::Exact), case.reference(Precision::Naive));
    let to_f64 = |v: &[T]| v.iter().map(|e| e.to_f64()).collect::<Vec<_>>();
    let plus_old = |i: usize, reference: &[f64], round: bool| -> Vec<f64> {
        match old {
            None => reference.to_vec(),
            Some(old) => old[i]
                .iter()
                .zip(reference)
                .map(|(o, r)| {
                    let sum = o.to_f64() + r;
                    if round {
                        T::from_f64(f64::from(sum as f32)).to_f64()
                    } else {
                        sum
                    }
                })
                .collect(),
        }
    };
    let floor = T::UNIT_ROUNDOFF * 1e-3;
    let [g, da, db, dx] = &got.grads;
    assert_close_2d::<T>(&format!("G {what}"), case.r, &to_f64(g), &exact.g, &naive.g, floor);
    let pairs = [("dA", da, &exact.da, &naive.da, case.k), ("dB", db, &exact.db, &naive.db, case.r)];
    for (i, (name, got, e, nv, cols)) in pairs.into_iter().enumerate() {
        assert_close_2d::<T>(
            &format!("{name} {what}"),
            cols,
            &to_f64(got),
            &plus_old(i, e, false),
            &plus_old(i, nv, true),
            floor,
        );
    }
    assert_close_2d::<T>(
        &format!("dX {what}"),
        case.k,
        &to_f64(dx),
        &plus_old(2, &exact.dx, false),
        &plus_old(2, &naive.dx, true),
        floor,
    );
}

#[track_caller]
fn assert_kernel(got: &Got<impl LoraDType>, want_hopper: bool, what: &str) {
    match &got.kernel {
        Some(kernel) => {
            assert!(kernel.starts_with("lora_backward_dx_"), "{what}: dX launches last, got {kernel}");
            assert_eq!(kernel.ends_with("_sm90a"), want_hopper, "{what}: took {kernel}");
        }
        None => assert!(!device::is_emulator(), "{what}: the emulator reports the kernel"),
    }
}

fn ragged_shapes_against_the_reference<T: LoraDType>() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device::device_as("90") else { return };
    for (i, &(m, k, n, r)) in CASES.iter().enumerate() {
        let case = Case::<T>::new(m, k, n, r, 1100 + 10 * i as u64);
        let what = format!("m={m} k={k} n={n} r={r}");
        let nan = nan_grads(&case);
        let got = run(&dev, &case, &nan, GradMode::Overwrite);
        assert_kernel(&got, true, &what);
        check(&what, &case, &got, None);
        let again = run(&dev, &case, &nan, GradMode::Overwrite);
        assert!(got.grads == again.grads, "{what}: two runs differ");
    }
    // Accumulating: dX's old value read through the epilogue.
    let case = Case::<T>::new(131, 264, 72, 16, 1150);
    let old = [random(1151, 16 * 264), random(1152, 72 * 16), random(1153, 131 * 264)];
    let got = run(&dev, &case, &old, GradMode::Accumulate);
    assert_kernel(&got, true, "accumulate");
    check("accumulate", &case, &got, Some(&old));
}

/// `FUSED_LORA_HOPPER=0`, a CC 8.0 device, dropout and a rank of 5 (G's
/// 10-byte rows) keep the mma.sync dX, inside the same tolerance.
fn the_other_launches_keep_mma_sync<T: LoraDType>() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device::device_as("90") else { return };
    let case = Case::<T>::new(131, 264, 72, 16, 1200);
    let nan = nan_grads(&case);
    std::env::set_var(fused_lora::HOPPER_ENV, "0");
    let got = run(&dev, &case, &nan, GradMode::Overwrite);
    std::env::set_var(fused_lora::HOPPER_ENV, "1");
    assert_kernel(&got, false, "FUSED_LORA_HOPPER=0");
    check("FUSED_LORA_HOPPER=0", &case, &got, None);

    let odd_rank = Case::<T>::new(70, 40, 24, 5, 1210);
    let got = run(&dev, &odd_rank, &nan_grads(&odd_rank), GradMode::Overwrite);
    assert_kernel(&got, false, "rank 5");
    check("rank 5", &odd_rank, &got, None);

    let mut dropped = Case::<T>::new(70, 40, 24, 8, 1220);
    dropped.dropout = Some(Dropout::new(0.25, 0x5eed, 3).expect("dropout"));
    let got = run(&dev, &dropped, &nan_grads(&dropped), GradMode::Overwrite);
    assert_kernel(&got, false, "dropout");
    check("dropout", &dropped, &got, None);

    if device::is_emulator() {
        // A fresh context on the device presenting 8.0: the sm_90a module is
        // never loaded there.
        let Some(dev) = device::device_as("80") else { return };
        let got = run(&dev, &case, &nan, GradMode::Overwrite);
        assert_kernel(&got, false, "CC 8.0");
        check("CC 8.0", &case, &got, None);
    }
}

#[test]
fn ragged_shapes_against_the_reference_f16() {
    ragged_shapes_against_the_reference::<f16>();
}

#[test]
fn ragged_shapes_against_the_reference_bf16() {
    ragged_shapes_against_the_reference::<bf16>();
}

#[test]
fn the_other_launches_keep_mma_sync_f16() {
    the_other_launches_keep_mma_sync::<f16>();
}

#[test]
fn the_other_launches_keep_mma_sync_bf16() {
    the_other_launches_keep_mma_sync::<bf16>();
}
