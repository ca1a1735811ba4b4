//! The constructors that make the API hard to misuse: `Adapter::new` from an
//! `AdapterConfig`, `PackedAdapters` from adapters of different ranks, and
//! one meaning of P (the shrink writes the P the forward keeps).

mod device;
mod forward_support;

use fused_lora::{
    Adapter, AdapterConfig, AdapterStatus, ForwardOutput, Linear, LoraError, PackedAdapters, RowAdapters, Scaling,
};
use half::bf16;

use forward_support::{download, poisoned, random, upload};

#[test]
fn an_adapter_takes_rank_and_scale_from_its_config() {
    let Some(dev) = device::device() else { return };
    let s = &dev.stream;
    let (k, n) = (16, 24);
    let config = AdapterConfig::new(4, 8.0, Scaling::AlphaOverSqrtRank).expect("config");
    let a = upload(s, &random::<bf16>(1, 4 * k));
    let b = upload(s, &random::<bf16>(2, n * 4));
    let adapter = Adapter::new(&config, a.as_view(), b.as_view()).expect("adapter");
    assert_eq!((adapter.rank, adapter.scale), (4, 4.0));
    // A one element short is not `[4, K]` for any K: named, in A's layout.
    let err = Adapter::new(&config, a.slice(1..), b.as_view()).err().expect("short A");
    assert!(
        matches!(&err, LoraError::ShapeMismatch { what: "a", expected, .. } if expected == &vec![4, 16]),
        "{err:?}"
    );
    let err = Adapter::new(&config, a.as_view(), b.slice(1..)).err().expect("short B");
    assert!(matches!(err, LoraError::ShapeMismatch { what: "b", .. }), "{err:?}");
}

#[test]
fn packing_lays_adapters_of_different_ranks_into_zero_padded_slots() {
    let Some(dev) = device::device() else { return };
    let s = &dev.stream;
    let (k, n) = (16, 5);
    let ranks = [3usize, 8, 1];
    let hosts: Vec<(Vec<bf16>, Vec<bf16>)> =
        ranks.iter().enumerate().map(|(l, &r)| (random(10 + l as u64, r * k), random(20 + l as u64, n * r))).collect();
    let device: Vec<_> = hosts.iter().map(|(a, b)| (upload(s, a), upload(s, b))).collect();
    let adapters: Vec<Adapter<'_, bf16>> = device
        .iter()
        .zip(ranks)
        .enumerate()
        .map(|(l, ((a, b), rank))| Adapter { a: a.as_view(), b: b.as_view(), rank, scale: 0.5 + l as f32 })
        .collect();
    let packed = PackedAdapters::pack(s, n, k, &adapters).expect("pack");
    let r_max = 8;
    assert_eq!((packed.num_adapters(), packed.r_max(), packed.n(), packed.k()), (3, r_max, n, k));
    assert_eq!(packed.ranks(), &ranks);
    assert_eq!(packed.scales(), &[0.5, 1.5, 2.5]);
    let (a_all, b_all) = (download(s, packed.a()), download(s, packed.b()));
    for (l, ((a, b), &r)) in hosts.iter().zip(&ranks).enumerate() {
        for row in 0..r_max {
            for col in 0..k {
                let want = if row < r { a[row * k + col] } else { bf16::ZERO };
                assert_eq!(a_all[(l * r_max + row) * k + col], want, "A_all[{l}, {row}, {col}]");
            }
        }
        for row in 0..n {
            for col in 0..r_max {
                let want = if col < r { b[row * r + col] } else { bf16::ZERO };
                assert_eq!(b_all[(l * n + row) * r_max + col], want, "B_all[{l}, {row}, {col}]");
            }
        }
    }

    // The packed stack drives forward_multi: row m with adapter l matches a
    // single-adapter forward with adapter l, bit for bit.
    let m = 4;
    let x = upload(s, &random::<bf16>(30, m * k));
    let w = upload(s, &random::<bf16>(31, n * k));
    let linear = Linear { weight: w.as_view(), bias: None, n, k };
    let index = upload(s, &[2i32, 0, -1, 1]);
    let mut status = AdapterStatus::new(s).expect("status");
    let mut y = poisoned::<bf16>(s, m * n);
    let stack = packed.stack();
    let mut rows = RowAdapters { index: index.as_view(), status: &mut status };
    let mut out = ForwardOutput { y: y.as_view_mut(), p: None };
    dev.kernels.forward_multi(s, &x.as_view(), &linear, &stack, &mut rows, None, &mut out).expect("forward_multi");
    status.check(s).expect("indices in range");
    let y_multi = download(s, &y);
    for (row, l) in [(0usize, 2usize), (1, 0), (3, 1)] {
        let mut y_one = poisoned::<bf16>(s, m * n);
        let mut out = ForwardOutput { y: y_one.as_view_mut(), p: None };
        dev.kernels.forward(s, &x.as_view(), &linear, &adapters[l], None, &mut out).expect("forward");
        let y_one = download(s, &y_one);
        assert_eq!(&y_multi[row * n..(row + 1) * n], &y_one[row * n..(row + 1) * n], "row {row}, adapter {l}");
    }
}

