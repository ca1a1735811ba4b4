// The forward's tiled GEMM: fused Y = X.W0^T + bias + s.P.B^T and expand
// Y += s.P.B^T, for one adapter or one adapter per row (the shrink
// P = X~.A^T runs on the rank side, cuda/rank_side.cuh, and the decode path
// in cuda/decode.cu). Both are launches of one tiled GEMM over a "virtual K"
// (see forward_params.h):
// the adapter as extra K-steps on the same f32 accumulator as the base GEMM,
// each output written once.
//
// Tiles (tiles.cuh, shared with the backward): a CTA of 4 warps owns a 64x64
// output tile, each warp 32x32; K is staged in shared memory 32 at a time
// through a cp.async pipeline (3 stages for f16/bf16, 2 for f32). Large
// grids of f16/bf16 take lora_forward_gemm_<T>_128x128 instead (Tile128:
// 64x64 warp tiles, 4 stages, dynamic shared memory; the host picks it,
// src/forward/launch.rs): the same code on a bigger tile, so the same bits,
// with half the L2 sectors and shared wavefronts per mma. f16/bf16
// multiply on tensor cores (ldmatrix + mma.sync m16n8k16, f32
// accumulation); f32 multiplies with FMA in the same fragment layout, so the
// epilogue is shared. Both operands are RowTiles: X rows and W0 rows are
// contiguous in K. The producer enters each segment of the virtual K once,
// setting up per-thread copy plans (tiles.cuh, ChunkCopy); a whole K-step is
// then one comparison and four predicated cp.async per thread (f16/bf16),
// and the multiply's ldmatrix addresses are set up once per kernel.
//
// Tails by predication: rows past M or N, and K-steps past the segment's
// length, are zero-filled in shared memory; nothing outside a matrix, and no
// adapter padding (columns/rows past an adapter's rank), is ever read.
// Alignment: 16-byte cp.async for operands whose row stride is a multiple of
// 16 bytes and whose base is 16-byte aligned; any other operand (an odd rank
// stride, say) is loaded element by element — slower, never wrong.
//
// Small M (decode): when the output has fewer tiles than the device has SMs,
// the host splits the K-steps over gridDim.z CTAs per tile so that every SM
// streams W0; each split stores its raw f32 sums and lora_forward_reduce
// adds them in split order (deterministic), adds bias, rounds once.
//
// Scale: the adapter segment runs first; when it ends the accumulator rows are
// multiplied by their adapter's scale (in f32), then the base segment adds on.
// So Y = round(s.(P.B^T) + X.W0^T + bias): the contract's formula up to f32
// accumulation order, with P used exactly as stored (already rounded to T).

#include "dtype.cuh"
#include "forward_params.h"
#include "tiles.cuh"

