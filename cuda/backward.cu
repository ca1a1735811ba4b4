// The backward kernels: G = dY.B, dB = s.dY^T.P, dA = s.G^T.X and
// dX = dY.W0 + s.G.A, for one adapter or one adapter per row (the formulas
// and their rounding points are in backward_params.h).
//
// Two tiled GEMMs do the work, on the forward's machinery (tiles.cuh: 64x64
// output tiles, 4 warps of 32x32, the reduction staged in shared memory 32
// at a time through a cp.async pipeline, f16/bf16 on tensor cores with f32
// accumulation, f32 on FMA in the same fragment layout):
//
// - lora_backward_g / lora_backward_dx: "row" GEMMs, one output row per
//   token. As in the forward, the reduction is virtual: for every adapter
//   present among the tile's rows, its K-steps with the rows of other
//   adapters masked to zero, then (dX only) the base K-steps on the same
//   accumulator. dX on large f16/bf16 grids takes
//   lora_backward_dx_<T>_128x128 (lora_backward_dx_dropout_<T>_128x128 with
//   dropout) instead (Tile128: 64x64 warp tiles, 4 stages, dynamic shared
//   memory, grouped CTA order; the host picks it, src/backward.rs): the
//   same code on a bigger tile, so the same bits. Without dropout, either
//   tile can run dA's CTAs in the same launch (dx_da, dx_da_small below). G: dY [M, N] times B_l [N, r]; dX: G [M, r] times A_l [r, K],
//   each element scaled by its row's s (and the dropout factor), then dY
//   times W0 [N, K]. The right operand is always read in its stored layout,
//   reduction-major (B_l, A_l, W0 are [reduction, columns] row-major):
//   tiles are copied as they are and transposed by ldmatrix.trans. No
//   transposed copy of W0 exists anywhere. Each segment is entered once,
//   setting up per-thread copy plans (tiles.cuh, ChunkCopy): a whole step
//   is one comparison and the plans' predicated cp.async.
// - lora_backward_rowsum: dB_l = dY^T.P and dA_l = G^T.X~, reductions over
//   the rows of M whose adapter is l. Both operands are [M, ...] row-major,
//   so both tiles are reduction-major and both go through ldmatrix.trans.
//   A CTA owns one output tile of one adapter for one fixed chunk of rows
//   (a split): it lists its chunk's rows of adapter l in order (a warp
//   ballot, so the list is the same on every run and device) and gathers
//   them 32 at a time. Rows of other adapters are never read, so an
//   adapter costs what its rows cost. Each split stores its f32 partial;
//   lora_backward_finish adds the splits in split order, scales, rounds
//   once. No floating-point atomics anywhere: bit-identical run to run.
//
// Tails by predication: rows and columns outside a matrix, and an
// adapter's padding past its rank, read as zero and are never loaded.
// Operands whose row stride and base allow 16-byte copies use cp.async;
// any other operand is loaded element by element (slower, never wrong).
// Warps whose whole 32x32 sub-tile lies past the valid output (a rank of
// 16 in a 64-wide tile) skip their multiplies.
//
// Dropout: the mask is regenerated (dropout.cuh) where it is needed: when
// X~ is staged for dA, and on dX's adapter term; it is never stored.
//
// Adapter indices are validated where they are read: a row whose index lies
// outside [-1, L) never addresses an adapter; it is treated as -1 (G row 0,
// base-only dX, excluded from every dA/dB) and lora_backward_g reports it
// through the status word, as the forward does.

#include "backward_params.h"
#include "dtype.cuh"
#include "dropout.cuh"
#include "rank_side.cuh"
#include "tiles.cuh"

