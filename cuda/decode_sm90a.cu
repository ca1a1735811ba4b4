// The decode forward in one launch on sm_90 (lora_decode_cluster_<T>): the
// two launches of cuda/decode.cu with the finish folded into the split GEMM.
// The K splits of one column tile are a thread-block cluster of
// LORA_DECODE_CLUSTER CTAs (gridDim.y); each CTA multiplies its K range of X
// against its tile's W0 rows and, as extra columns, every adapter slot's A
// rows (P is recomputed by each column tile: one launch has no other CTA to
// wait for), leaves its f32 sums in its own shared memory, and after a
// cluster barrier reads the other CTAs' sums through distributed shared
// memory:
//
//   P[i, q] = round_T(sum over z of sums_z[i, slot(i) * r_max + q])  (every CTA)
//   Y[i, c] = round_T(s_l * (P[i, :] . B_l[c, :]) + sum over z of sums_z[i, c] + bias[c])
//
// the sums taken in split order z = 0, 1, ... as the finish takes them, CTA
// z of the cluster writing the n8 fragments f of the tile with f % cluster
// == z. No partials reach global memory and there is no second launch. The
// host (src/forward/decode.rs) takes this path on compute capability 9.0
// where P's columns fit (slots * r_max <= 256).
//
// A CTA's 8 warps take the tile's groups of 32 columns round robin (W0's
// col_groups, then P's), up to 3 each, every warp walking the CTA's whole K
// range (decode.cu's split GEMM splits it among the warps of a group
// instead), so a tile holds at most 24 groups. X's 16 rows are staged in
// shared memory 512 columns at a time as there, all rows for every group
// (P's columns of slot j are computed for every row; a row keeps only its
// own slot's).
//
// Numerics: as decode.cu, up to the order of the f32 additions inside a
// split (one warp's chain instead of a group's warps summed in warp order).
#include "cluster.cuh"
#include "decode.cuh"

namespace fused_lora {
namespace decode {

constexpr int kCluster = LORA_DECODE_CLUSTER;
constexpr int kMaxGroups = LORA_DECODE_CLUSTER_GROUPS;
constexpr int kPasses = kMaxGroups / kWarps;  // groups per warp at most
static_assert(kMaxGroups % kWarps == 0, "whole passes");
constexpr int kXLd = kStageK + 32;  // X's staged row, padded as in decode.cu
constexpr int kSumsPad = 8;         // floats past each row of the sums: fewer bank conflicts

// Element `index` of the f32 array at shared address `local` in the CTA of
// cluster rank `rank` (the same layout in every CTA).
__device__ __forceinline__ float remote_f32(uint32_t local, int rank, int index) {
    uint32_t remote;
    float v;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local + 4u * index), "r"(rank));
    asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(remote) : "memory");
    return v;
}

// Shared memory (dynamic; the host sizes it the same way,
// `decode_cluster_shared_bytes`): X's two stages during the K loop, then
// the CTA's sums [16][ld] f32 in the same bytes; after them P's rounded rows
// [16][r_pad] T.
struct ClusterTile {
    int w_groups;  // W0's groups of 32 columns
    int groups;    // W0's and P's
    int p_cols;    // slots * r_max
    int ld;        // floats per row of the sums
    int r_pad;     // P's row in p_rows: r_max rounded up to 32
    int p_rows_at; // byte offset of p_rows
};

template <typename T> __device__ __forceinline__ ClusterTile cluster_tile(const LoraDecodeParams& p) {
    ClusterTile c;
    c.w_groups = p.col_groups;
    c.p_cols = p.slots * p.r_max;
    c.groups = c.w_groups + (c.p_cols + kCols - 1) / kCols;
    c.ld = c.groups * kCols + kSumsPad;
    c.r_pad = (p.r_max + kChunk - 1) / kChunk * kChunk;
    const int x_bytes = 2 * kRows * kXLd * static_cast<int>(sizeof(T));
    c.p_rows_at = max(x_bytes, kRows * c.ld * static_cast<int>(sizeof(float)));
    return c;
}