namespace fused_lora {
namespace fwd {

using namespace tiles;

static_assert(LORA_FWD_TILE_M == Tile64::kRows && LORA_FWD_TILE_N == Tile64::kCols && LORA_FWD_TILE_K == kStep &&
                  LORA_FWD_THREADS == Tile64::kThreads,
              "forward_params.h describes the small tiles");
static_assert(LORA_FWD_BIG_TILE_M == Tile128::kRows && LORA_FWD_BIG_TILE_N == Tile128::kCols &&
                  LORA_FWD_THREADS == Tile128::kThreads,
              "forward_params.h describes the big tiles");
static_assert(LORA_FWD_WIDE_TILE_M == Tile128x64::kRows && LORA_FWD_WIDE_TILE_N == Tile128x64::kCols &&
                  LORA_FWD_THREADS == Tile128x64::kThreads,
              "forward_params.h describes the wide tiles");
constexpr int kTileK = kStep;

// One pipeline slot: a step's two operand tiles, adjacent so that one
// shared address locates both.
template <typename T, typename Cfg> struct Slot {
    T lhs[Cfg::kRows][RowTile<T>::kLd];
    T rhs[Cfg::kCols][RowTile<T>::kLd];
};

template <typename T, typename Cfg> struct Tiles {
    Slot<T, Cfg> slot[Cfg::template stages<T>()];
};

template <typename T, typename Cfg> struct Shared {
    // The operand tiles are dead once the K loop ends: the output tile
    // reuses their space.
    union alignas(16) {
        Tiles<T, Cfg> tiles;
        typename Cfg::OutTile out;
    };
    int row_adapter[Cfg::kRows];     // validated adapter of each tile row, -1 for none
    float row_scale[Cfg::kRows];     // its scale, 0 for none
    int present[Cfg::kRows];         // distinct adapters of the tile's rows
    int first_step[Cfg::kRows + 1];  // prefix sums of their K-step counts
    int num_present;
};

// A configuration's shared memory: static when it fits the 48 KB a launch
// gets without opting in (Tile64), dynamic otherwise (Tile128 and
// Tile128x64: the host launches them with LORA_FWD_BIG_SHARED_BYTES and
// LORA_FWD_WIDE_SHARED_BYTES, opted in through the function's maximum
// dynamic shared size).
template <typename T, typename Cfg> constexpr bool kDynamicShared = sizeof(Shared<T, Cfg>) > 48 * 1024;
// The dynamic shared memory the host reserves for a configuration.
template <typename Cfg> constexpr int kLaunchShared = 0;
template <> constexpr int kLaunchShared<Tile128> = LORA_FWD_BIG_SHARED_BYTES;
template <> constexpr int kLaunchShared<Tile128x64> = LORA_FWD_WIDE_SHARED_BYTES;

template <typename T, typename Cfg> __device__ __forceinline__ Shared<T, Cfg>& shared_storage() {
    if constexpr (kDynamicShared<T, Cfg>) {
        static_assert(sizeof(Shared<T, Cfg>) <= kLaunchShared<Cfg>, "the host's launch reserves enough");
        extern __shared__ __align__(16) unsigned char dynamic_shared[];
        return *reinterpret_cast<Shared<T, Cfg>*>(dynamic_shared);
    } else {
        __shared__ Shared<T, Cfg> sm;
        return sm;
    }
}

__device__ __forceinline__ int rank_of(const LoraGemmParams& p, int adapter) {
    return p.ranks ? reinterpret_cast<const int*>(p.ranks)[adapter] : p.rank;
}

// Reads, validates and records the adapter of each tile row, then lists the
// distinct adapters present with the K-steps each needs.
template <int kTileM>
__device__ void resolve_row_adapters(const LoraGemmParams& p, int m0, int* row_adapter, float* row_scale, int* present,
                                     int* first_step, int* num_present) {
    for (int i = threadIdx.x; i < kTileM; i += kThreads) {
        const int m = m0 + i;
        int adapter = -1;
        float scale = 0.0f;
        if (m < p.m && p.ad_mode != LORA_ADAPTER_NONE) {
            adapter = p.row_adapter ? reinterpret_cast<const int*>(p.row_adapter)[m] : 0;
            if (adapter < -1 || adapter >= p.num_adapters) {
                // Never dereferenced: the row becomes base-only, and the
                // caller learns of it through the status word.
                if (p.status) {
                    const unsigned long long report =
                        (static_cast<unsigned long long>(m) << 32) | static_cast<unsigned int>(adapter);
                    atomicMin(reinterpret_cast<unsigned long long*>(p.status), report);
                }
                adapter = -1;
            }
            if (adapter >= 0) scale = p.scales ? reinterpret_cast<const float*>(p.scales)[adapter] : p.scale;
        }
        row_adapter[i] = adapter;
        row_scale[i] = scale;
    }
    __syncthreads();
    list_present<kTileM>(row_adapter, present, first_step, num_present, [&](int adapter) {
        return (rank_of(p, adapter) + kTileK - 1) / kTileK;
    });
    __syncthreads();
}

template <typename T, typename Cfg> __device__ void gemm(const LoraGemmParams& p) {
    constexpr int kStages = Cfg::template stages<T>();
    constexpr int kTileM = Cfg::kRows;
    constexpr int kTileN = Cfg::kCols;
    constexpr int kWarpRows = Cfg::kWarpRows;
    constexpr int kWarpCols = Cfg::kWarpCols;
    constexpr int kWarpsCols = Cfg::kWarpsCols;
    constexpr int kFragsM = Cfg::kFragsM;
    constexpr int kFragsN = Cfg::kFragsN;
    using LhsTile = RowTile<T, kTileM>;
    using RhsTile = RowTile<T, kTileN>;
    Shared<T, Cfg>& sm = shared_storage<T, Cfg>();

    int tile_m, tile_n;
    grouped_tile(tile_m, tile_n);
    const int m0 = tile_m * kTileM;
    const int n0 = tile_n * kTileN;
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int warp_m0 = (warp / kWarpsCols) * kWarpRows;
    const int warp_n0 = (warp % kWarpsCols) * kWarpCols;

    resolve_row_adapters<kTileM>(p, m0, sm.row_adapter, sm.row_scale, sm.present, sm.first_step, &sm.num_present);
    // The virtual K: adapter steps [0, adapter_steps), then base steps.
    // Split-K: split z runs its share [first, last) of the virtual steps. The
    // scale multiplies whatever adapter steps a split ran, before any base
    // step of it; scaling each share and summing is s times the sum.
    const int adapter_steps = sm.first_step[sm.num_present];
    const int base_steps = p.x ? (p.k + kTileK - 1) / kTileK : 0;
    const int all_steps = adapter_steps + base_steps;
    const int steps_per_split = (all_steps + p.k_splits - 1) / p.k_splits;
    const int first = min(static_cast<int>(blockIdx.z) * steps_per_split, all_steps);
    const int last = min(first + steps_per_split, all_steps);
    const bool ran_adapter_steps = first < adapter_steps;

    const T* x = reinterpret_cast<const T*>(p.x);
    const T* w = reinterpret_cast<const T*>(p.w);
    const T* ad_lhs = reinterpret_cast<const T*>(p.ad_lhs);
    const T* ad_rhs = reinterpret_cast<const T*>(p.ad_rhs);
    const long long ad_lhs_ld = p.ad_lhs_ld;
    const long long ad_rhs_ld = p.ad_rhs_ld;
    const bool ad_lhs_vec = vector_loadable<T>(ad_lhs, ad_lhs_ld);
    // Every adapter's rhs starts ad_rhs_stride elements after the previous.
    const bool ad_rhs_vec = vector_loadable<T>(ad_rhs, ad_rhs_ld) && p.ad_rhs_stride % RowTile<T>::kChunk == 0;
    const bool base_vec = vector_loadable<T>(x, p.k) && vector_loadable<T>(w, p.k);

    // The producer walks the virtual steps in order, one segment (an
    // adapter's steps, then the base's) at a time. Entering a segment sets
    // up its windows and the per-thread copy plans; within it, a whole step
    // of operands that allow 16-byte copies is a plan's copy (a few
    // instructions per chunk), anything else (the partial last step of a
    // segment, unaligned operands) goes through `stage`.
    // Rows past M or N read as zero, and so do the lhs rows of other adapters
    // in an adapter step; columns past the segment's length likewise.
    int seg_begin = 0;      // virtual step where the current segment starts
    int seg_end = first;    // ... and ends (entering one at `first` sets it up)
    int seg_whole_end = 0;  // ... and where its whole steps end
    int seg_adapter = -1;   // its adapter, -1 for the base
    int fast_end = first;   // steps before this are whole steps of two plans
    int rhs_rows = p.n;     // rows of its right operand
    int seg_k_len = 0;      // its reduction length
    Source<T> lhs_src{}, rhs_src{};
    bool lhs_plan = false, rhs_plan = false;
    ChunkCopy<T, LhsTile> lhs_copy;
    ChunkCopy<T, RhsTile> rhs_copy;

    auto enter_segment = [&](int step) {
        int k_len;
        const T* lhs_base;
        const T* rhs_base;
        long long lhs_ld, rhs_ld;
        if (step < adapter_steps) {
            int i = 0;
            while (sm.first_step[i + 1] <= step) ++i;
            seg_begin = sm.first_step[i];
            seg_end = sm.first_step[i + 1];
            seg_adapter = sm.present[i];
            const int rank = rank_of(p, seg_adapter);
            // The expand reduces over the adapter's rank.
            k_len = rank;
            rhs_rows = p.n;
            lhs_base = ad_lhs;
            lhs_ld = ad_lhs_ld;
            rhs_base = ad_rhs + static_cast<long long>(seg_adapter) * p.ad_rhs_stride;
            rhs_ld = ad_rhs_ld;
            lhs_plan = ad_lhs_vec;
            rhs_plan = ad_rhs_vec;
        } else {
            seg_begin = adapter_steps;
            seg_end = all_steps;
            seg_adapter = -1;
            k_len = p.k;
            rhs_rows = p.n;
            lhs_base = x;
            lhs_ld = p.k;
            rhs_base = w;
            rhs_ld = p.k;
            lhs_plan = rhs_plan = base_vec;
        }
        seg_whole_end = seg_begin + k_len / kTileK;
        seg_k_len = k_len;
        fast_end = lhs_plan && rhs_plan ? min(seg_whole_end, last) : step;
        lhs_src = Source<T>{lhs_base, lhs_ld, 0, k_len, lhs_plan};
        rhs_src = Source<T>{rhs_base, rhs_ld, 0, k_len, rhs_plan};
        const int k0 = (step - seg_begin) * kTileK;
        const int adapter = seg_adapter;
        if (lhs_plan)
            lhs_copy.setup(lhs_base + static_cast<long long>(m0) * lhs_ld + k0, lhs_ld, kTileK, [&](int row, int) {
                return m0 + row < p.m && (adapter < 0 || sm.row_adapter[row] == adapter);
            });
        if (rhs_plan)
            rhs_copy.setup(rhs_base + static_cast<long long>(n0) * rhs_ld + k0, rhs_ld, kTileK,
                           [&](int row, int) { return n0 + row < rhs_rows; });
    };

    const uint32_t slots = shared_address(&sm.tiles.slot[0]);
    using SlotT = Slot<T, Cfg>;
    constexpr uint32_t kSlotBytes = sizeof(SlotT);
    constexpr uint32_t kRhsOffset = offsetof(SlotT, rhs);

    // Stages a step that is not a whole step of two plans (or enters a
    // segment) into slot `slot`.
    auto stage_other = [&](int step, int slot) {
        if (step >= last) return;
        if (step >= seg_end) enter_segment(step);
        const bool whole = step < seg_whole_end;
        const uint32_t at = slots + slot * kSlotBytes;
        if (step < fast_end) {
            lhs_copy.copy(at);
            rhs_copy.copy(at + kRhsOffset);
            return;
        }
        // The last, partial step of a segment whose length is whole chunks
        // (a rank of 16, say): the plans, with the chunks past it zero.
        const int k_left = seg_k_len - (step - seg_begin) * kTileK;
        if (!whole && lhs_plan && rhs_plan && k_left % RowTile<T>::kChunk == 0) {
            lhs_copy.copy_partial(at, k_left);
            rhs_copy.copy_partial(at + kRhsOffset, k_left);
            return;
        }
        if (whole && lhs_plan) {
            lhs_copy.copy(at);
        } else {
            Source<T> lhs = lhs_src;
            lhs.col0 = (step - seg_begin) * kTileK;
            const int adapter = seg_adapter;
            auto lhs_row = [&](int i) {
                const bool live = m0 + i < p.m && (adapter < 0 || sm.row_adapter[i] == adapter);
                return live ? m0 + i : -1;
            };
            stage<T, LhsTile>(sm.tiles.slot[slot].lhs, lhs, lhs_row);
        }
        if (whole && rhs_plan) {
            rhs_copy.copy(at + kRhsOffset);
        } else {
            Source<T> rhs = rhs_src;
            rhs.col0 = (step - seg_begin) * kTileK;
            stage<T, RhsTile>(sm.tiles.slot[slot].rhs, rhs, [&](int i) { return n0 + i < rhs_rows ? n0 + i : -1; });
        }
    };
    // Stages virtual step `step` (if this split has it) into slot `slot`:
    // the steady state is one comparison and the two plans' copies.
    auto stage_step = [&](int step, int slot) {
        if (step < fast_end) {
            const uint32_t at = slots + slot * kSlotBytes;
            lhs_copy.copy(at);
            rhs_copy.copy(at + kRhsOffset);
        } else {
            stage_other(step, slot);
        }
    };

    float acc[kFragsM][kFragsN][4];
    clear(acc);

    auto scale_rows = [&]() {
#pragma unroll
        for (int mi = 0; mi < kFragsM; ++mi)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const float s = sm.row_scale[warp_m0 + mi * 16 + lane / 4 + 8 * h];
#pragma unroll
                for (int ni = 0; ni < kFragsN; ++ni) {
                    acc[mi][ni][2 * h] *= s;
                    acc[mi][ni][2 * h + 1] *= s;
                }
            }
    };

