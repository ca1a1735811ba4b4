/* Parameters of the decode forward (few rows: M <= LORA_DECODE_ROWS), shared by
 * cuda/decode.cu and the Rust side (bindgen). Device pointers are uint64_t;
 * 0 means "absent" where a comment says so.
 *
 * Two launches:
 *
 *  1. lora_decode_gemm_<T>: a split-K GEMM of X [m, k] against the rows of
 *     [W0; A_slot0; A_slot1; ...] (A_l's first ranks[l] rows), so that X is
 *     read once and the shrink is r extra output columns of the same pass.
 *     Slot j holds the j-th distinct valid adapter among the rows (in order
 *     of first appearance); its columns see only the rows of that adapter
 *     (the others read as zero). gridDim.x = w_tiles + slots * slot_tiles
 *     column tiles of col_groups * LORA_DECODE_COLS, gridDim.y = k_splits;
 *     the CTA stages X's rows in shared memory, LORA_DECODE_STAGE_K at a
 *     time, for its LORA_DECODE_WARPS warps: col_groups groups of 32
 *     columns, the warps of a group splitting K and summed in a fixed order;
 *     the CTA stores raw f32 sums:
 *         partials[z, i, c]   (c < n: W0 column; n + j*r_max + q: slot j's rank q)
 *  2. lora_decode_finish_<T>: per output element, in a fixed order,
 *         P[i, q] = round_T(sum over z of partials[z, i, n + slot(i)*r_max + q])
 *         Y[i, c] = round_T(s_l * (P[i, :] . B_l[c, :]) + sum over z of partials[z, i, c] + bias[c])
 *     with l the row's adapter (rows without one: P row 0, Y the base); the
 *     first CTA also writes P [m, r_max] (zeros past each row's rank). */
#ifndef FUSED_LORA_DECODE_PARAMS_H
#define FUSED_LORA_DECODE_PARAMS_H

#include <stdint.h>

/* The most rows the decode path takes: one m16 mma fragment. */
#define LORA_DECODE_ROWS 16
/* Output columns of one warp of either launch (four n8 fragments), and of a
 * finishing CTA; a split-GEMM CTA has col_groups of them. */
#define LORA_DECODE_COLS 32
/* K staged in shared memory per step of the split GEMM (X's rows, shared by
 * every warp of the CTA). */
#define LORA_DECODE_STAGE_K 512
/* K per warp step of the split GEMM: one 16-byte load per thread and row. */
#define LORA_DECODE_CHUNK 32
/* Warps of one split-GEMM CTA: col_groups groups of 32 columns, the warps of
 * a group splitting the CTA's K range. */
#define LORA_DECODE_WARPS 8
/* The most warps of one finishing CTA: four per n8 fragment of its columns,
 * one accumulator element of the fragment per thread. The host launches 4, 8
 * or 16 (one, two or four warps per fragment). */
#define LORA_DECODE_FINISH_WARPS 16
/* The one-launch form on sm_90 (lora_decode_cluster_<T>, cuda/decode_sm90a.cu):
 * the K splits of one column tile form a thread-block cluster of this many
 * CTAs (gridDim.y), summed through distributed shared memory; a CTA's 8 warps
 * take at most LORA_DECODE_CLUSTER_GROUPS groups of 32 columns (W0's
 * col_groups, then ceil(slots * r_max / 32) of P's), up to 3 each. */
#define LORA_DECODE_CLUSTER 8
#define LORA_DECODE_CLUSTER_GROUPS 24
/* The widest adapter slot the decode path takes (the finishing CTA keeps
 * P [16, r_max] in shared memory). */
#define LORA_DECODE_MAX_RANK 256

typedef struct LoraDecodeParams {
    uint64_t x;            /* [m, k] const T */
    uint64_t w;            /* [n, k] const T */
    uint64_t a;            /* [L, r_max, k] const T: A_l at a + l*r_max*k */
    uint64_t b;            /* [L, n, r_max] const T: B_l at b + l*n*r_max */
    uint64_t bias;         /* [n] const T, or 0 */
    uint64_t row_adapter;  /* [m] const int32 in [-1, L), or 0: every row uses adapter 0 */
    uint64_t ranks;        /* [L] const int32 in [1, r_max], or 0: every adapter has `rank` */
    uint64_t scales;       /* [L] const float, or 0: every adapter has `scale` */
    uint64_t status;       /* [1] uint64, or 0: atomicMin of (row << 32 | uint32(index))
                              over rows whose index is out of range (treated as -1) */
    uint64_t partials;     /* [k_splits, m, n + slots*r_max] float */
    uint64_t y;            /* [m, n] T: written once */
    uint64_t p;            /* [m, r_max] T: written once */
    int32_t m;             /* 1..=LORA_DECODE_ROWS */
    int32_t n;
    int32_t k;             /* a multiple of 8 */
    int32_t r_max;         /* 1..=LORA_DECODE_MAX_RANK */
    int32_t num_adapters;  /* L >= 1 */
    int32_t rank;          /* used when ranks == 0 */
    float scale;           /* used when scales == 0 */
    int32_t slots;         /* adapter slots: min(m, L) */
    int32_t k_splits;      /* gridDim.y of the split GEMM */
    int32_t k_per_split;   /* a multiple of LORA_DECODE_CHUNK */
    int32_t col_groups;    /* 1, 2, 4 or 8: warp groups of 32 columns per split-GEMM CTA (the
                              cluster form: W0's groups, 1..=LORA_DECODE_CLUSTER_GROUPS) */
    int32_t w_tiles;       /* column tiles over W0: ceil(n / (col_groups * LORA_DECODE_COLS)) */
    int32_t slot_tiles;    /* column tiles per slot: ceil(r_max / (col_groups * LORA_DECODE_COLS)) */
} LoraDecodeParams;

#endif
