// Device side of the CUTLASS Hopper GEMMs (see cutlass_gemm_sm90.h). Compile to PTX with
//   nvcc -ptx -std=c++17 -arch=sm_90a --expt-relaxed-constexpr \
//        -I$FUSED_LORA_CUTLASS_INCLUDE cutlass_gemm_sm90.cu
// Each entry is the body of `cutlass::device_kernel<GemmKernel>` under a C
// name, so a driver-API caller needs no mangled name: one __grid_constant__
// parameter, the kernel's Params (it holds the TMA descriptors, whose
// addresses the kernel takes), and sizeof(SharedStorage) bytes of dynamic
// shared memory. Both come from the host program cutlass_gemm_sm90_params.cu.
#include "cutlass_gemm_sm90.h"

extern "C" __global__ void __launch_bounds__(CutlassSm90Cooperative::MaxThreadsPerBlock,
                                             CutlassSm90Cooperative::MinBlocksPerMultiprocessor)
    cutlass_gemm_bf16_sm90_cooperative(CUTLASS_GRID_CONSTANT CutlassSm90Cooperative::Params const params) {
    extern __shared__ char shared_storage[];
    CutlassSm90Cooperative op;
    op(params, shared_storage);
}

extern "C" __global__ void __launch_bounds__(CutlassSm90WarpSpecialized::MaxThreadsPerBlock,
                                             CutlassSm90WarpSpecialized::MinBlocksPerMultiprocessor)
    cutlass_gemm_bf16_sm90_warpspecialized(CUTLASS_GRID_CONSTANT CutlassSm90WarpSpecialized::Params const params) {
    extern __shared__ char shared_storage[];
    CutlassSm90WarpSpecialized op;
    op(params, shared_storage);
}
