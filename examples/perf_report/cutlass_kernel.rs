//! What the report's CUTLASS baselines (`cutlass.rs`, Sm80; `cutlass_sm90.rs`,
//! Sm90) share: compiling a kernel of the emulator's tests
//! (`emu/core/tests/kernels/<stem>.cu`) to PTX and its host program
//! (`<stem>_params.cu`, the planner, which fills the kernel's `Params` as
//! CUTLASS's own host code does and prints the launch), loading the kernel,
//! and one GEMM launch as the planner plans it. The launches are then counted
//! and modeled like the crate's own (`counted`, `sum_on` in main.rs).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use half::bf16;

/// Kernel parameters travel in a fixed buffer at least as large as `Params`.
const PARAMS_WORDS: usize = 256;
/// Dynamic shared memory a kernel may use without opting in.
const DEFAULT_SHARED_LIMIT: u32 = 48 * 1024;

fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("emu/core/tests/kernels")
}

fn env_dir(name: &str) -> Result<PathBuf, Box<dyn Error>> {
    let dir = std::env::var_os(name).map(PathBuf::from).ok_or_else(|| {
        format!("{name} is not set: run through `scripts/run.sh report`, which sets up the toolchain")
    })?;
    if !dir.is_dir() {
        return Err(format!("{name}={} is not a directory", dir.display()).into());
    }
    Ok(dir)
}

fn run(command: &mut Command) -> Result<std::process::Output, Box<dyn Error>> {
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

/// What the planner prints for one problem.
struct Plan {
    config: LaunchConfig,
    params: Vec<u8>,
}

/// Reads a planner's output: `grid X Y Z`, `block X Y Z`, `shared_bytes N`
/// and `params HEX`, one per line.
fn parse_plan(text: &str) -> Result<Plan, Box<dyn Error>> {
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
fn params_words(params: &[u8]) -> Result<[u64; PARAMS_WORDS], Box<dyn Error>> {
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

/// How one CUTLASS kernel and its planner are built.
pub(crate) struct Recipe<'a> {
    /// The sources' stem: `<stem>.cu`, `<stem>.h`, `<stem>_params.cu`.
    pub stem: &'a str,
    /// The kernel's entry point in the PTX.
    pub kernel: &'a str,
    /// nvcc's `-arch` for the PTX.
    pub ptx_arch: &'a str,
    /// nvcc's flags for the planner, before the shared ones.
    pub planner_flags: &'a [&'a str],
    /// nvcc's arguments for the planner after its source (what it links).
    pub planner_link: Vec<String>,
}

/// A compiled CUTLASS kernel and the program that plans its launches.
pub(crate) struct CutlassKernel {
    function: CudaFunction,
    planner: PathBuf,
}

impl CutlassKernel {
    /// Compiles the kernel and its planner into `cache` (once; later calls
    /// reuse them while the sources are older) and loads the kernel into `ctx`.
    pub fn build(ctx: &Arc<CudaContext>, cache: &Path, recipe: &Recipe) -> Result<Self, Box<dyn Error>> {
        let cuda = env_dir("FUSED_LORA_CUDA_ROOT")?;
        let include = env_dir("FUSED_LORA_CUTLASS_INCLUDE")?;
        std::fs::create_dir_all(cache)?;
        let nvcc = cuda.join("bin/nvcc");
        let common =
            ["-std=c++17".to_string(), "--expt-relaxed-constexpr".to_string(), format!("-I{}", include.display())];
        let stem = recipe.stem;
        let ptx_path = cache.join(format!("{stem}.ptx"));
        if stale(stem, &ptx_path)? {
            run(Command::new(&nvcc)
                .args(["-ptx", &format!("-arch={}", recipe.ptx_arch)])
                .args(&common)
                .arg(sources().join(format!("{stem}.cu")))
                .arg("-o")
                .arg(&ptx_path))?;
        }
        let planner = cache.join(format!("{stem}_params"));
        if stale(stem, &planner)? {
            run(Command::new(&nvcc)
                .args(recipe.planner_flags)
                .args(&common)
                .arg(format!("-L{}", cuda.join("lib").display()))
                .arg(sources().join(format!("{stem}_params.cu")))
                .args(&recipe.planner_link)
                .arg("-o")
                .arg(&planner))?;
        }
        let module = ctx.load_module(Ptx::from_file(&ptx_path))?;
        Ok(CutlassKernel { function: module.load_function(recipe.kernel)?, planner })
    }

    /// One GEMM of bf16 zeros A (`m·k`) and B (`k·n`) into f32 D (`m·n`),
    /// launched as the planner plans it when given `M N K`, the three
    /// addresses and `planner_tail`.
    pub fn gemm(
        &self,
        stream: &Arc<CudaStream>,
        (m, n, k): (usize, usize, usize),
        planner_tail: &[String],
    ) -> Result<(), Box<dyn Error>> {
        let a = stream.alloc_zeros::<bf16>(m * k)?;
        let b = stream.alloc_zeros::<bf16>(k * n)?;
        let d = stream.alloc_zeros::<f32>(m * n)?;
        {
            let (pa, _ra) = a.device_ptr(stream);
            let (pb, _rb) = b.device_ptr(stream);
            let (pd, _rd) = d.device_ptr(stream);
            let output = run(Command::new(&self.planner)
                .args([m, n, k].map(|v| v.to_string()))
                .args([pa, pb, pd].map(|v| format!("{v:#x}")))
                .args(planner_tail))?;
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

/// Whether `output` must be (re)built: missing, or older than a source of `stem`.
fn stale(stem: &str, output: &Path) -> Result<bool, Box<dyn Error>> {
    let Ok(built) = std::fs::metadata(output).and_then(|m| m.modified()) else { return Ok(true) };
    for source in [format!("{stem}.cu"), format!("{stem}.h"), format!("{stem}_params.cu")] {
        if std::fs::metadata(sources().join(source))?.modified()? > built {
            return Ok(true);
        }
    }
    Ok(false)
}
