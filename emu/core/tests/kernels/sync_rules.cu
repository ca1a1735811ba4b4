// synccheck's rules (docs/emulator.md, "synccheck"): each kernel either
// breaks one of them or shows a pattern the rules allow. Launched with one
// CTA of 64 threads unless a test says otherwise.
#include <cstdint>

// Finding: a reduction that lets the threads past n return before the
// barrier. With n = 40 the second warp has lanes 8-31 exited while lanes
// 0-7 wait at __syncthreads: divergent threads in block.
extern "C" __global__ void early_return_in_part_of_a_warp(const float* in, float* out, int n) {
    __shared__ float staged[64];
    int t = threadIdx.x;
    if (t >= n) return;
    staged[t] = in[t];
    __syncthreads();
    out[t] = staged[n - 1 - t];
}
// Legal: whole warps return before the barrier (n a multiple of 32); the
// exited warps count as arrived, as on hardware.
extern "C" __global__ void early_return_of_whole_warps(const float* in, float* out, int n) {
    __shared__ float staged[64];
    int t = threadIdx.x;
    if ((t / 32) * 32 >= n) return;
    staged[t] = t < n ? in[t] : 0.0f;
    __syncthreads();
    if (t < n) out[t] = staged[n - 1 - t];
}

// Finding: a named barrier with a thread count that is not a multiple of 32.
extern "C" __global__ void named_barrier_count_not_warp_multiple(float* out) {
    asm volatile("bar.sync 1, 48;" ::: "memory");
    out[threadIdx.x] = 1.0f;
}
// Finding: warps 0 and 1 wait on barrier 1 for 64 threads, warp 1 says 32
// (launched with 64 threads).
extern "C" __global__ void named_barrier_mismatched_counts(float* out) {
    if (threadIdx.x < 32) {
        asm volatile("bar.sync 1, 64;" ::: "memory");
    } else {
        asm volatile("bar.sync 1, 32;" ::: "memory");
    }
    out[threadIdx.x] = 1.0f;
}
// Legal: a producer warp and a consumer warp meet at named barrier 1 with
// 64 threads while the third warp (96 threads launched) never uses it.
extern "C" __global__ void named_barrier_for_two_of_three_warps(const float* in, float* out) {
    __shared__ float staged[64];
    int t = threadIdx.x;
    if (t < 32) {
        staged[t] = in[t];
        staged[t + 32] = in[t + 32];
        asm volatile("bar.sync 1, 64;" ::: "memory");
    } else if (t < 64) {
        asm volatile("bar.sync 1, 64;" ::: "memory");
        out[t - 32] = staged[t - 32];
        out[t] = staged[t];
    }
}

// Finding: every lane executes __syncwarp with a mask naming lanes 0-15 only.
extern "C" __global__ void syncwarp_mask_excludes_caller(float* out) {
    __syncwarp(0x0000ffffu);
    out[threadIdx.x] = 1.0f;
}
// Finding: lanes 0-15 say 0x0000ffff, lanes 16-31 say the full warp, in one shuffle.
extern "C" __global__ void shuffle_members_disagree_on_mask(const float* in, float* out) {
    int lane = threadIdx.x % 32;
    unsigned mask = lane < 16 ? 0x0000ffffu : 0xffffffffu;
    out[threadIdx.x] = __shfl_sync(mask, in[threadIdx.x], 0, 16);
}
// Legal: each half names exactly itself and shuffles within itself.
extern "C" __global__ void shuffle_in_two_disjoint_halves(const float* in, float* out) {
    int lane = threadIdx.x % 32;
    unsigned mask = lane < 16 ? 0x0000ffffu : 0xffff0000u;
    out[threadIdx.x] = __shfl_sync(mask, in[threadIdx.x], 0, 16);
}
// Finding: a ballot over the full warp executed by lanes 0-15 only, while
// lanes 16-31 have returned.
extern "C" __global__ void ballot_full_mask_after_half_warp_exit(const float* in, unsigned* out) {
    int lane = threadIdx.x % 32;
    if (lane >= 16) return;
    unsigned b = __ballot_sync(0xffffffffu, in[threadIdx.x] > 0.0f);
    out[threadIdx.x] = b;
}
// Legal: the ballot's mask names the lanes still running.
extern "C" __global__ void ballot_of_the_lanes_left(const float* in, unsigned* out) {
    int lane = threadIdx.x % 32;
    if (lane >= 16) return;
    unsigned b = __ballot_sync(0x0000ffffu, in[threadIdx.x] > 0.0f);
    out[threadIdx.x] = b;
}
