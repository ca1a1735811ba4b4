//! PEFT adapters and [`LoraLinear`]: a layer built from an adapter directory
//! and the base model's weights (a candle-nn `VarBuilder`), and adapters
//! written back in PEFT's format.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Result, Tensor, Var};
use candle_nn::VarBuilder;

use super::{bad, LoraAdapters, LoraLinear};
use crate::peft::config::CONFIG_FILE;
use crate::peft::tensors::{tensor_name, Half, WEIGHTS_FILE};
use crate::peft::{PeftAdapter, PeftConfig, PeftModule};

impl LoraLinear {
    /// The layer `module` (`model.layers.0.self_attn.q_proj`) of the base
    /// model `vb` (its root: the weight is read as `<module>.weight`, and
    /// `<module>.bias` if the model has one) with `adapter`'s A and B for
    /// it, in `vb`'s dtype and on its device, and the scale PEFT gives the
    /// module (`rank_pattern`, `alpha_pattern`, rsLoRA). With
    /// `fan_in_fan_out` the base weight is stored `[in, out]` (GPT-2's
    /// `Conv1D`) and is transposed to W0 `[out, in]`.
    ///
    /// A and B are candle `Var`s ([`LoraLinear::trainable_vars`]); the
    /// config's `lora_dropout` is set ([`LoraLinear::set_dropout`]) with a
    /// seed hashed from the module's name, so layers draw different masks;
    /// the layer starts in eval mode.
    ///
    /// # Errors
    /// A module the adapter does not have, a base weight that is missing or
    /// whose shape disagrees with the adapter's, or the errors of
    /// [`LoraLinear::new`].
    pub fn from_peft(vb: &VarBuilder, adapter: &PeftAdapter<f32>, module: &str) -> Result<Self> {
        let m = adapter.module(module).ok_or_else(|| {
            bad("from_peft", format!("`{module}` has no adapter in {}", adapter.config.file.display()))
        })?;
        let (weight, bias) = base_layer(vb, module, m.n, m.k, adapter.config.fan_in_fan_out)?;
        let var = |data: &[f32], dims: (usize, usize)| -> Result<Tensor> {
            let t = Tensor::from_slice(data, dims, vb.device())?.to_dtype(vb.dtype())?;
            Ok(Var::from_tensor(&t)?.as_tensor().clone())
        };
        let adapters =
            LoraAdapters::Single { a: var(&m.a, (m.rank, m.k))?, b: var(&m.b, (m.n, m.rank))?, scale: m.scale };
        let mut layer = LoraLinear::new(weight, bias, adapters)?;
        layer.set_dropout(adapter.config.lora_dropout as f32, seed_of(module))?;
        Ok(layer)
    }
}

impl LoraLinear {
    /// The layer `module` of the base model `vb` (as [`LoraLinear::from_peft`])
    /// with several adapters stacked for serving: slot l is `adapters[l]`
    /// (with its own rank and the scale PEFT gives it), and each row of the
    /// input picks its slot through `rows` (`[m]` I32, −1: base only;
    /// [`LoraLinear::set_rows`] replaces it). An adapter without the module
    /// gets a zero slot (rank 1, A = B = 0, scale 0): its rows get the base
    /// layer's output, as PEFT leaves a module it does not target. The
    /// padding past each rank is zero (the kernels never read it). No
    /// dropout, eval mode; A and B are plain tensors (not `Var`s).
    ///
    /// # Errors
    /// No adapters, none with the module, adapters that disagree on the
    /// module's `[n, k]` or on `fan_in_fan_out`, a missing or misshapen base
    /// weight, or the errors of [`LoraLinear::new`].
    pub fn from_peft_stack(
        vb: &VarBuilder,
        adapters: &[&PeftAdapter<f32>],
        module: &str,
        rows: Tensor,
    ) -> Result<Self> {
        let found: Vec<Option<&PeftModule<f32>>> = adapters.iter().map(|a| a.module(module)).collect();
        let Some(first) = adapters.iter().position(|a| a.module(module).is_some()) else {
            return Err(bad("from_peft_stack", format!("none of the {} adapters has `{module}`", adapters.len())));
        };
        let (n, k) = (found[first].map_or(0, |m| m.n), found[first].map_or(0, |m| m.k));
        let fan_in_fan_out = adapters[first].config.fan_in_fan_out;
        for (slot, (adapter, m)) in adapters.iter().zip(&found).enumerate() {
            let Some(m) = m else { continue };
            if (m.n, m.k) != (n, k) || adapter.config.fan_in_fan_out != fan_in_fan_out {
                return Err(bad(
                    "from_peft_stack",
                    format!(
                        "adapter {slot} ({}) gives `{module}` [n, k] = [{}, {}] and fan_in_fan_out {}, \
                         adapter {first} [{n}, {k}] and {fan_in_fan_out}",
                        adapter.config.file.display(),
                        m.n,
                        m.k,
                        adapter.config.fan_in_fan_out
                    ),
                ));
            }
        }
        let (weight, bias) = base_layer(vb, module, n, k, fan_in_fan_out)?;
        let slots = adapters.len();
        let r_max = found.iter().flatten().map(|m| m.rank).max().unwrap_or(1);
        let (mut a_all, mut b_all) = (vec![0f32; slots * r_max * k], vec![0f32; slots * n * r_max]);
        let (mut ranks, mut scales) = (Vec::with_capacity(slots), Vec::with_capacity(slots));
        for (slot, m) in found.iter().enumerate() {
            match m {
                Some(m) => {
                    a_all[slot * r_max * k..][..m.rank * k].copy_from_slice(&m.a);
                    for (row, b_row) in m.b.chunks_exact(m.rank).enumerate() {
                        b_all[(slot * n + row) * r_max..][..m.rank].copy_from_slice(b_row);
                    }
                    ranks.push(m.rank);
                    scales.push(m.scale);
                }
                None => {
                    ranks.push(1);
                    scales.push(0.0);
                }
            }
        }
        let on = |data: Vec<f32>, dims: (usize, usize, usize)| {
            Tensor::from_vec(data, dims, vb.device())?.to_dtype(vb.dtype())
        };
        let a = on(a_all, (slots, r_max, k))?;
        let b = on(b_all, (slots, n, r_max))?;
        LoraLinear::new(weight, bias, LoraAdapters::Stack { a, b, ranks, scales, rows })
    }
}

