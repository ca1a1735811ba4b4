// The tiled GEMM machinery the forward and backward kernels share, for a
// tile configuration (TileConfig): a CTA of 4 warps owns a 64x64 output
// tile (Tile64), each warp a 32x32 sub-tile held as 2 x 4 mma.sync m16n8k16
// accumulator fragments (f32), or a 128x128 tile (Tile128, the fused
// forward and dX on large grids) of 64x64 warp tiles (4 x 8 fragments); the
// reduction is staged in shared memory 32 elements at a time (cp.async,
// 3 or 4 stages for f16/bf16, 2 for f32). f16/bf16 multiply on tensor cores; f32 multiplies with FMA in the
// same fragment layout, so everything around the multiply is shared.
//
// An operand tile is stored in shared memory in one of two layouts, the
// layout it has in global memory, so a tile is copied as is:
// - RowTile: 64 rows of 32 reduction elements (rows contiguous in the
//   reduction: X and W0 in the forward, dY and G as the left operand of the
//   backward's G and dX);
// - RedTile: 32 reduction rows of 64 or 128 elements (operands stored
//   reduction-major: B, A, W0 as the backward reads them, P, X, dY, G over M).
// The multiply reads RowTiles with ldmatrix and RedTiles with ldmatrix.trans.
//
// Main loops stay lean (a few instructions per mma in the steady state):
// whole steps are copied through per-thread plans set up once per
// reduction segment (ChunkCopy: predicated zero-fill cp.async, addresses
// advanced by a constant), and ldmatrix addresses are per-lane offsets set
// up once plus immediates (FragmentRows); everything else (partial steps,
// unaligned operands, gathered rows, element-wise transforms) takes stage().
#pragma once

#include <stdint.h>

#include "dtype.cuh"
#include "mma.cuh"

