//! The merge/unmerge kernel against the CPU reference, on a device (the
//! emulator when the machine has no GPU), for every dtype.

mod common;
mod device;

use common::assert_close_2d;
use cudarc::driver::{CudaSlice, CudaStream};
use fused_lora::reference::{self, MergeDirection, Precision};
use fused_lora::{Adapter, Direction, FiniteCheck, LoraDType, LoraError, MergeIntoLayer, MergeLayer};
use half::{bf16, f16};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// Layer shapes `(n, k, r)` of one launch: a single element, tails on both tile
/// edges (the tile is 64 × 128), a rank chunk boundary (32) crossed, exact tiles.
const LAYERS: &[(usize, usize, usize)] = &[(1, 1, 1), (65, 130, 33), (64, 128, 32), (3, 257, 7), (113, 72, 40)];

/// A layer's host data.
struct HostLayer<T> {
    w: Vec<T>,
    a: Vec<T>,
    b: Vec<T>,
    n: usize,
    k: usize,
    r: usize,
    scale: f32,
}

fn random_vec<T: LoraDType>(rng: &mut ChaCha8Rng, len: usize, bound: f32) -> Vec<T> {
    (0..len).map(|_| T::from_f32(rng.random_range(-bound..bound))).collect()
}

fn host_layers<T: LoraDType>(seed: u64, shapes: &[(usize, usize, usize)]) -> Vec<HostLayer<T>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    shapes
        .iter()
        .map(|&(n, k, r)| HostLayer {
            w: random_vec(&mut rng, n * k, 1.0),
            a: random_vec(&mut rng, r * k, 1.0),
            b: random_vec(&mut rng, n * r, 1.0),
            n,
            k,
            r,
            scale: rng.random_range(0.25f32..4.0),
        })
        .collect()
}

fn reference_merge<T: LoraDType>(
    layers: &[HostLayer<T>],
    direction: MergeDirection,
    precision: Precision,
) -> Vec<Vec<f64>> {
    let views: Vec<reference::MergeLayer<'_, T>> = layers
        .iter()
        .map(|l| reference::MergeLayer { w: &l.w, a: &l.a, b: &l.b, scale: l.scale as f64, n: l.n, k: l.k, r: l.r })
        .collect();
    reference::merge(&views, direction, false, precision).expect("valid reference input")
}

/// Device copies of a layer's buffers.
struct DeviceLayer<T> {
    w: CudaSlice<T>,
    a: CudaSlice<T>,
    b: CudaSlice<T>,
}

fn upload<T: LoraDType>(stream: &Arc<CudaStream>, layers: &[HostLayer<T>]) -> Vec<DeviceLayer<T>> {
    layers
        .iter()
        .map(|l| DeviceLayer {
            w: stream.clone_htod(&l.w).unwrap(),
            a: stream.clone_htod(&l.a).unwrap(),
            b: stream.clone_htod(&l.b).unwrap(),
        })
        .collect()
}

fn to_f64<T: LoraDType>(values: &[T]) -> Vec<f64> {
    reference::to_f64s(values)
}

/// Runs the in-place merge of every layer in one launch, returns the weights.
fn merge_in_place_on_device<T: LoraDType>(
    dev: &device::Device,
    host: &[HostLayer<T>],
    buffers: &mut [DeviceLayer<T>],
    direction: Direction,
    check: FiniteCheck,
) -> Result<Vec<Vec<T>>, LoraError> {
    let mut layers: Vec<MergeLayer<'_, T>> = buffers
        .iter_mut()
        .zip(host)
        .map(|(d, h)| MergeLayer {
            weight: d.w.as_view_mut(),
            n: h.n,
            k: h.k,
            adapter: Adapter { a: d.a.as_view(), b: d.b.as_view(), rank: h.r, scale: h.scale },
        })
        .collect();
    let result = dev.kernels.merge(&dev.stream, &mut layers, direction, check);
    drop(layers);
    result?;
    Ok(buffers.iter().map(|d| dev.stream.clone_dtoh(&d.w).unwrap()).collect())
}

