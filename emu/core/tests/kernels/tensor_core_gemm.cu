// A hand-written tensor-core GEMM in the style of an Ampere mainloop, written
// with inline PTX so the exact instructions are known: 16-byte cp.async into a
// 3-stage shared-memory ring (cp.async.commit_group / wait_group),
// ldmatrix.x4 for A, ldmatrix.x4.trans for B, mma.sync m16n8k16 with f32
// accumulation on bf16 or f16 inputs.
//
// C[M,N] (f32) = A[M,K] * B[K,N], A and B row-major 16-bit.
// M, N multiples of 64 and K a multiple of 32. Grid (N/64, M/64), block 128
// (4 warps in 2x2, each a 32x32 warp tile of 2x4 m16n8 tiles).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>

namespace {

constexpr int BLOCK_M = 64;
constexpr int BLOCK_N = 64;
constexpr int BLOCK_K = 32;
constexpr int STAGES = 3;
constexpr int THREADS = 128;
static_assert(BLOCK_K % 16 == 0, "BLOCK_K must be a multiple of 16 for m16n8k16");
static_assert(BLOCK_M * BLOCK_K / 8 == 2 * THREADS, "each thread copies two 16-byte chunks of A");
static_assert(BLOCK_K * BLOCK_N / 8 == 2 * THREADS, "each thread copies two 16-byte chunks of B");

__device__ __forceinline__ uint32_t shared_address(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void copy_async_16(void* shared_dst, const void* global_src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_address(shared_dst)),
                 "l"(global_src));
}

__device__ __forceinline__ void commit_group() { asm volatile("cp.async.commit_group;\n" ::); }

template <int PENDING>
__device__ __forceinline__ void wait_group() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING));
}

__device__ __forceinline__ void load_matrix_x4(uint32_t (&r)[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(row)));
}

__device__ __forceinline__ void load_matrix_x4_trans(uint32_t (&r)[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(row)));
}

template <typename T>
struct Mma;

template <>
struct Mma<__nv_bfloat16> {
    __device__ __forceinline__ static void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
            "{%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

template <>
struct Mma<__half> {
    __device__ __forceinline__ static void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
            "{%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

template <typename T>
struct StageTiles {
    T a[STAGES][BLOCK_M][BLOCK_K];  // rows of 64 bytes: every ldmatrix row 16-byte aligned
    T b[STAGES][BLOCK_K][BLOCK_N];
};

// Issues the copies of k-tile `k_tile` into ring slot `stage`.
template <typename T>
__device__ __forceinline__ void load_stage(StageTiles<T>& tiles, int stage, int k_tile,
                                           const T* a, const T* b, int n, int k, int block_row,
                                           int block_col) {
    for (int chunk = threadIdx.x; chunk < BLOCK_M * BLOCK_K / 8; chunk += THREADS) {
        int row = chunk / (BLOCK_K / 8);
        int col = chunk % (BLOCK_K / 8) * 8;
        copy_async_16(&tiles.a[stage][row][col],
                      a + size_t(block_row + row) * k + k_tile * BLOCK_K + col);
    }
    for (int chunk = threadIdx.x; chunk < BLOCK_K * BLOCK_N / 8; chunk += THREADS) {
        int row = chunk / (BLOCK_N / 8);
        int col = chunk % (BLOCK_N / 8) * 8;
        copy_async_16(&tiles.b[stage][row][col],
                      b + size_t(k_tile * BLOCK_K + row) * n + block_col + col);
    }
}

template <typename T>
__device__ void gemm_body(int m, int n, int k, const T* a, const T* b, float* c) {
    __shared__ __align__(128) StageTiles<T> tiles;
    const int block_row = blockIdx.y * BLOCK_M;
    const int block_col = blockIdx.x * BLOCK_N;
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int warp_row = (warp / 2) * 32;
    const int warp_col = (warp % 2) * 32;
    const int k_tiles = k / BLOCK_K;

    float acc[2][4][4] = {};

    // Prologue: fill STAGES - 1 slots. One group is committed per slot even
    // when empty, so that wait_group<STAGES - 2> always means "the oldest slot landed".
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < k_tiles) load_stage(tiles, s, s, a, b, n, k, block_row, block_col);
        commit_group();
    }

    for (int kt = 0; kt < k_tiles; ++kt) {
        wait_group<STAGES - 2>();
        __syncthreads();  // the slot is visible to all, and the slot refilled below is drained

        int next = kt + STAGES - 1;
        if (next < k_tiles) load_stage(tiles, next % STAGES, next, a, b, n, k, block_row, block_col);
        commit_group();

        const int stage = kt % STAGES;
        for (int kk = 0; kk < BLOCK_K; kk += 16) {
            // ldmatrix.x4: lanes 0-15 address rows 0-15 at column 0, lanes 16-31
            // rows 0-15 at column 8, giving the a0..a3 / b0..b3 fragment order.
            uint32_t a_frag[2][4];
            for (int mi = 0; mi < 2; ++mi) {
                load_matrix_x4(a_frag[mi],
                               &tiles.a[stage][warp_row + mi * 16 + lane % 16][kk + lane / 16 * 8]);
            }
            uint32_t b_frag[2][4];  // [pair of n8 tiles]: {b0,b1} of tile 2p, {b0,b1} of tile 2p+1
            for (int p = 0; p < 2; ++p) {
                load_matrix_x4_trans(b_frag[p],
                                     &tiles.b[stage][kk + lane % 16][warp_col + p * 16 + lane / 16 * 8]);
            }
            for (int mi = 0; mi < 2; ++mi) {
                for (int ni = 0; ni < 4; ++ni) {
                    const uint32_t* pair = b_frag[ni / 2];
                    Mma<T>::run(acc[mi][ni], a_frag[mi], pair[(ni % 2) * 2], pair[(ni % 2) * 2 + 1]);
                }
            }
        }
    }
    wait_group<0>();

    // Accumulator fragment: c0,c1 at (row lane/4, cols 2*(lane%4) + {0,1}); c2,c3 8 rows below.
    for (int mi = 0; mi < 2; ++mi) {
        for (int ni = 0; ni < 4; ++ni) {
            int row = block_row + warp_row + mi * 16 + lane / 4;
            int col = block_col + warp_col + ni * 8 + (lane % 4) * 2;
            c[size_t(row) * n + col] = acc[mi][ni][0];
            c[size_t(row) * n + col + 1] = acc[mi][ni][1];
            c[size_t(row + 8) * n + col] = acc[mi][ni][2];
            c[size_t(row + 8) * n + col + 1] = acc[mi][ni][3];
        }
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(THREADS)
    tc_gemm_bf16(int m, int n, int k, const __nv_bfloat16* a, const __nv_bfloat16* b, float* c) {
    gemm_body(m, n, k, a, b, c);
}

extern "C" __global__ void __launch_bounds__(THREADS)
    tc_gemm_f16(int m, int n, int k, const __half* a, const __half* b, float* c) {
    gemm_body(m, n, k, a, b, c);
}
