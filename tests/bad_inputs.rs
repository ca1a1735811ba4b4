//! Bad inputs that were once answered wrongly: an overlap missed, a range
//! that contradicts itself, a valid buffer refused, a value that overflows
//! f32 accepted, a raw driver error, an empty matrix returned, an error that
//! blames the wrong operand. Each test asserts the right answer.

mod device;
mod forward_support;

use cudarc::driver::{CudaContext, CudaSlice, DevicePtr};
use fused_lora::{
    AdamWConfig, AdamWState, Adapter, AdapterStack, AdapterStatus, BackwardInputs, BackwardOutput, Distribution,
    ForwardOutput, GradMode, InitScheme, Linear, LoraError, RowAdapters, SgdConfig, SgdState,
};
use half::{bf16, f16};

use forward_support::{download, poisoned, random, upload};

const M: usize = 5;
const K: usize = 16;
const N: usize = 24;

/// The `what` an `InvalidArgument` names, or a panic showing the error.
#[track_caller]
fn invalid_what<T>(result: Result<T, LoraError>) -> &'static str {
    match result {
        Err(LoraError::InvalidArgument { what, .. }) => what,
        Err(other) => panic!("expected InvalidArgument, got {other:?}"),
        Ok(_) => panic!("expected InvalidArgument, the call was accepted"),
    }
}

/// f16/bf16 forward_multi: the index buffer is `[m]` i32, 4 bytes a row, not
/// 2 like the data. An output starting inside its last half must be refused
/// (sized in halves, the index ended before it).
fn output_overlapping_index_is_refused<T: fused_lora::LoraDType>() {
    let Some(dev) = device::device() else { return };
    let s = &dev.stream;
    let (l, r_max) = (2, 4);
    let x = upload(s, &random::<T>(1, M * K));
    let w = upload(s, &random::<T>(2, N * K));
    let a = upload(s, &random::<T>(3, l * r_max * K));
    let b = upload(s, &random::<T>(4, l * N * r_max));
    // One allocation: M indices (20 bytes), then room for Y as halves.
    let index_then_room = upload(s, &vec![0i32; M + M * N]);
    let (index_address, room) = {
        let (address, _guard) = index_then_room.device_ptr(s);
        (address, index_then_room.len())
    };
    // SAFETY: a second handle on the same allocation (leaked below, so freed
    // once), read as halves: Y starts 2·M bytes in, inside the M i32 indices.
    let mut alias: CudaSlice<T> = unsafe { s.upgrade_device_ptr(index_address, room * 2) };
    let mut status = AdapterStatus::new(s).expect("status");
    let linear = Linear { weight: w.as_view(), bias: None, n: N, k: K };
    let (ranks, scales) = ([4usize, 2], [1.0f32, 0.5]);
    let stack = AdapterStack { a: a.as_view(), b: b.as_view(), r_max, ranks: &ranks, scales: &scales };
    let mut rows = RowAdapters { index: index_then_room.slice(..M), status: &mut status };
    let mut out = ForwardOutput { y: alias.slice_mut(M..M + M * N), p: None };
    let result = dev.kernels.forward_multi(s, &x.as_view(), &linear, &stack, &mut rows, None, &mut out);
    alias.leak();
    assert!(matches!(result, Err(LoraError::Aliasing { output: "y", input: "index" })), "{result:?}");
}

#[test]
fn forward_multi_f16_output_overlapping_the_index_is_refused() {
    output_overlapping_index_is_refused::<f16>();
}

#[test]
fn forward_multi_bf16_output_overlapping_the_index_is_refused() {
    output_overlapping_index_is_refused::<bf16>();
}

