// The planted-bug suite: each kernel holds one mistake people make, beside
// its corrected twin (`*_fixed`). Every kernel takes (in, out, n): `in` and
// `out` hold exactly n floats, and the launch is one CTA of 64 threads.
// tests/planted_bug_suite.rs says which check must catch each bug.
#include <cstdint>
#include <cuda_pipeline.h>

#define KERNEL(name) extern "C" __global__ void name(const float* in, float* out, int n)

// 1. Off-by-one guard: `<=` stores out[n].
KERNEL(store_one_past_end) {
    int t = threadIdx.x;
    if (t <= n) out[t] = float(t);
}
KERNEL(store_one_past_end_fixed) {
    int t = threadIdx.x;
    if (t < n) out[t] = float(t);
}

// 2. A neighbour read without a guard for the last element.
KERNEL(load_one_past_end) {
    int t = threadIdx.x;
    if (t < n) out[t] = in[t] + in[t + 1];
}
KERNEL(load_one_past_end_fixed) {
    int t = threadIdx.x;
    if (t < n) out[t] = in[t] + (t + 1 < n ? in[t + 1] : 0.0f);
}

// 3. Wrong stride: a 6x8 row-major matrix read with a leading dimension of 9.
KERNEL(wrong_leading_dimension) {
    int t = threadIdx.x;
    if (t < n) out[t] = in[(t / 8) * 9 + t % 8];
}
KERNEL(wrong_leading_dimension_fixed) {
    int t = threadIdx.x;
    if (t < n) out[t] = in[(t / 8) * 8 + t % 8];
}

// 4. A left neighbour read without a guard for the first element.
KERNEL(load_before_start) {
    int t = threadIdx.x;
    if (t < n) out[t] = in[t - 1];
}
KERNEL(load_before_start_fixed) {
    int t = threadIdx.x;
    if (t < n) out[t] = t > 0 ? in[t - 1] : 0.0f;
}

// 5. A float4 load from a pointer shifted by one float.
KERNEL(misaligned_float4_load) {
    int t = threadIdx.x;
    if (t < n / 4 - 1) reinterpret_cast<float4*>(out)[t] = reinterpret_cast<const float4*>(in + 1)[t];
}
KERNEL(misaligned_float4_load_fixed) {
    int t = threadIdx.x;
    if (t < n / 4) reinterpret_cast<float4*>(out)[t] = reinterpret_cast<const float4*>(in)[t];
}

// 6. A float2 store to a pointer shifted by one float.
KERNEL(misaligned_float2_store) {
    int t = threadIdx.x;
    if (t < n / 2 - 1) reinterpret_cast<float2*>(out + 1)[t] = make_float2(in[2 * t], in[2 * t + 1]);
}
KERNEL(misaligned_float2_store_fixed) {
    int t = threadIdx.x;
    if (t < n / 2) reinterpret_cast<float2*>(out)[t] = make_float2(in[2 * t], in[2 * t + 1]);
}

// 7. Vectorised stores with no scalar tail: n = 46 is not a multiple of 4.
KERNEL(vector_store_past_ragged_end) {
    int t = threadIdx.x;
    float v = float(t);
    if (4 * t < n) reinterpret_cast<float4*>(out)[t] = make_float4(v, v, v, v);
}
KERNEL(vector_store_past_ragged_end_fixed) {
    int t = threadIdx.x;
    float v = float(t);
    if (4 * t + 3 < n) {
        reinterpret_cast<float4*>(out)[t] = make_float4(v, v, v, v);
    } else {
        for (int k = 4 * t; k < n; ++k) out[k] = v;
    }
}

// 8. Shared index with a stride of two over a 64-float array.
KERNEL(shared_index_stride_two) {
    __shared__ float s[64];
    int t = threadIdx.x;
    s[2 * t] = t < n ? in[t] : 0.0f;
    __syncthreads();
    if (t < n) out[t] = s[t];
}
KERNEL(shared_index_stride_two_fixed) {
    __shared__ float s[64];
    int t = threadIdx.x;
    s[t] = t < n ? in[t] : 0.0f;
    __syncthreads();
    if (t < n) out[t] = s[t];
}

