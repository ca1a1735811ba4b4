// The decode forward: few rows (M <= 16 tokens), where the fused GEMM is a
// stream of W0 and the tiled kernels of forward.cu would spend a launch on the
// shrink and most of each 64-row tile's mma on padding. Two launches
// (decode_params.h has the formulas):
//
//  1. lora_decode_gemm_<T>: split-K over the rows of [W0; A]: the shrink is r
//     extra output columns of the same pass, so X is read once per column
//     tile and there is no shrink launch. W0 is not staged: each thread loads
//     16 bytes of a W0 row per row fragment straight into mma.sync m16n8k16
//     operands; X's 16 rows are staged in shared memory 512 columns at a time
//     (the next stage loading while this one multiplies), read by every warp.
//     The K order inside a 32-long chunk is permuted (thread t's 16 bytes,
//     elements 8t..8t+7, feed k-slots {2t, 2t+1, 2t+8, 2t+9} of two mma) for
//     X and W0 alike, so products still pair X[i, k] with W0[c, k]: 16-byte
//     loads instead of ldmatrix, whole 64-byte row segments per 4 threads.
//     The 8 warps of a CTA form col_groups groups of 32 columns (the host
//     picks 1, 2, 4 or 8: wider tiles read X fewer times, narrower ones need
//     fewer K splits to fill the device); the warps of a group take
//     interleaved chunks of the K range, two chunks (8 loads of 16 bytes per
//     thread) in flight at a time, and are summed through shared memory in
//     warp order; the CTA stores its split's raw f32 sums.
//  2. lora_decode_finish_<T>: sums the splits in split order, rounds P, and
//     adds s.P.B^T (mma.sync, one pass per adapter present, rows of other
//     adapters zero) and the bias to the base sums: Y written once. Where
//     its grid leaves SMs idle, its cost is each warp's serial chain (a few
//     thousand SM clocks against a W0 read of a few microseconds), so it is
//     spread over up to 16 warps per 32 columns: each thread then sums the
//     splits of one output element of Y and of one element of P per 32 rank
//     columns.
//
// Several adapters: the rows' adapters are read, validated and listed by each
// warp with warp votes (slot j: the j-th distinct valid adapter in row
// order), so both launches agree on the slots without shared state. Rows
// without an adapter (or with an out-of-range index, reported through the
// status word by the first CTA) get the base output and a zero P row.
//
// Numerics: every output is a sum of f32 products in a fixed order
// (deterministic); Y = round(s.(round(P).B^T) + X.W0^T + bias) as in
// forward.cu, up to the order of the f32 additions.

#include "decode.cuh"

