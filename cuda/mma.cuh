// Thin wrappers over the sm_80 instructions the tensor-core kernels use:
// cp.async (global -> shared without a register round trip), ldmatrix
// (shared -> mma fragments) and mma.sync m16n8k16 with f32 accumulation.
#pragma once

#include <stdint.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace fused_lora {

__device__ __forceinline__ uint32_t shared_address(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, bypassing L1 (.cg): the tiles are reused from
// shared memory, not from L1. Both addresses must be 16-byte aligned.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_address(smem)),
                 "l"(__cvta_generic_to_global(gmem)));
}

// 16 bytes to shared address `smem`, of which the first `src_bytes` (0 or 16)
// come from the global-space address `gmem` and the rest are zeros: a
// predicated copy without a branch. With src_bytes 0 the source is never read.
__device__ __forceinline__ void cp_async_16_zfill(uint32_t smem, uint64_t gmem, uint32_t src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_bytes));
}

// The same at `smem` + kSmemOffset and `gmem` + kGmemOffset bytes, both
// offsets immediates of the instruction (no address arithmetic of their own).
template <int kSmemOffset, int kGmemOffset>
__device__ __forceinline__ void cp_async_16_zfill_at(uint32_t smem, uint64_t gmem, uint32_t src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0+%3], [%1+%4], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_bytes),
                 "n"(kSmemOffset), "n"(kGmemOffset));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

// Waits until at most N of this thread's committed groups are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Four 8x8 b16 matrices; lane i supplies the address of row i % 8 of matrix i / 8.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(smem)));
}

// The same from shared-space address `smem` + kOffset bytes, the offset an
// immediate of the instruction (no address arithmetic of its own).
template <int kOffset = 0> __device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t smem) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4+%5];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem), "n"(kOffset));
}

// The same, each 8x8 matrix transposed on the way: lane i addresses row
// i % 8 of matrix i / 8 as stored, and receives the fragment of its
// transpose. Loads mma fragments from tiles stored reduction-major ([k][m]
// or [k][n], 8 contiguous m or n per 16-byte row).
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(smem)));
}

template <int kOffset = 0> __device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t smem) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4+%5];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem), "n"(kOffset));
}

// x, as a value the compiler cannot recompute: per-thread offsets set up once
// stay in registers instead of being rebuilt from threadIdx in every
// iteration of a main loop.
__device__ __forceinline__ uint32_t opaque(uint32_t x) {
    uint32_t y;
    asm volatile("mov.b32 %0, %1;\n" : "=r"(y) : "r"(x));
    return y;
}

// Calls f(Index<0>()), ..., f(Index<N - 1>()): a loop whose index is a
// constant expression (an instruction's immediate operand).
template <int I> struct Index {
    static constexpr int value = I;
};
template <int N, int I = 0, typename F> __device__ __forceinline__ void static_for(F&& f) {
    if constexpr (I < N) {
        f(Index<I>());
        static_for<N, I + 1>(f);
    }
}

// d = a * b + d for one 16x8x16 step; a row-major 16x16, b "col" 16x8 (stored
// n-major, k contiguous: exactly a row-major [n, k] weight tile).
template <typename T> struct Mma;

template <> struct Mma<__half> {
    static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

template <> struct Mma<__nv_bfloat16> {
    static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

}  // namespace fused_lora