// 9. A rotation through shared memory with no barrier between write and read.
KERNEL(missing_barrier) {
    __shared__ float s[64];
    int t = threadIdx.x;
    s[t] = t < n ? in[t] : 0.0f;
    if (t < n) out[t] = s[(t + 1) % 64];
}
KERNEL(missing_barrier_fixed) {
    __shared__ float s[64];
    int t = threadIdx.x;
    s[t] = t < n ? in[t] : 0.0f;
    __syncthreads();
    if (t < n) out[t] = s[(t + 1) % 64];
}

// 10. __syncthreads in code only even threads run.
KERNEL(barrier_in_divergent_code) {
    __shared__ float s[64];
    int t = threadIdx.x;
    s[t] = t < n ? in[t] : 0.0f;
    if (t % 2 == 0) {
        __syncthreads();
        if (t < n) out[t] = s[(t + 2) % 64];
    }
}
KERNEL(barrier_in_divergent_code_fixed) {
    __shared__ float s[64];
    int t = threadIdx.x;
    s[t] = t < n ? in[t] : 0.0f;
    __syncthreads();
    if (t % 2 == 0 && t < n) out[t] = s[(t + 2) % 64];
}

// 11. Threads past n return before the block's barrier (n = 40 splits a warp).
KERNEL(early_return_before_barrier) {
    __shared__ float s[64];
    int t = threadIdx.x;
    if (t >= n) return;
    s[t] = in[t];
    __syncthreads();
    out[t] = s[n - 1 - t];
}
KERNEL(early_return_before_barrier_fixed) {
    __shared__ float s[64];
    int t = threadIdx.x;
    if (t < n) s[t] = in[t];
    __syncthreads();
    if (t < n) out[t] = s[n - 1 - t];
}

// 12. Only the first warp fills the shared tile that all threads read.
KERNEL(shared_half_written) {
    __shared__ float s[64];
    int t = threadIdx.x;
    if (t < 32) s[t] = in[t];
    __syncthreads();
    if (t < n) out[t] = s[t];
}
KERNEL(shared_half_written_fixed) {
    __shared__ float s[64];
    int t = threadIdx.x;
    s[t] = t < n ? in[t] : 0.0f;
    __syncthreads();
    if (t < n) out[t] = s[t];
}

// 13. A ragged tile not zero-filled past n, then summed over the whole tile.
KERNEL(ragged_tile_not_zero_filled) {
    __shared__ float s[64];
    int t = threadIdx.x;
    if (t < n) s[t] = in[t];
    __syncthreads();
    float acc = 0.0f;
    for (int k = 0; k < 64; k += 16) acc += s[(t + k) % 64];
    if (t < n) out[t] = acc;
}
KERNEL(ragged_tile_not_zero_filled_fixed) {
    __shared__ float s[64];
    int t = threadIdx.x;
    s[t] = t < n ? in[t] : 0.0f;
    __syncthreads();
    float acc = 0.0f;
    for (int k = 0; k < 64; k += 16) acc += s[(t + k) % 64];
    if (t < n) out[t] = acc;
}

// 14. A warp reduction through shared memory without __syncwarp between steps.
KERNEL(warp_reduce_without_syncwarp) {
    __shared__ float s[64];
    volatile float* v = s;
    int t = threadIdx.x, lane = t % 32;
    v[t] = t < n ? in[t] : 0.0f;
    __syncwarp();
    for (int off = 16; off > 0; off /= 2) {
        if (lane < off) v[t] += v[t + off];
    }
    if (lane == 0) out[t / 32] = v[t];
}
KERNEL(warp_reduce_without_syncwarp_fixed) {
    __shared__ float s[64];
    volatile float* v = s;
    int t = threadIdx.x, lane = t % 32;
    v[t] = t < n ? in[t] : 0.0f;
    __syncwarp();
    for (int off = 16; off > 0; off /= 2) {
        if (lane < off) v[t] += v[t + off];
        __syncwarp();
    }
    if (lane == 0) out[t / 32] = v[t];
}

