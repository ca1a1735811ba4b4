//! Outputs past 2^31 elements: the forward's Y `[M, N]` and the merge's W
//! and B hold more elements than a 32-bit index reaches, so a kernel that
//! computes `row * ld` in 32 bits addresses the wrong place (memcheck: out
//! of bounds) or writes a wrong element (the value checks below).
//!
//! A whole launch over such a grid would take hours on the emulator, so the
//! launches run sampled (`PTX_EMU_SAMPLE_CTAS`): only a few CTAs, the grid's
//! first and last always among them, and the test checks the far tiles
//! (every output index past 2^31) against the CPU reference computed for
//! those tiles only. The buffers are many GiB but sparse: the emulator's
//! device memory is zeroed pages from the allocator, committed only where
//! written, so the test writes and reads only the far rows.
//!
//! Sampling leaves most outputs unwritten by design, and inputs are written
//! only where the far tiles read them, so the other sampled CTAs read
//! bytes nothing wrote: initcheck is off for this binary alone (memcheck,
//! racecheck and synccheck stay on). The variables are set in this process
//! only, before its one test opens the device; the kernel-test harness
//! (`tests/device`) refuses sampling, so no other test runs sampled.

mod forward_support;

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use forward_support::{assert_close, random, MultiCase};
use fused_lora::reference::{self, MergeDirection, Precision};
use fused_lora::{
    Adapter, BackwardInputs, BackwardOutput, Direction, FiniteCheck, ForwardOutput, GradMode, Linear, LoraDType,
    LoraKernels, MergeLayer,
};
use half::bf16;

const TWO_31: usize = 1 << 31;
/// CTAs per sampled launch.
const SAMPLED_CTAS: &str = "4";

struct Dev {
    stream: Arc<CudaStream>,
    kernels: LoraKernels,
}

fn open() -> Option<Dev> {
    // SAFETY: only tries to dlopen the driver library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        let required = std::env::var("FUSED_LORA_REQUIRE_DEVICE").is_ok_and(|v| v == "1");
        assert!(!required, "no CUDA driver on the library path, and FUSED_LORA_REQUIRE_DEVICE=1");
        eprintln!("SKIPPED: no CUDA driver");
        return None;
    }
    let ctx = CudaContext::new(0).expect("open the device");
    Some(Dev { stream: ctx.default_stream(), kernels: LoraKernels::new(&ctx) })
}

/// Whether the device is the emulator (a GPU would run the whole grid: hours
/// of nothing this test needs, and many GiB really allocated).
fn is_emulator() -> bool {
    // SAFETY: looks a symbol up in the driver library cudarc loaded.
    unsafe { cudarc::driver::sys::culib().get::<unsafe extern "C" fn() -> i32>(b"ptxEmuIsEmulator\0") }.is_ok()
}

/// An uninitialised device buffer of `len` elements (sparse on the emulator).
fn alloc<T: LoraDType>(stream: &Arc<CudaStream>, len: usize) -> CudaSlice<T> {
    // SAFETY: every element the test reads back was written first, by the
    // test or by a kernel; the kernels' other reads are of inputs nothing
    // checks (see the module docs).
    unsafe { stream.alloc::<T>(len) }.expect("alloc")
}

fn write<T: LoraDType>(stream: &Arc<CudaStream>, buffer: &mut CudaSlice<T>, at: usize, host: &[T]) {
    stream.memcpy_htod(host, &mut buffer.slice_mut(at..at + host.len())).expect("upload");
}

fn read<T: LoraDType>(stream: &Arc<CudaStream>, buffer: &CudaSlice<T>, at: usize, len: usize) -> Vec<T> {
    stream.clone_dtoh(&buffer.slice(at..at + len)).expect("download")
}