/// One status shared by stacks of different L would report an index against
/// the wrong L ("index 2 … out of range [-1, 3)"): the second stack is
/// refused until a reset, and the report names the L the index broke.
#[test]
fn a_status_reports_against_one_number_of_adapters() {
    let Some(dev) = device::device() else { return };
    let s = &dev.stream;
    let r_max = 4;
    let x = upload(s, &random::<f16>(1, M * K));
    let w = upload(s, &random::<f16>(2, N * K));
    let a = upload(s, &random::<f16>(3, 3 * r_max * K));
    let b = upload(s, &random::<f16>(4, 3 * N * r_max));
    let mut y = poisoned::<f16>(s, M * N);
    let linear = Linear { weight: w.as_view(), bias: None, n: N, k: K };
    let mut status = AdapterStatus::new(s).expect("status");
    let run = |l: usize, index: &[i32], status: &mut AdapterStatus, y: &mut CudaSlice<f16>| {
        let (ranks, scales) = (vec![r_max; l], vec![1.0f32; l]);
        let stack = AdapterStack {
            a: a.slice(..l * r_max * K),
            b: b.slice(..l * N * r_max),
            r_max,
            ranks: &ranks,
            scales: &scales,
        };
        let index = upload(s, index);
        let mut rows = RowAdapters { index: index.as_view(), status };
        let mut out = ForwardOutput { y: y.as_view_mut(), p: None };
        dev.kernels.forward_multi(s, &x.as_view(), &linear, &stack, &mut rows, None, &mut out)
    };
    // L = 2, row 1 uses adapter 2: out of range.
    run(2, &[0, 2, 1, -1, 0], &mut status, &mut y).expect("L = 2");
    assert_eq!(status.num_adapters(), Some(2));
    // The same status with L = 3 (where 2 would be valid) is refused.
    assert_eq!(invalid_what(run(3, &[0, 1, 2, -1, 0], &mut status, &mut y)), "status");
    let report = status.check(s);
    assert!(
        matches!(report, Err(LoraError::AdapterIndexOutOfRange { row: 1, index: 2, num_adapters: 2 })),
        "{report:?}"
    );
    // After a reset, L = 3 is accepted and its (valid) indices report nothing.
    status.reset(s).expect("reset");
    run(3, &[0, 1, 2, -1, 0], &mut status, &mut y).expect("L = 3 after reset");
    status.check(s).expect("no bad index");
    assert_eq!(status.num_adapters(), Some(3));
}

/// `CudaContext::new(0)` twice gives two handles on the same primary
/// context: buffers made through either are the same context's, and the
/// optimizer steps and fills accept them (as forward, backward and merge do).
#[test]
fn a_second_handle_on_the_primary_context_is_the_same_context() {
    let Some(dev) = device::device() else { return };
    let other_handle = CudaContext::new(0).expect("second handle");
    assert!(!std::sync::Arc::ptr_eq(&other_handle, &dev.ctx), "a distinct handle");
    let s2 = other_handle.default_stream();
    let s = &dev.stream;
    let len = 64;

    let mut master = upload(&s2, &vec![1.0f32; len]);
    let mut working = poisoned::<f32>(&s2, len);
    let grad = upload(&s2, &vec![0.5f32; len]);
    let mut sgd = SgdState::new(&s2, len).expect("sgd state");
    dev.kernels
        .sgd_step(s, &SgdConfig::with_momentum(0.1, 0.9), &mut master, &mut working, &grad, &mut sgd)
        .expect("sgd");
    // The first momentum step: b = g, w ← w − lr·b.
    let want = 1.0f32 - 0.1f32 * 0.5f32;
    assert!(download(s, &working).iter().all(|&w| w == want), "sgd result");

    let mut adam = AdamWState::new(&s2, len).expect("adamw state");
    dev.kernels.adamw_step(s, &AdamWConfig::new(1e-3), &mut master, &mut working, &grad, &mut adam).expect("adamw");
    assert_eq!(adam.step(), 1);

    let (r, n) = (4, 8);
    let mut a = poisoned::<f32>(&s2, r * K);
    let mut b = poisoned::<f32>(&s2, n * r);
    dev.kernels.init_adapter(s, InitScheme::PeftDefault, r, K, n, 7, 0, &mut a, &mut b).expect("init_adapter");
    let (want_a, want_b) = fused_lora::reference::init_adapter::<f32>(InitScheme::PeftDefault, r, K, n, 7, 0).unwrap();
    assert_eq!(download(s, &a), want_a);
    assert_eq!(download(s, &b), want_b);

    let mut out = poisoned::<f32>(&s2, len);
    dev.kernels.fill_uniform(s, &mut out, 0.5, 1, 2).expect("fill_uniform");
    dev.kernels.fill_normal(s, &mut out, 0.5, 1, 2).expect("fill_normal");
    dev.kernels.fill(s, &mut out, Distribution::Zero, 1, 2).expect("fill zero");
    assert!(download(s, &out).iter().all(|&v| v == 0.0));
}

