//! Bad inputs to the backward entry points: each returns the error that
//! names the problem, before anything is launched.

mod device;
mod forward_support;

use cudarc::driver::CudaSlice;
use fused_lora::{
    Adapter, AdapterStack, AdapterStatus, BackwardInputs, BackwardOutput, Dropout, GradMode, Linear, LoraError,
    RowAdapters,
};
use half::f16;

use forward_support::{poisoned, random, upload};

const M: usize = 5;
const K: usize = 16;
const N: usize = 24;
const R: usize = 4;

struct Buffers {
    dy: CudaSlice<f16>,
    x: CudaSlice<f16>,
    w: CudaSlice<f16>,
    a: CudaSlice<f16>,
    b: CudaSlice<f16>,
    p: CudaSlice<f16>,
    da: CudaSlice<f16>,
    db: CudaSlice<f16>,
    dx: CudaSlice<f16>,
}

fn buffers(dev: &device::Device) -> Buffers {
    let s = &dev.stream;
    Buffers {
        dy: upload(s, &random::<f16>(1, M * N)),
        x: upload(s, &random::<f16>(2, M * K)),
        w: upload(s, &random::<f16>(3, N * K)),
        a: upload(s, &random::<f16>(4, R * K)),
        b: upload(s, &random::<f16>(5, N * R)),
        p: upload(s, &random::<f16>(6, M * R)),
        da: poisoned(s, R * K),
        db: poisoned(s, N * R),
        dx: poisoned(s, M * K),
    }
}

/// Edits applied to an otherwise valid single-adapter call.
#[derive(Clone, Copy)]
struct Edit {
    rank: usize,
    scale: f32,
    n: usize,
    dy_short: bool,
    p_short: bool,
    da_short: bool,
}

const VALID: Edit = Edit { rank: R, scale: 1.0, n: N, dy_short: false, p_short: false, da_short: false };

fn backward_result(dev: &device::Device, bufs: &mut Buffers, edit: Edit) -> Result<(), LoraError> {
    let linear = Linear { weight: bufs.w.as_view(), bias: None, n: edit.n, k: K };
    let adapter = Adapter { a: bufs.a.as_view(), b: bufs.b.as_view(), rank: edit.rank, scale: edit.scale };
    let dy = if edit.dy_short { bufs.dy.slice(1..) } else { bufs.dy.as_view() };
    let p = if edit.p_short { bufs.p.slice(1..) } else { bufs.p.as_view() };
    let da = if edit.da_short { bufs.da.slice_mut(1..) } else { bufs.da.as_view_mut() };
    let mut out =
        BackwardOutput { da, db: bufs.db.as_view_mut(), dx: bufs.dx.as_view_mut(), g: None, mode: GradMode::Overwrite };
    let inputs = BackwardInputs { dy, x: bufs.x.as_view(), p: Some(p), dropout: None };
    dev.kernels.backward(&dev.stream, &inputs, &linear, &adapter, &mut out)
}

#[test]
fn a_valid_call_succeeds() {
    let Some(dev) = device::device() else { return };
    let mut bufs = buffers(&dev);
    backward_result(&dev, &mut bufs, VALID).expect("valid call");
}

#[test]
fn wrong_shapes_are_named() {
    let Some(dev) = device::device() else { return };
    let mut bufs = buffers(&dev);
    let cases: [(Edit, &str); 5] = [
        (Edit { n: N + 1, ..VALID }, "weight"),
        (Edit { rank: R - 1, ..VALID }, "a"),
        (Edit { dy_short: true, ..VALID }, "dy"),
        (Edit { p_short: true, ..VALID }, "p"),
        (Edit { da_short: true, ..VALID }, "da"),
    ];
    for (edit, name) in cases {
        match backward_result(&dev, &mut bufs, edit) {
            Err(LoraError::ShapeMismatch { what, .. }) if what == name => {}
            other => panic!("expected a shape mismatch on {name}, got {other:?}"),
        }
    }
}

#[test]
fn bad_scalars_are_refused() {
    let Some(dev) = device::device() else { return };
    let mut bufs = buffers(&dev);
    assert!(matches!(
        backward_result(&dev, &mut bufs, Edit { scale: f32::NAN, ..VALID }),
        Err(LoraError::InvalidArgument { what: "scale", .. })
    ));
    assert!(matches!(
        backward_result(&dev, &mut bufs, Edit { rank: 0, ..VALID }),
        Err(LoraError::InvalidArgument { what: "rank", .. })
    ));
}

