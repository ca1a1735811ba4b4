// Fused optimizer steps over one parameter tensor, in one pass:
//     read  master (f32), grad (G), state (f32)
//     write master (f32), state (f32), working copy (T) = round_T(new master)
// so the f16/bf16 weights the forward pass reads are never stale and never
// cost a second kernel. All arithmetic in f32.
//
// lora_sgd_step_<T>_grad_<G>:   torch.optim.SGD (momentum, dampening, Nesterov, coupled
//                               weight decay g <- g + wd * w).
// lora_adamw_step_<T>_grad_<G>: torch.optim.AdamW (decoupled decay
//                               w <- w (1 - lr wd), bias-corrected moments,
//                               eps added to sqrt(v_hat)).
// T is the working copy's type, G the gradient's (T itself as the backward
// kernels write it, or f32 from an accumulation buffer); both in {f32, f16, bf16}.
//
// Each thread takes packs of LORA_OPTIM_VECTOR consecutive elements, grid-
// stride. A full pack whose arrays are all aligned moves with one vector load
// or store per array; the tail pack, or any pack of a misaligned view, goes
// element by element. Any length works.

#include "dtype.cuh"
#include "optim_params.h"

namespace fused_lora {
namespace optim {

constexpr int kVec = LORA_OPTIM_VECTOR;
static_assert(kVec == 4, "a pack of f32 state is one 16-byte vector access");

template <typename T>
struct alignas(sizeof(T) * kVec) Pack {
    T v[kVec];
};

template <typename T>
__device__ __forceinline__ bool pack_aligned(uint64_t address) {
    return address % sizeof(Pack<T>) == 0;
}

// Loads elements first .. first+kVec-1 as f32; past `len` reads nothing (0).
template <typename T>
__device__ __forceinline__ void load_pack(uint64_t address, uint64_t first, uint64_t len, bool vector, float (&out)[kVec]) {
    const T* src = reinterpret_cast<const T*>(address);
    if (vector) {
        const Pack<T> pack = *reinterpret_cast<const Pack<T>*>(src + first);
#pragma unroll
        for (int e = 0; e < kVec; ++e) out[e] = to_f32(pack.v[e]);
    } else {
#pragma unroll
        for (int e = 0; e < kVec; ++e) out[e] = first + e < len ? to_f32(src[first + e]) : 0.0f;
    }
}

// Stores round_T(values) at first .. first+kVec-1, nothing past `len`.
template <typename T>
__device__ __forceinline__ void store_pack(uint64_t address, uint64_t first, uint64_t len, bool vector, const float (&values)[kVec]) {
    T* dst = reinterpret_cast<T*>(address);
    if (vector) {
        Pack<T> pack;
#pragma unroll
        for (int e = 0; e < kVec; ++e) pack.v[e] = from_f32<T>(values[e]);
        *reinterpret_cast<Pack<T>*>(dst + first) = pack;
    } else {
#pragma unroll
        for (int e = 0; e < kVec; ++e) {
            if (first + e < len) dst[first + e] = from_f32<T>(values[e]);
        }
    }
}

// Calls step(first, vector) for every pack of the tensor this thread owns.
template <typename Step>
__device__ __forceinline__ void for_each_pack(uint64_t len, bool all_aligned, Step step) {
    const uint64_t packs = (len + kVec - 1) / kVec;
    const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
    for (uint64_t q = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < packs; q += stride) {
        const uint64_t first = q * kVec;
        step(first, all_aligned && first + kVec <= len);
    }
}

template <typename T, typename G>
__device__ void sgd_step(const LoraSgdParams& p) {
    const bool use_buffer = p.momentum != 0.0f;
    const bool all_aligned = pack_aligned<float>(p.master) && pack_aligned<T>(p.working) && pack_aligned<G>(p.grad) &&
                             (!use_buffer || pack_aligned<float>(p.momentum_buffer));
    for_each_pack(p.len, all_aligned, [&](uint64_t first, bool vector) {
        float w[kVec], g[kVec], buf[kVec];
        load_pack<float>(p.master, first, p.len, vector, w);
        load_pack<G>(p.grad, first, p.len, vector, g);
        // The first step's buffer is the gradient itself: the stored one is not read.
        if (use_buffer && !p.first_step) load_pack<float>(p.momentum_buffer, first, p.len, vector, buf);
#pragma unroll
        for (int e = 0; e < kVec; ++e) {
            float d = fmaf(p.weight_decay, w[e], g[e]);
            if (use_buffer) {
                buf[e] = p.first_step ? d : fmaf(p.momentum, buf[e], p.one_minus_dampening * d);
                d = p.nesterov ? fmaf(p.momentum, buf[e], d) : buf[e];
            }
            w[e] = fmaf(-p.lr, d, w[e]);
        }
        if (use_buffer) store_pack<float>(p.momentum_buffer, first, p.len, vector, buf);
        store_pack<float>(p.master, first, p.len, vector, w);
        store_pack<T>(p.working, first, p.len, vector, w);
    });
}

template <typename T, typename G>
__device__ void adamw_step(const LoraAdamWParams& p) {
    const bool all_aligned = pack_aligned<float>(p.master) && pack_aligned<T>(p.working) && pack_aligned<G>(p.grad) &&
                             pack_aligned<float>(p.exp_avg) && pack_aligned<float>(p.exp_avg_sq);
    for_each_pack(p.len, all_aligned, [&](uint64_t first, bool vector) {
        float w[kVec], g[kVec], m[kVec], v[kVec];
        load_pack<float>(p.master, first, p.len, vector, w);
        load_pack<G>(p.grad, first, p.len, vector, g);
        load_pack<float>(p.exp_avg, first, p.len, vector, m);
        load_pack<float>(p.exp_avg_sq, first, p.len, vector, v);
#pragma unroll
        for (int e = 0; e < kVec; ++e) {
            m[e] = fmaf(p.beta1, m[e], p.one_minus_beta1 * g[e]);
            v[e] = fmaf(p.beta2, v[e], p.one_minus_beta2 * g[e] * g[e]);
            const float denom = sqrtf(v[e]) / p.bias_correction2_sqrt + p.eps;
            w[e] = fmaf(-p.step_size, m[e] / denom, w[e] * p.decay);
        }
        store_pack<float>(p.exp_avg, first, p.len, vector, m);
        store_pack<float>(p.exp_avg_sq, first, p.len, vector, v);
        store_pack<float>(p.master, first, p.len, vector, w);
        store_pack<T>(p.working, first, p.len, vector, w);
    });
}

}  // namespace optim
}  // namespace fused_lora

