// Kernels whose counters can be worked out by hand (see tests/counters.rs).

// One warp: out[lane] = in[lane * stride]. Stride 1: one load request over 4
// sectors; stride 32 (128 bytes apart): 32 sectors. The store is always coalesced.
extern "C" __global__ void load_with_stride(const float* in, float* out, int stride) {
    out[threadIdx.x] = in[threadIdx.x * stride];
}

// Every thread of every block reads in[0] and writes its own out element.
extern "C" __global__ void broadcast_first(const float* in, float* out) {
    out[blockIdx.x * blockDim.x + threadIdx.x] = in[0];
}

// One warp: a shared store then a shared load at word index lane * stride.
// Stride 1 or 33: 32 distinct banks; stride 32: every lane in bank 0 (32-way).
extern "C" __global__ void shared_with_stride(float* out, int stride) {
    __shared__ float words[32 * 33];
    words[threadIdx.x * stride] = float(threadIdx.x);
    __syncthreads();
    out[threadIdx.x] = words[threadIdx.x * stride];
}

// `rounds` barriers in a loop; out[tid] counts them.
extern "C" __global__ void barrier_rounds(int* out, int rounds) {
    __shared__ int counter[1024];
    counter[threadIdx.x] = 0;
    for (int r = 0; r < rounds; ++r) {
        __syncthreads();
        counter[threadIdx.x] += 1;
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = counter[threadIdx.x];
}
