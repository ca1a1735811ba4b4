//! The CUTLASS GEMMs of kernels/cutlass_gemm.h: their PTX, and the launch
//! (grid, block, shared memory, Params bytes) the host program computes for a
//! problem at given device addresses. Used by the CUTLASS tests and by the
//! model's calibration.
#![allow(dead_code)]

use std::process::Command;

use super::common::{build_host_tool, compile_ptx_with, cuda_root, cutlass_include};
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

/// [`plan_launch`] for the configuration `tile`.
#[allow(clippy::too_many_arguments)]
pub fn plan_launch_tiled(m: usize, n: usize, k: usize, a: u64, b: u64, d: u64, tile: Tile) -> LaunchPlan {
    let mut flags = cutlass_flags();
    // The static CUDA runtime: `lib/` in the PyPI wheels, `lib64/` in a system toolkit.
    flags.extend(["-cudart".to_string(), "static".to_string()]);
    for lib in ["lib", "lib64"].map(|dir| cuda_root().join(dir)) {
        if lib.is_dir() {
            flags.push(format!("-L{}", lib.display()));
        }
    }
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

fn parse_plan(text: &str) -> LaunchPlan {
    let field = |name: &str| -> Vec<&str> {
        text.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("params program output lacks `{name}`:\n{text}"))
            .split_whitespace()
            .collect()
    };
    let numbers = |name: &str| -> Vec<u32> {
        field(name).iter().map(|v| v.parse().unwrap_or_else(|_| panic!("bad {name}: {v}"))).collect()
    };
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
