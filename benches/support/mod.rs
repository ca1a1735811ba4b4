//! What the benches share: finding a real GPU (the emulator's timings say
//! nothing about one), the engines a variant may use, and the entry point
//! that skips, saying why, when there is no GPU.

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

/// Runs `bench` under criterion on a GPU; elsewhere says why `what` is
/// skipped and succeeds.
pub fn run_on_gpu(what: &str, bench: fn(&mut Criterion, &Arc<CudaContext>)) {
    match gpu() {
        Ok(ctx) => {
            let mut criterion = Criterion::default().configure_from_args();
            bench(&mut criterion, &ctx);
            criterion.final_summary();
        }
        Err(why) => eprintln!("{what} benches skipped: {why}"),
    }
}
