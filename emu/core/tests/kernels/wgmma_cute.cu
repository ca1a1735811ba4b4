// CuTe's own Hopper GMMA path, for the emulator's wgmma tests: shared-memory
// layouts from GMMA::Layout_{K,MN}_{INTER,SW32,SW64,SW128}_Atom tiled to the
// operand, descriptors from make_gmma_desc (through make_fragment_A/B), the
// SM90 64x64x16 bf16 SS atom, and D written through partition_C. So the
// descriptor fields, swizzles and accumulator layout the emulator decodes
// are the ones NVIDIA's library produces, not a transcription of them.
// cute_rs_k_sw128 takes A from registers (the RS atom), copied there from
// shared memory through CuTe's own A-fragment partition.
// One warpgroup; A is 64 x 64 and Bt N x 64 (row-major bf16), D 64 x N f32;
// N = 64 but for cute_mn_sw128_n128, whose B spans two 64-element MN atoms
// (so CuTe's leading byte offset, the stride between them, is exercised).
#include <cute/tensor.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>

using namespace cute;

template <class AtomA, class AtomB, GMMA::Major MajorA, GMMA::Major MajorB, bool RegisterA = false, int N = 64>
__device__ void cute_gemm(const bfloat16_t* A, const bfloat16_t* Bt, float* D) {
    using SmemA = decltype(tile_to_shape(AtomA{}, Shape<_64, _64>{}));
    using SmemB = decltype(tile_to_shape(AtomB{}, Shape<Int<N>, _64>{}));
    __shared__ __align__(1024) bfloat16_t smem_a[cosize_v<SmemA>];
    __shared__ __align__(1024) bfloat16_t smem_b[cosize_v<SmemB>];
    Tensor sA = make_tensor(make_smem_ptr(smem_a), SmemA{});  // (M, K)
    Tensor sB = make_tensor(make_smem_ptr(smem_b), SmemB{});  // (N, K)
    for (int i = threadIdx.x; i < 64 * 64; i += 128) sA(i / 64, i % 64) = A[i];
    for (int i = threadIdx.x; i < N * 64; i += 128) sB(i / 64, i % 64) = Bt[i];
    __syncthreads();
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");

    using SsAtom = conditional_t<N == 128, SM90_64x128x16_F32BF16BF16_SS<MajorA, MajorB>,
                                 SM90_64x64x16_F32BF16BF16_SS<MajorA, MajorB>>;
    using Atom = conditional_t<RegisterA, SM90_64x64x16_F32BF16BF16_RS<MajorA, MajorB>, SsAtom>;
    TiledMMA mma = make_tiled_mma(Atom{});
    ThrMMA thr = mma.get_thread_slice(threadIdx.x);
    Tensor tCsA = thr.partition_A(sA);  // (MMA, MMA_M, MMA_K)
    Tensor tCsB = thr.partition_B(sB);
    Tensor tCrA = thr.make_fragment_A(tCsA);  // descriptors, or registers for RS
    Tensor tCrB = thr.make_fragment_B(tCsB);
    if constexpr (RegisterA) copy(tCsA, tCrA);
    Tensor gD = make_tensor(make_gmem_ptr(D), make_layout(make_shape(_64{}, Int<N>{}), make_stride(Int<N>{}, _1{})));
    Tensor tCgD = thr.partition_C(gD);
    Tensor acc = thr.make_fragment_C(tCgD);

    warpgroup_fence_operand(acc);
    warpgroup_arrive();
    mma.accumulate_ = GMMA::ScaleOut::Zero;
    CUTE_UNROLL
    for (int k = 0; k < size<2>(tCrA); ++k) {
        cute::gemm(mma, tCrA(_, _, k), tCrB(_, _, k), acc);
        mma.accumulate_ = GMMA::ScaleOut::One;
    }
    warpgroup_commit_batch();
    warpgroup_wait<0>();
    warpgroup_fence_operand(acc);
    copy(acc, tCgD);
}

#define CUTE_KERNEL(name, atom, major)                                                                     \
    extern "C" __global__ void __launch_bounds__(128)                                                      \
        name(const bfloat16_t* A, const bfloat16_t* Bt, float* D) {                                        \
        cute_gemm<GMMA::atom<bfloat16_t>, GMMA::atom<bfloat16_t>, GMMA::Major::major, GMMA::Major::major>( \
            A, Bt, D);                                                                                     \
    }

CUTE_KERNEL(cute_k_inter, Layout_K_INTER_Atom, K)
CUTE_KERNEL(cute_k_sw32, Layout_K_SW32_Atom, K)
CUTE_KERNEL(cute_k_sw64, Layout_K_SW64_Atom, K)
CUTE_KERNEL(cute_k_sw128, Layout_K_SW128_Atom, K)
CUTE_KERNEL(cute_mn_inter, Layout_MN_INTER_Atom, MN)
CUTE_KERNEL(cute_mn_sw32, Layout_MN_SW32_Atom, MN)
CUTE_KERNEL(cute_mn_sw64, Layout_MN_SW64_Atom, MN)
CUTE_KERNEL(cute_mn_sw128, Layout_MN_SW128_Atom, MN)

extern "C" __global__ void __launch_bounds__(128) cute_rs_k_sw128(const bfloat16_t* A, const bfloat16_t* Bt, float* D) {
    cute_gemm<GMMA::Layout_K_SW128_Atom<bfloat16_t>, GMMA::Layout_K_SW128_Atom<bfloat16_t>, GMMA::Major::K,
              GMMA::Major::K, true>(A, Bt, D);
}

extern "C" __global__ void __launch_bounds__(128)
    cute_mn_sw128_n128(const bfloat16_t* A, const bfloat16_t* Bt, float* D) {
    cute_gemm<GMMA::Layout_MN_SW128_Atom<bfloat16_t>, GMMA::Layout_MN_SW128_Atom<bfloat16_t>, GMMA::Major::MN,
              GMMA::Major::MN, false, 128>(A, Bt, D);
}
