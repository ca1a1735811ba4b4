// The CUTLASS 3.x Hopper GEMMs the emulator must run unchanged:
// D[M,N] (f32, row-major) = A[M,K] (bf16, row-major) * B (bf16, given as
// [N,K] row-major, i.e. CUTLASS's column-major K-major B), f32 accumulation,
// built by CUTLASS's CollectiveBuilder for arch::Sm90: a TMA warp-specialized
// mainloop (a producer warp issues cp.async.bulk.tensor into a multistage
// mbarrier pipeline, consumer warpgroups run wgmma.mma_async on 128x128x64
// tiles), cluster 1x1x1. Shared by the device source (cutlass_gemm_sm90.cu)
// and the host program that fills the kernel's Params
// (cutlass_gemm_sm90_params.cu), so the two can never disagree on the type.
//
// Two configurations, one per epilogue family:
// - `CutlassSm90Cooperative`: KernelTmaWarpSpecializedCooperative (two
//   consumer warpgroups share each tile, persistent tile scheduler) with the
//   TMA epilogue (accumulators staged through shared memory, stored by
//   cp.async.bulk.tensor).
// - `CutlassSm90WarpSpecialized`: KernelTmaWarpSpecialized (one consumer
//   warpgroup, one tile per CTA) with the default epilogue (no shared
//   memory: predicated st.global straight from the accumulators).
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/kernel/gemm_universal.hpp>
#include <cutlass/numeric_types.h>

namespace sm90_gemm {

using ElementA = cutlass::bfloat16_t;
using LayoutA = cutlass::layout::RowMajor;     // [M, K], K-major
using ElementB = cutlass::bfloat16_t;
using LayoutB = cutlass::layout::ColumnMajor;  // [K, N] column-major = [N, K] row-major, K-major
using ElementC = float;                        // C is never read (beta = 0); D serves as C
using LayoutC = cutlass::layout::RowMajor;
using ElementD = float;
using LayoutD = cutlass::layout::RowMajor;
using ElementAccumulator = float;
// 16-byte TMA alignment: 8 bf16, 4 f32 elements.
constexpr int kAlignmentA = 8;
constexpr int kAlignmentB = 8;
constexpr int kAlignmentCD = 4;

using TileShape = cute::Shape<cute::_128, cute::_128, cute::_64>;
using ClusterShape = cute::Shape<cute::_1, cute::_1, cute::_1>;
using ProblemShape = cute::Shape<int, int, int, int>;  // M, N, K, L (batch)

template <class KernelSchedule, class EpilogueSchedule>
struct Config {
    using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
        cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
        cutlass::epilogue::collective::EpilogueTileAuto, ElementAccumulator, ElementAccumulator, ElementC,
        LayoutC, kAlignmentCD, ElementD, LayoutD, kAlignmentCD, EpilogueSchedule>::CollectiveOp;

    using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
        cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, ElementA, LayoutA, kAlignmentA, ElementB, LayoutB,
        kAlignmentB, ElementAccumulator, TileShape, ClusterShape,
        cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
            sizeof(typename CollectiveEpilogue::SharedStorage))>,
        KernelSchedule>::CollectiveOp;

    using Kernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, CollectiveMainloop, CollectiveEpilogue>;
};

}  // namespace sm90_gemm

using CutlassSm90Cooperative = sm90_gemm::Config<cutlass::gemm::KernelTmaWarpSpecializedCooperative,
                                                 cutlass::epilogue::TmaWarpSpecializedCooperative>::Kernel;

using CutlassSm90WarpSpecialized =
    sm90_gemm::Config<cutlass::gemm::KernelTmaWarpSpecialized, cutlass::epilogue::NoSmemWarpSpecialized>::Kernel;