namespace fused_lora {
namespace tiles {

// A tile configuration: a CTA of (kRows / kWarpRows) x (kCols / kWarpCols)
// warps owns a kRows x kCols output tile, each warp a kWarpRows x kWarpCols
// sub-tile of m16n8 accumulator fragments; the reduction is staged kStep
// (32) elements at a time through a pipeline of kStages16 (f16/bf16) or
// kStages32 (f32) slots. Each output element's reduction order (step by
// step, k16 by k16, one mma or FMA chain) does not depend on the
// configuration: it changes which CTA and warp compute an element, never
// how, so every configuration gives the same bits.
template <int kRows_, int kCols_, int kWarpRows_, int kWarpCols_, int kStages16, int kStages32> struct TileConfig {
    static constexpr int kRows = kRows_;
    static constexpr int kCols = kCols_;
    static constexpr int kWarpRows = kWarpRows_;
    static constexpr int kWarpCols = kWarpCols_;
    static constexpr int kWarpsCols = kCols / kWarpCols;
    static constexpr int kThreads = (kRows / kWarpRows) * kWarpsCols * 32;
    static constexpr int kFragsM = kWarpRows / 16;  // m16 fragments per warp
    static constexpr int kFragsN = kWarpCols / 8;   // n8 fragments per warp
    using Acc = float[kFragsM][kFragsN][4];
    // The output tile in f32 between the accumulators and the global stores.
    // Rows of kCols + 8 floats: a half-warp's float2 writes (4 rows x 8
    // floats) and a quarter-warp's float4 reads (32 consecutive floats) are
    // both conflict-free.
    static constexpr int kOutLd = kCols + 8;
    using OutTile = float[kRows][kOutLd];
    template <typename T> static __host__ __device__ constexpr int stages() { return sizeof(T) == 2 ? kStages16 : kStages32; }

    static_assert(kRows % kWarpRows == 0 && kCols % kWarpCols == 0, "whole warp tiles");
    // The copy plans (ChunkCopy) and stage() stride chunks by 128 threads,
    // and the f16/bf16 RowTile swizzle needs a thread's chunks a multiple of
    // 8 rows apart (32 rows of 4 chunks per pass): the shared layouts are
    // written for 4 warps.
    static_assert(kThreads == 128, "the copy plans and layouts assume 4 warps");
    static_assert(kWarpRows % 16 == 0 && kWarpCols % 16 == 0, "whole m16 blocks and pairs of n8 blocks (ldmatrix.x4)");
    static_assert(kRows % 32 == 0, "whole warps of rows in the adapter vote (list_present)");
    static_assert(kStages16 >= 2 && kStages32 >= 2, "a pipeline needs a slot to fill while one is read");
};

// 64x64 CTA tile, 32x32 warp tiles: 2 x 4 fragments (32 accumulators per
// thread), 3 stages (f16/bf16) or 2 (f32) in static shared memory. Small grids.
using Tile64 = TileConfig<64, 64, 32, 32, 3, 2>;
// 128x128 CTA tile, 64x64 warp tiles: 4 x 8 fragments (128 accumulators
// per thread); each staged element feeds twice the mma of Tile64, so half
// the L2 sectors and shared wavefronts per mma. 4 stages of f16/bf16
// (64 KB) fit under the f32 output tile that shares their space (68 KB):
// the 4th stage is free. Dynamic shared memory, opted in above 48 KB.
using Tile128 = TileConfig<128, 128, 64, 64, 4, 2>;
// 128x64 CTA tile, 64x32 warp tiles (4 x 4 fragments, 64 accumulators per
// thread): twice the CTAs of Tile128 on the same grid, each half as long, so
// a grid a little past a whole number of waves of Tile128 wastes less of its
// last wave (the fused forward's narrow-N shapes); 4 stages (48 KB) in
// dynamic shared memory, under the 3 CTAs per SM the registers allow.
using Tile128x64 = TileConfig<128, 64, 64, 32, 4, 2>;

// The configuration the backward uses, under its constants' old names.
constexpr int kTileRows = Tile64::kRows;
constexpr int kTileCols = Tile64::kCols;
constexpr int kStep = 32;
constexpr int kThreads = 128;
constexpr int kWarpRows = Tile64::kWarpRows;
constexpr int kWarpCols = Tile64::kWarpCols;
constexpr int kWarpsCols = Tile64::kWarpsCols;
constexpr int kFragsM = Tile64::kFragsM;
constexpr int kFragsN = Tile64::kFragsN;
// Floats of padding at the end of an output tile row (TileConfig::kOutLd).
constexpr int kOutPad = 8;

static_assert(kStep % 16 == 0, "whole k16 steps");
static_assert(kFragsN % 2 == 0, "right fragments are loaded two n8 blocks per ldmatrix.x4");

// Pipeline depth of Tile64: f32 tiles are twice as big, and 2 stages fit
// the 48 KB of static shared memory.
template <typename T> __host__ __device__ constexpr int stages() { return Tile64::stages<T>(); }

// kRows (a CTA tile's rows or columns) rows of kStep reduction elements. f16/bf16 rows are 64 bytes,
// unpadded, with the 4 chunks of row `row` permuted by XOR with (row / 2) % 4:
// the 8 row addresses of an ldmatrix phase (rows r..r+7, one logical chunk)
// then land in 8 distinct 16-byte bank groups, and so do the 8 chunks a
// quarter-warp stores with cp.async (2 rows x 4 chunks). f32 rows are padded
// to 36 floats instead: the FMA path reads single floats down a column
// (8 rows g of a warp 36 floats apart: banks 4g + k, distinct).
template <typename T, int kRows_ = kTileRows> struct RowTile {
    static constexpr int kChunk = 16 / sizeof(T);
    static constexpr int kChunksPerRow = kStep / kChunk;
    static constexpr int kRows = kRows_;
    static constexpr bool kSwizzled = sizeof(T) == 2;
    static constexpr int kLd = kSwizzled ? kStep : kStep + kChunk;
    static_assert(!kSwizzled || kChunksPerRow == 4, "the XOR swizzle permutes the 4 chunks of a 64-byte row");
    static_assert((kLd * sizeof(T)) % 16 == 0, "tile rows stay 16-byte aligned for cp.async and ldmatrix");
    static __device__ __forceinline__ int chunk_at(int row, int chunk) {
        return kSwizzled ? chunk ^ ((row >> 1) & 3) : chunk;
    }
    // Rows this many apart share their swizzle: byte offsets differ by a constant.
    static constexpr int kSwizzlePeriod = kSwizzled ? 8 : 1;
    static constexpr bool kReductionInRows = false;
};

// kStep reduction rows of kCols_ (a CTA tile's rows or columns) elements.
// f16/bf16 rows are 128 bytes (64 wide) or 256 (128 wide), each group of 8
// chunks (128 bytes) of row r permuted by XOR with r % 8: the 8 rows an
// ldmatrix.trans phase addresses (8 consecutive reduction rows, one logical
// chunk) sit in 8 distinct bank groups, and a quarter-warp's cp.async
// writes 8 consecutive chunks of one row, one aligned group. f32 rows need
// no padding: the FMA path reads 8 consecutive floats of a row per warp
// (broadcast over the other lanes).
template <typename T, int kCols_ = kTileCols> struct RedTile {
    static constexpr int kChunk = 16 / sizeof(T);
    static constexpr int kChunksPerRow = kCols_ / kChunk;
    static constexpr int kRows = kStep;
    static constexpr bool kSwizzled = sizeof(T) == 2;
    static constexpr int kLd = kCols_;
    static_assert(!kSwizzled || kChunksPerRow % 8 == 0, "the XOR swizzle permutes groups of 8 chunks (128 bytes)");
    static __device__ __forceinline__ int chunk_at(int row, int chunk) { return kSwizzled ? chunk ^ (row & 7) : chunk; }
    static constexpr int kSwizzlePeriod = kSwizzled ? 8 : 1;
    static constexpr bool kReductionInRows = true;
};

// The address of logical element (row, col) of a tile, col a multiple of the chunk.
template <typename Layout, typename T> __device__ __forceinline__ const T* at(const T (*tile)[Layout::kLd], int row, int col) {
    return &tile[row][Layout::chunk_at(row, col / Layout::kChunk) * Layout::kChunk];
}

// The byte offset of logical element (row, col) from the start of a tile, col a multiple of the chunk.
template <typename Layout, typename T> __device__ __forceinline__ uint32_t byte_offset(int row, int col) {
    return static_cast<uint32_t>((row * Layout::kLd + Layout::chunk_at(row, col / Layout::kChunk) * Layout::kChunk) *
                                 sizeof(T));
}

// One operand window to stage: tile row i is row row_of(i) of a row-major
// matrix (negative: a zero row), columns [col0, col0 + the tile's width),
// those >= cols_valid zero.
template <typename T> struct Source {
    const T* base;
    long long ld;
    int col0;
    int cols_valid;
    bool vector_ok;
};

// Whether rows of stride `ld` from `base` can be copied in 16-byte chunks.
template <typename T> __device__ __forceinline__ bool vector_loadable(const T* base, long long ld) {
    return ld % (16 / sizeof(T)) == 0 && reinterpret_cast<uintptr_t>(base) % 16 == 0;
}

// The element path's load of one chunk: d[0, N) from s, zeros past count.
struct PlainLoad {
    template <typename T, int N> __device__ __forceinline__ void load(T* d, const T* s, int, int, int count) const {
#pragma unroll
        for (int e = 0; e < N; ++e) d[e] = e < count ? s[e] : from_f32<T>(0.0f);
    }
};

// Copies one tile: whole 16-byte chunks with cp.async where the source
// allows, otherwise chunk by chunk through
// `loader.load<T, kChunk>(dst, src, row, col, count)`, and always so when
// kElementwise (a loader that transforms, e.g. DropoutMask); zeros outside
// the window.
template <typename T, typename Layout, bool kElementwise = false, typename RowOf, typename Loader = PlainLoad>
__device__ __forceinline__ void stage(T (*dst)[Layout::kLd], const Source<T>& src, RowOf row_of,
                                      const Loader& loader = Loader()) {
    constexpr int kChunk = Layout::kChunk;
    constexpr int kPerRow = Layout::kChunksPerRow;
    for (int c = threadIdx.x; c < Layout::kRows * kPerRow; c += kThreads) {
        const int row = c / kPerRow;
        const int chunk = c % kPerRow;
        const int grow = row_of(row);
        const int gcol = src.col0 + chunk * kChunk;
        T* d = &dst[row][Layout::chunk_at(row, chunk) * kChunk];
        if (grow < 0 || gcol >= src.cols_valid) {
            *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
            continue;
        }
        const T* s = src.base + static_cast<long long>(grow) * src.ld + gcol;
        if (src.vector_ok && !kElementwise && gcol + kChunk <= src.cols_valid) {
            cp_async_16(d, s);
        } else {
            loader.template load<T, kChunk>(d, s, grow, gcol, min(kChunk, src.cols_valid - gcol));
        }
    }
}

// The steady-state copy of one operand tile: whole 16-byte chunks with
// cp.async, as a plan each thread sets up once per reduction segment, so a
// K-step costs a few instructions per chunk (CUTLASS's iterators work the
// same way). The chunks a thread copies (c = threadIdx.x + i.kThreads) share
// one column of chunks and lie kRowsApart rows apart, a multiple of the
// swizzle period: one global address, one stride between its chunks and one
// shared offset describe them all, and a step moves the global address by a
// constant. Chunks outside the window (rows past the matrix or of another
// adapter, columns past the segment) zero-fill (src-size 0) and never read
// global memory. Only whole steps of operands that allow 16-byte copies go
// through a plan; a segment's partial last step and any other operand take
// `stage`.
template <typename T, typename Layout> struct ChunkCopy {
    static constexpr int kPerRow = Layout::kChunksPerRow;
    static constexpr int kRowsApart = kThreads / kPerRow;
    static constexpr int kCount = Layout::kRows / kRowsApart;
    static constexpr uint32_t kDstApart = kRowsApart * Layout::kLd * sizeof(T);
    static_assert(kThreads % kPerRow == 0 && Layout::kRows % kRowsApart == 0, "whole rows of chunks per pass");
    static_assert(kRowsApart % Layout::kSwizzlePeriod == 0, "a thread's chunks share their swizzle");

    uint64_t src;            // global address of the thread's first chunk in the next step
    uint64_t apart;          // bytes from one of its chunks to the next
    uint64_t advance;        // bytes from one step to the next
    uint32_t dst;            // shared byte offset of its first chunk within a tile
    uint32_t bytes[kCount];  // 16, or 0 for a chunk outside the window

    // `origin`: the element at tile position (0, 0) of the next step (it
    // may lie outside the matrix: only live chunks are read); `ld`: the row
    // stride; `step`: elements from one step's origin to the next;
    // `live(row, col)`: whether the chunk at tile position (row, col) lies
    // inside the window.
    template <typename Live>
    __device__ __forceinline__ void setup(const T* origin, long long ld, long long step, Live live) {
        const int row = threadIdx.x / kPerRow;
        const int col = (threadIdx.x % kPerRow) * Layout::kChunk;
        src = static_cast<uint64_t>(__cvta_generic_to_global(origin + row * ld + col));
        apart = static_cast<uint64_t>(kRowsApart * ld * static_cast<long long>(sizeof(T)));
        advance = static_cast<uint64_t>(step * static_cast<long long>(sizeof(T)));
        dst = byte_offset<Layout, T>(row, col);
#pragma unroll
        for (int i = 0; i < kCount; ++i) bytes[i] = live(row + i * kRowsApart, col) ? 16 : 0;
    }

    // Copies a segment's last, partial step into the tile at shared address
    // `tile`: only chunks whose reduction indices lie below `k_left` (the
    // elements left in the segment; a multiple of the chunk when the
    // reduction runs along a row). The rest zero-fill.
    __device__ __forceinline__ void copy_partial(uint32_t tile, int k_left) {
        const int row = threadIdx.x / kPerRow;
        const int col = (threadIdx.x % kPerRow) * Layout::kChunk;
        uint64_t from = src;
#pragma unroll
        for (int i = 0; i < kCount; ++i) {
            const bool inside = Layout::kReductionInRows ? row + i * kRowsApart < k_left : col < k_left;
            cp_async_16_zfill(tile + dst + i * kDstApart, from, inside ? bytes[i] : 0);
            from += apart;
        }
        src += advance;
    }

    // Copies the next step into the tile at shared address `tile`.
    __device__ __forceinline__ void copy(uint32_t tile) {
        uint64_t from = src;
#pragma unroll
        for (int i = 0; i < kCount; ++i) {
            cp_async_16_zfill(tile + dst + i * kDstApart, from, bytes[i]);
            from += apart;
        }
        src += advance;
    }
};

using Acc = Tile64::Acc;

template <int kFM, int kFN> __device__ __forceinline__ void clear(float (&acc)[kFM][kFN][4]) {
#pragma unroll
    for (int mi = 0; mi < kFM; ++mi)
#pragma unroll
        for (int ni = 0; ni < kFN; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.0f;
}

// Tile rows per group of the CTA order below.
constexpr int kGroupRows = 8;

// The output tile (row, column) of this CTA in a grid of gridDim.y tile rows
// by gridDim.x tile columns. Consecutive CTAs (in blockIdx order) walk a
// group of kGroupRows tile rows column by column, so the CTAs resident at
// one time read a few left row blocks and a few right column blocks, which
// stay in L2, instead of one row block against every column block. A
// bijection of the grid, fixed for a shape: results do not depend on it.
// (The fused forward and dX's 128-row kernels use it; in the 64x64 dX,
// which carries the dropout mask's code, it would raise the register count
// from 121 to 164, ptxas keeping the mask's per-element counters apart, so
// that kernel keeps the plain order.) The last `extra_cols` grid columns
// do other work of the launch (dA's CTAs in dX's 128-row launches): the tiles
// are the columns before them.
__device__ __forceinline__ void grouped_tile(int& tile_row, int& tile_col, int extra_cols = 0) {
    const int cols = static_cast<int>(gridDim.x) - extra_cols;
    const int id = blockIdx.y * cols + blockIdx.x;
    const int per_group = kGroupRows * cols;
    const int group = id / per_group;
    const int first_row = group * kGroupRows;
    const int group_rows = min(static_cast<int>(gridDim.y) - first_row, kGroupRows);
    const int in_group = id - group * per_group;
    // Opaque: computed once, never recomputed from the divisions.
    tile_row = static_cast<int>(opaque(first_row + in_group % group_rows));
    tile_col = static_cast<int>(opaque(in_group / group_rows));
}

// The tile types of a left (rows) or right (columns) operand; kWidth: a
// RedTile's width (the CTA tile's rows for a left, columns for a right one).
template <typename T, bool kTrans, int kWidth = kTileCols>
using LeftTile = const T (*)[(kTrans ? RedTile<T, kWidth>::kLd : RowTile<T>::kLd)];
template <typename T, bool kTrans, int kWidth = kTileCols>
using RightTile = const T (*)[(kTrans ? RedTile<T, kWidth>::kLd : RowTile<T>::kLd)];

// Where a lane's ldmatrix rows lie in a tile, as byte offsets computed once
// per kernel. A RowTile (rows m or n, reduction contiguous) is indexed by the
// k16 step: the m16/n16 blocks lie a constant 16 rows further (16 is a
// multiple of the swizzle period). A RedTile (reduction rows, kWidth wide) is
// indexed by the block: the second k16 step lies a constant 16 rows further.
template <typename T, bool kTrans, int kBlocks, int kWidth = kTileCols> struct FragmentRows {
    using Red = RedTile<T, kWidth>;
    static constexpr int kEntries = kTrans ? kBlocks : kStep / 16;
    static constexpr uint32_t kRowBytes = (kTrans ? Red::kLd : RowTile<T>::kLd) * sizeof(T);
    static_assert(16 % (kTrans ? Red::kSwizzlePeriod : RowTile<T>::kSwizzlePeriod) == 0, "16 rows keep the swizzle");
    uint32_t off[kEntries];

};

// Left fragments: lanes 0-15 address rows 0-15 at k, lanes 16-31 the same
// rows at k + 8 (RowTile); stored reduction-major, matrices (m 0-7, k 0-7),
// (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15), each 8 k-rows of 8 m
// (RedTile).
template <typename T, bool kTrans, int kFM = kFragsM, int kWidth = kTileCols>
__device__ __forceinline__ FragmentRows<T, kTrans, kFM, kWidth> left_rows(int warp_m0, int lane) {
    FragmentRows<T, kTrans, kFM, kWidth> rows;
#pragma unroll
    for (int e = 0; e < rows.kEntries; ++e) {
        if constexpr (kTrans) {
            rows.off[e] = opaque(byte_offset<RedTile<T, kWidth>, T>(lane % 8 + (lane / 16) * 8, warp_m0 + e * 16 + ((lane / 8) % 2) * 8));
        } else {
            rows.off[e] = opaque(byte_offset<RowTile<T>, T>(warp_m0 + lane % 16, e * 16 + (lane / 16) * 8));
        }
    }
    return rows;
}

// Right fragments, two n8 blocks per ldmatrix.x4: matrices (n 0-7, k 0-7),
// (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15).
template <typename T, bool kTrans, int kPairs = kFragsN / 2, int kWidth = kTileCols>
__device__ __forceinline__ FragmentRows<T, kTrans, kPairs, kWidth> right_rows(int warp_n0, int lane) {
    FragmentRows<T, kTrans, kPairs, kWidth> rows;
#pragma unroll
    for (int e = 0; e < rows.kEntries; ++e) {
        if constexpr (kTrans) {
            rows.off[e] = opaque(byte_offset<RedTile<T, kWidth>, T>(lane % 8 + ((lane / 8) % 2) * 8, warp_n0 + e * 16 + (lane / 16) * 8));
        } else {
            rows.off[e] = opaque(byte_offset<RowTile<T>, T>(warp_n0 + (lane / 16) * 8 + lane % 8, e * 16 + ((lane / 8) % 2) * 8));
        }
    }
    return rows;
}

// One ldmatrix.x4 of a left or right operand: block `kBlock` (m16 or a pair
// of n8) at k16 step kKk / 16, from the tile at shared address `tile`. The
// register part of the address is the tile plus the lane's offset for the
// varying index, the constant part an immediate.
template <typename T, bool kTrans, int kBlocks, int kWidth, int kBlock, int kKk>
__device__ __forceinline__ void load_fragment(uint32_t (&r)[4], uint32_t tile,
                                              const FragmentRows<T, kTrans, kBlocks, kWidth>& rows) {
    using Rows = FragmentRows<T, kTrans, kBlocks, kWidth>;
    if constexpr (kTrans) {
        ldmatrix_x4_trans<kKk * Rows::kRowBytes>(r, tile + rows.off[kBlock]);
    } else {
        ldmatrix_x4<kBlock * 16 * Rows::kRowBytes>(r, tile + rows.off[kKk / 16]);
    }
}

// acc += lhs . rhs over the first k_len (<= kStep) reduction elements of a
// staged step, on tensor cores; lhs and rhs are the tiles' shared addresses.
template <typename T, bool kLhsTrans, bool kRhsTrans, int kFragsM, int kFragsN, int kLhsWidth, int kRhsWidth>
__device__ __forceinline__ void compute_mma(float (&acc)[kFragsM][kFragsN][4], uint32_t lhs, uint32_t rhs,
                                            const FragmentRows<T, kLhsTrans, kFragsM, kLhsWidth>& lhs_rows,
                                            const FragmentRows<T, kRhsTrans, kFragsN / 2, kRhsWidth>& rhs_rows,
                                            int k_len) {
    static_for<kStep / 16>([&](auto k16) {
        constexpr int kk = decltype(k16)::value * 16;
        if (kk >= k_len) return;
        uint32_t a[kFragsM][4];
        uint32_t b[kFragsN][2];
        static_for<kFragsM>([&](auto mi) {
            load_fragment<T, kLhsTrans, kFragsM, kLhsWidth, decltype(mi)::value, kk>(a[decltype(mi)::value], lhs,
                                                                                      lhs_rows);
        });
        static_for<kFragsN / 2>([&](auto nj) {
            constexpr int j = decltype(nj)::value;
            uint32_t r[4];
            load_fragment<T, kRhsTrans, kFragsN / 2, kRhsWidth, j, kk>(r, rhs, rhs_rows);
            b[2 * j][0] = r[0];
            b[2 * j][1] = r[1];
            b[2 * j + 1][0] = r[2];
            b[2 * j + 1][1] = r[3];
        });
#pragma unroll
        for (int mi = 0; mi < kFragsM; ++mi)
#pragma unroll
            for (int ni = 0; ni < kFragsN; ++ni) Mma<T>::run(acc[mi][ni], a[mi], b[ni][0], b[ni][1]);
    });
}

// f32: FMA in the mma accumulator layout (thread owns rows g, g + 8 and
// columns 2t, 2t + 1 of each fragment), the reduction in order. RowTile
// reads go down a column (padding spreads them over the banks), RedTile
// reads are 8 consecutive floats of a row.
template <bool kLhsTrans, bool kRhsTrans, int kLhsWidth, int kRhsWidth, int kFragsM, int kFragsN>
__device__ __forceinline__ void compute_f32(float (&acc)[kFragsM][kFragsN][4], LeftTile<float, kLhsTrans, kLhsWidth> lhs,
                                            RightTile<float, kRhsTrans, kRhsWidth> rhs, int warp_m0, int warp_n0,
                                            int lane, int k_len) {
    const int g = lane / 4, t = lane % 4;
#pragma unroll 4
    for (int k = 0; k < k_len; ++k) {
        float a[kFragsM][2], b[kFragsN][2];
#pragma unroll
        for (int mi = 0; mi < kFragsM; ++mi)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = warp_m0 + mi * 16 + g + 8 * h;
                if constexpr (kLhsTrans) {
                    a[mi][h] = lhs[k][row];
                } else {
                    a[mi][h] = lhs[row][k];
                }
            }
#pragma unroll
        for (int ni = 0; ni < kFragsN; ++ni)
#pragma unroll
            for (int c = 0; c < 2; ++c) {
                const int col = warp_n0 + ni * 8 + 2 * t + c;
                if constexpr (kRhsTrans) {
                    b[ni][c] = rhs[k][col];
                } else {
                    b[ni][c] = rhs[col][k];
                }
            }
#pragma unroll
        for (int mi = 0; mi < kFragsM; ++mi)
#pragma unroll
            for (int ni = 0; ni < kFragsN; ++ni)
#pragma unroll
                for (int h = 0; h < 2; ++h)
#pragma unroll
                    for (int c = 0; c < 2; ++c) acc[mi][ni][2 * h + c] = fmaf(a[mi][h], b[ni][c], acc[mi][ni][2 * h + c]);
    }
}

// One warp's share of a step's multiply: acc += lhs . rhs over the first
// k_len (<= kStep) reduction elements of two staged tiles; kLhsTrans /
// kRhsTrans: that tile is a RedTile (reduction-major), else a RowTile.
// f16/bf16 on tensor cores through addresses set up once; f32 on FMA. A
// left RedTile is the CTA tile's rows wide, a right one its columns.
template <typename T, bool kLhsTrans, bool kRhsTrans, typename Cfg = Tile64> struct WarpMultiply {
    static constexpr int kLhsWidth = Cfg::kRows;
    static constexpr int kRhsWidth = Cfg::kCols;
    int warp_m0, warp_n0, lane;
    FragmentRows<T, kLhsTrans, Cfg::kFragsM, kLhsWidth> lhs_rows;
    FragmentRows<T, kRhsTrans, Cfg::kFragsN / 2, kRhsWidth> rhs_rows;

    __device__ __forceinline__ WarpMultiply(int warp_m0, int warp_n0, int lane)
        : warp_m0(warp_m0), warp_n0(warp_n0), lane(lane) {
        if constexpr (sizeof(T) == 2) {
            lhs_rows = left_rows<T, kLhsTrans, Cfg::kFragsM, kLhsWidth>(warp_m0, lane);
            rhs_rows = right_rows<T, kRhsTrans, Cfg::kFragsN / 2, kRhsWidth>(warp_n0, lane);
        }
    }

    __device__ __forceinline__ void operator()(typename Cfg::Acc& acc, LeftTile<T, kLhsTrans, kLhsWidth> lhs,
                                               RightTile<T, kRhsTrans, kRhsWidth> rhs, int k_len) const {
        if constexpr (sizeof(T) == 2) {
            compute_mma<T, kLhsTrans, kRhsTrans>(acc, shared_address(lhs), shared_address(rhs), lhs_rows, rhs_rows, k_len);
        } else {
            compute_f32<kLhsTrans, kRhsTrans, kLhsWidth, kRhsWidth>(acc, lhs, rhs, warp_m0, warp_n0, lane, k_len);
        }
    }
};

// Tile64's output tile (see TileConfig).
constexpr int kOutLd = Tile64::kOutLd;
// Output elements per thread and store in the epilogue.
constexpr int kOutVec = 4;
using OutTile = Tile64::OutTile;

// kOutVec elements moved as one aligned access (8 bytes for halves, 16 for f32).
template <typename T> struct alignas(kOutVec * sizeof(T)) Vec {
    T v[kOutVec];
};

// The accumulators into the output tile (the caller synchronises before
// and after: the tile usually reuses the operand tiles' space).
template <int kR, int kLd, int kFragsM, int kFragsN>
__device__ __forceinline__ void stage_output(float (&out)[kR][kLd], const float (&acc)[kFragsM][kFragsN][4], int warp_m0,
                                             int warp_n0, int lane) {
#pragma unroll
    for (int mi = 0; mi < kFragsM; ++mi)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int row = warp_m0 + mi * 16 + lane / 4 + 8 * h;
#pragma unroll
            for (int ni = 0; ni < kFragsN; ++ni) {
                const int col = warp_n0 + ni * 8 + 2 * (lane % 4);
                *reinterpret_cast<float2*>(&out[row][col]) = make_float2(acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1]);
            }
        }
}

