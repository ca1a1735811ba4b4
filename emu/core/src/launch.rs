//! Executes one kernel over a grid.

use crate::memory::GlobalMemory;
use crate::module::Module;
use crate::ptx::ir::Kernel;

// What a launch takes and gives back, defined beside the executor that
// reads and fills them; part of this module's API.
pub use crate::exec::config::{CheckOptions, LaunchConfig, LaunchReport};

/// The launch itself could not start (the driver maps these to
/// CUDA_ERROR_INVALID_VALUE / _NOT_FOUND / _LAUNCH_OUT_OF_RESOURCES).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LaunchError {
    KernelNotFound(String),
    /// Zero or too large grid/block dimensions, too many threads per block.
    InvalidConfig(String),
    /// Shared memory (static + dynamic) above the device limit.
    OutOfResources(String),
    /// The packed parameter buffer is not `param_bytes` long.
    BadParams(String),
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaunchError::KernelNotFound(s) => write!(f, "kernel not found: {s}"),
            LaunchError::InvalidConfig(s) => write!(f, "invalid launch configuration: {s}"),
            LaunchError::OutOfResources(s) => write!(f, "launch out of resources: {s}"),
            LaunchError::BadParams(s) => write!(f, "bad kernel parameters: {s}"),
        }
    }
}

impl std::error::Error for LaunchError {}

/// Runs `kernel` of `module` over `config`'s grid with the packed parameter
/// buffer `params` (laid out per [`crate::KernelInfo::params`]).
///
/// Blocks until every CTA has finished; independent CTAs run on
/// `opts.threads` host threads. Execution stops early (remaining CTAs skipped)
/// once a finding is made; at most a handful of findings are reported.
pub fn launch(
    module: &Module,
    kernel: &str,
    config: &LaunchConfig,
    params: &[u8],
    mem: &GlobalMemory,
    opts: &CheckOptions,
) -> Result<LaunchReport, LaunchError> {
    launch_with_cluster(module, kernel, config, None, params, mem, opts)
}

/// [`launch`] in thread-block clusters of `cluster` CTAs per dimension
/// (`cuLaunchKernelEx`'s cluster attribute), or of the kernel's own
/// `.reqnctapercluster` when `None`; the CTAs of a cluster run together
/// (`exec::cluster`). A kernel's `.reqnctapercluster` and a different
/// `cluster`, a grid that is not a whole number of clusters, or more than 8
/// CTAs per cluster are `InvalidConfig`.
pub fn launch_with_cluster(
    module: &Module,
    kernel: &str,
    config: &LaunchConfig,
    cluster: Option<[u32; 3]>,
    params: &[u8],
    mem: &GlobalMemory,
    opts: &CheckOptions,
) -> Result<LaunchReport, LaunchError> {
    let k = module.find_kernel(kernel).ok_or_else(|| LaunchError::KernelNotFound(kernel.to_string()))?;
    validate(k, config, params)?;
    let cluster = cluster_dims(k, config, cluster)?;
    if cluster.is_some_and(|d| d != [1, 1, 1]) {
        refuse_multicast(module, k)?;
    }
    let report = crate::exec::run(module, k, config, cluster, params, mem, opts);
    if let Ok(path) = std::env::var("PTX_EMU_COUNTERS_FILE") {
        let mut line = report.counters.to_json_line();
        let gpus = crate::model::gpus_from_env();
        if let Some(model) = crate::model::model_json(module, &k.info, config, &report.counters, &gpus) {
            // `"model"` goes inside the counters object.
            line.pop();
            line.push_str(",\"model\":");
            line.push_str(&model);
            line.push('}');
        }
        append_line(&path, &line);
    }
    Ok(report)
}

/// Device limits the launch is checked against (those of an sm_80/sm_90 part).
const MAX_THREADS_PER_BLOCK: u32 = 1024;
const MAX_BLOCK_DIM: [u32; 3] = [1024, 1024, 64];
const MAX_GRID_DIM: [u32; 3] = [i32::MAX as u32, 65535, 65535];
/// Shared memory per block an sm_90 part allows with the opt-in attribute.
pub const MAX_SHARED_PER_BLOCK: u32 = 227 * 1024;

