/* Parameters of the backward kernels (cuda/backward.cu), shared with the Rust
 * side through bindgen. Device pointers are uint64_t; 0 means "absent" where
 * a comment says so.
 *
 * One adapter is the stack of one (num_adapters = 1, r_max = rank, every row
 * adapter 0), so every launch takes the per-row form:
 *
 *     G[m, j]   = round_T(sum_n dY[m, n] . B_l[n, j])          l = index[m], j < rank_l
 *     dB_l[n, j] = round_T(s_l . sum_{m: index[m] = l} dY[m, n] . P[m, j])
 *     dA_l[j, k] = round_T(s_l . sum_{m: index[m] = l} G[m, j] . X[m, k])
 *     dX[m, k]  = round_T(sum_n dY[m, n] . W0[n, k] + s_l . sum_j G[m, j] . A_l[j, k])
 *
 * each plus the old gradient (read as T, added in f32) when `accumulate`.
 *
 * With dropout (PEFT lora_dropout on the adapter input), X in dA is
 * X~[m, k] = keep(m, k) ? round_T(X[m, k] . inv_keep) : 0, and the adapter
 * term of dX is multiplied by keep(m, k) ? inv_keep : 0, keep drawn from
 * Philox-4x32-10 keyed by (seed, offset, m.K + k) as in
 * src/reference/philox.rs.
 * Small M (decode): when G or dX has fewer output tiles than the device
 * has SMs, the reduction steps of each tile are split over k_splits CTAs,
 * whose f32 partials a second launch adds in split order.
 *
 * The dA/dB sums over M are not split: a CTA owns a narrow output tile and
 * its warps walk all of an adapter's rows, then add their sums in warp order
 * (no atomics, no partials: bit-identical run to run). */
#ifndef FUSED_LORA_BACKWARD_PARAMS_H
#define FUSED_LORA_BACKWARD_PARAMS_H

#include <stdint.h>

/* Threads of the elementwise launches (the ordered sums of split partials). */
#define LORA_BWD_THREADS 256

/* The tiled launches (G, dX, and the split partials of dA and dB): a CTA of
 * LORA_BWD_GEMM_THREADS threads owns a LORA_BWD_TILE_ROWS x LORA_BWD_TILE_COLS
 * output tile and walks the reduction LORA_BWD_TILE_K at a time. */
#define LORA_BWD_GEMM_THREADS 128
#define LORA_BWD_TILE_ROWS 64
#define LORA_BWD_TILE_COLS 64
#define LORA_BWD_TILE_K 32
/* dX on large f16/bf16 grids (lora_backward_dx_<T>_128x128): the same
 * threads on a LORA_BWD_BIG_TILE_ROWS x LORA_BWD_BIG_TILE_COLS tile, with
 * LORA_BWD_BIG_SHARED_BYTES of dynamic shared memory. */
#define LORA_BWD_BIG_TILE_ROWS 128
#define LORA_BWD_BIG_TILE_COLS 128
#define LORA_BWD_BIG_SHARED_BYTES (72 * 1024)

/* The rank-side launches (G with dB, then dA; cuda/rank_side.cuh): a CTA of
 * LORA_BWD_RANK_THREADS threads owns a LORA_BWD_RANK_TILE (wide side: M for G,
 * N for dB, K for dA) x LORA_BWD_RANK_TILE (rank) output tile and walks its
 * whole reduction: no split partials. */
#define LORA_BWD_RANK_TILE 32
#define LORA_BWD_RANK_THREADS 256
/* Their dynamic shared memory: per warp two stages of two 2 KB tiles, and the tile's rows. */
#define LORA_BWD_RANK_SHARED_BYTES (64 * 1024 + 128)
/* The `_r64` launches (ranks past LORA_BWD_RANK_TILE): a CTA owns twice the
 * rank columns, each stage holding one wide tile and two rank tiles. */
#define LORA_BWD_RANK_WIDE_TILE 64
#define LORA_BWD_RANK_WIDE_SHARED_BYTES (96 * 1024 + 128)
/* The `_r64` gradient launches (G with dB, dA; ranks past LORA_BWD_RANK_TILE
 * where the host's rule takes them): a CTA of LORA_BWD_RANK_WIDE_GRAD_THREADS
 * threads owns 64 rank columns, each warp's stages holding one wide tile
 * and two rank tiles. */
