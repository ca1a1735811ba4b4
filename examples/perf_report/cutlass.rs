//! NVIDIA's CUTLASS Sm80 bf16 GEMM as the baseline: the kernel the
//! emulator's own tests run (`emu/core/tests/kernels/cutlass_gemm.cu`), in its
//! 128×128×32 configuration (64×64 warp tiles, 3 stages), compiled
//! by the toolchain's nvcc and launched through the same driver API as the
//! crate's kernels. Its `Params` struct comes from the host program
//! `cutlass_gemm_params.cu`, which fills it as CUTLASS's `device::Gemm` does.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use half::bf16;

const KERNEL: &str = "cutlass_gemm_bf16_sm80_128x128";
/// The configuration, as the planner names it.
const TILE: &str = "128x128";
/// Kernel parameters travel in a fixed buffer at least as large as `Params`.
pub(crate) const PARAMS_WORDS: usize = 256;
/// Dynamic shared memory a kernel may use without opting in.
pub(crate) const DEFAULT_SHARED_LIMIT: u32 = 48 * 1024;

pub(crate) fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("emu/core/tests/kernels")
}

pub(crate) fn env_dir(name: &str) -> Result<PathBuf, Box<dyn Error>> {
    let dir = std::env::var_os(name).map(PathBuf::from).ok_or_else(|| {
        format!("{name} is not set: run through `scripts/run.sh report`, which sets up the toolchain")
    })?;
    if !dir.is_dir() {
        return Err(format!("{name}={} is not a directory", dir.display()).into());
    }
    Ok(dir)
}

pub(crate) fn run(command: &mut Command) -> Result<std::process::Output, Box<dyn Error>> {
    let output = command.output().map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(output)
}

/// The compiled kernel and the program that plans its launches.
pub struct Cutlass {
    function: CudaFunction,
    planner: PathBuf,
}

/// What the planner prints for one problem.
pub(crate) struct Plan {
    pub config: LaunchConfig,
    pub params: Vec<u8>,
}

/// Reads a planner's output: `grid X Y Z`, `block X Y Z`, `shared_bytes N`
/// and `params HEX`, one per line.
pub(crate) fn parse_plan(text: &str) -> Result<Plan, Box<dyn Error>> {
    let field = |name: &str| -> Result<Vec<&str>, Box<dyn Error>> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .ok_or_else(|| format!("the CUTLASS planner printed no `{name}`:\n{text}"))?;
        Ok(line.split_whitespace().collect())
    };
    let numbers = |name: &str| -> Result<Vec<u32>, Box<dyn Error>> {
        field(name)?.iter().map(|v| v.parse::<u32>().map_err(|e| format!("{name}: {e}").into())).collect()
    };
    let (grid, block, shared) = (numbers("grid")?, numbers("block")?, numbers("shared_bytes")?);
    let hex = field("params")?.first().copied().unwrap_or_default().to_string();
    let params =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16)).collect::<Result<Vec<u8>, _>>()?;
    if grid.len() != 3 || block.len() != 3 || shared.len() != 1 {
        return Err(format!("malformed CUTLASS plan:\n{text}").into());
    }
    Ok(Plan {
        config: LaunchConfig {
            grid_dim: (grid[0], grid[1], grid[2]),
            block_dim: (block[0], block[1], block[2]),
            shared_mem_bytes: shared[0],
        },
        params,
    })
}

/// The params bytes in the fixed buffer a launch passes (zero padded).
pub(crate) fn params_words(params: &[u8]) -> Result<[u64; PARAMS_WORDS], Box<dyn Error>> {
    if params.len() > PARAMS_WORDS * 8 {
        return Err(format!("CUTLASS Params of {} bytes exceed the report's buffer", params.len()).into());
    }
    let mut words = [0u64; PARAMS_WORDS];
    for (i, chunk) in params.chunks(8).enumerate() {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        words[i] = u64::from_le_bytes(word);
    }
    Ok(words)
}

impl Cutlass {
    /// Compiles the kernel and its planner into `cache` (once; later calls
    /// reuse them while the sources are older) and loads the kernel into `ctx`.
    pub fn build(ctx: &Arc<CudaContext>, cache: &Path) -> Result<Self, Box<dyn Error>> {
        let cuda = env_dir("FUSED_LORA_CUDA_ROOT")?;
        let include = env_dir("FUSED_LORA_CUTLASS_INCLUDE")?;
        std::fs::create_dir_all(cache)?;
        let nvcc = cuda.join("bin/nvcc");
        let common =
            ["-std=c++17".to_string(), "--expt-relaxed-constexpr".to_string(), format!("-I{}", include.display())];
        let ptx_path = cache.join("cutlass_gemm.ptx");
        if stale(&ptx_path)? {
            run(Command::new(&nvcc)
                .args(["-ptx", "-arch=compute_80"])
                .args(&common)
                .arg(sources().join("cutlass_gemm.cu"))
                .arg("-o")
                .arg(&ptx_path))?;
        }
        let planner = cache.join("cutlass_gemm_params");
        if stale(&planner)? {
            run(Command::new(&nvcc)
                .args(["-arch=sm_80", "-cudart", "static"])
                .args(&common)
                .arg(format!("-L{}", cuda.join("lib").display()))
                .arg(sources().join("cutlass_gemm_params.cu"))
                .arg("-o")
                .arg(&planner))?;
        }
        let module = ctx.load_module(Ptx::from_file(&ptx_path))?;
        Ok(Cutlass { function: module.load_function(KERNEL)?, planner })
    }

    fn plan(&self, (m, n, k): (usize, usize, usize), a: u64, b: u64, d: u64) -> Result<Plan, Box<dyn Error>> {
        let output = run(Command::new(&self.planner)
            .args([m, n, k].map(|v| v.to_string()))
            .args([a, b, d].map(|v| format!("{v:#x}")))
            .arg(TILE))?;
        parse_plan(&String::from_utf8(output.stdout)?)
    }

    /// `D[M, N] (f32) = A[M, K] · B[K, N]` (bf16, zeros), one launch.
    pub fn gemm(&self, stream: &Arc<CudaStream>, (m, n, k): (usize, usize, usize)) -> Result<(), Box<dyn Error>> {
        let a = stream.alloc_zeros::<bf16>(m * k)?;
        let b = stream.alloc_zeros::<bf16>(k * n)?;
        let d = stream.alloc_zeros::<f32>(m * n)?;
        {
            let (pa, _ra) = a.device_ptr(stream);
            let (pb, _rb) = b.device_ptr(stream);
            let (pd, _rd) = d.device_ptr(stream);
            let plan = self.plan((m, n, k), pa, pb, pd)?;
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
    for source in ["cutlass_gemm.cu", "cutlass_gemm.h", "cutlass_gemm_params.cu"] {
        if std::fs::metadata(sources().join(source))?.modified()? > built {
            return Ok(true);
        }
    }
    Ok(false)
}
