// Small kernels, each exercising one feature of the execution model or one
// family of instructions nvcc emits. Every output element is written exactly
// once, so a poisoned output buffer reveals any element left unwritten.
#include <cstdint>

// ---- element-wise and indexing -------------------------------------------

// c[i] = a[i] + b[i]; launched with more threads than n (tail).
extern "C" __global__ void vec_add_f32(const float* a,  // [n]
                                       const float* b,  // [n]
                                       float* c,        // [n]
                                       int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

// y[i] = alpha * x[i] + y[i] with a grid smaller than n (grid-stride loop).
extern "C" __global__ void saxpy_grid_stride(float alpha, const float* x, float* y, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        y[i] = fmaf(alpha, x[i], y[i]);
    }
}

// Each thread writes its coordinates at its linear position in a 3-D grid of
// 3-D blocks: out[gid] = ctaid.x | ctaid.y << 4 | ctaid.z << 8 | tid.x << 12 |
// tid.y << 16 | tid.z << 20, gid the x-fastest linear thread index.
extern "C" __global__ void grid_coordinates(uint32_t* out) {
    uint32_t block_linear = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    uint32_t block_threads = blockDim.x * blockDim.y * blockDim.z;
    uint32_t thread_linear = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    out[block_linear * block_threads + thread_linear] =
        blockIdx.x | blockIdx.y << 4 | blockIdx.z << 8 | threadIdx.x << 12 | threadIdx.y << 16 |
        threadIdx.z << 20;
}

// ---- warp collectives -----------------------------------------------------

// Per warp: out_down[warp] = tree sum with __shfl_down_sync (lane 0's value);
// out_xor[i] = butterfly sum with __shfl_xor_sync, as every lane sees it.
extern "C" __global__ void warp_reduce_f32(const float* in,   // [n], n a multiple of 32
                                           float* out_down,   // [n / 32]
                                           float* out_xor) {  // [n]
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float down = in[i];
    for (int offset = 16; offset > 0; offset /= 2) down += __shfl_down_sync(0xffffffffu, down, offset);
    float butterfly = in[i];
    for (int mask = 1; mask < 32; mask *= 2) butterfly += __shfl_xor_sync(0xffffffffu, butterfly, mask);
    if ((threadIdx.x & 31) == 0) out_down[i / 32] = down;
    out_xor[i] = butterfly;
}

// Per warp: the ballot of in[i] > 0, and whether any / all lanes voted so.
extern "C" __global__ void warp_vote(const int* in,         // [n], n a multiple of 32
                                     uint32_t* ballots,     // [n / 32]
                                     int* any_positive,     // [n / 32]
                                     int* all_positive) {   // [n / 32]
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    bool positive = in[i] > 0;
    uint32_t ballot = __ballot_sync(0xffffffffu, positive);
    int any = __any_sync(0xffffffffu, positive);
    int all = __all_sync(0xffffffffu, positive);
    if ((threadIdx.x & 31) == 0) {
        ballots[i / 32] = ballot;
        any_positive[i / 32] = any;
        all_positive[i / 32] = all;
    }
}

// ---- shared memory and barriers ------------------------------------------

// Per block of 256 threads: out[block] = shared-memory tree sum of its slice
// of in (zero past n), halving the active threads each step.
extern "C" __global__ void block_reduce_f32(const float* in, float* out, int n) {
    __shared__ float partial[256];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    partial[threadIdx.x] = i < n ? in[i] : 0.0f;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

// Reverses n floats through dynamic shared memory (n * 4 bytes, above the
// 48 KB static limit): out[i] = in[n - 1 - i]. One block.
extern "C" __global__ void reverse_dynamic_shared(const float* in, float* out, int n) {
    extern __shared__ float staged[];
    for (int i = threadIdx.x; i < n; i += blockDim.x) staged[i] = in[i];
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = staged[n - 1 - i];
}

// ---- atomics ----------------------------------------------------------------

// Histograms of keys into 16 bins, counted with integer atomics directly in
// global memory and through a shared-memory histogram per block; and the sum
// of values with float atomics, globally and through shared memory.
extern "C" __global__ void atomic_histogram(const uint32_t* keys,  // [n]
                                            const float* values,   // [n]
                                            int n,
                                            int* bins_global,      // [16], zeroed
                                            int* bins_via_shared,  // [16], zeroed
                                            float* sum_global,     // [1], zeroed
                                            float* sum_via_shared) {  // [1], zeroed
    __shared__ int bins[16];
    __shared__ float block_sum;
    if (threadIdx.x < 16) bins[threadIdx.x] = 0;
    if (threadIdx.x == 0) block_sum = 0.0f;
    __syncthreads();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        uint32_t bin = keys[i] % 16;
        atomicAdd(&bins_global[bin], 1);
        atomicAdd(&bins[bin], 1);
        atomicAdd(sum_global, values[i]);
        atomicAdd(&block_sum, values[i]);
    }
    __syncthreads();
    if (threadIdx.x < 16) atomicAdd(&bins_via_shared[threadIdx.x], bins[threadIdx.x]);
    if (threadIdx.x == 0) atomicAdd(sum_via_shared, block_sum);
}