// One output vector: plus prior[at..] where given, in f32, rounded to T once,
// stored as one 16-byte vector (the caller checked alignment and bounds).
template <typename T>
__device__ __forceinline__ void store_vector(float (&vals)[kOutVec], T* out, const T* prior, long long at) {
    if (prior) {
        const Vec<T> old = *reinterpret_cast<const Vec<T>*>(prior + at);
#pragma unroll
        for (int e = 0; e < kOutVec; ++e) vals[e] += to_f32(old.v[e]);
    }
    Vec<T> rounded;
#pragma unroll
    for (int e = 0; e < kOutVec; ++e) rounded.v[e] = from_f32<T>(vals[e]);
    *reinterpret_cast<Vec<T>*>(out + at) = rounded;
}

// Writes the staged output tile (tile row i, column j is out[m0 + i][c0 + j]
// of the [rows, cols] row-major `out`): plus `bias[col]` and `prior[m][col]`
// where given (`prior` may equal `out`: each element is read before it is
// written, by the same thread), added in f32 and rounded to T once. Each warp
// stores 2 rows x 64 consecutive elements per instruction (whole 32-byte
// sectors); whole kOutVec vectors where the row length and the bases allow,
// element by element otherwise.
template <typename T, int kTileRows, int kLd>
__device__ __forceinline__ void store_output(const float (&tile)[kTileRows][kLd], T* out, const T* prior, const T* bias,
                                             int m0, int c0, int rows, int cols) {
    constexpr int kTileCols = kLd - kOutPad;
    static_assert(kTileCols % kOutVec == 0, "output rows split into whole vectors");
    const bool vector_io = cols % kOutVec == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0 &&
                           reinterpret_cast<uintptr_t>(prior) % 16 == 0;
    constexpr int kVecsPerRow = kTileCols / kOutVec;
    static_assert(kThreads % kVecsPerRow == 0 && (kTileRows * kVecsPerRow) % kThreads == 0, "whole passes of rows");
    if (vector_io && m0 + kTileRows <= rows && c0 + kTileCols <= cols) {
        // A whole tile of whole vectors (every tile but the edges): the same
        // vectors per thread as below (one column, rows kRowsApart apart),
        // with the bias read once and no bounds.
        constexpr int kRowsApart = kThreads / kVecsPerRow;
        const int row0 = threadIdx.x / kVecsPerRow;
        const int col = (threadIdx.x % kVecsPerRow) * kOutVec;
        float add[kOutVec] = {};
        if (bias) {
#pragma unroll
            for (int e = 0; e < kOutVec; ++e) add[e] = to_f32(bias[c0 + col + e]);
        }
        const long long at0 = static_cast<long long>(m0 + row0) * cols + c0 + col;
        const long long apart = static_cast<long long>(kRowsApart) * cols;
#pragma unroll 1
        for (int i = 0; i < kTileRows / kRowsApart; ++i) {
            const float4 sums = *reinterpret_cast<const float4*>(&tile[row0 + i * kRowsApart][col]);
            float vals[kOutVec] = {sums.x, sums.y, sums.z, sums.w};
            if (bias) {
#pragma unroll
                for (int e = 0; e < kOutVec; ++e) vals[e] += add[e];
            }
            store_vector(vals, out, prior, at0 + i * apart);
        }
        return;
    }
    for (int v = threadIdx.x; v < kTileRows * kVecsPerRow; v += kThreads) {
        const int row = v / kVecsPerRow;
        const int col = (v % kVecsPerRow) * kOutVec;
        const int m = m0 + row;
        const int c = c0 + col;
        if (m >= rows || c >= cols) continue;
        const float4 sums = *reinterpret_cast<const float4*>(&tile[row][col]);
        float vals[kOutVec] = {sums.x, sums.y, sums.z, sums.w};
        const long long at = static_cast<long long>(m) * cols + c;
        const int count = min(kOutVec, cols - c);
        if (bias) {
#pragma unroll
            for (int e = 0; e < kOutVec; ++e)
                if (e < count) vals[e] += to_f32(bias[c + e]);
        }
        if (vector_io && count == kOutVec) {
            store_vector(vals, out, prior, at);
        } else {
            for (int e = 0; e < count; ++e) {
                const float old = prior ? to_f32(prior[at + e]) : 0.0f;
                out[at + e] = from_f32<T>(vals[e] + old);
            }
        }
    }
}

