/* Parameters of the Hopper (sm_90a) GEMM, cuda/hopper_gemm.cuh, run by the
 * fused forward (cuda/forward_sm90a.cu) and the backward's dX
 * (cuda/backward_dx_sm90a.cu), shared with the Rust side (bindgen).
 *
 *     out = round_T(s . (P . B) + X . W + bias[n] + y_in[m, n])
 *
 * The same formula and reduction order as the mma.sync kernels
 * (forward_params.h, backward_params.h: the adapter segment first, scaled in
 * f32, then the base segment), for one adapter whose rank is `ad_k` (0: no
 * adapter segment); `m`, `n` are the output's rows and columns and `k` the
 * base segment's reduction. The forward: X, W0 [n, k], P, B [n, ad_k]. dX:
 * dY [m, k], W0 [k, n], G [m, ad_k], A [ad_k, n] (n is dX's K, k the layer's
 * N), y_in = dX when accumulating.
 * The four operands are read through TMA tensor maps the host encodes with
 * cuTensorMapEncodeTiled: 2-D, row-major, the inner dimension first,
 * 128-byte swizzle, zero fill out of bounds (ragged M, N, K and the rank's
 * tail). X and P: a box of LORA_HOPPER_TILE_K reduction columns by
 * LORA_HOPPER_TILE_M rows. W and B, K-major (the forward): LORA_HOPPER_TILE_K
 * reduction columns by LORA_HOPPER_TILE_N rows; MN-major (dX):
 * LORA_HOPPER_MN_BOX output columns by LORA_HOPPER_TILE_K reduction rows. */
#ifndef FUSED_LORA_HOPPER_PARAMS_H
#define FUSED_LORA_HOPPER_PARAMS_H

#include <stdint.h>

/* The CTA tile and the K-step of the shared-memory ring. */
#define LORA_HOPPER_TILE_M 128
#define LORA_HOPPER_TILE_N 256
#define LORA_HOPPER_TILE_K 64
#define LORA_HOPPER_STAGES 4
/* An MN-major operand's box width: 64 16-bit elements, one 128-byte swizzle
 * span (a 256-column tile takes four boxes per K-step). */
#define LORA_HOPPER_MN_BOX 64
/* One producer warpgroup and two consumer warpgroups (64 rows each). */
#define LORA_HOPPER_THREADS 384
/* The dynamic shared memory a launch reserves: the ring (each stage a
 * 128 x 64 X (or P) tile and a 256 x 64 W0 (or B) tile), its barriers, and
 * 1024 bytes to align the ring to the 128-byte swizzle's 1024-byte atom. */
#define LORA_HOPPER_SHARED_BYTES \
    (LORA_HOPPER_STAGES * (LORA_HOPPER_TILE_M + LORA_HOPPER_TILE_N) * LORA_HOPPER_TILE_K * 2 + 1024 + 1024)

/* A CUtensorMap: 128 opaque bytes, 64-byte aligned, written by the driver's
 * cuTensorMapEncodeTiled on the host. */
typedef struct __attribute__((aligned(64))) LoraTensorMap {
    uint64_t opaque[16];
} LoraTensorMap;

typedef struct __attribute__((aligned(64))) LoraHopperGemmParams {
    LoraTensorMap x_map;  /* X [m, k] (dX: dY) */
    LoraTensorMap w_map;  /* W0 [n, k] (dX: W0 [k, n], MN-major) */
    LoraTensorMap p_map;  /* P [m, ad_k] (row stride r_max), when ad_k > 0 (dX: G) */
    LoraTensorMap b_map;  /* B [n, ad_k] (row stride r_max), when ad_k > 0 (dX: A [ad_k, n], MN-major) */
    uint64_t out;         /* [m, n] T: written once */
    uint64_t y_in;        /* [m, n] const T added in the epilogue, or 0; may equal out */
    uint64_t bias;        /* [n] const T, or 0 */
    int32_t m;
    int32_t n;
    int32_t k;
    int32_t ad_k;         /* the adapter's rank; 0: no adapter segment */
    float scale;          /* s, applied to the adapter segment in f32 */
} LoraHopperGemmParams;

#endif
