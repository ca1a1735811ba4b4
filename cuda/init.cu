// Random fills for adapter initialisation, bit-identical to the CPU reference:
//     lora_fill_uniform_<T>: out[i] = round_T((2 u_i - 1) * bound)         (f32 math)
//     lora_fill_normal_<T>:  out[i] = round_T(round_f32(z_i * std))       (f64 math)
// with u_i, z_i from Philox keyed by (seed, offset, i) (cuda/philox.cuh).
// Zero matrices need no kernel: the host uses a memset.
//
// One thread per Philox block: the 4 random words of one call are exactly
// elements 4j .. 4j+3, and the Box-Muller pairs (2j', 2j'+1) never straddle
// two blocks, so each word is drawn once. Grid-stride over the blocks.

#include "dtype.cuh"
#include "init_params.h"
#include "philox.cuh"

namespace fused_lora {
namespace init {

constexpr int kPerBlock = 4;  // elements per Philox call

template <typename T>
struct alignas(sizeof(T) * kPerBlock) Pack {
    T v[kPerBlock];
};

// Stores the first min(4, len - first) of `values` at out[first...]: one
// vector store for a whole block on an aligned buffer (a warp then writes one
// contiguous span), element by element otherwise.
template <typename T>
__device__ __forceinline__ void store_block(T* out, uint64_t len, uint64_t first, const float (&values)[kPerBlock]) {
    const bool aligned = reinterpret_cast<uintptr_t>(out) % sizeof(Pack<T>) == 0;
    if (aligned && first + kPerBlock <= len) {
        Pack<T> pack;
#pragma unroll
        for (int w = 0; w < kPerBlock; ++w) pack.v[w] = from_f32<T>(values[w]);
        *reinterpret_cast<Pack<T>*>(out + first) = pack;
        return;
    }
#pragma unroll
    for (int w = 0; w < kPerBlock; ++w) {
        if (first + w < len) out[first + w] = from_f32<T>(values[w]);
    }
}

template <typename T>
__device__ void fill_uniform(const LoraFillParams& p) {
    T* out = reinterpret_cast<T*>(p.out);
    const uint64_t blocks = (p.len + kPerBlock - 1) / kPerBlock;
    const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
    for (uint64_t j = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < blocks; j += stride) {
        const philox::Block bits = philox::bits_of_block(p.seed, p.offset, j);
        float values[kPerBlock];
#pragma unroll
        for (int w = 0; w < kPerBlock; ++w) {
            values[w] = philox::uniform_symmetric(philox::uniform_from_bits(bits.w[w]), p.bound);
        }
        store_block(out, p.len, j * kPerBlock, values);
    }
}

template <typename T>
__device__ void fill_normal(const LoraFillParams& p) {
    T* out = reinterpret_cast<T*>(p.out);
    const uint64_t blocks = (p.len + kPerBlock - 1) / kPerBlock;
    const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
    for (uint64_t j = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < blocks; j += stride) {
        const philox::Block bits = philox::bits_of_block(p.seed, p.offset, j);
        float values[kPerBlock];
#pragma unroll
        for (int pair = 0; pair < kPerBlock / 2; ++pair) {
            // A pair past the end costs a log and a cosine for nothing; skip it.
            if (j * kPerBlock + 2 * pair >= p.len) {
                values[2 * pair] = values[2 * pair + 1] = 0.0f;
                continue;
            }
            double z_even, z_odd;
            philox::box_muller(philox::uniform_from_bits(bits.w[2 * pair]),
                               philox::uniform_from_bits(bits.w[2 * pair + 1]), &z_even, &z_odd);
            values[2 * pair] = __double2float_rn(__dmul_rn(z_even, p.std_dev));
            values[2 * pair + 1] = __double2float_rn(__dmul_rn(z_odd, p.std_dev));
        }
        store_block(out, p.len, j * kPerBlock, values);
    }
}

}  // namespace init
}  // namespace fused_lora

#define STAMP_INIT(SUFFIX, TYPE)                                                         \
    extern "C" __global__ void __launch_bounds__(LORA_INIT_THREADS)                      \
        lora_fill_uniform_##SUFFIX(const LoraFillParams params) {                        \
        fused_lora::init::fill_uniform<TYPE>(params);                                     \
    }                                                                                    \
    extern "C" __global__ void __launch_bounds__(LORA_INIT_THREADS)                      \
        lora_fill_normal_##SUFFIX(const LoraFillParams params) {                         \
        fused_lora::init::fill_normal<TYPE>(params);                                      \
    }
FUSED_LORA_FOR_EACH_DTYPE(STAMP_INIT)
