// The backward's dX on Hopper (sm_90a): dX = dY.W0 + s.G.A (+ the old dX
// with GradMode::Accumulate), for one adapter without dropout. The GEMM is
// hopper_gemm.cuh's, the fused forward's, with dX's operands in its roles:
//
//     X -> dY [M, N]   W -> W0 [N, K]   P -> G [M, r]   B -> A [r, K]
//     out -> dX [M, K] (its n is dX's K, its k is the reduction N)
//     y_in -> dX itself when accumulating, bias -> none
//
// So the order is the mma.sync dX's (cuda/backward.cu, folded f16/bf16
// path): the adapter term's f32 sum scaled by s first, the base steps added
// onto it, the old dX added in f32 and each element rounded once. Both right
// operands are MN-major here (W0 and A are [reduction, output column]
// row-major): the wgmma B-transpose immediate is set and their K-steps are
// loaded as four 64-column boxes. The host (src/backward/hopper.rs) takes
// this path on compute capability 9.0 where TMA can read the operands.
#include "hopper_gemm.cuh"

#define STAMP_HOPPER_DX(SUFFIX, TYPE)                                                              \
    extern "C" __global__ void __launch_bounds__(LORA_HOPPER_THREADS, 1)                           \
        lora_backward_dx_##SUFFIX##_sm90a(const __grid_constant__ LoraHopperGemmParams params) { \
        fused_lora::hopper::gemm<TYPE, true>(params);                                              \
    }
STAMP_HOPPER_DX(f16, __half)
STAMP_HOPPER_DX(bf16, __nv_bfloat16)