/// The tolerance floor: results are O(r) sums of O(1) products.
fn floor<T: LoraDType>() -> f64 {
    T::UNIT_ROUNDOFF * 1e-3
}

fn check_merge_matches_reference<T: LoraDType>(direction: Direction) {
    let Some(dev) = device::device() else { return };
    let host = host_layers::<T>(7, LAYERS);
    let mut buffers = upload(&dev.stream, &host);
    let got = merge_in_place_on_device(&dev, &host, &mut buffers, direction, FiniteCheck::Unchecked).unwrap();
    let ref_direction = match direction {
        Direction::Merge => MergeDirection::Merge,
        Direction::Unmerge => MergeDirection::Unmerge,
    };
    let exact = reference_merge(&host, ref_direction, Precision::Exact);
    let naive = reference_merge(&host, ref_direction, Precision::Naive);
    for (i, layer) in got.iter().enumerate() {
        assert_close_2d::<T>(&format!("layer {i}"), host[i].k, &to_f64(layer), &exact[i], &naive[i], floor::<T>());
    }
}

fn check_merge_into_leaves_weight<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let host = host_layers::<T>(11, LAYERS);
    let mut buffers = upload(&dev.stream, &host);
    // Poisoned outputs: an element the kernel does not write stays NaN and fails.
    let mut outs: Vec<CudaSlice<T>> =
        host.iter().map(|l| dev.stream.clone_htod(&vec![T::nan(); l.n * l.k]).unwrap()).collect();
    {
        let mut layers: Vec<MergeIntoLayer<'_, T>> = buffers
            .iter_mut()
            .zip(outs.iter_mut())
            .zip(&host)
            .map(|((d, out), h)| MergeIntoLayer {
                weight: d.w.as_view(),
                out: out.as_view_mut(),
                n: h.n,
                k: h.k,
                adapter: Adapter { a: d.a.as_view(), b: d.b.as_view(), rank: h.r, scale: h.scale },
            })
            .collect();
        dev.kernels.merge_into(&dev.stream, &mut layers, Direction::Merge, FiniteCheck::RefuseNonFinite).unwrap();
    }
    let exact = reference_merge(&host, MergeDirection::Merge, Precision::Exact);
    let naive = reference_merge(&host, MergeDirection::Merge, Precision::Naive);
    for (i, (out, d)) in outs.iter().zip(&buffers).enumerate() {
        let got: Vec<T> = dev.stream.clone_dtoh(out).unwrap();
        assert_close_2d::<T>(
            &format!("out of layer {i}"),
            host[i].k,
            &to_f64(&got),
            &exact[i],
            &naive[i],
            floor::<T>(),
        );
        let weight: Vec<T> = dev.stream.clone_dtoh(&d.w).unwrap();
        assert!(weight == host[i].w, "merge_into modified the weight of layer {i}");
    }
}

/// Merge then unmerge equals the reference's unmerge of the merged weights
/// (not the original weights: in f16/bf16 the round trip is not exact).
fn check_unmerge_after_merge<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let host = host_layers::<T>(13, LAYERS);
    let mut buffers = upload(&dev.stream, &host);
    let merged = merge_in_place_on_device(&dev, &host, &mut buffers, Direction::Merge, FiniteCheck::Unchecked).unwrap();
    let round_trip =
        merge_in_place_on_device(&dev, &host, &mut buffers, Direction::Unmerge, FiniteCheck::Unchecked).unwrap();
    let merged_host: Vec<HostLayer<T>> = host
        .iter()
        .zip(merged)
        .map(|(h, w)| HostLayer { w, a: h.a.clone(), b: h.b.clone(), n: h.n, k: h.k, r: h.r, scale: h.scale })
        .collect();
    let exact = reference_merge(&merged_host, MergeDirection::Unmerge, Precision::Exact);
    let naive = reference_merge(&merged_host, MergeDirection::Unmerge, Precision::Naive);
    for (i, layer) in round_trip.iter().enumerate() {
        assert_close_2d::<T>(
            &format!("unmerged layer {i}"),
            host[i].k,
            &to_f64(layer),
            &exact[i],
            &naive[i],
            floor::<T>(),
        );
    }
}

