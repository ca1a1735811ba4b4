// Compiled by emu/core/tests/cudart.rs for sm_80 machine code only (no PTX):
// the emulated runtime cannot run it and says so.
#include <cuda_runtime.h>

__global__ void fill_ones(int* out) { out[threadIdx.x] = 1; }

void launch_sass_only(int* out, cudaStream_t stream) { fill_ones<<<1, 32, 0, stream>>>(out); }
