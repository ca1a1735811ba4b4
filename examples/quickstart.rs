//! Merges LoRA adapters into the weights of several layers in one launch, on
//! the GPU or (without one) on the emulator, and checks every weight against
//! the CPU reference. Then unmerges, showing that the round trip does not give
//! the original weights back (each merge rounds once), and shows the mode that
//! refuses to write NaN/Inf.
//!
//! Run with `scripts/run.sh example`.

use std::error::Error;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use fused_lora::reference::{self, MergeDirection, Precision};
use fused_lora::{
    Adapter, AdapterConfig, Direction, FiniteCheck, LoraDType, LoraError, LoraKernels, MergeLayer, Scaling,
};
use half::bf16;

/// `(out_features, in_features)` of the layers merged together: a slice of a
/// transformer block, scaled down so the emulator runs it in seconds.
const LAYERS: &[(&str, usize, usize)] =
    &[("q_proj", 256, 256), ("k_proj", 64, 256), ("v_proj", 64, 256), ("o_proj", 256, 256)];

struct Layer<T> {
    name: &'static str,
    n: usize,
    k: usize,
    w: Vec<T>,
    a: Vec<T>,
    b: Vec<T>,
}

/// Deterministic pseudo-random values in (-bound, bound) from the crate's Philox.
fn values<T: LoraDType>(len: usize, bound: f32, offset: u64) -> Vec<T> {
    (0..len as u64).map(|i| T::from_f32(reference::philox::uniform_symmetric(2024, offset, i, bound))).collect()
}

fn make_layers<T: LoraDType>(rank: usize) -> Vec<Layer<T>> {
    LAYERS
        .iter()
        .enumerate()
        .map(|(i, &(name, n, k))| {
            let offset = 3 * i as u64;
            Layer {
                name,
                n,
                k,
                w: values(n * k, 0.05, offset),
                a: values(rank * k, 0.05, offset + 1),
                b: values(n * rank, 0.05, offset + 2),
            }
        })
        .collect()
}

/// Merges (or unmerges) every layer in one launch; returns the new weights.
fn run_merge<T: LoraDType>(
    kernels: &LoraKernels,
    stream: &Arc<CudaStream>,
    layers: &[Layer<T>],
    weights: &mut [CudaSlice<T>],
    config: &AdapterConfig,
    direction: Direction,
) -> Result<Vec<Vec<T>>, Box<dyn Error>> {
    let adapters: Vec<(CudaSlice<T>, CudaSlice<T>)> = layers
        .iter()
        .map(|l| Ok((stream.clone_htod(&l.a)?, stream.clone_htod(&l.b)?)))
        .collect::<Result<_, LoraError>>()?;
    let mut batch: Vec<MergeLayer<'_, T>> = weights
        .iter_mut()
        .zip(layers)
        .zip(&adapters)
        .map(|((w, l), (a, b))| MergeLayer {
            weight: w.as_view_mut(),
            n: l.n,
            k: l.k,
            adapter: Adapter { a: a.as_view(), b: b.as_view(), rank: config.rank(), scale: config.scale() },
        })
        .collect();
    kernels.merge(stream, &mut batch, direction, FiniteCheck::RefuseNonFinite)?;
    drop(batch);
    Ok(weights.iter().map(|w| stream.clone_dtoh(w)).collect::<Result<_, _>>()?)
}

/// Largest |device − reference| over a layer, in units of the reference's magnitude.
fn max_relative_error<T: LoraDType>(got: &[T], exact: &[f64]) -> f64 {
    let scale = exact.iter().fold(0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
    got.iter().zip(exact).fold(0f64, |m, (g, e)| m.max((g.to_f64() - e).abs())) / scale
}

fn demo<T: LoraDType>(
    kernels: &LoraKernels,
    stream: &Arc<CudaStream>,
    config: &AdapterConfig,
) -> Result<(), Box<dyn Error>> {
    let layers = make_layers::<T>(config.rank());
    let mut weights: Vec<CudaSlice<T>> = layers.iter().map(|l| stream.clone_htod(&l.w)).collect::<Result<_, _>>()?;

    let merged = run_merge(kernels, stream, &layers, &mut weights, config, Direction::Merge)?;
    let views: Vec<reference::MergeLayer<'_, T>> = layers
        .iter()
        .map(|l| reference::MergeLayer {
            w: &l.w,
            a: &l.a,
            b: &l.b,
            scale: config.scale() as f64,
            n: l.n,
            k: l.k,
            r: config.rank(),
        })
        .collect();
    let exact = reference::merge(&views, MergeDirection::Merge, true, Precision::Exact)?;

    let unmerged = run_merge(kernels, stream, &layers, &mut weights, config, Direction::Unmerge)?;
    println!("\n{} weights, rank {}, s = {}:", T::DTYPE, config.rank(), config.scale());
    println!("  {:<8} {:>10} {:>26} {:>28}", "layer", "shape", "merge: max rel. error", "unmerge: elements changed");
    for (i, layer) in layers.iter().enumerate() {
        let changed =
            unmerged[i].iter().zip(&layer.w).filter(|(u, w)| u.to_f64().to_bits() != w.to_f64().to_bits()).count();
        println!(
            "  {:<8} {:>10} {:>26.3e} {:>20} of {:<7}",
            layer.name,
            format!("{}x{}", layer.n, layer.k),
            max_relative_error(&merged[i], &exact[i]),
            changed,
            layer.w.len()
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let ctx = CudaContext::new(0).map_err(|e| {
        format!(
            "no CUDA device ({e}); run through `scripts/run.sh example`, which uses the emulator when there is no GPU"
        )
    })?;
    let stream = ctx.default_stream();
    let kernels = LoraKernels::new(&ctx);
    println!("device: {}", ctx.name()?);

    let config = AdapterConfig::new(16, 32.0, Scaling::AlphaOverRank)?;
    demo::<f32>(&kernels, &stream, &config)?;
    demo::<bf16>(&kernels, &stream, &config)?;
    println!("\nThe merged weight is rounded once, so merge then unmerge does not restore every original");
    println!("bit, in f32 as in bf16: keep the original weights, or merge into a separate buffer (`merge_into`).");

    // An adapter from a diverged fine-tune (a NaN in B of the last layer): the
    // checked mode refuses the whole batch and leaves every weight as it was.
    let mut layers = make_layers::<bf16>(config.rank());
    let last = layers.len() - 1;
    layers[last].b[7] = bf16::NAN;
    let mut weights: Vec<CudaSlice<bf16>> = layers.iter().map(|l| stream.clone_htod(&l.w)).collect::<Result<_, _>>()?;
    match run_merge(&kernels, &stream, &layers, &mut weights, &config, Direction::Merge) {
        Err(e) => {
            let untouched = weights.iter().zip(&layers).all(|(w, l)| stream.clone_dtoh(w).is_ok_and(|w| w == l.w));
            println!("\nmerging an adapter holding a NaN: refused ({e}); weights untouched: {untouched}");
            if !untouched {
                return Err("a refused merge modified the weights".into());
            }
        }
        Ok(_) => return Err("a merge producing NaN was not refused".into()),
    }
    Ok(())
}