namespace fused_lora {
namespace bwd {

using namespace tiles;

static_assert(LORA_BWD_TILE_ROWS == kTileRows && LORA_BWD_TILE_COLS == kTileCols && LORA_BWD_TILE_K == kStep &&
                  LORA_BWD_GEMM_THREADS == kThreads,
              "backward_params.h describes the shared tiles");
static_assert(LORA_BWD_BIG_TILE_ROWS == Tile128::kRows && LORA_BWD_BIG_TILE_COLS == Tile128::kCols &&
                  LORA_BWD_GEMM_THREADS == Tile128::kThreads,
              "backward_params.h describes dX's big tile");

__device__ __forceinline__ int rank_of(const LoraBwdParams& p, int adapter) {
    return p.ranks ? reinterpret_cast<const int*>(p.ranks)[adapter] : p.rank;
}

__device__ __forceinline__ float scale_of(const LoraBwdParams& p, int adapter) {
    return p.scales ? reinterpret_cast<const float*>(p.scales)[adapter] : p.scale;
}

// The validated adapter of row m: its index, or -1 for none or out of range.
__device__ __forceinline__ int adapter_of(const LoraBwdParams& p, int m) {
    const int adapter = p.row_adapter ? reinterpret_cast<const int*>(p.row_adapter)[m] : 0;
    return adapter >= 0 && adapter < p.num_adapters ? adapter : -1;
}

// The dropout of the adapter input the launch describes (dropout.cuh).
__device__ __forceinline__ DropoutMask mask_of(const LoraBwdParams& p) {
    return DropoutMask{p.dropout_p, p.inv_keep, p.seed, p.offset, p.k};
}

// ---------------------------------------------------------------------------
// G and dX: one output row per token.

// One pipeline slot: a step's two operand tiles, adjacent so that one
// shared address locates both.
template <typename T, typename Cfg> struct RowGemmSlot {
    T lhs[Cfg::kRows][RowTile<T, Cfg::kRows>::kLd];
    T rhs[kStep][RedTile<T, Cfg::kCols>::kLd];
};

template <typename T, typename Cfg> struct RowGemmShared {
    // The operand tiles are dead once the reduction ends: the output tile
    // reuses their space.
    union alignas(16) {
        RowGemmSlot<T, Cfg> slot[Cfg::template stages<T>()];
        typename Cfg::OutTile out;
    };
    int row_adapter[Cfg::kRows];     // validated adapter of each tile row, -1 for none
    float row_scale[Cfg::kRows];     // its scale (dX), 0 for none
    int present[Cfg::kRows];         // distinct adapters of the tile's rows
    int first_step[Cfg::kRows + 1];  // prefix sums of their reduction steps
    int num_present;
};

// A configuration's shared memory: static when it fits the 48 KB a launch
// gets without opting in (Tile64), dynamic otherwise (Tile128: the host
// launches it with LORA_BWD_BIG_SHARED_BYTES, opted in through the
// function's maximum dynamic shared size).
template <typename T, typename Cfg> __device__ __forceinline__ RowGemmShared<T, Cfg>& row_gemm_storage() {
    if constexpr (sizeof(RowGemmShared<T, Cfg>) > 48 * 1024) {
        static_assert(sizeof(RowGemmShared<T, Cfg>) <= LORA_BWD_BIG_SHARED_BYTES, "the host's launch reserves enough");
        extern __shared__ __align__(16) unsigned char dynamic_shared[];
        return *reinterpret_cast<RowGemmShared<T, Cfg>*>(dynamic_shared);
    } else {
        __shared__ RowGemmShared<T, Cfg> sm;
        return sm;
    }
}

// What one virtual reduction step multiplies.
struct StepInfo {
    int adapter;     // -1: a base step
    int k0;          // first reduction index of the step
    int k_valid;     // reduction length of the segment
    int cols_valid;  // output columns the right operand has
};

// Reads, validates and records the adapter of each tile row, then lists the
// distinct adapters present (in order of first appearance: a fixed
// summation order) with the reduction steps each needs.
template <typename T, bool kDx, typename Cfg>
__device__ void resolve_rows(const LoraBwdParams& p, int m0, RowGemmShared<T, Cfg>& sm) {
    for (int i = threadIdx.x; i < Cfg::kRows; i += kThreads) {
        const int m = m0 + i;
        int adapter = -1;
        if (m < p.m) {
            const int index = p.row_adapter ? reinterpret_cast<const int*>(p.row_adapter)[m] : 0;
            if ((index < -1 || index >= p.num_adapters) && p.status) {
                const unsigned long long report = (static_cast<unsigned long long>(m) << 32) | static_cast<unsigned int>(index);
                atomicMin(reinterpret_cast<unsigned long long*>(p.status), report);
            }
            adapter = adapter_of(p, m);
        }
        sm.row_adapter[i] = adapter;
        sm.row_scale[i] = adapter >= 0 ? scale_of(p, adapter) : 0.0f;
    }
    __syncthreads();
    // G reduces over N, dX's adapter term over the adapter's rank.
    list_present<Cfg::kRows>(sm.row_adapter, sm.present, sm.first_step, &sm.num_present,
                 [&](int adapter) { return ((kDx ? rank_of(p, adapter) : p.n) + kStep - 1) / kStep; });
    __syncthreads();
}

// G [m, r_max] = round_T(dY . B_l) (kDx false), or
// dX [m, k] = round_T(s_l . (G . A_l) (. mask / (1 - p)) + dY . W0) (kDx true),
// on the tile configuration Cfg (Tile64; Tile128 for dX on large grids).
// kDropout: whether the dropout mask's code is compiled in (the host sends a
// launch with dropout only to a kernel that has it).
// In the CTA's shared memory `sm` (row_gemm below: the configuration's own;
// dx_da_small: a union with dA's).
template <typename T, bool kDx, typename Cfg, bool kDropout>
__device__ __forceinline__ void row_gemm_in(const LoraBwdParams& p, RowGemmShared<T, Cfg>& sm, int extra_cols) {
    constexpr int kStages = Cfg::template stages<T>();
    constexpr int kTileRows = Cfg::kRows;
    constexpr int kTileCols = Cfg::kCols;
    constexpr int kWarpRows = Cfg::kWarpRows;
    constexpr int kWarpCols = Cfg::kWarpCols;
    constexpr int kWarpsCols = Cfg::kWarpsCols;
    constexpr int kFragsM = Cfg::kFragsM;
    constexpr int kFragsN = Cfg::kFragsN;
    using LhsTile = RowTile<T, kTileRows>;
    using RhsTile = RedTile<T, kTileCols>;
    // f16/bf16 dX folds the adapter term into the accumulator (below).
    constexpr bool kFold = kDx && sizeof(T) == 2;

    // Tile64 keeps the plain CTA order (the grouped order would raise its
    // register count, see grouped_tile); Tile128 walks groups of tile rows.
    int tile_m = blockIdx.y, tile_n = blockIdx.x;
    if constexpr (kTileRows != Tile64::kRows) grouped_tile(tile_m, tile_n, extra_cols);
    const int m0 = tile_m * kTileRows;
    const int c0 = tile_n * kTileCols;
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int warp_m0 = (warp / kWarpsCols) * kWarpRows;
    const int warp_n0 = (warp % kWarpsCols) * kWarpCols;
    const int cols = kDx ? p.k : p.r_max;

    resolve_rows<T, kDx, Cfg>(p, m0, sm);
    const int adapter_steps = sm.first_step[sm.num_present];
    const int base_steps = kDx ? (p.n + kStep - 1) / kStep : 0;
    const int all_steps = adapter_steps + base_steps;
    // Split z runs its share [first, last) of the steps; the adapter term is
    // scaled wherever its steps end inside a share, so the shares sum to
    // s.(G.A) + dY.W0.
    const int steps_per_split = (all_steps + p.k_splits - 1) / p.k_splits;
    const int first = min(static_cast<int>(blockIdx.z) * steps_per_split, all_steps);
    const int last = min(first + steps_per_split, all_steps);

    const T* dy = reinterpret_cast<const T*>(p.dy);
    const T* g = reinterpret_cast<const T*>(p.g);
    const T* w = reinterpret_cast<const T*>(p.w);
    const T* a = reinterpret_cast<const T*>(p.a);
    const T* b = reinterpret_cast<const T*>(p.b);
    // Adapter l's right operand: A_l [r_max, k] or B_l [n, r_max].
    const T* ad_rhs = kDx ? a : b;
    const long long ad_rhs_ld = kDx ? p.k : p.r_max;
    const long long ad_rhs_stride = static_cast<long long>(kDx ? p.k : p.n) * p.r_max;
    const bool ad_rhs_vec = vector_loadable(ad_rhs, ad_rhs_ld) && ad_rhs_stride % (16 / sizeof(T)) == 0;
    const T* ad_lhs = kDx ? g : dy;
    const long long ad_lhs_ld = kDx ? p.r_max : p.n;
    const bool ad_lhs_vec = vector_loadable(ad_lhs, ad_lhs_ld);
    const bool base_vec = vector_loadable(dy, static_cast<long long>(p.n)) && vector_loadable(w, static_cast<long long>(p.k));

    auto info = [&](int step) {
        if (step < adapter_steps) {
            int i = 0;
            while (sm.first_step[i + 1] <= step) ++i;
            const int adapter = sm.present[i];
            const int rank = rank_of(p, adapter);
            return StepInfo{adapter, (step - sm.first_step[i]) * kStep, kDx ? rank : p.n, kDx ? p.k : rank};
        }
        return StepInfo{-1, (step - adapter_steps) * kStep, p.n, p.k};
    };

    // The producer walks the steps in order, one segment (an adapter's
    // steps, then the base's) at a time. Entering a segment sets up its
    // windows and the per-thread copy plans; within it, a whole step of
    // operands that allow 16-byte copies is a plan's copy, anything else
    // (the partial last step of a segment, unaligned operands) goes through
    // `stage`. Left rows are the tile's tokens, only those of the step's
    // adapter; right rows the reduction index, right columns the output's.
    int seg_begin = 0;      // step where the current segment starts
    int seg_end = first;    // ... and ends (entering one at `first` sets it up)
    int seg_whole_end = 0;  // ... and where its whole steps end
    int seg_adapter = -1;   // its adapter, -1 for the base
    int fast_end = first;   // steps before this are whole steps of two plans
    int seg_k_len = 0;      // the segment's reduction length
    bool lhs_plan = false, rhs_plan = false;
    ChunkCopy<T, LhsTile> lhs_copy;
    ChunkCopy<T, RhsTile> rhs_copy;

    // The windows of the segment of `adapter` (-1: the base), at reduction index k0.
    auto sources = [&](int adapter, int k0, Source<T>& lhs, Source<T>& rhs) {
        if (adapter >= 0) {
            const int rank = rank_of(p, adapter);
            lhs = {ad_lhs, ad_lhs_ld, k0, kDx ? rank : p.n, ad_lhs_vec};
            rhs = {ad_rhs + adapter * ad_rhs_stride, ad_rhs_ld, c0, kDx ? p.k : rank, ad_rhs_vec};
        } else {
            lhs = {dy, p.n, k0, p.n, base_vec};
            rhs = {w, p.k, c0, p.k, base_vec};
        }
    };

    auto enter_segment = [&](int step) {
        if (step < adapter_steps) {
            int i = 0;
            while (sm.first_step[i + 1] <= step) ++i;
            seg_begin = sm.first_step[i];
            seg_end = sm.first_step[i + 1];
            seg_adapter = sm.present[i];
        } else {
            seg_begin = adapter_steps;
            seg_end = all_steps;
            seg_adapter = -1;
        }
        const int k0 = (step - seg_begin) * kStep;
        Source<T> lhs, rhs;
        sources(seg_adapter, k0, lhs, rhs);
        seg_whole_end = seg_begin + lhs.cols_valid / kStep;
        seg_k_len = lhs.cols_valid;
        lhs_plan = lhs.vector_ok;
        // A right chunk is then wholly inside the columns or wholly outside.
        rhs_plan = rhs.vector_ok && rhs.cols_valid % RhsTile::kChunk == 0;
        fast_end = lhs_plan && rhs_plan ? min(seg_whole_end, last) : step;
        const int adapter = seg_adapter;
        if (lhs_plan)
            lhs_copy.setup(lhs.base + static_cast<long long>(m0) * lhs.ld + k0, lhs.ld, kStep, [&](int row, int) {
                return m0 + row < p.m && (adapter < 0 || sm.row_adapter[row] == adapter);
            });
        if (rhs_plan)
            rhs_copy.setup(rhs.base + static_cast<long long>(k0) * rhs.ld + c0, rhs.ld, kStep * rhs.ld,
                           [&](int, int col) { return c0 + col < rhs.cols_valid; });
    };

    using Slot = RowGemmSlot<T, Cfg>;
    const uint32_t slots = shared_address(&sm.slot[0]);
    constexpr uint32_t kSlotBytes = sizeof(Slot);
    constexpr uint32_t kRhsOffset = offsetof(Slot, rhs);

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
        const int k0 = (step - seg_begin) * kStep;
        // The last, partial step of a segment whose length is whole chunks
        // (a rank of 16, say): the plans, with the rows or chunks past it zero.
        const int k_left = seg_k_len - k0;
        if (!whole && lhs_plan && rhs_plan && k_left % LhsTile::kChunk == 0) {
            lhs_copy.copy_partial(at, k_left);
            rhs_copy.copy_partial(at + kRhsOffset, k_left);
            return;
        }
        const int adapter = seg_adapter;
        Source<T> lhs, rhs;
        sources(adapter, k0, lhs, rhs);
        if (whole && lhs_plan) {
            lhs_copy.copy(at);
        } else {
            stage<T, LhsTile>(sm.slot[slot].lhs, lhs, [&](int i) {
                const bool live = m0 + i < p.m && (adapter < 0 || sm.row_adapter[i] == adapter);
                return live ? m0 + i : -1;
            });
        }
        if (whole && rhs_plan) {
            rhs_copy.copy(at + kRhsOffset);
        } else {
            const int k_valid = lhs.cols_valid;
            stage<T, RhsTile>(sm.slot[slot].rhs, rhs, [&](int i) { return k0 + i < k_valid ? k0 + i : -1; });
        }
    };
    // Stages step `step` (if this split has it) into slot `slot`: the
    // steady state is one comparison and the two plans' copies.
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
    // dX in f32: the finished adapter term, kept apart while the base term
    // accumulates, then added to it: base + s.(G.A), the order of the
    // contract's formula and of the reference's same-precision computation.
    // dX in f16/bf16 (kFold): the finished adapter term stays in the
    // accumulator and the base steps add onto it, as the fused forward
    // does: s.(G.A) + dY.W0 summed in another f32 order, whose error is
    // ~2^-16 of the one rounding to T that dominates the contract's bound,
    // and no second set of accumulators (a 128x128 tile's 4 x 8 fragments
    // twice would not fit a thread's registers). Both tiles fold, so the
    // tile a shape takes does not change its bits.
    constexpr int kTermFragsM = kFold ? 1 : kFragsM;
    constexpr int kTermFragsN = kFold ? 1 : kFragsN;
    float adapter_term[kTermFragsM][kTermFragsN][4];
    if constexpr (!kFold) clear(adapter_term);