// The distinct adapters among a tile's validated row adapters (-1: none), in
// order of first appearance, and the prefix sums of the reduction steps each
// needs (`steps_of(adapter)`). The list order fixes the summation order, so
// results are deterministic. Warp 0 first checks (one vote) whether the
// tile's rows use the first row's adapter or none, the common case (one
// adapter, or rows grouped by adapter): then the list is that adapter;
// otherwise thread 0 walks the rows serially. Warp 0 writes; the caller
// synchronises before and after.
template <int kTileRows = tiles::kTileRows, typename StepsOf>
__device__ __forceinline__ void list_present(const int* row_adapter, int* present, int* first_step, int* num_present,
                                             StepsOf steps_of) {
    static_assert(kTileRows % 32 == 0, "whole warps of rows");
    if (threadIdx.x >= 32) return;
    const int lane = threadIdx.x;
    const int first = row_adapter[0];
    bool uniform = true;
#pragma unroll
    for (int i = lane; i < kTileRows; i += 32) uniform = uniform && (row_adapter[i] == first || row_adapter[i] < 0);
    if (__all_sync(0xffffffffu, uniform) && first >= 0) {
        if (lane == 0) {
            present[0] = first;
            first_step[0] = 0;
            first_step[1] = steps_of(first);
            *num_present = 1;
        }
        return;
    }
    if (lane != 0) return;
    int count = 0;
    first_step[0] = 0;
    for (int i = 0; i < kTileRows; ++i) {
        const int adapter = row_adapter[i];
        if (adapter < 0) continue;
        bool seen = false;
        for (int j = 0; j < count && !seen; ++j) seen = present[j] == adapter;
        if (seen) continue;
        present[count] = adapter;
        first_step[count + 1] = first_step[count] + steps_of(adapter);
        ++count;
    }
    *num_present = count;
}

