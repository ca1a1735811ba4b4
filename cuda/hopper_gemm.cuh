// The Hopper (sm_90a) GEMM both Hopper kernels run, forward_sm90a.cu and
// backward_dx_sm90a.cu:
//
//     out = round_T(s . (P . B) + X . W + bias[col] + y_in[row, col])
//
// with the virtual K of the mma.sync kernels: the adapter segment (P's
// rank-wide tile times B's) first, its f32 sum scaled by s, then the base
// segment (X times W) onto the same accumulator, each output rounded once;
// so the same formula, reduction order and determinism (no atomics, a fixed
// order per output element). X and P (the "A" operands of wgmma) are always
// K-major ([rows, reduction] row-major). W and B (the "B" operands) are
// either K-major too ([cols, reduction] row-major: the forward's W0 [N, K]
// and B [N, r]) or, with kMnMajorB, MN-major ([reduction, cols] row-major:
// dX's W0 [N, K] and A [r, K], reduced over N and r).
//
// Warp-specialised, one 128 x 256 output tile per CTA of three warpgroups
// (the wide tile reads 3/4 of the L2 bytes per output of a 128 x 128 one):
// - warpgroup 0, the producer (setmaxnreg.dec: it needs a few registers):
//   one thread walks the K-steps (64 long) and issues, per step, the TMA
//   tile loads of the step's two operands (X and W, or P and B for the
//   adapter steps) into a 4-stage shared-memory ring, waiting on the slot's
//   "empty" mbarrier and arming its "full" mbarrier with the step's
//   transaction bytes. A K-major W (or B) step is one 256 x 64 box; an
//   MN-major one is four 64 x 64 boxes (64 reduction rows of 64 output
//   columns: one 128-byte swizzle span each), side by side along the columns;
// - warpgroups 1 and 2, the consumers (setmaxnreg.inc), 64 rows each: wait
//   on "full", run four wgmma m64n256k16 (operands from shared memory,
//   128-byte swizzle, f32 accumulators; the B-transpose immediate set for an
//   MN-major B), wait for them, release the slot on "empty", and finally add
//   bias (and y_in) and store.
// Tails: TMA fills the parts of a box outside the tensor with zeros (and
// still counts its bytes), so ragged rows, columns and reductions, and the
// K-step past the rank, multiply zeros; the epilogue stores only rows < m
// and columns < n. The host encodes the four tensor maps and takes this path
// only where TMA can read the operands (16-byte aligned bases and row
// strides).
#pragma once

#include "dtype.cuh"
#include "hopper.cuh"
#include "hopper_params.h"

