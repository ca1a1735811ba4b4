// The CUTLASS Sm80 tensor-core GEMM the emulator must run unchanged:
// D[M,N] (f32, row-major) = A[M,K] (bf16, row-major) * B[K,N] (bf16, row-major),
// f32 accumulation, 3-stage cp.async mainloop with ldmatrix and
// mma.sync.m16n8k16. Shared by the device source (cutlass_gemm.cu) and the
// host program that fills the kernel's Params (cutlass_gemm_params.cu), so the
// two can never disagree on the type.
#pragma once

#include <cutlass/cutlass.h>
#include <cutlass/gemm/device/gemm.h>
#include <cutlass/numeric_types.h>

using CutlassGemmBf16 = cutlass::gemm::device::Gemm<
    cutlass::bfloat16_t, cutlass::layout::RowMajor,  // A [M, K]
    cutlass::bfloat16_t, cutlass::layout::RowMajor,  // B [K, N]: ldmatrix.trans path
    float, cutlass::layout::RowMajor,                // C, D [M, N]
    float,                                           // accumulator
    cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,
    cutlass::gemm::GemmShape<64, 64, 32>,  // threadblock tile
    cutlass::gemm::GemmShape<32, 32, 32>,  // warp tile: 4 warps per CTA
    cutlass::gemm::GemmShape<16, 8, 16>,   // mma.sync.m16n8k16
    cutlass::epilogue::thread::LinearCombination<float, 4, float, float>,
    cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<>,
    3>;  // stages

using CutlassGemmBf16Kernel = CutlassGemmBf16::GemmKernel;

// The same GEMM with CUTLASS's larger Sm80 configuration: 128x128x32 CTA
// tile, 64x64x32 warp tiles (4 warps), 3 stages. The model's calibration runs
// this one (emu/tests/perf_model.rs).
using CutlassGemmBf16Large = cutlass::gemm::device::Gemm<
    cutlass::bfloat16_t, cutlass::layout::RowMajor,
    cutlass::bfloat16_t, cutlass::layout::RowMajor,
    float, cutlass::layout::RowMajor,
    float,
    cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,
    cutlass::gemm::GemmShape<128, 128, 32>,
    cutlass::gemm::GemmShape<64, 64, 32>,
    cutlass::gemm::GemmShape<16, 8, 16>,
    cutlass::epilogue::thread::LinearCombination<float, 4, float, float>,
    cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<>,
    3>;

using CutlassGemmBf16LargeKernel = CutlassGemmBf16Large::GemmKernel;
