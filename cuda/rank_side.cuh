// The backward's rank-side GEMMs, sized for a rank: G = dY.B_l, dB_l =
// s.dY^T.P and dA_l = s.G^T.X~, each output [wide, rank] (or its transpose)
// with the wide side (M for G, N for dB, K for dA) tiled 32 at a time and
// the rank side 32 at a time (16 per mma column pair, those past the rank's
// multiple of 16 skipped), and rows grouped by adapter (group_rows below).
//
// Why not the 64x64 tiles of tiles.cuh: a rank of 16 fills a quarter of a
// 64-wide tile, and the reductions of dA and dB (over M) then had to be
// split over many CTAs with f32 partials 16-32 times their outputs to fill
// the GPU. Here a CTA owns a 32 x 32 output tile and its four warps split
// the reduction among themselves (warp w takes the steps w, w + 4, ...),
// each on its own cp.async pipeline in its own shared memory (no CTA
// barrier in the loop: the copies a warp waits for are its own); at the end
// the four warps' f32 sums are added in warp order through shared memory,
// scaled, added to the old gradient, rounded once and stored. A CTA walks
// the whole reduction of its tile, so there are no partials at all, and the
// order of every sum is fixed: bit-identical run to run.
//
// Tile layouts (2 KB each, per warp and pipeline stage):
// - a reduction-major tile: kStep rows (the reduction: tokens for dA/dB, N
//   for B_l) of 32 elements (the wide or the rank columns); mma fragments
//   through ldmatrix.trans;
// - a row-major tile (G's dY): 32 token rows of kStep reduction elements;
//   fragments through ldmatrix (the `_r64` G loads them from global memory
//   instead: multiply_direct).
// kStep is 32 for f16/bf16 (64-byte rows, the 4 chunks of row r permuted by
// XOR with (r / 2) % 4: conflict-free ldmatrix phases and cp.async quarter
// warps) and 16 for f32 (FMA in the mma fragment layout).
#pragma once

#include <stdint.h>

#include "backward_params.h"
#include "dropout.cuh"
#include "dtype.cuh"
#include "mma.cuh"

namespace fused_lora {
namespace rank_side {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kWide = 32;   // output tile extent on the wide side
constexpr int kCols = 32;   // ... and on the rank side
constexpr int kStages = 2;  // per warp
constexpr int kTileBytes = 2048;
constexpr int kChunks = kTileBytes / 16 / 32;  // 16-byte chunks per lane per tile

static_assert(LORA_BWD_RANK_TILE == kWide && LORA_BWD_RANK_TILE == kCols && LORA_BWD_RANK_THREADS == kThreads,
              "backward_params.h describes the rank-side tiles");

template <typename T> struct Geometry {
    static constexpr int kChunk = 16 / sizeof(T);           // elements per 16-byte chunk
    static constexpr int kStep = 64 / sizeof(T);            // reduction elements per step
    static constexpr bool kMma = sizeof(T) == 2;
    // Reduction-major tile: kStep rows of 32 elements.
    static constexpr int kRedRowChunks = 32 / kChunk;
    static constexpr int kRedRowBytes = 32 * sizeof(T);
    // Row-major tile: 32 rows of kStep elements (64 bytes, 4 chunks).
    static constexpr int kRowRowChunks = 4;
    static constexpr int kRowRowBytes = 64;
    static_assert(kStep * kRedRowBytes == kTileBytes && 32 * kRowRowBytes == kTileBytes, "2 KB tiles");
};

// Byte offset of chunk `chunk` of row `row` in a tile of `row_bytes`-byte
// rows: 64-byte rows (f16/bf16 tiles, G's tile in any type) are swizzled.
__device__ __forceinline__ uint32_t chunk_offset(int row, int chunk, int row_bytes) {
    const int physical = row_bytes == 64 ? chunk ^ ((row >> 1) & 3) : chunk;
    return static_cast<uint32_t>(row * row_bytes + physical * 16);
}

// The shared memory of a rank-side CTA: per warp and stage a wide tile and
// a rank tile; then, once the loops are done, the four warps' sums.
constexpr int kSumLd = kCols + 8;  // [wide][rank] rows: conflict-free float2 writes
constexpr int kSumLdT = kWide + 4; // [rank][wide] rows: conflict-free transposed writes
constexpr int kSumFloats = kCols * kSumLd;
// kW warps: kWarps in the rank-side launches, 4 for dA's CTAs inside dX's
// 128x128 launch (cuda/backward.cu, dx_da) and for the `_r64` gradient
// launches. kH rank halves of 32 columns per CTA: 1, or 2 for the `_r64`
// launches (ranks past 32), whose CTAs read their wide operand (X or dY)
// once for 64 rank columns instead of once per 32 (each stage holds the
// wide tile and the two rank tiles). With 8 warps (the shrink's `_r64`) a
// 64-wide CTA takes 96 KB and about 157 registers and is alone on its SM;
// G with dB and dA lost more to that than they gained in L2 reads, so their
// `_r64` CTAs have 4 warps (48 KB: up to 3 CTAs per SM;
// docs/performance.md).
//
// kV wide tiles of 32 columns per warp: 1, or 2 for dA's `_r64` CTAs in
// dX's 128x128 launch (a warp tile 64 K columns by 64 rank columns: each
// stage holds two X tiles and the two G tiles, and each G fragment feeds
// both X tiles' mma, so a step stages 128 bytes and one ldmatrix wavefront
// per mma where 32 K columns took 192 bytes and 1.5 wavefronts). Its
// sums are parked one wide tile at a time (two rounds: 4 warps x 4 parked
// tiles would be 80 KB).
template <int kW, int kH = 1, int kV = 1> struct alignas(16) SharedOf {
    static constexpr int kWarpCount = kW;
    static constexpr int kHalves = kH;
    static constexpr int kWideTiles = kV;
    union {
        unsigned char tiles[kW][kStages][kV + kH][kTileBytes];
        float sums[kH][kW][kSumFloats];
    };
    int rows[kWide];  // G: the global rows of the CTA's tile
};
static_assert(kSumFloats * 4 <= kStages * 2 * kTileBytes && 2 * kSumFloats * 4 <= kStages * 3 * kTileBytes,
              "a warp's sums fit in its own tiles (warp mode)");
using Shared = SharedOf<kWarps>;
using SharedWide = SharedOf<kWarps, 2>;
// G with dB, and dA, on 64 rank columns (the `_r64` gradient launches): 4
// warps, 48 KB of tiles, so that about 157 registers still leave 3 CTAs on
// an SM where the 8-warp SharedWide CTA is alone.
using SharedWideGrad = SharedOf<LORA_BWD_RANK_WIDE_GRAD_THREADS / 32, 2>;
// G with dB on 64 rank columns: the same per-warp tiles on 6 warps (72 KB).
// Two CTAs of them fit an SM (registers capped at 168 by the launch bounds):
// 12 warps, 3 per scheduler, where two 4-warp CTAs gave 2 (docs/performance.md).
using SharedWideGDb = SharedOf<LORA_BWD_RANK_WIDE_G_DB_THREADS / 32, 2>;
static_assert(sizeof(Shared) <= LORA_BWD_RANK_SHARED_BYTES, "the host's launch reserves enough");
static_assert(sizeof(SharedWide) <= LORA_BWD_RANK_WIDE_SHARED_BYTES, "the host's launch reserves enough");
static_assert(sizeof(SharedWideGrad) <= LORA_BWD_RANK_WIDE_GRAD_SHARED_BYTES, "the host's launch reserves enough");
static_assert(sizeof(SharedWideGDb) <= LORA_BWD_RANK_WIDE_G_DB_SHARED_BYTES, "the host's launch reserves enough");

// The launch's dynamic shared memory (above the 48 KB a launch gets without opting in).
template <typename Sh = Shared> __device__ __forceinline__ Sh& shared_storage() {
    extern __shared__ __align__(16) unsigned char rank_side_shared[];
    return *reinterpret_cast<Sh*>(rank_side_shared);
}

// Rows grouped by adapter (group_rows below), or, without an index, every
// row in order as adapter 0's.
struct Groups {
    const int* perm;   // [m] rows, adapter by adapter, or null: the identity
    const int* seg;    // [L + 2]: segment starts (adapters, then the -1 rows), m
    const int* tiles;  // [L + 2]: prefix sums of ceil(segment / kWide)
    int m;
    int num_adapters;

