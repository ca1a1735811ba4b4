//! The CUDA runtime on the emulated device: `libcudart.so` (SONAME
//! `libcudart.so.13`) with the C ABI of `cuda_runtime_api.h` for what
//! nvcc-compiled host code calls — the fat-binary and kernel registration
//! its start-up code makes, the `<<<>>>` launch sequence
//! (`__cudaPushCallConfiguration`, `__cudaPopCallConfiguration`,
//! `__cudaGetKernel`, `__cudaLaunchKernel[_ptsz]`), `cudaLaunchKernel` —
//! and the device, memory, copy, stream, function-attribute, occupancy and
//! error calls such code makes around its launches (candle-kernels' static
//! GGUF kernels use exactly these).
//!
//! Kernels run from the PTX nvcc embeds in each fat binary (`fatbin`):
//! loaded through the emulated driver as a module, in the thread's current
//! context, the first time one of its kernels is used; each host stub maps
//! to its kernel by the mangled name nvcc registered. So a `<<<>>>` launch is
//! a `cuLaunchKernel` with every check of the emulator on, in the same
//! process, device and context as driver-API code (cudarc's), and on the same
//! streams. A fat binary with machine code only (`-gencode ...,code=sm_80`)
//! cannot run: its launches fail with `cudaErrorNoKernelImageForDevice` and
//! a line on stderr that says how to embed PTX.
//!
//! Not emulated: relocatable device code (`-rdc`), the symbol calls
//! (`cudaMemcpyToSymbol`...), events, graphs, `cudaGetDeviceProperties`,
//! unified and host-registered memory.

#![allow(non_snake_case)]

mod driver;
#[allow(dead_code)]
mod driver_names;
mod fatbin;
mod launch;
mod names;
mod null_stream;
mod registry;
mod runtime;
mod state;
