//! Property tests over shapes: every small problem the reference accepts
//! gives finite outputs of the right length; mismatched inputs are errors.

use fused_lora::reference::{
    backward, backward_multi, forward, forward_multi, merge, shrink, to_elems, Adapter, Base, Dropout, MergeDirection,
    MergeLayer, MultiAdapters, Precision,
};
use fused_lora::{LoraError, LoraShape, MultiAdapterShape};
use half::f16;
use proptest::prelude::*;

/// Deterministic small values in [-1, 1] for a buffer of `len` elements.
fn filled(len: usize, salt: usize) -> Vec<f16> {
    (0..len).map(|i| f16::from_f32((((i * 7919 + salt * 104_729) % 2001) as f32 - 1000.0) / 1000.0)).collect()
}

fn shapes() -> impl Strategy<Value = LoraShape> {
    (1usize..6, 1usize..9, 1usize..7, 1usize..5).prop_map(|(m, k, n, r)| LoraShape { m, k, n, r })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn single_adapter_outputs_are_finite_and_sized(shape in shapes(), p in prop::sample::select(vec![0.0f32, 0.1, 0.5])) {
        let LoraShape { m, k, n, r } = shape;
        let (x, w0, bias, a, b, dy) = (filled(m * k, 1), filled(n * k, 2), filled(n, 3), filled(r * k, 4), filled(n * r, 5), filled(m * n, 6));
        let base = Base { x: &x, w0: &w0, bias: Some(&bias) };
        let adapter = Adapter { a: &a, b: &b, scale: 0.5 };
        let dropout = Dropout::new(p, 1, 2).unwrap();
        for precision in [Precision::Exact, Precision::Naive] {
            let fwd = forward(shape, &base, &adapter, Some(&dropout), precision).unwrap();
            prop_assert_eq!((fwd.y.len(), fwd.p.len()), (m * n, m * r));
            let grads = backward(shape, &base, &adapter, Some(&dropout), &dy, &to_elems::<f16>(&fwd.p), precision).unwrap();
            prop_assert_eq!((grads.g.len(), grads.da.len(), grads.db.len(), grads.dx.len()), (m * r, r * k, n * r, m * k));
            let all = fwd.y.iter().chain(&fwd.p).chain(&grads.g).chain(&grads.da).chain(&grads.db).chain(&grads.dx);
            prop_assert!(all.into_iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn multi_adapter_outputs_are_finite_and_sized(
        shape in shapes(),
        num_adapters in 1usize..4,
        seed in any::<u64>(),
    ) {
        let LoraShape { m, k, n, r: r_max } = shape;
        let ranks: Vec<usize> = (0..num_adapters).map(|l| (seed as usize >> l) % (r_max + 1)).collect();
        let indices: Vec<i64> = (0..m).map(|row| ((seed >> (row % 60)) % (num_adapters as u64 + 1)) as i64 - 1).collect();
        let scales = vec![0.75; num_adapters];
        let mshape = MultiAdapterShape { m, k, n, num_adapters, r_max };
        let (x, w0) = (filled(m * k, 1), filled(n * k, 2));
        let (a_all, b_all, dy) = (filled(num_adapters * r_max * k, 3), filled(num_adapters * n * r_max, 4), filled(m * n, 5));
        let base = Base { x: &x, w0: &w0, bias: None };
        let adapters = MultiAdapters { a_all: &a_all, b_all: &b_all, ranks: &ranks, scales: &scales, indices: &indices };
        let fwd = forward_multi(mshape, &base, &adapters, None, Precision::Exact).unwrap();
        prop_assert_eq!((fwd.y.len(), fwd.p.len()), (m * n, m * r_max));
        let grads = backward_multi(mshape, &base, &adapters, None, &dy, &to_elems::<f16>(&fwd.p), Precision::Exact).unwrap();
        prop_assert_eq!(grads.da.len(), num_adapters * r_max * k);
        prop_assert_eq!(grads.db.len(), num_adapters * n * r_max);
        prop_assert_eq!((grads.g.len(), grads.dx.len()), (m * r_max, m * k));
        let all = fwd.y.iter().chain(&fwd.p).chain(&grads.g).chain(&grads.da).chain(&grads.db).chain(&grads.dx);
        prop_assert!(all.into_iter().all(|v| v.is_finite()));
    }

    #[test]
    fn mismatched_buffers_are_errors_not_panics(shape in shapes(), which in 0usize..5, delta in prop::sample::select(vec![-1isize, 1])) {
        let LoraShape { m, k, n, r } = shape;
        let mut lens = [m * k, n * k, r * k, n * r, m * n];
        lens[which] = (lens[which] as isize + delta) as usize;
        let (x, w0, a, b, dy) = (filled(lens[0], 1), filled(lens[1], 2), filled(lens[2], 3), filled(lens[3], 4), filled(lens[4], 5));
        let base = Base { x: &x, w0: &w0, bias: None };
        let adapter = Adapter { a: &a, b: &b, scale: 1.0 };
        let p = filled(m * r, 6);
        let result = backward(shape, &base, &adapter, None, &dy, &p, Precision::Exact);
        let is_shape_error = matches!(result, Err(LoraError::BufferTooSmall { .. } | LoraError::ShapeMismatch { .. }));
        prop_assert!(is_shape_error, "{:?}", result.map(|_| ()));
        if which < 4 {
            let result = forward(shape, &base, &adapter, None, Precision::Naive);
            let is_shape_error = matches!(result, Err(LoraError::BufferTooSmall { .. } | LoraError::ShapeMismatch { .. }));
            prop_assert!(is_shape_error);
        }
        if which == 0 || which == 2 {
            prop_assert!(shrink(shape, &x, &a, 1.0, None, Precision::Exact).is_err());
        }
        if which == 2 || which == 3 {
            let layer = MergeLayer { w: &w0, a: &a, b: &b, scale: 1.0, n, k, r };
            prop_assert!(merge(&[layer], MergeDirection::Merge, true, Precision::Exact).is_err());
        }
    }
}