template <typename T> __device__ void cluster_gemm(const LoraDecodeParams& p) {
    extern __shared__ __align__(16) unsigned char smem[];
    const ClusterTile tile = cluster_tile<T>(p);
    auto xs = reinterpret_cast<T(*)[kRows][kXLd]>(smem);
    float* sums = reinterpret_cast<float*>(smem);
    T* p_rows = reinterpret_cast<T*>(smem + tile.p_rows_at);
    const uint32_t sums_at = static_cast<uint32_t>(__cvta_generic_to_shared(sums));

    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int g = lane / 4, t = lane % 4;
    const int crank = cluster_rank();
    const RowSlots rows = resolve_rows(p, lane, blockIdx.x == 0 && blockIdx.y == 0 && warp == 0);
    // Lane j holds slot j's adapter (-1 for an unused slot).
    int slot_adapter_of_lane = -1;
    for (int j = 0; j < rows.count; ++j) {
        const int l = slot_adapter(rows, j);
        if (lane == j) slot_adapter_of_lane = l;
    }
    const long long k = p.k;
    const int w_cols = tile.w_groups * kCols;
    const int col0 = blockIdx.x * w_cols;  // the tile's first W0 column
    const int w_rows = min(w_cols, p.n - col0);

    // The right-hand rows of this warp's groups (warp, warp + 8, ...): W0's
    // for the first w_groups, then P's columns c (slot c / r_max, rank row
    // c % r_max of its adapter's A). Rows past W0's end or an adapter's
    // rank, and unused slots, read as zero.
    const T* w_row[kPasses][kFrags];
    bool w_live[kPasses][kFrags];
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
        const int grp = warp + kWarps * i;
#pragma unroll
        for (int f = 0; f < kFrags; ++f) {
            const int c = (grp < tile.w_groups ? grp : grp - tile.w_groups) * kCols + 8 * f + g;
            // Every lane takes part in the shuffle (c / r_max is any slot).
            const int j = grp >= tile.w_groups && c < tile.p_cols ? c / p.r_max : 0;
            const int l = __shfl_sync(~0u, slot_adapter_of_lane, j);
            const T* row = reinterpret_cast<const T*>(p.w);
            bool live = false;
            if (grp < tile.w_groups) {
                live = c < w_rows;
                if (live) row += (col0 + c) * k;
            } else if (grp < tile.groups && c < tile.p_cols) {
                const int q = c % p.r_max;
                live = l >= 0 && q < rank_of(p, l);
                if (live) row = reinterpret_cast<const T*>(p.a) + (static_cast<long long>(l) * p.r_max + q) * k;
            }
            w_live[i][f] = live;
            w_row[i][f] = row + 8 * t;
        }
    }

    // X's units this thread stages, as in decode.cu (every row < m).
    constexpr int kUnitsPerRow = kStageK / 8;
    constexpr int kUnits = kRows * kUnitsPerRow / (kWarps * 32);
    constexpr int kRowStep = kWarps * 32 / kUnitsPerRow;
    const int x_row0 = threadIdx.x / kUnitsPerRow, x_col = 8 * (threadIdx.x % kUnitsPerRow);
    const T* x_unit = reinterpret_cast<const T*>(p.x) + x_row0 * k + x_col;

    const int k_begin = crank * p.k_per_split;
    const int k_end = min(p.k, k_begin + p.k_per_split);
    const int stages = k_end > k_begin ? (k_end - k_begin + kStageK - 1) / kStageK : 0;
    uint4 staged[kUnits];
    auto load_stage = [&](int s) {
        const int k0 = k_begin + s * kStageK;
#pragma unroll
        for (int i = 0; i < kUnits; ++i)
            staged[i] = load16(x_unit + i * kRowStep * k + k0, x_row0 + i * kRowStep < p.m && k0 + x_col < k_end);
    };
    auto store_stage = [&](int buffer) {
#pragma unroll
        for (int i = 0; i < kUnits; ++i)
            *reinterpret_cast<uint4*>(&xs[buffer][x_row0 + i * kRowStep][x_col]) = staged[i];
    };
    if (stages > 0) {
        load_stage(0);
        store_stage(0);
    }
    __syncthreads();

    float acc[kPasses][kFrags][4] = {};
    constexpr int kStageChunks = kStageK / kChunk;
    static_assert(kStageChunks % kInFlight == 0, "whole steps per stage");
    for (int s = 0; s < stages; ++s) {
        const bool more = s + 1 < stages;
        if (more) load_stage(s + 1);  // in flight while this stage multiplies
        const int buffer = s & 1;
        const int k0 = k_begin + s * kStageK;
        for (int c = 0; c < kStageChunks; c += kInFlight) {
            uint4 lo[kInFlight], hi[kInFlight];
            bool in[kInFlight];
#pragma unroll
            for (int u = 0; u < kInFlight; ++u) {
                const int at = (c + u) * kChunk + 8 * t;
                in[u] = k0 + at < k_end;
                lo[u] = hi[u] = make_uint4(0u, 0u, 0u, 0u);
                if (in[u]) {
                    lo[u] = *reinterpret_cast<const uint4*>(&xs[buffer][g][at]);
                    hi[u] = *reinterpret_cast<const uint4*>(&xs[buffer][g + 8][at]);
                }
            }
#pragma unroll
            for (int i = 0; i < kPasses; ++i) {
                if (warp + kWarps * i >= tile.groups) continue;
                uint4 w[kInFlight][kFrags];
#pragma unroll
                for (int u = 0; u < kInFlight; ++u)
#pragma unroll
                    for (int f = 0; f < kFrags; ++f)
                        w[u][f] = load16(w_row[i][f] + k0 + (c + u) * kChunk, in[u] && w_live[i][f]);
#pragma unroll
                for (int u = 0; u < kInFlight; ++u)
#pragma unroll
                    for (int f = 0; f < kFrags; ++f) mma_chunk<T>(acc[i][f], lo[u], hi[u], w[u][f]);
            }
        }
        // The other buffer was last read in the previous stage, which every
        // warp has finished (the barrier below, one stage ago).
        if (more) store_stage(buffer ^ 1);
        __syncthreads();
    }

    // The CTA's sums, over X's dead stages (every warp passed the last
    // barrier). Element e of lane (g, t) in fragment f: row g + 8 (e / 2),
    // column 8 f + 2 t + e % 2.
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
        const int grp = warp + kWarps * i;
        if (grp >= tile.groups) continue;
