// The forward kernels: shrink P = s.X.A^T, fused Y = X.W0^T + bias + s.P.B^T,
// and expand Y += s.P.B^T, for one adapter or one adapter per row. All three
// are launches of one tiled GEMM over a "virtual K" (see forward_params.h):
// the adapter as extra K-steps on the same f32 accumulator as the base GEMM,
// each output written once.
//
// Tiles: a CTA of 4 warps owns a 64x64 output tile, each warp 32x32; K is
// staged in shared memory 32 at a time through a cp.async pipeline (3 stages
// for f16/bf16, 2 for f32). f16/bf16 multiply on tensor cores (ldmatrix +
// mma.sync m16n8k16, f32 accumulation); f32 multiplies with FMA in the same
// fragment layout, so the epilogue is shared.
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
// streams W0 (or, for a shrink, X and A); each split stores its raw f32 sums and lora_forward_reduce
// adds them in split order (deterministic), adds bias, rounds once.
//
// Scale: the adapter segment runs first; when it ends the accumulator rows are
// multiplied by their adapter's scale (in f32), then the base segment adds on.
// So Y = round(s.(P.B^T) + X.W0^T + bias): the contract's formula up to f32
// accumulation order, with P used exactly as stored (already rounded to T).
//
// Dropout: a shrink with `dropout` set stages its X tile element by element
// as X~ = keep ? round_T(X . inv_keep) : 0, the mask regenerated from
// Philox-4x32-10 (philox.cuh, bit for bit as src/reference/philox.rs and as
// backward.cu's `keeps`) at the global (m, k). The mask is never stored.
// Dropout is a separate entry point (lora_forward_gemm_dropout_<T>, chosen by
// the host when `dropout` is set): the Philox code would otherwise raise the
// register count, and so lower the occupancy, of every launch without it;
// lora_forward_gemm_<T> compiles exactly as it would with no dropout at all.

#include "dtype.cuh"
#include "forward_params.h"
#include "mma.cuh"
#include "philox.cuh"

