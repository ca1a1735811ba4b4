/* Parameters of the batched low-rank weight update (merge/unmerge):
 *     W_out <- W + scale * B * A      for every layer of a list, in one launch.
 * Shared by the kernels (cuda/merge.cu) and the Rust side (bindgen), so the
 * layouts can never drift apart. Device pointers are uint64_t. */
#ifndef FUSED_LORA_MERGE_PARAMS_H
#define FUSED_LORA_MERGE_PARAMS_H

#include <stdint.h>

/* Tile of the output one CTA updates: LORA_MERGE_TILE_N rows of W by
 * LORA_MERGE_TILE_K columns. */
#define LORA_MERGE_TILE_N 64
#define LORA_MERGE_TILE_K 128
#define LORA_MERGE_THREADS 256

/* What a launch does with the results it computes. */
typedef enum LoraMergeMode {
    /* Write every result. */
    LORA_MERGE_WRITE = 0,
    /* Write nothing; set nonfinite_flags[layer] = 1 where a result is NaN/Inf. */
    LORA_MERGE_CHECK = 1,
    /* Write only if every flag of a previous CHECK launch is still 0. */
    LORA_MERGE_WRITE_IF_FINITE = 2
} LoraMergeMode;

/* One layer of the list. */
typedef struct LoraMergeLayer {
    uint64_t w;       /* [n, k] const T: the weight read */
    uint64_t out;     /* [n, k] T: where W + scale*B*A goes; may equal w (in place) */
    uint64_t a;       /* [r, k] const T: lora_A.weight */
    uint64_t b;       /* [n, r] const T: lora_B.weight */
    float scale;      /* +s to merge, -s to unmerge */
    int32_t n;
    int32_t k;
    int32_t r;
    /* Index of this layer's first tile in the launch's tile list (prefix sum
     * of ceil(n/TILE_N) * ceil(k/TILE_K) over the layers before it). */
    int64_t first_tile;
} LoraMergeLayer;

/* The kernel's one by-value argument. */
typedef struct LoraMergeParams {
    uint64_t layers;           /* [num_layers] const LoraMergeLayer */
    uint64_t nonfinite_flags;  /* [num_layers] int32_t; used by CHECK and WRITE_IF_FINITE */
    int32_t num_layers;
    int32_t mode;              /* LoraMergeMode */
    int64_t total_tiles;       /* == gridDim.x */
} LoraMergeParams;

#endif