    // The dropout decisions of the thread's accumulator elements, one bit
    // each (element e: fragment row block mi, half h, column block ni,
    // column c, e = ((mi * 2 + h) * kFragsN + ni) * 2 + c), drawn once
    // before the reduction in a loop that is not unrolled: on the 128x128
    // tile, drawing them where they are applied (next to 128 live
    // accumulators, every draw unrolled) would spill. The 64x64 tile draws
    // each where it is applied.
    constexpr bool kMaskBits = kDropout && kTileRows != Tile64::kRows;
    constexpr int kElems = kFragsM * kFragsN * 4;
    constexpr int kMaskWords = kMaskBits ? kElems / 32 : 1;
    static_assert(!kMaskBits || kElems % 32 == 0, "whole words of decisions");
    uint32_t keep_bits[kMaskWords];
    static_for<kMaskWords>([&](auto w) { keep_bits[decltype(w)::value] = 0; });
    if constexpr (kMaskBits) {
        if (p.dropout && first < adapter_steps) {
            const DropoutMask mask = mask_of(p);
            // A thread's elements come in pairs of adjacent columns (c = 0, 1),
            // whose mask indices usually share a Philox block of 4: drawn once.
#pragma unroll 1
            for (int pair = 0; pair < kElems / 2; ++pair) {
                const int ni = pair % kFragsN;
                const int h = (pair / kFragsN) & 1;
                const int mi = pair / kFragsN >> 1;
                const int row = m0 + warp_m0 + mi * 16 + lane / 4 + 8 * h;
                const int col = c0 + warp_n0 + ni * 8 + 2 * (lane % 4);
                uint32_t bits = 0;
                if (row < p.m && col < p.k) {
                    // As DropoutMask::keeps, for (row, col) and (row, col + 1).
                    const uint64_t index = static_cast<uint64_t>(row) * static_cast<uint64_t>(mask.row_len) + col;
                    philox::Block block = philox::bits_of_block(mask.seed, mask.offset, index / 4);
                    bits = philox::uniform_from_bits(DropoutMask::word(block, index)) >= mask.p ? 1u : 0u;
                    if (col + 1 < p.k) {
                        if ((index + 1) / 4 != index / 4)
                            block = philox::bits_of_block(mask.seed, mask.offset, (index + 1) / 4);
                        bits |= philox::uniform_from_bits(DropoutMask::word(block, index + 1)) >= mask.p ? 2u : 0u;
                    }
                }
                const int e = 2 * pair;
                // Selected, not indexed: a dynamic index would put the words in local memory.
                static_for<kMaskWords>([&](auto w) {
                    if (e >> 5 == decltype(w)::value) keep_bits[decltype(w)::value] |= bits << (e & 31);
                });
            }
        }
    }