/// Two runs give bit-identical weights (no atomics, fixed accumulation order).
fn check_deterministic<T: LoraDType>() {
    let Some(dev) = device::device() else { return };
    let host = host_layers::<T>(17, LAYERS);
    let first = merge_in_place_on_device(
        &dev,
        &host,
        &mut upload(&dev.stream, &host),
        Direction::Merge,
        FiniteCheck::Unchecked,
    )
    .unwrap();
    let second = merge_in_place_on_device(
        &dev,
        &host,
        &mut upload(&dev.stream, &host),
        Direction::Merge,
        FiniteCheck::Unchecked,
    )
    .unwrap();
    for (i, (a, b)) in first.iter().zip(&second).enumerate() {
        let bits_equal = a.iter().zip(b).all(|(x, y)| x.to_f64().to_bits() == y.to_f64().to_bits());
        assert!(bits_equal, "layer {i}: two runs differ");
    }
}

/// A result that overflows `T` makes the checked mode refuse the whole call
/// and write nothing; the unchecked mode writes the infinity.
fn check_refuses_non_finite<T: LoraDType>(overflowing_weight: f32) {
    let Some(dev) = device::device() else { return };
    let mut host = host_layers::<T>(19, &[(5, 9, 2), (4, 6, 3)]);
    // Layer 1, element (2, 3): W near the type's maximum plus a large positive update.
    let l = &mut host[1];
    l.w[2 * l.k + 3] = T::from_f32(overflowing_weight);
    for j in 0..l.r {
        l.b[2 * l.r + j] = T::from_f32(1.0);
        l.a[j * l.k + 3] = T::from_f32(1.0);
    }
    l.scale = overflowing_weight;

    let mut buffers = upload(&dev.stream, &host);
    let err = merge_in_place_on_device(&dev, &host, &mut buffers, Direction::Merge, FiniteCheck::RefuseNonFinite)
        .unwrap_err();
    assert!(matches!(err, LoraError::NonFinite { op: "merge", layer: 1 }), "got {err:?}");
    for (i, (d, h)) in buffers.iter().zip(&host).enumerate() {
        let w: Vec<T> = dev.stream.clone_dtoh(&d.w).unwrap();
        assert!(w == h.w, "refused merge wrote layer {i}");
    }

    let written =
        merge_in_place_on_device(&dev, &host, &mut buffers, Direction::Merge, FiniteCheck::Unchecked).unwrap();
    let value = written[1][2 * host[1].k + 3].to_f64();
    assert!(value.is_infinite() && value > 0.0, "unchecked merge should write +Inf, wrote {value}");
}

macro_rules! merge_tests_for {
    ($module:ident, $t:ty, $overflow:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn merge_matches_reference() {
                check_merge_matches_reference::<$t>(Direction::Merge);
            }

            #[test]
            fn unmerge_matches_reference() {
                check_merge_matches_reference::<$t>(Direction::Unmerge);
            }

            #[test]
            fn merge_into_writes_out_and_leaves_weight() {
                check_merge_into_leaves_weight::<$t>();
            }

            #[test]
            fn unmerge_after_merge_matches_reference() {
                check_unmerge_after_merge::<$t>();
            }

            #[test]
            fn deterministic() {
                check_deterministic::<$t>();
            }

            #[test]
            fn refuses_non_finite() {
                check_refuses_non_finite::<$t>($overflow);
            }
        }
    };
}

merge_tests_for!(f32_weights, f32, 3.0e38);
merge_tests_for!(f16_weights, f16, 60000.0);
merge_tests_for!(bf16_weights, bf16, 3.0e38);

/// Bad arguments come back as errors naming the layer and the argument.
mod bad_input {
    use super::*;