    const WarpMultiply<T, false, false, Cfg> multiply(warp_m0, warp_n0, lane);
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
        stage_step(first + s, s);
        cp_async_commit();
    }
    // The step before which the adapter term is scaled (none: -1).
    const int scale_at = static_cast<int>(opaque(ran_adapter_steps ? adapter_steps : -1));
    // Pipeline slots as rotating counters: `read` holds step `step`, `write`
    // receives step + kStages - 1.
    int read = 0, write = kStages - 1;
    for (int step = first; step < last; ++step) {
        // The step has landed, and every warp is done with the previous
        // one, whose slot the next copy reuses.
        cp_async_wait<kStages - 2>();
        __syncthreads();
        stage_step(step + kStages - 1, write);
        cp_async_commit();
        if (step == scale_at) scale_rows();
        // Whole steps: tails are zero-filled, so the counts stay those of the tile grid.
        multiply(acc, sm.tiles.slot[read].lhs, sm.tiles.slot[read].rhs, kTileK);
        read = read == kStages - 1 ? 0 : read + 1;
        write = write == kStages - 1 ? 0 : write + 1;
    }
    cp_async_wait<0>();
    if (ran_adapter_steps && last <= adapter_steps) scale_rows();

    if (p.k_splits > 1) {
        // This split's raw f32 sums, for lora_forward_reduce.
        float* partials = reinterpret_cast<float*>(p.partials) + static_cast<long long>(blockIdx.z) * p.m * p.n;
        store_fragments(partials, p.n, p.m, p.n, acc, m0 + warp_m0, n0 + warp_n0, lane);
        return;
    }