    // dX: the adapter term times its row's scale and, with dropout, the
    // mask over 1 - p; set aside from the accumulator unless folded.
    auto finish_adapter_term = [&]() {
#pragma unroll
        for (int mi = 0; mi < kFragsM; ++mi)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = warp_m0 + mi * 16 + lane / 4 + 8 * h;
                const float s = sm.row_scale[row];
#pragma unroll
                for (int ni = 0; ni < kFragsN; ++ni)
#pragma unroll
                    for (int c = 0; c < 2; ++c) {
                        float& value = acc[mi][ni][2 * h + c];
                        value *= s;
                        const int col = c0 + warp_n0 + ni * 8 + 2 * (lane % 4) + c;
                        if constexpr (kMaskBits) {
                            const int e = ((mi * 2 + h) * kFragsN + ni) * 2 + c;
                            if (p.dropout && s != 0.0f && col < p.k)
                                value = (keep_bits[e >> 5] >> (e & 31)) & 1u ? value * p.inv_keep : 0.0f;
                        } else if (kDropout && p.dropout && s != 0.0f && col < p.k) {
                            value = mask_of(p).keeps(m0 + row, col) ? value * p.inv_keep : 0.0f;
                        }
                        if constexpr (!kFold) {
                            adapter_term[mi][ni][2 * h + c] = value;
                            value = 0.0f;
                        }
                    }
            }
    };

