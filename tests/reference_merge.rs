//! Merge / unmerge reference: one rounding, separate output, safe mode.

mod common;

use common::{assert_rel_close, random_tensor, rng};
use fused_lora::reference::{merge, merge_in_place, to_f64s, MergeDirection, MergeLayer, MergeLayerMut, Precision};
use fused_lora::LoraError;
use half::f16;

struct Layer<E> {
    w: Vec<E>,
    a: Vec<E>,
    b: Vec<E>,
    scale: f64,
    n: usize,
    k: usize,
    r: usize,
}

fn layers<E: fused_lora::reference::RefElem>(seed: u64) -> Vec<Layer<E>> {
    let mut g = rng(seed);
    [(5usize, 7usize, 2usize, 0.5f64), (3, 4, 1, 2.0), (8, 3, 3, -1.0)]
        .into_iter()
        .map(|(n, k, r, scale)| Layer {
            w: random_tensor(&mut g, n * k),
            a: random_tensor(&mut g, r * k),
            b: random_tensor(&mut g, n * r),
            scale,
            n,
            k,
            r,
        })
        .collect()
}

fn views<E>(layers: &[Layer<E>]) -> Vec<MergeLayer<'_, E>> {
    layers.iter().map(|l| MergeLayer { w: &l.w, a: &l.a, b: &l.b, scale: l.scale, n: l.n, k: l.k, r: l.r }).collect()
}

#[test]
fn merge_adds_and_unmerge_subtracts_s_b_a() {
    let layers = layers::<f64>(1);
    for (direction, sign) in [(MergeDirection::Merge, 1.0), (MergeDirection::Unmerge, -1.0)] {
        let merged = merge(&views(&layers), direction, false, Precision::Exact).unwrap();
        for (layer, out) in layers.iter().zip(&merged) {
            let expected: Vec<f64> = (0..layer.n * layer.k)
                .map(|i| {
                    let (row, col) = (i / layer.k, i % layer.k);
                    let ba: f64 = (0..layer.r).map(|j| layer.b[row * layer.r + j] * layer.a[j * layer.k + col]).sum();
                    layer.w[i] + sign * layer.scale * ba
                })
                .collect();
            assert_rel_close("W'", out, &expected, 1e-15);
        }
    }
}

#[test]
fn in_place_merge_rounds_once_and_equals_the_separate_output() {
    let mut layers = layers::<f16>(2);
    let separate = merge(&views(&layers), MergeDirection::Merge, true, Precision::Exact).unwrap();
    let mut targets: Vec<MergeLayerMut<'_, f16>> = layers
        .iter_mut()
        .map(|l| MergeLayerMut { w: &mut l.w, a: &l.a, b: &l.b, scale: l.scale, n: l.n, k: l.k, r: l.r })
        .collect();
    merge_in_place(&mut targets, MergeDirection::Merge, true).unwrap();
    for (layer, out) in layers.iter().zip(&separate) {
        let rounded: Vec<f16> = out.iter().map(|&v| f16::from_f32(v as f32)).collect();
        assert_eq!(layer.w, rounded);
    }
}

#[test]
fn unmerge_after_merge_is_close_but_not_exact_in_f16() {
    let original = layers::<f16>(3);
    let mut layers = layers::<f16>(3);
    for direction in [MergeDirection::Merge, MergeDirection::Unmerge] {
        let mut targets: Vec<MergeLayerMut<'_, f16>> = layers
            .iter_mut()
            .map(|l| MergeLayerMut { w: &mut l.w, a: &l.a, b: &l.b, scale: l.scale, n: l.n, k: l.k, r: l.r })
            .collect();
        merge_in_place(&mut targets, direction, false).unwrap();
    }
    let mut any_differs = false;
    for (back, orig) in layers.iter().zip(&original) {
        // Two roundings of magnitude ≤ ~4: within a few f16 ulps.
        assert_rel_close("W after unmerge", &to_f64s(&back.w), &to_f64s(&orig.w), 8.0 * 4.9e-4);
        any_differs |= back.w != orig.w;
    }
    assert!(any_differs, "f16 unmerge(merge(W)) is expected to lose bits somewhere");
}

#[test]
fn safe_mode_refuses_non_finite_results_and_writes_nothing() {
    let mut layers = layers::<f16>(4);
    // Layer 1 (r = 1, s = 2): 60000 + 2·100·100 overflows f16 (max 65504).
    layers[1].w[0] = f16::from_f32(60000.0);
    layers[1].a.fill(f16::from_f32(100.0));
    layers[1].b.fill(f16::from_f32(100.0));
    let before: Vec<Vec<f16>> = layers.iter().map(|l| l.w.clone()).collect();
    match merge(&views(&layers), MergeDirection::Merge, true, Precision::Exact) {
        Err(LoraError::NonFinite { layer: 1, .. }) => {}
        other => panic!("expected NonFinite in layer 1, got {other:?}"),
    }
    let mut targets: Vec<MergeLayerMut<'_, f16>> = layers
        .iter_mut()
        .map(|l| MergeLayerMut { w: &mut l.w, a: &l.a, b: &l.b, scale: l.scale, n: l.n, k: l.k, r: l.r })
        .collect();
    assert!(matches!(
        merge_in_place(&mut targets, MergeDirection::Merge, true),
        Err(LoraError::NonFinite { layer: 1, .. })
    ));
    let after: Vec<Vec<f16>> = layers.iter().map(|l| l.w.clone()).collect();
    assert_eq!(before, after, "safe mode must not write any layer");
    // Without safe mode the overflow goes through as Inf.
    let merged = merge(&views(&layers), MergeDirection::Merge, false, Precision::Naive).unwrap();
    assert!(merged[1].iter().any(|v| v.is_infinite()));
}

#[test]
fn merge_shape_errors_name_the_buffer() {
    let layers = layers::<f32>(5);
    let mut bad = views(&layers);
    bad[2].r = 4;
    assert!(matches!(
        merge(&bad, MergeDirection::Merge, false, Precision::Exact),
        Err(LoraError::BufferTooSmall { what: "A", .. })
    ));
}
