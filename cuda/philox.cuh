// Philox-4x32-10 (Salmon, Moraes, Dror, Shaw, SC 2011; Random123) and the
// numbers the crate draws from it. Bit-identical to the CPU reference
// (`fused_lora::reference::philox`), whose module docs are the specification:
//
//   key     = [seed lo, seed hi]
//   counter = [(i/4) lo, (i/4) hi, offset lo, offset hi]
//   bits(i) = word i % 4 of philox4x32_10(counter, key)
//
// Every floating-point step uses an explicitly rounded intrinsic (__fmul_rn,
// __dadd_rn, ...): nvcc may contract a plain `a * b + c` into an FMA, which
// rounds once instead of twice and would break bit-identity with the CPU.
#pragma once

#include <stdint.h>

namespace fused_lora {
namespace philox {

constexpr uint32_t kMultiplier0 = 0xD2511F53u;
constexpr uint32_t kMultiplier1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;
constexpr uint32_t kWeyl1 = 0xBB67AE85u;
constexpr int kRounds = 10;

struct Block {
    uint32_t w[4];
};

// One round: two 32x32 -> 64-bit products, their halves xor-ed with the
// other counter words and the key.
__device__ __forceinline__ Block round(const Block& c, uint32_t k0, uint32_t k1) {
    const uint32_t hi0 = __umulhi(kMultiplier0, c.w[0]);
    const uint32_t lo0 = kMultiplier0 * c.w[0];
    const uint32_t hi1 = __umulhi(kMultiplier1, c.w[2]);
    const uint32_t lo1 = kMultiplier1 * c.w[2];
    return Block{{hi1 ^ c.w[1] ^ k0, lo1, hi0 ^ c.w[3] ^ k1, lo0}};
}

// Ten rounds, the key bumped by the Weyl constants between rounds.
__device__ __forceinline__ Block philox4x32_10(Block counter, uint32_t k0, uint32_t k1) {
#pragma unroll
    for (int r = 0; r < kRounds; ++r) {
        if (r > 0) {
            k0 += kWeyl0;
            k1 += kWeyl1;
        }
        counter = round(counter, k0, k1);
    }
    return counter;
}

// The 128 random bits of elements 4*block .. 4*block + 3 of stream (seed, offset).
__device__ __forceinline__ Block bits_of_block(uint64_t seed, uint64_t offset, uint64_t block) {
    const Block counter{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                         static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)}};
    return philox4x32_10(counter, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// (bits >> 8) * 2^-24: uniform on [0, 1), exact in f32.
__device__ __forceinline__ float uniform_from_bits(uint32_t bits) {
    return __fmul_rn(__uint2float_rn(bits >> 8), 0x1p-24f);
}

// U(-bound, bound) = (2u - 1) * bound in f32. 2u - 1 is exact; the product is
// the one rounding.
__device__ __forceinline__ float uniform_symmetric(float u, float bound) {
    return __fmul_rn(__fsub_rn(__fmul_rn(2.0f, u), 1.0f), bound);
}

// --- Normal: Box-Muller in f64 with only + - * / sqrt, each correctly rounded.

constexpr double kSqrtHalf = 0.7071067811865476;   // 0x3FE6A09E667F3BCD
constexpr double kLn2 = 0.6931471805599453;        // 0x3FE62E42FEFA39EF
constexpr double kHalfPi = 1.5707963267948966;     // 0x3FF921FB54442D18

// ln x for x in [2^-24, 1]: x = m * 2^-e with m in [sqrt(1/2), sqrt(2)) (exact
// doublings), then ln m = 2 atanh t, t = (m - 1)/(m + 1), by its series
// sum_{n=0}^{12} t^(2n+1)/(2n+1) in Horner form.
__device__ __forceinline__ double ln_unit(double x) {
    int e = 0;
    double m = x;
    // The bound keeps a degenerate input from looping forever; the crate only
    // passes x >= 2^-24 (24 doublings at most).
    while (m < kSqrtHalf && e < 64) {
        m = __dmul_rn(m, 2.0);
        e += 1;
    }
    const double t = __ddiv_rn(__dsub_rn(m, 1.0), __dadd_rn(m, 1.0));
    const double z = __dmul_rn(t, t);
    double q = __ddiv_rn(1.0, 25.0);
    for (int n = 11; n >= 0; --n) {
        q = __dadd_rn(__dmul_rn(q, z), __ddiv_rn(1.0, static_cast<double>(2 * n + 1)));
    }
    return __dsub_rn(__dmul_rn(2.0, __dmul_rn(t, q)), __dmul_rn(static_cast<double>(e), kLn2));
}

// cos and sin of 2*pi*u for u in [0, 1) a multiple of 2^-24: reduce to
// phi = (4u - quadrant) * pi/2 with |phi| <= pi/4 (exact up to the one
// product), then Taylor series to the 21st power in nested form.
__device__ __forceinline__ void cos_sin_turns(double u, double* cos_out, double* sin_out) {
    const double v = __dmul_rn(4.0, u);
    const double quadrant = floor(__dadd_rn(v, 0.5));
    const double phi = __dmul_rn(__dsub_rn(v, quadrant), kHalfPi);
    const double w = __dmul_rn(phi, phi);
    double s = 1.0;
    double c = 1.0;
    for (int n = 10; n >= 1; --n) {
        const double two_n = 2.0 * n;  // small integers: every product below is exact
        s = __dsub_rn(1.0, __ddiv_rn(__dmul_rn(w, s), two_n * (two_n + 1.0)));
        c = __dsub_rn(1.0, __ddiv_rn(__dmul_rn(w, c), (two_n - 1.0) * two_n));
    }
    const double sin_phi = __dmul_rn(phi, s);
    switch (static_cast<int>(quadrant) & 3) {
        case 0: *cos_out = c; *sin_out = sin_phi; break;
        case 1: *cos_out = -sin_phi; *sin_out = c; break;
        case 2: *cos_out = -c; *sin_out = -sin_phi; break;
        default: *cos_out = sin_phi; *sin_out = -c; break;
    }
}

// The two standard normal deviates of one pair: (r cos, r sin) from the
// uniforms of elements 2j (u1, mapped to (0, 1] as 1 - u) and 2j + 1 (u2).
__device__ __forceinline__ void box_muller(float u_even, float u_odd, double* z_even, double* z_odd) {
    const double u1 = __dsub_rn(1.0, static_cast<double>(u_even));
    const double u2 = static_cast<double>(u_odd);
    const double radius = __dsqrt_rn(__dmul_rn(-2.0, ln_unit(u1)));
    double c, s;
    cos_sin_turns(u2, &c, &s);
    *z_even = __dmul_rn(radius, c);
    *z_odd = __dmul_rn(radius, s);
}

}  // namespace philox
}  // namespace fused_lora
