//! The element types the kernels take: `f32`, `f16`, `bf16`.

use half::{bf16, f16};

/// Which element type a buffer holds; part of every kernel's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
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
/// the crate ships.
pub trait LoraDType:
    sealed::Sealed
    + Copy
    + Default
    + Send
    + Sync
    + PartialEq
    + std::fmt::Debug
    + cudarc::driver::DeviceRepr
    + cudarc::driver::ValidAsZeroBits
    + 'static
{
    const DTYPE: DType;
    /// Unit roundoff of the type (half an ulp at 1.0): 2⁻²⁴, 2⁻¹¹, 2⁻⁸.
    const UNIT_ROUNDOFF: f64;
    /// Rounds an f64 to this type, to nearest even (through f32 for the halves,
    /// as the kernels do: their f32 accumulator is rounded once).
    fn from_f64(x: f64) -> Self;
    fn from_f32(x: f32) -> Self;
    fn to_f64(self) -> f64;
    fn to_f32(self) -> f32;
    fn nan() -> Self;
}

impl LoraDType for f32 {
    const DTYPE: DType = DType::F32;
    const UNIT_ROUNDOFF: f64 = 5.960_464_477_539_063e-8; // 2^-24
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn from_f32(x: f32) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn nan() -> Self {
        f32::NAN
    }
}

impl LoraDType for f16 {
    const DTYPE: DType = DType::F16;
    const UNIT_ROUNDOFF: f64 = 4.882_812_5e-4; // 2^-11
    fn from_f64(x: f64) -> Self {
        f16::from_f32(x as f32)
    }
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    fn to_f32(self) -> f32 {
        self.to_f32()
    }
    fn nan() -> Self {
        f16::NAN
    }
}

impl LoraDType for bf16 {
    const DTYPE: DType = DType::Bf16;
    const UNIT_ROUNDOFF: f64 = 3.906_25e-3; // 2^-8
    fn from_f64(x: f64) -> Self {
        bf16::from_f32(x as f32)
    }
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    fn to_f32(self) -> f32 {
        self.to_f32()
    }
    fn nan() -> Self {
        bf16::NAN
    }
}
