//! The element types the kernels take: `f32`, `f16`, `bf16`.

use half::{bf16, f16};

use crate::reference::RefElem;

/// Which element type a buffer holds; part of every kernel's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// `f32`.
    F32,
    /// `half::f16`.
    F16,
    /// `half::bf16`.
    Bf16,
}

impl DType {
    /// The suffix of the kernel entry points (`lora_merge_bf16`).
    pub fn kernel_suffix(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
        }
    }

    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::Bf16 => 2,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kernel_suffix())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// An element type the kernels support. Sealed: the set is fixed by the PTX
/// the crate ships. Its conversions to and from f32/f64 and its unit roundoff
/// come from [`RefElem`], the element trait the CPU reference is written in.
pub trait LoraDType: sealed::Sealed + RefElem + cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits {
    /// The [`DType`] tag of this type.
    const DTYPE: DType;
    /// The value as an f32 (exact for every supported type).
    fn to_f32(self) -> f32;
    /// A quiet NaN, for poisoning outputs.
    fn nan() -> Self;
}

impl LoraDType for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn nan() -> Self {
        f32::NAN
    }
}

impl LoraDType for f16 {
    const DTYPE: DType = DType::F16;
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn nan() -> Self {
        f16::NAN
    }
}

impl LoraDType for bf16 {
    const DTYPE: DType = DType::Bf16;
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn nan() -> Self {
        bf16::NAN
    }
}
