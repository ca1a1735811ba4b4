//! The Hopper rows: on the H100 (132 SMs, the emulator presenting compute
//! capability 9.0), bf16, the Llama-3-8B projections at M = 4096 and r = 16,
//! the crate's forward on its Hopper path (`lora_forward_gemm_bf16_sm90a`,
//! after the mma.sync shrink), the same forward on the mma.sync path
//! (`FUSED_LORA_HOPPER=0`), and CUTLASS Sm90's base GEMM alone
//! (`cutlass_sm90.rs`), each modeled (never measured). Issue 17's targets:
//! the Hopper forward at least 1.4x faster than the mma.sync one, and at
//! most 1.05x CUTLASS Sm90's base GEMM.
//!
//! Then the backward's dX rows, alike: dX on its Hopper path
//! (`lora_backward_dx_bf16_sm90a`, with dA's own launch before it), on the
//! mma.sync path (whose 128x128 dX launch also runs dA's CTAs), and CUTLASS
//! Sm90's GEMM of dX's shape (M x K, reduced over N; its B K-major where
//! dX's W0 is MN-major: the shape's cost, not the same layout).

use std::error::Error;
use std::path::Path;

use crate::cases::Case;
use crate::launches::Summed;
use crate::table::{columns, fixed, times, Align::Left, Align::Right, Table};

/// The modeled GPU of the Hopper rows and its multiprocessors.
pub const GPU: &str = "h100";
pub const SMS: u32 = 132;
pub const TOKENS: usize = 4096;
pub const RANK: usize = 16;
/// The targets: speed-up over the mma.sync forward, ratio to CUTLASS Sm90.
pub const MIN_SPEEDUP: f64 = 1.4;
pub const MAX_VS_CUTLASS: f64 = 1.05;

/// One projection's modeled times on the H100.
pub struct HopperRow {
    pub case: Case,
    pub hopper: Summed,
    pub mma_sync: Summed,
    pub cutlass_sm90_us: f64,
}

impl HopperRow {
    pub fn speedup(&self) -> f64 {
        self.mma_sync.us / self.hopper.us
    }

    pub fn vs_cutlass(&self) -> f64 {
        self.hopper.us / self.cutlass_sm90_us
    }

    fn met(&self) -> bool {
        self.speedup() >= MIN_SPEEDUP && self.vs_cutlass() <= MAX_VS_CUTLASS
    }
}