    __device__ __forceinline__ int begin(int l) const { return perm ? seg[l] : (l == 0 ? 0 : m); }
    __device__ __forceinline__ int end(int l) const { return perm ? seg[l + 1] : m; }
    __device__ __forceinline__ int row(int i) const { return perm ? perm[i] : i; }
    __device__ __forceinline__ int tile_start(int l) const {
        return perm ? tiles[l] : (l == 0 ? 0 : (m + kWide - 1) / kWide);
    }
};

__device__ __forceinline__ Groups groups_of(const LoraBwdParams& p) {
    return Groups{reinterpret_cast<const int*>(p.perm), reinterpret_cast<const int*>(p.segments),
                  reinterpret_cast<const int*>(p.group_tiles), p.m, p.num_adapters};
}

__device__ __forceinline__ int rank_of(const LoraBwdParams& p, int adapter) {
    return p.ranks ? reinterpret_cast<const int*>(p.ranks)[adapter] : p.rank;
}

__device__ __forceinline__ float scale_of(const LoraBwdParams& p, int adapter) {
    return p.scales ? reinterpret_cast<const float*>(p.scales)[adapter] : p.scale;
}

// One 16-byte chunk of a tile at shared address `dst`: `count` (<= chunk)
// elements from `src`, zeros after. A whole chunk of a 16-byte-aligned
// source is a cp.async (src-size 0 when count is 0: nothing read); anything
// else goes element by element through `loader` (PlainChunk or a dropout
// mask) at the global (row, col).
struct PlainChunk {
    template <typename T, int N> __device__ __forceinline__ void load(T* d, const T* s, int, int, int count) const {
#pragma unroll
        for (int e = 0; e < N; ++e) d[e] = e < count ? s[e] : from_f32<T>(0.0f);
    }
};

template <typename T, bool kElementwise = false, typename Loader = PlainChunk>
__device__ __forceinline__ void copy_chunk(uint32_t dst, unsigned char* dst_ptr, const T* src, int count, bool vector_ok,
                                           int row, int col, const Loader& loader = Loader()) {
    constexpr int kChunk = 16 / sizeof(T);
    if (!kElementwise && (count == 0 || (count == kChunk && vector_ok))) {
        cp_async_16_zfill(dst, count ? static_cast<uint64_t>(__cvta_generic_to_global(src)) : 0ull, count ? 16 : 0);
        return;
    }
    // Straight into shared memory (a local array would live in local memory).
    T* d = reinterpret_cast<T*>(dst_ptr);
    if (count > 0) {
        loader.template load<T, kChunk>(d, src, row, col, count);
    } else {
#pragma unroll
        for (int e = 0; e < kChunk; ++e) d[e] = from_f32<T>(0.0f);
    }
}

template <int kFM, int kFN> __device__ __forceinline__ void clear(float (&acc)[kFM][kFN][4]) {
#pragma unroll
    for (int mi = 0; mi < kFM; ++mi)
#pragma unroll
        for (int ni = 0; ni < kFN; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.0f;
}

// The warp's 32 x 32 accumulator: 2 m16 (wide) x 4 n8 (rank) fragments.
using Acc = float[2][4][4];

// Per-lane ldmatrix offsets within a stage's tiles, set up once (opaque:
// kept in registers, not rebuilt in the loop); the k16 and m16 steps are
// immediates. kWideRowMajor: the wide tile is [32 wide][kStep] (G's dY),
// else [kStep][32 wide]; the rank tile is always [kStep][32 rank].
template <bool kWideRowMajor, bool kRankRowMajor = false> struct FragOffsets {
    uint32_t a[2];  // reduction-major: per m16 block; row-major: per k16 step
    uint32_t b[2];  // reduction-major: per pair of n8 blocks; row-major: per k16 step
    __device__ __forceinline__ explicit FragOffsets(int lane) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            a[i] = opaque(kWideRowMajor ? chunk_offset(lane % 16, 2 * i + lane / 16, 64)
                                        : chunk_offset(lane % 8 + (lane / 16) * 8, 2 * i + (lane / 8) % 2, 64));
            b[i] = opaque(kRankRowMajor ? chunk_offset((lane / 16) * 8 + lane % 8, 2 * i + (lane / 8) % 2, 64)
                                        : chunk_offset(lane % 8 + ((lane / 8) % 2) * 8, 2 * i + lane / 16, 64));
        }
    }
};

// acc[h] += wide . rank_h over the first `k_len` (<= kStep) reduction
// elements of one stage (tiles at shared addresses `wide` and, rank half h,
// `wide + (1 + h) * kTileBytes`), the rank columns of half h up to
// `pairs[h]` x 16. The wide fragments are loaded once for every half.
template <typename T, bool kWideRowMajor, bool kRankRowMajor = false, int kH = 1>
__device__ __forceinline__ void multiply(Acc (&accs)[kH], uint32_t wide, const unsigned char* wide_ptr,
                                         const FragOffsets<kWideRowMajor, kRankRowMajor>& offs, const int (&pairs)[kH],
                                         int k_len, int lane) {
    using G = Geometry<T>;
    if constexpr (G::kMma) {
        static_for<G::kStep / 16>([&](auto k16) {
            constexpr int kk = decltype(k16)::value * 16;
            if (kk >= k_len) return;
            uint32_t a[2][4];
            static_for<2>([&](auto m16) {
                constexpr int mi = decltype(m16)::value;
                if constexpr (kWideRowMajor) {
                    ldmatrix_x4<mi * 16 * 64>(a[mi], wide + offs.a[kk / 16]);
                } else {
                    ldmatrix_x4_trans<kk * 64>(a[mi], wide + offs.a[mi]);
                }
            });
            static_for<kH>([&](auto half) {
                constexpr int h = decltype(half)::value;
                const uint32_t rank = wide + (1 + h) * kTileBytes;
                Acc& acc = accs[h];
                static_for<2>([&](auto pair) {
                    constexpr int q = decltype(pair)::value;
                    if (q >= pairs[h]) return;
                    uint32_t b[4];
                    if constexpr (kRankRowMajor) {
                        // [rank][kStep]: rows q * 16 on are 16 rows (a swizzle multiple) further.
                        ldmatrix_x4<q * 16 * 64>(b, rank + offs.b[kk / 16]);
                    } else {
                        ldmatrix_x4_trans<kk * 64>(b, rank + offs.b[q]);
                    }
#pragma unroll
                    for (int mi = 0; mi < 2; ++mi) {
                        Mma<T>::run(acc[mi][2 * q], a[mi], b[0], b[1]);
                        Mma<T>::run(acc[mi][2 * q + 1], a[mi], b[2], b[3]);
                    }
                });
            });
        });
    } else {
        // f32: FMA in the fragment layout (rows g, g + 8, columns 2t, 2t + 1).
        const float* w = reinterpret_cast<const float*>(wide_ptr);
        const int g = lane / 4, t = lane % 4;
        for (int k = 0; k < k_len; ++k) {
            float a[2][2];
#pragma unroll
            for (int mi = 0; mi < 2; ++mi)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int row = mi * 16 + g + 8 * h;
                    // Row-major: 32 rows of 16 floats (64-byte rows, swizzled); else 16 rows of 32.
                    a[mi][h] = kWideRowMajor ? w[(chunk_offset(row, k / 4, 64) / 4) + k % 4] : w[k * 32 + row];
                }
#pragma unroll
            for (int half = 0; half < kH; ++half) {
                const float* r = reinterpret_cast<const float*>(wide_ptr + (1 + half) * kTileBytes);
                Acc& acc = accs[half];
#pragma unroll
                for (int ni = 0; ni < 4; ++ni) {
                    if (ni >= 2 * pairs[half]) continue;
                    const int col = ni * 8 + 2 * t;
                    // Row-major: 32 rank rows of 16 floats (64-byte rows, swizzled); else 16 rows of 32.
                    const float b0 = kRankRowMajor ? r[(chunk_offset(col, k / 4, 64) / 4) + k % 4] : r[k * 32 + col];
                    const float b1 =
                        kRankRowMajor ? r[(chunk_offset(col + 1, k / 4, 64) / 4) + k % 4] : r[k * 32 + col + 1];
#pragma unroll
                    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
                        for (int h = 0; h < 2; ++h) {
                            acc[mi][ni][2 * h] = fmaf(a[mi][h], b0, acc[mi][ni][2 * h]);
                            acc[mi][ni][2 * h + 1] = fmaf(a[mi][h], b1, acc[mi][ni][2 * h + 1]);
                        }
                }
            }
        }
    }
}