// A split's raw f32 sums straight from the fragments into a row-major f32
// matrix of row stride `ld` at `partials`: the warp's rows from row0 and
// columns from col0, those inside [0, rows) x [0, cols). Each quad of lanes
// writes 8 consecutive floats (one 32-byte sector) of a row, as float2 where
// aligned.
template <int kFragsM, int kFragsN>
__device__ __forceinline__ void store_fragments(float* partials, long long ld, int rows, int cols,
                                                const float (&acc)[kFragsM][kFragsN][4], int row0, int col0, int lane) {
#pragma unroll
    for (int mi = 0; mi < kFragsM; ++mi)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int m = row0 + mi * 16 + lane / 4 + 8 * h;
            if (m >= rows) continue;
#pragma unroll
            for (int ni = 0; ni < kFragsN; ++ni) {
                const int n = col0 + ni * 8 + 2 * (lane % 4);
                float* dst = partials + m * ld + n;
                if (n + 1 < cols && reinterpret_cast<uintptr_t>(dst) % 8 == 0) {
                    *reinterpret_cast<float2*>(dst) = make_float2(acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1]);
                } else {
                    if (n < cols) dst[0] = acc[mi][ni][2 * h];
                    if (n + 1 < cols) dst[1] = acc[mi][ni][2 * h + 1];
                }
            }
        }
}

