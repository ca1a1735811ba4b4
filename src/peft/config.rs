//! `adapter_config.json`: the LoRA options PEFT writes, parsed with serde,
//! checked for what this crate supports, and the per-module rank, α and scale
//! PEFT derives from them.

use std::path::{Path, PathBuf};

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::error::{LoraError, Result};
use crate::peft::pattern::{pattern_value, ModuleSelector, PatternKey};

/// The config's file name in an adapter directory.
pub const CONFIG_FILE: &str = "adapter_config.json";

/// The fields of PEFT's `LoraConfig` this crate reads; the rest (task type,
/// base model name, init options...) do not change the adapter's math and are
/// ignored. Defaults are `LoraConfig`'s.
#[derive(Deserialize)]
struct RawConfig {
    peft_type: Option<String>,
    #[serde(default = "default_rank")]
    r: usize,
    #[serde(default = "default_alpha")]
    lora_alpha: f64,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    rank_pattern: Option<OrderedMap<usize>>,
    #[serde(default)]
    alpha_pattern: Option<OrderedMap<f64>>,
    #[serde(default)]
    target_modules: Option<StringOrList>,
    #[serde(default)]
    exclude_modules: Option<StringOrList>,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    lora_dropout: f64,
    #[serde(default = "default_bias")]
    bias: String,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    lora_bias: bool,
    #[serde(default)]
    modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    target_parameters: Option<Vec<String>>,
}

fn default_rank() -> usize {
    8
}

fn default_alpha() -> f64 {
    8.0
}

fn default_bias() -> String {
    "none".into()
}

/// A JSON string or a list of strings (`target_modules`, `exclude_modules`).
#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    String(String),
    List(Vec<String>),
}

/// A JSON object kept in the order it is written: PEFT tries pattern keys in
/// the dict's insertion order, which is the file's order.
struct OrderedMap<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct OrderedVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for OrderedVisitor<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of module patterns")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(OrderedVisitor(std::marker::PhantomData))
    }
}

/// A LoRA adapter's configuration as PEFT wrote it.
#[derive(Clone, Debug)]
pub struct PeftConfig {
    /// The file it was read from (named in errors).
    pub file: PathBuf,
    /// The default rank `r`.
    pub r: usize,
    /// The default `lora_alpha`.
    pub lora_alpha: f64,
    /// rsLoRA: the scale is `α/√r` instead of `α/r`.
    pub use_rslora: bool,
    /// Per-module ranks, in the file's order.
    pub rank_pattern: Vec<(PatternKey, usize)>,
    /// Per-module α, in the file's order.
    pub alpha_pattern: Vec<(PatternKey, f64)>,
    /// The modules the adapter targets.
    pub target_modules: ModuleSelector,
    /// The modules excluded from `target_modules`.
    pub exclude_modules: ModuleSelector,
    /// The base layer stores its weight `[in, out]` (GPT-2's `Conv1D`). The
    /// adapter's A `[r, in]` and B `[out, r]` are stored as for any layer
    /// (PEFT's `lora_A`/`lora_B` are `nn.Linear` either way); the base weight
    /// must be transposed to the kernels' W0 `[N, K]`
    /// ([`crate::peft::base_weight_to_nk`]).
    pub fan_in_fan_out: bool,
    /// The dropout probability on the adapter's input in training
    /// (`lora_dropout`), for [`crate::Dropout`].
    pub lora_dropout: f64,
    /// The file's text as read: saving an adapter writes it back unchanged,
    /// so every option (including those this crate ignores) and the order of
    /// the pattern keys survive.
    pub text: String,
}