    const WarpMultiply<T, false, true, Cfg> multiply(warp_m0, warp_n0, lane);
    // Base steps: the warp's columns and the base's last step, once.
    const bool base_live = c0 + warp_n0 < p.k;
    const int base_last_len = p.n - (base_steps - 1) * kStep;
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
        stage_step(first + s, s);
        cp_async_commit();
    }
    // dX: the step before which the adapter term is set aside (none: -1).
    const int finish_at = static_cast<int>(opaque(first < adapter_steps ? adapter_steps : -1));
    // Pipeline slots as rotating counters: `read` holds step `step`, `write`
    // receives step + kStages - 1.
    int read = 0, write = kStages - 1;
    for (int step = first; step < last; ++step) {
        // Step `step` has landed, and every warp is done with step - 1,
        // whose stage the next copy reuses.
        cp_async_wait<kStages - 2>();
        __syncthreads();
        stage_step(step + kStages - 1, write);
        cp_async_commit();
        if (kDx && step == finish_at) finish_adapter_term();
        // Warp-uniform: a sub-tile entirely past the right operand's columns
        // stays zero. Every base step but the last is a whole one.
        if (step >= adapter_steps && step < all_steps - 1) {
            if (base_live) multiply(acc, sm.slot[read].lhs, sm.slot[read].rhs, kStep);
        } else {
            bool live = base_live;
            int k_len = min(kStep, base_last_len);
            if (step < adapter_steps) {
                const StepInfo at_step = info(step);
                live = c0 + warp_n0 < at_step.cols_valid;
                k_len = min(kStep, at_step.k_valid - at_step.k0);
            }
            if (live) multiply(acc, sm.slot[read].lhs, sm.slot[read].rhs, k_len);
        }
        read = read == kStages - 1 ? 0 : read + 1;
        write = write == kStages - 1 ? 0 : write + 1;
    }
    cp_async_wait<0>();
    if (kDx) {
        // A share of adapter steps only (split) sets its term aside here.
        if (first < adapter_steps && last <= adapter_steps) finish_adapter_term();
        if constexpr (!kFold) {
#pragma unroll
            for (int mi = 0; mi < kFragsM; ++mi)
#pragma unroll
                for (int ni = 0; ni < kFragsN; ++ni)
#pragma unroll
                    for (int e = 0; e < 4; ++e) acc[mi][ni][e] += adapter_term[mi][ni][e];
        }
    }

    if (p.k_splits > 1) {
        // This split's raw sums, for lora_backward_sum_splits.
        float* partials = reinterpret_cast<float*>(p.partials) + static_cast<long long>(blockIdx.z) * p.m * cols;
        store_fragments(partials, cols, p.m, cols, acc, m0 + warp_m0, c0 + warp_n0, lane);
        return;
    }

    // Epilogue through shared memory so global stores are whole row segments.
    __syncthreads();  // every warp is done reading the operand tiles
    stage_output(sm.out, acc, warp_m0, warp_n0, lane);
    __syncthreads();

    T* out = reinterpret_cast<T*>(kDx ? p.out : p.g);
    store_output(sm.out, out, kDx && p.accumulate ? out : nullptr, static_cast<const T*>(nullptr), m0, c0, p.m, cols);
}