/// Values finite in f64 but not in f32 (the kernels' precision) are refused,
/// naming the value; nothing is written.
#[test]
fn hyperparameters_beyond_f32_are_refused() {
    let Some(dev) = device::device() else { return };
    let s = &dev.stream;
    let len = 16;
    let mut master = upload(s, &vec![1.0f32; len]);
    let mut working = upload(s, &vec![f16::ONE; len]);
    let grad = upload(s, &vec![f16::ONE; len]);
    let mut sgd = SgdState::new(s, len).expect("sgd state");
    let mut adam = AdamWState::new(s, len).expect("adamw state");
    let k = &dev.kernels;

    let lr = SgdConfig::new(1e39);
    assert_eq!(invalid_what(k.sgd_step(s, &lr, &mut master, &mut working, &grad, &mut sgd)), "lr");
    let decay = SgdConfig { weight_decay: 1e42, ..SgdConfig::new(0.1) };
    assert_eq!(invalid_what(k.sgd_step(s, &decay, &mut master, &mut working, &grad, &mut sgd)), "weight_decay");
    let decay = AdamWConfig { weight_decay: 1e42, ..AdamWConfig::new(1e-3) };
    assert_eq!(invalid_what(k.adamw_step(s, &decay, &mut master, &mut working, &grad, &mut adam)), "weight_decay");
    // Each finite in f32, their product not: the decay factor 1 − lr·wd.
    let product = AdamWConfig { lr: 1e20, weight_decay: 1e20, ..AdamWConfig::new(1e-3) };
    assert_eq!(
        invalid_what(k.adamw_step(s, &product, &mut master, &mut working, &grad, &mut adam)),
        "1 - lr * weight_decay"
    );
    // lr / (1 − β1) at the first step.
    let step = AdamWConfig { lr: 3e38, weight_decay: 0.0, ..AdamWConfig::new(1e-3) };
    assert_eq!(invalid_what(k.adamw_step(s, &step, &mut master, &mut working, &grad, &mut adam)), "lr / (1 - beta1^t)");
    assert_eq!(adam.step(), 0, "a refused step does not count");
    assert!(download(s, &master).iter().all(|&w| w == 1.0), "nothing written");

    let mut out = poisoned::<f32>(s, len);
    assert_eq!(invalid_what(k.fill_uniform(s, &mut out, 3.5e38, 1, 0)), "bound");
    assert_eq!(invalid_what(k.fill_normal(s, &mut out, 1e39, 1, 0)), "std");
    assert_eq!(invalid_what(k.fill(s, &mut out, Distribution::Uniform { bound: 3.5e38 }, 1, 0)), "bound");
    // The largest f32 bound is fine, and every element stays finite.
    k.fill_uniform(s, &mut out, f32::MAX as f64, 1, 0).expect("f32::MAX bound");
    assert!(download(s, &out).iter().all(|v| v.is_finite()));
    assert_eq!(
        invalid_what(fused_lora::reference::init_matrix::<f32>(Distribution::Uniform { bound: 3.5e38 }, 4, 1, 0)),
        "bound"
    );
}

/// A and B of `init_adapter` overlapping: refused before anything is written.
#[test]
fn init_adapter_refuses_overlapping_a_and_b() {
    let Some(dev) = device::device() else { return };
    let s = &dev.stream;
    let (r, n) = (4, 8);
    let mut both = poisoned::<f16>(s, r * K + n * r);
    let (address, len) = {
        let (address, _guard) = both.device_ptr(s);
        (address, both.len())
    };
    // SAFETY: a second handle on `both`'s allocation, leaked below so it is freed once.
    let mut alias: CudaSlice<f16> = unsafe { s.upgrade_device_ptr(address, len) };
    let mut a = both.slice_mut(..r * K);
    // B starts 4 elements before A ends.
    let mut b = alias.slice_mut(r * K - 4..r * K - 4 + n * r);
    let result = dev.kernels.init_adapter(s, InitScheme::PeftDefault, r, K, n, 3, 0, &mut a, &mut b);
    alias.leak();
    assert!(matches!(result, Err(LoraError::Aliasing { output: "a", input: "b" })), "{result:?}");
    assert!(download(s, &both).iter().all(|v| v.is_nan()), "nothing written");
}

/// Optimizer state for an empty tensor: a clear error, not the driver's.
#[test]
fn empty_optimizer_state_is_an_invalid_argument() {
    let Some(dev) = device::device() else { return };
    assert_eq!(invalid_what(SgdState::new(&dev.stream, 0)), "len");
    assert_eq!(invalid_what(AdamWState::new(&dev.stream, 0)), "len");
}

/// rank · K past `usize`: an error, never a wrapped (empty) A.
#[test]
fn reference_init_refuses_sizes_past_usize() {
    let huge = usize::MAX / 2 + 1;
    let result = fused_lora::reference::init_adapter::<f32>(InitScheme::PeftDefault, huge, 2, 0, 1, 0);
    assert_eq!(invalid_what(result), "A");
    let result = fused_lora::reference::init_adapter::<f32>(InitScheme::Reversed, 2, 1, huge, 1, 0);
    assert_eq!(invalid_what(result), "B");
}

