// Device side of the CUTLASS GEMM (see cutlass_gemm.h). Compile to PTX with
//   nvcc -ptx -std=c++17 -arch=compute_80 --expt-relaxed-constexpr \
//        -I$FUSED_LORA_CUTLASS_INCLUDE cutlass_gemm.cu
// The entry `cutlass_gemm_bf16_sm80` is the body of `cutlass::Kernel<GemmKernel>`
// under a C name, so a driver-API caller needs no mangled name. Its single
// parameter is the kernel's Params struct; its dynamic shared memory is
// sizeof(SharedStorage). Both come from the host program cutlass_gemm_params.cu.
#include "cutlass_gemm.h"

extern "C" __global__ void cutlass_gemm_bf16_sm80(CutlassGemmBf16Kernel::Params params) {
    extern __shared__ int shared_storage_base[];
    auto* shared_storage =
        reinterpret_cast<CutlassGemmBf16Kernel::SharedStorage*>(shared_storage_base);
    CutlassGemmBf16Kernel op;
    op(params, *shared_storage);
}

// The 128x128x32 configuration (CutlassGemmBf16Large), same calling convention.
extern "C" __global__ void cutlass_gemm_bf16_sm80_128x128(CutlassGemmBf16LargeKernel::Params params) {
    extern __shared__ int shared_storage_base[];
    auto* shared_storage =
        reinterpret_cast<CutlassGemmBf16LargeKernel::SharedStorage*>(shared_storage_base);
    CutlassGemmBf16LargeKernel op;
    op(params, *shared_storage);
}
