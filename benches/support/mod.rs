//! What the benches share: finding a real GPU (the emulator's timings say
//! nothing about one), the engines a variant may use, the shapes, and the
//! entry point that times on a GPU, skips (saying why) without one, and
//! under `cargo test --benches` runs the dry run instead: every case's
//! variants once, on small stand-in shapes, checked against the CPU
//! reference, on whatever device there is (the emulator included), so the
//! benches' code is never untested.

pub mod shapes;

use std::sync::Arc;

use criterion::Criterion;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaStream};
use fused_lora::LoraKernels;

/// A real GPU's context, or why there is none.
pub fn gpu() -> Result<Arc<CudaContext>, String> {
    // SAFETY: only tries to dlopen the driver library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver on this machine".into());
    }
    // SAFETY: looks a symbol up in the loaded driver library.
    let emulated =
        unsafe { cudarc::driver::sys::culib().get::<unsafe extern "C" fn() -> i32>(b"ptxEmuIsEmulator\0").is_ok() };
    if emulated {
        return Err("the driver is the CPU emulator, whose timings say nothing about a GPU".into());
    }
    CudaContext::new(0).map_err(|e| format!("no usable CUDA device: {e}"))
}

/// What a variant may use.
pub struct Engines {
    pub kernels: LoraKernels,
    /// `None` when libcublas cannot be loaded.
    pub blas: Option<CudaBlas>,
}

impl Engines {
    /// The crate's kernels, and cuBLAS on `stream` if it can be loaded
    /// (its cases are skipped, with a message, if not).
    pub fn new(ctx: &Arc<CudaContext>, stream: &Arc<CudaStream>) -> Self {
        // SAFETY: only tries to dlopen libcublas.
        let blas = if unsafe { cudarc::cublas::sys::is_culib_present() } {
            CudaBlas::new(Arc::clone(stream)).map_err(|e| eprintln!("cuBLAS cases skipped: {e}")).ok()
        } else {
            eprintln!("cuBLAS cases skipped: libcublas not found on the library path");
            None
        };
        Engines { kernels: LoraKernels::new(ctx), blas }
    }
}

/// Any device, the emulator included, for the dry run.
fn any_device() -> Result<Arc<CudaContext>, String> {
    // SAFETY: only tries to dlopen the driver library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no libcuda.so on the library path (run through `scripts/run.sh test`)".into());
    }
    CudaContext::new(0).map_err(|e| format!("no usable CUDA device: {e}"))
}

/// Whether criterion runs in test mode: `cargo test --benches` passes no
/// `--bench` (criterion's own rule).
fn test_mode() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// Runs `bench` under criterion on a GPU; elsewhere says why `what` is
/// skipped and succeeds. In test mode runs `dry` instead, on any device;
/// with no device that is a skip, or a failure under the README's test
/// command (`FUSED_LORA_REQUIRE_DEVICE=1`).
pub fn run_on_gpu(what: &str, bench: fn(&mut Criterion, &Arc<CudaContext>), dry: fn(&Arc<CudaContext>)) {
    if test_mode() {
        match any_device() {
            Ok(ctx) => {
                dry(&ctx);
                eprintln!("{what} benches: dry run passed");
            }
            Err(why) if std::env::var("FUSED_LORA_REQUIRE_DEVICE").is_ok_and(|v| v == "1") => {
                panic!("{what} benches' dry run: no device, and FUSED_LORA_REQUIRE_DEVICE=1: {why}")
            }
            Err(why) => eprintln!("SKIPPED {what} benches' dry run: {why}"),
        }
        return;
    }
    match gpu() {
        Ok(ctx) => {
            let mut criterion = Criterion::default().configure_from_args();
            bench(&mut criterion, &ctx);
            criterion.final_summary();
        }
        Err(why) => eprintln!("{what} benches skipped: {why}"),
    }
}

/// Prints `message` the first time it is given (the dry run's skips repeat per case).
pub fn say_once(message: &str) {
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if !said.iter().any(|m| m == message) {
        eprintln!("{message}");
        said.push(message.to_string());
    }
}
