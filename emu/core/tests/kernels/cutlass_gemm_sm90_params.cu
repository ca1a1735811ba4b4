// Host program for cutlass_gemm_sm90.cu: builds the kernel's Params exactly
// as cutlass::gemm::device::GemmUniversalAdapter::initialize does (through
// the kernel's own `can_implement` and `to_underlying_arguments`), for device
// buffers that already exist, and prints what a driver-API launch needs.
// The Params hold TMA descriptors that `to_underlying_arguments` makes with
// the driver's cuTensorMapEncodeTiled: this program calls it directly
// (CUTLASS_ENABLE_DIRECT_CUDA_DRIVER_CALL) and is linked against the driver
// the kernel will run on, so the descriptors are in that driver's encoding.
// Of CUDA itself it only sets up the driver's primary context; CUTLASS's __device__ variables still need
// the static runtime's registration symbols, hence `-cudart static`.
//
// Build: nvcc -std=c++17 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -cudart static \
//             -DCUTLASS_ENABLE_DIRECT_CUDA_DRIVER_CALL=1 -L$FUSED_LORA_CUDA_ROOT/lib \
//             -I$FUSED_LORA_CUTLASS_INCLUDE cutlass_gemm_sm90_params.cu -L<driver dir> -lcuda -o cutlass_gemm_sm90_params
// Usage: cutlass_gemm_sm90_params M N K A B D cooperative|warpspecialized SM_COUNT
//   (A [M,K], B [N,K], D [M,N]: device addresses, hex or decimal; SM_COUNT: the
//   multiprocessor count the persistent tile scheduler sizes its grid by)
//   computes D = A * B^T (alpha 1, beta 0; D also serves as the unread C).
// Output, one item per line:
//   grid X Y Z
//   block X Y Z
//   cluster X Y Z
//   shared_bytes N
//   params_bytes N
//   params <hex of the Params struct, byte by byte>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include <cuda.h>

#include "cutlass_gemm_sm90.h"

static uint64_t parse_u64(const char* text) { return std::strtoull(text, nullptr, 0); }

// The packed stride of a rows x cols operand whose second mode is contiguous
// (CUTLASS's `make_cute_packed_stride` for Stride<int64_t, _1, int64_t>, which
// lives in its tools/ tree, not in the installed headers).
template <class Stride>
static Stride packed_stride(int rows, int cols) {
    static_assert(cute::is_static<cute::tuple_element_t<1, Stride>>::value, "unit stride in the second mode");
    Stride stride{};
    cute::get<0>(stride) = int64_t(cols);
    cute::get<2>(stride) = int64_t(rows) * cols;
    return stride;
}

template <class Kernel>
static int emit(int m, int n, int k, int sm_count, sm90_gemm::ElementA* a, sm90_gemm::ElementB* b, float* d) {
    auto stride_a = packed_stride<typename Kernel::StrideA>(m, k);  // A [M, K]
    auto stride_b = packed_stride<typename Kernel::StrideB>(n, k);  // B [N, K]
    auto stride_c = packed_stride<typename Kernel::StrideC>(m, n);  // C, D [M, N]
    auto stride_d = packed_stride<typename Kernel::StrideD>(m, n);

    cutlass::KernelHardwareInfo hw_info;
    hw_info.device_id = 0;
    hw_info.sm_count = sm_count;

    typename Kernel::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                    {m, n, k, 1},
                                    {a, stride_a, b, stride_b},
                                    {{1.0f, 0.0f}, d, stride_c, d, stride_d},
                                    hw_info};
    if (!Kernel::can_implement(args)) {
        std::fprintf(stderr, "CUTLASS cannot implement M=%d N=%d K=%d (alignment)\n", m, n, k);
        return 1;
    }
    // GemmUniversalAdapter hands the kernel a workspace of this size; these
    // configurations (no stream-K, no split reduction) need none.
    if (Kernel::get_workspace_size(args) != 0) {
        std::fprintf(stderr, "unexpected workspace of %zu bytes\n", Kernel::get_workspace_size(args));
        return 1;
    }
    // Copied into zeroed storage so that padding bytes print as zero.
    using Params = typename Kernel::Params;
    alignas(Params) static unsigned char storage[sizeof(Params)];
    std::memset(storage, 0, sizeof(storage));
    Params computed = Kernel::to_underlying_arguments(args, nullptr);
    std::memcpy(storage, static_cast<void*>(&computed), sizeof(Params));

    dim3 grid = Kernel::get_grid_shape(computed);
    dim3 block = Kernel::get_block_shape();
    std::printf("grid %u %u %u\n", grid.x, grid.y, grid.z);
    std::printf("block %u %u %u\n", block.x, block.y, block.z);
    std::printf("cluster %d %d %d\n", int(cute::size<0>(sm90_gemm::ClusterShape{})),
                int(cute::size<1>(sm90_gemm::ClusterShape{})), int(cute::size<2>(sm90_gemm::ClusterShape{})));
    std::printf("shared_bytes %d\n", int(Kernel::SharedStorageSize));
    std::printf("params_bytes %zu\n", sizeof(Params));
    std::printf("params ");
    for (unsigned char byte : storage) std::printf("%02x", byte);
    std::printf("\n");
    return 0;
}

int main(int argc, char** argv) {
    if (argc != 9) {
        std::fprintf(stderr, "usage: %s M N K A B D cooperative|warpspecialized SM_COUNT\n", argv[0]);
        return 2;
    }
    const int m = int(parse_u64(argv[1]));
    const int n = int(parse_u64(argv[2]));
    const int k = int(parse_u64(argv[3]));
    auto* a = reinterpret_cast<sm90_gemm::ElementA*>(parse_u64(argv[4]));
    auto* b = reinterpret_cast<sm90_gemm::ElementB*>(parse_u64(argv[5]));
    auto* d = reinterpret_cast<float*>(parse_u64(argv[6]));
    const int sm_count = int(parse_u64(argv[8]));
    // An application reaching GemmUniversalAdapter has initialised the
    // driver and made device 0's primary context current (the runtime does
    // both); cuTensorMapEncodeTiled needs a current context.
    CUdevice device;
    CUcontext context;
    CUresult status = cuInit(0);
    if (status == CUDA_SUCCESS) status = cuDeviceGet(&device, 0);
    if (status == CUDA_SUCCESS) status = cuDevicePrimaryCtxRetain(&context, device);
    if (status == CUDA_SUCCESS) status = cuCtxSetCurrent(context);
    if (status != CUDA_SUCCESS) {
        std::fprintf(stderr, "driver initialisation failed: %d\n", int(status));
        return 1;
    }
    if (std::strcmp(argv[7], "cooperative") == 0) return emit<CutlassSm90Cooperative>(m, n, k, sm_count, a, b, d);
    if (std::strcmp(argv[7], "warpspecialized") == 0)
        return emit<CutlassSm90WarpSpecialized>(m, n, k, sm_count, a, b, d);
    std::fprintf(stderr, "unknown kernel configuration %s\n", argv[7]);
    return 2;
}