    // Epilogue through shared memory, so that global stores are whole rows
    // of the tile: each warp writes 2 rows x 64 consecutive elements per
    // store instruction (full 32-byte sectors) instead of 8 row fragments.
    __syncthreads();  // every warp is done reading the operand tiles
    stage_output(sm.out, acc, warp_m0, warp_n0, lane);
    __syncthreads();

    store_output(sm.out, reinterpret_cast<T*>(p.out), reinterpret_cast<const T*>(p.y_in),
                 reinterpret_cast<const T*>(p.bias), m0, n0, p.m, p.n);
}

// Sums the splits in a fixed order (deterministic), adds bias and y_in, rounds once.
template <typename T> __device__ void reduce_splits(const LoraReduceParams& p) {
    const long long total = static_cast<long long>(p.m) * p.n;
    const long long at = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (at >= total) return;
    const float* partials = reinterpret_cast<const float*>(p.partials);
    float v = 0.0f;
    for (int z = 0; z < p.k_splits; ++z) v += partials[z * total + at];
    if (p.bias) v += to_f32(reinterpret_cast<const T*>(p.bias)[at % p.n]);
    if (p.y_in) v += to_f32(reinterpret_cast<const T*>(p.y_in)[at]);
    reinterpret_cast<T*>(p.out)[at] = from_f32<T>(v);
}

}  // namespace fwd
}  // namespace fused_lora