template <typename T, bool kDx, typename Cfg = Tile64, bool kDropout = kDx>
__device__ void row_gemm(const LoraBwdParams& p, int extra_cols = 0) {
    row_gemm_in<T, kDx, Cfg, kDropout>(p, row_gemm_storage<T, Cfg>(), extra_cols);
}

// ---------------------------------------------------------------------------
// The rank side (cuda/rank_side.cuh): G with dB in one launch (both read dY),
// then dA (it reads G), over the rows grouped by adapter.

// Sh: rank_side::Shared (8 warps, 32 rank columns), or for the `_r64`
// launches SharedWideGDb (G with dB: 6 warps) and SharedWideGrad (dA: 4
// warps), 64 rank columns: dY or X staged once for both 32-column halves,
// and each G tile reads B's 64 columns, each dB tile P's, in one pass. With
// 6 or 4 warps each sum is 6 or 4 warp partials in warp order instead of 8:
// a fixed order for a shape and device, as the host's rule (src/backward.rs,
// grad_cols) is.
template <typename T, typename Sh = rank_side::Shared> __device__ void g_db(const LoraBwdParams& p) {
    Sh& sm = rank_side::shared_storage<Sh>();
    if (static_cast<int>(blockIdx.x) < p.g_tiles) {
        rank_side::row_tile<T, false>(p, sm, blockIdx.x);
    } else {
        rank_side::rank_grad<T, false>(p, sm, blockIdx.x - p.g_tiles, blockIdx.y, p.out);
    }
}

template <typename T, typename Sh = rank_side::Shared> __device__ void da(const LoraBwdParams& p) {
    Sh& sm = rank_side::shared_storage<Sh>();
    rank_side::rank_grad<T, true>(p, sm, blockIdx.x, blockIdx.y, p.out);
}

// dX on the 128x128 tile with dA's CTAs in the same launch (f16/bf16, no
// dropout): the grid's last column holds dA's CTAs, one per grid row, CTA y
// taking dA's tiles y, y + gridDim.y, ... (p.da_ctas per rank tile, rank
// tile after rank tile; the host keeps it to a few) on its 4 warps
// (rank_side::rank_grad's split over warps, its output into p.da); the
// columns before it are dX's tiles. Both read G, which the launch before
// wrote. dA is memory-bound (it reads X once) and dX bound by its pipes: in
// one launch dA's CTAs run beside dX's instead of as a launch of their own,
// one at the end of each grid row, spread over the launch. (One column of
// like CTAs also keeps the emulator's CTA sampling exact: it counts the
// last column as a stratum of its own.)
//
// kH rank halves of 32 columns per dA tile: 1, or 2 for ranks past 32
// (lora_backward_dx_da_<T>_128x128_r64): each warp stages its X tile once
// for 64 rank columns and loads its X fragments once for both halves, where
// two 32-wide tiles staged X twice. The dX kernel's registers (about 232)
// and 72 KB of shared memory already bound the CTA, so the wider dA tile
// (48 KB of tiles, 64 accumulators a thread) costs no occupancy. Each
// half's sums are the same warps' steps in the same warp order as with two
// 32-wide tiles: the same bits.
//
// kV wide tiles of 32 K columns per dA warp tile: 2 in the `_r64` launch
// (dA tiles of 64 K columns by 64 rank columns: each G fragment feeds both
// X tiles' mma; p.da_ctas then counts 64-column tiles, src/backward.rs),
// with one adapter's rows (no permutation) staged at addresses that advance
// by constants; 1 in the 32-rank-column launch. Each accumulator still sees
// the same warps' steps in the same order: the same bits.

// dA's tiles in the last grid column (or row) of a dX launch: its CTA `cta`
// of `ctas` takes tiles cta, cta + ctas, ... (p.da_ctas per rank tile of
// DaShared::kHalves x 32 columns, rank tile after rank tile) on its 4 warps,
// in the shared memory `sm`.
template <typename T, typename DaShared>
__device__ void da_cta(const LoraBwdParams& p, DaShared& sm, int cta, int ctas) {
    constexpr int kRankCols = LORA_BWD_RANK_TILE * DaShared::kHalves;
    const int rank_tiles = (p.r_max + kRankCols - 1) / kRankCols;
    for (int at = cta; at < p.da_ctas * rank_tiles; at += ctas) {
        rank_side::rank_grad<T, true>(p, sm, at % p.da_ctas, at / p.da_ctas, p.da);
        // The next tile's copies reuse the shared memory the epilogue read.
        __syncthreads();
    }
}

