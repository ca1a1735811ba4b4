// Thread-block clusters (sm_90): the CTA's rank and the cluster barrier,
// shared by the kernels that sum or share work across a cluster
// (cuda/forward_fused_p.cuh's cluster tile, cuda/decode_sm90a.cu).
#ifndef FUSED_LORA_CLUSTER_CUH
#define FUSED_LORA_CLUSTER_CUH

#include <stdint.h>

namespace fused_lora {

// The CTA's rank in its cluster.
// Volatile: read where it is used, not held in a register across a K loop.
__device__ __forceinline__ int cluster_rank() {
    uint32_t r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return static_cast<int>(r);
}
// Every thread of every CTA of the cluster arrives (release: its shared
// memory writes before are visible to the cluster) ...
__device__ __forceinline__ void cluster_arrive() { asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory"); }
// ... and waits for all of them (acquire).
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory"); }

}  // namespace fused_lora

#endif
