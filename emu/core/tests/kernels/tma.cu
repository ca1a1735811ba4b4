// sm_90a kernels for the emulator's mbarrier and TMA tests (tests/tma.rs):
// 2-D tensor-map loads and stores, plain bulk copies, and the sm_90 odds and
// ends (elect.sync, cluster registers, mapa, setmaxnreg, griddepcontrol).
// Each `mode` other than 0 and 1 plants one bug a check must find.
#include <cuda.h>
#include <cstdint>

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}

__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}

// The loop's labels are local to its `{ }` block, as in CUTLASS's
// ClusterBarrier::wait (the same label in every inlined copy).
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "LAB_WAIT:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1, 1000000;\n"
        "@p bra DONE;\n"
        "bra LAB_WAIT;\n"
        "DONE:\n"
        "}\n" ::"r"(bar),
        "r"(parity)
        : "memory");
}

__device__ __forceinline__ void tma_load_2d_box(uint32_t dst, const CUtensorMap* map, int c0, int c1, uint32_t bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];"
        ::"r"(dst), "l"(map), "r"(c0), "r"(c1), "r"(bar)
        : "memory");
}

// Loads one box at (c0, c1) into dynamic shared memory at `dst_off` and
// copies the raw shared bytes of the box (`out_bytes`) to `out`.
// mode 0: every thread waits on the barrier; 1: thread 0 waits, then a CTA
// barrier; 2: nobody waits (bug: TMA bytes read before they land); 3: waits
// on the wrong parity (bug: deadlock); 4: no mbarrier.init (bug); 5: thread 0
// arrives twice on a barrier expecting one arrival (bug); 6: re-init while a
// phase is in flight (bug). `tx_bytes` below the box's bytes: the copy
// completes more bytes than expected (bug).
extern "C" __global__ void tma_load_2d(const __grid_constant__ CUtensorMap map, unsigned char* out, int c0, int c1,
                                       unsigned tx_bytes, unsigned out_bytes, unsigned dst_off, int mode) {
    extern __shared__ __align__(1024) unsigned char buf[];
    __shared__ __align__(8) uint64_t bar;
    const uint32_t b = smem_addr(&bar);
    if (threadIdx.x == 0) {
        asm volatile("prefetch.tensormap [%0];" ::"l"(&map) : "memory");
        if (mode != 4) mbar_init(b, 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        mbar_arrive_expect_tx(b, tx_bytes);
        if (mode == 5) asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(b) : "memory");
        if (mode == 6) mbar_init(b, 1);
        tma_load_2d_box(smem_addr(buf) + dst_off, &map, c0, c1, b);
    }
    if (mode == 0 || mode == 3 || (mode == 1 && threadIdx.x == 0)) mbar_wait(b, mode == 3 ? 1 : 0);
    if (mode == 1) __syncthreads();
    for (unsigned i = threadIdx.x; i < out_bytes / 4; i += blockDim.x)
        reinterpret_cast<uint32_t*>(out)[i] = reinterpret_cast<const uint32_t*>(buf + dst_off)[i];
}

// Fills the box's shared bytes from `in` (generic stores), fences them for the
// async proxy (unless `fence` is 0: the bug), and stores the box at (c0, c1).
extern "C" __global__ void tma_store_2d(const __grid_constant__ CUtensorMap map, const unsigned char* in, int c0,
                                        int c1, unsigned box_bytes, int fence) {
    extern __shared__ __align__(1024) unsigned char buf[];
    for (unsigned i = threadIdx.x; i < box_bytes / 4; i += blockDim.x)
        reinterpret_cast<uint32_t*>(buf)[i] = reinterpret_cast<const uint32_t*>(in)[i];
    if (fence) asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    __syncthreads();
    if (threadIdx.x == 0) {
        asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];"
                     ::"l"(&map), "r"(c0), "r"(c1), "r"(smem_addr(buf))
                     : "memory");
        asm volatile("cp.async.bulk.commit_group;" ::: "memory");
        asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
    }
}

// Plain bulk copies: `bytes` from `src` into shared memory (mbarrier
// complete_tx), then back out to `dst` (bulk group).
extern "C" __global__ void bulk_round_trip(const unsigned char* src, unsigned char* dst, unsigned bytes) {
    extern __shared__ __align__(1024) unsigned char buf[];
    __shared__ __align__(8) uint64_t bar;
    const uint32_t b = smem_addr(&bar);
    if (threadIdx.x == 0) {
        mbar_init(b, 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        mbar_arrive_expect_tx(b, bytes);
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                     ::"r"(smem_addr(buf)), "l"(src), "r"(bytes), "r"(b)
                     : "memory");
        mbar_wait(b, 0);
        asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;"
                     ::"l"(dst), "r"(smem_addr(buf)), "r"(bytes)
                     : "memory");
        asm volatile("cp.async.bulk.commit_group;" ::: "memory");
        asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
    }
}