template <typename T, int kH = 1, int kV = 1> __device__ void dx_da(const LoraBwdParams& p) {
    if (blockIdx.x == gridDim.x - 1) {
        using DaShared = rank_side::SharedOf<Tile128::kThreads / 32, kH, kV>;
        static_assert(sizeof(DaShared) <= LORA_BWD_BIG_SHARED_BYTES, "dA's tiles fit in dX's launch's reservation");
        extern __shared__ __align__(16) unsigned char dynamic_shared[];
        da_cta<T>(p, *reinterpret_cast<DaShared*>(dynamic_shared), blockIdx.y, gridDim.y);
        return;
    }
    row_gemm<T, true, Tile128, false>(p, 1);
}

// The same on the 64x64 tile (grids with fewer 128x128 tiles than SMs,
// unsplit): dA's CTAs take the grid's last column (one per 64-row tile row)
// or, where the grid has no column past dX's tiles, its last row (one per
// 64-column tile: the host's pick, src/backward.rs, fewer CTAs on the
// busiest SM); the rest are dX's 64x64 tiles. Either way one column or row
// of like CTAs (the emulator's sampling counts each as a stratum of its
// own). Static shared memory, one union of dX's pipeline and dA's 4 warps'
// tiles (32.9 KB against dX's own 25.6 KB; 127 registers against 121: 4
// CTAs per SM still, the registers' limit). dA's CTAs run the very code
// of the 128x128 launch's (4 warps splitting the steps, or one adapter per
// warp), so dA's bits are the same in both launches.
template <typename T> __device__ void dx_da_small(const LoraBwdParams& p) {
    using DaShared = rank_side::SharedOf<Tile64::kThreads / 32>;
    union alignas(16) Shared {
        RowGemmShared<T, Tile64> dx;
        DaShared da;
    };
    __shared__ Shared sm;
    const bool da_column = static_cast<int>(gridDim.x) * Tile64::kCols >= p.k + Tile64::kCols;
    if (da_column && blockIdx.x == gridDim.x - 1) {
        da_cta<T>(p, sm.da, blockIdx.y, gridDim.y);
        return;
    }
    if (!da_column && blockIdx.y == gridDim.y - 1) {
        da_cta<T>(p, sm.da, blockIdx.x, gridDim.x);
        return;
    }
    row_gemm_in<T, true, Tile64, false>(p, sm.dx, 1);
}

// ---------------------------------------------------------------------------
// Elementwise launches.

// G or dX after a split reduction: the splits' sums added in split order
// (deterministic), plus the old dX when accumulating, rounded once.
template <typename T> __device__ void sum_splits(const LoraBwdParams& p) {
    const bool dx = p.reduction == LORA_BWD_REDUCE_DX;
    const int cols = dx ? p.k : p.r_max;
    const long long total = static_cast<long long>(p.m) * cols;
    const long long at = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (at >= total) return;
    const float* partials = reinterpret_cast<const float*>(p.partials);
    float sum = 0.0f;
    for (int z = 0; z < p.k_splits; ++z) sum += partials[z * total + at];
    T* out = reinterpret_cast<T*>(dx ? p.out : p.g);
    if (dx && p.accumulate) sum += to_f32(out[at]);
    out[at] = from_f32<T>(sum);
}

}  // namespace bwd
}  // namespace fused_lora

#define STAMP_BACKWARD(SUFFIX, TYPE)                                                                                     \
    extern "C" __global__ void __launch_bounds__(LORA_BWD_GEMM_THREADS)                                                  \
        lora_backward_dx_##SUFFIX(const LoraBwdParams p) {                                                               \
        fused_lora::bwd::row_gemm<TYPE, true>(p);                                                                        \
    }                                                                                                                    \
    extern "C" __global__ void __launch_bounds__(LORA_BWD_RANK_THREADS)                                                  \
        lora_backward_g_db_##SUFFIX(const LoraBwdParams p) {                                                             \
        fused_lora::bwd::g_db<TYPE>(p);                                                                                  \
    }                                                                                                                    \
    extern "C" __global__ void __launch_bounds__(LORA_BWD_RANK_THREADS) lora_backward_da_##SUFFIX(const LoraBwdParams p) { \
        fused_lora::bwd::da<TYPE>(p);                                                                                    \
    }                                                                                                                    \
    extern "C" __global__ void __launch_bounds__(LORA_BWD_RANK_WIDE_G_DB_THREADS, 2)                                     \
        lora_backward_g_db_##SUFFIX##_r64(const LoraBwdParams p) {                                                      \
        fused_lora::bwd::g_db<TYPE, fused_lora::rank_side::SharedWideGDb>(p);                                           \
    }                                                                                                                    \
    extern "C" __global__ void __launch_bounds__(LORA_BWD_RANK_WIDE_GRAD_THREADS)                                        \
        lora_backward_da_##SUFFIX##_r64(const LoraBwdParams p) {                                                        \
        fused_lora::bwd::da<TYPE, fused_lora::rank_side::SharedWideGrad>(p);                                            \
    }                                                                                                                    \
    extern "C" __global__ void __launch_bounds__(LORA_BWD_THREADS)                                                       \
        lora_backward_sum_splits_##SUFFIX(const LoraBwdParams p) {                                                      \
        fused_lora::bwd::sum_splits<TYPE>(p);                                                                           \
    }
