//! The CUDA driver API with the C ABI of the toolkit's `cuda.h`, on top of the
//! executor. Exported from the `cdylib` as `libcuda.so` (SONAME `libcuda.so.1`).
