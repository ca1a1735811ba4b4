//! The CUTLASS GEMMs of kernels/cutlass_gemm.h (Sm80) and
//! kernels/cutlass_gemm_sm90.h (Sm90): their PTX, and the launch (grid,
//! block, shared memory, Params bytes) the host programs compute for a
//! problem at given device addresses. Used by the CUTLASS tests and by the
//! model's calibration.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::common::{build_host_tool, build_host_tool_for, compile_ptx_with, cuda_root, cutlass_include};
use ptx_emu::LaunchConfig;

pub fn cutlass_flags() -> Vec<String> {
    vec!["-std=c++17".to_string(), "--expt-relaxed-constexpr".to_string(), format!("-I{}", cutlass_include().display())]
}

pub fn cutlass_ptx() -> String {
    compile_ptx_with("cutlass_gemm.cu", "compute_80", &cutlass_flags())
}

/// What the params program prints for one problem.
#[derive(Debug)]
pub struct LaunchPlan {
    pub config: LaunchConfig,
    pub params: Vec<u8>,
}

/// Runs the params program for `D[m,n] = A[m,k] B[k,n]` at the given device
/// addresses, for the 64x64 CTA tile configuration.
pub fn plan_launch(m: usize, n: usize, k: usize, a: u64, b: u64, d: u64) -> LaunchPlan {
    plan_launch_tiled(m, n, k, a, b, d, Tile::T64x64)
}

/// CUTLASS's CTA tile configurations in kernels/cutlass_gemm.h.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    /// `cutlass_gemm_bf16_sm80`: 64x64x32, 32x32 warp tiles, 3 stages.
    T64x64,
    /// `cutlass_gemm_bf16_sm80_128x128`: 128x128x32, 64x64 warp tiles, 3 stages.
    T128x128,
}

impl Tile {
    pub fn kernel(self) -> &'static str {
        match self {
            Tile::T64x64 => "cutlass_gemm_bf16_sm80",
            Tile::T128x128 => "cutlass_gemm_bf16_sm80_128x128",
        }
    }

    fn arg(self) -> &'static str {
        match self {
            Tile::T64x64 => "64x64",
            Tile::T128x128 => "128x128",
        }
    }
}

/// Flags linking a host program with the static CUDA runtime: `lib/` in the
/// PyPI wheels, `lib64/` in a system toolkit.
fn static_cudart_flags() -> Vec<String> {
    let mut flags = vec!["-cudart".to_string(), "static".to_string()];
    for lib in ["lib", "lib64"].map(|dir| cuda_root().join(dir)) {
        if lib.is_dir() {
            flags.push(format!("-L{}", lib.display()));
        }
    }
    flags
}

/// [`plan_launch`] for the configuration `tile`.
#[allow(clippy::too_many_arguments)]
pub fn plan_launch_tiled(m: usize, n: usize, k: usize, a: u64, b: u64, d: u64, tile: Tile) -> LaunchPlan {
    let mut flags = cutlass_flags();
    flags.extend(static_cudart_flags());
    let params_program = build_host_tool("cutlass_gemm_params.cu", &flags);
    let output = Command::new(&params_program)
        .args([m, n, k].map(|v| v.to_string()))
        .args([a, b, d].map(|v| format!("{v:#x}")))
        .arg(tile.arg())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", params_program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "params program failed: {}{}", stdout, String::from_utf8_lossy(&output.stderr));
    parse_plan(&stdout)
}

/// The numbers on the params program's line `name ...`.
fn plan_numbers(text: &str, name: &str) -> Vec<u32> {
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("params program output lacks `{name}`:\n{text}"))
        .split_whitespace()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("bad {name}: {v}")))
        .collect()
}

fn parse_plan(text: &str) -> LaunchPlan {
    let field = |name: &str| -> Vec<&str> {
        text.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("params program output lacks `{name}`:\n{text}"))
            .split_whitespace()
            .collect()
    };
    let numbers = |name: &str| plan_numbers(text, name);
    let (grid, block) = (numbers("grid"), numbers("block"));
    let hex = field("params")[0];
    let params: Vec<u8> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex byte")).collect();
    assert_eq!(params.len() as u32, numbers("params_bytes")[0], "params length");
    LaunchPlan {
        config: LaunchConfig {
            grid: [grid[0], grid[1], grid[2]],
            block: [block[0], block[1], block[2]],
            dynamic_shared_bytes: numbers("shared_bytes")[0],
        },
        params,
    }
}

