// Dropout on the adapter input (PEFT's lora_dropout), as every kernel that
// needs it applies it: element (m, k) of the [m, K] input is kept iff
// uniform(seed, offset, m.K + k) >= p (Philox-4x32-10, philox.cuh, bit for
// bit as src/reference/philox.rs), and a kept element becomes
// X~ = round_T(X . inv_keep) with inv_keep = 1 / (1 - p) computed in f32 on
// the host. The mask is regenerated wherever it is needed, never stored.
#pragma once

#include <stdint.h>

#include "dtype.cuh"
#include "philox.cuh"

namespace fused_lora {

struct DropoutMask {
    float p;
    float inv_keep;
    uint64_t seed;
    uint64_t offset;
    long long row_len;  // K: the mask's index of (m, k) is m.K + k

    // Word index % 4 of a Philox block. Selected, not indexed: a dynamic
    // index into `bits.w` would put the block in local memory.
    static __device__ __forceinline__ uint32_t word(const philox::Block& bits, uint64_t index) {
        const unsigned w = static_cast<unsigned>(index % 4);
        return w == 0 ? bits.w[0] : w == 1 ? bits.w[1] : w == 2 ? bits.w[2] : bits.w[3];
    }

    // Whether element (m, k) is kept.
    __device__ __forceinline__ bool keeps(int m, int k) const {
        const uint64_t index = static_cast<uint64_t>(m) * static_cast<uint64_t>(row_len) + static_cast<uint64_t>(k);
        return philox::uniform_from_bits(word(philox::bits_of_block(seed, offset, index / 4), index)) >= p;
    }

    // d[0, N) = X~ of elements (m, k .. k + count) read from s (zeros past
    // count). One Philox block yields 4 consecutive decisions, so a block is
    // drawn once per run of 4 indices. The product is one f32 multiply
    // (nothing to contract into an FMA), rounded to T once.
    template <typename T, int N>
    __device__ __forceinline__ void load(T* d, const T* s, int m, int k, int count) const {
        const uint64_t index0 = static_cast<uint64_t>(m) * static_cast<uint64_t>(row_len) + static_cast<uint64_t>(k);
        uint64_t block = index0 / 4;
        philox::Block bits = philox::bits_of_block(seed, offset, block);
#pragma unroll
        for (int e = 0; e < N; ++e) {
            const uint64_t index = index0 + e;
            if (index / 4 != block) {
                block = index / 4;
                bits = philox::bits_of_block(seed, offset, block);
            }
            const bool keep = philox::uniform_from_bits(word(bits, index)) >= p;
            d[e] = e < count && keep ? from_f32<T>(to_f32(s[e]) * inv_keep) : from_f32<T>(0.0f);
        }
    }
};

}  // namespace fused_lora
