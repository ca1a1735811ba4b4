// sm_90 thread-block clusters for the emulator's cluster tests
// (tests/cluster.rs): cluster registers, barrier.cluster, mapa and
// distributed shared memory through cooperative_groups (what nvcc makes of
// cluster.sync() and map_shared_rank) and through inline PTX
// (ld/st.shared::cluster). Each `mode` other than 0 plants one bug a check
// must find.
#include <cooperative_groups.h>
#include <cstdint>

namespace cg = cooperative_groups;

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void cluster_arrive() { asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory"); }

// Each CTA fills its shared row, then reads its right-hand neighbour's
// (rank + 1 mod size) through map_shared_rank; every thread writes
// 8 words: its value read, and the cluster registers.
//   mode 1: no cluster.sync between the fills and the remote reads (race)
//   mode 2: map_shared_rank to rank == size (outside the cluster)
//   mode 3: no cluster.sync at the end (a CTA reads a neighbour that has exited)
extern "C" __global__ void exchange(unsigned* out, int mode) {
    __shared__ unsigned row[128];
    cg::cluster_group cluster = cg::this_cluster();
    const unsigned rank = cluster.block_rank();
    const unsigned size = cluster.num_blocks();
    const unsigned t = threadIdx.x;
    const unsigned cta = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    row[t] = cta * 1000 + t;
    if (mode != 1) cluster.sync();
    const unsigned target = mode == 2 ? size : (rank + 1) % size;
    const unsigned* remote = cluster.map_shared_rank(row, target);
    // A neighbour's thread other than the own index (a cross-warp pattern).
    const unsigned v = remote[(t + 33) % blockDim.x];
    if (mode != 3) cluster.sync();
    unsigned* o = out + (cta * blockDim.x + t) * 8;
    uint32_t r;
    o[0] = v;
    o[1] = rank;
    o[2] = size;
    asm("mov.u32 %0, %%clusterid.x;" : "=r"(r));
    o[3] = r;
    asm("mov.u32 %0, %%clusterid.y;" : "=r"(r));
    o[4] = r;
    asm("mov.u32 %0, %%cluster_ctaid.x;" : "=r"(r));
    o[5] = r;
    asm("mov.u32 %0, %%cluster_ctaid.y;" : "=r"(r));
    o[6] = r;
    asm("{\n.reg .pred p;\nmov.pred p, %%is_explicit_cluster;\nselp.u32 %0, 1, 0, p;\n}" : "=r"(r));
    o[7] = r;
}

// The same exchange with the cluster size in the kernel (`.reqnctapercluster`).
extern "C" __global__ void __cluster_dims__(4, 1, 1) exchange_static(unsigned* out) {
    __shared__ unsigned row[64];
    cg::cluster_group cluster = cg::this_cluster();
    const unsigned rank = cluster.block_rank();
    row[threadIdx.x] = blockIdx.x * 100 + threadIdx.x;
    cluster.sync();
    const unsigned* remote = cluster.map_shared_rank(row, (rank + 1) % cluster.num_blocks());
    const unsigned v = remote[threadIdx.x];
    cluster.sync();
    out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

// Each CTA stores into its left-hand neighbour's shared row with
// st.shared::cluster (inline PTX, 32-bit shared::cluster addresses), and
// after the barrier every CTA sums what it received with
// ld.shared::cluster of its own row (a rank-0-free shared::cluster address).
//   mode 1: the owner reads its row before the cluster barrier (race with the remote store)
//   mode 2: a thread arrives twice without a wait
//   mode 3: a thread waits without arriving
//   mode 4: rank 0's warp 1 never arrives (it waits at a named barrier nobody else uses)
//   mode 5: st.shared::cluster one word past the end of the neighbour's row
extern "C" __global__ void push_left(unsigned* out, int mode) {
    __shared__ unsigned row[64];
    unsigned rank, size;
    asm("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
    asm("mov.u32 %0, %%cluster_nctarank;" : "=r"(size));
    const unsigned t = threadIdx.x;
    const unsigned left = (rank + size - 1) % size;
    uint32_t dst;
    const unsigned index = mode == 5 && t == 0 ? 64 : t;
    asm("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(dst) : "r"(smem_addr(&row[index])), "r"(left));
    // Every CTA's row must be live before a neighbour writes it.
    cluster_arrive();
    cluster_wait();
    asm volatile("st.shared::cluster.u32 [%0], %1;" ::"r"(dst), "r"(rank * 1000 + t) : "memory");
    unsigned early = 0;
    if (mode == 1) early = row[t];
    if (mode == 4 && rank == 0 && t >= 32) {
        asm volatile("bar.sync 1, 64;" ::: "memory");
    }
    cluster_arrive();
    if (mode == 2) cluster_arrive();
    cluster_wait();
    if (mode == 3 && t == 0) cluster_wait();
    unsigned got;
    asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(got) : "r"(smem_addr(&row[t])) : "memory");
    out[blockIdx.x * blockDim.x + t] = got + early;
    cluster_arrive();
    cluster_wait();
}
