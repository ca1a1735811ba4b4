// What the decode kernels share (cuda/decode.cu, the two-launch path;
// cuda/decode_sm90a.cu, the one-launch path in clusters): the row-adapter
// slots, the loads, and the permuted-K mma on one 32-long chunk. decode.cu's
// comment describes the layout.
#ifndef FUSED_LORA_DECODE_CUH
#define FUSED_LORA_DECODE_CUH

#include "decode_params.h"
#include "dtype.cuh"
#include "mma.cuh"

namespace fused_lora {
namespace decode {

constexpr int kRows = LORA_DECODE_ROWS;
constexpr int kCols = LORA_DECODE_COLS;
constexpr int kChunk = LORA_DECODE_CHUNK;
constexpr int kWarps = LORA_DECODE_WARPS;
constexpr int kFrags = kCols / 8;  // n8 fragments of a CTA's columns
constexpr int kInFlight = 2;       // chunks a warp loads before multiplying
constexpr int kStageK = LORA_DECODE_STAGE_K;
static_assert(kStageK % kChunk == 0 && (kRows * kStageK / 8) % (kWarps * 32) == 0, "whole units per thread");
static_assert(kRows == 16 && kChunk == 32 && kFrags == 4, "one m16 fragment; 8 elements per thread and row");
static_assert(LORA_DECODE_FINISH_WARPS == 4 * kFrags, "at most a finishing warp per n8 fragment and accumulator element");

// The rows' adapters as one warp sees them: lane i < m holds row i's.
struct RowSlots {
    int adapter;  // row `lane`'s validated adapter, -1 for none
    int slot;     // its slot, -1 for none
    int count;    // slots used (the same in every lane)
};

__device__ __forceinline__ int rank_of(const LoraDecodeParams& p, int adapter) {
    return p.ranks ? reinterpret_cast<const int*>(p.ranks)[adapter] : p.rank;
}

__device__ __forceinline__ float scale_of(const LoraDecodeParams& p, int adapter) {
    if (adapter < 0) return 0.0f;
    return p.scales ? reinterpret_cast<const float*>(p.scales)[adapter] : p.scale;
}

// Reads and validates each row's adapter (an out-of-range index is reported
// when `report`, and the row gets none), then numbers the distinct adapters
// in order of first appearance.
__device__ RowSlots resolve_rows(const LoraDecodeParams& p, int lane, bool report) {
    int adapter = -1;
    if (lane < p.m) {
        adapter = p.row_adapter ? reinterpret_cast<const int*>(p.row_adapter)[lane] : 0;
        if (adapter < -1 || adapter >= p.num_adapters) {
            if (report && p.status) {
                const unsigned long long word =
                    (static_cast<unsigned long long>(lane) << 32) | static_cast<unsigned int>(adapter);
                atomicMin(reinterpret_cast<unsigned long long*>(p.status), word);
            }
            adapter = -1;
        }
    }
    int slot = -1, count = 0;
    unsigned pending = __ballot_sync(~0u, adapter >= 0);
    while (pending) {
        const int l = __shfl_sync(~0u, adapter, __ffs(pending) - 1);
        const unsigned same = __ballot_sync(~0u, adapter == l);
        if (adapter == l) slot = count;
        pending &= ~same;
        ++count;
    }
    return RowSlots{adapter, slot, count};
}

// The adapter in slot `j` (-1 if unused); every lane must call it.
__device__ __forceinline__ int slot_adapter(const RowSlots& rows, int j) {
    const unsigned has = __ballot_sync(~0u, rows.slot == j);
    const int l = __shfl_sync(~0u, rows.adapter, has ? __ffs(has) - 1 : 0);
    return has ? l : -1;
}

__device__ __forceinline__ uint4 load16(const void* at, bool live) {
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (live) v = __ldg(reinterpret_cast<const uint4*>(at));
    return v;
}

// Eight consecutive elements of a row, those at or past `valid` zero: one
// 16-byte load when all are valid and `vector` (16-byte aligned), else
// element by element (nothing past `valid` is read).
template <typename T> __device__ __forceinline__ uint4 load8(const T* at, int valid, bool vector) {
    static_assert(sizeof(T) == 2, "16-bit elements");
    if (valid >= 8 && vector) return __ldg(reinterpret_cast<const uint4*>(at));
    // Raw 16-bit patterns, packed in registers (a local array would go to
    // the stack); zero bits are +0 in f16 and bf16.
    const unsigned short* bits = reinterpret_cast<const unsigned short*>(at);
    uint32_t word[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const uint32_t lo = 2 * i < valid ? bits[2 * i] : 0u;
        const uint32_t hi = 2 * i + 1 < valid ? bits[2 * i + 1] : 0u;
        word[i] = lo | hi << 16;
    }
    return make_uint4(word[0], word[1], word[2], word[3]);
}

// Two m16n8k16 steps on one permuted 32-long chunk (see the file comment):
// `lo`/`hi` rows g and g + 8 of X (or P), `w` row g of the right operand.
template <typename T> __device__ __forceinline__ void mma_chunk(float (&d)[4], uint4 lo, uint4 hi, uint4 w) {
    const uint32_t a0[4] = {lo.x, hi.x, lo.y, hi.y};
    const uint32_t a1[4] = {lo.z, hi.z, lo.w, hi.w};
    Mma<T>::run(d, a0, w.x, w.y);
    Mma<T>::run(d, a1, w.z, w.w);
}

// s.P.B^T's sums for the n8 fragment whose B row (output column) for lane
// (g, t) is `b_row`: one mma pass per adapter slot, the P rows (`p_rows`,
// [16][r_pad], each row its own slot's) of other adapters' rows zero;
// `adapter_g` and `adapter_g8` are rows g's and g + 8's adapters. Unscaled:
// accumulator element e belongs to row g + 8 (e / 2).
template <typename T>
__device__ __forceinline__ void expand_fragment(float (&acc)[4], const LoraDecodeParams& p, const RowSlots& rows,
                                                const T* p_rows, int r_pad, int b_row, int adapter_g, int adapter_g8) {
    const int lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;
    const bool b_vector = p.r_max % 8 == 0 && p.b % 16 == 0;
    for (int j = 0; j < rows.count; ++j) {
        const int l = slot_adapter(rows, j);
        const int rank = rank_of(p, l);
        const bool live_g = g < p.m && adapter_g == l, live_g8 = g + 8 < p.m && adapter_g8 == l;
        const T* b = reinterpret_cast<const T*>(p.b) + (static_cast<long long>(l) * p.n + b_row) * p.r_max;
        for (int q0 = 0; q0 < rank; q0 += kChunk) {
            const int q = q0 + 8 * t;
            uint4 lo = make_uint4(0u, 0u, 0u, 0u), hi = lo, w = lo;
            if (live_g) lo = *reinterpret_cast<const uint4*>(&p_rows[g * r_pad + q]);
            if (live_g8) hi = *reinterpret_cast<const uint4*>(&p_rows[(g + 8) * r_pad + q]);
            if (b_row < p.n) w = load8(b + q, rank - q, b_vector);
            mma_chunk<T>(acc, lo, hi, w);
        }
    }
}

}  // namespace decode
}  // namespace fused_lora

#endif