#define LORA_BWD_RANK_WIDE_GRAD_THREADS 128
#define LORA_BWD_RANK_WIDE_GRAD_SHARED_BYTES (48 * 1024 + 128)
/* G with dB's `_r64` launch: the same tiles on 6 warps (72 KB), 2 CTAs per
 * SM on sm_80 and sm_90 (at most 168 registers), 3 warps per scheduler where
 * the 4-warp CTAs left the busiest SM 2. */
#define LORA_BWD_RANK_WIDE_G_DB_THREADS 192
#define LORA_BWD_RANK_WIDE_G_DB_SHARED_BYTES (72 * 1024 + 128)
/* lora_group_rows: one CTA of this many threads sorts the rows by adapter. */
#define LORA_GROUP_THREADS 1024

/* Which gradient a lora_backward_*_partials, lora_backward_finish or lora_backward_sum_splits launch finishes. */
typedef enum LoraBwdReduction {
    /* out [L, n, r_max]: dB */
    LORA_BWD_REDUCE_DB = 0,
    /* out [L, r_max, k]: dA */
    LORA_BWD_REDUCE_DA = 1,
    /* lora_backward_sum_splits: G [m, r_max] */
    LORA_BWD_REDUCE_G = 2,
    /* lora_backward_sum_splits: out [m, k], dX */
    LORA_BWD_REDUCE_DX = 3
} LoraBwdReduction;

typedef struct LoraBwdParams {
    uint64_t dy;            /* [m, n] const T */
    uint64_t x;             /* [m, k] const T */
    uint64_t w;             /* [n, k] const T: W0 in its stored layout */
    uint64_t a;             /* [L, r_max, k] const T */
    uint64_t b;             /* [L, n, r_max] const T */
    uint64_t p;             /* [m, r_max] const T: the forward's projection */
    uint64_t g;             /* [m, r_max] T: written by lora_backward_g, read after */
    uint64_t out;           /* the gradient a launch writes (dB, dA or dX) */
    uint64_t partials;      /* [k_splits, m, k] float: dX's split-K scratch */
    uint64_t row_adapter;   /* [m] const int32 in [-1, L), or 0: every row uses adapter 0 */
    uint64_t ranks;         /* [L] const int32 in [1, r_max], or 0: every adapter has `rank` */
    uint64_t scales;        /* [L] const float, or 0: every adapter has `scale` */
    uint64_t status;        /* [1] uint64, or 0: atomicMin of (row << 32 | uint32(index))
                               over rows whose index is out of range (treated as -1) */
    int32_t m;
    int32_t n;
    int32_t k;
    int32_t r_max;
    int32_t num_adapters;   /* L >= 1 */
    int32_t rank;           /* used when ranks == 0 */
    float scale;            /* used when scales == 0 */
    int32_t reduction;      /* LoraBwdReduction, for the rowsum launches */
    int32_t k_splits;       /* G and dX: CTAs (gridDim.z) sharing one tile's reduction
                               steps; > 1: each stores raw f32 sums in `partials`
                               ([k_splits, m, cols]) and lora_backward_sum_splits
                               adds them in split order */
    int32_t accumulate;     /* nonzero: out = round_T(old out + gradient) */
    int32_t dropout;        /* nonzero: the mask below applies */
    float dropout_p;        /* element kept iff uniform(seed, offset, m.K + k) >= dropout_p */
    float inv_keep;         /* 1 / (1 - dropout_p), computed in f32 */
    uint64_t seed;
    uint64_t offset;
    /* Rows grouped by adapter (lora_group_rows writes them; all 0 with one
     * adapter and no index: every row in order is adapter 0's). */
    uint64_t perm;          /* [m] int32: the rows, adapter by adapter (stable), then the -1 rows */
    uint64_t segments;      /* [L + 2] int32: where each adapter's rows start in perm, then the -1 rows', then m */
    uint64_t group_tiles;   /* [L + 2] int32: prefix sums of ceil(segment / LORA_BWD_RANK_TILE) */
    uint64_t group_counts;  /* [LORA_GROUP_THREADS / 32, L + 1] int32: lora_group_rows' scratch */
    int32_t g_tiles;        /* lora_backward_g_db: CTAs (along x) of G, before dB's */
    int32_t rank_warp_mode; /* dB, dA: 0: a CTA's warps share one adapter's rows; nonzero: each
                               warp takes an adapter of its own (many adapters of few rows) */
    /* lora_backward_dx_da_<T>_128x128: dX with dA's CTAs in the same launch. */
    uint64_t da;            /* [L, r_max, k] T: dA */
    int32_t da_ctas;        /* dA's tiles per rank tile (k tiles x adapters, or adapter groups in warp mode),
                               taken by the grid's last column */
} LoraBwdParams;

#endif
