/* Parameters of the forward kernels (fused forward, expand), shared by
 * cuda/forward.cu and the Rust side (bindgen), so the layouts cannot drift apart.
 * Device pointers are uint64_t; 0 means "absent" where a comment says so.
 *
 * Every forward operation is one launch of the same tiled GEMM over a
 * "virtual K": first an optional adapter segment, then an optional base segment,
 * all into one f32 accumulator per output element:
 *
 *     acc  = sum over adapters l present in the tile's rows of
 *            [row's adapter == l] * lhs_l . rhs_l^T     (adapter segment)
 *     acc *= scale of the row's adapter                  (0 for rows without one)
 *     acc += x . w^T                                     (base segment)
 *     out  = round_T(acc + bias[n] + y_in[m, n])
 *
 * - forward  Y = X.W0^T + b + s.P.B^T: EXPAND mode on P (written by the
 *            shrink with s = 1 just before), plus the base segment and the bias;
 * - expand   Y += s.P.B^T:         EXPAND mode, y_in = out = Y.
 *
 * SHRINK mode (P = X~.A^T) is never a GEMM launch: the host describes a
 * shrink in these parameters and hands it to the rank side
 * (src/rank_side.rs, launch_shrink; cuda/rank_side.cuh). Dropout (PEFT
 * lora_dropout on the adapter input) applies to a SHRINK's lhs only: with
 * `dropout` set, lhs[m, k] is read as
 *     X~[m, k] = keep(m, k) ? round_T(X[m, k] . inv_keep) : 0,
 * keep drawn from Philox-4x32-10 keyed by (seed, offset, m.ad_k + k) as in
 * src/reference/philox.rs (m, k global indices). The base segment always
 * reads the undropped X. */
#ifndef FUSED_LORA_FORWARD_PARAMS_H
#define FUSED_LORA_FORWARD_PARAMS_H

#include <stdint.h>

/* The output tile of one CTA and the K-step of the shared-memory pipeline. */
#define LORA_FWD_TILE_M 64
#define LORA_FWD_TILE_N 64
#define LORA_FWD_TILE_K 32
#define LORA_FWD_THREADS 128
/* The big tile (lora_forward_gemm_<f16|bf16>_128x128, the same threads and
 * K-step) and the dynamic shared memory its launch reserves (pipeline slots
 * and output tile in one union, plus the per-row adapter lists). */
#define LORA_FWD_BIG_TILE_M 128
#define LORA_FWD_BIG_TILE_N 128
#define LORA_FWD_BIG_SHARED_BYTES (72 * 1024)
/* The wide tile (lora_forward_gemm_<f16|bf16>_128x64: 128 rows by 64
 * columns) and its dynamic shared memory: small enough for 3 CTAs per SM on
 * an A100 (164 KB), as its registers allow. */
#define LORA_FWD_WIDE_TILE_M 128
#define LORA_FWD_WIDE_TILE_N 64
#define LORA_FWD_WIDE_SHARED_BYTES (52 * 1024)
/* The fused-P tile (lora_forward_gemm_<f16|bf16>_128x256_p, 8 warps): the
 * forward with the shrink inside, for one adapter of rank up to
 * LORA_FWD_FUSED_P_MAX_RANK (see cuda/forward_fused_p.cuh). Its dynamic
 * shared memory is the 128 x 264 f32 output tile, which the 4 pipeline
 * slots (X, W0 and A tiles: 100 KB) share. */
#define LORA_FWD_FUSED_P_TILE_M 128
#define LORA_FWD_FUSED_P_TILE_N 256
#define LORA_FWD_FUSED_P_THREADS 256
#define LORA_FWD_FUSED_P_MAX_RANK 16
#define LORA_FWD_FUSED_P_SHARED_BYTES (132 * 1024)
/* The sm_90 cluster form of the fused-P tile (cuda/forward_sm90a.cu): the
 * CTAs per cluster (column tiles of one row block), each computing 16 of
 * P's rank columns, so ranks up to 16 x this. */
#define LORA_FWD_FUSED_P_CLUSTER 4

