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

// P inside the fused GEMM for ranks 17..64 on sm_90: the 128x256 fused-P
// tile in a cluster of the 4 column tiles of a row block, each CTA computing
// 16 of P's rank columns and reading the others' through distributed shared
// memory (cuda/forward_fused_p.cuh; routed by src/forward/launch.rs,
// takes_fused_p_cluster).
#define LORA_FWD_FUSED_P_CLUSTER_ONLY
#include "forward_fused_p.cuh"

#define STAMP_GEMM_FUSED_P_CLUSTER(SUFFIX, TYPE)                                                      \
    extern "C" __global__ void __cluster_dims__(LORA_FWD_FUSED_P_CLUSTER, 1, 1)                      \
        __launch_bounds__(LORA_FWD_FUSED_P_THREADS, 1) lora_forward_gemm_##SUFFIX##_128x256_p_cluster( \
            const LoraGemmParams params) {                                                            \
        fused_lora::fwd_p::gemm_fused_p<TYPE, LORA_FWD_FUSED_P_CLUSTER>(params);                      \
    }
STAMP_GEMM_FUSED_P_CLUSTER(f16, __half)
STAMP_GEMM_FUSED_P_CLUSTER(bf16, __nv_bfloat16)
