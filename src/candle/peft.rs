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
use crate::peft::{PeftAdapter, PeftConfig};

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
        let vb = vb.pp(module);
        let weight = if adapter.config.fan_in_fan_out {
            vb.get((m.k, m.n), "weight")?.t()?.contiguous()?
        } else {
            vb.get((m.n, m.k), "weight")?
        };
        let bias = if vb.contains_tensor("bias") { Some(vb.get(m.n, "bias")?) } else { None };
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
