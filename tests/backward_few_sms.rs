//! dX's 128-row launches with dA's CTAs on a device of few SMs: the emulated
//! device presents 8 (`PTX_EMU_MULTIPROCESSORS`, set by every test of this
//! binary before its first launch, the same value in all of them), so the
//! tile rule (`dx_tile`, src/backward.rs) gives the 128 × 128 tile to grids
//! small enough for the emulator. On 108 SMs the one combination below
//! needs several times the rows and columns, and more adapters: dA's
//! 64-rank-column tiles in the 128 × 128 launch with a warp per adapter
//! (the rows gathered through the permutation, each warp's X tile 64 K
//! columns wide).

mod backward_support;
mod common;
mod device;
mod forward_support;

use backward_support::dx_with_da_rows_free;
use half::{bf16, f16};

/// The SM count every test here presents.
const SMS: &str = "8";

fn presenting_few_sms() {
    std::env::set_var("PTX_EMU_MULTIPROCESSORS", SMS);
}

/// Nine adapters of ranks up to 40 over M = 1500 rows (warp mode: fewer
/// rows per adapter than 8 warps × 32), K = 380 (ragged): 12 × 3 dX tiles
/// of 128 × 128 and dA's column of 12 CTAs, 64 rank columns per dA tile.
const WARP_MODE_PAST_32: &[usize] = &[8, 40, 1, 17, 32, 16, 24, 3, 33];

#[test]
fn big_dx_with_wide_da_warp_mode_f16() {
    presenting_few_sms();
    dx_with_da_rows_free::<f16>("128x128", (1500, 380), WARP_MODE_PAST_32);
}

#[test]
fn big_dx_with_wide_da_warp_mode_bf16() {
    presenting_few_sms();
    dx_with_da_rows_free::<bf16>("128x128", (1500, 380), WARP_MODE_PAST_32);
}