// 15. An in-place shift: each thread overwrites the element its left
// neighbour is still to read (write after read, no barrier between).
KERNEL(in_place_shift_without_barrier) {
    __shared__ float s[64];
    int t = threadIdx.x;
    s[t] = t < n ? in[t] : 0.0f;
    __syncthreads();
    float right = s[(t + 1) % 64];
    s[t] = right;
    __syncthreads();
    if (t < n) out[t] = s[t];
}
KERNEL(in_place_shift_without_barrier_fixed) {
    __shared__ float s[64];
    int t = threadIdx.x;
    s[t] = t < n ? in[t] : 0.0f;
    __syncthreads();
    float right = s[(t + 1) % 64];
    __syncthreads();
    s[t] = right;
    __syncthreads();
    if (t < n) out[t] = s[t];
}

// 16. Every thread stores the block's flag (write after write).
KERNEL(every_thread_writes_flag) {
    __shared__ int flag;
    int t = threadIdx.x;
    flag = t;
    __syncthreads();
    if (t < n) out[t] = float(flag);
}
KERNEL(every_thread_writes_flag_fixed) {
    __shared__ int flag;
    int t = threadIdx.x;
    if (t == 0) flag = 7;
    __syncthreads();
    if (t < n) out[t] = float(flag);
}

// 17. A full-warp shuffle inside a branch half the warp takes.
KERNEL(full_mask_shuffle_in_branch) {
    int t = threadIdx.x, lane = t % 32;
    float v = t < n ? in[t] : 0.0f;
    if (lane < 16) v = __shfl_sync(0xffffffffu, v, 0);
    if (t < n) out[t] = v;
}
KERNEL(full_mask_shuffle_in_branch_fixed) {
    int t = threadIdx.x, lane = t % 32;
    float v = t < n ? in[t] : 0.0f;
    if (lane < 16) v = __shfl_sync(0x0000ffffu, v, 0);
    if (t < n) out[t] = v;
}

// 18. __syncwarp() (the whole warp) inside a branch half the warp takes.
KERNEL(syncwarp_in_branch) {
    __shared__ float s[64];
    int t = threadIdx.x, lane = t % 32;
    s[t] = t < n ? in[t] : 0.0f;
    if (lane < 16) {
        __syncwarp();
        if (t < n) out[t] = s[t ^ 1];
    }
}
KERNEL(syncwarp_in_branch_fixed) {
    __shared__ float s[64];
    int t = threadIdx.x, lane = t % 32;
    s[t] = t < n ? in[t] : 0.0f;
    if (lane < 16) {
        __syncwarp(0x0000ffffu);
        if (t < n) out[t] = s[t ^ 1];
    }
}

// 19. A named barrier for 48 threads: not a multiple of the warp size.
KERNEL(named_barrier_for_48_threads) {
    int t = threadIdx.x;
    asm volatile("bar.sync 1, 48;" ::: "memory");
    if (t < n) out[t] = in[t];
}
KERNEL(named_barrier_for_48_threads_fixed) {
    int t = threadIdx.x;
    asm volatile("bar.sync 1, 64;" ::: "memory");
    if (t < n) out[t] = in[t];
}

// 20. An asynchronous copy whose source runs one element past the end.
KERNEL(cp_async_past_end) {
    __shared__ __align__(16) float s[64];
    int t = threadIdx.x;
    if (t < n) __pipeline_memcpy_async(&s[t], &in[t + 1], 4);
    __pipeline_commit();
    __pipeline_wait_prior(0);
    __syncthreads();
    if (t + 1 < n) out[t] = s[t];
}
KERNEL(cp_async_past_end_fixed) {
    __shared__ __align__(16) float s[64];
    int t = threadIdx.x;
    if (t + 1 < n) __pipeline_memcpy_async(&s[t], &in[t + 1], 4);
    __pipeline_commit();
    __pipeline_wait_prior(0);
    __syncthreads();
    if (t + 1 < n) out[t] = s[t];
}

// 21. Reading an asynchronous copy's destination before waiting for it.
KERNEL(cp_async_read_before_wait) {
    __shared__ __align__(16) float s[64];
    int t = threadIdx.x;
    if (t < n) __pipeline_memcpy_async(&s[t], &in[t], 4);
    __pipeline_commit();
    if (t < n) out[t] = s[t];
    __pipeline_wait_prior(0);
}
KERNEL(cp_async_read_before_wait_fixed) {
    __shared__ __align__(16) float s[64];
    int t = threadIdx.x;
    if (t < n) __pipeline_memcpy_async(&s[t], &in[t], 4);
    __pipeline_commit();
    __pipeline_wait_prior(0);
    if (t < n) out[t] = s[t];
}

