// Kernels with one planted bug each, beside a corrected twin that must run
// clean. Each bug is one a sanitizer check exists to catch.
#include <cstdint>

// memcheck: `<=` writes out[n], one element past the end.
extern "C" __global__ void write_past_end(float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = float(i);
}
extern "C" __global__ void write_within_bounds(float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = float(i);
}

// memcheck: a 4-byte load from `in` shifted by byte_offset; misaligned
// unless byte_offset is a multiple of 4.
extern "C" __global__ void load_at_byte_offset(const float* in, float* out, int byte_offset) {
    int i = threadIdx.x;
    const float* shifted = reinterpret_cast<const float*>(reinterpret_cast<const char*>(in) + byte_offset);
    out[i] = shifted[i];
}

// Plain copy, out[i] = in[i] for i < n: reads a freed buffer or one never
// written when the test arranges it (memcheck use-after-free, initcheck).
extern "C" __global__ void copy_f32(const float* in, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = in[i];
}

// memcheck: thread 63 reads staged[64] of a 64-element shared array (the
// kernel's only shared variable, so nothing lies past its end).
extern "C" __global__ void shared_index_past_end(const float* in, float* out) {
    __shared__ float staged[64];
    staged[threadIdx.x] = in[threadIdx.x];
    __syncthreads();
    out[threadIdx.x] = staged[threadIdx.x + 1];
}
extern "C" __global__ void shared_index_wrapped(const float* in, float* out) {
    __shared__ float staged[64];
    staged[threadIdx.x] = in[threadIdx.x];
    __syncthreads();
    out[threadIdx.x] = staged[(threadIdx.x + 1) % 64];
}

// racecheck: with 64 threads, each reads the element a thread of the other
// warp wrote, with no barrier between the write and the read. The array is
// zeroed behind a barrier first, so the read is never of unwritten bytes: the
// only fault is the race.
extern "C" __global__ void rotate_without_barrier(const float* in, float* out) {
    __shared__ float staged[64];
    staged[threadIdx.x] = 0.0f;
    __syncthreads();
    staged[threadIdx.x] = in[threadIdx.x];
    out[threadIdx.x] = staged[(threadIdx.x + 32) % 64];
}
extern "C" __global__ void rotate_with_barrier(const float* in, float* out) {
    __shared__ float staged[64];
    staged[threadIdx.x] = 0.0f;
    __syncthreads();
    staged[threadIdx.x] = in[threadIdx.x];
    __syncthreads();
    out[threadIdx.x] = staged[(threadIdx.x + 32) % 64];
}

// initcheck: only the first `written` of 64 shared elements are stored, all 64 read.
extern "C" __global__ void read_shared_partly_written(const float* in, float* out, int written) {
    __shared__ float staged[64];
    if (threadIdx.x < written) staged[threadIdx.x] = in[threadIdx.x];
    __syncthreads();
    out[threadIdx.x] = staged[threadIdx.x];
}

// synccheck: __syncthreads() (an aligned barrier: the whole warp must reach
// it together) inside a branch only half of the warp takes. One warp: lanes
// 0-15 wait at the first barrier while lanes 16-31 reach the second, so the
// barrier is met at two different instructions (and never by the whole warp
// at once), whether or not exited threads would count as arrived.
extern "C" __global__ void barrier_in_divergent_branch(float* out) {
    if (threadIdx.x < 16) __syncthreads();
    out[threadIdx.x] = float(threadIdx.x);
    __syncthreads();
}
extern "C" __global__ void barrier_in_uniform_code(float* out) {
    __syncthreads();
    out[threadIdx.x] = float(threadIdx.x);
    __syncthreads();
}

// synccheck: a full-warp shuffle that only lanes 0-15 reach; the twin names
// exactly the lanes that reach it in its member mask.
extern "C" __global__ void shuffle_full_mask_half_warp(const float* in, float* out) {
    float v = in[threadIdx.x];
    if (threadIdx.x < 16) v = __shfl_sync(0xffffffffu, v, 0);
    out[threadIdx.x] = v;
}
extern "C" __global__ void shuffle_half_mask_half_warp(const float* in, float* out) {
    float v = in[threadIdx.x];
    if (threadIdx.x < 16) v = __shfl_sync(0x0000ffffu, v, 0);
    out[threadIdx.x] = v;
}

__device__ __forceinline__ void named_barrier(uint32_t id, uint32_t threads) {
    asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// synccheck: 64 threads; warp 0 waits at barrier 1 and warp 1 at barrier 2,
// each barrier expecting 64 threads, so neither is ever released (a hang on
// hardware). The twin has both warps meet at barrier 1.
extern "C" __global__ void barriers_never_complete(float* out) {
    named_barrier(threadIdx.x < 32 ? 1 : 2, 64);
    out[threadIdx.x] = 1.0f;
}
extern "C" __global__ void barriers_complete(float* out) {
    named_barrier(1, 64);
    out[threadIdx.x] = 1.0f;
}

// racecheck: two unrelated hazards in one kernel, each to be reported with
// both of its instructions: every thread writes flag[0] (write after write),
// and thread t reads staged[t], written by thread t - 1, with no barrier
// (read after write). The second warp's readers make the read side wide.
extern "C" __global__ void two_separate_races(const float* in, float* out) {
    __shared__ float staged[65];
    __shared__ int flag[1];
    int t = threadIdx.x;
    flag[0] = t;
    staged[t + 1] = in[t];
    if (t == 0) staged[0] = 0.0f;
    out[t] = staged[t] + float(flag[0] == t);
}
