// nvcuda::wmma (wmma.load / wmma.mma / wmma.store) on one warp: D = A B + C
// for each shape and input type, with leading dimensions wider than the
// matrices, from global memory and (wmma_bf16_through_shared) from shared.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

using namespace nvcuda;

template <int M, int N, int K, typename T, typename ALayout, typename BLayout, typename Acc>
__device__ void gemm(const T* a, int lda, const T* b, int ldb, const Acc* c, int ldc, Acc* d, int ldd, int d_row) {
    wmma::fragment<wmma::matrix_a, M, N, K, T, ALayout> fa;
    wmma::fragment<wmma::matrix_b, M, N, K, T, BLayout> fb;
    wmma::fragment<wmma::accumulator, M, N, K, Acc> fc;
    wmma::load_matrix_sync(fa, a, lda);
    wmma::load_matrix_sync(fb, b, ldb);
    wmma::load_matrix_sync(fc, c, ldc, wmma::mem_row_major);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(d, fc, ldd, d_row ? wmma::mem_row_major : wmma::mem_col_major);
}

#define GEMM(NAME, M, N, T, AL, BL, ACC)                                                                  \
    extern "C" __global__ void NAME(const T* a, int lda, const T* b, int ldb, const ACC* c, int ldc,    \
                                    ACC* d, int ldd, int d_row) {                                       \
        gemm<M, N, 16, T, wmma::AL, wmma::BL, ACC>(a, lda, b, ldb, c, ldc, d, ldd, d_row);               \
    }

GEMM(wmma_f16_m16n16_rc, 16, 16, __half, row_major, col_major, float)
GEMM(wmma_f16_m8n32_rc, 8, 32, __half, row_major, col_major, float)
GEMM(wmma_f16_m32n8_rc, 32, 8, __half, row_major, col_major, float)
GEMM(wmma_f16_m16n16_cr, 16, 16, __half, col_major, row_major, float)
GEMM(wmma_f16_m16n16_rc_f16acc, 16, 16, __half, row_major, col_major, __half)
GEMM(wmma_bf16_m16n16_rc, 16, 16, __nv_bfloat16, row_major, col_major, float)
GEMM(wmma_bf16_m8n32_rc, 8, 32, __nv_bfloat16, row_major, col_major, float)
GEMM(wmma_bf16_m32n8_rc, 32, 8, __nv_bfloat16, row_major, col_major, float)

// As candle's MoE WMMA kernels: A (row-major) and B (column-major) staged in
// shared memory, the accumulator filled with zeros, D stored to shared
// memory and copied out after a warp barrier. 16 x 16 x 16, bf16.
extern "C" __global__ void wmma_bf16_through_shared(const __nv_bfloat16* a, const __nv_bfloat16* b, float* d) {
    __shared__ __align__(32) __nv_bfloat16 a_sh[16 * 16];
    __shared__ __align__(32) __nv_bfloat16 b_sh[16 * 16];
    __shared__ __align__(32) float d_sh[16 * 16];
    for (int i = threadIdx.x; i < 256; i += 32) {
        a_sh[i] = a[i];
        b_sh[i] = b[i];
    }
    __syncwarp();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
    wmma::fill_fragment(fc, 0.0f);
    wmma::load_matrix_sync(fa, a_sh, 16);
    wmma::load_matrix_sync(fb, b_sh, 16);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(d_sh, fc, 16, wmma::mem_row_major);
    __syncwarp();
    for (int i = threadIdx.x; i < 256; i += 32) d[i] = d_sh[i];
}
