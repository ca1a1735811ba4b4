// Host program for cutlass_gemm.cu: builds the kernel's Params exactly as
// cutlass::gemm::device::Gemm::initialize does, for device buffers that
// already exist, and prints what a driver-API launch needs. Host code only:
// it makes no CUDA runtime call. CUTLASS's __device__ variables still
// need the static runtime's registration symbols, hence `-cudart static`.
//
// Build: nvcc -std=c++17 -arch=sm_80 --expt-relaxed-constexpr -cudart static \
//             -L$FUSED_LORA_CUDA_ROOT/lib -I$FUSED_LORA_CUTLASS_INCLUDE cutlass_gemm_params.cu -o cutlass_gemm_params
// Usage: cutlass_gemm_params M N K A B D [64x64|128x128]
//   (A, B, D: device addresses, hex or decimal; the CTA tile configuration, 64x64 by default)
//   computes D = A * B (alpha 1, beta 0; D also serves as the unread C).
// Output, one item per line:
//   grid X Y Z
//   block X Y Z
//   shared_bytes N
//   params_bytes N
//   params <hex of the Params struct, byte by byte>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "cutlass_gemm.h"

static uint64_t parse_u64(const char* text) { return std::strtoull(text, nullptr, 0); }

// Fills and prints the Params of configuration `Gemm` for D = A * B.
template <class Gemm>
static int emit(int m, int n, int k, cutlass::bfloat16_t* a, cutlass::bfloat16_t* b, float* d) {
    using Kernel = typename Gemm::GemmKernel;
    cutlass::gemm::GemmCoord problem(m, n, k);
    // Row-major leading dimensions: A is [M, K], B is [K, N], D is [M, N].
    typename Gemm::Arguments args(problem, {a, k}, {b, n}, {d, n}, {d, n}, {1.0f, 0.0f});
    if (Gemm::can_implement(args) != cutlass::Status::kSuccess) {
        std::fprintf(stderr, "CUTLASS cannot implement M=%d N=%d K=%d (alignment)\n", m, n, k);
        return 1;
    }

    typename Gemm::ThreadblockSwizzle swizzle;
    cutlass::gemm::GemmCoord tiled = swizzle.get_tiled_shape(
        problem, {Gemm::ThreadblockShape::kM, Gemm::ThreadblockShape::kN, Gemm::ThreadblockShape::kK},
        1);
    // Constructed in zeroed storage so the padding bytes printed are zero,
    // not stack contents: the output is then a pure function of the inputs.
    using Params = typename Kernel::Params;
    alignas(Params) static unsigned char storage[sizeof(Params)];
    std::memset(storage, 0, sizeof(storage));
    Params& params = *new (storage) Params{problem,
                                   tiled,
                                   args.ref_A.non_const_ref(),
                                   args.ref_B.non_const_ref(),
                                   args.ref_C.non_const_ref(),
                                   args.ref_D,
                                   args.epilogue,
                                   nullptr};
    dim3 grid = swizzle.get_grid_shape(params.grid_tiled_shape);

    std::vector<unsigned char> bytes(storage, storage + sizeof(storage));

    std::printf("grid %u %u %u\n", grid.x, grid.y, grid.z);
    std::printf("block %d 1 1\n", int(Kernel::kThreadCount));
    std::printf("shared_bytes %zu\n", sizeof(typename Kernel::SharedStorage));
    std::printf("params_bytes %zu\n", bytes.size());
    std::printf("params ");
    for (unsigned char byte : bytes) std::printf("%02x", byte);
    std::printf("\n");
    return 0;
}

int main(int argc, char** argv) {
    if (argc != 7 && argc != 8) {
        std::fprintf(stderr, "usage: %s M N K A B D [64x64|128x128]\n", argv[0]);
        return 2;
    }
    const int m = int(parse_u64(argv[1]));
    const int n = int(parse_u64(argv[2]));
    const int k = int(parse_u64(argv[3]));
    auto* a = reinterpret_cast<cutlass::bfloat16_t*>(parse_u64(argv[4]));
    auto* b = reinterpret_cast<cutlass::bfloat16_t*>(parse_u64(argv[5]));
    auto* d = reinterpret_cast<float*>(parse_u64(argv[6]));
    const char* tile = argc == 8 ? argv[7] : "64x64";
    if (std::strcmp(tile, "64x64") == 0) return emit<CutlassGemmBf16>(m, n, k, a, b, d);
    if (std::strcmp(tile, "128x128") == 0) return emit<CutlassGemmBf16Large>(m, n, k, a, b, d);
    std::fprintf(stderr, "unknown tile configuration %s\n", tile);
    return 2;
}