/* What the adapter segment multiplies. */
typedef enum LoraAdapterMode {
    /* No adapter segment. */
    LORA_ADAPTER_NONE = 0,
    /* lhs = X [m, ad_k], rhs_l = A_l [n (= r_max), ad_k]; rhs rows past the
     * adapter's rank are never read (the outputs there are 0). The rank
     * side's launch only (see above). */
    LORA_ADAPTER_SHRINK = 1,
    /* lhs = P [m, ad_lhs_ld], rhs_l = B_l [n, ad_rhs_ld]; only the first
     * rank_l columns of both are read. */
    LORA_ADAPTER_EXPAND = 2
} LoraAdapterMode;

typedef struct LoraGemmParams {
    uint64_t out;           /* [m, n] T: written once */
    uint64_t y_in;          /* [m, n] const T added in the epilogue, or 0; may equal out */
    uint64_t bias;          /* [n] const T, or 0 */
    uint64_t x;             /* [m, k] const T: base lhs, or 0 for no base segment */
    uint64_t w;             /* [n, k] const T: base rhs */
    uint64_t ad_lhs;        /* SHRINK: [m, ad_k]; EXPAND: [m, ad_lhs_ld] const T */
    uint64_t ad_rhs;        /* SHRINK: [L, n, ad_k]; EXPAND: [L, n, ad_rhs_ld] const T */
    int64_t ad_rhs_stride;  /* elements from one adapter's rhs to the next */
    uint64_t row_adapter;   /* [m] const int32 in [-1, L), or 0: every row uses adapter 0 */
    uint64_t ranks;         /* [L] const int32 in [1, r_max], or 0: every adapter has `rank` */
    uint64_t scales;        /* [L] const float, or 0: every adapter has `scale` */
    uint64_t status;        /* [1] uint64, or 0: atomicMin of (row << 32 | uint32(index))
                               over rows whose index is out of range (treated as -1) */
    uint64_t seed;          /* dropout: Philox key */
    uint64_t offset;        /* dropout: Philox counter words 2-3 */
    int32_t m;
    int32_t n;
    int32_t k;
    int32_t ad_mode;        /* LoraAdapterMode */
    int32_t ad_k;           /* SHRINK: the reduction length (K) */
    int32_t ad_lhs_ld;      /* EXPAND: row stride of P (r_max) */
    int32_t ad_rhs_ld;      /* EXPAND: row stride of B (r_max) */
    int32_t num_adapters;   /* L >= 1 */
    int32_t rank;           /* used when ranks == 0 */
    float scale;            /* used when scales == 0 */
    int32_t dropout;        /* nonzero (SHRINK only): the adapter lhs is X~, see above */
    float dropout_p;        /* element kept iff uniform(seed, offset, m.ad_k + k) >= dropout_p */
    float inv_keep;         /* 1 / (1 - dropout_p), computed in f32 */
    /* Split-K (the small-M path): gridDim.z == k_splits CTAs share each
     * output tile, split z taking its share of the K-steps (adapter segment
     * and base segment as one sequence). With k_splits > 1 each split stores its raw f32
     * accumulator to partials and lora_forward_reduce finishes the output. */
    int32_t k_splits;
    uint64_t partials;      /* [k_splits, m, n] float, when k_splits > 1 */
    /* The fused-P tile only (lora_forward_gemm_<T>_128x256_p): A [rank, k],
     * the shrink's right operand. That launch computes P = round_T(X.A^T)
     * itself, writes it to ad_lhs ([m, rank]) and expands it; ad_rhs, rank
     * and scale are as in EXPAND mode. 0 for every other launch. */
    uint64_t shrink_rhs;
} LoraGemmParams;

/* The second launch of the split-K path:
 *     out = round_T(sum over z in order of partials[z] + bias[n] + y_in[m, n]) */
typedef struct LoraReduceParams {
    uint64_t out;           /* [m, n] T */
    uint64_t partials;      /* [k_splits, m, n] const float */
    uint64_t bias;          /* [n] const T, or 0 */
    uint64_t y_in;          /* [m, n] const T, or 0 */
    int32_t m;
    int32_t n;
    int32_t k_splits;
} LoraReduceParams;

#define LORA_FWD_REDUCE_THREADS 256

#endif
