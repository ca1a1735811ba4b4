//! Kernel execution.
