//! The argument checks every entry point shares (forward, backward, merge,
//! optimizer steps, initialisation): one definition each, so a rule and the
//! error it returns are the same wherever the rule applies. Each check returns
//! the structured error that names the operand and the numbers involved.

use std::sync::Arc;

use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut, SyncOnDrop};

use crate::dtype::LoraDType;
use crate::error::{LoraError, Result};
use crate::kernels::check_same_context;

/// A dimension that must be at least 1 and fit the kernels' 32-bit ints.
pub(crate) fn check_dim(what: &'static str, value: usize) -> Result<i32> {
    if value == 0 {
        return Err(LoraError::InvalidArgument { what, value: "0".into(), reason: "must be at least 1" });
    }
    i32::try_from(value).map_err(|_| LoraError::InvalidArgument {
        what,
        value: value.to_string(),
        reason: "must fit in a 32-bit int",
    })
}

/// A buffer of exactly `shape`'s element count.
pub(crate) fn check_len(what: &'static str, len: usize, shape: &[usize]) -> Result<()> {
    let expected = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    match expected {
        Some(e) if e == len => Ok(()),
        Some(_) => Err(LoraError::ShapeMismatch { what, expected: shape.to_vec(), got: vec![len] }),
        None => Err(LoraError::InvalidArgument { what, value: format!("{shape:?}"), reason: "too many elements" }),
    }
}

/// The element count of `shape`, or the error for one `usize` cannot hold.
pub(crate) fn element_count(what: &'static str, shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| LoraError::InvalidArgument {
        what,
        value: format!("{shape:?}"),
        reason: "too many elements",
    })
}

/// `len / cols`: the row count of a `[rows, cols]` buffer `what` whose row
/// count is not given but implied by its length.
pub(crate) fn rows_of(what: &'static str, len: usize, cols: usize) -> Result<usize> {
    check_dim("k", cols)?;
    if len == 0 || len % cols != 0 {
        return Err(LoraError::ShapeMismatch { what, expected: vec![len.div_ceil(cols).max(1), cols], got: vec![len] });
    }
    check_dim("m", len / cols)?;
    Ok(len / cols)
}

/// `len / rows`: the column count of a `[rows, cols]` buffer `what` whose
/// row count is given (A `[r, K]` with K implied); the error shows the shape
/// in that order.
pub(crate) fn cols_of(what: &'static str, len: usize, rows: usize) -> Result<usize> {
    check_dim("rank", rows)?;
    if len == 0 || len % rows != 0 {
        return Err(LoraError::ShapeMismatch { what, expected: vec![rows, len.div_ceil(rows).max(1)], got: vec![len] });
    }
    Ok(len / rows)
}

/// Two operands that share the row count M: `what`, `[rows, cols]` by its
/// length `len`, must have the `m` rows already read from `source`'s length.
/// A length that is not a whole number of rows is `what`'s
/// [`LoraError::ShapeMismatch`]; a whole but different number of rows names
/// both operands ([`LoraError::RowsDisagree`]), since either may be the wrong one.
pub(crate) fn check_rows(source: &'static str, m: usize, what: &'static str, len: usize, cols: usize) -> Result<()> {
    if len % cols != 0 || len == 0 {
        return Err(LoraError::ShapeMismatch { what, expected: vec![m, cols], got: vec![len] });
    }
    let rows = len / cols;
    if rows != m {
        return Err(LoraError::RowsDisagree { first: source, first_rows: m, second: what, second_rows: rows });
    }
    Ok(())
}

/// The buffer lives in the stream's context (compared by driver handle: two
/// `CudaContext` handles on the same primary context are the same context).
pub(crate) fn check_context(
    stream: &Arc<CudaStream>,
    what: &'static str,
    buffer_stream: &Arc<CudaStream>,
) -> Result<()> {
    check_same_context(what, buffer_stream, stream.context())
}

/// A scale the kernels multiply by: finite.
pub(crate) fn check_scale(what: &'static str, scale: f32) -> Result<()> {
    if scale.is_finite() {
        Ok(())
    } else {
        Err(LoraError::InvalidArgument { what, value: scale.to_string(), reason: "must be finite" })
    }
}

/// A host-side f64 value the kernels receive as f32: it must be finite
/// there too (1e39 is a finite f64 but an infinite f32). Returns the f32.
pub(crate) fn f32_param(what: &'static str, value: f64) -> Result<f32> {
    if !value.is_finite() {
        return Err(LoraError::InvalidArgument { what, value: value.to_string(), reason: "must be finite" });
    }
    let rounded = value as f32;
    if rounded.is_finite() {
        Ok(rounded)
    } else {
        Err(LoraError::InvalidArgument {
            what,
            value: value.to_string(),
            reason: "must be finite in f32 (magnitude at most 3.4028235e38), the precision the kernels compute in",
        })
    }
}

/// As [`f32_param`], and not negative.
pub(crate) fn non_negative_f32_param(what: &'static str, value: f64) -> Result<f32> {
    let rounded = f32_param(what, value)?;
    if value >= 0.0 {
        Ok(rounded)
    } else {
        Err(LoraError::InvalidArgument { what, value: value.to_string(), reason: "must be non-negative" })
    }
}

/// Elements per 16-byte load: the K granularity of the vectorised operands.
pub(crate) fn chunk_elements<T: LoraDType>() -> usize {
    16 / T::DTYPE.size_bytes()
}