#define STAMP_OPTIM(SUFFIX, TYPE, GRAD_SUFFIX, GRAD_TYPE)                                 \
    extern "C" __global__ void __launch_bounds__(LORA_OPTIM_THREADS)                       \
        lora_sgd_step_##SUFFIX##_grad_##GRAD_SUFFIX(const LoraSgdParams params) {         \
        fused_lora::optim::sgd_step<TYPE, GRAD_TYPE>(params);                               \
    }                                                                                      \
    extern "C" __global__ void __launch_bounds__(LORA_OPTIM_THREADS)                       \
        lora_adamw_step_##SUFFIX##_grad_##GRAD_SUFFIX(const LoraAdamWParams params) {     \
        fused_lora::optim::adamw_step<TYPE, GRAD_TYPE>(params);                             \
    }
// Every working-copy type with every gradient type.
#define STAMP_OPTIM_ALL_GRADS(SUFFIX, TYPE)   \
    STAMP_OPTIM(SUFFIX, TYPE, f32, float)     \
    STAMP_OPTIM(SUFFIX, TYPE, f16, __half)    \
    STAMP_OPTIM(SUFFIX, TYPE, bf16, __nv_bfloat16)
FUSED_LORA_FOR_EACH_DTYPE(STAMP_OPTIM_ALL_GRADS)