#[test]
fn packing_names_the_bad_adapter() {
    let Some(dev) = device::device() else { return };
    let s = &dev.stream;
    let (k, n) = (16, 5);
    let a0 = upload(s, &random::<bf16>(1, 2 * k));
    let b0 = upload(s, &random::<bf16>(2, n * 2));
    let a1 = upload(s, &random::<bf16>(3, 4 * k));
    let b1 = upload(s, &random::<bf16>(4, n * 4 - 1));
    let adapters = [
        Adapter { a: a0.as_view(), b: b0.as_view(), rank: 2, scale: 1.0 },
        Adapter { a: a1.as_view(), b: b1.as_view(), rank: 4, scale: 1.0 },
    ];
    let err = PackedAdapters::pack(s, n, k, &adapters).err().expect("adapter 1's B is short");
    match err {
        LoraError::InAdapter { adapter: 1, error } => {
            assert!(matches!(*error, LoraError::ShapeMismatch { what: "b", .. }), "{error:?}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(PackedAdapters::<bf16>::pack(s, n, k, &[]), Err(LoraError::InvalidArgument { .. })));
}

/// P has one meaning: the shrink writes exactly the P the forward keeps
/// (unscaled X·Aᵀ), whatever the adapter's scale.
#[test]
fn the_shrink_writes_the_p_the_forward_keeps() {
    let Some(dev) = device::device() else { return };
    let s = &dev.stream;
    let (m, k, n, r) = (7, 32, 24, 5);
    let x = upload(s, &random::<bf16>(1, m * k));
    let w = upload(s, &random::<bf16>(2, n * k));
    let a = upload(s, &random::<bf16>(3, r * k));
    let b = upload(s, &random::<bf16>(4, n * r));
    let linear = Linear { weight: w.as_view(), bias: None, n, k };
    let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: r, scale: 3.0 };
    let (mut y, mut p_forward, mut p_shrink) = (poisoned::<bf16>(s, m * n), poisoned(s, m * r), poisoned(s, m * r));
    let mut out = ForwardOutput { y: y.as_view_mut(), p: Some(p_forward.as_view_mut()) };
    dev.kernels.forward(s, &x.as_view(), &linear, &adapter, None, &mut out).expect("forward");
    dev.kernels.shrink(s, &x.as_view(), &a.as_view(), r, &mut p_shrink.as_view_mut()).expect("shrink");
    let (p_forward, p_shrink): (Vec<bf16>, Vec<bf16>) = (download(s, &p_forward), download(s, &p_shrink));
    assert!(p_forward.iter().all(|v| v.is_finite()));
    assert_eq!(p_forward, p_shrink);
}
