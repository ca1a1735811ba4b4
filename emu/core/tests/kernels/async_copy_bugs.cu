// The planted cp.async ordering bug and its corrected order (a module of its
// own, so that the other planted bugs load even where cp.async does not).
#include <cstdint>

__device__ __forceinline__ uint32_t shared_address(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Each thread stages 16 bytes of `in` in its own shared slot with cp.async,
// then copies the slot to `out`. With `prefill`, the slot first holds -1
// (written behind a barrier). With `wait_first`, the read comes after
// cp.async.wait_group 0 and a barrier (the correct order); otherwise the slot
// is read while the copy is still in flight: it holds the old data, or bytes
// nothing has written yet.
extern "C" __global__ void async_copy_then_read(const float4* in, float4* out, int prefill, int wait_first) {
    __shared__ __align__(16) float4 slots[64];
    if (prefill) {
        slots[threadIdx.x] = make_float4(-1.0f, -1.0f, -1.0f, -1.0f);
        __syncthreads();
    }
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_address(&slots[threadIdx.x])),
                 "l"(&in[threadIdx.x]));
    asm volatile("cp.async.commit_group;\n" ::);
    if (wait_first) {
        asm volatile("cp.async.wait_group 0;\n" ::: "memory");
        __syncthreads();
    }
    out[threadIdx.x] = slots[threadIdx.x];
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}
