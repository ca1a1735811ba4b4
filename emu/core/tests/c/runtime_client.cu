// A CUDA C++ program as nvcc users write it: `<<<>>>` launches (a template
// instantiated twice, a kernel on a created stream and one on the default
// stream, dynamic shared memory opted in with cudaFuncSetAttribute), a
// __constant__ table, cudaLaunchKernel by hand, and the runtime's error
// reporting. Built by emu/core/tests/cudart.rs with nvcc -arch=sm_80 (with
// and without --default-stream per-thread), linked against the emulated
// libcudart.so / libcuda.so, and run on the emulator with every check on.
// It checks its own answers and prints one PASS line per check.

#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#define CHECK(call)                                                                                    \
    do {                                                                                               \
        cudaError_t status_ = (call);                                                                  \
        if (status_ != cudaSuccess) {                                                                  \
            printf("FAIL %s:%d: %s = %d (%s)\n", __FILE__, __LINE__, #call, (int)status_,              \
                   cudaGetErrorName(status_));                                                         \
            exit(1);                                                                                   \
        }                                                                                              \
    } while (0)

#define EXPECT(condition, what)                                                                        \
    do {                                                                                               \
        if (!(condition)) {                                                                            \
            printf("FAIL %s: %s\n", what, #condition);                                                 \
            exit(1);                                                                                   \
        }                                                                                              \
    } while (0)

__constant__ int offsets[4] = {3, 1, 4, 1};

template <typename T>
__global__ void axpb(T* y, const T* x, T a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + T(offsets[i % 4]);
}

// A block-wide sum through dynamic shared memory, one block per row.
__global__ void row_sums(float* sums, const float* rows, int width) {
    extern __shared__ float partial[];
    const float* row = rows + blockIdx.x * width;
    float s = 0.f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) s += row[i];
    partial[threadIdx.x] = s;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) sums[blockIdx.x] = partial[0];
}

__global__ void write_past_end(int* out, int n) { out[n + threadIdx.x] = 1; }

#ifdef WITH_SASS_ONLY
void launch_sass_only(int* out, cudaStream_t stream);
#endif

