//! The CUDA driver API with the C ABI of the toolkit's `cuda.h`, on top of the
//! `ptx-emu` executor. Exported from the `cdylib` as `libcuda.so` (SONAME
//! `libcuda.so.1`). The one emulated device lives here; the emulated
//! libraries (`libcublas.so`, `libcublasLt.so`, `libcurand.so`) link against
//! this library and reach the device through the emulator-private exports
//! of [`private`].
//!
//! One emulated sm_80-class device (ordinal 0). Semantics that differ from
//! a GPU, on purpose:
//! - Execution is eager: every call, the `Async` copies and launches
//!   included, has finished when it returns. Streams are handles that are
//!   validated; synchronisation waits for nothing.
//! - Events record host time, so `cuEventElapsedTime` reports emulator time.
//! - A launch whose checks find a fault (memcheck, racecheck, initcheck,
//!   synccheck) returns the fault's code (700, 716, 719, ...) and prints each
//!   finding to stderr as `ptx-emu: ...`. The fault is sticky, as on a GPU:
//!   every later call that touches the context returns it, until the context
//!   is destroyed, the primary context is released by every holder, or
//!   `cuDevicePrimaryCtxReset` is called.
//! - Modules are PTX text only; cubin and fatbin images are
//!   `CUDA_ERROR_INVALID_IMAGE`, PTX the executor cannot load is
//!   `CUDA_ERROR_INVALID_PTX` with the reason on stderr.
//!
//! Environment: `PTX_EMU_GLOBAL_MEMORY_BYTES` sets the device's memory
//! capacity (default 40 GiB); `PTX_EMU_COMPUTE_CAPABILITY=90` makes the
//! device present itself as compute capability 9.0 (default 8.0; see
//! [`device`]); `PTX_EMU_COUNTERS_FILE` names a file to which
//! each launch's counters are appended as one JSON line; the executor's
//! check switches (`PTX_EMU_MEMCHECK=0`, ...) apply to every launch;
//! `PTX_EMU_LEAK_CHECK=1` reports the allocations a context still holds
//! when it is destroyed ([`leaks`]).
//! `ptxEmuIsEmulator`, `ptxEmuGetLastLaunchCountersJson` and
//! `ptxEmuGetRecentLaunchCountersJson` are extra exports for tests to find
//! with `dlsym`.
//!
//! Every export runs inside one guard (`guard::ffi_guard`): a panic never
//! crosses the C ABI and only `CUresult` values that cuda.h defines are
//! returned.

pub mod context;
pub mod device;
mod guard;
mod image;
pub mod introspection;
pub mod launch;
pub mod launch_ex;
pub mod leaks;
pub mod memory;
pub mod module;
pub mod occupancy;
mod params;
pub mod private;
pub mod result;
mod state;
pub mod stream;
pub mod tensor_map;
