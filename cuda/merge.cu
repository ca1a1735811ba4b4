// Batched low-rank weight update over a list of layers, in one launch:
//     out <- W + scale * B * A        (merge: scale = +s, unmerge: scale = -s)
// W, out: [n, k]; A: [r, k]; B: [n, r]; row-major, T in {float, half, bf16}.
//
// The product is accumulated in f32 and each output rounded once to T (docs/contract.md).
// Grid: one CTA per LORA_MERGE_TILE_N x LORA_MERGE_TILE_K tile, tiles of all
// layers concatenated; a CTA finds its layer by binary search on first_tile.

#include "dtype.cuh"
#include "merge_params.h"

namespace fused_lora {
namespace merge {

constexpr int kTileN = LORA_MERGE_TILE_N;
constexpr int kTileK = LORA_MERGE_TILE_K;
constexpr int kThreads = LORA_MERGE_THREADS;
constexpr int kWarps = kThreads / 32;
// Rank chunk staged in shared memory per step; any r is handled in chunks.
constexpr int kRankChunk = 32;
// Each lane owns columns lane, lane+32, ...: a warp's loads and stores of a W
// row are then 32 consecutive elements (coalesced), and its reads of the A
// tile in shared memory hit 32 distinct banks.
constexpr int kColsPerLane = kTileK / 32;
// Each warp owns kRowsPerWarp consecutive rows; all its lanes read the same
// B element at a time (a shared-memory broadcast).
constexpr int kRowsPerWarp = kTileN / kWarps;

static_assert(kThreads % 32 == 0, "whole warps");
static_assert(kTileK % 32 == 0, "each lane owns kTileK/32 columns strided by 32");
static_assert(kTileN % kWarps == 0, "rows split evenly over the warps");
static_assert(kRankChunk == 32, "B tile loads map one warp to one row of 32 rank entries");

// The layer a tile belongs to: the last one whose first_tile <= tile.
__device__ __forceinline__ int find_layer(const LoraMergeLayer* layers, int num_layers, long long tile) {
    int lo = 0, hi = num_layers - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (layers[mid].first_tile <= tile) lo = mid; else hi = mid - 1;
    }
    return lo;
}

template <typename T>
__device__ void update_tile(const LoraMergeParams& p) {
    __shared__ float a_tile[kRankChunk][kTileK];  // A[j0 + jj, k0 + c]
    __shared__ float b_tile[kTileN][kRankChunk];  // B[n0 + i, j0 + jj]

    const LoraMergeLayer* layers = reinterpret_cast<const LoraMergeLayer*>(p.layers);
    int* flags = reinterpret_cast<int*>(p.nonfinite_flags);

    if (p.mode == LORA_MERGE_WRITE_IF_FINITE) {
        // Uniform across the CTA (every thread reads the same flags), so the
        // early return cannot split a barrier below.
        for (int l = 0; l < p.num_layers; ++l) {
            if (flags[l] != 0) return;
        }
    }

    const long long tile = blockIdx.x;
    const int layer_index = find_layer(layers, p.num_layers, tile);
    const LoraMergeLayer layer = layers[layer_index];
    const long long local = tile - layer.first_tile;
    const int tiles_k = (layer.k + kTileK - 1) / kTileK;
    const int n0 = static_cast<int>(local / tiles_k) * kTileN;
    const int k0 = static_cast<int>(local % tiles_k) * kTileK;

    const T* w = reinterpret_cast<const T*>(layer.w);
    T* out = reinterpret_cast<T*>(layer.out);
    const T* a = reinterpret_cast<const T*>(layer.a);
    const T* b = reinterpret_cast<const T*>(layer.b);

    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int row0 = warp * kRowsPerWarp;

    float acc[kRowsPerWarp][kColsPerLane];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i)
#pragma unroll
        for (int c = 0; c < kColsPerLane; ++c) acc[i][c] = 0.0f;

    for (int j0 = 0; j0 < layer.r; j0 += kRankChunk) {
        // Stage A[j0:j0+32, k0:k0+kTileK] and B[n0:n0+kTileN, j0:j0+32]; zeros
        // outside the matrices, so the inner loop needs no bounds checks.
        for (int idx = threadIdx.x; idx < kRankChunk * kTileK; idx += kThreads) {
            const int jj = idx / kTileK, c = idx % kTileK;
            const int j = j0 + jj, k = k0 + c;
            a_tile[jj][c] = (j < layer.r && k < layer.k) ? to_f32(a[static_cast<size_t>(j) * layer.k + k]) : 0.0f;
        }
        for (int idx = threadIdx.x; idx < kTileN * kRankChunk; idx += kThreads) {
            const int i = idx / kRankChunk, jj = idx % kRankChunk;
            const int n = n0 + i, j = j0 + jj;
            b_tile[i][jj] = (n < layer.n && j < layer.r) ? to_f32(b[static_cast<size_t>(n) * layer.r + j]) : 0.0f;
        }
        __syncthreads();

        const int chunk = min(kRankChunk, layer.r - j0);
        for (int jj = 0; jj < chunk; ++jj) {
            float a_vals[kColsPerLane];
#pragma unroll
            for (int c = 0; c < kColsPerLane; ++c) a_vals[c] = a_tile[jj][lane + 32 * c];
#pragma unroll
            for (int i = 0; i < kRowsPerWarp; ++i) {
                const float b_val = b_tile[row0 + i][jj];
#pragma unroll
                for (int c = 0; c < kColsPerLane; ++c) acc[i][c] = fmaf(b_val, a_vals[c], acc[i][c]);
            }
        }
        // The next chunk overwrites the tiles: everyone must be done reading.
        __syncthreads();
    }

    bool all_finite = true;
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
        const int n = n0 + row0 + i;
        if (n >= layer.n) break;
#pragma unroll
        for (int c = 0; c < kColsPerLane; ++c) {
            const int k = k0 + lane + 32 * c;
            if (k >= layer.k) continue;
            const size_t at = static_cast<size_t>(n) * layer.k + k;
            const float updated = fmaf(layer.scale, acc[i][c], to_f32(w[at]));
            const T rounded = from_f32<T>(updated);
            if (p.mode == LORA_MERGE_CHECK) {
                // Finite in f32 can still overflow to Inf in T: test the stored value.
                all_finite = all_finite && isfinite(to_f32(rounded));
            } else {
                out[at] = rounded;
            }
        }
    }
    if (p.mode == LORA_MERGE_CHECK && !all_finite) {
        // Every writer stores the same value: no atomic needed.
        flags[layer_index] = 1;
    }
}

}  // namespace merge
}  // namespace fused_lora

#define STAMP_MERGE(SUFFIX, TYPE)                                                     \
    extern "C" __global__ void __launch_bounds__(LORA_MERGE_THREADS)                  \
        lora_merge_##SUFFIX(const LoraMergeParams params) {                           \
        fused_lora::merge::update_tile<TYPE>(params);                                  \
    }
FUSED_LORA_FOR_EACH_DTYPE(STAMP_MERGE)