int main() {
    const int n = 1000;
    int count = 0;
    CHECK(cudaGetDeviceCount(&count));
    EXPECT(count == 1, "device count");
    CHECK(cudaSetDevice(0));
    int major = 0;
    CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
    EXPECT(major >= 8, "compute capability");
    printf("PASS device\n");

    // The template at float on a created stream, at int on the default one.
    float hx[n], hy[n];
    int ix[n], iy[n];
    for (int i = 0; i < n; ++i) {
        hx[i] = 0.25f * (float)((i * 37) % 101) - 7.f;
        ix[i] = (i * 53) % 211 - 100;
    }
    float *dx, *dy;
    int *dix, *diy;
    CHECK(cudaMalloc((void**)&dx, n * sizeof(float)));
    CHECK(cudaMalloc((void**)&dy, n * sizeof(float)));
    CHECK(cudaMalloc((void**)&dix, n * sizeof(int)));
    CHECK(cudaMalloc((void**)&diy, n * sizeof(int)));
    cudaStream_t stream;
    CHECK(cudaStreamCreate(&stream));
    CHECK(cudaMemcpyAsync(dx, hx, n * sizeof(float), cudaMemcpyHostToDevice, stream));
    CHECK(cudaMemsetAsync(dy, 0xff, n * sizeof(float), stream));  // NaN, so an unwritten element fails
    axpb<float><<<(n + 127) / 128, 128, 0, stream>>>(dy, dx, 1.5f, n);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpyAsync(hy, dy, n * sizeof(float), cudaMemcpyDeviceToHost, stream));
    CHECK(cudaStreamSynchronize(stream));
    const int table[4] = {3, 1, 4, 1};
    for (int i = 0; i < n; ++i) EXPECT(hy[i] == 1.5f * hx[i] + (float)table[i % 4], "axpb<float>");
    printf("PASS template_on_stream\n");

    CHECK(cudaMemcpy(dix, ix, n * sizeof(int), cudaMemcpyHostToDevice));
    axpb<int><<<(n + 255) / 256, 256>>>(diy, dix, -3, n);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaMemcpy(iy, diy, n * sizeof(int), cudaMemcpyDefault));
    for (int i = 0; i < n; ++i) EXPECT(iy[i] == -3 * ix[i] + table[i % 4], "axpb<int>");
    printf("PASS template_default_stream\n");

    // 64 KiB of dynamic shared memory: above the 48 KiB a launch gets
    // without the function's opt-in (the kernel uses the first 1 KiB).
    const int rows = 6, width = 777, threads = 256;
    const size_t shared = 64 * 1024;
    float hrows[rows * width], hsums[rows], *drows, *dsums;
    for (int i = 0; i < rows * width; ++i) hrows[i] = (float)((i * 29) % 17) - 8.f;
    CHECK(cudaMalloc((void**)&drows, sizeof hrows));
    CHECK(cudaMalloc((void**)&dsums, sizeof hsums));
    CHECK(cudaMemcpy(drows, hrows, sizeof hrows, cudaMemcpyHostToDevice));
    row_sums<<<rows, threads, shared, stream>>>(dsums, drows, width);
    EXPECT(cudaGetLastError() != cudaSuccess, "64 KiB without the opt-in is refused");
    EXPECT(cudaGetLastError() == cudaSuccess, "cudaGetLastError resets");
    CHECK(cudaFuncSetAttribute(row_sums, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared));
    cudaFuncAttributes attributes;
    CHECK(cudaFuncGetAttributes(&attributes, row_sums));
    EXPECT(attributes.maxDynamicSharedSizeBytes == (int)shared, "the opt-in is the function's attribute");
    EXPECT(attributes.maxThreadsPerBlock >= threads, "max threads per block");
    int blocks = 0;
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, row_sums, threads, shared));
    EXPECT(blocks >= 1, "occupancy");
    row_sums<<<rows, threads, shared, stream>>>(dsums, drows, width);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpyAsync(hsums, dsums, sizeof hsums, cudaMemcpyDeviceToHost, stream));
    CHECK(cudaStreamSynchronize(stream));
    for (int r = 0; r < rows; ++r) {
        float expected = 0.f;
        for (int i = 0; i < width; ++i) expected += hrows[r * width + i];
        EXPECT(hsums[r] == expected, "row sums (small integers: exact in any order)");
    }
    printf("PASS dynamic_shared_opt_in\n");

    // cudaLaunchKernel by hand, as libraries do.
    float a = 2.f;
    int m = 100;
    void* args[] = {&dy, &dx, &a, &m};
    CHECK(cudaLaunchKernel((const void*)axpb<float>, dim3(1), dim3(128), args, 0, stream));
    CHECK(cudaMemcpyAsync(hy, dy, m * sizeof(float), cudaMemcpyDeviceToHost, stream));
    CHECK(cudaStreamSynchronize(stream));
    for (int i = 0; i < m; ++i) EXPECT(hy[i] == 2.f * hx[i] + (float)table[i % 4], "cudaLaunchKernel");
    printf("PASS cudaLaunchKernel\n");

    // Dimensions a device refuses, and a host pointer that is no kernel.
    axpb<float><<<1, 2048, 0, stream>>>(dy, dx, 1.f, n);
    EXPECT(cudaPeekAtLastError() == cudaErrorInvalidConfiguration, "2048 threads");
    EXPECT(cudaGetLastError() == cudaErrorInvalidConfiguration, "2048 threads");
    EXPECT(cudaLaunchKernel((const void*)&main, dim3(1), dim3(1), args, 0, stream) ==
               cudaErrorInvalidDeviceFunction, "not a kernel");
    cudaGetLastError();
    printf("PASS launch_errors\n");

#ifdef WITH_SASS_ONLY
    // An object compiled for sm_80 machine code only: nothing to run here.
    launch_sass_only(diy, stream);
    EXPECT(cudaGetLastError() == cudaErrorNoKernelImageForDevice, "machine code only");
    printf("PASS sass_only\n");
#endif

    CHECK(cudaStreamDestroy(stream));
    CHECK(cudaFree(dx));
    CHECK(cudaFree(dy));
    CHECK(cudaFree(dix));
    CHECK(cudaFree(drows));
    CHECK(cudaFree(dsums));

    // memcheck sees runtime launches too: the finding faults the context.
    write_past_end<<<1, 32>>>(diy, n);
    cudaError_t found = cudaDeviceSynchronize();
    EXPECT(found == cudaErrorIllegalAddress, "the out-of-bounds write is a finding");
    printf("PASS memcheck\nALL PASSED\n");
    return 0;
}