    #[test]
    fn wrong_buffer_length_is_a_shape_error() {
        let Some(dev) = device::device() else { return };
        let host = host_layers::<f32>(23, &[(4, 8, 2), (6, 8, 2)]);
        let mut buffers = upload(&dev.stream, &host);
        let short_a = dev.stream.clone_htod(&vec![0f32; 2 * 8 - 1]).unwrap();
        let mut layers: Vec<MergeLayer<'_, f32>> = buffers
            .iter_mut()
            .zip(&host)
            .enumerate()
            .map(|(i, (d, h))| MergeLayer {
                weight: d.w.as_view_mut(),
                n: h.n,
                k: h.k,
                adapter: Adapter {
                    a: if i == 1 { short_a.as_view() } else { d.a.as_view() },
                    b: d.b.as_view(),
                    rank: h.r,
                    scale: 1.0,
                },
            })
            .collect();
        let err = dev.kernels.merge(&dev.stream, &mut layers, Direction::Merge, FiniteCheck::Unchecked).unwrap_err();
        match err {
            LoraError::InLayer { layer: 1, error } => match *error {
                LoraError::ShapeMismatch { what: "a", expected, got } => {
                    assert_eq!(expected, vec![2, 8]);
                    assert_eq!(got, vec![15]);
                }
                other => panic!("wrong inner error {other:?}"),
            },
            other => panic!("wrong error {other:?}"),
        }
    }

    fn single_layer_error(n: usize, k: usize, rank: usize, scale: f32) -> LoraError {
        let dev = device::device().expect("checked by caller");
        let mut w = dev.stream.clone_htod(&vec![0f32; n * k]).unwrap();
        // A driver refuses zero-byte allocations; rank is checked before any length.
        let a = dev.stream.clone_htod(&vec![0f32; rank.max(1) * k]).unwrap();
        let b = dev.stream.clone_htod(&vec![0f32; n * rank.max(1)]).unwrap();
        let mut layers = [MergeLayer {
            weight: w.as_view_mut(),
            n,
            k,
            adapter: Adapter { a: a.as_view(), b: b.as_view(), rank, scale },
        }];
        dev.kernels.merge(&dev.stream, &mut layers, Direction::Merge, FiniteCheck::Unchecked).unwrap_err()
    }

    #[test]
    fn zero_rank_and_non_finite_scale_are_invalid_arguments() {
        if device::device().is_none() {
            return;
        }
        for (rank, scale, what) in [(0, 1.0, "rank"), (2, f32::NAN, "scale"), (2, f32::INFINITY, "scale")] {
            match single_layer_error(3, 4, rank, scale) {
                LoraError::InLayer { layer: 0, error } => {
                    assert!(matches!(*error, LoraError::InvalidArgument { what: w, .. } if w == what), "{error:?}")
                }
                other => panic!("wrong error {other:?}"),
            }
        }
    }

    #[test]
    fn output_aliasing_an_input_is_refused() {
        let Some(dev) = device::device() else { return };
        let (n, k, r) = (4, 8, 2);
        let mut w = dev.stream.clone_htod(&vec![0f32; n * k]).unwrap();
        let b = dev.stream.clone_htod(&vec![0f32; n * r]).unwrap();
        // A second handle on the first r·k elements of W: only `unsafe` code can
        // build one, and the kernel must still refuse it.
        let (w_ptr, _) = cudarc::driver::DevicePtr::device_ptr(&w, &dev.stream);
        // SAFETY: the alias is leaked below, never freed; it lives while `w` does.
        let alias: CudaSlice<f32> = unsafe { dev.stream.upgrade_device_ptr(w_ptr, r * k) };
        let mut layers = [MergeLayer {
            weight: w.as_view_mut(),
            n,
            k,
            adapter: Adapter { a: alias.as_view(), b: b.as_view(), rank: r, scale: 1.0 },
        }];
        let err = dev.kernels.merge(&dev.stream, &mut layers, Direction::Merge, FiniteCheck::Unchecked).unwrap_err();
        alias.leak();
        assert!(matches!(err, LoraError::Aliasing { output: "weight", input: "a" }), "got {err:?}");
    }

    #[test]
    fn empty_layer_list_is_a_no_op() {
        let Some(dev) = device::device() else { return };
        let mut layers: [MergeLayer<'_, f32>; 0] = [];
        dev.kernels.merge(&dev.stream, &mut layers, Direction::Merge, FiniteCheck::RefuseNonFinite).unwrap();
    }
}
