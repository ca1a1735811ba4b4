//! The naive CPU reference (f64 accumulation): the truth every kernel is tested against.
