//! The crate's one error type. Variants are structured: they name the argument
//! and the value, so a caller can act on them without parsing text.

use crate::dtype::DType;

#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// A tensor's shape does not fit the others.
    #[error("shape mismatch for `{what}`: expected {expected:?}, got {got:?}")]
    ShapeMismatch { what: &'static str, expected: Vec<usize>, got: Vec<usize> },

    /// A buffer holds fewer elements than its shape needs.
    #[error("buffer `{what}` too small: needs {needed} elements, has {len}")]
    BufferTooSmall { what: &'static str, needed: usize, len: usize },

    /// A scalar argument outside its valid range.
    #[error("invalid value for `{what}`: {value} ({reason})")]
    InvalidArgument { what: &'static str, value: String, reason: &'static str },

    /// A dimension that breaks an alignment rule (e.g. K a multiple of 8).
    #[error("`{what}` = {value} must be a multiple of {multiple_of}")]
    Misaligned { what: &'static str, value: usize, multiple_of: usize },

    /// A buffer whose device address breaks the alignment its loads need
    /// (e.g. a view starting one element into an allocation).
    #[error("buffer `{what}` starts at device address {address:#x}, which is not {alignment}-byte aligned")]
    MisalignedAddress { what: &'static str, address: u64, alignment: u64 },

    /// Two operands that share the row count M (X, Y, dY, dX, P, G, the row
    /// indices) hold different numbers of rows. M is not an argument: it is
    /// read from `first`'s length, so either operand may be the wrong one,
    /// and both are named with their row counts.
    #[error("`{first}` holds {first_rows} rows but `{second}` holds {second_rows}; operands that share M must agree")]
    RowsDisagree { first: &'static str, first_rows: usize, second: &'static str, second_rows: usize },

    /// A per-row adapter index outside `[-1, L)`.
    #[error("adapter index {index} at row {row} out of range [-1, {num_adapters})")]
    AdapterIndexOutOfRange { row: usize, index: i64, num_adapters: usize },

    /// An output buffer overlaps an input it must not alias.
    #[error("output `{output}` aliases input `{input}`")]
    Aliasing { output: &'static str, input: &'static str },

    /// Buffers or streams from different CUDA contexts.
    #[error("`{what}` belongs to another CUDA context than the stream")]
    ContextMismatch { what: &'static str },

    /// A result that holds NaN or Inf where the caller asked for a checked write.
    #[error("{op}: result holds a non-finite value in layer {layer}; nothing was written")]
    NonFinite { op: &'static str, layer: usize },

    /// A valid request this crate does not implement.
    #[error("{op} does not support {dtype}: {reason}")]
    Unsupported { op: &'static str, dtype: DType, reason: &'static str },

    /// The problem of one element of a list argument (e.g. one layer of a merge).
    #[error("layer {layer}: {error}")]
    InLayer { layer: usize, error: Box<LoraError> },

    /// The problem of one adapter of a list (e.g. one slot of a
    /// [`crate::PackedAdapters`]).
    #[error("adapter {adapter}: {error}")]
    InAdapter { adapter: usize, error: Box<LoraError> },

    /// An error from the CUDA driver.
    #[error("CUDA driver: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
}

pub type Result<T> = std::result::Result<T, LoraError>;
