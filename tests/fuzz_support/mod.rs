//! What the property-based fuzz targets (`tests/fuzz_*.rs`) share: a device
//! that is rebuilt after a failed case (so a fault the emulator made sticky
//! in the context cannot fail the cases proptest tries while shrinking), a
//! fixed-seed runner whose case count comes from the environment, and views
//! at chosen element offsets.
//!
//! `FUSED_LORA_FUZZ_CASES=N` runs N cases per target (the soak); without it
//! each target runs its own small default so the test command stays quick.
//! `FUSED_LORA_FUZZ_SEED=S` changes the fixed seed.

#![allow(dead_code)]

use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use fused_lora::{LoraDType, LoraKernels};
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// A context, its default stream and the crate's kernels.
pub struct Dev {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub kernels: LoraKernels,
}

/// The device of the cases run so far; `None` after a failed case.
static DEVICE: Mutex<Option<Dev>> = Mutex::new(None);

fn required() -> bool {
    std::env::var("FUSED_LORA_REQUIRE_DEVICE").is_ok_and(|v| v == "1")
}

/// Whether a driver exists; panics when the test command requires one and
/// none exists (as `tests/device` does), and always when CTA sampling is on.
pub fn available() -> bool {
    if let Ok(v) = std::env::var("PTX_EMU_SAMPLE_CTAS") {
        assert!(v.trim().is_empty(), "PTX_EMU_SAMPLE_CTAS={v} is set: fuzz cases refuse to run on a sampled emulator");
    }
    // SAFETY: only tries to dlopen the driver library.
    let present = unsafe { cudarc::driver::sys::is_culib_present() };
    if !present {
        assert!(!required(), "no CUDA driver on the library path, and FUSED_LORA_REQUIRE_DEVICE=1");
        eprintln!("SKIPPED: no CUDA driver (run through `scripts/run.sh test` to use the emulator)");
    }
    present
}

fn open() -> Dev {
    let ctx = CudaContext::new(0).expect("open the device");
    Dev { stream: ctx.default_stream(), kernels: LoraKernels::new(&ctx), ctx }
}

/// Runs one case on the device. A case that fails (an error or a panic)
/// drops the device: the last release of the primary context clears a
/// fault the emulator made sticky, and the next case opens a fresh one.
pub fn on_device(case: impl FnOnce(&Dev) -> Result<(), String>) -> Result<(), TestCaseError> {
    let mut slot = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let dev = slot.get_or_insert_with(open);
    let outcome = catch_unwind(AssertUnwindSafe(|| case(dev)));
    let failure = match outcome {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(why)) => why,
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into()),
    };
    *slot = None;
    Err(TestCaseError::fail(failure))
}

/// Cases per target: `FUSED_LORA_FUZZ_CASES`, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("FUSED_LORA_FUZZ_CASES").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn seed() -> u64 {
    std::env::var("FUSED_LORA_FUZZ_SEED").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0x5eed_f01a)
}

/// Runs `test` on `cases` inputs drawn from `strategy` with a fixed seed;
/// on a failure, panics with the shrunk input and why it failed.
pub fn fuzz<S: Strategy>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: Debug,
{
    if !available() {
        return;
    }
    let config = Config {
        cases: cases(default_cases),
        failure_persistence: None,
        // Every shrink step is an emulator run: bound the search.
        max_shrink_iters: 256,
        ..Config::default()
    };
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed().to_le_bytes());
    key[8..8 + name.len().min(24)].copy_from_slice(&name.as_bytes()[..name.len().min(24)]);
    let cases = config.cases;
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &key));
    let started = std::time::Instant::now();
    match runner.run(&strategy, test) {
        Ok(()) => eprintln!("{name}: {cases} cases passed in {:.1?}", started.elapsed()),
        Err(TestError::Fail(why, input)) => {
            panic!("{name}: failing case, shrunk:\n{input:#?}\nwhy: {why}")
        }
        Err(TestError::Abort(why)) => panic!("{name}: aborted: {why}"),
    }
}

/// A device buffer holding `host` at element `offset`, the elements before
/// it filled with `fill`.
pub fn upload_at<T: cudarc::driver::DeviceRepr + Clone>(
    stream: &Arc<CudaStream>,
    host: &[T],
    offset: usize,
    fill: T,
) -> CudaSlice<T> {
    let mut padded = vec![fill.clone(); offset];
    padded.extend_from_slice(host);
    if padded.is_empty() {
        padded.push(fill);
    }
    stream.clone_htod(&padded).expect("upload")
}

/// The `len` elements of `buffer` from `offset` on.
pub fn download_at<T: LoraDType>(stream: &Arc<CudaStream>, buffer: &CudaSlice<T>, offset: usize, len: usize) -> Vec<T> {
    let all = stream.clone_dtoh(buffer).expect("download");
    all[offset..offset + len].to_vec()
}

/// Elements in 16 bytes of T: the offset that keeps a view 16-byte aligned.
pub fn chunk<T: LoraDType>() -> usize {
    16 / T::DTYPE.size_bytes()
}

/// The dtypes of the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    F16,
    Bf16,
    F32,
}

/// Calls `$f::<T>($args)` for the case's dtype (`Ty` in scope).
macro_rules! by_dtype {
    ($ty:expr, $f:ident($($arg:expr),*)) => {
        match $ty {
            Ty::F16 => $f::<half::f16>($($arg),*),
            Ty::Bf16 => $f::<half::bf16>($($arg),*),
            Ty::F32 => $f::<f32>($($arg),*),
        }
    };
}