namespace fused_lora {
namespace fwd {

constexpr int kTileM = LORA_FWD_TILE_M;
constexpr int kTileN = LORA_FWD_TILE_N;
constexpr int kTileK = LORA_FWD_TILE_K;
constexpr int kThreads = LORA_FWD_THREADS;
constexpr int kWarpM = 32;
constexpr int kWarpN = 32;
constexpr int kWarpsN = kTileN / kWarpN;
constexpr int kFragsM = kWarpM / 16;  // m16 fragments per warp
constexpr int kFragsN = kWarpN / 8;   // n8 fragments per warp

static_assert((kTileM / kWarpM) * (kTileN / kWarpN) * 32 == kThreads, "one warp per 32x32 sub-tile");
static_assert(kTileK % 16 == 0, "kTileK must be a multiple of 16 for m16n8k16");
static_assert(kFragsN % 2 == 0, "B fragments are loaded two n8 blocks per ldmatrix.x4");

template <typename T> struct Layout {
    // Elements per 16-byte chunk: the unit of cp.async and of one ldmatrix row.
    static constexpr int kChunk = 16 / sizeof(T);
    static constexpr int kChunksPerRow = kTileK / kChunk;
    // f16/bf16 rows are 64 bytes, unpadded, with the 4 chunks of row `row`
    // permuted by XOR with (row / 2) % 4. The 8 row addresses of an ldmatrix
    // phase (rows r..r+7, one logical chunk) then land in 8 distinct 16-byte
    // bank groups, and so do the 8 chunks a quarter-warp stores with cp.async
    // (2 rows x 4 chunks): both conflict-free.
    // f32 rows are padded by one chunk to 144 bytes instead: the FMA path
    // reads single floats down a column, which padding spreads over the banks
    // (see compute_f32), and a quarter-warp's 8 chunks of one row are
    // conflict-free as they are.
    static constexpr bool kSwizzled = sizeof(T) == 2;
    static constexpr int kLd = kSwizzled ? kTileK : kTileK + kChunk;
    // Deeper pipeline for halves; f32 tiles are twice as big and 2 stages fit
    // the 48 KB of static shared memory.
    static constexpr int kStages = sizeof(T) == 2 ? 3 : 2;
    static_assert(kTileK % kChunk == 0, "a tile row is whole 16-byte chunks");
    static_assert(!kSwizzled || kChunksPerRow == 4, "the XOR swizzle permutes the 4 chunks of a 64-byte row");
    static_assert((kLd * sizeof(T)) % 16 == 0, "tile rows stay 16-byte aligned for cp.async and ldmatrix");

    // Where logical chunk `chunk` of tile row `row` is stored.
    static __device__ __forceinline__ int chunk_at(int row, int chunk) {
        return kSwizzled ? chunk ^ ((row >> 1) & 3) : chunk;
    }
    // The address of logical element (row, col) in a tile, col a multiple of kChunk.
    static __device__ __forceinline__ const T* at(const T (*tile)[kLd], int row, int col) {
        return &tile[row][chunk_at(row, col / kChunk) * kChunk];
    }
};

// The output tile in f32 between the accumulators and the global stores.
// Rows of 72 floats: a half-warp's float2 writes (4 rows x 8 floats) and a
// quarter-warp's float4 reads (32 consecutive floats) are both conflict-free.
constexpr int kOutLd = kTileN + 8;
// Output elements per thread and store in the epilogue.
constexpr int kOutVec = 4;
static_assert(kTileN % kOutVec == 0, "output rows split into whole vectors");

template <typename T> struct Tiles {
    T lhs[Layout<T>::kStages][kTileM][Layout<T>::kLd];
    T rhs[Layout<T>::kStages][kTileN][Layout<T>::kLd];
};

template <typename T> struct Shared {
    // The operand tiles are dead once the K loop ends: the output tile
    // reuses their space.
    union alignas(16) {
        Tiles<T> tiles;
        float out[kTileM][kOutLd];
    };
    int row_adapter[kTileM];     // validated adapter of each tile row, -1 for none
    float row_scale[kTileM];     // its scale, 0 for none
    int present[kTileM];         // distinct adapters of the tile's rows
    int first_step[kTileM + 1];  // prefix sums of their K-step counts
    int num_present;
};

// One operand tile to stage: rows [row0, row0 + ROWS) of a row-major matrix,
// columns [k0, k0 + kTileK); rows >= rows_valid and columns >= k_valid read as
// zero, and so do rows whose adapter is not `only_adapter` (when masked).
// With `dropped`, the elements are the dropout's X~ (see stage_dropped_chunk).
template <typename T> struct TileSource {
    const T* base;
    long long ld;
    int row0;
    int rows_valid;
    int k0;
    int k_valid;
    bool vector_ok;
    bool masked;
    int only_adapter;
    bool dropped;
};

// The dropout of a shrink's lhs, as LoraGemmParams describes it.
struct DropoutMask {
    float p;
    float inv_keep;
    uint64_t seed;
    uint64_t offset;
};

// Elements [gk, gk + count) of row grow of X, as X~: Philox yields 4 keep
// decisions per block (elements 4j .. 4j + 3 of the stream), so the block is
// drawn once per run of 4 consecutive indices. The product is one f32
// multiply (nothing to contract into an FMA), rounded to T once, as the
// reference's `dropout_scaled`.
template <typename T>
__device__ __forceinline__ void stage_dropped_chunk(T* d, const T* s, const DropoutMask& mask, int grow, int gk, long long k_len,
                                                    int count) {
    constexpr int kChunk = Layout<T>::kChunk;
    const uint64_t index0 = static_cast<uint64_t>(grow) * static_cast<uint64_t>(k_len) + static_cast<uint64_t>(gk);
    uint64_t block = index0 / 4;
    philox::Block bits = philox::bits_of_block(mask.seed, mask.offset, block);
#pragma unroll
    for (int e = 0; e < kChunk; ++e) {
        const uint64_t index = index0 + e;
        if (index / 4 != block) {
            block = index / 4;
            bits = philox::bits_of_block(mask.seed, mask.offset, block);
        }
        // Selected, not indexed: a dynamic index into `bits.w` would put the
        // block in local memory (a stack frame).
        const int word = static_cast<int>(index % 4);
        const uint32_t drawn = word == 0 ? bits.w[0] : word == 1 ? bits.w[1] : word == 2 ? bits.w[2] : bits.w[3];
        const bool keep = philox::uniform_from_bits(drawn) >= mask.p;
        d[e] = e < count && keep ? from_f32<T>(to_f32(s[e]) * mask.inv_keep) : from_f32<T>(0.0f);
    }
}

template <typename T, int ROWS>
__device__ __forceinline__ void stage_tile(T (*dst)[Layout<T>::kLd], const TileSource<T>& src, const int* row_adapter,
                                           const DropoutMask& mask) {
    constexpr int kChunk = Layout<T>::kChunk;
    constexpr int kChunksPerRow = Layout<T>::kChunksPerRow;
    for (int c = threadIdx.x; c < ROWS * kChunksPerRow; c += kThreads) {
        const int row = c / kChunksPerRow;
        const int chunk = c % kChunksPerRow;
        const int grow = src.row0 + row;
        const int gk = src.k0 + chunk * kChunk;
        T* d = &dst[row][Layout<T>::chunk_at(row, chunk) * kChunk];
        const bool row_live = grow < src.rows_valid && (!src.masked || row_adapter[row] == src.only_adapter);
        if (!row_live || gk >= src.k_valid) {
            *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
            continue;
        }
        const T* s = src.base + static_cast<long long>(grow) * src.ld + gk;
        if (src.dropped) {
            // The shrink's lhs is [m, ad_k] dense: ld is K, the mask's row length.
            stage_dropped_chunk<T>(d, s, mask, grow, gk, src.ld, min(kChunk, src.k_valid - gk));
        } else if (src.vector_ok && gk + kChunk <= src.k_valid) {
            cp_async_16(d, s);
        } else {
#pragma unroll
            for (int e = 0; e < kChunk; ++e) d[e] = gk + e < src.k_valid ? s[e] : from_f32<T>(0.0f);
        }
    }
}

template <typename T> __device__ __forceinline__ bool vector_loadable(const void* base, long long ld) {
    return ld % Layout<T>::kChunk == 0 && reinterpret_cast<uintptr_t>(base) % 16 == 0;
}

// f16/bf16: two k16 steps per tile on tensor cores.
template <typename T>
__device__ __forceinline__ void compute_mma(float (&acc)[kFragsM][kFragsN][4], const T (*lhs)[Layout<T>::kLd],
                                            const T (*rhs)[Layout<T>::kLd], int warp_m0, int warp_n0, int lane) {
#pragma unroll
    for (int kk = 0; kk < kTileK; kk += 16) {
        uint32_t a[kFragsM][4];
        uint32_t b[kFragsN][2];
#pragma unroll
        for (int mi = 0; mi < kFragsM; ++mi) {
            // Lanes 0-15 address rows 0-15 at k, lanes 16-31 the same rows at k + 8.
            ldmatrix_x4(a[mi], Layout<T>::at(lhs, warp_m0 + mi * 16 + lane % 16, kk + (lane / 16) * 8));
        }
#pragma unroll
        for (int nj = 0; nj < kFragsN / 2; ++nj) {
            // Matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15).
            uint32_t r[4];
            ldmatrix_x4(r, Layout<T>::at(rhs, warp_n0 + nj * 16 + (lane / 16) * 8 + lane % 8, kk + ((lane / 8) % 2) * 8));
            b[2 * nj][0] = r[0];
            b[2 * nj][1] = r[1];
            b[2 * nj + 1][0] = r[2];
            b[2 * nj + 1][1] = r[3];
        }
#pragma unroll
        for (int mi = 0; mi < kFragsM; ++mi)
#pragma unroll
            for (int ni = 0; ni < kFragsN; ++ni) Mma<T>::run(acc[mi][ni], a[mi], b[ni][0], b[ni][1]);
    }
}

// f32: FMA in the mma accumulator layout (thread owns rows g, g + 8 and
// columns 2t, 2t + 1 of each fragment). Reads: the 8 rows g of a warp sit
// 36 floats apart (banks 4g + k, distinct; lanes of one g broadcast), the
// columns 2t 72 floats apart (banks 8t + k, distinct).
__device__ __forceinline__ void compute_f32(float (&acc)[kFragsM][kFragsN][4], const float (*lhs)[Layout<float>::kLd],
                                            const float (*rhs)[Layout<float>::kLd], int warp_m0, int warp_n0, int lane) {
    const int g = lane / 4, t = lane % 4;
#pragma unroll 4
    for (int k = 0; k < kTileK; ++k) {
        float a[kFragsM][2], b[kFragsN][2];
#pragma unroll
        for (int mi = 0; mi < kFragsM; ++mi)
#pragma unroll
            for (int h = 0; h < 2; ++h) a[mi][h] = lhs[warp_m0 + mi * 16 + g + 8 * h][k];
#pragma unroll
        for (int ni = 0; ni < kFragsN; ++ni)
#pragma unroll
            for (int c = 0; c < 2; ++c) b[ni][c] = rhs[warp_n0 + ni * 8 + 2 * t + c][k];
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

// kOutVec elements moved as one aligned access (8 bytes for halves, 16 for f32).
template <typename T> struct alignas(kOutVec * sizeof(T)) Vec {
    T v[kOutVec];
};

__device__ __forceinline__ int rank_of(const LoraGemmParams& p, int adapter) {
    return p.ranks ? reinterpret_cast<const int*>(p.ranks)[adapter] : p.rank;
}

// Reads, validates and records the adapter of each tile row, then lists the
// distinct adapters present with the K-steps each needs.
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
    if (threadIdx.x == 0) {
        // Serial on purpose: at most kTileM rows, and the list order (first
        // appearance) fixes the summation order, so results are deterministic.
        int count = 0;
        first_step[0] = 0;
        for (int i = 0; i < kTileM; ++i) {
            const int adapter = row_adapter[i];
            if (adapter < 0) continue;
            bool seen = false;
            for (int j = 0; j < count && !seen; ++j) seen = present[j] == adapter;
            if (seen) continue;
            const int k_len = p.ad_mode == LORA_ADAPTER_EXPAND ? rank_of(p, adapter) : p.ad_k;
            present[count] = adapter;
            first_step[count + 1] = first_step[count] + (k_len + kTileK - 1) / kTileK;
            ++count;
        }
        *num_present = count;
    }
    __syncthreads();
}

// Split-K epilogue: this split's raw f32 sums, for lora_forward_reduce.
__device__ __forceinline__ void store_partials(const LoraGemmParams& p, const float (&acc)[kFragsM][kFragsN][4], int row0,
                                               int col0, int lane) {
    float* partials = reinterpret_cast<float*>(p.partials) + static_cast<long long>(blockIdx.z) * p.m * p.n;
#pragma unroll
    for (int mi = 0; mi < kFragsM; ++mi)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int m = row0 + mi * 16 + lane / 4 + 8 * h;
            if (m >= p.m) continue;
#pragma unroll
            for (int ni = 0; ni < kFragsN; ++ni)
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                    const int n = col0 + ni * 8 + 2 * (lane % 4) + c;
                    if (n < p.n) partials[static_cast<long long>(m) * p.n + n] = acc[mi][ni][2 * h + c];
                }
        }
}

template <typename T, bool kDropout> __device__ void gemm(const LoraGemmParams& p) {
    using L = Layout<T>;
    constexpr int kStages = L::kStages;
    __shared__ Shared<T> sm;

    const int m0 = blockIdx.y * kTileM;
    const int n0 = blockIdx.x * kTileN;
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int warp_m0 = (warp / kWarpsN) * kWarpM;
    const int warp_n0 = (warp % kWarpsN) * kWarpN;

    resolve_row_adapters(p, m0, sm.row_adapter, sm.row_scale, sm.present, sm.first_step, &sm.num_present);
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
    const bool shrink = p.ad_mode == LORA_ADAPTER_SHRINK;
    const long long ad_lhs_ld = shrink ? p.ad_k : p.ad_lhs_ld;
    const long long ad_rhs_ld = shrink ? p.ad_k : p.ad_rhs_ld;
    const bool ad_lhs_vec = vector_loadable<T>(ad_lhs, ad_lhs_ld);
    // Every adapter's rhs starts ad_rhs_stride elements after the previous.
    const bool ad_rhs_vec = vector_loadable<T>(ad_rhs, ad_rhs_ld) && p.ad_rhs_stride % L::kChunk == 0;
    const bool base_vec = vector_loadable<T>(x, p.k) && vector_loadable<T>(w, p.k);
    const bool dropped = kDropout && shrink && p.dropout;
    const DropoutMask mask{p.dropout_p, p.inv_keep, p.seed, p.offset};

    // Stages virtual step `step` (if this split has it) into `stage`.
    auto stage_step = [&](int step, int stage) {
        if (step >= last) return;
        TileSource<T> lhs, rhs;
        int k0 = 0;
        if (step < adapter_steps) {
            int i = 0;
            while (sm.first_step[i + 1] <= step) ++i;
            const int adapter = sm.present[i];
            const int rank = rank_of(p, adapter);
            k0 = (step - sm.first_step[i]) * kTileK;
            const T* rhs_base = ad_rhs + static_cast<long long>(adapter) * p.ad_rhs_stride;
            if (shrink) {
                lhs = {ad_lhs, ad_lhs_ld, m0, p.m, k0, p.ad_k, ad_lhs_vec, true, adapter, dropped};
                rhs = {rhs_base, ad_rhs_ld, n0, min(rank, p.n), k0, p.ad_k, ad_rhs_vec, false, 0, false};
            } else {
                lhs = {ad_lhs, ad_lhs_ld, m0, p.m, k0, rank, ad_lhs_vec, true, adapter, false};
                rhs = {rhs_base, ad_rhs_ld, n0, p.n, k0, rank, ad_rhs_vec, false, 0, false};
            }
        } else {
            k0 = (step - adapter_steps) * kTileK;
            lhs = {x, p.k, m0, p.m, k0, p.k, base_vec, false, 0, false};
            rhs = {w, p.k, n0, p.n, k0, p.k, base_vec, false, 0, false};
        }
        stage_tile<T, kTileM>(sm.tiles.lhs[stage], lhs, sm.row_adapter, mask);
        stage_tile<T, kTileN>(sm.tiles.rhs[stage], rhs, sm.row_adapter, mask);
    };

    float acc[kFragsM][kFragsN][4];
#pragma unroll
    for (int mi = 0; mi < kFragsM; ++mi)
#pragma unroll
        for (int ni = 0; ni < kFragsN; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.0f;

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

#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
        stage_step(first + s, s);
        cp_async_commit();
    }
    for (int i = 0; first + i < last; ++i) {
        // Step i has landed, and every warp is done with step i - 1, whose
        // stage the next load reuses.
        cp_async_wait<kStages - 2>();
        __syncthreads();
        stage_step(first + i + kStages - 1, (i + kStages - 1) % kStages);
        cp_async_commit();
        if (first + i == adapter_steps && ran_adapter_steps) scale_rows();
        const int stage = i % kStages;
        if constexpr (sizeof(T) == 2) {
            compute_mma<T>(acc, sm.tiles.lhs[stage], sm.tiles.rhs[stage], warp_m0, warp_n0, lane);
        } else {
            compute_f32(acc, sm.tiles.lhs[stage], sm.tiles.rhs[stage], warp_m0, warp_n0, lane);
        }
    }
    cp_async_wait<0>();
    if (ran_adapter_steps && last <= adapter_steps) scale_rows();

    if (p.k_splits > 1) {
        store_partials(p, acc, m0 + warp_m0, n0 + warp_n0, lane);
        return;
    }

    // Epilogue through shared memory, so that global stores are whole rows
    // of the tile: each warp writes 2 rows x 64 consecutive elements per
    // store instruction (full 32-byte sectors) instead of 8 row fragments.
    __syncthreads();  // every warp is done reading the operand tiles
#pragma unroll
    for (int mi = 0; mi < kFragsM; ++mi)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int row = warp_m0 + mi * 16 + lane / 4 + 8 * h;
#pragma unroll
            for (int ni = 0; ni < kFragsN; ++ni) {
                const int col = warp_n0 + ni * 8 + 2 * (lane % 4);
                *reinterpret_cast<float2*>(&sm.out[row][col]) = make_float2(acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1]);
            }
        }
    __syncthreads();

    const T* bias = reinterpret_cast<const T*>(p.bias);
    const T* y_in = reinterpret_cast<const T*>(p.y_in);
    T* out = reinterpret_cast<T*>(p.out);
    // Whole vectors where they are inside the matrix and aligned: N a
    // multiple of kOutVec and 16-byte aligned bases; elementwise otherwise.
    const bool vector_io = p.n % kOutVec == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0 &&
                           reinterpret_cast<uintptr_t>(y_in) % 16 == 0;
    constexpr int kVecsPerRow = kTileN / kOutVec;
    for (int v = threadIdx.x; v < kTileM * kVecsPerRow; v += kThreads) {
        const int row = v / kVecsPerRow;
        const int col = (v % kVecsPerRow) * kOutVec;
        const int m = m0 + row;
        const int n = n0 + col;
        if (m >= p.m || n >= p.n) continue;
        const float4 sums = *reinterpret_cast<const float4*>(&sm.out[row][col]);
        float vals[kOutVec] = {sums.x, sums.y, sums.z, sums.w};
        const long long at = static_cast<long long>(m) * p.n + n;
        const int count = min(kOutVec, p.n - n);
        if (bias) {
#pragma unroll
            for (int e = 0; e < kOutVec; ++e)
                if (e < count) vals[e] += to_f32(bias[n + e]);
        }
        if (vector_io && count == kOutVec) {
            if (y_in) {
                const Vec<T> prior = *reinterpret_cast<const Vec<T>*>(y_in + at);
#pragma unroll
                for (int e = 0; e < kOutVec; ++e) vals[e] += to_f32(prior.v[e]);
            }
            Vec<T> rounded;
#pragma unroll
            for (int e = 0; e < kOutVec; ++e) rounded.v[e] = from_f32<T>(vals[e]);
            *reinterpret_cast<Vec<T>*>(out + at) = rounded;
        } else {
            for (int e = 0; e < count; ++e) {
                const float prior = y_in ? to_f32(y_in[at + e]) : 0.0f;
                out[at + e] = from_f32<T>(vals[e] + prior);
            }
        }
    }
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
        fused_lora::fwd::gemm<TYPE, false>(params);                                        \
    }                                                                                      \
    extern "C" __global__ void __launch_bounds__(LORA_FWD_THREADS)                         \
        lora_forward_gemm_dropout_##SUFFIX(const LoraGemmParams params) {                  \
        fused_lora::fwd::gemm<TYPE, true>(params);                                         \
    }
FUSED_LORA_FOR_EACH_DTYPE(STAMP_GEMM)

#define STAMP_REDUCE(SUFFIX, TYPE)                                                         \
    extern "C" __global__ void __launch_bounds__(LORA_FWD_REDUCE_THREADS)                  \
        lora_forward_reduce_##SUFFIX(const LoraReduceParams params) {                      \
        fused_lora::fwd::reduce_splits<TYPE>(params);                                      \
    }
FUSED_LORA_FOR_EACH_DTYPE(STAMP_REDUCE)
