//! Bad inputs to the forward entry points: each returns the error that names
//! the problem, before anything is launched.

mod device;
mod forward_support;

use cudarc::driver::{CudaContext, CudaSlice, DevicePtr};
use fused_lora::{Adapter, AdapterStack, AdapterStatus, ForwardOutput, Linear, LoraError, RowAdapters};
use half::f16;

use forward_support::{poisoned, random, upload};

const M: usize = 5;
const K: usize = 16;
const N: usize = 24;
const R: usize = 4;

struct Buffers {
    x: CudaSlice<f16>,
    w: CudaSlice<f16>,
    bias: CudaSlice<f16>,
    a: CudaSlice<f16>,
    b: CudaSlice<f16>,
    y: CudaSlice<f16>,
    p: CudaSlice<f16>,
}

fn buffers(dev: &device::Device) -> Buffers {
    let s = &dev.stream;
    Buffers {
        x: upload(s, &random::<f16>(1, M * K)),
        w: upload(s, &random::<f16>(2, N * K)),
        bias: upload(s, &random::<f16>(3, N)),
        a: upload(s, &random::<f16>(4, R * K)),
        b: upload(s, &random::<f16>(5, N * R)),
        y: poisoned(s, M * N),
        p: poisoned(s, M * R),
    }
}

/// Runs `forward` on the buffers, with the given edits applied to the call.
fn forward_error(dev: &device::Device, bufs: &mut Buffers, rank: usize, scale: f32, n: usize, k: usize) -> LoraError {
    let linear = Linear { weight: bufs.w.as_view(), bias: Some(bufs.bias.as_view()), n, k };
    let adapter = Adapter { a: bufs.a.as_view(), b: bufs.b.as_view(), rank, scale };
    let mut out = ForwardOutput { y: bufs.y.as_view_mut(), p: Some(bufs.p.as_view_mut()) };
    dev.kernels
        .forward(&dev.stream, &bufs.x.as_view(), &linear, &adapter, None, &mut out)
        .expect_err("bad input accepted")
}

#[test]
fn wrong_shapes_are_named() {
    let Some(dev) = device::device() else { return };
    let mut bufs = buffers(&dev);
    // N = 25 does not match W0's 24 rows.
    assert!(matches!(
        forward_error(&dev, &mut bufs, R, 1.0, N + 1, K),
        LoraError::ShapeMismatch { what: "weight", .. }
    ));
    // Rank 3 does not match A's 4 rows.
    assert!(matches!(forward_error(&dev, &mut bufs, R - 1, 1.0, N, K), LoraError::ShapeMismatch { what: "a", .. }));
    // Y one element short.
    let linear = Linear { weight: bufs.w.as_view(), bias: None, n: N, k: K };
    let adapter = Adapter { a: bufs.a.as_view(), b: bufs.b.as_view(), rank: R, scale: 1.0 };
    let mut out = ForwardOutput { y: bufs.y.slice_mut(1..), p: None };
    let err =
        dev.kernels.forward(&dev.stream, &bufs.x.as_view(), &linear, &adapter, None, &mut out).expect_err("short Y");
    assert!(matches!(err, LoraError::ShapeMismatch { what: "y", .. }), "{err:?}");
    // X not a whole number of rows.
    let mut out = ForwardOutput { y: bufs.y.as_view_mut(), p: None };
    let err =
        dev.kernels.forward(&dev.stream, &bufs.x.slice(1..), &linear, &adapter, None, &mut out).expect_err("ragged X");
    assert!(matches!(err, LoraError::ShapeMismatch { what: "x", .. }), "{err:?}");
}

#[test]
fn bad_values_are_named() {
    let Some(dev) = device::device() else { return };
    let mut bufs = buffers(&dev);
    assert!(matches!(
        forward_error(&dev, &mut bufs, R, f32::NAN, N, K),
        LoraError::InvalidArgument { what: "scale", .. }
    ));
    assert!(matches!(forward_error(&dev, &mut bufs, 0, 1.0, N, K), LoraError::InvalidArgument { what: "rank", .. }));
}

#[test]
fn misalignment_is_refused() {
    let Some(dev) = device::device() else { return };
    let s = &dev.stream;
    // K = 12 halves: rows are not whole 16-byte chunks.
    let k = 12;
    let x = upload(s, &random::<f16>(1, M * k));
    let w = upload(s, &random::<f16>(2, N * k));
    let a = upload(s, &random::<f16>(3, R * k));
    let b = upload(s, &random::<f16>(4, N * R));
    let mut y = poisoned::<f16>(s, M * N);
    let linear = Linear { weight: w.as_view(), bias: None, n: N, k };
    let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: R, scale: 1.0 };
    let mut out = ForwardOutput { y: y.as_view_mut(), p: None };
    let err = dev.kernels.forward(s, &x.as_view(), &linear, &adapter, None, &mut out).expect_err("K = 12");
    assert!(matches!(err, LoraError::Misaligned { what: "k", value: 12, multiple_of: 8 }), "{err:?}");

    // X starting one element into an allocation: not 16-byte aligned.
    let bufs = buffers(&dev);
    let x_big = upload(s, &random::<f16>(9, M * K + 1));
    let linear = Linear { weight: bufs.w.as_view(), bias: None, n: N, k: K };
    let adapter = Adapter { a: bufs.a.as_view(), b: bufs.b.as_view(), rank: R, scale: 1.0 };
    let mut out = ForwardOutput { y: y.slice_mut(..), p: None };
    let err = dev.kernels.forward(s, &x_big.slice(1..), &linear, &adapter, None, &mut out).expect_err("offset X");
    assert!(matches!(err, LoraError::MisalignedAddress { what: "x", alignment: 16, .. }), "{err:?}");
}