/// The fused forward over M = 65534·64 + 32 rows (the most one launch takes;
/// the last 64- or 128-row tile holds 32 rows, exactly the shrink's last
/// tile) and N = 520: Y holds 2.18·10^9 elements, and every element of the
/// last tile row lies past 2^31. Checks P's last 32 rows (the shrink's last
/// CTA) and Y's last 32 rows: every element written there is the
/// reference's, and the grid's last tile (columns 512..520) was written.
fn forward_far_tiles<T: LoraDType>(dev: &Dev) {
    let s = &dev.stream;
    let (m, k, n, r) = (65_534 * 64 + 32, 8, 520, 8);
    assert!((m - 32) * n > TWO_31, "the far tile starts past 2^31");
    let far = 32;
    let first_far = m - far;
    let case = MultiCase::<T> {
        m: far,
        k,
        n,
        r_max: r,
        x: random(1, far * k),
        w: random(2, n * k),
        bias: Some(random(3, n)),
        a: random(4, r * k),
        b: random(5, n * r),
        ranks: vec![r],
        scales: vec![0.75],
        index: vec![0; far],
    };
    let mut x = alloc::<T>(s, m * k);
    write(s, &mut x, first_far * k, &case.x);
    let (w, bias, a, b) = (
        s.clone_htod(&case.w).unwrap(),
        s.clone_htod(case.bias.as_ref().unwrap()).unwrap(),
        s.clone_htod(&case.a).unwrap(),
        s.clone_htod(&case.b).unwrap(),
    );
    let mut y = alloc::<T>(s, m * n);
    let mut p = alloc::<T>(s, m * r);
    write(s, &mut y, first_far * n, &vec![T::nan(); far * n]);
    write(s, &mut p, first_far * r, &vec![T::nan(); far * r]);
    let linear = Linear { weight: w.as_view(), bias: Some(bias.as_view()), n, k };
    let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: r, scale: case.scales[0] };
    let mut out = ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) };
    dev.kernels.forward(s, &x.as_view(), &linear, &adapter, None, &mut out).expect("forward (sampled)");

    let p_far = read(s, &p, first_far * r, far * r);
    assert_close(&format!("P rows {first_far}.. ({})", T::DTYPE), &p_far, &case.p_reference());
    let y_far = read(s, &y, first_far * n, far * n);
    let want = case.y_reference(&p_far);
    let (mut written, mut last_tile) = (Vec::new(), Vec::new());
    for (i, v) in y_far.iter().enumerate() {
        let col = i % n;
        if col >= 512 || !v.to_f64().is_nan() {
            written.push((*v, want[i]));
        }
        if col >= 512 {
            last_tile.push(i);
        }
    }
    let (got, expected): (Vec<T>, Vec<_>) = written.into_iter().unzip();
    // The last tile is in `written` whatever it holds: NaN there fails.
    assert_close(&format!("Y far tiles, rows {first_far}.. ({})", T::DTYPE), &got, &expected);
    eprintln!(
        "forward {}: Y [{m}, {n}] = {} elements; {} far elements checked (index ≥ {}), the last tile's {} included",
        T::DTYPE,
        m * n,
        got.len(),
        first_far * n,
        last_tile.len()
    );
}

/// The merge of one layer of N = 2^24 + 128 rows, K = 128, r = 128: W and B
/// both hold more than 2^31 elements; the grid's last CTA (the last 64 rows)
/// must produce the reference's `W + s·B·A` there.
fn merge_far_tile(dev: &Dev) {
    type T = bf16;
    let s = &dev.stream;
    let (n, k, r) = ((1 << 24) + 128, 128, 128);
    assert!((n - 64) * k > TWO_31 && (n - 64) * r > TWO_31, "the far tile starts past 2^31 in W and B");
    let far = 64;
    let first_far = n - far;
    let (w_far, b_far, a_host) = (random::<T>(11, far * k), random::<T>(12, far * r), random::<T>(13, r * k));
    let scale = 0.5f32;
    let mut w = alloc::<T>(s, n * k);
    let mut b = alloc::<T>(s, n * r);
    write(s, &mut w, first_far * k, &w_far);
    write(s, &mut b, first_far * r, &b_far);
    let a = s.clone_htod(&a_host).unwrap();
    {
        let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: r, scale };
        let mut layers = [MergeLayer { weight: w.as_view_mut(), n, k, adapter }];
        dev.kernels.merge(s, &mut layers, Direction::Merge, FiniteCheck::Unchecked).expect("merge (sampled)");
    }
    let got: Vec<f64> = read(s, &w, first_far * k, far * k).iter().map(|v| v.to_f64()).collect();
    let layer = reference::MergeLayer { w: &w_far, a: &a_host, b: &b_far, scale: f64::from(scale), n: far, k, r };
    let exact = reference::merge(&[layer], MergeDirection::Merge, false, Precision::Exact).unwrap();
    let naive = reference::merge(&[layer], MergeDirection::Merge, false, Precision::Naive).unwrap();
    reference::tolerance::assert_close_2d::<T>(
        "W far tile",
        k,
        &got,
        &exact[0],
        &naive[0],
        <T as reference::RefElem>::UNIT_ROUNDOFF * 1e-3,
    );
    eprintln!("merge: W and B [{n}, 128] = {} elements each; the last tile's {} elements checked", n * k, got.len());
}