#pragma unroll
        for (int f = 0; f < kFrags; ++f)
#pragma unroll
            for (int e = 0; e < 4; ++e)
                sums[(g + 8 * (e / 2)) * tile.ld + grp * kCols + 8 * f + 2 * t + e % 2] = acc[i][f][e];
    }
    // Every CTA's sums written and visible to the cluster.
    cluster_arrive();
    cluster_wait();

    // P's rows: each row's own slot, summed over the splits in split order
    // and rounded (zero past the row's rank); the first tile's first CTA
    // also writes P. The loop bound is the same for every lane: the shuffles
    // see the whole warp.
    const int p_col0 = tile.w_groups * kCols;
    for (int first = 0; first < kRows * tile.r_pad; first += kWarps * 32) {
        const int at = first + threadIdx.x;
        const int i = min(at / tile.r_pad, kRows - 1), q = at % tile.r_pad;
        const int adapter = __shfl_sync(~0u, rows.adapter, i);
        const int slot = __shfl_sync(~0u, rows.slot, i);
        if (at >= kRows * tile.r_pad) continue;
        float v = 0.0f;
        if (i < p.m && adapter >= 0 && q < rank_of(p, adapter)) {
            const int index = i * tile.ld + p_col0 + slot * p.r_max + q;
            for (int z = 0; z < kCluster; ++z) v += remote_f32(sums_at, z, index);
        }
        const T rounded = from_f32<T>(v);
        p_rows[i * tile.r_pad + q] = rounded;
        if (blockIdx.x == 0 && crank == 0 && i < p.m && q < p.r_max)
            reinterpret_cast<T*>(p.p)[i * p.r_max + q] = rounded;
    }
    __syncthreads();

    // Y: this CTA's n8 fragments of the tile (f % cluster == rank), a warp
    // each: s.P.B^T by mma (one pass per slot, the rows of other adapters
    // zero, as the finish), plus the splits' sums and the bias.
    const int adapter_g = __shfl_sync(~0u, rows.adapter, g);
    const int adapter_g8 = __shfl_sync(~0u, rows.adapter, g + 8);
    const float scale_g = scale_of(p, adapter_g), scale_g8 = scale_of(p, adapter_g8);
    const T* bias = reinterpret_cast<const T*>(p.bias);
    const int frags = (w_rows + 7) / 8;
    for (int frag = crank + kCluster * warp; frag < frags; frag += kCluster * kWarps) {
        float acc_p[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        expand_fragment<T>(acc_p, p, rows, p_rows, tile.r_pad, col0 + 8 * frag + g, adapter_g, adapter_g8);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int row = g + 8 * (e / 2), tile_col = 8 * frag + 2 * t + e % 2, col = col0 + tile_col;
            if (row >= p.m || col >= p.n) continue;
            float base = 0.0f;
            for (int z = 0; z < kCluster; ++z) base += remote_f32(sums_at, z, row * tile.ld + tile_col);
            float v = acc_p[e] * (e < 2 ? scale_g : scale_g8) + base;
            if (bias) v += to_f32(bias[col]);
            reinterpret_cast<T*>(p.y)[static_cast<long long>(row) * p.n + col] = from_f32<T>(v);
        }
    }
    // Keep this CTA's sums alive until every CTA of the cluster has read them.
    cluster_arrive();
    cluster_wait();
}

}  // namespace decode
}  // namespace fused_lora

#define STAMP_DECODE_CLUSTER(SUFFIX, TYPE)                                                   \
    extern "C" __global__ void __cluster_dims__(1, LORA_DECODE_CLUSTER, 1)                  \
        __launch_bounds__(LORA_DECODE_WARPS * 32) lora_decode_cluster_##SUFFIX(const LoraDecodeParams params) { \
        fused_lora::decode::cluster_gemm<TYPE>(params);                                      \
    }
STAMP_DECODE_CLUSTER(f16, __half)
STAMP_DECODE_CLUSTER(bf16, __nv_bfloat16)