// accs[v][h] += wide_v . rank_h over the first `k_len` (<= kStep) tokens
// of one stage of dA (f16/bf16): kV reduction-major X tiles at shared
// address `wide` + v x kTileBytes, then the kH G tiles. Each G fragment is
// loaded once for the kV X tiles; every accumulator sees the same mma in
// the same order as `multiply` on one X tile (the same bits).
template <typename T, int kV, int kH>
__device__ __forceinline__ void multiply_wide(Acc (&accs)[kV][kH], uint32_t wide, const FragOffsets<false>& offs,
                                              const int (&pairs)[kH], int k_len) {
    using G = Geometry<T>;
    static_assert(G::kMma, "the wide dA tile is for f16/bf16");
    static_for<G::kStep / 16>([&](auto k16) {
        constexpr int kk = decltype(k16)::value * 16;
        if (kk >= k_len) return;
        uint32_t a[kV][2][4];
        static_for<kV>([&](auto vi) {
            constexpr int v = decltype(vi)::value;
            static_for<2>([&](auto m16) {
                constexpr int mi = decltype(m16)::value;
                ldmatrix_x4_trans<kk * 64 + v * kTileBytes>(a[v][mi], wide + offs.a[mi]);
            });
        });
        static_for<kH>([&](auto half) {
            constexpr int h = decltype(half)::value;
            static_for<2>([&](auto pair) {
                constexpr int q = decltype(pair)::value;
                if (q >= pairs[h]) return;
                uint32_t b[4];
                ldmatrix_x4_trans<kk * 64 + (kV + h) * kTileBytes>(b, wide + offs.b[q]);
#pragma unroll
                for (int v = 0; v < kV; ++v)
#pragma unroll
                    for (int mi = 0; mi < 2; ++mi) {
                        Mma<T>::run(accs[v][h][mi][2 * q], a[v][mi], b[0], b[1]);
                        Mma<T>::run(accs[v][h][mi][2 * q + 1], a[v][mi], b[2], b[3]);
                    }
            });
        });
    });
}

// G's dY straight from global memory (the `_r64` G with dB, whole steps
// of 16-byte chunks): dY is row-major, so a lane's A fragments of a step's
// two k16 halves are one 16-byte load per fragment row, the step's
// reduction permuted so that lane (g, t) holds the physical elements
// 8t .. 8t + 7 of rows g + 8j: k16 half h takes elements 8t + 4h + {0, 1}
// (the mma's k 2t, 2t + 1) and 8t + 4h + {2, 3} (k 2t + 8, 2t + 9). B's
// rows are permuted the same way through ldmatrix's row addresses. This
// skips the dY tile's cp.async stores and ldmatrix reads (a third of G's
// shared wavefronts). Each k16 mma sums another 16 of the step's 32
// products than with the shared tile: the same products, another fixed
// order. B's tile is swizzled by XOR with (row / 8) % 4 instead, so that a
// phase's rows (8a + c, 8a + c + 1 for a = 0..3) meet no bank twice.
__device__ __forceinline__ uint4 load_global_nc_16(uint64_t gmem) {
    uint4 v;
    asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(gmem));
    return v;
}

// Lane's ldmatrix.trans offset into a direct-path B tile, per pair q of n8
// blocks, for k16 half 0 (half 1: 4 rows, 256 bytes, further).
__device__ __forceinline__ uint32_t direct_b_offset(int lane, int q) {
    const int i = lane % 8;
    const int row = 8 * (i / 2) + 2 * ((lane / 8) % 2) + i % 2;
    const int chunk = 2 * q + lane / 16;
    return static_cast<uint32_t>(row * 64 + ((chunk ^ (i / 2)) << 4));
}

// acc[h] += dY . B_h over one whole step: dY's fragments `dy` (lane (g, t):
// rows g + 8j, j = 2 m16 + (row / 8) % 2, physical elements 8t .. 8t + 7),
// B's half h tile at `tile + (1 + h) * kTileBytes`.
template <typename T, int kH>
__device__ __forceinline__ void multiply_direct(Acc (&accs)[kH], uint32_t tile, const uint32_t (&b_offs)[2],
                                                const uint4 (&dy)[4], const int (&pairs)[kH]) {
    static_for<2>([&](auto k16) {
        constexpr int kk = decltype(k16)::value;
        uint32_t a[2][4];
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
            a[mi][0] = kk == 0 ? dy[2 * mi].x : dy[2 * mi].z;
            a[mi][1] = kk == 0 ? dy[2 * mi + 1].x : dy[2 * mi + 1].z;
            a[mi][2] = kk == 0 ? dy[2 * mi].y : dy[2 * mi].w;
            a[mi][3] = kk == 0 ? dy[2 * mi + 1].y : dy[2 * mi + 1].w;
        }
        static_for<kH>([&](auto half) {
            constexpr int h = decltype(half)::value;
            const uint32_t rank = tile + (1 + h) * kTileBytes;
            Acc& acc = accs[h];
            static_for<2>([&](auto pair) {
                constexpr int q = decltype(pair)::value;
                if (q >= pairs[h]) return;
                uint32_t b[4];
                ldmatrix_x4_trans<kk * 256>(b, rank + b_offs[q]);
#pragma unroll
                for (int mi = 0; mi < 2; ++mi) {
                    Mma<T>::run(acc[mi][2 * q], a[mi], b[0], b[1]);
                    Mma<T>::run(acc[mi][2 * q + 1], a[mi], b[2], b[3]);
                }
            });
        });
    });
}

// A warp's [wide][rank] fragments into `sums` (kSumFloats floats), transposed
// to [rank][wide] when kTransposed.
template <bool kTransposed> __device__ __forceinline__ void park(float* sums, const Acc& acc, int lane) {
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int ni = 0; ni < 4; ++ni) {
                const int row = mi * 16 + lane / 4 + 8 * h;
                const int col = ni * 8 + 2 * (lane % 4);
                if constexpr (kTransposed) {
                    sums[col * kSumLdT + row] = acc[mi][ni][2 * h];
                    sums[(col + 1) * kSumLdT + row] = acc[mi][ni][2 * h + 1];
                } else {
                    *reinterpret_cast<float2*>(&sums[row * kSumLd + col]) =
                        make_float2(acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1]);
                }
            }
}

