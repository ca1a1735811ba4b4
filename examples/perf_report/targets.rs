//! Issue 12's targets on the model, per case and GPU: the fused forward
//! (every launch) against CUTLASS's base GEMM alone, at most 1.05x at
//! M = 4096 and 1.10x at the smaller problems; decode (M = 16) at most 1.10x
//! the time to read W0 once, in at most two launches; the backward (every
//! launch) at most 1.15x one CUTLASS GEMM of dX's shape.

use crate::output::Row;

/// Rows at or below this many tokens are decode: judged against the W0 read.
pub const DECODE_TOKENS: usize = 16;
/// The forward against CUTLASS at training-sized M (and above).
const LARGE_M: usize = 4096;
const FORWARD_LARGE: f64 = 1.05;
const FORWARD_SMALL: f64 = 1.10;
const DECODE: f64 = 1.10;
const DECODE_LAUNCHES: usize = 2;
const BACKWARD: f64 = 1.15;

/// One target as judged on one row.
pub struct Target {
    /// What the ratio is taken against, and its limit (e.g. `<=1.05x CUTLASS`).
    pub rule: String,
    pub ratio: f64,
    pub met: bool,
}

impl Target {
    pub fn met_word(&self) -> &'static str {
        if self.met {
            "yes"
        } else {
            "no"
        }
    }
}

pub fn forward(row: &Row) -> Target {
    let f = &row.forward;
    if row.case.m <= DECODE_TOKENS {
        let ratio = f.us / row.w0_floor;
        Target {
            rule: format!("<={DECODE:.2}x W0 read in <={DECODE_LAUNCHES} launches"),
            ratio,
            met: ratio <= DECODE && f.launches <= DECODE_LAUNCHES,
        }
    } else {
        let limit = if row.case.m >= LARGE_M { FORWARD_LARGE } else { FORWARD_SMALL };
        let ratio = f.us / row.cutlass;
        Target { rule: format!("<={limit:.2}x CUTLASS"), ratio, met: ratio <= limit }
    }
}

pub fn backward(row: &Row) -> Target {
    let ratio = row.backward.us / row.cutlass_dx;
    Target { rule: format!("<={BACKWARD:.2}x CUTLASS dX"), ratio, met: ratio <= BACKWARD }
}