#define STAMP_GEMM(SUFFIX, TYPE)                                                           \
    extern "C" __global__ void __launch_bounds__(LORA_FWD_THREADS)                         \
        lora_forward_gemm_##SUFFIX(const LoraGemmParams params) {                          \
        fused_lora::fwd::gemm<TYPE, fused_lora::tiles::Tile64>(params);                    \
    }
FUSED_LORA_FOR_EACH_DTYPE(STAMP_GEMM)

// The 128x128 tile (f16/bf16).
#define STAMP_GEMM_BIG(SUFFIX, TYPE)                                                       \
    extern "C" __global__ void __launch_bounds__(LORA_FWD_THREADS)                         \
        lora_forward_gemm_##SUFFIX##_128x128(const LoraGemmParams params) {                \
        fused_lora::fwd::gemm<TYPE, fused_lora::tiles::Tile128>(params);                   \
    }
STAMP_GEMM_BIG(f16, __half)
STAMP_GEMM_BIG(bf16, __nv_bfloat16)

// The 128x64 tile (f16/bf16): half the columns of the 128x128 tile.
#define STAMP_GEMM_WIDE(SUFFIX, TYPE)                                                      \
    extern "C" __global__ void __launch_bounds__(LORA_FWD_THREADS)                         \
        lora_forward_gemm_##SUFFIX##_128x64(const LoraGemmParams params) {                 \
        fused_lora::fwd::gemm<TYPE, fused_lora::tiles::Tile128x64>(params);                \
    }
STAMP_GEMM_WIDE(f16, __half)
STAMP_GEMM_WIDE(bf16, __nv_bfloat16)

#include "forward_fused_p.cuh"

#define STAMP_REDUCE(SUFFIX, TYPE)                                                         \
    extern "C" __global__ void __launch_bounds__(LORA_FWD_REDUCE_THREADS)                  \
        lora_forward_reduce_##SUFFIX(const LoraReduceParams params) {                      \
        fused_lora::fwd::reduce_splits<TYPE>(params);                                      \
    }
FUSED_LORA_FOR_EACH_DTYPE(STAMP_REDUCE)