/// W0 `[n, k]` and the bias (if the model has one) of `module` in `vb`:
/// `<module>.weight`, stored `[k, n]` with `fan_in_fan_out`, and `<module>.bias`.
fn base_layer(
    vb: &VarBuilder,
    module: &str,
    n: usize,
    k: usize,
    fan_in_fan_out: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let vb = vb.pp(module);
    let weight = if fan_in_fan_out { vb.get((k, n), "weight")?.t()?.contiguous()? } else { vb.get((n, k), "weight")? };
    let bias = if vb.contains_tensor("bias") { Some(vb.get(n, "bias")?) } else { None };
    Ok((weight, bias))
}

/// FNV-1a of the module's name: a fixed, distinct dropout seed per layer.
fn seed_of(module: &str) -> u64 {
    module.bytes().fold(0xcbf2_9ce4_8422_2325, |h, byte| (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// Writes `layers` (module name, layer) as a PEFT adapter directory `dir`
/// (created if needed): `adapter_config.json` is `config`'s text as it was
/// read, `adapter_model.safetensors` holds each module's A and B in the
/// layer's dtype under PEFT's names (`base_model.model.<module>.lora_A.weight`),
/// so PEFT (and [`PeftAdapter::load`]) load it as they would their own.
///
/// # Errors
/// No layers, a module named twice, a layer with a stack of adapters, a
/// module `config` does not target, or whose rank or scale is not the one
/// `config` gives it (PEFT would load it with another), or an I/O error.
pub fn save_peft(dir: impl AsRef<Path>, config: &PeftConfig, layers: &[(&str, &LoraLinear)]) -> Result<()> {
    if layers.is_empty() {
        return Err(bad("save_peft", "no layers to save"));
    }
    let mut tensors = HashMap::new();
    for &(module, layer) in layers {
        let LoraAdapters::Single { a, b, scale } = &layer.adapters else {
            return Err(bad("save_peft", format!("`{module}` holds a stack of adapters; save each one alone")));
        };
        if !config.targets(module) {
            return Err(bad("save_peft", format!("`{module}` is not in the config's target_modules")));
        }
        let (rank, want) = (a.dim(0)?, config.rank_of(module));
        if rank != want {
            return Err(bad("save_peft", format!("`{module}` has rank {rank}, the config gives it {want}")));
        }
        let want = config.scale_of(module);
        if *scale != want {
            return Err(bad("save_peft", format!("`{module}` has scale {scale}, the config gives it {want}")));
        }
        for (half, t) in [(Half::A, a), (Half::B, b)] {
            if tensors.insert(tensor_name(module, half), t.detach()).is_some() {
                return Err(bad("save_peft", format!("`{module}` is given twice")));
            }
        }
    }
    let dir = dir.as_ref();
    let io = |e: std::io::Error| bad("save_peft", format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(dir.join(CONFIG_FILE), &config.text).map_err(io)?;
    candle_core::safetensors::save(&tensors, dir.join(WEIGHTS_FILE))
}
