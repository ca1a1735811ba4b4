/* Linked with -lcublas -lcurand -lcuda found through LIBRARY_PATH, as
 * cudarc's `dynamic-linking` links them: one SGEMM and one uniform fill on
 * the emulated device, checked here. Prints PASS lines and ALL PASSED. The
 * toolkit's cuBLAS and cuRAND headers are not needed: the few prototypes
 * used are declared below, as in cublas_api.h and curand.h. */
#include <cuda.h>
#include <math.h>
#include <stdio.h>

typedef void *cublasHandle_t;
int cublasCreate_v2(cublasHandle_t *handle);
int cublasDestroy_v2(cublasHandle_t handle);
int cublasSgemm_v2(cublasHandle_t handle, int transa, int transb, int m, int n, int k, const float *alpha,
                   const float *a, int lda, const float *b, int ldb, const float *beta, float *c, int ldc);
typedef void *curandGenerator_t;
int curandCreateGenerator(curandGenerator_t *generator, int rng_type);
int curandSetPseudoRandomGeneratorSeed(curandGenerator_t generator, unsigned long long seed);
int curandGenerateUniform(curandGenerator_t generator, float *output, size_t n);
int curandDestroyGenerator(curandGenerator_t generator);

#define CHECK(call)                                                           \
    do {                                                                      \
        int status_ = (int)(call);                                            \
        if (status_ != 0) {                                                   \
            printf("FAIL %s = %d (line %d)\n", #call, status_, __LINE__);     \
            return 1;                                                         \
        }                                                                     \
    } while (0)

int main(void) {
    CUcontext context;
    CHECK(cuInit(0));
    CHECK(cuDevicePrimaryCtxRetain(&context, 0));
    CHECK(cuCtxSetCurrent(context));

    /* C = A * B with A = [1 2; 3 4], B = [5 6; 7 8] (column-major). */
    float a[4] = {1, 3, 2, 4}, b[4] = {5, 7, 6, 8}, c[4] = {0}, alpha = 1, beta = 0;
    CUdeviceptr da, db, dc;
    CHECK(cuMemAlloc(&da, sizeof a));
    CHECK(cuMemAlloc(&db, sizeof b));
    CHECK(cuMemAlloc(&dc, sizeof c));
    CHECK(cuMemcpyHtoD(da, a, sizeof a));
    CHECK(cuMemcpyHtoD(db, b, sizeof b));
    cublasHandle_t blas;
    CHECK(cublasCreate_v2(&blas));
    CHECK(cublasSgemm_v2(blas, 0, 0, 2, 2, 2, &alpha, (const float *)da, 2, (const float *)db, 2, &beta,
                         (float *)dc, 2));
    CHECK(cuMemcpyDtoH(c, dc, sizeof c));
    if (c[0] != 19 || c[1] != 43 || c[2] != 22 || c[3] != 50) {
        printf("FAIL sgemm: %g %g %g %g\n", c[0], c[1], c[2], c[3]);
        return 1;
    }
    CHECK(cublasDestroy_v2(blas));
    printf("PASS sgemm\n");

    curandGenerator_t generator;
    float uniform[64];
    CUdeviceptr du;
    CHECK(cuMemAlloc(&du, sizeof uniform));
    CHECK(curandCreateGenerator(&generator, 100));
    CHECK(curandSetPseudoRandomGeneratorSeed(generator, 7));
    CHECK(curandGenerateUniform(generator, (float *)du, 64));
    CHECK(cuMemcpyDtoH(uniform, du, sizeof uniform));
    for (int i = 0; i < 64; i++) {
        if (!(uniform[i] > 0.0f && uniform[i] <= 1.0f)) {
            printf("FAIL uniform[%d] = %g\n", i, uniform[i]);
            return 1;
        }
    }
    CHECK(curandDestroyGenerator(generator));
    printf("PASS uniform\n");
    printf("ALL PASSED\n");
    return 0;
}
