// Conversions between the storage types (float, __half, __nv_bfloat16) and
// the f32 the kernels compute in. Every store rounds once, to nearest even.
#pragma once

#include <stdint.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace fused_lora {

template <typename T> __device__ __forceinline__ float to_f32(T x);
template <> __device__ __forceinline__ float to_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f32<__half>(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Two f32 values rounded to a 16-bit T (to nearest even, each once, as
// from_f32) and packed in one 32-bit word, `lo` in the low half (the lower
// address): one cvt of the pair. The values go in as f32 registers: an
// accumulator that no code reads as an integer stays an f32 register over
// its main loop (a bit cast of it can retype the loop's registers to b32,
// a move in and out of every mma).
template <typename T> __device__ __forceinline__ uint32_t pair_from_f32(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pair_from_f32<__half>(float lo, float hi) {
    uint32_t pair;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(pair) : "f"(hi), "f"(lo));
    return pair;
}
template <> __device__ __forceinline__ uint32_t pair_from_f32<__nv_bfloat16>(float lo, float hi) {
    uint32_t pair;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(pair) : "f"(hi), "f"(lo));
    return pair;
}

}  // namespace fused_lora

// Stamps `extern "C"` entry points `<name>_f32`, `<name>_f16`, `<name>_bf16`
// around one templated body, so the Rust side derives the name from the type.
#define FUSED_LORA_FOR_EACH_DTYPE(STAMP) \
    STAMP(f32, float)                    \
    STAMP(f16, __half)                   \
    STAMP(bf16, __nv_bfloat16)