namespace fused_lora {
namespace decode {

template <typename T> __device__ void gemm(const LoraDecodeParams& p) {
    // X's rows for two stages (the next one stored while this one is read),
    // each row padded by 64 bytes so that the 16-byte reads of rows g and
    // g + 8 hit distinct banks; after the K loop the same memory holds the
    // warps' sums.
    constexpr int kLd = kStageK + 32;
    constexpr int kXBytes = 2 * kRows * kLd * static_cast<int>(sizeof(T));
    constexpr int kSumBytes = kWarps * kFrags * 4 * 32 * static_cast<int>(sizeof(float));
    __shared__ alignas(16) unsigned char raw[kXBytes > kSumBytes ? kXBytes : kSumBytes];
    auto xs = reinterpret_cast<T(*)[kRows][kLd]>(raw);
    auto sums = reinterpret_cast<float(*)[kFrags * 4][32]>(raw);

    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int g = lane / 4, t = lane % 4;
    const int k_warps = kWarps / p.col_groups;  // warps sharing a group's columns
    const int group = warp / k_warps, kw = warp % k_warps;
    const RowSlots rows = resolve_rows(p, lane, blockIdx.x == 0 && blockIdx.y == 0 && warp == 0);
    const long long k = p.k;

    // This CTA's right-hand rows: a tile of W0's, or of one slot's A (whose
    // columns see only that adapter's rows of X).
    const int tile_cols = p.col_groups * kCols;
    const T* rhs;
    int rhs_rows, col0, only_adapter = -1;
    if (static_cast<int>(blockIdx.x) < p.w_tiles) {
        const int first = blockIdx.x * tile_cols;
        rhs = reinterpret_cast<const T*>(p.w) + first * k;
        rhs_rows = min(tile_cols, p.n - first);
        col0 = first;
    } else {
        const int tile = blockIdx.x - p.w_tiles;
        const int j = tile / p.slot_tiles, first = (tile % p.slot_tiles) * tile_cols;
        const int l = slot_adapter(rows, j);
        // An unused slot, or rows past the adapter's rank: nothing reads these columns.
        if (l < 0 || first >= rank_of(p, l)) return;
        rhs = reinterpret_cast<const T*>(p.a) + (static_cast<long long>(l) * p.r_max + first) * k;
        rhs_rows = min(tile_cols, rank_of(p, l) - first);
        col0 = p.n + j * p.r_max + first;
        only_adapter = l;
    }
    // This warp's 32 of them (none past the tile's last row).
    const int warp_rows = rhs_rows - group * kCols;
    const T* w_row[kFrags];
    bool w_live[kFrags];
#pragma unroll
    for (int f = 0; f < kFrags; ++f) {
        w_live[f] = 8 * f + g < warp_rows;
        w_row[f] = rhs + (w_live[f] ? group * kCols + 8 * f + g : 0) * k + 8 * t;
    }

    // The X units (16 bytes) this thread stages: row-major over [16, kStageK],
    // so its units share a column and lie kRowStep rows apart.
    constexpr int kUnitsPerRow = kStageK / 8;
    constexpr int kUnits = kRows * kUnitsPerRow / (kWarps * 32);
    constexpr int kRowStep = kWarps * 32 / kUnitsPerRow;
    const int x_row0 = threadIdx.x / kUnitsPerRow, x_col = 8 * (threadIdx.x % kUnitsPerRow);
    unsigned x_live = 0;  // bit i: unit i's row is read (others stage zeros)
#pragma unroll
    for (int i = 0; i < kUnits; ++i) {
        const int row = x_row0 + i * kRowStep;
        const int adapter = __shfl_sync(~0u, rows.adapter, row);
        if (row < p.m && (only_adapter < 0 || adapter == only_adapter)) x_live |= 1u << i;
    }
    const T* x_unit = reinterpret_cast<const T*>(p.x) + x_row0 * k + x_col;

    const int k_begin = blockIdx.y * p.k_per_split;
    const int k_end = min(p.k, k_begin + p.k_per_split);
    const int stages = (k_end - k_begin + kStageK - 1) / kStageK;
    uint4 staged[kUnits];
    auto load_stage = [&](int s) {
        const int k0 = k_begin + s * kStageK;
#pragma unroll
        for (int i = 0; i < kUnits; ++i)
            staged[i] = load16(x_unit + i * kRowStep * k + k0, (x_live >> i & 1u) && k0 + x_col < k_end);
    };
    auto store_stage = [&](int buffer) {
#pragma unroll
        for (int i = 0; i < kUnits; ++i)
            *reinterpret_cast<uint4*>(&xs[buffer][x_row0 + i * kRowStep][x_col]) = staged[i];
    };
    load_stage(0);
    store_stage(0);
    __syncthreads();

    float acc[kFrags][4] = {};
    constexpr int kStageChunks = kStageK / kChunk;
    for (int s = 0; s < stages; ++s) {
        const bool more = s + 1 < stages;
        if (more) load_stage(s + 1);  // in flight while this stage multiplies
        const int buffer = s & 1;
        const int k0 = k_begin + s * kStageK;
        if (warp_rows > 0) {
            for (int c = kw; c < kStageChunks; c += kInFlight * k_warps) {
                uint4 lo[kInFlight], hi[kInFlight], w[kInFlight][kFrags];
#pragma unroll
                for (int u = 0; u < kInFlight; ++u) {
                    const int chunk = c + u * k_warps;
                    const int at = chunk * kChunk + 8 * t;
                    const bool in = chunk < kStageChunks && k0 + at < k_end;
                    lo[u] = hi[u] = make_uint4(0u, 0u, 0u, 0u);
                    if (in) {
                        lo[u] = *reinterpret_cast<const uint4*>(&xs[buffer][g][at]);
                        hi[u] = *reinterpret_cast<const uint4*>(&xs[buffer][g + 8][at]);
                    }
#pragma unroll
                    for (int f = 0; f < kFrags; ++f)
                        w[u][f] = load16(w_row[f] + k0 + chunk * kChunk, in && w_live[f]);  // w_row has 8t
                }
#pragma unroll
                for (int u = 0; u < kInFlight; ++u)
#pragma unroll
                    for (int f = 0; f < kFrags; ++f) mma_chunk<T>(acc[f], lo[u], hi[u], w[u][f]);
            }
        }
        // The other buffer was last read in the previous stage, which every
        // warp has finished (the barrier below, one stage ago).
        if (more) store_stage(buffer ^ 1);
        __syncthreads();
    }

    // The sums of a group's warps, added in warp order (the staged X is dead:
    // every warp passed the last barrier).
#pragma unroll
    for (int f = 0; f < kFrags; ++f)
#pragma unroll
        for (int e = 0; e < 4; ++e) sums[warp][f * 4 + e][lane] = acc[f][e];
    __syncthreads();
    const long long cols = p.n + static_cast<long long>(p.slots) * p.r_max;
    float* out = reinterpret_cast<float*>(p.partials) + static_cast<long long>(blockIdx.y) * p.m * cols + col0;
    for (int at = threadIdx.x; at < p.col_groups * kFrags * 4 * 32; at += kWarps * 32) {
        const int grp = at / (kFrags * 4 * 32), fe = (at / 32) % (kFrags * 4), from = at % 32;
        float v = 0.0f;
        for (int w = 0; w < k_warps; ++w) v += sums[grp * k_warps + w][fe][from];
        // The accumulator layout of m16n8: element e of lane (g, t) is row
        // g + 8 (e / 2), column 2t + e % 2 of its fragment.
        const int row = from / 4 + 8 * ((fe % 4) / 2);
        const int col = grp * kCols + 8 * (fe / 4) + 2 * (from % 4) + fe % 2;
        if (row < p.m && col < rhs_rows) out[row * cols + col] = v;
    }
}

// kCopies: warps per n8 fragment (1, 2 or 4), a compile-time constant so
// that each thread's share of the elements costs no per-element tests.
template <typename T, int kCopies>
__device__ __forceinline__ void finish_body(const LoraDecodeParams& p, T* __restrict__ p_rows) {
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int g = lane / 4, t = lane % 4;
    const RowSlots rows = resolve_rows(p, lane, false);
    const long long cols = p.n + static_cast<long long>(p.slots) * p.r_max;
    const long long split_stride = static_cast<long long>(p.m) * cols;
    const float* partials = reinterpret_cast<const float*>(p.partials);
    // P's rows, 32-wide chunks zero past each row's rank.
    const int r_pad = (p.r_max + kChunk - 1) / kChunk * kChunk;

    // This thread's output elements: warp w multiplies n8 fragment
    // w % kFrags (the kCopies warps of a fragment each issue its mma) and
    // keeps its accumulator elements e with e % kCopies == w / kFrags. The
    // host picks kCopies (1, 2 or 4: 4, 8 or 16 warps) by the grid's size
    // against the SMs (`finish_copies`, src/forward/launch.rs).
    constexpr int copies = kCopies;
    const int frag = warp % kFrags, copy = warp / kFrags;
    const int c0 = blockIdx.x * kCols + frag * 8;

    for (int first = 0; first < kRows * r_pad; first += kCopies * kFrags * 32) {
        const int at = first + threadIdx.x;
        const int i = min(at / r_pad, kRows - 1), q = at % r_pad;
        const int adapter = __shfl_sync(~0u, rows.adapter, i);
        const int slot = __shfl_sync(~0u, rows.slot, i);
        if (at >= kRows * r_pad) continue;
        float v = 0.0f;
        if (i < p.m && adapter >= 0 && q < rank_of(p, adapter)) {
            const float* from = partials + i * cols + p.n + slot * p.r_max + q;
            for (int z = 0; z < p.k_splits; ++z) v += from[z * split_stride];
        }
        const T rounded = from_f32<T>(v);
        p_rows[i * r_pad + q] = rounded;
        if (blockIdx.x == 0 && i < p.m && q < p.r_max) reinterpret_cast<T*>(p.p)[i * p.r_max + q] = rounded;
    }
    __syncthreads();

    const int b_row = c0 + g;
    const int adapter_g = __shfl_sync(~0u, rows.adapter, g);
    const int adapter_g8 = __shfl_sync(~0u, rows.adapter, g + 8);
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    expand_fragment<T>(acc, p, rows, p_rows, r_pad, b_row, adapter_g, adapter_g8);
    const float scale_g = scale_of(p, adapter_g), scale_g8 = scale_of(p, adapter_g8);
    const T* bias = reinterpret_cast<const T*>(p.bias);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        const int row = g + 8 * (e / 2), col = c0 + 2 * t + e % 2;
        if (e % copies != copy || row >= p.m || col >= p.n) continue;
        float base = 0.0f;
        for (int z = 0; z < p.k_splits; ++z) base += partials[z * split_stride + row * cols + col];
        float v = acc[e] * (e < 2 ? scale_g : scale_g8) + base;
        if (bias) v += to_f32(bias[col]);
        reinterpret_cast<T*>(p.y)[static_cast<long long>(row) * p.n + col] = from_f32<T>(v);
    }
}

template <typename T> __device__ void finish(const LoraDecodeParams& p) {
    // The block's size says how many warps share a fragment (one entry
    // point; each branch compiled for its count).
    // P's rows, declared here so that the three share them.
    __shared__ alignas(16) T p_rows[kRows * LORA_DECODE_MAX_RANK];
    switch (blockDim.x / (32 * kFrags)) {
        case 1: finish_body<T, 1>(p, p_rows); break;
        case 2: finish_body<T, 2>(p, p_rows); break;
        default: finish_body<T, 4>(p, p_rows); break;
    }
}

}  // namespace decode
}  // namespace fused_lora

// f16 and bf16 only: the decode path multiplies on tensor cores (f32 takes
// forward.cu's split-K path).
#define STAMP_DECODE(SUFFIX, TYPE)                                                          \
    extern "C" __global__ void __launch_bounds__(LORA_DECODE_WARPS * 32)                    \
        lora_decode_gemm_##SUFFIX(const LoraDecodeParams params) {                          \
        fused_lora::decode::gemm<TYPE>(params);                                             \
    }                                                                                       \
    extern "C" __global__ void __launch_bounds__(LORA_DECODE_FINISH_WARPS * 32)             \
        lora_decode_finish_##SUFFIX(const LoraDecodeParams params) {                        \
        fused_lora::decode::finish<TYPE>(params);                                           \
    }
STAMP_DECODE(f16, __half)
STAMP_DECODE(bf16, __nv_bfloat16)
