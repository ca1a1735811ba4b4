//! What the executor is asked to run and what it reports: the grid, the
//! checks, the counters and findings (re-exported as `crate::launch`'s API).

use crate::counters::Counters;
use crate::findings::Finding;

/// Grid and block dimensions and dynamic shared memory, as in `cuLaunchKernel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared_bytes: u32,
}

/// Which checks are on, and how many host threads run CTAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    pub memcheck: bool,
    pub racecheck: bool,
    pub initcheck: bool,
    pub synccheck: bool,
    /// initcheck also for the rows `ldmatrix` reads (off by default: tiled
    /// GEMMs read rows past a ragged edge that they never wrote and discard
    /// the products; with it off those bytes read as 0xff, NaN, instead).
    pub ldmatrix_initcheck: bool,
    /// initcheck also for plain reads of shared memory (`ld.shared`, generic
    /// loads that land in shared memory, shared atomics, a bulk copy out of
    /// shared memory). Off by default, as compute-sanitizer's initcheck looks
    /// at global memory only: with it off the bytes never written read as
    /// 0xff (NaN in f16, bf16, f32 and f64), so one that reaches a stored
    /// result shows there instead of being a finding.
    pub shared_initcheck: bool,
    /// Host threads running independent CTAs (0 = all cores).
    pub threads: usize,
    /// Run only about this many CTAs of a larger grid and extrapolate the
    /// counters to the whole grid (`exec::sample` says which CTAs and how).
    /// The launch's outputs are then incomplete: for counting only.
    pub sample_ctas: Option<u32>,
}

impl Default for CheckOptions {
    /// Every check on, all cores.
    fn default() -> Self {
        CheckOptions {
            memcheck: true,
            racecheck: true,
            initcheck: true,
            synccheck: true,
            ldmatrix_initcheck: false,
            shared_initcheck: false,
            threads: 0,
            sample_ctas: None,
        }
    }
}

impl CheckOptions {
    /// Every check on unless switched off: `PTX_EMU_MEMCHECK=0`,
    /// `PTX_EMU_RACECHECK=0`, `PTX_EMU_INITCHECK=0`, `PTX_EMU_SYNCCHECK=0`;
    /// `PTX_EMU_INITCHECK_LDMATRIX=1` and `PTX_EMU_INITCHECK_SHARED=1` extend
    /// initcheck (see the fields);
    /// `PTX_EMU_THREADS=N` sets the host threads; `PTX_EMU_SAMPLE_CTAS=N`
    /// samples grids of more than N CTAs (see [`CheckOptions::sample_ctas`]).
    pub fn from_env() -> Self {
        let off = |name: &str| std::env::var(name).is_ok_and(|v| v.trim() == "0");
        let on = |name: &str| std::env::var(name).is_ok_and(|v| v.trim() == "1");
        CheckOptions {
            memcheck: !off("PTX_EMU_MEMCHECK"),
            racecheck: !off("PTX_EMU_RACECHECK"),
            initcheck: !off("PTX_EMU_INITCHECK"),
            synccheck: !off("PTX_EMU_SYNCCHECK"),
            ldmatrix_initcheck: on("PTX_EMU_INITCHECK_LDMATRIX"),
            shared_initcheck: on("PTX_EMU_INITCHECK_SHARED"),
            threads: std::env::var("PTX_EMU_THREADS").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0),
            sample_ctas: sample_ctas_from_env(),
        }
    }
}

/// `PTX_EMU_SAMPLE_CTAS` as a positive count; anything else is ignored with a
/// warning (a sampled launch must never happen by accident).
fn sample_ctas_from_env() -> Option<u32> {
    let v = std::env::var("PTX_EMU_SAMPLE_CTAS").ok()?;
    match v.trim().parse::<u32>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            eprintln!("ptx-emu: ignoring PTX_EMU_SAMPLE_CTAS={v:?}: not a positive CTA count");
            None
        }
    }
}

/// What a launch did: its counters, and the findings of the checks (empty
/// when clean). A launch with findings may have written partial results.
#[derive(Clone, Debug, Default)]
pub struct LaunchReport {
    pub counters: Counters,
    pub findings: Vec<Finding>,
}
