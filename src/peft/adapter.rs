//! One adapter directory loaded: per module, A and B on the host with the
//! rank and scale PEFT gives them.

use std::collections::BTreeMap;
use std::path::Path;

use crate::dtype::LoraDType;
use crate::error::{LoraError, Result};
use crate::peft::config::{PeftConfig, CONFIG_FILE};
use crate::peft::tensors::{read_pairs, PICKLE_FILE, WEIGHTS_FILE};

/// One module's adapter, on the host, in the kernels' layout.
#[derive(Clone, Debug)]
pub struct PeftModule<T> {
    /// The module's name in the base model (`model.layers.0.self_attn.q_proj`).
    pub name: String,
    /// Its rank r (from `rank_pattern` or `r`).
    pub rank: usize,
    /// Its α (from `alpha_pattern` or `lora_alpha`).
    pub alpha: f64,
    /// The scale PEFT applies: `α/r`, or `α/√r` with rsLoRA.
    pub scale: f32,
    /// Output features N (B's rows).
    pub n: usize,
    /// Input features K (A's columns).
    pub k: usize,
    /// A `[r, k]`, row-major (`lora_A.weight`).
    pub a: Vec<T>,
    /// B `[n, r]`, row-major (`lora_B.weight`).
    pub b: Vec<T>,
}

/// A PEFT LoRA adapter directory, loaded.
#[derive(Clone, Debug)]
pub struct PeftAdapter<T> {
    /// Its configuration.
    pub config: PeftConfig,
    /// Its modules, by name.
    pub modules: BTreeMap<String, PeftModule<T>>,
}

impl<T: LoraDType> PeftAdapter<T> {
    /// Reads `dir/adapter_config.json` and `dir/adapter_model.safetensors`,
    /// converting the stored f32/f16/bf16 weights to `T`.
    ///
    /// # Errors
    /// [`LoraError::PeftUnsupported`] for an option this crate does not
    /// implement, or a directory with only `adapter_model.bin` (a pickle);
    /// [`LoraError::PeftFormat`] naming the file and the tensor or key for a
    /// malformed directory: bad JSON, a truncated safetensors file, a missing
    /// A or B, A and B whose shapes disagree, a rank other than the config
    /// gives the module, a module the config does not target;
    /// [`LoraError::Io`] if a file cannot be read.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config = PeftConfig::from_file(&dir.join(CONFIG_FILE))?;
        let weights = dir.join(WEIGHTS_FILE);
        if !weights.exists() && dir.join(PICKLE_FILE).exists() {
            return Err(LoraError::PeftUnsupported {
                file: dir.join(PICKLE_FILE),
                option: "weights format".into(),
                value: "a PyTorch pickle (save the adapter with safe_serialization=True)".into(),
            });
        }
        let mut modules = BTreeMap::new();
        for (name, (a, b)) in read_pairs::<T>(&weights)? {
            let format =
                |item: &str, reason: String| LoraError::PeftFormat { file: weights.clone(), item: item.into(), reason };
            if !config.targets(&name) {
                return Err(format(&a.name, format!("module `{name}` is not in the config's target_modules")));
            }
            let rank = config.rank_of(&name);
            if a.rows != rank {
                return Err(format(
                    &a.name,
                    format!(
                        "shape [{}, {}]: the config gives `{name}` rank {rank}, so A must be [{rank}, in]",
                        a.rows, a.cols
                    ),
                ));
            }
            if b.cols != rank {
                return Err(format(
                    &b.name,
                    format!(
                        "shape [{}, {}]: the config gives `{name}` rank {rank}, so B must be [out, {rank}]",
                        b.rows, b.cols
                    ),
                ));
            }
            let module = PeftModule {
                name: name.clone(),
                rank,
                alpha: config.alpha_of(&name),
                scale: config.scale_of(&name),
                n: b.rows,
                k: a.cols,
                a: a.data,
                b: b.data,
            };
            modules.insert(name, module);
        }
        if modules.is_empty() {
            return Err(LoraError::PeftFormat {
                file: weights,
                item: WEIGHTS_FILE.into(),
                reason: "holds no lora_A / lora_B weights".into(),
            });
        }
        Ok(PeftAdapter { config, modules })
    }

    /// The module called `name`, if the adapter has one.
    pub fn module(&self, name: &str) -> Option<&PeftModule<T>> {
        self.modules.get(name)
    }
}

/// A `fan_in_fan_out` base layer's weight (GPT-2's `Conv1D`, stored
/// `[k, n]`, row-major) as the kernels' W0 `[n, k]`.
///
/// # Errors
/// [`LoraError::ShapeMismatch`] if `weight` does not hold `k·n` elements.
pub fn base_weight_to_nk<T: Copy>(weight: &[T], k: usize, n: usize) -> Result<Vec<T>> {
    if k.checked_mul(n) != Some(weight.len()) {
        return Err(LoraError::ShapeMismatch { what: "weight", expected: vec![k, n], got: vec![weight.len()] });
    }
    Ok((0..n).flat_map(|row| (0..k).map(move |col| weight[col * n + row])).collect())
}