#[test]
fn output_aliasing_an_input_is_refused() {
    let Some(dev) = device::device() else { return };
    let s = &dev.stream;
    let bufs = buffers(&dev);
    // A second handle on W0's memory, used as Y: only unsafe code can make one.
    let (w_address, w_len) = {
        let (address, _guard) = bufs.w.device_ptr(s);
        (address, bufs.w.len())
    };
    // SAFETY: the address and length are W0's own allocation; the handle is
    // leaked below, so the memory is freed once, by `bufs.w`.
    let mut alias: CudaSlice<f16> = unsafe { s.upgrade_device_ptr(w_address, w_len) };
    let linear = Linear { weight: bufs.w.as_view(), bias: None, n: N, k: K };
    let adapter = Adapter { a: bufs.a.as_view(), b: bufs.b.as_view(), rank: R, scale: 1.0 };
    let mut out = ForwardOutput { y: alias.slice_mut(..M * N), p: None };
    let err = dev.kernels.forward(s, &bufs.x.as_view(), &linear, &adapter, None, &mut out).expect_err("Y aliases W0");
    alias.leak();
    assert!(matches!(err, LoraError::Aliasing { output: "y", input: "weight" }), "{err:?}");
}

#[test]
fn buffers_of_another_context_are_refused() {
    let Some(dev) = device::device() else { return };
    let mut bufs = buffers(&dev);
    // A context of its own (not a second handle on the primary context,
    // which is the same context).
    let other = CudaContext::new_non_primary(0, 0).expect("a second context");
    let other_stream = other.default_stream();
    let mut y_elsewhere = poisoned::<f16>(&other_stream, M * N);
    let linear = Linear { weight: bufs.w.as_view(), bias: None, n: N, k: K };
    let adapter = Adapter { a: bufs.a.as_view(), b: bufs.b.as_view(), rank: R, scale: 1.0 };
    let mut out = ForwardOutput { y: y_elsewhere.as_view_mut(), p: None };
    let err = dev
        .kernels
        .forward(&dev.stream, &bufs.x.as_view(), &linear, &adapter, None, &mut out)
        .expect_err("Y elsewhere");
    assert!(matches!(err, LoraError::ContextMismatch { what: "y" }), "{err:?}");
    let mut out = ForwardOutput { y: bufs.y.as_view_mut(), p: None };
    let err = dev
        .kernels
        .forward(&other_stream, &bufs.x.as_view(), &linear, &adapter, None, &mut out)
        .expect_err("stream elsewhere");
    assert!(matches!(err, LoraError::ContextMismatch { what: "stream" }), "{err:?}");
}

#[test]
fn bad_adapter_stacks_are_refused() {
    let Some(dev) = device::device() else { return };
    let s = &dev.stream;
    let (l, r_max) = (2, 8);
    let x = upload(s, &random::<f16>(1, M * K));
    let w = upload(s, &random::<f16>(2, N * K));
    let a = upload(s, &random::<f16>(3, l * r_max * K));
    let b = upload(s, &random::<f16>(4, l * N * r_max));
    let index = upload(s, &[0i32; M]);
    let mut status = AdapterStatus::new(s).expect("status");
    let mut y = poisoned::<f16>(s, M * N);
    let linear = Linear { weight: w.as_view(), bias: None, n: N, k: K };
    for (ranks, scales, what) in [
        (vec![8usize, 9], vec![1.0f32, 1.0], "ranks"),
        (vec![8, 0], vec![1.0, 1.0], "ranks"),
        (vec![8, 4], vec![1.0], "scales"),
        (vec![8, 4], vec![1.0, f32::INFINITY], "scales"),
    ] {
        let stack = AdapterStack { a: a.as_view(), b: b.as_view(), r_max, ranks: &ranks, scales: &scales };
        let mut rows = RowAdapters { index: index.as_view(), status: &mut status };
        let mut out = ForwardOutput { y: y.as_view_mut(), p: None };
        let err = dev
            .kernels
            .forward_multi(s, &x.as_view(), &linear, &stack, &mut rows, None, &mut out)
            .expect_err("bad stack");
        let named = match &err {
            LoraError::InvalidArgument { what, .. } | LoraError::ShapeMismatch { what, .. } => *what,
            _ => "",
        };
        assert_eq!(named, what, "{err:?}");
    }
    // Index buffer of the wrong length.
    let short_index = upload(s, &[0i32; M - 1]);
    let ranks = [8usize, 4];
    let scales = [1.0f32, 1.0];
    let stack = AdapterStack { a: a.as_view(), b: b.as_view(), r_max, ranks: &ranks, scales: &scales };
    let mut rows = RowAdapters { index: short_index.as_view(), status: &mut status };
    let mut out = ForwardOutput { y: y.as_view_mut(), p: None };
    let err = dev
        .kernels
        .forward_multi(s, &x.as_view(), &linear, &stack, &mut rows, None, &mut out)
        .expect_err("short index");
    assert!(
        matches!(err, LoraError::RowsDisagree { first: "x", first_rows: M, second: "index", second_rows } if second_rows == M - 1),
        "{err:?}"
    );
}