/// The cases: every projection at M = 4096, r = 16.
pub fn cases(projections: &[(&'static str, usize, usize)]) -> Vec<Case> {
    projections.iter().map(|&(projection, k, n)| Case { projection, m: TOKENS, k, n, r: RANK }).collect()
}

/// The rows as a markdown table.
pub fn table(rows: &[HopperRow]) -> String {
    let mut table = Table::new(columns(Left, &["case"]).chain(columns(
        Right,
        &[
            "Hopper forward us",
            "mma.sync forward us",
            "CUTLASS Sm90 GEMM us",
            "speed-up (>= 1.4x)",
            "vs CUTLASS Sm90 (<= 1.05x)",
        ],
    )));
    table.add_columns(columns(Left, &["met", "Hopper's slowest launch, bound"]));
    for row in rows {
        table.row(&[
            &row.case.label(),
            &fixed(row.hopper.us, 1),
            &fixed(row.mma_sync.us, 1),
            &fixed(row.cutlass_sm90_us, 1),
            &times(row.speedup()),
            &times(row.vs_cutlass()),
            &if row.met() { "yes" } else { "no" },
            &format!("{}, {}", row.hopper.slowest, row.hopper.bound),
        ]);
    }
    format!(
        "Hopper path, H100 (modeled, not measured), bf16: forward = shrink (mma.sync) + fused GEMM\n\n{}",
        table.markdown()
    )
}

/// `hopper.md` (the table) and `hopper.csv` in `dir`.
pub fn write(dir: &Path, rows: &[HopperRow]) -> Result<(), Box<dyn Error>> {
    std::fs::write(dir.join("hopper.md"), table(rows))?;
    let mut csv = Table::csv_header("case,m,k,n,r,gpu,hopper_us,mma_sync_us,cutlass_sm90_us,speedup,vs_cutlass,met");
    for row in rows {
        let mut cells = row.case.csv_cells();
        cells.extend([
            GPU.to_string(),
            fixed(row.hopper.us, 3),
            fixed(row.mma_sync.us, 3),
            fixed(row.cutlass_sm90_us, 3),
            fixed(row.speedup(), 4),
            fixed(row.vs_cutlass(), 4),
            row.met().to_string(),
        ]);
        csv.push(cells);
    }
    std::fs::write(dir.join("hopper.csv"), csv.csv())?;
    Ok(())
}

/// One projection's modeled dX times on the H100: the Hopper dX launch and
/// the launches of dA and dX on either path (the mma.sync dX launch runs
/// dA's CTAs too, so dA + dX is what compares).
pub struct DxRow {
    pub case: Case,
    pub hopper_dx: Summed,
    pub hopper_dx_da: Summed,
    pub mma_sync_dx_da: Summed,
    pub cutlass_sm90_us: f64,
}

impl DxRow {
    pub fn speedup(&self) -> f64 {
        self.mma_sync_dx_da.us / self.hopper_dx_da.us
    }

    pub fn vs_cutlass(&self) -> f64 {
        self.hopper_dx.us / self.cutlass_sm90_us
    }
}

/// Whether a backward launch is dX's or dA's (the launches the dX rows sum).
pub fn is_dx_or_da(kernel: &str) -> bool {
    kernel.starts_with("lora_backward_dx_") || kernel.starts_with("lora_backward_da_")
}

/// The dX rows as a markdown table.
pub fn dx_table(rows: &[DxRow]) -> String {
    let mut table = Table::new(columns(Left, &["case"]).chain(columns(
        Right,
        &[
            "Hopper dX us",
            "Hopper dA + dX us",
            "mma.sync dA + dX us",
            "CUTLASS Sm90 GEMM of dX's shape us",
            "speed-up",
            "Hopper dX vs CUTLASS Sm90",
        ],
    )));
    table.add_columns(columns(Left, &["Hopper dX bound"]));
    for row in rows {
        table.row(&[
            &row.case.label(),
            &fixed(row.hopper_dx.us, 1),
            &fixed(row.hopper_dx_da.us, 1),
            &fixed(row.mma_sync_dx_da.us, 1),
            &fixed(row.cutlass_sm90_us, 1),
            &times(row.speedup()),
            &times(row.vs_cutlass()),
            &row.hopper_dx.bound,
        ]);
    }
    format!(
        "Backward dX, H100 (modeled, not measured), bf16: dA + dX launches (the mma.sync 128x128 dX launch runs \
         dA's CTAs; the Hopper path launches dA, then the sm_90a dX)\n\n{}",
        table.markdown()
    )
}

/// `hopper_dx.md` (the table) and `hopper_dx.csv` in `dir`.
pub fn write_dx(dir: &Path, rows: &[DxRow]) -> Result<(), Box<dyn Error>> {
    std::fs::write(dir.join("hopper_dx.md"), dx_table(rows))?;
    let mut csv = Table::csv_header(
        "case,m,k,n,r,gpu,hopper_dx_us,hopper_dx_da_us,mma_sync_dx_da_us,cutlass_sm90_us,speedup,vs_cutlass",
    );
    for row in rows {
        let mut cells = row.case.csv_cells();
        cells.extend([
            GPU.to_string(),
            fixed(row.hopper_dx.us, 3),
            fixed(row.hopper_dx_da.us, 3),
            fixed(row.mma_sync_dx_da.us, 3),
            fixed(row.cutlass_sm90_us, 3),
            fixed(row.speedup(), 4),
            fixed(row.vs_cutlass(), 4),
        ]);
        csv.push(cells);
    }
    std::fs::write(dir.join("hopper_dx.csv"), csv.csv())?;
    Ok(())
}
