//! Counted memory traffic of the dX launch on the emulator (its per-launch
//! counters; on a real GPU this test skips): with one thread per output
//! element and a warp spanning 32 consecutive columns of one row, every load
//! request of W0 (read in its stored `[N, K]` layout) and of A touches exactly
//! the sectors of 32 consecutive elements, dY and G are one broadcast sector
//! per request, and dX is stored in whole sectors.

mod device;
mod forward_support;

use fused_lora::{Adapter, BackwardOutput, GradMode, Linear, LoraDType};
use half::{bf16, f16};

use forward_support::{poisoned, random, upload};

const SECTOR: usize = 32;
const WARP: usize = 32;

fn dx_traffic<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    if !device::is_emulator() {
        eprintln!("SKIPPED: counters exist on the emulator only");
        return;
    }
    let s = &dev.stream;
    // K a multiple of the warp width, so every warp covers 32 columns of one row.
    let (m, k, n, r) = (16, 64, 24, 8);
    let (dy, x, w, a, b, p) = (
        upload(s, &random::<T>(1, m * n)),
        upload(s, &random::<T>(2, m * k)),
        upload(s, &random::<T>(3, n * k)),
        upload(s, &random::<T>(4, r * k)),
        upload(s, &random::<T>(5, n * r)),
        upload(s, &random::<T>(6, m * r)),
    );
    let (mut da, mut db, mut dx) = (poisoned::<T>(s, r * k), poisoned::<T>(s, n * r), poisoned::<T>(s, m * k));
    let linear = Linear { weight: w.as_view(), bias: None, n, k };
    let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: r, scale: 0.5 };
    let mut out = BackwardOutput { da: da.as_view_mut(), db: db.as_view_mut(), dx: dx.as_view_mut(), g: None, mode: GradMode::Overwrite };
    let p_view = p.as_view();
    dev.kernels.backward(s, &dy.as_view(), &x.as_view(), &linear, &adapter, Some(&p_view), None, &mut out).expect("backward");
    s.synchronize().expect("sync");
    // dX is the last launch of the call.
    let counters = device::last_launch_counters().expect("emulator counters");
    let elem = T::DTYPE.size_bytes();
    let warps = m * k / WARP;
    // Per warp: n steps of (dY broadcast + a 32-wide W0 row segment), r steps of (G broadcast + a 32-wide A row segment).
    let row_segment = WARP * elem / SECTOR;
    let expected_loads = warps * (n + r) * (1 + row_segment);
    assert_eq!(device::counter(&counters, "global_load_sectors"), expected_loads as u64, "{counters}");
    assert_eq!(device::counter(&counters, "global_store_sectors"), (m * k * elem / SECTOR) as u64, "{counters}");
}

#[test]
fn dx_traffic_f32() {
    dx_traffic::<f32>();
}

#[test]
fn dx_traffic_f16() {
    dx_traffic::<f16>();
}

#[test]
fn dx_traffic_bf16() {
    dx_traffic::<bf16>();
}
