//! The crate's one error type. Variants are structured: they name the argument
//! and the value, so a caller can act on them without parsing text.

use crate::dtype::DType;

/// Everything a call of this crate can refuse or fail with. Argument errors
/// are found before anything is launched.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// A buffer's length does not fit the shape the other arguments give it.
    #[error(
        "shape mismatch for `{what}`: its shape {expected:?} needs {} elements, the buffer holds {}",
        elements(.expected),
        elements(.got)
    )]
    ShapeMismatch {
        /// The operand.
        what: &'static str,
        /// The shape the other arguments imply.
        expected: Vec<usize>,
        /// What the buffer holds: its length, as a one-element shape.
        got: Vec<usize>,
    },

    /// A buffer holds fewer elements than its shape needs.
    #[error("buffer `{what}` too small: needs {needed} elements, has {len}")]
    BufferTooSmall {
        /// The operand.
        what: &'static str,
        /// The elements its shape needs.
        needed: usize,
        /// The elements it holds.
        len: usize,
    },

    /// A scalar argument outside its valid range.
    #[error("invalid value for `{what}`: {value} ({reason})")]
    InvalidArgument {
        /// The argument (or the expression of arguments) refused.
        what: &'static str,
        /// Its value, as text.
        value: String,
        /// The rule it breaks.
        reason: &'static str,
    },

    /// A dimension that breaks an alignment rule (e.g. K a multiple of 8).
    #[error("`{what}` = {value} must be a multiple of {multiple_of}")]
    Misaligned {
        /// The dimension.
        what: &'static str,
        /// Its value.
        value: usize,
        /// What it must be a multiple of.
        multiple_of: usize,
    },

    /// A buffer whose device address breaks the alignment its loads need
    /// (e.g. a view starting one element into an allocation).
    #[error("buffer `{what}` starts at device address {address:#x}, which is not {alignment}-byte aligned")]
    MisalignedAddress {
        /// The operand.
        what: &'static str,
        /// Its device address.
        address: u64,
        /// The alignment in bytes it needs.
        alignment: u64,
    },

    /// Two operands that share the row count M (X, Y, dY, dX, P, G, the row
    /// indices) hold different numbers of rows. M is not an argument: it is
    /// read from `first`'s length, so either operand may be the wrong one,
    /// and both are named with their row counts.
    #[error("`{first}` holds {first_rows} rows but `{second}` holds {second_rows}; operands that share M must agree")]
    RowsDisagree {
        /// The operand M is read from.
        first: &'static str,
        /// Its rows.
        first_rows: usize,
        /// The operand that disagrees with it.
        second: &'static str,
        /// Its rows.
        second_rows: usize,
    },

    /// A per-row adapter index outside `[-1, L)`.
    #[error("adapter index {index} at row {row} out of range [-1, {num_adapters})")]
    AdapterIndexOutOfRange {
        /// The lowest row with a bad index.
        row: usize,
        /// Its index.
        index: i64,
        /// The number of adapters L of the calls the status recorded.
        num_adapters: usize,
    },

    /// An output buffer overlaps an input it must not alias.
    #[error("output `{output}` aliases input `{input}`")]
    Aliasing {
        /// The output.
        output: &'static str,
        /// The buffer it overlaps.
        input: &'static str,
    },

    /// Buffers or streams from different CUDA contexts.
    #[error("`{what}` belongs to another CUDA context than the stream")]
    ContextMismatch {
        /// The buffer or stream.
        what: &'static str,
    },

    /// A result that holds NaN or Inf where the caller asked for a checked write.
    #[error("{op}: result holds a non-finite value in layer {layer}; nothing was written")]
    NonFinite {
        /// The operation.
        op: &'static str,
        /// The first layer whose result is not finite.
        layer: usize,
    },

    /// A valid request this crate does not implement.
    #[error("{op} does not support {dtype}: {reason}")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// The element type asked for.
        dtype: DType,
        /// Why it is not supported.
        reason: &'static str,
    },

    /// The problem of one element of a list argument (e.g. one layer of a merge).
    #[error("layer {layer}: {error}")]
    InLayer {
        /// The layer's position in the list.
        layer: usize,
        /// Its problem.
        error: Box<LoraError>,
    },

    /// The problem of one adapter of a list (e.g. one slot of a
    /// [`crate::PackedAdapters`]).
    #[error("adapter {adapter}: {error}")]
    InAdapter {
        /// The adapter's position in the list.
        adapter: usize,
        /// Its problem.
        error: Box<LoraError>,
    },

    /// A PEFT adapter directory asks for something this crate does not
    /// implement (`use_dora`, a `bias` other than `"none"`, a `peft_type`
    /// other than LORA, weights in a `.bin` pickle, a non-LoRA tensor).
    #[error("{file}: unsupported PEFT option `{option}` = {value}")]
    PeftUnsupported {
        /// The file the option was read from (or expected in).
        file: std::path::PathBuf,
        /// The option (a config key, or a tensor's name).
        option: String,
        /// Its value, as text.
        value: String,
    },

    /// A PEFT adapter file that cannot be read as PEFT writes it: bad JSON,
    /// a truncated safetensors file, a missing `lora_A`/`lora_B`, a tensor of
    /// the wrong shape or rank.
    #[error("{file}: `{item}`: {reason}")]
    PeftFormat {
        /// The file.
        file: std::path::PathBuf,
        /// What in it is wrong: a tensor's name, a config key, or the file itself.
        item: String,
        /// Why.
        reason: String,
    },

    /// A file of a PEFT adapter directory could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// An error from the CUDA driver.
    #[error("CUDA driver: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, LoraError>;

/// The element count of a shape, for messages (saturating: a message never overflows).
fn elements(shape: &[usize]) -> usize {
    shape.iter().fold(1usize, |acc, &d| acc.saturating_mul(d))
}
