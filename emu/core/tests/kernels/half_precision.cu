// f16 and bf16 element-wise kernels through the cuda_fp16.h / cuda_bf16.h
// intrinsics, for bit-exact comparison with round-to-nearest-even on the CPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

// Per f16x2 pair: sum[i] = a + b (__hadd2), fma[i] = a * b + c (__hfma2, one rounding).
extern "C" __global__ void half2_add_fma(const __half2* a, const __half2* b, const __half2* c,
                                         __half2* sum, __half2* fma, int pairs) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= pairs) return;
    sum[i] = __hadd2(a[i], b[i]);
    fma[i] = __hfma2(a[i], b[i], c[i]);
}

// Per bf16x2 pair, the same with __hadd2 / __hfma2 on __nv_bfloat162.
extern "C" __global__ void bfloat162_add_fma(const __nv_bfloat162* a, const __nv_bfloat162* b,
                                             const __nv_bfloat162* c, __nv_bfloat162* sum,
                                             __nv_bfloat162* fma, int pairs) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= pairs) return;
    sum[i] = __hadd2(a[i], b[i]);
    fma[i] = __hfma2(a[i], b[i], c[i]);
}

// Conversions: f32 -> f16 (rn) -> f32 and f32 -> bf16 (rn) -> f32.
extern "C" __global__ void convert_half_bfloat16(const float* x, __half* as_half,
                                                 __nv_bfloat16* as_bfloat16, float* half_back,
                                                 float* bfloat16_back, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __half h = __float2half_rn(x[i]);
    __nv_bfloat16 bf = __float2bfloat16(x[i]);
    as_half[i] = h;
    as_bfloat16[i] = bf;
    half_back[i] = __half2float(h);
    bfloat16_back[i] = __bfloat162float(bf);
}