// Element (row, col) of the parked tiles summed over the first `count`
// warps' (kSumFloats apart), in warp order.
template <bool kTransposed> __device__ __forceinline__ float warp_sum(const float* sums, int count, int row, int col) {
    const int at = row * (kTransposed ? kSumLdT : kSumLd) + col;
    float sum = sums[at];
    for (int w = 1; w < count; ++w) sum += sums[w * kSumFloats + at];
    return sum;
}

// The epilogue's slots over a parked tile of `rows` rows: slot e (consecutive
// slots are a warp's lanes) is element (row, col). With more than 16 columns
// a warp reads one row of 32; with at most 16 (a rank of 16, say) its two
// half-warps read 16 columns of two rows kPair apart, kPair chosen so that the
// rows' banks do not meet (kPair x the row stride is 16 mod 32 banks).
// Returns the number of slots; slot_of gives (row, col), false past the rows.
template <bool kTransposed> struct EpilogueSlots {
    static constexpr int kPair = kTransposed ? 4 : 2;
    static_assert(((kTransposed ? kSumLdT : kSumLd) * kPair) % 32 == 16, "the two rows' banks do not meet");
    bool half;
    int rows;
    __device__ __forceinline__ EpilogueSlots(int rows_in, int cols_in) : half(cols_in <= 16), rows(rows_in) {}
    __device__ __forceinline__ int count() const {
        return half ? ((rows + 2 * kPair - 1) / (2 * kPair)) * (2 * kPair) * 16 : rows * 32;
    }
    __device__ __forceinline__ bool slot_of(int e, int& row, int& col) const {
        if (!half) {
            row = e >> 5;
            col = e & 31;
        } else {
            const int it = e >> 5, lane = e & 31;
            row = (it / kPair) * 2 * kPair + it % kPair + (lane >> 4) * kPair;
            col = lane & 15;
        }
        return row < rows;
    }
};

// Rank column pairs (16 wide) a rank of `rank_left` columns past the tile's
// first needs: the rank's multiple of 16, at most the tile's 2.
__device__ __forceinline__ int pairs_for(int rank_left) { return max(0, min(2, (rank_left + 15) / 16)); }

// ---------------------------------------------------------------------------
// dB_l [n, r_max] = s_l . dY^T . P and dA_l [r_max, k] = s_l . G^T . X~ over
// adapter l's rows, into `out_ptr`: CTA `index` of the launch's share (tiles
// along the wide side, then adapters), rank columns from rank_tile * 32 *
// Sh::kHalves (32 or 64 of them), on the CTA's first Sh::kWarpCount warps
// (their shared memory `sm`).

