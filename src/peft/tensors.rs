//! `adapter_model.safetensors`: PEFT's tensor names, the shapes they must
//! have, and the conversion of the stored f32/f16/bf16 to the element type
//! asked for.

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use crate::dtype::LoraDType;
use crate::error::{LoraError, Result};

/// The weights' file name in an adapter directory.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// What older PEFT versions wrote instead: a pickle, which this crate does not read.
pub const PICKLE_FILE: &str = "adapter_model.bin";

/// The prefix PEFT's `PeftModel` puts before every module name on save.
const PREFIX: &str = "base_model.model.";

/// Which of the pair a tensor is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Half {
    /// `lora_A.weight`, `[r, in]`.
    A,
    /// `lora_B.weight`, `[out, r]`.
    B,
}

/// One stored matrix, converted: `rows × cols`, row-major.
pub struct Matrix<T> {
    /// The tensor's name in the file.
    pub name: String,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// The elements, row-major.
    pub data: Vec<T>,
}

/// A module's A and B.
pub type Pair<T> = (Matrix<T>, Matrix<T>);

/// What the file held so far of a module's pair.
type Found<T> = (Option<Matrix<T>>, Option<Matrix<T>>);

/// The name PEFT saves `module`'s A or B under
/// (`base_model.model.<module>.lora_A.weight`); [`parse_name`]'s inverse.
pub fn tensor_name(module: &str, half: Half) -> String {
    let half = match half {
        Half::A => "lora_A",
        Half::B => "lora_B",
    };
    format!("{PREFIX}{module}.{half}.weight")
}

/// The module and half a tensor name gives
/// (`base_model.model.<module>.lora_A.weight`), or `None` for any other name.
pub fn parse_name(name: &str) -> Option<(&str, Half)> {
    let rest = name.strip_prefix(PREFIX)?;
    if let Some(module) = rest.strip_suffix(".lora_A.weight") {
        Some((module, Half::A))
    } else {
        rest.strip_suffix(".lora_B.weight").map(|module| (module, Half::B))
    }
    .filter(|(module, _)| !module.is_empty())
}

/// Every LoRA matrix of the file at `file`, by module, converted to `T`.
///
/// # Errors
/// [`LoraError::Io`] if the file cannot be read; [`LoraError::PeftFormat`]
/// naming the file (and the tensor) for a file safetensors cannot parse
/// (truncated, bad header), a tensor that is not 2-D, or a module with A and
/// no B or B and no A; [`LoraError::PeftUnsupported`] naming a tensor that
/// is not a LoRA A or B weight (DoRA magnitudes, embedding adapters, biases)
/// or is stored in another type than f32/f16/bf16.
pub fn read_pairs<T: LoraDType>(file: &Path) -> Result<BTreeMap<String, Pair<T>>> {
    let bytes = std::fs::read(file).map_err(|source| LoraError::Io { file: file.to_owned(), source })?;
    let format =
        |item: &str, reason: String| LoraError::PeftFormat { file: file.to_owned(), item: item.into(), reason };
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| format(WEIGHTS_FILE, e.to_string()))?;
    let mut halves: BTreeMap<String, Found<T>> = BTreeMap::new();
    let mut names = tensors.names();
    names.sort(); // a stable order, so the first problem reported is always the same
    for name in names {
        let Some((module, half)) = parse_name(name) else {
            return Err(LoraError::PeftUnsupported {
                file: file.to_owned(),
                option: "tensor".into(),
                value: format!("{name} (only base_model.model.<module>.lora_A.weight / lora_B.weight are LoRA)"),
            });
        };
        let view = tensors.tensor(name).map_err(|e| format(name, e.to_string()))?;
        let &[rows, cols] = view.shape() else {
            return Err(format(name, format!("shape {:?}: a LoRA weight is a matrix", view.shape())));
        };
        if rows == 0 || cols == 0 {
            return Err(format(name, format!("shape {:?}: empty", view.shape())));
        }
        let data = convert::<T>(view.dtype(), view.data()).ok_or_else(|| LoraError::PeftUnsupported {
            file: file.to_owned(),
            option: format!("dtype of {name}"),
            value: format!("{:?} (only F32, F16 and BF16 are read)", view.dtype()),
        })?;
        let matrix = Matrix { name: name.to_owned(), rows, cols, data };
        let slot = halves.entry(module.to_owned()).or_default();
        match half {
            Half::A => slot.0 = Some(matrix),
            Half::B => slot.1 = Some(matrix),
        }
    }
    let mut pairs = BTreeMap::new();
    for (module, slot) in halves {
        match slot {
            (Some(a), Some(b)) => {
                pairs.insert(module, (a, b));
            }
            (Some(_), None) => {
                return Err(format(&format!("{PREFIX}{module}.lora_B.weight"), "missing (the file has lora_A)".into()))
            }
            (None, Some(_)) => {
                return Err(format(&format!("{PREFIX}{module}.lora_A.weight"), "missing (the file has lora_B)".into()))
            }
            (None, None) => {}
        }
    }
    Ok(pairs)
}

/// The little-endian elements of `bytes` stored as `dtype`, converted to
/// `T`: exact when `T` holds every value of the stored type (f16/bf16 to
/// f32, or the same type), else rounded once to nearest even through f32
/// (which holds f16 and bf16 exactly). `None` for another stored type.
/// safetensors has already checked that the byte count fits the shape.
pub fn convert<T: LoraDType>(dtype: Dtype, bytes: &[u8]) -> Option<Vec<T>> {
    let data = match dtype {
        Dtype::F32 => {
            bytes.chunks_exact(4).map(|c| T::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()
        }
        Dtype::F16 => bytes.chunks_exact(2).map(|c| T::from_f32(f16::from_le_bytes([c[0], c[1]]).to_f32())).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|c| T::from_f32(bf16::from_le_bytes([c[0], c[1]]).to_f32())).collect(),
        _ => return None,
    };
    Some(data)
}