FUSED_LORA_FOR_EACH_DTYPE(STAMP_BACKWARD)

// dX on the 128x128 tile (f16/bf16, large grids; the host picks it,
// src/backward.rs): 4 warps of 64x64, 4 stages, dynamic shared memory.
// Dropout is a separate entry point (lora_backward_dx_dropout_<T>_128x128,
// its mask drawn into bits before the reduction): the kernel without it
// compiles as if dropout did not exist.
#define STAMP_DX_BIG(SUFFIX, TYPE)                                                         \
    extern "C" __global__ void __launch_bounds__(LORA_BWD_GEMM_THREADS)                    \
        lora_backward_dx_##SUFFIX##_128x128(const LoraBwdParams p) {                       \
        fused_lora::bwd::row_gemm<TYPE, true, fused_lora::tiles::Tile128, false>(p);       \
    }
STAMP_DX_BIG(f16, __half)
STAMP_DX_BIG(bf16, __nv_bfloat16)

// The same with dA's CTAs in the launch (fused_lora::bwd::dx_da); `_r64`: dA's
// tiles 64 rank columns wide (ranks past 32, where the host picks it).
#define STAMP_DX_DA_BIG(SUFFIX, TYPE)                                                      \
    extern "C" __global__ void __launch_bounds__(LORA_BWD_GEMM_THREADS)                    \
        lora_backward_dx_da_##SUFFIX##_128x128(const LoraBwdParams p) {                    \
        fused_lora::bwd::dx_da<TYPE>(p);                                                   \
    }                                                                                      \
    extern "C" __global__ void __launch_bounds__(LORA_BWD_GEMM_THREADS)                    \
        lora_backward_dx_da_##SUFFIX##_128x128_r64(const LoraBwdParams p) {                \
        fused_lora::bwd::dx_da<TYPE, 2, 2>(p);                                             \
    }
STAMP_DX_DA_BIG(f16, __half)
STAMP_DX_DA_BIG(bf16, __nv_bfloat16)

// dX on the 64x64 tile with dA's CTAs in the same launch (fused_lora::bwd::dx_da_small).
#define STAMP_DX_DA_SMALL(SUFFIX, TYPE)                                                    \
    extern "C" __global__ void __launch_bounds__(LORA_BWD_GEMM_THREADS)                    \
        lora_backward_dx_da_##SUFFIX(const LoraBwdParams p) {                              \
        fused_lora::bwd::dx_da_small<TYPE>(p);                                             \
    }
STAMP_DX_DA_SMALL(f16, __half)
STAMP_DX_DA_SMALL(bf16, __nv_bfloat16)

#define STAMP_DX_BIG_DROPOUT(SUFFIX, TYPE)                                                 \
    extern "C" __global__ void __launch_bounds__(LORA_BWD_GEMM_THREADS)                    \
        lora_backward_dx_dropout_##SUFFIX##_128x128(const LoraBwdParams p) {               \
        fused_lora::bwd::row_gemm<TYPE, true, fused_lora::tiles::Tile128, true>(p);        \
    }
STAMP_DX_BIG_DROPOUT(f16, __half)
STAMP_DX_BIG_DROPOUT(bf16, __nv_bfloat16)

// The shrink P = X~ . A_l^T over the grouped rows (the forward's and the
// backward's recompute): rank-side row tiles of 32 rank columns, or 64
// (`_r64`, ranks past 32, where the host's rank_side::shrink_cols picks it:
// X read once per 64 rank columns).
#define STAMP_RANK_SHRINK(SUFFIX, TYPE)                                                                                \
    extern "C" __global__ void __launch_bounds__(LORA_BWD_RANK_THREADS)                                                 \
        lora_rank_shrink_##SUFFIX(const LoraBwdParams p) {                                                              \
        fused_lora::rank_side::row_tile<TYPE, true>(p, fused_lora::rank_side::shared_storage(), blockIdx.x);           \
    }                                                                                                                   \
    extern "C" __global__ void __launch_bounds__(LORA_BWD_RANK_THREADS)                                                 \
        lora_rank_shrink_##SUFFIX##_r64(const LoraBwdParams p) {                                                        \
        using Wide = fused_lora::rank_side::SharedWide;                                                                 \
        fused_lora::rank_side::row_tile<TYPE, true>(p, fused_lora::rank_side::shared_storage<Wide>(), blockIdx.x);      \
    }
FUSED_LORA_FOR_EACH_DTYPE(STAMP_RANK_SHRINK)

// The rows sorted by adapter (any dtype).
extern "C" __global__ void __launch_bounds__(LORA_GROUP_THREADS) lora_group_rows(const LoraBwdParams p) {
    fused_lora::rank_side::group_rows(p);
}
