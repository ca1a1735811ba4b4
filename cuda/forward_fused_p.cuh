// The fused forward with the shrink inside: one launch computes
//     P = round_T(X.A^T)   and   Y = round_T(X.W0^T + s.P.B^T + bias)
// for one adapter of rank r <= LORA_FWD_FUSED_P_MAX_RANK (f16/bf16, no
// dropout, no per-row adapter index, K unsplit; the host routes everything
// else to the shrink launch and lora_forward_gemm, src/forward/launch.rs).
//
// A CTA of 8 warps owns a 128 x 256 output tile, each warp 64 x 64 (the
// 128x128 tile's warp tile: 4 x 8 mma fragments). K is staged 32 at a time
// through 4 cp.async slots, each holding X's 128 x 32 tile, W0's 256 x 32
// tile and A's r x 32 slice (rows past r zero). The X tile feeds both the
// base GEMM and P: warp (wm, wn) multiplies its m16 fragment wn (16 of the
// 128 rows, none shared with another warp) by A's slice, so the CTA computes
// its 128 rows of P once and X is read from global memory once per column
// tile, as the base GEMM reads it anyway. The cost: each column tile
// recomputes P, r / 256 more mma (6.25 % at r = 16) instead of a shrink
// launch that reads X again.
//
// After the K loop P's fragments are rounded to T (P is used exactly as
// stored, as the two-launch path uses what the shrink stored) into shared
// memory, B's 256 x r slice beside them, and each warp adds s.P.B^T to its
// accumulators (one k16 mma per fragment, then an f32 fma with s): Y is the
// contract's formula up to f32 accumulation order. The CTAs of column tile 0
// write P to global memory (the forward returns it for the backward). P's
// own accumulation order (K in order, k16 by k16) differs from the shrink's
// (K-steps interleaved over 4 warps, then summed): each element of P is the
// shrink's or the value of T next to it (docs/performance.md). No CTA waits
// on another.
#pragma once

#include "cluster.cuh"
#include "dtype.cuh"
#include "forward_params.h"
#include "tiles.cuh"