namespace fused_lora {
namespace hopper {

using namespace sm90;

constexpr int kTileM = LORA_HOPPER_TILE_M;
constexpr int kTileN = LORA_HOPPER_TILE_N;
constexpr int kTileK = LORA_HOPPER_TILE_K;
constexpr int kStages = LORA_HOPPER_STAGES;
constexpr int kConsumers = 2;                            // warpgroups, 64 rows each
constexpr uint32_t kTileABytes = kTileM * kTileK * 2;    // X or P
constexpr uint32_t kTileBBytes = kTileN * kTileK * 2;    // W or B
constexpr uint32_t kStepBytes = kTileABytes + kTileBBytes;
constexpr int kAcc = kTileN / 2;                         // f32 accumulators per consumer thread
// An MN-major B step: boxes of kTileK reduction rows by kSpan columns.
constexpr int kSpan = LORA_HOPPER_MN_BOX;                // 16-bit elements per 128-byte swizzled row
constexpr uint32_t kSpanBoxBytes = kTileK * kSpan * 2;
static_assert(LORA_HOPPER_THREADS == 128 * (1 + kConsumers), "one producer and the consumer warpgroups");
static_assert(kTileK * 2 == 128 && kSpan * 2 == 128, "a K-step row (or an MN-major box row) is one swizzle span");
static_assert(kTileN == 256, "the wgmma wrappers are m64n256k16");
static_assert(kStages * kStepBytes + 1024 + 8 * 2 * kStages <= LORA_HOPPER_SHARED_BYTES, "the launch reserves enough");

template <typename T, bool kMnMajorB>
__device__ __forceinline__ void wgmma_step(float (&acc)[kAcc], uint64_t desc_a, uint64_t desc_b);
template <>
__device__ __forceinline__ void wgmma_step<__nv_bfloat16, false>(float (&acc)[kAcc], uint64_t desc_a, uint64_t desc_b) {
    wgmma_m64n256k16_bf16<0>(acc, desc_a, desc_b, 1);
}
template <>
__device__ __forceinline__ void wgmma_step<__nv_bfloat16, true>(float (&acc)[kAcc], uint64_t desc_a, uint64_t desc_b) {
    wgmma_m64n256k16_bf16<1>(acc, desc_a, desc_b, 1);
}
template <>
__device__ __forceinline__ void wgmma_step<__half, false>(float (&acc)[kAcc], uint64_t desc_a, uint64_t desc_b) {
    wgmma_m64n256k16_f16<0>(acc, desc_a, desc_b, 1);
}
template <>
__device__ __forceinline__ void wgmma_step<__half, true>(float (&acc)[kAcc], uint64_t desc_a, uint64_t desc_b) {
    wgmma_m64n256k16_f16<1>(acc, desc_a, desc_b, 1);
}

// The descriptor of the B operand's k16 slice `kk` of a step at `b`.
template <bool kMnMajorB> __device__ __forceinline__ uint64_t b_descriptor(uint32_t b, int kk) {
    if constexpr (kMnMajorB) {
        // Rows are the reduction: slice kk starts 16 rows (2048 bytes) further
        // into every box; the boxes (64-column atoms) lie kSpanBoxBytes apart.
        return sw128_mn_major_descriptor(b + kk * 16 * 128, kSpanBoxBytes);
    } else {
        // Each k16 slice is 32 bytes further along the swizzled rows.
        return sw128_descriptor(b + kk * 32);
    }
}

// The TMA loads of one operand tile of B (or W) for the K-step at `k0`.
template <bool kMnMajorB>
__device__ __forceinline__ void load_b(uint32_t dst, const LoraTensorMap* map, int k0, int n0, uint32_t bar) {
    if constexpr (kMnMajorB) {
#pragma unroll
        for (int box = 0; box < kTileN / kSpan; ++box) {
            tma_load_2d(dst + box * kSpanBoxBytes, map, n0 + box * kSpan, k0, bar);
        }
    } else {
        tma_load_2d(dst, map, k0, n0, bar);
    }
}

// out[row, col] = round(acc + bias[col] + y_in[row, col]), in the mma.sync
// epilogue's order (tiles.cuh, store_output).
template <typename T>
__device__ __forceinline__ void store_one(const LoraHopperGemmParams& p, int row, int col, float v) {
    if (p.bias) v += to_f32(reinterpret_cast<const T*>(p.bias)[col]);
    const long long at = static_cast<long long>(row) * p.n + col;
    if (p.y_in) v += to_f32(reinterpret_cast<const T*>(p.y_in)[at]);
    reinterpret_cast<T*>(p.out)[at] = from_f32<T>(v);
}

template <typename T, bool kMnMajorB> __device__ void gemm(const LoraHopperGemmParams& p) {
    extern __shared__ __align__(1024) unsigned char dynamic_shared[];
    // The 128-byte swizzle's atoms are 1024 bytes: align the ring to them.
    const uint32_t ring = (smem_address(dynamic_shared) + 1023) & ~1023u;
    const uint32_t tiles_a = ring;
    const uint32_t tiles_b = ring + kStages * kTileABytes;
    const uint32_t full = ring + kStages * kStepBytes;  // kStages barriers of 8 bytes
    const uint32_t empty = full + 8 * kStages;

    const int m0 = blockIdx.y * kTileM;
    const int n0 = blockIdx.x * kTileN;
    const int warpgroup = threadIdx.x / 128;
    const int adapter_steps = p.ad_k > 0 ? (p.ad_k + kTileK - 1) / kTileK : 0;
    const int steps = adapter_steps + (p.k + kTileK - 1) / kTileK;

    if (threadIdx.x == 0) {
        for (int s = 0; s < kStages; ++s) {
            mbarrier_init(full + 8 * s, 1);                   // the producer's arrive.expect_tx
            mbarrier_init(empty + 8 * s, kConsumers * 4);     // one arrival per consumer warp
        }
        fence_barrier_init();
    }
    __syncthreads();

    if (warpgroup == 0) {
        setmaxnreg_dec<40>();
        if (threadIdx.x != 0) return;
        for (int step = 0; step < steps; ++step) {
            const int slot = step % kStages;
            const uint32_t phase = (step / kStages) & 1;
            // A fresh barrier counts as having completed the phase before
            // its first: the first pass over the ring does not wait.
            mbarrier_wait(empty + 8 * slot, phase ^ 1);
            mbarrier_arrive_expect_tx(full + 8 * slot, kStepBytes);
            const uint32_t dst_a = tiles_a + slot * kTileABytes;
            const uint32_t dst_b = tiles_b + slot * kTileBBytes;
            if (step < adapter_steps) {
                const int k0 = step * kTileK;
                tma_load_2d(dst_a, &p.p_map, k0, m0, full + 8 * slot);
                load_b<kMnMajorB>(dst_b, &p.b_map, k0, n0, full + 8 * slot);
            } else {
                const int k0 = (step - adapter_steps) * kTileK;
                tma_load_2d(dst_a, &p.x_map, k0, m0, full + 8 * slot);
                load_b<kMnMajorB>(dst_b, &p.w_map, k0, n0, full + 8 * slot);
            }
        }
        return;
    }

    setmaxnreg_inc<232>();
    const int consumer = warpgroup - 1;
    const int lane = threadIdx.x % 32;
    const int warp = (threadIdx.x / 32) % 4;
    float acc[kAcc];
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[i] = 0.0f;

    for (int step = 0; step < steps; ++step) {
        const int slot = step % kStages;
        mbarrier_wait(full + 8 * slot, (step / kStages) & 1);
        const uint32_t a = tiles_a + slot * kTileABytes + consumer * 64 * 128;
        const uint32_t b = tiles_b + slot * kTileBBytes;
        fence_operands(acc);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kTileK / 16; ++kk) {
            // Each k16 slice of A is 32 bytes further along the swizzled rows.
            wgmma_step<T, kMnMajorB>(acc, sw128_descriptor(a + kk * 32), b_descriptor<kMnMajorB>(b, kk));
        }
        wgmma_commit();
        wgmma_wait<0>();
        fence_operands(acc);
        // Every warp's share of the step has been read: the slot is free.
        if (lane == 0) mbarrier_arrive(empty + 8 * slot);
        if (step + 1 == adapter_steps) {
#pragma unroll
            for (int i = 0; i < kAcc; ++i) acc[i] *= p.scale;
        }
    }

    // The m64nNk16 accumulator layout: register 4i + 2h + j holds row
    // 16 warp + lane / 4 + 8 h, column 8 i + 2 (lane % 4) + j.
    const int row0 = m0 + consumer * 64 + warp * 16 + lane / 4;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int row = row0 + 8 * h;
        if (row >= p.m) continue;
#pragma unroll
        for (int i = 0; i < kAcc / 4; ++i) {
            const int col = n0 + 8 * i + 2 * (lane % 4);
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                if (col + j < p.n) store_one<T>(p, row, col + j, acc[4 * i + 2 * h + j]);
            }
        }
    }
}

}  // namespace hopper
}  // namespace fused_lora