// ---- tiled SGEMM ------------------------------------------------------------

// C[M,N] = A[M,K] * B[K,N], all row-major f32, 16x16 shared-memory tiles,
// any M, N, K (tails predicated, out-of-range tile elements loaded as zero).
// Grid (ceil(N/16), ceil(M/16)), block (16, 16).
extern "C" __global__ void sgemm_tiled(int m, int n, int k,
                                       const float* a,  // [M, K]
                                       const float* b,  // [K, N]
                                       float* c) {      // [M, N]
    constexpr int TILE = 16;
    __shared__ float a_tile[TILE][TILE];
    __shared__ float b_tile[TILE][TILE + 1];  // padded: column reads conflict-free
    int row = blockIdx.y * TILE + threadIdx.y;
    int col = blockIdx.x * TILE + threadIdx.x;
    float acc = 0.0f;
    for (int k0 = 0; k0 < k; k0 += TILE) {
        int ka = k0 + threadIdx.x;
        int kb = k0 + threadIdx.y;
        a_tile[threadIdx.y][threadIdx.x] = (row < m && ka < k) ? a[row * k + ka] : 0.0f;
        b_tile[threadIdx.y][threadIdx.x] = (kb < k && col < n) ? b[kb * n + col] : 0.0f;
        __syncthreads();
        for (int kk = 0; kk < TILE; ++kk) acc = fmaf(a_tile[threadIdx.y][kk], b_tile[kk][threadIdx.x], acc);
        __syncthreads();
    }
    if (row < m && col < n) c[row * n + col] = acc;
}

// ---- integer instructions ---------------------------------------------------

__device__ __forceinline__ uint32_t bit_field_extract(uint32_t x, uint32_t pos, uint32_t len) {
    uint32_t r;
    asm("bfe.u32 %0, %1, %2, %3;" : "=r"(r) : "r"(x), "r"(pos), "r"(len));
    return r;
}

// a & b | ~a & c as one lop3 (nvcc writes and/not/or in the PTX and leaves
// lop3 to ptxas, so it is spelled out): lookup table 0xF0 & 0xCC | ~0xF0 & 0xAA.
__device__ __forceinline__ uint32_t bit_select(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t r;
    asm("lop3.b32 %0, %1, %2, %3, 0xCA;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}

// Eight results per element, out[8*i + j]:
// 0 __byte_perm (prmt), 1 a&b | ~a&c (lop3), 2 bfe.u32 of bits [pos, pos+len),
// 3 __umulhi (mul.hi.u32), 4 high word of a*b as signed (mul.hi.s32),
// 5 __funnelshift_l (shf.l), 6 popc(a) + clz(b) * 64, 7 __brev(a).
extern "C" __global__ void integer_ops(const uint32_t* a, const uint32_t* b, const uint32_t* c,
                                       const uint32_t* sel, uint32_t* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    uint32_t x = a[i], y = b[i], z = c[i], s = sel[i];
    uint32_t* o = out + 8 * i;
    o[0] = __byte_perm(x, y, s & 0xffff);
    o[1] = bit_select(x, y, z);
    o[2] = bit_field_extract(x, s & 31, (s >> 8) & 31);
    o[3] = __umulhi(x, y);
    o[4] = uint32_t(__mulhi(int32_t(x), int32_t(y)));
    o[5] = __funnelshift_l(x, y, s);
    o[6] = uint32_t(__popc(x)) + uint32_t(__clz(int32_t(y))) * 64u;
    o[7] = __brev(x);
}

// ---- math library -----------------------------------------------------------

// out[5*i + j]: 0 expf, 1 __expf, 2 rsqrtf(|x|), 3 sqrtf(|x|), 4 tanhf.
extern "C" __global__ void math_functions(const float* x, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    out[5 * i + 0] = expf(v);
    out[5 * i + 1] = __expf(v);
    out[5 * i + 2] = rsqrtf(fabsf(v));
    out[5 * i + 3] = sqrtf(fabsf(v));
    out[5 * i + 4] = tanhf(v);
}