namespace fused_lora {
namespace fwd_p {

using namespace tiles;

constexpr int kRows = LORA_FWD_FUSED_P_TILE_M;
constexpr int kCols = LORA_FWD_FUSED_P_TILE_N;
constexpr int kThreadsP = LORA_FWD_FUSED_P_THREADS;
constexpr int kRankRows = LORA_FWD_FUSED_P_MAX_RANK;  // A's rows staged per step
constexpr int kStages = 4;
constexpr int kWarpRows = 64;
constexpr int kWarpCols = 64;
constexpr int kWarpsCols = kCols / kWarpCols;
constexpr int kFragsM = kWarpRows / 16;
constexpr int kFragsN = kWarpCols / 8;
constexpr int kOutLdP = kCols + kOutPad;
static_assert(kThreadsP == (kRows / kWarpRows) * kWarpsCols * 32, "8 warps of 64 x 64");
static_assert(kRankRows == 16, "P's columns are one pair of n8 fragments: one ldmatrix.x4 of A per k16");
static_assert(kFragsM == kWarpsCols && kWarpsCols == 4, "warp (wm, wn) computes P for its m16 fragment wn: every row once");

template <typename T> struct Slot {
    T x[kRows][RowTile<T>::kLd];
    T w[kCols][RowTile<T>::kLd];
    T a[kRankRows][RowTile<T>::kLd];
};

template <typename T> struct Shared {
    // The slots are dead once the K loop ends: slot 0's x and w tiles then
    // hold P and B for the expand, and the output tile reuses all of them.
    union alignas(16) {
        Slot<T> slot[kStages];
        float out[kRows][kOutLdP];
    };
};
static_assert(sizeof(Shared<__half>) <= LORA_FWD_FUSED_P_SHARED_BYTES, "the host's launch reserves enough");

// The steady-state copy of one K-step's three tiles over 256 threads
// (ChunkCopy's plan for 8 warps): a thread's chunks share a column of
// chunks and lie 64 rows apart (a multiple of the swizzle period), so one
// global address per operand, one stride (X, W0 and A all have rows K long)
// and one shared offset describe them; a K-step moves the addresses by 64
// bytes. Chunks outside the window zero-fill without reading; A's slice
// (16 rows) is copied by the first 64 threads. Kept small: the 64 x 64
// warp tile's accumulators leave few registers.
template <typename T> struct StepCopy {
    static constexpr int kPerRow = RowTile<T>::kChunksPerRow;
    static constexpr int kRowsApart = kThreadsP / kPerRow;
    static constexpr int kXCount = kRows / kRowsApart;
    static constexpr int kWCount = kCols / kRowsApart;
    static constexpr uint32_t kDstApart = kRowsApart * RowTile<T>::kLd * sizeof(T);
    static_assert(kRowsApart % RowTile<T>::kSwizzlePeriod == 0, "a thread's chunks share their swizzle");
    static_assert(kRows % kRowsApart == 0 && kCols % kRowsApart == 0 && kRankRows < kRowsApart, "whole passes");

    uint64_t x_src, w_src, a_src;  // the thread's first chunk of each operand in the next step
    uint64_t apart;                // bytes from one of its chunks to the next
    uint32_t dst;                  // shared byte offset of its first chunk in a tile
    uint32_t live;                 // bit i: X chunk i, bit kXCount + i: W0 chunk i inside the matrix
    uint32_t a_bytes;              // bytes its chunk of A reads (16, or 0 past the rank)
    bool copies_a;                 // the thread holds one of A's chunks
    int col;                       // its column in the step

    template <typename XLive, typename WLive>
    __device__ __forceinline__ void setup(const T* x, const T* w, const T* a, long long ld, XLive x_live,
                                          WLive w_live, int rank) {
        const int row = threadIdx.x / kPerRow;
        col = (threadIdx.x % kPerRow) * RowTile<T>::kChunk;
        const long long at = row * ld + col;
        x_src = static_cast<uint64_t>(__cvta_generic_to_global(x + at));
        w_src = static_cast<uint64_t>(__cvta_generic_to_global(w + at));
        a_src = static_cast<uint64_t>(__cvta_generic_to_global(a + (row < rank ? at : 0)));
        apart = static_cast<uint64_t>(kRowsApart * ld * static_cast<long long>(sizeof(T)));
        dst = opaque(byte_offset<RowTile<T>, T>(row, col));
        copies_a = row < kRankRows;
        a_bytes = opaque(row < rank ? 16 : 0);
        live = 0;
#pragma unroll
        for (int i = 0; i < kXCount; ++i) live |= x_live(row + i * kRowsApart) ? 1u << i : 0;
#pragma unroll
        for (int i = 0; i < kWCount; ++i) live |= w_live(row + i * kRowsApart) ? 1u << (kXCount + i) : 0;
    }

    // The next step into the slot at shared address `slot` (tiles at the
    // given offsets). kInterior: every X and W0 chunk of the tile lies
    // inside its matrix (a CTA away from the M and N edges), so none needs a
    // predicate; kPartial: the chunks from `k_left` on zero-fill.
    template <bool kInterior, bool kPartial>
    __device__ __forceinline__ void copy(uint32_t slot, uint32_t w_offset, uint32_t a_offset, int k_left) {
        const bool inside = !kPartial || col < k_left;
        auto bytes = [&](int bit) -> uint32_t {
            return inside && (kInterior || (live >> bit) & 1) ? 16 : 0;
        };
        uint64_t from = x_src;
        const uint32_t to = slot + dst;
#pragma unroll
        for (int i = 0; i < kXCount; ++i) {
            cp_async_16_zfill(to + i * kDstApart, from, bytes(i));
            from += apart;
        }
        from = w_src;
#pragma unroll
        for (int i = 0; i < kWCount; ++i) {
            cp_async_16_zfill(to + w_offset + i * kDstApart, from, bytes(kXCount + i));
            from += apart;
        }
        if (copies_a) cp_async_16_zfill(to + a_offset, a_src, inside ? a_bytes : 0);
        x_src += kStep * sizeof(T);
        w_src += kStep * sizeof(T);
        a_src += kStep * sizeof(T);
    }
};

// The output tile to global memory over 256 threads (store_output's loop for
// 8 warps): tile row i, column j is out[m0 + i][c0 + j], plus bias[col] and
// prior[m][col] where given, in f32, rounded to T once.
template <typename T>
__device__ __forceinline__ void store_tile(const float (&tile)[kRows][kOutLdP], T* out, const T* prior, const T* bias,
                                           int m0, int c0, int rows, int cols) {
    constexpr int kVecsPerRow = kCols / kOutVec;
    constexpr int kRowsApart = kThreadsP / kVecsPerRow;
    static_assert(kThreadsP % kVecsPerRow == 0 && kRows % kRowsApart == 0, "whole passes of rows");
    const bool vector_io = cols % kOutVec == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0 &&
                           reinterpret_cast<uintptr_t>(prior) % 16 == 0;
    const int row0 = threadIdx.x / kVecsPerRow;
    const int col = (threadIdx.x % kVecsPerRow) * kOutVec;
    const int c = c0 + col;
    const int count = max(0, min(kOutVec, cols - c));
    float add[kOutVec] = {};
    if (bias) {
#pragma unroll
        for (int e = 0; e < kOutVec; ++e)
            if (e < count) add[e] = to_f32(bias[c + e]);
    }
#pragma unroll 1
    for (int i = 0; i < kRows / kRowsApart; ++i) {
        const int row = row0 + i * kRowsApart;
        const int m = m0 + row;
        if (m >= rows || count == 0) continue;
        const float4 sums = *reinterpret_cast<const float4*>(&tile[row][col]);
        float vals[kOutVec] = {sums.x + add[0], sums.y + add[1], sums.z + add[2], sums.w + add[3]};
        const long long at = static_cast<long long>(m) * cols + c;
        if (vector_io && count == kOutVec) {
            store_vector(vals, out, prior, at);
        } else {
#pragma unroll
            for (int e = 0; e < kOutVec; ++e) {
                if (e >= count) continue;
                const float old = prior ? to_f32(prior[at + e]) : 0.0f;
                out[at + e] = from_f32<T>(vals[e] + old);
            }
        }
    }
}

// The bits of a 16-bit value, for packing two into one 32-bit shared store.
__device__ __forceinline__ uint32_t bits_of(__half v) { return __half_as_ushort(v); }
__device__ __forceinline__ uint32_t bits_of(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }

// The row and chunk that 16-byte access `c` takes of a tile's first two
// chunks per row (P's and B's ranks 0-15): each 8 consecutive accesses (one
// shared-memory phase) cover rows {0, 1, 4, 5} or {2, 3, 6, 7} of a group of
// 8, whose swizzled chunks lie in 8 distinct bank groups, and 4 whole rows
// of the global matrix (whole 32-byte sectors for rank 16).
__device__ __forceinline__ void two_chunk_slot(int c, int& row, int& chunk) {
    const int phase = c / 8, i = c % 8;
    row = (phase / 2) * 8 + (phase % 2) * 2 + (i / 2) % 2 + (i / 4) * 4;
    chunk = i % 2;
}

// P's two n8 fragments (ranks 0-7, 8-15) of one m16 fragment of X, one k16.
template <typename T>
__device__ __forceinline__ void p_mma(float (&pacc)[1][2][4], const uint32_t (&x)[4], const uint32_t (&a)[4]) {
    Mma<T>::run(pacc[0][0], x, a[0], a[1]);
    Mma<T>::run(pacc[0][1], x, a[2], a[3]);
}


// kCluster = 1: the tile above. kCluster > 1 (sm_90, a cluster of the
// kCluster column tiles of one row block, blockIdx.x the column tile): CTA
// rank c computes P's rank columns 16c..16c+15 in its K loop (A's rows from
// 16c, the same work as rank 16), stores them rounded to T in its own P
// tile, and after a cluster barrier copies the other CTAs' 16-column slices
// out of their shared memory (distributed shared memory), so that every CTA
// holds P's 128 x 16.kCluster tile; the expand then runs over k =
// 16.kCluster. Each element of P is computed by one CTA, in the rank-16
// order. A second cluster barrier keeps each slice alive until its readers
// are done, before the output tile reuses the memory.
template <typename T, int kCluster> __device__ void gemm_fused_p(const LoraGemmParams& p) {
    extern __shared__ __align__(16) unsigned char dynamic_shared[];
    Shared<T>& sm = *reinterpret_cast<Shared<T>*>(dynamic_shared);
    static_assert(kCluster == 1 || (kCluster % 2 == 0 && kCluster <= kStages * 2), "slices pair up in the slots");
    constexpr int kKBlocks = kCluster;  // k16 blocks of the expand

    int tile_m, tile_n;
    if constexpr (kCluster == 1) {
        grouped_tile(tile_m, tile_n);
    } else {
        tile_n = blockIdx.x;
        tile_m = blockIdx.y;
    }
    const int first_rank_col = kCluster == 1 ? 0 : kRankRows * cluster_rank();
    const int m0 = tile_m * kRows;
    const int n0 = tile_n * kCols;
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int wn = warp % kWarpsCols;
    const int warp_m0 = (warp / kWarpsCols) * kWarpRows;
    const int warp_n0 = wn * kWarpCols;
    const int rank = p.rank;

    const T* x = reinterpret_cast<const T*>(p.x);
    const T* w = reinterpret_cast<const T*>(p.w);
    // The CTA's slice of A: all of it, or (cluster) rows 16c.. of it.
    const int slice_rank = kCluster == 1 ? rank : max(0, min(kRankRows, rank - first_rank_col));
    const T* a = reinterpret_cast<const T*>(p.shrink_rhs) +
                 (kCluster == 1 ? 0 : static_cast<long long>(slice_rank > 0 ? first_rank_col : 0) * p.k);
    const int steps = (p.k + kStep - 1) / kStep;
    const int whole_steps = p.k / kStep;

    StepCopy<T> copy;
    copy.setup(x + static_cast<long long>(m0) * p.k, w + static_cast<long long>(n0) * p.k, a, p.k,
               [&](int row) { return m0 + row < p.m; }, [&](int row) { return n0 + row < p.n; }, slice_rank);

    // Whole tiles of X and W0 rows (every CTA of k/v at M = 4096).
    const bool interior = m0 + kRows <= p.m && n0 + kCols <= p.n;
    using SlotT = Slot<T>;
    constexpr uint32_t kSlotBytes = sizeof(SlotT);
    constexpr uint32_t kWOffset = offsetof(SlotT, w);
    constexpr uint32_t kAOffset = offsetof(SlotT, a);
    const uint32_t slots = shared_address(&sm.slot[0]);
    auto stage_step = [&](int step, int slot) {
        const uint32_t at = slots + slot * kSlotBytes;
        if (step < whole_steps) {
            if (interior) {
                copy.template copy<true, false>(at, kWOffset, kAOffset, kStep);
            } else {
                copy.template copy<false, false>(at, kWOffset, kAOffset, kStep);
            }
        } else if (step < steps) {
            copy.template copy<false, true>(at, kWOffset, kAOffset, p.k - step * kStep);
        }
    };

    float acc[kFragsM][kFragsN][4];
    float pacc[1][2][4];  // P's 16 rows of this warp, ranks 0-7 and 8-15
    clear(acc);
    clear(pacc);

    const auto lhs_rows = left_rows<T, false, kFragsM, kRows>(warp_m0, lane);
    const auto rhs_rows = right_rows<T, false, kFragsN / 2, kCols>(warp_n0, lane);
    // Bytes per staged row (RowTile: 32 elements).
    constexpr int kRowBytes = RowTile<T>::kLd * sizeof(T);

#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
        stage_step(s, s);
        cp_async_commit();
    }
    // Which of the warp's m16 fragments feeds P (warp-uniform; set up once).
    const int p_frag = static_cast<int>(opaque(wn));
    int read = 0, write = kStages - 1;
    for (int step = 0; step < steps; ++step) {
        // The step has landed, and every warp is done with the previous
        // one, whose slot the next copy reuses.
        cp_async_wait<kStages - 2>();
        __syncthreads();
        stage_step(step + kStages - 1, write);
        cp_async_commit();
        const uint32_t at = slots + read * kSlotBytes;
        static_for<kStep / 16>([&](auto k16) {
            constexpr int kk = decltype(k16)::value * 16;
            uint32_t af[kFragsM][4];
            uint32_t bf[kFragsN][2];
            static_for<kFragsM>([&](auto mi) {
                load_fragment<T, false, kFragsM, kRows, decltype(mi)::value, kk>(af[decltype(mi)::value], at,
                                                                                   lhs_rows);
            });
            static_for<kFragsN / 2>([&](auto nj) {
                constexpr int j = decltype(nj)::value;
                uint32_t r[4];
                load_fragment<T, false, kFragsN / 2, kCols, j, kk>(r, at + kWOffset, rhs_rows);
                bf[2 * j][0] = r[0];
                bf[2 * j][1] = r[1];
                bf[2 * j + 1][0] = r[2];
                bf[2 * j + 1][1] = r[3];
            });
#pragma unroll
            for (int mi = 0; mi < kFragsM; ++mi)
#pragma unroll
                for (int ni = 0; ni < kFragsN; ++ni) Mma<T>::run(acc[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
            // P's rows of this warp: its m16 fragment p_frag, against A's
            // slice, which lies kAOffset - kWOffset bytes past the W0 tile:
            // the W0 fragments' addresses plus an immediate.
            constexpr int kABlock = (kAOffset - kWOffset) / (16 * kRowBytes);
            static_assert((kAOffset - kWOffset) % (16 * kRowBytes) == 0, "A at an immediate");
            uint32_t ar[4];
            load_fragment<T, false, kFragsN / 2, kCols, kABlock, kk>(ar, at + kWOffset - warp_n0 * kRowBytes,
                                                                    rhs_rows);
            switch (p_frag) {
                case 0:
                    p_mma<T>(pacc, af[0], ar);
                    break;
                case 1:
                    p_mma<T>(pacc, af[1], ar);
                    break;
                case 2:
                    p_mma<T>(pacc, af[2], ar);
                    break;
                default:
                    p_mma<T>(pacc, af[3], ar);
                    break;
            }
        });
        read = read == kStages - 1 ? 0 : read + 1;
        write = write == kStages - 1 ? 0 : write + 1;
    }
    cp_async_wait<0>();
    __syncthreads();  // every warp is done with the slots

    // P rounded to T into slot 0's x tile (its 16 columns; those past the
    // rank are zero: A's rows there were), B's 256 x 16 slice into its w
    // tile (columns past the rank and rows past N zero).
    // (Cluster: P's columns 32i..32i+31 in slot i's x tile, B's in its w
    // tile; this CTA's slice at columns 16c..16c+15.)
    const uint32_t p_tile = slots;
    const uint32_t b_tile = slots + kWOffset;
    const int crank = kCluster == 1 ? 0 : cluster_rank();
    const uint32_t p_slice = p_tile + (crank / 2) * kSlotBytes;
    const int p_slice_col = (crank % 2) * 16;
    {
        const int g = lane / 4, t = lane % 4;
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = warp_m0 + wn * 16 + g + 8 * h;
                const uint32_t pair = bits_of(from_f32<T>(pacc[0][j][2 * h])) |
                                      (bits_of(from_f32<T>(pacc[0][j][2 * h + 1])) << 16);
                const uint32_t off = byte_offset<RowTile<T>, T>(row, p_slice_col + j * 8) + 2 * t * sizeof(T);
                asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(p_slice + off), "r"(pair));
            }
        if constexpr (kCluster > 1) {
            // Every CTA's slice is stored: copy the others' (16 bytes a
            // thread per slice; the same offsets in every CTA).
            cluster_arrive();
            cluster_wait();
            const int row = threadIdx.x / 2, chunk = threadIdx.x % 2;
            static_assert(kRows * 2 == kThreadsP, "one chunk of a slice per thread");
#pragma unroll
            for (int q = 0; q < kCluster; ++q) {
                if (q == crank) continue;
                const uint32_t off = (q / 2) * kSlotBytes +
                                     byte_offset<RowTile<T>, T>(row, (q % 2) * 16 + chunk * RowTile<T>::kChunk);
                uint32_t remote, v0, v1, v2, v3;
                asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(p_tile + off), "r"(q));
                asm volatile("ld.shared::cluster.v4.u32 {%0, %1, %2, %3}, [%4];"
                             : "=r"(v0), "=r"(v1), "=r"(v2), "=r"(v3)
                             : "r"(remote)
                             : "memory");
                asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" ::"r"(p_tile + off), "r"(v0), "r"(v1),
                             "r"(v2), "r"(v3)
                             : "memory");
            }
            // Done with the other CTAs' memory (they wait for this before
            // their output tile overwrites it).
            cluster_arrive();
        }
        const T* b = reinterpret_cast<const T*>(p.ad_rhs);
        const long long b_ld = p.ad_rhs_ld;
        if constexpr (kCluster == 1) {
            constexpr int kBChunks = kCols * 2;  // two 8-element chunks per row
#pragma unroll
            for (int c = threadIdx.x; c < kBChunks; c += kThreadsP) {
                int row, chunk;
                two_chunk_slot(c, row, chunk);
                const bool live = n0 + row < p.n && chunk * RowTile<T>::kChunk < rank;
                const T* src = b + (live ? static_cast<long long>(n0 + row) * b_ld + chunk * RowTile<T>::kChunk : 0);
                cp_async_16_zfill(b_tile + byte_offset<RowTile<T>, T>(row, chunk * RowTile<T>::kChunk),
                                  static_cast<uint64_t>(__cvta_generic_to_global(src)), live ? 16 : 0);
            }
        } else {
            // B's 256 x 16.kCluster slice: chunk c of a row in slot c / 4's w tile.
            constexpr int kPerRow = kCluster * 2;
#pragma unroll 1
            for (int c = threadIdx.x; c < kCols * kPerRow; c += kThreadsP) {
                const int row = c / kPerRow, chunk = c % kPerRow;
                const int col = chunk * RowTile<T>::kChunk;
                const bool live = n0 + row < p.n && col < rank;
                const T* src = b + (live ? static_cast<long long>(n0 + row) * b_ld + col : 0);
                cp_async_16_zfill(b_tile + (chunk / 4) * kSlotBytes + byte_offset<RowTile<T>, T>(row, col % 32),
                                  static_cast<uint64_t>(__cvta_generic_to_global(src)), live ? 16 : 0);
            }
        }
        cp_async_commit();
        cp_async_wait<0>();
    }
    __syncthreads();

    // Column tile 0 writes its rows of P [m, rank] in 16-byte chunks (the
    // host routes only ranks that are whole chunks), element by element
    // where P's base is not 16-byte aligned (an offset view: the path, and
    // so Y, must not depend on where P is kept).
    if (kCluster == 1 && tile_n == 0) {
        T* pg = reinterpret_cast<T*>(p.ad_lhs);
        const bool vector_p = reinterpret_cast<uintptr_t>(pg) % 16 == 0;
        const int chunks = rank / RowTile<T>::kChunk;
        for (int c = threadIdx.x; c < kRows * 2; c += kThreadsP) {
            int row, chunk;
            two_chunk_slot(c, row, chunk);
            if (m0 + row >= p.m || chunk >= chunks) continue;
            const T* from = reinterpret_cast<const T*>(reinterpret_cast<const unsigned char*>(&sm.slot[0].x[0][0]) +
                                                       byte_offset<RowTile<T>, T>(row, chunk * RowTile<T>::kChunk));
            T* to = pg + static_cast<long long>(m0 + row) * rank + chunk * RowTile<T>::kChunk;
            if (vector_p) {
                *reinterpret_cast<uint4*>(to) = *reinterpret_cast<const uint4*>(from);
            } else {
#pragma unroll
                for (int e = 0; e < RowTile<T>::kChunk; ++e) to[e] = from[e];
            }
        }
    }

    if constexpr (kCluster > 1) {
        // The CTA's own 16 columns of P [m, rank], element by element (the
        // columns a slice holds may end inside a 16-byte chunk's row).
        T* pg = reinterpret_cast<T*>(p.ad_lhs);
        const int row = threadIdx.x / 2, chunk = threadIdx.x % 2;
        const int col = kRankRows * crank + chunk * RowTile<T>::kChunk;
        if (m0 + row < p.m && col < rank) {
            const T* from = reinterpret_cast<const T*>(
                reinterpret_cast<const unsigned char*>(&sm.slot[crank / 2].x[0][0]) +
                byte_offset<RowTile<T>, T>(row, p_slice_col + chunk * RowTile<T>::kChunk));
            T* to = pg + static_cast<long long>(m0 + row) * rank + col;
#pragma unroll
            for (int e = 0; e < RowTile<T>::kChunk; ++e) to[e] = from[e];
        }
    }

    // acc += s . P.B^T: k16 mma per fragment into a temporary (one; the
    // cluster form one per 16 rank columns), added with the scale in f32.
    const float scale = p.scale;
    if constexpr (kCluster == 1) {
        static_for<kFragsM>([&](auto m16) {
            constexpr int mi = decltype(m16)::value;
            uint32_t pf[4];
            load_fragment<T, false, kFragsM, kRows, mi, 0>(pf, p_tile, lhs_rows);
            static_for<kFragsN / 2>([&](auto nj) {
                constexpr int j = decltype(nj)::value;
                uint32_t r[4];
                load_fragment<T, false, kFragsN / 2, kCols, j, 0>(r, b_tile, rhs_rows);
                float tmp[2][4] = {};
                Mma<T>::run(tmp[0], pf, r[0], r[1]);
                Mma<T>::run(tmp[1], pf, r[2], r[3]);
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    acc[mi][2 * j][e] = fmaf(scale, tmp[0][e], acc[mi][2 * j][e]);
                    acc[mi][2 * j + 1][e] = fmaf(scale, tmp[1][e], acc[mi][2 * j + 1][e]);
                }
            });
        });
    } else {
        // P's and B's fragments reloaded per k16 (few registers are left).
        static_for<kFragsM>([&](auto m16) {
            constexpr int mi = decltype(m16)::value;
            static_for<kFragsN / 2>([&](auto nj) {
                constexpr int j = decltype(nj)::value;
                float tmp[2][4] = {};
#pragma unroll 1
                for (int pair = 0; pair < kKBlocks / 2; ++pair) {
                    const uint32_t tile = static_cast<uint32_t>(pair) * kSlotBytes;
                    static_for<2>([&](auto half) {
                        constexpr int kk = decltype(half)::value * 16;
                        uint32_t pf[4], r[4];
                        load_fragment<T, false, kFragsM, kRows, mi, kk>(pf, p_tile + tile, lhs_rows);
                        load_fragment<T, false, kFragsN / 2, kCols, j, kk>(r, b_tile + tile, rhs_rows);
                        Mma<T>::run(tmp[0], pf, r[0], r[1]);
                        Mma<T>::run(tmp[1], pf, r[2], r[3]);
                    });
                }
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    acc[mi][2 * j][e] = fmaf(scale, tmp[0][e], acc[mi][2 * j][e]);
                    acc[mi][2 * j + 1][e] = fmaf(scale, tmp[1][e], acc[mi][2 * j + 1][e]);
                }
            });
        });
    }

    // Epilogue through shared memory (whole rows per store instruction).
    if constexpr (kCluster > 1) cluster_wait();  // the other CTAs are done with this one's slice
    __syncthreads();  // every warp is done reading P and B
    stage_output(sm.out, acc, warp_m0, warp_n0, lane);
    __syncthreads();
    store_tile(sm.out, reinterpret_cast<T*>(p.out), reinterpret_cast<const T*>(p.y_in),
               reinterpret_cast<const T*>(p.bias), m0, n0, p.m, p.n);
}

}  // namespace fwd_p
}  // namespace fused_lora

// The 128x256 tile with P computed inside (f16/bf16).
#define STAMP_GEMM_FUSED_P(SUFFIX, TYPE)                                                   \
    extern "C" __global__ void __launch_bounds__(LORA_FWD_FUSED_P_THREADS, 1)              \
        lora_forward_gemm_##SUFFIX##_128x256_p(const LoraGemmParams params) {              \
        fused_lora::fwd_p::gemm_fused_p<TYPE, 1>(params);                                  \
    }
// The cluster tile (forward_sm90a.cu) stamps its own kernels only.
#ifndef LORA_FWD_FUSED_P_CLUSTER_ONLY
STAMP_GEMM_FUSED_P(f16, __half)
STAMP_GEMM_FUSED_P(bf16, __nv_bfloat16)
#endif
