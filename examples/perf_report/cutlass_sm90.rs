//! NVIDIA's CUTLASS Sm90 bf16 GEMM as the Hopper baseline: the kernel the
//! emulator's own tests run (`emu/core/tests/kernels/cutlass_gemm_sm90.cu`,
//! `KernelTmaWarpSpecializedCooperative`, 128×128×64, cluster 1×1×1, TMA
//! epilogue, f32 D), compiled for `sm_90a` and launched through the driver
//! API on the emulator presenting compute capability 9.0. Its `Params` (TMA
//! descriptors included) come from the host program
//! `cutlass_gemm_sm90_params.cu`, linked against the emulator's driver so
//! that its `cuTensorMapEncodeTiled` encodes them.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, DevicePtr, PushKernelArg};
use cudarc::nvrtc::Ptx;
use half::bf16;

use crate::cutlass::{env_dir, params_words, parse_plan, run, sources, DEFAULT_SHARED_LIMIT};

const KERNEL: &str = "cutlass_gemm_bf16_sm90_warpspecialized";
/// The configuration, as the params program names it.
const CONFIG: &str = "warpspecialized";

/// The compiled kernel and the program that plans its launches.
pub struct CutlassSm90 {
    function: CudaFunction,
    planner: PathBuf,
}

impl CutlassSm90 {
    /// Compiles the kernel and its params program into `cache` (once; later
    /// calls reuse them while the sources are older) and loads the kernel
    /// into `ctx`, which must be on a device presenting compute capability
    /// 9.0 (the PTX is `sm_90a`). `driver_dir` holds the emulator's `libcuda.so`.
    pub fn build(ctx: &Arc<CudaContext>, cache: &Path, driver_dir: &Path) -> Result<Self, Box<dyn Error>> {
        let cuda = env_dir("FUSED_LORA_CUDA_ROOT")?;
        let include = env_dir("FUSED_LORA_CUTLASS_INCLUDE")?;
        std::fs::create_dir_all(cache)?;
        let nvcc = cuda.join("bin/nvcc");
        let common =
            ["-std=c++17".to_string(), "--expt-relaxed-constexpr".to_string(), format!("-I{}", include.display())];
        let ptx_path = cache.join("cutlass_gemm_sm90.ptx");
        if stale(&ptx_path)? {
            run(Command::new(&nvcc)
                .args(["-ptx", "-arch=sm_90a"])
                .args(&common)
                .arg(sources().join("cutlass_gemm_sm90.cu"))
                .arg("-o")
                .arg(&ptx_path))?;
        }
        let planner = cache.join("cutlass_gemm_sm90_params");
        if stale(&planner)? {
            let dir = driver_dir.display();
            run(Command::new(&nvcc)
                .args(["-arch=sm_90a", "-cudart", "static", "-DCUTLASS_ENABLE_DIRECT_CUDA_DRIVER_CALL=1"])
                .args(&common)
                .arg(format!("-L{}", cuda.join("lib").display()))
                .arg(sources().join("cutlass_gemm_sm90_params.cu"))
                // The emulator's driver, bound by RPATH so that the program's
                // tensor maps are that driver's encoding.
                .args([format!("-L{dir}"), "-lcuda".to_string(), format!("-Xlinker=--disable-new-dtags,-rpath={dir}")])
                .arg("-o")
                .arg(&planner))?;
        }
        let module = ctx.load_module(Ptx::from_file(&ptx_path))?;
        Ok(CutlassSm90 { function: module.load_function(KERNEL)?, planner })
    }

    /// `D[M, N] (f32) = A[M, K] · B[N, K]ᵀ` (bf16, zeros), one launch sized
    /// for `sms` multiprocessors (the persistent scheduler's grid).
    pub fn gemm(
        &self,
        stream: &Arc<CudaStream>,
        (m, n, k): (usize, usize, usize),
        sms: u32,
    ) -> Result<(), Box<dyn Error>> {
        let a = stream.alloc_zeros::<bf16>(m * k)?;
        let b = stream.alloc_zeros::<bf16>(n * k)?;
        let d = stream.alloc_zeros::<f32>(m * n)?;
        {
            let (pa, _ra) = a.device_ptr(stream);
            let (pb, _rb) = b.device_ptr(stream);
            let (pd, _rd) = d.device_ptr(stream);
            let output = run(Command::new(&self.planner)
                .args([m, n, k].map(|v| v.to_string()))
                .args([pa, pb, pd].map(|v| format!("{v:#x}")))
                .arg(CONFIG)
                .arg(sms.to_string()))?;
            let plan = parse_plan(&String::from_utf8(output.stdout)?)?;
            let words = params_words(&plan.params)?;
            if plan.config.shared_mem_bytes > DEFAULT_SHARED_LIMIT {
                self.function.set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    plan.config.shared_mem_bytes as i32,
                )?;
            }
            let mut launch = stream.launch_builder(&self.function);
            launch.arg(&words);
            // SAFETY: the kernel takes one by-value Params struct, whose bytes
            // (as CUTLASS's own host code builds them for A, B and D above,
            // all alive until the stream is synchronised below) begin the
            // buffer; the driver copies exactly the kernel's parameter size.
            unsafe { launch.launch(plan.config) }?;
        }
        stream.synchronize()?;
        Ok(())
    }
}

/// Whether `output` must be (re)built: missing, or older than a source.
fn stale(output: &Path) -> Result<bool, Box<dyn Error>> {
    let Ok(built) = std::fs::metadata(output).and_then(|m| m.modified()) else { return Ok(true) };
    for source in ["cutlass_gemm_sm90.cu", "cutlass_gemm_sm90.h", "cutlass_gemm_sm90_params.cu"] {
        if std::fs::metadata(sources().join(source))?.modified()? > built {
            return Ok(true);
        }
    }
    Ok(false)
}
