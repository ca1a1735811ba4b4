// The fused forward on Hopper (sm_90a): Y = X.W0^T + bias + s.P.B^T, with P
// = X.A^T written by the (mma.sync) shrink just before, as the sm_80 path
// does. The GEMM is hopper_gemm.cuh's (the same virtual K as
// cuda/forward.cu: the scaled adapter segment first, then the base segment,
// each output rounded once) with both right operands K-major: W0 [N, K] and
// B [N, r] are [output column, reduction] row-major. The host
// (src/forward/hopper.rs) encodes the four tensor maps and takes this path
// only where TMA can read the operands (16-byte aligned bases and row
// strides).
#include "hopper_gemm.cuh"

#define STAMP_HOPPER_GEMM(SUFFIX, TYPE)                                                    \
    extern "C" __global__ void __launch_bounds__(LORA_HOPPER_THREADS, 1)                   \
        lora_forward_gemm_##SUFFIX##_sm90a(const __grid_constant__ LoraHopperGemmParams params) { \
        fused_lora::hopper::gemm<TYPE, false>(params);                                     \
    }
STAMP_HOPPER_GEMM(f16, __half)
STAMP_HOPPER_GEMM(bf16, __nv_bfloat16)