/// X one row short, Y right: M is read from X, so the error must name both
/// (not blame Y alone); in the backward, X and dY.
#[test]
fn a_short_x_is_named_with_the_operand_it_disagrees_with() {
    let Some(dev) = device::device() else { return };
    let s = &dev.stream;
    let r = 4;
    let x = upload(s, &random::<f16>(1, (M - 1) * K));
    let w = upload(s, &random::<f16>(2, N * K));
    let a = upload(s, &random::<f16>(3, r * K));
    let b = upload(s, &random::<f16>(4, N * r));
    let mut y = poisoned::<f16>(s, M * N);
    let linear = Linear { weight: w.as_view(), bias: None, n: N, k: K };
    let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: r, scale: 1.0 };
    let mut out = ForwardOutput { y: y.as_view_mut(), p: None };
    let err = dev.kernels.forward(s, &x.as_view(), &linear, &adapter, None, &mut out).expect_err("short X");
    assert!(
        matches!(err, LoraError::RowsDisagree { first: "x", first_rows: 4, second: "y", second_rows: 5 }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "`x` holds 4 rows but `y` holds 5; operands that share M must agree");

    let dy = upload(s, &random::<f16>(5, M * N));
    let (mut da, mut db, mut dx) = (poisoned::<f16>(s, r * K), poisoned::<f16>(s, N * r), poisoned::<f16>(s, M * K));
    let mut grads = BackwardOutput {
        da: da.as_view_mut(),
        db: db.as_view_mut(),
        dx: dx.as_view_mut(),
        g: None,
        mode: GradMode::Overwrite,
    };
    let err = dev
        .kernels
        .backward(
            s,
            &BackwardInputs { dy: dy.as_view(), x: x.as_view(), p: None, dropout: None },
            &linear,
            &adapter,
            &mut grads,
        )
        .expect_err("short X");
    assert!(
        matches!(err, LoraError::RowsDisagree { first: "x", first_rows: 4, second: "dy", second_rows: 5 }),
        "{err:?}"
    );
}

/// A `[r, K]` with K implied by its length: a ragged A is shown as `[r, K]`.
#[test]
fn a_ragged_a_is_shown_in_its_own_layout() {
    let Some(dev) = device::device() else { return };
    let s = &dev.stream;
    let r = 4;
    let x = upload(s, &random::<f16>(1, M * K));
    let a = upload(s, &random::<f16>(2, r * K - 1));
    let mut p = poisoned::<f16>(s, M * r);
    let err = dev.kernels.shrink(s, &x.as_view(), &a.as_view(), r, &mut p.as_view_mut()).expect_err("ragged A");
    match err {
        LoraError::ShapeMismatch { what: "a", expected, got } => {
            assert_eq!((expected, got), (vec![r, K], vec![r * K - 1]));
        }
        other => panic!("{other:?}"),
    }
}

/// `init_adapter` with A of another context names `a`, not `out`.
#[test]
fn init_adapter_names_the_operand_of_another_context() {
    let Some(dev) = device::device() else { return };
    let other = CudaContext::new_non_primary(0, 0).expect("a second context");
    let (r, n) = (4, 8);
    let mut a = poisoned::<f32>(&other.default_stream(), r * K);
    let mut b = poisoned::<f32>(&dev.stream, n * r);
    let err = dev.kernels.init_adapter(&dev.stream, InitScheme::PeftDefault, r, K, n, 1, 0, &mut a, &mut b);
    assert!(matches!(err, Err(LoraError::ContextMismatch { what: "a" })), "{err:?}");
}

/// A misaligned X: the error carries the device address as an address.
#[test]
fn a_misaligned_address_is_reported_as_an_address() {
    let Some(dev) = device::device() else { return };
    let s = &dev.stream;
    let r = 4;
    let x = upload(s, &random::<f16>(1, M * K + 1));
    let w = upload(s, &random::<f16>(2, N * K));
    let a = upload(s, &random::<f16>(3, r * K));
    let b = upload(s, &random::<f16>(4, N * r));
    let mut y = poisoned::<f16>(s, M * N);
    let x_address = {
        let (address, _guard) = x.device_ptr(s);
        address + 2
    };
    let linear = Linear { weight: w.as_view(), bias: None, n: N, k: K };
    let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: r, scale: 1.0 };
    let mut out = ForwardOutput { y: y.as_view_mut(), p: None };
    let err = dev.kernels.forward(s, &x.slice(1..), &linear, &adapter, None, &mut out).expect_err("offset X");
    match &err {
        LoraError::MisalignedAddress { what: "x", address, alignment: 16 } => assert_eq!(*address, x_address),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(&format!("{x_address:#x}")), "{err}");
}