#[test]
fn recomputing_p_needs_an_aligned_k() {
    let Some(dev) = device::device() else { return };
    let s = &dev.stream;
    let k = 10; // not a multiple of 8 halves
    let (x, w, a, b, dy) = (
        upload(s, &random::<f16>(1, M * k)),
        upload(s, &random::<f16>(2, N * k)),
        upload(s, &random::<f16>(3, R * k)),
        upload(s, &random::<f16>(4, N * R)),
        upload(s, &random::<f16>(5, M * N)),
    );
    let (mut da, mut db, mut dx) = (poisoned::<f16>(s, R * k), poisoned::<f16>(s, N * R), poisoned::<f16>(s, M * k));
    let linear = Linear { weight: w.as_view(), bias: None, n: N, k };
    let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: R, scale: 1.0 };
    let mut out = BackwardOutput {
        da: da.as_view_mut(),
        db: db.as_view_mut(),
        dx: dx.as_view_mut(),
        g: None,
        mode: GradMode::Accumulate,
    };
    let inputs = BackwardInputs { dy: dy.as_view(), x: x.as_view(), p: None, dropout: None };
    let result = dev.kernels.backward(s, &inputs, &linear, &adapter, &mut out);
    assert!(matches!(result, Err(LoraError::Misaligned { what: "k", .. })), "got {result:?}");
}

#[test]
fn bad_stacks_are_refused() {
    let Some(dev) = device::device() else { return };
    let s = &dev.stream;
    let mut bufs = buffers(&dev);
    let index = upload(s, &[0i32; M]);
    let mut status = AdapterStatus::new(s).expect("status");
    let linear = Linear { weight: bufs.w.as_view(), bias: None, n: N, k: K };
    let cases: [(&[usize], &[f32], &str); 3] =
        [(&[R + 1], &[1.0], "ranks"), (&[0], &[1.0], "ranks"), (&[R], &[1.0, 2.0], "scales")];
    for (ranks, scales, name) in cases {
        let stack = AdapterStack { a: bufs.a.as_view(), b: bufs.b.as_view(), r_max: R, ranks, scales };
        let mut rows = RowAdapters { index: index.as_view(), status: &mut status };
        let mut out = BackwardOutput {
            da: bufs.da.as_view_mut(),
            db: bufs.db.as_view_mut(),
            dx: bufs.dx.as_view_mut(),
            g: None,
            mode: GradMode::Overwrite,
        };
        let inputs =
            BackwardInputs { dy: bufs.dy.as_view(), x: bufs.x.as_view(), p: Some(bufs.p.as_view()), dropout: None };
        let result = dev.kernels.backward_multi(s, &inputs, &linear, &stack, &mut rows, &mut out);
        match result {
            Err(LoraError::InvalidArgument { what, .. }) | Err(LoraError::ShapeMismatch { what, .. })
                if what == name => {}
            other => panic!("expected an error on {name}, got {other:?}"),
        }
    }
}

#[test]
fn a_bad_dropout_probability_is_refused() {
    let Some(dev) = device::device() else { return };
    let mut bufs = buffers(&dev);
    let linear = Linear { weight: bufs.w.as_view(), bias: None, n: N, k: K };
    let adapter = Adapter { a: bufs.a.as_view(), b: bufs.b.as_view(), rank: R, scale: 1.0 };
    for p in [1.0, -0.5, f32::NAN] {
        // The fields are public: a value built without Dropout::new is checked again.
        let dropout = Dropout { p, seed: 1, offset: 0 };
        let mut out = BackwardOutput {
            da: bufs.da.as_view_mut(),
            db: bufs.db.as_view_mut(),
            dx: bufs.dx.as_view_mut(),
            g: None,
            mode: GradMode::Overwrite,
        };
        let inputs = BackwardInputs { dy: bufs.dy.as_view(), x: bufs.x.as_view(), p: None, dropout: Some(dropout) };
        let result = dev.kernels.backward(&dev.stream, &inputs, &linear, &adapter, &mut out);
        assert!(matches!(result, Err(LoraError::InvalidArgument { what: "dropout p", .. })), "p = {p}: got {result:?}");
    }
}