/// The backward with X and dX `[M, K]` past 2^31 elements, M = 64 rows of
/// K = 2^25 + 2^20 (N = 8, r = 8): dX's last tile (all 64 rows, the last 64
/// columns; every row past the first lies past 2^31) against the reference
/// of that column window, and G (a launch small enough to run whole). dA,
/// whose sampled CTAs read X where nothing wrote it, is not checked.
fn backward_far_tile(dev: &Dev) {
    type T = bf16;
    let s = &dev.stream;
    let (m, k, n, r) = (64, (1 << 25) + (1 << 20), 8, 8);
    let window = 64;
    let first_col = k - window;
    assert!(k * 63 > TWO_31, "the far tile's rows lie past 2^31");
    let (dy_host, p_host, b_host) = (random::<T>(21, m * n), random::<T>(22, m * r), random::<T>(23, n * r));
    // W0 [n, k] and A [r, k] written in the window's columns only.
    let (w_window, a_window) = (random::<T>(24, n * window), random::<T>(25, r * window));
    let x_window = vec![T::from_f64(0.0); m * window];
    let scale = 0.75f32;
    let (mut w, mut a) = (alloc::<T>(s, n * k), alloc::<T>(s, r * k));
    for row in 0..n {
        write(s, &mut w, row * k + first_col, &w_window[row * window..][..window]);
    }
    for row in 0..r {
        write(s, &mut a, row * k + first_col, &a_window[row * window..][..window]);
    }
    let x = alloc::<T>(s, m * k);
    let (dy, p, b) = (s.clone_htod(&dy_host).unwrap(), s.clone_htod(&p_host).unwrap(), s.clone_htod(&b_host).unwrap());
    let mut dx = alloc::<T>(s, m * k);
    for row in 0..m {
        write(s, &mut dx, row * k + first_col, &vec![T::nan(); window]);
    }
    let mut g = s.clone_htod(&vec![T::nan(); m * r]).unwrap();
    let (mut da, mut db) = (alloc::<T>(s, r * k), alloc::<T>(s, n * r));
    {
        let inputs = BackwardInputs { dy: dy.as_view(), x: x.as_view(), p: Some(p.as_view()), dropout: None };
        let linear = Linear { weight: w.as_view(), bias: None, n, k };
        let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: r, scale };
        let mut out = BackwardOutput {
            da: da.as_view_mut(),
            db: db.as_view_mut(),
            dx: dx.as_view_mut(),
            g: Some(g.as_view_mut()),
            mode: GradMode::Overwrite,
        };
        dev.kernels.backward(s, &inputs, &linear, &adapter, &mut out).expect("backward (sampled)");
    }
    // The window as a problem of its own: G and dX's rows do not depend on
    // the columns outside it (X only enters dA).
    let shape = fused_lora::LoraShape { m, k: window, n, r };
    let base = reference::Base { x: &x_window, w0: &w_window, bias: None };
    let adapter = reference::Adapter { a: &a_window, b: &b_host, scale: f64::from(scale) };
    let reference =
        |precision| reference::backward(shape, &base, &adapter, None, &dy_host, &p_host, precision).unwrap();
    let (exact, naive) = (reference(Precision::Exact), reference(Precision::Naive));
    let floor = <T as reference::RefElem>::UNIT_ROUNDOFF * 1e-3;
    let g_got: Vec<f64> = s.clone_dtoh(&g).unwrap().iter().map(|v| v.to_f64()).collect();
    reference::tolerance::assert_close_2d::<T>("G", r, &g_got, &exact.g, &naive.g, floor);
    let dx_got: Vec<f64> =
        (0..m).flat_map(|row| read(s, &dx, row * k + first_col, window)).map(|v| v.to_f64()).collect();
    reference::tolerance::assert_close_2d::<T>("dX last tile", window, &dx_got, &exact.dx, &naive.dx, floor);
    eprintln!("backward: X and dX [{m}, {k}] = {} elements; dX's last tile ({} elements) checked", m * k, dx_got.len());
}

#[test]
fn far_tiles_past_2_pow_31_elements() {
    if std::env::var_os("PTX_EMU_SAMPLE_CTAS").is_none() {
        // Before the device opens: the emulator reads these at each launch.
        std::env::set_var("PTX_EMU_SAMPLE_CTAS", SAMPLED_CTAS);
        std::env::set_var("PTX_EMU_INITCHECK", "0");
    }
    let Some(dev) = open() else { return };
    if !is_emulator() {
        eprintln!("SKIPPED: not the emulator (a GPU would run the whole multi-GiB grids)");
        return;
    }
    forward_far_tiles::<bf16>(&dev);
    forward_far_tiles::<f32>(&dev);
    merge_far_tile(&dev);
    backward_far_tile(&dev);
}