// ldmatrix over an 8x8 b16 tile in shared memory, lanes 0-7 giving row
// addresses (.x1), every lane giving one (.x4).
__device__ unsigned ldmatrix_x1(unsigned addr) {
    unsigned r;
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];" : "=r"(r) : "r"(addr));
    return r;
}
__device__ unsigned ldmatrix_x4_first(unsigned addr) {
    unsigned r0, r1, r2, r3;
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
    return r0 ^ r1 ^ r2 ^ r3;
}

// 22. ldmatrix row addresses 4 bytes off their 16-byte rows.
KERNEL(ldmatrix_misaligned_rows) {
    __shared__ __align__(16) unsigned short tile[64];
    int t = threadIdx.x;
    tile[t] = (unsigned short)t;
    __syncthreads();
    unsigned addr = unsigned(__cvta_generic_to_shared(&tile[(t % 8) * 8])) + 4;
    unsigned r = ldmatrix_x1(addr);
    if (t < n) out[t] = float(r & 0xffff);
}
KERNEL(ldmatrix_misaligned_rows_fixed) {
    __shared__ __align__(16) unsigned short tile[64];
    int t = threadIdx.x;
    tile[t] = (unsigned short)t;
    __syncthreads();
    unsigned addr = unsigned(__cvta_generic_to_shared(&tile[(t % 8) * 8]));
    unsigned r = ldmatrix_x1(addr);
    if (t < n) out[t] = float(r & 0xffff);
}

// 23. ldmatrix .x4 (four 8x8 matrices) over a tile that holds one.
KERNEL(ldmatrix_x4_past_tile) {
    __shared__ __align__(16) unsigned short tile[64];
    int t = threadIdx.x;
    tile[t] = (unsigned short)t;
    __syncthreads();
    unsigned addr = unsigned(__cvta_generic_to_shared(&tile[(t % 32) * 8]));
    unsigned r = ldmatrix_x4_first(addr);
    if (t < n) out[t] = float(r & 0xffff);
}
KERNEL(ldmatrix_x4_past_tile_fixed) {
    __shared__ __align__(16) unsigned short tile[256];
    int t = threadIdx.x;
    for (int i = t; i < 256; i += 64) tile[i] = (unsigned short)i;
    __syncthreads();
    unsigned addr = unsigned(__cvta_generic_to_shared(&tile[(t % 32) * 8]));
    unsigned r = ldmatrix_x4_first(addr);
    if (t < n) out[t] = float(r & 0xffff);
}

// 24, 25. A plain copy: the test frees `in` before the launch (use after
// free) or never writes it (uninitialised global read).
KERNEL(copy) {
    int t = threadIdx.x;
    if (t < n) out[t] = in[t];
}

// 26. A histogram whose bin index goes negative for negative inputs.
KERNEL(histogram_negative_bin) {
    int t = threadIdx.x;
    if (t < n) atomicAdd(&out[int(in[t] * 8.0f)], 1.0f);
}
KERNEL(histogram_negative_bin_fixed) {
    int t = threadIdx.x;
    if (t < n) atomicAdd(&out[min(max(int((in[t] + 1.0f) * 8.0f), 0), 15)], 1.0f);
}

// 27. A block tree reduction with no barrier between its steps.
KERNEL(tree_reduction_without_barrier) {
    __shared__ float s[64];
    volatile float* v = s;
    int t = threadIdx.x;
    v[t] = t < n ? in[t] : 0.0f;
    __syncthreads();
    for (int off = 32; off > 0; off /= 2) {
        if (t < off) v[t] += v[t + off];
    }
    if (t == 0) out[0] = v[0];
}
KERNEL(tree_reduction_without_barrier_fixed) {
    __shared__ float s[64];
    volatile float* v = s;
    int t = threadIdx.x;
    v[t] = t < n ? in[t] : 0.0f;
    __syncthreads();
    for (int off = 32; off > 0; off /= 2) {
        if (t < off) v[t] += v[t + off];
        __syncthreads();
    }
    if (t == 0) out[0] = v[0];
}
