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

mod backward_support;
mod common;
mod device;
mod forward_support;

use std::sync::Mutex;

use backward_support::{check_against_reference, last_kernel, run, Api, Case, Got, Initial};
use fused_lora::reference::Dropout;
use fused_lora::{GradMode, LoraDType};
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

/// One single-adapter backward problem of rank `r`, scaled by −0.625.
fn single<T: LoraDType>(m: usize, k: usize, n: usize, r: usize, seed: u64) -> Case<T> {
    let mut case = Case::new(m, k, n, &[r], r, vec![0; m], seed);
    case.scales = vec![-0.625];
    case
}

/// Runs `backward` on the case (P kept); the gradient buffers start as `old`
/// (NaN poison when overwriting). Returns the gradients and the kernel of the
/// last launch (dX's) on the emulator.
fn run_single<T: LoraDType>(
    dev: &device::Device,
    case: &Case<T>,
    old: &Initial<T>,
    mode: GradMode,
) -> (Got<T>, Option<String>) {
    let (got, _) = run(dev, case, Api::Single, true, old, mode).expect("backward");
    (got, last_kernel())
}

#[track_caller]
fn assert_kernel(kernel: &Option<String>, want_hopper: bool, what: &str) {
    match kernel {
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
        let case = single::<T>(m, k, n, r, 1100 + 10 * i as u64);
        let what = format!("m={m} k={k} n={n} r={r}");
        let nan = Initial::nan(&case);
        let (got, kernel) = run_single(&dev, &case, &nan, GradMode::Overwrite);
        assert_kernel(&kernel, true, &what);
        check_against_reference(&what, &case, &got, None);
        let (again, _) = run_single(&dev, &case, &nan, GradMode::Overwrite);
        assert!(got == again, "{what}: two runs differ");
    }
    // Accumulating: dX's old value read through the epilogue.
    let case = single::<T>(131, 264, 72, 16, 1150);
    let old = Initial::random(&case, 1151);
    let (got, kernel) = run_single(&dev, &case, &old, GradMode::Accumulate);
    assert_kernel(&kernel, true, "accumulate");
    check_against_reference("accumulate", &case, &got, Some(&old));
}

/// `FUSED_LORA_HOPPER=0`, a CC 8.0 device, dropout and a rank of 5 (G's
/// 10-byte rows) keep the mma.sync dX, inside the same tolerance.
fn the_other_launches_keep_mma_sync<T: LoraDType>() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = device::device_as("90") else { return };
    let case = single::<T>(131, 264, 72, 16, 1200);
    let nan = Initial::nan(&case);
    std::env::set_var(fused_lora::HOPPER_ENV, "0");
    let (got, kernel) = run_single(&dev, &case, &nan, GradMode::Overwrite);
    std::env::set_var(fused_lora::HOPPER_ENV, "1");
    assert_kernel(&kernel, false, "FUSED_LORA_HOPPER=0");
    check_against_reference("FUSED_LORA_HOPPER=0", &case, &got, None);

    let odd_rank = single::<T>(70, 40, 24, 5, 1210);
    let (got, kernel) = run_single(&dev, &odd_rank, &Initial::nan(&odd_rank), GradMode::Overwrite);
    assert_kernel(&kernel, false, "rank 5");
    check_against_reference("rank 5", &odd_rank, &got, None);

    let mut dropped = single::<T>(70, 40, 24, 8, 1220);
    dropped.dropout = Some(Dropout::new(0.25, 0x5eed, 3).expect("dropout"));
    let (got, kernel) = run_single(&dev, &dropped, &Initial::nan(&dropped), GradMode::Overwrite);
    assert_kernel(&kernel, false, "dropout");
    check_against_reference("dropout", &dropped, &got, None);

    if device::is_emulator() {
        // A fresh context on the device presenting 8.0: the sm_90a module is
        // never loaded there.
        let Some(dev) = device::device_as("80") else { return };
        let (got, kernel) = run_single(&dev, &case, &nan, GradMode::Overwrite);
        assert_kernel(&kernel, false, "CC 8.0");
        check_against_reference("CC 8.0", &case, &got, None);
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