fn validate(k: &Kernel, config: &LaunchConfig, params: &[u8]) -> Result<(), LaunchError> {
    for d in 0..3 {
        if config.grid[d] == 0 || config.grid[d] > MAX_GRID_DIM[d] {
            return Err(LaunchError::InvalidConfig(format!("grid dimension {d} is {}", config.grid[d])));
        }
        if config.block[d] == 0 || config.block[d] > MAX_BLOCK_DIM[d] {
            return Err(LaunchError::InvalidConfig(format!("block dimension {d} is {}", config.block[d])));
        }
    }
    let threads: u64 = config.block.iter().map(|&b| b as u64).product();
    let limit = k.info.max_threads_per_block.unwrap_or(MAX_THREADS_PER_BLOCK).min(MAX_THREADS_PER_BLOCK);
    if threads > limit as u64 {
        return Err(LaunchError::InvalidConfig(format!("{threads} threads per block, at most {limit}")));
    }
    let shared = k.dynamic_shared_offset as u64 + config.dynamic_shared_bytes as u64;
    if shared > MAX_SHARED_PER_BLOCK as u64 {
        return Err(LaunchError::OutOfResources(format!(
            "{shared} bytes of shared memory, at most {MAX_SHARED_PER_BLOCK}"
        )));
    }
    if params.len() != k.info.param_bytes as usize {
        return Err(LaunchError::BadParams(format!(
            "{} bytes of parameters, kernel takes {}",
            params.len(),
            k.info.param_bytes
        )));
    }
    Ok(())
}

/// The launch's cluster dimensions (`None`: no clusters asked for).
fn cluster_dims(k: &Kernel, config: &LaunchConfig, asked: Option<[u32; 3]>) -> Result<Option<[u32; 3]>, LaunchError> {
    let dims = match (k.info.cluster_dims, asked) {
        (Some(required), Some(asked)) if required != asked => {
            return Err(LaunchError::InvalidConfig(format!(
                "cluster dimensions {asked:?}, but the kernel requires {required:?} (.reqnctapercluster)"
            )))
        }
        (Some(d), _) | (None, Some(d)) => d,
        (None, None) => return Ok(None),
    };
    let size = dims.iter().map(|&d| d as u64).product::<u64>();
    if dims.contains(&0) || size > crate::exec::MAX_CLUSTER_SIZE as u64 {
        return Err(LaunchError::InvalidConfig(format!(
            "cluster dimensions {dims:?}: from 1 to {} CTAs per cluster",
            crate::exec::MAX_CLUSTER_SIZE
        )));
    }
    if (0..3).any(|d| config.grid[d] % dims[d] != 0) {
        return Err(LaunchError::InvalidConfig(format!(
            "grid {:?} is not a whole number of clusters of {dims:?}",
            config.grid
        )));
    }
    Ok(Some(dims))
}

/// Bulk copies multicast to several CTAs of a cluster are not emulated
/// (their data would reach the issuing CTA only): such a kernel is refused
/// in clusters of more than one CTA rather than run wrong.
fn refuse_multicast(module: &Module, k: &Kernel) -> Result<(), LaunchError> {
    use crate::ptx::ir::{AsyncOp, Op};
    let multicast = k.insts.iter().find(|i| {
        matches!(i.op, Op::Async(AsyncOp::TensorLoad { .. } | AsyncOp::BulkLoad { .. }))
            && module.line_text(i.line).contains(".multicast::cluster")
    });
    match multicast {
        Some(i) => Err(LaunchError::InvalidConfig(format!(
            "`{}` (PTX line {}): bulk copies multicast to a cluster are not emulated",
            module.line_text(i.line).trim(),
            i.line
        ))),
        None => Ok(()),
    }
}

fn append_line(path: &str, line: &str) {
    use std::io::Write;
    // Counters are diagnostics: failing to record them must not fail the launch.
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}