// mbarrier phases driven by threads only: `arrivals` threads arrive on a
// barrier expecting them, over `phases` phases; every thread records, per
// phase, what test_wait said after it. out[0..] per thread of each CTA:
// [elect leader lane, elected?, cluster ctarank, cluster nctarank,
//  %cluster_nctaid.x, %clusterid.x, getctarank, mapa == addr, pending_count after arrive,
//  test_wait(state) after the phase, phases completed].
extern "C" __global__ void mbarrier_phases(unsigned* out, unsigned phases) {
    __shared__ __align__(8) uint64_t bar;
    __shared__ __align__(8) uint64_t drop_bar;
    const uint32_t b = smem_addr(&bar);
    const uint32_t d = smem_addr(&drop_bar);
    unsigned* o = out + (blockIdx.x * blockDim.x + threadIdx.x) * 11;
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
    uint32_t leader, elected;
    asm volatile(
        "{\n.reg .pred p;\n.reg .b32 r;\nelect.sync r|p, 0xffffffff;\nmov.u32 %0, r;\nselp.u32 %1, 1, 0, p;\n}"
        : "=r"(leader), "=r"(elected));
    o[0] = leader;
    o[1] = elected;
    uint32_t v;
    asm("mov.u32 %0, %%cluster_ctarank;" : "=r"(v));
    o[2] = v;
    asm("mov.u32 %0, %%cluster_nctarank;" : "=r"(v));
    o[3] = v;
    asm("mov.u32 %0, %%cluster_nctaid.x;" : "=r"(v));
    o[4] = v;
    asm("mov.u32 %0, %%clusterid.x;" : "=r"(v));
    o[5] = v;
    asm("getctarank.shared::cluster.u32 %0, %1;" : "=r"(v) : "r"(b));
    o[6] = v;
    asm("mapa.shared::cluster.u32 %0, %1, 0;" : "=r"(v) : "r"(b));
    o[7] = v == b;
    if (threadIdx.x == 0) {
        mbar_init(b, blockDim.x);
        mbar_init(d, blockDim.x);
    }
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
    unsigned done = 0;
    uint64_t state = 0;
    for (unsigned ph = 0; ph < phases; ++ph) {
        asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 %0, [%1];" : "=l"(state) : "r"(b) : "memory");
        uint32_t pending;
        asm volatile("mbarrier.pending_count.b64 %0, %1;" : "=r"(pending) : "l"(state));
        if (ph == 0) o[8] = pending;
        mbar_wait(b, ph & 1);
        uint32_t complete;
        asm volatile(
            "{\n.reg .pred p;\nmbarrier.test_wait.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}"
            : "=r"(complete)
            : "r"(b), "l"(state)
            : "memory");
        o[9] = complete;
        done += complete;
    }
    // arrive_drop: every thread but thread 0 drops out; thread 0 then
    // completes the next phase alone.
    if (threadIdx.x != 0) {
        asm volatile("mbarrier.arrive_drop.shared::cta.b64 _, [%0];" ::"r"(d) : "memory");
    } else {
        asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(d) : "memory");
        mbar_wait(d, 0);
        asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(d) : "memory");
        mbar_wait(d, 1);
        done += 100;
        asm volatile("mbarrier.inval.shared::cta.b64 [%0];" ::"r"(d) : "memory");
    }
    o[10] = done;
    asm volatile("griddepcontrol.launch_dependents;");
}

// A warp-specialized TMA pipeline as CUTLASS's Sm90 kernels build it: warp 0
// produces (its elected lane waits for a free stage, arms the stage's full
// barrier with the box's bytes and issues the copy), warps 1 and 2 consume
// (wait for the full barrier, sum the stage's words, release the stage on its
// empty barrier). `STAGES` stages, `tiles` boxes of 32 x 8 words down the
// tensor; out[k] gets the sum of box k (rows past the tensor read as zero).
#define STAGES 3
extern "C" __global__ void tma_pipeline_sum(const __grid_constant__ CUtensorMap map, unsigned* out, int tiles) {
    extern __shared__ __align__(1024) unsigned char buf[];
    __shared__ __align__(8) uint64_t full[STAGES];
    __shared__ __align__(8) uint64_t empty[STAGES];
    const unsigned consumers = blockDim.x - 32;
    const unsigned stage_bytes = 32 * 8 * 4;
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            mbar_init(smem_addr(&full[s]), 1);
            mbar_init(smem_addr(&empty[s]), consumers);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if (threadIdx.x < 32) {
        uint32_t elected;
        asm volatile("{\n.reg .pred p;\nelect.sync _|p, 0xffffffff;\nselp.u32 %0, 1, 0, p;\n}" : "=r"(elected));
        if (elected) {
            for (int k = 0; k < tiles; ++k) {
                const int s = k % STAGES;
                // A fresh barrier's phase "-1" counts as complete: the first pass waits on parity 1.
                mbar_wait(smem_addr(&empty[s]), ((k / STAGES) & 1) ^ 1);
                mbar_arrive_expect_tx(smem_addr(&full[s]), stage_bytes);
                tma_load_2d_box(smem_addr(buf + s * 1024), &map, 0, k * 8, smem_addr(&full[s]));
            }
        }
    } else {
        const unsigned t = threadIdx.x - 32;
        for (int k = 0; k < tiles; ++k) {
            const int s = k % STAGES;
            mbar_wait(smem_addr(&full[s]), (k / STAGES) & 1);
            const unsigned* words = reinterpret_cast<const unsigned*>(buf + s * 1024);
            unsigned sum = 0;
            for (unsigned i = t; i < stage_bytes / 4; i += consumers) sum += words[i];
            atomicAdd(&out[k], sum);
            asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];" ::"r"(smem_addr(&empty[s])) : "memory");
        }
    }
}
