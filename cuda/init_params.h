/* Parameters of the random fill kernels (cuda/init.cu): element i of `out`
 * is drawn from Philox-4x32-10 keyed by (seed, offset, i). Shared by the
 * kernels and the Rust side (bindgen). Device pointers are uint64_t. */
#ifndef FUSED_LORA_INIT_PARAMS_H
#define FUSED_LORA_INIT_PARAMS_H

#include <stdint.h>

#define LORA_INIT_THREADS 256

/* The kernel's one by-value argument. */
typedef struct LoraFillParams {
    uint64_t out;     /* [len] T */
    uint64_t len;
    uint64_t seed;
    uint64_t offset;
    /* Uniform: U(-bound, bound), bound already rounded to f32 (as the reference does). */
    float bound;
    int32_t reserved;
    /* Normal: N(0, std^2); std stays f64, the product z * std is taken in f64. */
    double std_dev;
} LoraFillParams;

#endif