impl PeftConfig {
    /// Reads and checks `adapter_config.json` at `file`.
    ///
    /// # Errors
    /// [`LoraError::Io`] if it cannot be read, [`LoraError::PeftFormat`] for
    /// bad JSON or values (naming the key), [`LoraError::PeftUnsupported`]
    /// for options this crate does not implement.
    pub fn from_file(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file).map_err(|source| LoraError::Io { file: file.to_owned(), source })?;
        Self::from_json(file, &text)
    }

    /// Parses the text of an `adapter_config.json`; `file` is named in errors.
    ///
    /// # Errors
    /// As [`PeftConfig::from_file`], without the I/O.
    pub fn from_json(file: &Path, text: &str) -> Result<Self> {
        let format =
            |item: &str, reason: String| LoraError::PeftFormat { file: file.to_owned(), item: item.into(), reason };
        let unsupported = |option: &str, value: String| LoraError::PeftUnsupported {
            file: file.to_owned(),
            option: option.into(),
            value,
        };
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| format("adapter_config.json", e.to_string()))?;
        match raw.peft_type.as_deref() {
            Some("LORA") => {}
            Some(other) => return Err(unsupported("peft_type", format!("{other:?} (only \"LORA\" is supported)"))),
            None => return Err(format("peft_type", "missing (PEFT always writes it)".into())),
        }
        if raw.use_dora {
            return Err(unsupported("use_dora", "true (DoRA's magnitude vector is not implemented)".into()));
        }
        if raw.bias != "none" {
            return Err(unsupported(
                "bias",
                format!("{:?} (only \"none\": trained biases are not implemented)", raw.bias),
            ));
        }
        if raw.lora_bias {
            return Err(unsupported("lora_bias", "true (a bias on lora_B is not implemented)".into()));
        }
        if let Some(modules) = raw.modules_to_save.filter(|m| !m.is_empty()) {
            return Err(unsupported("modules_to_save", format!("{modules:?} (fully trained modules are not LoRA)")));
        }
        if let Some(parameters) = raw.target_parameters.filter(|p| !p.is_empty()) {
            return Err(unsupported(
                "target_parameters",
                format!("{parameters:?} (LoRA on bare parameters is not implemented)"),
            ));
        }
        if raw.r == 0 {
            return Err(format("r", "0 (the rank must be at least 1)".into()));
        }
        check_alpha(raw.lora_alpha).map_err(|reason| format("lora_alpha", reason))?;
        if !(0.0..1.0).contains(&raw.lora_dropout) {
            return Err(format("lora_dropout", format!("{} (must be in [0, 1))", raw.lora_dropout)));
        }
        let mut rank_pattern = Vec::new();
        for (key, rank) in raw.rank_pattern.map(|m| m.0).unwrap_or_default() {
            let item = format!("rank_pattern.{key}");
            if rank == 0 {
                return Err(format(&item, "0 (a rank must be at least 1)".into()));
            }
            rank_pattern.push((PatternKey::new(&key).map_err(|e| format(&item, e))?, rank));
        }
        let mut alpha_pattern = Vec::new();
        for (key, alpha) in raw.alpha_pattern.map(|m| m.0).unwrap_or_default() {
            let item = format!("alpha_pattern.{key}");
            check_alpha(alpha).map_err(|reason| format(&item, reason))?;
            alpha_pattern.push((PatternKey::new(&key).map_err(|e| format(&item, e))?, alpha));
        }
        let selector = |item: &str, value: Option<StringOrList>| match value {
            None => Ok(ModuleSelector::Nothing),
            Some(StringOrList::List(names)) => Ok(ModuleSelector::Names(names)),
            Some(StringOrList::String(text)) => ModuleSelector::from_regex(&text).map_err(|e| format(item, e)),
        };
        Ok(PeftConfig {
            file: file.to_owned(),
            r: raw.r,
            lora_alpha: raw.lora_alpha,
            use_rslora: raw.use_rslora,
            rank_pattern,
            alpha_pattern,
            target_modules: selector("target_modules", raw.target_modules)?,
            exclude_modules: selector("exclude_modules", raw.exclude_modules)?,
            fan_in_fan_out: raw.fan_in_fan_out,
            lora_dropout: raw.lora_dropout,
            text: text.to_owned(),
        })
    }

    /// The rank PEFT gives `module`: the first `rank_pattern` key that
    /// applies ([`crate::peft::pattern`]), else `r`.
    pub fn rank_of(&self, module: &str) -> usize {
        pattern_value(&self.rank_pattern, module).copied().unwrap_or(self.r)
    }

    /// The α PEFT gives `module`: the first `alpha_pattern` key that
    /// applies, else `lora_alpha`.
    pub fn alpha_of(&self, module: &str) -> f64 {
        pattern_value(&self.alpha_pattern, module).copied().unwrap_or(self.lora_alpha)
    }

    /// The scale PEFT's `LoraLayer.update_layer` gives `module`:
    /// `α / √r` with rsLoRA, else `α / r`, with the module's own r and α;
    /// computed in f64 (Python's floats) and rounded once to f32.
    pub fn scale_of(&self, module: &str) -> f32 {
        let (rank, alpha) = (self.rank_of(module) as f64, self.alpha_of(module));
        let scale = if self.use_rslora { alpha / rank.sqrt() } else { alpha / rank };
        scale as f32
    }

    /// Whether PEFT would have put an adapter on `module`: targeted and not
    /// excluded. (`layers_to_transform` / `layers_pattern` narrow this
    /// further in PEFT; the file's tensors already reflect them.)
    pub fn targets(&self, module: &str) -> bool {
        self.target_modules.selects(module) && !self.exclude_modules.selects(module)
    }
}

/// α must be finite and its scale representable as f32.
fn check_alpha(alpha: f64) -> std::result::Result<(), String> {
    if alpha.is_finite() && alpha.abs() <= f32::MAX as f64 {
        Ok(())
    } else {
        Err(format!("{alpha} (must be finite)"))
    }
}