// The value of lane ^ 1 (every lane of the warp takes part), moved as an
// f32 register: __shfl_xor_sync(float) bit-casts it to an integer, which
// can retype the accumulators' registers over the main loop (pair_from_f32).
__device__ __forceinline__ float shfl_xor_1(float value) {
    float got;
    asm volatile("shfl.sync.bfly.b32 %0, %1, 1, 31, -1;\n" : "=f"(got) : "f"(value));
    return got;
}

// A warp's whole sub-tile of accumulators straight to the output, without
// the shared output tile (stage_output / store_output): the rows from row0
// and columns from col0 of the [.., cols] row-major `out` (16-bit T), plus
// prior[m][col] where given (`prior` may equal `out`: each element is read
// before it is written, by the same thread), added in f32 and rounded to T
// once, as store_output does: the same bits. The caller checked what
// store_output's whole-tile path needs (cols a multiple of kOutVec, `out` and
// `prior` 16-byte aligned, the sub-tile inside the output); every lane of the
// warp takes part (shuffles).
//
// A lane (g, t) = (lane / 4, lane % 4) holds columns 8 ni + 2t, +1 of rows g
// and g + 8 of each m16 block. Lanes t and t ^ 1 trade one pair per two
// n8 blocks (ni = 2j, 2j + 1), so that even t holds 4 consecutive columns of
// block 2j and odd t those of block 2j + 1: kOutVec elements, one vector
// store each, and each warp store covers 8 rows x 16 consecutive columns
// (whole 32-byte sectors). Without `prior` the pairs are rounded to T before
// they are traded (one 32-bit shuffle a vector), with it the f32 sums are
// traded (two), since the sum with prior must round once.
template <typename T, int kFragsM, int kFragsN>
__device__ __forceinline__ void store_accumulators(T* out, const T* prior, int cols,
                                                   const float (&acc)[kFragsM][kFragsN][4], int row0, int col0,
                                                   int lane) {
    static_assert(sizeof(T) == 2, "16-bit outputs: kOutVec elements are one 8-byte store");
    static_assert(kFragsN % 2 == 0, "n8 blocks traded in pairs");
    const bool odd = lane & 1;
    // The lane's first column: block 0 or 1 (odd t), columns 0 or 4 (t / 2).
    const int col = col0 + (lane & 1) * 8 + ((lane >> 1) & 1) * 4;
    const long long ld = cols;
    const long long at0 = (row0 + lane / 4) * ld + col;
    // f(pair of block 2j, pair of block 2j + 1, the lane's vector's index)
    // for each vector of the lane, in a loop per case of `prior`.
    auto each_vector = [&](auto f) {
#pragma unroll
        for (int mi = 0; mi < kFragsM; ++mi)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const long long at_row = at0 + (mi * 16 + 8 * h) * ld;
#pragma unroll
                for (int j = 0; j < kFragsN / 2; ++j)
                    f(&acc[mi][2 * j][2 * h], &acc[mi][2 * j + 1][2 * h], at_row + 16 * j);
            }
    };
    if (!prior) {
        each_vector([&](const float* even, const float* odd_block, long long at) {
            const uint32_t mine_even = pair_from_f32<T>(even[0], even[1]);
            const uint32_t mine_odd = pair_from_f32<T>(odd_block[0], odd_block[1]);
            const uint32_t got = __shfl_xor_sync(0xffffffffu, odd ? mine_even : mine_odd, 1);
            uint2 words;
            words.x = odd ? got : mine_even;
            words.y = odd ? mine_odd : got;
            *reinterpret_cast<uint2*>(out + at) = words;
        });
    } else {
        each_vector([&](const float* even, const float* odd_block, long long at) {
            const float got0 = shfl_xor_1(odd ? even[0] : odd_block[0]);
            const float got1 = shfl_xor_1(odd ? even[1] : odd_block[1]);
            float vals[kOutVec] = {odd ? got0 : even[0], odd ? got1 : even[1], odd ? odd_block[0] : got0,
                                   odd ? odd_block[1] : got1};
            store_vector(vals, out, prior, at);
        });
    }
}

}  // namespace tiles
}  // namespace fused_lora
