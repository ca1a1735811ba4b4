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

//
// The CTA tile is chosen at compile time by CUTLASS_GEMM_CTA_TILE: 64 (the
// default) is a 64x64x32 tile of 4 warps of 32x32, small enough for the
// emulator's correctness tests; 128 is CUTLASS's 128x128x32 tile of 4 warps
// of 64x64, the configuration its Sm80 GEMMs use for large problems and the
// baseline the performance report and the model's calibration compare with.
#ifndef CUTLASS_GEMM_CTA_TILE
#define CUTLASS_GEMM_CTA_TILE 64
#endif
#if CUTLASS_GEMM_CTA_TILE == 64
using CutlassGemmCtaTile = cutlass::gemm::GemmShape<64, 64, 32>;
using CutlassGemmWarpTile = cutlass::gemm::GemmShape<32, 32, 32>;
#elif CUTLASS_GEMM_CTA_TILE == 128
using CutlassGemmCtaTile = cutlass::gemm::GemmShape<128, 128, 32>;
using CutlassGemmWarpTile = cutlass::gemm::GemmShape<64, 64, 32>;
#else
#error "CUTLASS_GEMM_CTA_TILE must be 64 or 128"
#endif

using CutlassGemmBf16 = cutlass::gemm::device::Gemm<
    cutlass::bfloat16_t, cutlass::layout::RowMajor,  // A [M, K]
    cutlass::bfloat16_t, cutlass::layout::RowMajor,  // B [K, N]: ldmatrix.trans path
    float, cutlass::layout::RowMajor,                // C, D [M, N]
    float,                                           // accumulator
    cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,
    CutlassGemmCtaTile,                    // threadblock tile
    CutlassGemmWarpTile,                   // warp tile: 4 warps per CTA
    cutlass::gemm::GemmShape<16, 8, 16>,   // mma.sync.m16n8k16
    cutlass::epilogue::thread::LinearCombination<float, 4, float, float>,
    cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<>,
    3>;  // stages

using CutlassGemmBf16Kernel = CutlassGemmBf16::GemmKernel;