// ---------------------------------------------------------------- Sm90

/// `kernels/cutlass_gemm_sm90.cu` compiled to PTX for `sm_90a` (CUTLASS's
/// Hopper collectives compile their wgmma, TMA and mbarrier code only for
/// the architecture-specific target). Compiled once per test process: the
/// tests of one binary run in parallel and would otherwise each run nvcc on
/// it (half a minute) before the cache has it.
pub fn cutlass_sm90_ptx() -> String {
    static PTX: OnceLock<String> = OnceLock::new();
    PTX.get_or_init(|| compile_ptx_with("cutlass_gemm_sm90.cu", "sm_90a", &cutlass_flags())).clone()
}

/// CUTLASS's Hopper kernel configurations in kernels/cutlass_gemm_sm90.h.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sm90Kernel {
    /// KernelTmaWarpSpecializedCooperative with the TMA epilogue: a producer
    /// warpgroup and two consumer warpgroups, persistent over tiles.
    Cooperative,
    /// KernelTmaWarpSpecialized with the default (no shared memory)
    /// epilogue: a producer and one consumer warpgroup, one tile per CTA.
    WarpSpecialized,
}

impl Sm90Kernel {
    pub fn kernel(self) -> &'static str {
        match self {
            Sm90Kernel::Cooperative => "cutlass_gemm_bf16_sm90_cooperative",
            Sm90Kernel::WarpSpecialized => "cutlass_gemm_bf16_sm90_warpspecialized",
        }
    }

    fn arg(self) -> &'static str {
        match self {
            Sm90Kernel::Cooperative => "cooperative",
            Sm90Kernel::WarpSpecialized => "warpspecialized",
        }
    }
}

/// What the Sm90 params program prints for one problem.
#[derive(Debug)]
pub struct Sm90LaunchPlan {
    pub config: LaunchConfig,
    pub cluster: [u32; 3],
    pub params: Vec<u8>,
}

/// Runs the Sm90 params program for `D[m,n] = A[m,k] B[n,k]^T` at the given
/// device addresses. Its TMA descriptors come from `cuTensorMapEncodeTiled`
/// of the `libcuda.so` in `driver_dir`, which the program is linked (and
/// run-path bound) against, so they are in the encoding of the driver that
/// will run the kernel. `sm_count` sizes the persistent scheduler's grid.
pub fn plan_sm90_launch(
    m: usize,
    n: usize,
    k: usize,
    (a, b, d): (u64, u64, u64),
    kernel: Sm90Kernel,
    sm_count: u32,
    driver_dir: &Path,
) -> Sm90LaunchPlan {
    let params_program = sm90_params_program(driver_dir);
    let output = Command::new(&params_program)
        .args([m, n, k].map(|v| v.to_string()))
        .args([a, b, d].map(|v| format!("{v:#x}")))
        .arg(kernel.arg())
        .arg(sm_count.to_string())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", params_program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "params program failed: {}{}", stdout, String::from_utf8_lossy(&output.stderr));
    let plan = parse_plan(&stdout);
    let cluster = plan_numbers(&stdout, "cluster");
    assert_eq!(cluster.len(), 3, "cluster X Y Z");
    Sm90LaunchPlan { config: plan.config, cluster: [cluster[0], cluster[1], cluster[2]], params: plan.params }
}

/// kernels/cutlass_gemm_sm90_params.cu built against the `libcuda.so` in
/// `driver_dir` (once per test process, like [`cutlass_sm90_ptx`]).
fn sm90_params_program(driver_dir: &Path) -> PathBuf {
    static PROGRAM: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    let (built_for, program) = PROGRAM.get_or_init(|| {
        let mut flags = cutlass_flags();
        flags.push("-DCUTLASS_ENABLE_DIRECT_CUDA_DRIVER_CALL=1".to_string());
        flags.extend(static_cudart_flags());
        let dir = driver_dir.display();
        // An RPATH (not RUNPATH, which LD_LIBRARY_PATH overrides): the
        // emulator's driver even where LD_LIBRARY_PATH names a real one.
        flags.extend([format!("-L{dir}"), "-lcuda".to_string(), format!("-Xlinker=--disable-new-dtags,-rpath={dir}")]);
        (driver_dir.to_path_buf(), build_host_tool_for("cutlass_gemm_sm90_params.cu", "90a", &flags))
    });
    assert_eq!(built_for, driver_dir, "one driver per test process");
    program.clone()
}