template <typename T, bool kDa, typename Sh = Shared>
__device__ void rank_grad(const LoraBwdParams& p, Sh& sm, int index, int rank_tile, uint64_t out_ptr) {
    constexpr int kWarps = Sh::kWarpCount;
    constexpr int kThreads = kWarps * 32;
    constexpr int kH = Sh::kHalves;
    // Wide tiles of 32 columns per warp tile (2: dA's `_r64` CTAs in dX's launch).
    constexpr int kV = Sh::kWideTiles;
    static_assert(kV == 1 || (kDa && Geometry<T>::kMma), "two wide tiles: dA in f16/bf16");
    using Geo = Geometry<T>;
    constexpr int kStep = Geo::kStep;
    constexpr int kChunk = Geo::kChunk;
    const int wide_len = kDa ? p.k : p.n;
    const int wide_tiles = (wide_len + kWide * kV - 1) / (kWide * kV);
    const int wide0 = (index % wide_tiles) * kWide * kV;
    const int c0 = rank_tile * kCols * kH;
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    // Split mode: the CTA's warps share one adapter's steps. Warp mode (many
    // adapters of few rows): each warp takes an adapter of its own, walks all
    // its steps and stores its tile itself; no CTA barrier.
    const bool warp_mode = p.rank_warp_mode != 0;
    const int adapter = warp_mode ? (index / wide_tiles) * kWarps + warp : index / wide_tiles;
    if (warp_mode && adapter >= p.num_adapters) return;
    const int first_step = warp_mode ? 0 : warp;
    const int step_stride = warp_mode ? 1 : kWarps;
    const int rank = rank_of(p, adapter);
    int pairs[kH];
#pragma unroll
    for (int h = 0; h < kH; ++h) pairs[h] = pairs_for(rank - c0 - h * kCols);
    const Groups groups = groups_of(p);
    const int row_begin = groups.begin(adapter);
    const int rows = pairs[0] > 0 ? groups.end(adapter) - row_begin : 0;
    const int steps = (rows + kStep - 1) / kStep;

    // Wide operand: dY [m, n] (dB) or X [m, k] (dA); rank operand: P or G [m, r_max].
    const T* wide_src = reinterpret_cast<const T*>(kDa ? p.x : p.dy);
    const T* rank_src = reinterpret_cast<const T*>(kDa ? p.g : p.p);
    const bool wide_vec = wide_len % kChunk == 0 && reinterpret_cast<uintptr_t>(wide_src) % 16 == 0;
    const bool rank_vec = p.r_max % kChunk == 0 && reinterpret_cast<uintptr_t>(rank_src) % 16 == 0;
    const bool drop = kDa && p.dropout != 0;
    const DropoutMask mask{p.dropout_p, p.inv_keep, p.seed, p.offset, p.k};

    // This lane's chunks: one column of chunks (chunk_col), rows row_in_pass
    // + c * kRowsPerPass of a step (a multiple of the swizzle period apart:
    // one shared offset plus immediates).
    const int chunk_col = lane % Geo::kRedRowChunks;
    const int row_in_pass = lane / Geo::kRedRowChunks;
    constexpr int kRowsPerPass = 32 / Geo::kRedRowChunks;
    constexpr uint32_t kPassBytes = kRowsPerPass * Geo::kRedRowBytes;
    const uint32_t chunk_at = chunk_offset(row_in_pass, chunk_col, Geo::kRedRowBytes);
    const int wide_col = wide0 + chunk_col * kChunk;
    // Per wide tile v (columns wide0 + 32v on): the lane's chunk's elements.
    int wide_count[kV];
    uint32_t wide_bytes[kV];
    bool wide_whole = true;
#pragma unroll
    for (int v = 0; v < kV; ++v) {
        wide_count[v] = max(0, min(kChunk, wide_len - wide_col - v * kWide));
        wide_bytes[v] = wide_count[v] ? 16 : 0;
        wide_whole = wide_whole && (wide_vec || wide_count[v] == 0) && (wide_count[v] == kChunk || wide_count[v] == 0);
    }
    // Per rank half: rank chunks past the pairs the multiply reads are not copied.
    int rank_col[kH], rank_count[kH];
    bool rank_copies[kH];
    uint32_t rank_bytes[kH];
    uint64_t rank_at[kH];
    bool rank_whole = true;
#pragma unroll
    for (int h = 0; h < kH; ++h) {
        rank_col[h] = c0 + h * kCols + chunk_col * kChunk;
        rank_copies[h] = chunk_col * kChunk < pairs[h] * 16;
        rank_count[h] = rank_copies[h] ? max(0, min(kChunk, rank - rank_col[h])) : 0;
        rank_bytes[h] = rank_count[h] ? 16 : 0;
        rank_at[h] = static_cast<uint64_t>(__cvta_generic_to_global(rank_src + rank_col[h]));
        rank_whole = rank_whole && (rank_vec || rank_count[h] == 0) && (rank_count[h] == kChunk || rank_count[h] == 0);
    }
    // The whole warp copies 16-byte chunks (or zero-fills): one cp.async each.
    const bool fast = __all_sync(0xffffffffu, !drop && wide_whole && rank_whole);
    const uint64_t wide_at = static_cast<uint64_t>(__cvta_generic_to_global(wide_src + wide_col));
    // Row strides in elements (32-bit): m . ld is one mul.wide, then a shift to bytes.
    const int wide_ld = wide_len;
    const int rank_ld = p.r_max;
    // Without a permutation (one adapter, rows in order) the step's rows are
    // contiguous: the lane's first chunk of step s sits s . kStep rows past
    // its chunk of step 0, the others kRowsPerPass rows apart each, so the
    // addresses advance by constants (no row shuffles, no address rebuilt
    // from a gathered row). kV > 1 only: the 32-wide kernels keep one path.
    const bool contiguous = kV > 1 && fast && groups.perm == nullptr;
    const long long wide_row_bytes = static_cast<long long>(wide_ld) * sizeof(T);
    const long long rank_row_bytes = static_cast<long long>(rank_ld) * sizeof(T);
    const uint64_t wide_first = wide_at + (row_begin + row_in_pass) * wide_row_bytes;
    const uint64_t rank_first = rank_at[0] + (row_begin + row_in_pass) * rank_row_bytes;
    // Rows of the step left for the lane's first chunk.
    const int rows_left = rows - row_in_pass;

    unsigned char* my_tiles = sm.tiles[warp][0][0];
    const uint32_t tiles_at = shared_address(my_tiles);
    constexpr uint32_t kSlotBytes = (kV + kH) * kTileBytes;

    auto stage = [&](int step, int slot) {
        if (step >= steps) return;
        const uint32_t wide_tile = tiles_at + slot * kSlotBytes + chunk_at;
        if constexpr (kV > 1) {
            if (contiguous) {
                const int r0 = step * kStep;
                uint64_t wide_src_c = wide_first + r0 * wide_row_bytes;
                uint64_t rank_src_c = rank_first + r0 * rank_row_bytes;
                static_for<kChunks>([&](auto ci) {
                    constexpr int c = decltype(ci)::value;
                    // Rows past the adapter's copy nothing (src-size 0: never read).
                    const bool live = r0 + c * kRowsPerPass < rows_left;
                    static_for<kV>([&](auto vi) {
                        constexpr int v = decltype(vi)::value;
                        cp_async_16_zfill_at<v * kTileBytes + c * kPassBytes, v * kWide * sizeof(T)>(
                            wide_tile, wide_src_c, live ? wide_bytes[v] : 0);
                    });
                    static_for<kH>([&](auto hi) {
                        constexpr int h = decltype(hi)::value;
                        if (rank_copies[h])
                            cp_async_16_zfill_at<(kV + h) * kTileBytes + c * kPassBytes, h * kCols * sizeof(T)>(
                                wide_tile, rank_src_c, live ? rank_bytes[h] : 0);
                    });
                    wide_src_c += kRowsPerPass * wide_row_bytes;
                    rank_src_c += kRowsPerPass * rank_row_bytes;
                });
                return;
            }
        }
        // Lane i < kStep holds the global row of reduction row i of the step (-1: none).
        const int i = step * kStep + lane;
        const int my_row = lane < kStep && i < rows ? groups.row(row_begin + i) : -1;
        if (fast) {
#pragma unroll
            for (int c = 0; c < kChunks; ++c) {
                const int m = __shfl_sync(0xffffffffu, my_row, row_in_pass + c * kRowsPerPass);
                // A row of -1 copies nothing (src-size 0: its address is never read).
                const uint64_t wide_row = wide_at + static_cast<long long>(m) * wide_ld * sizeof(T);
#pragma unroll
                for (int v = 0; v < kV; ++v)
                    cp_async_16_zfill(wide_tile + v * kTileBytes + c * kPassBytes, wide_row + v * kWide * sizeof(T),
                                      m >= 0 ? wide_bytes[v] : 0);
#pragma unroll
                for (int h = 0; h < kH; ++h)
                    if (rank_copies[h])
                        cp_async_16_zfill(wide_tile + (kV + h) * kTileBytes + c * kPassBytes,
                                          rank_at[h] + static_cast<long long>(m) * rank_ld * sizeof(T),
                                          m >= 0 ? rank_bytes[h] : 0);
            }
            return;
        }
        unsigned char* wide_ptr = my_tiles + slot * kSlotBytes + chunk_at;
#pragma unroll
        for (int c = 0; c < kChunks; ++c) {
            const int m = __shfl_sync(0xffffffffu, my_row, row_in_pass + c * kRowsPerPass);
            const int row = max(m, 0);
#pragma unroll
            for (int v = 0; v < kV; ++v) {
                const int col = wide_col + v * kWide;
                const T* ws = wide_src + static_cast<long long>(row) * wide_len + col;
                const int wc = m >= 0 ? wide_count[v] : 0;
                const uint32_t off = v * kTileBytes + c * kPassBytes;
                if (drop) {
                    copy_chunk<T, true>(wide_tile + off, wide_ptr + off, ws, wc, wide_vec, row, col, mask);
                } else {
                    copy_chunk<T>(wide_tile + off, wide_ptr + off, ws, wc, wide_vec, row, col);
                }
            }
#pragma unroll
            for (int h = 0; h < kH; ++h)
                if (rank_copies[h]) {
                    const T* rs = rank_src + static_cast<long long>(row) * p.r_max + rank_col[h];
                    const uint32_t off = (kV + h) * kTileBytes + c * kPassBytes;
                    copy_chunk<T>(wide_tile + off, wide_ptr + off, rs, m >= 0 ? rank_count[h] : 0, rank_vec, row,
                                  rank_col[h]);
                }
        }
    };

    Acc acc[kV][kH];
#pragma unroll
    for (int v = 0; v < kV; ++v)
#pragma unroll
        for (int h = 0; h < kH; ++h) clear(acc[v][h]);
    const FragOffsets<false> offs(lane);
    // Warp w walks steps w, w + kWarps, ... (warp mode: all of its
    // adapter's steps): its own pipeline of kStages.
    // One warp barrier per step: past it, the step's copies have landed for
    // every lane and every lane is done with the other slot (the previous
    // step's), so the next step's copies go there and fly during this
    // step's multiply.
    stage(first_step, 0);
    cp_async_commit();
    int slot = 0;
    for (int step = first_step; step < steps; step += step_stride) {
        cp_async_wait<0>();
        __syncwarp();
        stage(step + step_stride, slot ^ 1);
        cp_async_commit();
        const int k_len = min(kStep, rows - step * kStep);
        if constexpr (kV == 1) {
            multiply<T, false, false, kH>(acc[0], tiles_at + slot * kSlotBytes, my_tiles + slot * kSlotBytes, offs,
                                          pairs, k_len, lane);
        } else {
            multiply_wide<T, kV, kH>(acc, tiles_at + slot * kSlotBytes, offs, pairs, k_len);
        }
        slot ^= 1;
    }
    cp_async_wait<0>();

    // The tile's sums: the warps' in warp order through shared memory (only
    // the warps that ran a step: the others hold zeros), or in warp mode the
    // warp's own, parked in its own tiles; one parked tile per rank half.
    // Half h's parked tiles start at sums + h * half_floats. With kV wide
    // tiles, one wide tile's halves at a time (kV rounds).
    const float* sums;
    float* parked;
    int summed, first, stride, half_floats;
    if (warp_mode) {
        parked = reinterpret_cast<float*>(my_tiles);
        sums = parked;
        half_floats = kSumFloats;
        summed = 1;
        first = lane;
        stride = 32;
    } else {
        parked = sm.sums[0][warp];
        sums = sm.sums[0][0];
        half_floats = kWarps * kSumFloats;
        summed = max(1, min(kWarps, steps));
        first = threadIdx.x;
        stride = kThreads;
    }

    // dB: tile row = n, column = j; dA: tile row = j, column = k.
    const float scale = scale_of(p, adapter);
    const int out_rows = kDa ? p.r_max : p.n;
    const int out_cols = kDa ? p.k : p.r_max;
    T* out = reinterpret_cast<T*>(out_ptr) + static_cast<long long>(adapter) * out_rows * out_cols;
#pragma unroll
    for (int v = 0; v < kV; ++v) {
        const int wide0v = wide0 + v * kWide;
        // The same for the whole CTA: its barriers stay uniform.
        if (v > 0 && wide0v >= wide_len) break;
        // Round v > 0 parks where round v - 1's epilogue read.
        if (warp_mode) {
            __syncwarp();
#pragma unroll
            for (int h = 0; h < kH; ++h) park<kDa>(parked + h * kSumFloats, acc[v][h], lane);
            __syncwarp();
        } else {
            __syncthreads();
#pragma unroll
            for (int h = 0; h < kH; ++h) park<kDa>(parked + h * kWarps * kSumFloats, acc[v][h], lane);
            __syncthreads();
        }
#pragma unroll
        for (int h = 0; h < kH; ++h) {
            const int ch = c0 + h * kCols;
            if (ch >= p.r_max) continue;
            const int row0 = kDa ? ch : wide0v;
            const int col0 = kDa ? wide0v : ch;
            // Only the part of the tile inside the output, 16 columns a row when they fit.
            const EpilogueSlots<kDa> slots(min(32, out_rows - row0), min(32, out_cols - col0));
            for (int e = first; e < slots.count(); e += stride) {
                int row, col;
                if (!slots.slot_of(e, row, col)) continue;
                const int gr = row0 + row, gc = col0 + col;
                if (gc >= out_cols) continue;
                const int j = kDa ? gr : gc;
                const long long at = static_cast<long long>(gr) * out_cols + gc;
                if (j >= rank) {
                    // Padding past the adapter's rank: never computed, written as 0.
                    if (!p.accumulate) out[at] = from_f32<T>(0.0f);
                    continue;
                }
                float value = scale * warp_sum<kDa>(sums + h * half_floats, summed, row, col);
                if (p.accumulate) value += to_f32(out[at]);
                out[at] = from_f32<T>(value);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// G [m, r_max] = round_T(dY . B_l) (kShrink false), or the shrink
// P [m, r_max] = round_T(X~ . A_l^T) (kShrink true: A_l [r_max, k] is
// rank-major, X~ the dropped-out X when p.dropout), on row tile `index` of
// the grouped rows (the -1 rows' tiles write zeros), rank columns from
// blockIdx.y * 32 * Sh::kHalves (32 or 64 of them).

template <typename T, bool kShrink, typename Sh = Shared>
__device__ void row_tile(const LoraBwdParams& p, Sh& sm, int index) {
    constexpr int kH = Sh::kHalves;
    // The CTA's warps split the reduction steps (8; 4 for SharedWideGrad, 6 for SharedWideGDb).
    constexpr int kWarps = Sh::kWarpCount;
    constexpr int kThreads = kWarps * 32;
    using Geo = Geometry<T>;
    constexpr int kStep = Geo::kStep;
    constexpr int kChunk = Geo::kChunk;
    // G's dY from global memory (multiply_direct): the `_r64` G, f16/bf16, whole steps.
    constexpr bool kDirect = !kShrink && Geo::kMma && kH == 2;
    const Groups groups = groups_of(p);
    const int num_adapters = p.num_adapters;
    if (index >= groups.tile_start(num_adapters + 1)) return;
    // The segment (adapter, or num_adapters for the -1 rows) holding tile `index`.
    int lo = 0, hi = num_adapters;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (groups.tile_start(mid) <= index) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    const int segment = lo;
    const int first = groups.begin(segment) + (index - groups.tile_start(segment)) * kWide;
    const int rows = min(kWide, groups.end(segment) - first);
    const bool adapter_rows = segment < num_adapters;
    const int rank = adapter_rows ? rank_of(p, segment) : 0;
    const int c0 = blockIdx.y * kCols * kH;
    int pairs[kH];
#pragma unroll
    for (int h = 0; h < kH; ++h) pairs[h] = pairs_for(rank - c0 - h * kCols);
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    for (int i = threadIdx.x; i < kWide; i += kThreads) sm.rows[i] = i < rows ? groups.row(first + i) : -1;
    __syncthreads();

    Acc acc[kH];
#pragma unroll
    for (int h = 0; h < kH; ++h) clear(acc[h]);
    // The reduction: N for G, K for the shrink.
    const int red_len = kShrink ? p.k : p.n;
    const int steps = pairs[0] > 0 ? (red_len + kStep - 1) / kStep : 0;
    if (steps > 0) {
        // Wide operand: dY [m, n] or X [m, k], rows of the tile.
        const T* wide = reinterpret_cast<const T*>(kShrink ? p.x : p.dy);
        // Rank operand: B_l [n, r_max] (reduction-major) or A_l [r_max, k] (rank-major).
        const T* rank_src = reinterpret_cast<const T*>(kShrink ? p.a : p.b) +
                            static_cast<long long>(segment) * red_len * p.r_max;
        const bool drop = kShrink && p.dropout != 0;
        const DropoutMask mask{p.dropout_p, p.inv_keep, p.seed, p.offset, p.k};
        const bool wide_vec = red_len % kChunk == 0 && reinterpret_cast<uintptr_t>(wide) % 16 == 0;
        const long long rank_ld = kShrink ? p.k : p.r_max;
        const bool rank_vec = rank_ld % kChunk == 0 && reinterpret_cast<uintptr_t>(rank_src) % 16 == 0;
        // Wide chunks: tile rows lane / 4 + 8c (the CTA's rows: fixed), column of chunks lane % 4.
        const int dy_chunk = lane % Geo::kRowRowChunks;
        constexpr int kDyRowsApart = 32 / Geo::kRowRowChunks;
        const uint32_t dy_at = chunk_offset(lane / Geo::kRowRowChunks, dy_chunk, Geo::kRowRowBytes);
        constexpr uint32_t kDyApart = kDyRowsApart * Geo::kRowRowBytes;
        uint64_t dy_src[kChunks];
        bool dy_live[kChunks];
#pragma unroll
        for (int c = 0; c < kChunks; ++c) {
            const int m = sm.rows[lane / Geo::kRowRowChunks + c * kDyRowsApart];
            dy_live[c] = m >= 0;
            dy_src[c] = static_cast<uint64_t>(__cvta_generic_to_global(wide + static_cast<long long>(max(m, 0)) * red_len +
                                                                       dy_chunk * kChunk));
        }
        // G's B chunks: reduction rows lane / kRedRowChunks + c * (32 / kRedRowChunks), one rank
        // column of chunks. The shrink's A chunks: rank rows lane / 4 + 8c, column of chunks lane % 4.
        const int b_chunk = lane % (kShrink ? Geo::kRowRowChunks : Geo::kRedRowChunks);
        const int b_row = lane / (kShrink ? Geo::kRowRowChunks : Geo::kRedRowChunks);
        constexpr int kBRowsApart = 32 / (kShrink ? Geo::kRowRowChunks : Geo::kRedRowChunks);
        const uint32_t b_at = chunk_offset(b_row, b_chunk, kShrink ? Geo::kRowRowBytes : Geo::kRedRowBytes);
        constexpr uint32_t kBApart = kBRowsApart * (kShrink ? Geo::kRowRowBytes : Geo::kRedRowBytes);
        // Per rank half h (columns c0h = c0 + 32h): G's lane's rank column;
        // the shrink's rank rows c0h + b_row + c * kBRowsApart.
        int b_col[kH], b_count[kH];
        bool b_copies[kH], b_live[kH][kChunks];
        uint64_t b_src[kH];
        uint32_t b_bytes[kH];
        bool b_whole = true;
#pragma unroll
        for (int h = 0; h < kH; ++h) {
            const int c0h = c0 + h * kCols;
            b_col[h] = kShrink ? b_chunk * kChunk : c0h + b_chunk * kChunk;
            b_copies[h] = kShrink ? pairs[h] > 0 : b_chunk * kChunk < pairs[h] * 16;
            b_count[h] = kShrink ? kChunk : (b_copies[h] ? max(0, min(kChunk, rank - b_col[h])) : 0);
#pragma unroll
            for (int c = 0; c < kChunks; ++c) {
                // A rank row past the rank (or past the pairs the multiply reads) is never read.
                const int row = b_row + c * kBRowsApart;
                b_live[h][c] = !kShrink || (row < pairs[h] * 16 && c0h + row < rank);
            }
            b_src[h] = static_cast<uint64_t>(__cvta_generic_to_global(
                rank_src +
                (kShrink ? static_cast<long long>(c0h + b_row) * rank_ld : static_cast<long long>(b_row) * rank_ld) +
                b_col[h]));
            b_bytes[h] = b_count[h] ? 16 : 0;
            b_whole = b_whole && (kShrink ? rank_vec
                                          : ((rank_vec || b_count[h] == 0) && (b_count[h] == kChunk || b_count[h] == 0)));
        }
        const long long b_ld = rank_ld * sizeof(T);
        // Whole steps of 16-byte chunks: one cp.async per chunk, addresses advanced by the step.
        const bool fast = __all_sync(0xffffffffu, !drop && wide_vec && red_len % kStep == 0 && b_whole);

        unsigned char* my_tiles = sm.tiles[warp][0][0];
        const uint32_t tiles_at = shared_address(my_tiles);
        constexpr uint32_t kSlotBytes = (1 + kH) * kTileBytes;
        auto stage = [&](int step, int slot) {
            if (step >= steps) return;
            const int n0 = step * kStep;
            const uint32_t dy_tile = tiles_at + slot * kSlotBytes;
            if (fast) {
                const uint64_t dy_step = static_cast<uint64_t>(n0) * sizeof(T);
                // The direct path (kDirect: fast is direct) loads dY in the loop instead.
                if constexpr (!kDirect) {
#pragma unroll
                    for (int c = 0; c < kChunks; ++c)
                        cp_async_16_zfill(dy_tile + dy_at + c * kDyApart, dy_src[c] + dy_step, dy_live[c] ? 16 : 0);
                }
#pragma unroll
                for (int h = 0; h < kH; ++h) {
                    if (!b_copies[h]) continue;
                    const uint64_t b_step = b_src[h] + (kShrink ? static_cast<uint64_t>(n0) * sizeof(T)
                                                                : static_cast<uint64_t>(n0) * b_ld);
#pragma unroll
                    for (int c = 0; c < kChunks; ++c)
                        cp_async_16_zfill(dy_tile + (1 + h) * kTileBytes +
                                              (kDirect ? b_row * 64 + ((b_chunk ^ c) << 4) : b_at) + c * kBApart,
                                          b_step + c * kBRowsApart * b_ld, b_live[h][c] ? b_bytes[h] : 0);
                }
                return;
            }
            unsigned char* dy_ptr = my_tiles + slot * kSlotBytes;
            const int dy_col = n0 + dy_chunk * kChunk;
            const int dy_count = max(0, min(kChunk, red_len - dy_col));
#pragma unroll
            for (int c = 0; c < kChunks; ++c) {
                const int row = lane / Geo::kRowRowChunks + c * kDyRowsApart;
                const uint32_t off = dy_at + c * kDyApart;
                const int m = max(sm.rows[row], 0);
                const T* src = wide + static_cast<long long>(m) * red_len + dy_col;
                if (drop) {
                    copy_chunk<T, true>(dy_tile + off, dy_ptr + off, src, dy_live[c] ? dy_count : 0, wide_vec, m,
                                        dy_col, mask);
                } else {
                    copy_chunk<T>(dy_tile + off, dy_ptr + off, src, dy_live[c] ? dy_count : 0, wide_vec, 0, 0);
                }
            }
#pragma unroll
            for (int h = 0; h < kH; ++h) {
                if (!b_copies[h]) continue;
#pragma unroll
                for (int c = 0; c < kChunks; ++c) {
                    const uint32_t off = (1 + h) * kTileBytes + b_at + c * kBApart;
                    const int row = b_row + c * kBRowsApart;
                    if constexpr (kShrink) {
                        // A_l [c0h + row, n0 + chunk]: a rank row past the rank reads nothing.
                        const int col = n0 + b_chunk * kChunk;
                        const T* src =
                            rank_src + static_cast<long long>(min(c0 + h * kCols + row, p.r_max - 1)) * rank_ld + col;
                        copy_chunk<T>(dy_tile + off, dy_ptr + off, src,
                                      b_live[h][c] ? max(0, min(kChunk, red_len - col)) : 0, rank_vec, 0, 0);
                    } else {
                        const int n = n0 + row;
                        copy_chunk<T>(dy_tile + off, dy_ptr + off,
                                      rank_src + static_cast<long long>(min(n, p.n - 1)) * p.r_max + b_col[h],
                                      n < p.n ? b_count[h] : 0, rank_vec, 0, 0);
                    }
                }
            }
        };
        int slot = 0;
        // kDirect: fast steps take the direct path; the rest, and every other launch, the shared tiles.
        bool direct = false;
        if constexpr (kDirect) direct = fast;
        if constexpr (kDirect) if (direct) {
            static_assert(kChunks == 4 && kBRowsApart == 8, "direct path: B rows 8c apart get the XOR by c");
            const uint32_t b_offs[2] = {opaque(direct_b_offset(lane, 0)), opaque(direct_b_offset(lane, 1))};
            auto load_dy = [&](int step, uint4(&dy)[4]) {
                const uint64_t dy_step = static_cast<uint64_t>(step) * kStep * sizeof(T);
#pragma unroll
                for (int c = 0; c < kChunks; ++c)
                    dy[c] = dy_live[c] ? load_global_nc_16(dy_src[c] + dy_step) : make_uint4(0u, 0u, 0u, 0u);
            };
            stage(warp, 0);
            cp_async_commit();
            uint4 dy[4];
            if (warp < steps) load_dy(warp, dy);
            for (int step = warp; step < steps; step += kWarps) {
                cp_async_wait<0>();
                __syncwarp();
                stage(step + kWarps, slot ^ 1);
                cp_async_commit();
                uint4 next[4];
                if (step + kWarps < steps) load_dy(step + kWarps, next);
                multiply_direct<T, kH>(acc, tiles_at + slot * kSlotBytes, b_offs, dy, pairs);
#pragma unroll
                for (int c = 0; c < 4; ++c) dy[c] = next[c];
                slot ^= 1;
            }
            cp_async_wait<0>();
        }
        if (!direct) {
            const FragOffsets<true, kShrink> offs(lane);
            stage(warp, 0);
            cp_async_commit();
            // One warp barrier per step, as in rank_grad.
            for (int step = warp; step < steps; step += kWarps) {
                cp_async_wait<0>();
                __syncwarp();
                stage(step + kWarps, slot ^ 1);
                cp_async_commit();
                const uint32_t tile = tiles_at + slot * kSlotBytes;
                multiply<T, true, kShrink, kH>(acc, tile, my_tiles + slot * kSlotBytes, offs, pairs,
                                               min(kStep, red_len - step * kStep), lane);
                slot ^= 1;
            }
            cp_async_wait<0>();
        }
    }

    __syncthreads();
#pragma unroll
    for (int h = 0; h < kH; ++h) park<false>(sm.sums[h][warp], acc[h], lane);
    __syncthreads();
    const int summed = max(1, min(kWarps, steps));

    // Columns past the rank (and every column of a -1 row) are 0.
    T* g = reinterpret_cast<T*>(kShrink ? p.p : p.g);
#pragma unroll
    for (int h = 0; h < kH; ++h) {
        const int c0h = c0 + h * kCols;
        if (c0h >= p.r_max) continue;
        const EpilogueSlots<false> slots(rows, min(32, p.r_max - c0h));
        for (int e = threadIdx.x; e < slots.count(); e += kThreads) {
            int row, col;
            if (!slots.slot_of(e, row, col)) continue;
            const int j = c0h + col;
            if (j >= p.r_max) continue;
            const float value = j < rank ? warp_sum<false>(sm.sums[h][0], summed, row, col) : 0.0f;
            g[static_cast<long long>(sm.rows[row]) * p.r_max + j] = from_f32<T>(value);
        }
    }
}

// ---------------------------------------------------------------------------
// group_rows: a stable counting sort of the rows by adapter, on the device.
//
// One CTA of LORA_GROUP_THREADS threads. Bins: adapters 0..L-1, then bin L
// for rows of index -1 (and out-of-range indices, reported through the
// status word and treated as -1). Warp w owns the rows [w.chunk,
// (w+1).chunk): it counts them per bin (match.any: one lane per bin and
// 32 rows), the counts are scanned (bins in order, warps in order within a
// bin), and each warp writes its rows at its bins' offsets in row order.
// Writes perm [m], seg [L + 2] (bin starts, then m) and tiles [L + 2]
// (prefix sums of ceil(bin / 32): the G launch's row tiles); counts
// [warps, L + 1] is scratch. Integers only: the same result on any run.

constexpr int kGroupWarps = LORA_GROUP_THREADS / 32;

__device__ __forceinline__ int bin_of(const LoraBwdParams& p, int m, bool report) {
    const int index = p.row_adapter ? reinterpret_cast<const int*>(p.row_adapter)[m] : 0;
    if (index >= 0 && index < p.num_adapters) return index;
    if (index != -1 && report && p.status) {
        const unsigned long long word = (static_cast<unsigned long long>(m) << 32) | static_cast<unsigned int>(index);
        atomicMin(reinterpret_cast<unsigned long long*>(p.status), word);
    }
    return p.num_adapters;
}

// An exclusive scan over the CTA of one value per thread (in thread order);
// returns the total through `total`. Warp sums scanned once by warp 0.
__device__ __forceinline__ int2 block_exclusive_scan(int2 value, int2* warp_sums, int2& total) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int2 inclusive = value;
#pragma unroll
    for (int d = 1; d < 32; d *= 2) {
        const int x = __shfl_up_sync(0xffffffffu, inclusive.x, d);
        const int y = __shfl_up_sync(0xffffffffu, inclusive.y, d);
        if (lane >= d) {
            inclusive.x += x;
            inclusive.y += y;
        }
    }
    if (lane == 31) warp_sums[warp] = inclusive;
    __syncthreads();
    static_assert(kGroupWarps == 32, "warp 0 scans one sum per warp");
    if (warp == 0) {
        const int2 mine = warp_sums[lane];
        int2 scan = mine;
#pragma unroll
        for (int d = 1; d < 32; d *= 2) {
            const int x = __shfl_up_sync(0xffffffffu, scan.x, d);
            const int y = __shfl_up_sync(0xffffffffu, scan.y, d);
            if (lane >= d) {
                scan.x += x;
                scan.y += y;
            }
        }
        // Slot w: the sums of the warps before w; slot kGroupWarps: the total.
        warp_sums[lane] = make_int2(scan.x - mine.x, scan.y - mine.y);
        if (lane == 31) warp_sums[kGroupWarps] = scan;
    }
    __syncthreads();
    const int2 before = warp_sums[warp];
    total = warp_sums[kGroupWarps];
    return make_int2(before.x + inclusive.x - value.x, before.y + inclusive.y - value.y);
}

__device__ void group_rows(const LoraBwdParams& p) {
    __shared__ int2 warp_sums[kGroupWarps + 1];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int bins = p.num_adapters + 1;
    int* counts = reinterpret_cast<int*>(p.group_counts);  // [warps][bins]
    int* perm = reinterpret_cast<int*>(p.perm);
    int* seg = reinterpret_cast<int*>(p.segments);
    int* tiles = reinterpret_cast<int*>(p.group_tiles);
    const int chunk = (p.m + kGroupWarps - 1) / kGroupWarps;
    const int row_begin = min(warp * chunk, p.m);
    const int row_end = min(row_begin + chunk, p.m);
    int* my_counts = counts + static_cast<long long>(warp) * bins;

    for (int b = lane; b < bins; b += 32) my_counts[b] = 0;
    __syncwarp();
    for (int m0 = row_begin; m0 < row_end; m0 += 32) {
        const int m = m0 + lane;
        const bool live = m < row_end;
        const int bin = live ? bin_of(p, m, true) : -1;
        const unsigned same = __match_any_sync(0xffffffffu, bin);
        if (live && lane == __ffs(same) - 1) my_counts[bin] += __popc(same);
        __syncwarp();
    }
    __syncthreads();

    // Per bin: the warps' counts become their offsets within the bin. Each
    // thread takes a contiguous run of bins, so the scan over threads is the
    // scan over bins.
    const int per_thread = (bins + LORA_GROUP_THREADS - 1) / LORA_GROUP_THREADS;
    const int bin_begin = min(static_cast<int>(threadIdx.x) * per_thread, bins);
    const int bin_end = min(bin_begin + per_thread, bins);
    int2 mine = make_int2(0, 0);  // rows, G tiles
    for (int b = bin_begin; b < bin_end; ++b) {
        int running = 0;
        for (int w = 0; w < kGroupWarps; ++w) {
            const int c = counts[static_cast<long long>(w) * bins + b];
            counts[static_cast<long long>(w) * bins + b] = running;
            running += c;
        }
        seg[b] = running;  // the bin's size, for now
        mine.x += running;
        mine.y += (running + kWide - 1) / kWide;
    }
    int2 total;
    int2 start = block_exclusive_scan(mine, warp_sums, total);
    for (int b = bin_begin; b < bin_end; ++b) {
        const int size = seg[b];
        seg[b] = start.x;
        tiles[b] = start.y;
        start.x += size;
        start.y += (size + kWide - 1) / kWide;
    }
    if (threadIdx.x == 0) {
        seg[bins] = p.m;
        tiles[bins] = total.y;
    }
    __syncthreads();

    for (int m0 = row_begin; m0 < row_end; m0 += 32) {
        const int m = m0 + lane;
        const bool live = m < row_end;
        const int bin = live ? bin_of(p, m, false) : -1;
        const unsigned same = __match_any_sync(0xffffffffu, bin);
        int base = 0;
        if (live) {
            base = seg[bin] + my_counts[bin];
            perm[base + __popc(same & ((1u << lane) - 1u))] = m;
        }
        __syncwarp();
        if (live && lane == __ffs(same) - 1) my_counts[bin] += __popc(same);
        __syncwarp();
    }
}

}  // namespace rank_side
}  // namespace fused_lora