/// K must split rows into whole 16-byte chunks.
pub(crate) fn check_k_aligned<T: LoraDType>(k: usize) -> Result<()> {
    let chunk = chunk_elements::<T>();
    if k % chunk == 0 {
        Ok(())
    } else {
        Err(LoraError::Misaligned { what: "k", value: k, multiple_of: chunk })
    }
}

/// A device address that 16-byte loads can use.
pub(crate) fn check_address(what: &'static str, address: u64) -> Result<()> {
    const ALIGNMENT: u64 = 16;
    if address % ALIGNMENT == 0 {
        Ok(())
    } else {
        Err(LoraError::MisalignedAddress { what, address, alignment: ALIGNMENT })
    }
}

/// The device byte range of a buffer, for the aliasing checks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    pub what: &'static str,
    pub start: u64,
    pub end: u64,
}

impl Span {
    pub fn new(what: &'static str, address: u64, bytes: usize) -> Self {
        Span { what, start: address, end: address + bytes as u64 }
    }

    /// `len` elements of `E` at `address`: each buffer sized by its own
    /// element type (an i32 index buffer next to f16 data is 4 bytes a row).
    pub fn of<E>(what: &'static str, address: u64, len: usize) -> Self {
        Span::new(what, address, len * std::mem::size_of::<E>())
    }

    pub fn overlaps(&self, other: &Span) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// An output must not overlap any input (CTAs read inputs while others write).
pub(crate) fn check_no_alias(output: &Span, inputs: &[Span]) -> Result<()> {
    match inputs.iter().find(|input| output.overlaps(input)) {
        Some(input) => Err(LoraError::Aliasing { output: output.what, input: input.what }),
        None => Ok(()),
    }
}

/// No two of `spans` overlap (for kernels that read and write every buffer
/// element by element, in an order nobody controls). The first of the pair
/// is reported as the output.
pub(crate) fn check_disjoint(spans: &[Span]) -> Result<()> {
    for (i, a) in spans.iter().enumerate() {
        if let Some(b) = spans[i + 1..].iter().find(|b| a.overlaps(b)) {
            return Err(LoraError::Aliasing { output: a.what, input: b.what });
        }
    }
    Ok(())
}

/// Device addresses taken for one call; the guards keep the stream ordering
/// of each buffer until the launches are enqueued. Every span is sized in
/// the buffer's own element type.
pub(crate) struct Pointers<'s> {
    stream: &'s CudaStream,
    guards: Vec<SyncOnDrop<'s>>,
}

impl<'s> Pointers<'s> {
    pub(crate) fn new(stream: &'s CudaStream) -> Self {
        Pointers { stream, guards: Vec::new() }
    }

    pub(crate) fn read<E, B: DevicePtr<E>>(&mut self, what: &'static str, buffer: &'s B) -> Span {
        let (address, guard) = buffer.device_ptr(self.stream);
        self.guards.push(guard);
        Span::of::<E>(what, address, buffer.len())
    }

    pub(crate) fn write<E, B: DevicePtrMut<E>>(&mut self, what: &'static str, buffer: &'s mut B) -> Span {
        let len = buffer.len();
        let (address, guard) = buffer.device_ptr_mut(self.stream);
        self.guards.push(guard);
        Span::of::<E>(what, address, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_params_must_be_finite_in_f32() {
        assert_eq!(f32_param("lr", 1e-3).ok(), Some(1e-3f32));
        assert_eq!(f32_param("lr", 3.4e38).ok(), Some(3.4e38f32));
        for bad in [1e39, -1e39, 3.5e38, f64::NAN, f64::INFINITY] {
            assert!(matches!(f32_param("lr", bad), Err(LoraError::InvalidArgument { what: "lr", .. })), "{bad}");
        }
        assert!(matches!(non_negative_f32_param("eps", -1e-9), Err(LoraError::InvalidArgument { what: "eps", .. })));
    }

    #[test]
    fn spans_are_sized_by_their_own_element_type() {
        // Four i32 indices at 0x100 end at 0x110, not 0x108 as four halves would.
        let index = Span::of::<i32>("index", 0x100, 4);
        let y = Span::of::<half::f16>("y", 0x10c, 2);
        assert!(y.overlaps(&index));
        assert!(matches!(check_no_alias(&y, &[index]), Err(LoraError::Aliasing { output: "y", input: "index" })));
    }

    #[test]
    fn row_counts_name_both_operands() {
        assert!(check_rows("x", 4, "y", 4 * 16, 16).is_ok());
        assert!(matches!(
            check_rows("x", 4, "y", 5 * 16, 16),
            Err(LoraError::RowsDisagree { first: "x", first_rows: 4, second: "y", second_rows: 5 })
        ));
        assert!(matches!(check_rows("x", 4, "y", 17, 16), Err(LoraError::ShapeMismatch { what: "y", .. })));
        // A [r, K] with K implied: the shape reads [r, K], not [K, r].
        match cols_of("a", 4 * 16 - 1, 4) {
            Err(LoraError::ShapeMismatch { what: "a", expected, .. }) => assert_eq!(expected, vec![4, 16]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lengths_must_match_shapes_without_overflow() {
        assert!(check_len("a", 12, &[3, 4]).is_ok());
        assert!(matches!(check_len("a", 11, &[3, 4]), Err(LoraError::ShapeMismatch { what: "a", .. })));
        assert!(check_len("a", 0, &[usize::MAX, 2]).is_err());
    }
}
