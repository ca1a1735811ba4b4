/* Parameters of the fused optimizer steps (cuda/optim.cu): one pass over a
 * parameter tensor updates its f32 master weights and optimizer state from
 * the gradient and refreshes the working copy in T from the new master.
 * Shared by the kernels and the Rust side (bindgen). Device pointers are
 * uint64_t; every array holds `len` elements. */
#ifndef FUSED_LORA_OPTIM_PARAMS_H
#define FUSED_LORA_OPTIM_PARAMS_H

#include <stdint.h>

#define LORA_OPTIM_THREADS 256
/* Elements per thread per iteration: one 16-byte load of f32 state. */
#define LORA_OPTIM_VECTOR 4

/* torch.optim.SGD (coupled weight decay, PyTorch's momentum and Nesterov). */
typedef struct LoraSgdParams {
    uint64_t master;           /* [len] float, read and written */
    uint64_t working;          /* [len] T, written: round_T(new master) */
    uint64_t grad;             /* [len] const G (the gradient type of the kernel name) */
    uint64_t momentum_buffer;  /* [len] float, read and written; unused when momentum == 0 */
    uint64_t len;
    float lr;
    float momentum;
    float one_minus_dampening; /* 1 - dampening, rounded once on the host */
    float weight_decay;
    int32_t nesterov;          /* 0 or 1 */
    int32_t first_step;        /* 1: the buffer starts as the (decayed) gradient, not read */
} LoraSgdParams;

/* torch.optim.AdamW (decoupled weight decay, bias correction). The scalars
 * that depend on the step count are computed on the host in f64 (as PyTorch
 * does in Python floats) and rounded once to f32. */
typedef struct LoraAdamWParams {
    uint64_t master;      /* [len] float, read and written */
    uint64_t working;     /* [len] T, written: round_T(new master) */
    uint64_t grad;        /* [len] const G (the gradient type of the kernel name) */
    uint64_t exp_avg;     /* [len] float m, read and written */
    uint64_t exp_avg_sq;  /* [len] float v, read and written */
    uint64_t len;
    float decay;                  /* 1 - lr * weight_decay */
    float beta1;
    float one_minus_beta1;
    float beta2;
    float one_minus_beta2;
    float step_size;              /* lr / (1 - beta1^t) */
    float bias_correction2_sqrt;  /* sqrt(1 - beta2^t) */
    float eps;
} LoraAdamWParams;

#endif
