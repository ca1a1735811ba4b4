// PTX forms that real-world CUDA code emits beyond the plain arithmetic:
// inline-asm blocks with their own (nested, shadowing) register declarations,
// min/max.NaN on f16/bf16, half-precision set and packed setp, brx.idx,
// .b128 accesses, the carry chains of multi-word arithmetic, and the
// device-side assert. Compiled for sm_90 (setp.bf16x2 needs it).
#include <cassert>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

// ---------------------------------------------------------------- scoped registers

// out[i] = (x + 100) + x + 7 through three nested scopes that each declare
// `t` (the inner ones shadow the outer), one with the type glued to `.reg`
// as cuda_fp16.h writes it; the outer `t` must survive the inner blocks.
extern "C" __global__ void scoped_registers(const unsigned* x, unsigned* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned r;
    asm("{\n\t"
        ".reg .b32 t;\n\t"
        "mov.b32 t, %1;\n\t"
        "{\n\t"
        ".reg.b32 t, u;\n\t"
        "add.u32 t, %1, 100;\n\t"
        "{ .reg .b32 t;\n\t"
        "  mov.b32 t, 7;\n\t"
        "  mov.b32 u, t; }\n\t"
        "add.u32 %0, t, u;\n\t"
        "}\n\t"
        "add.u32 %0, %0, t;\n\t"
        "}"
        : "=r"(r)
        : "r"(x[i]));
    out[i] = r;
}

// hexp/h2exp: cuda_fp16.h's inline asm with nested `{ .reg ... }` blocks.
extern "C" __global__ void half_exp(const __half* x, __half* out, const __half2* x2, __half2* out2, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = hexp(x[i]);
    out2[i] = h2exp(x2[i]);
}

// ---------------------------------------------------------------- min/max.NaN

// Per element: [max_nan, min_nan] of f16 and bf16, and the x2 forms.
extern "C" __global__ void minmax_nan(const __half* a, const __half* b, __half* h_out,
                                      const __nv_bfloat16* c, const __nv_bfloat16* d, __nv_bfloat16* b_out,
                                      const __half2* a2, const __half2* b2, __half2* h2_out,
                                      const __nv_bfloat162* c2, const __nv_bfloat162* d2, __nv_bfloat162* b2_out,
                                      int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    h_out[2 * i] = __hmax_nan(a[i], b[i]);
    h_out[2 * i + 1] = __hmin_nan(a[i], b[i]);
    b_out[2 * i] = __hmax_nan(c[i], d[i]);
    b_out[2 * i + 1] = __hmin_nan(c[i], d[i]);
    h2_out[2 * i] = __hmax2_nan(a2[i], b2[i]);
    h2_out[2 * i + 1] = __hmin2_nan(a2[i], b2[i]);
    b2_out[2 * i] = __hmax2_nan(c2[i], d2[i]);
    b2_out[2 * i + 1] = __hmin2_nan(c2[i], d2[i]);
}

// ---------------------------------------------------------------- half comparisons

// Per f16x2 pair: flags[i] = bit 0/1 from `setp.lt.f16x2 p|q` (lower/upper
// half), bits 2/3 from `setp.ltu.bf16x2` on the same bits read as bf16x2,
// bits 4/5 from `setp.ge.and.f16x2 p|q, a, b, c` with c = (i odd);
// gt_mask[i] = __hgt2_mask (set.gt.u32.f16x2); gt_half[i] = __hgt2
// (set.gt.f16x2.f16x2: 1.0 or 0.0 per half); eq_half[i] = set.eq.f16.f16 of
// the lower halves (1.0 or 0.0).
extern "C" __global__ void half_compare(const unsigned* a, const unsigned* b, unsigned* flags, unsigned* gt_mask,
                                        __half2* gt_half, unsigned short* eq_half, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned f;
    asm("{\n\t"
        ".reg .pred p, q, r, s, u, v;\n\t"
        ".reg .pred c;\n\t"
        "setp.ne.u32 c, %4, 0;\n\t"
        "setp.lt.f16x2 p|q, %1, %2;\n\t"
        "setp.ltu.bf16x2 r|s, %1, %2;\n\t"
        "setp.ge.and.f16x2 u|v, %1, %2, c;\n\t"
        "selp.u32 %0, 1, 0, p;\n\t"
        "{ .reg .b32 bit;\n\t"
        "selp.u32 bit, 2, 0, q;  or.b32 %0, %0, bit;\n\t"
        "selp.u32 bit, 4, 0, r;  or.b32 %0, %0, bit;\n\t"
        "selp.u32 bit, 8, 0, s;  or.b32 %0, %0, bit;\n\t"
        "selp.u32 bit, 16, 0, u; or.b32 %0, %0, bit;\n\t"
        "selp.u32 bit, 32, 0, v; or.b32 %0, %0, bit; }\n\t"
        "}"
        : "=r"(f)
        : "r"(a[i]), "r"(b[i]), "r"(0), "r"(i & 1));
    flags[i] = f;
    __half2 ha = *reinterpret_cast<const __half2*>(&a[i]);
    __half2 hb = *reinterpret_cast<const __half2*>(&b[i]);
    gt_mask[i] = __hgt2_mask(ha, hb);
    gt_half[i] = __hgt2(ha, hb);
    unsigned short e;
    asm("{ .reg .b16 lo_a, hi_a, lo_b, hi_b;\n\t"
        "mov.b32 {lo_a, hi_a}, %1;\n\t"
        "mov.b32 {lo_b, hi_b}, %2;\n\t"
        "set.eq.f16.f16 %0, lo_a, lo_b; }"
        : "=h"(e)
        : "r"(a[i]), "r"(b[i]));
    eq_half[i] = e;
}

// ---------------------------------------------------------------- brx.idx

// out[i] = one of four computations on x[i], chosen per thread by an
// indirect branch through a .branchtargets list (lanes of a warp diverge).
extern "C" __global__ void indirect_branch(const unsigned* sel, const unsigned* x, unsigned* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned r;
    asm volatile("{\n\t"
                 "ts%=: .branchtargets case0_%=, case1_%=, case2_%=, case3_%=;\n\t"
                 "brx.idx %1, ts%=;\n"
                 "case0_%=:\n\t"
                 "mov.u32 %0, 10;\n\t"
                 "bra.uni done_%=;\n"
                 "case1_%=:\n\t"
                 "add.u32 %0, %2, 1;\n\t"
                 "bra.uni done_%=;\n"
                 "case2_%=:\n\t"
                 "mul.lo.u32 %0, %2, 3;\n\t"
                 "bra.uni done_%=;\n"
                 "case3_%=:\n\t"
                 "sub.u32 %0, 0, %2;\n"
                 "done_%=:\n\t"
                 "}"
                 : "=r"(r)
                 : "r"(sel[i]), "r"(x[i]));
    out[i] = r;
}

// ---------------------------------------------------------------- .b128

// Each thread loads one 16-byte element as .b128 (global), swaps its halves
// through mov.b128 into a second .b128 register, stages it through shared
// memory with st/ld.shared.b128, and stores it with st.global.b128.
// `skew` (in 8-byte words) shifts the global addresses: 1 makes every access misaligned.
extern "C" __global__ void b128_swap_halves(const unsigned long long* in, unsigned long long* out, int skew, int n) {
    __shared__ __align__(16) unsigned long long stage[2 * 128];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const unsigned long long* src = in + 2 * i + skew;
    unsigned long long* dst = out + 2 * i + skew;
    unsigned long long* mine = stage + 2 * threadIdx.x;
    asm volatile("{\n\t"
                 ".reg .b128 q, swapped;\n\t"
                 ".reg .b64 lo, hi;\n\t"
                 "ld.global.b128 q, [%0];\n\t"
                 "mov.b128 {lo, hi}, q;\n\t"
                 "mov.b128 swapped, {hi, lo};\n\t"
                 "mov.b128 q, swapped;\n\t"
                 "st.shared.b128 [%2], q;\n\t"
                 "ld.shared.b128 swapped, [%2];\n\t"
                 "st.global.b128 [%1], swapped;\n\t"
                 "}"
                 :
                 : "l"(src), "l"(dst), "r"((unsigned)__cvta_generic_to_shared(mine))
                 : "memory");
}

// ---------------------------------------------------------------- carry chains

// Per element, with 128-bit values as (lo, hi) pairs of u64:
//   mad[i]  = a * b + c  (mad.lo.cc.u64 / madc.hi.u64: the full 64x64 product plus a 128-bit addend),
//   sum[i]  = c + d      (add.cc.u32 / addc.cc.u32 / addc.u32 over four 32-bit limbs),
//   diff[i] = c - d      (sub.cc.u32 / subc.cc.u32 / subc.u32),
//   wide[i] = a * b as u128 through madc.lo.cc.u32 / madc.hi.cc.u32 on 32-bit limbs,
//   nvcc[i] = c * 3 + (c >> 7) in unsigned __int128 (nvcc's own carry code).
extern "C" __global__ void carry_chains(const unsigned long long* a, const unsigned long long* b,
                                        const unsigned long long* c, const unsigned long long* d,
                                        unsigned long long* mad, unsigned long long* sum, unsigned long long* diff,
                                        unsigned long long* wide, unsigned __int128* nvcc, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned long long lo, hi;
    asm("mad.lo.cc.u64 %0, %2, %3, %4;\n\t"
        "madc.hi.u64 %1, %2, %3, %5;"
        : "=l"(lo), "=l"(hi)
        : "l"(a[i]), "l"(b[i]), "l"(c[2 * i]), "l"(c[2 * i + 1]));
    mad[2 * i] = lo;
    mad[2 * i + 1] = hi;

    const unsigned* cw = reinterpret_cast<const unsigned*>(c + 2 * i);
    const unsigned* dw = reinterpret_cast<const unsigned*>(d + 2 * i);
    unsigned s0, s1, s2, s3;
    asm("add.cc.u32 %0, %4, %8;\n\t"
        "addc.cc.u32 %1, %5, %9;\n\t"
        "addc.cc.u32 %2, %6, %10;\n\t"
        "addc.u32 %3, %7, %11;"
        : "=r"(s0), "=r"(s1), "=r"(s2), "=r"(s3)
        : "r"(cw[0]), "r"(cw[1]), "r"(cw[2]), "r"(cw[3]), "r"(dw[0]), "r"(dw[1]), "r"(dw[2]), "r"(dw[3]));
    sum[2 * i] = ((unsigned long long)s1 << 32) | s0;
    sum[2 * i + 1] = ((unsigned long long)s3 << 32) | s2;
    asm("sub.cc.u32 %0, %4, %8;\n\t"
        "subc.cc.u32 %1, %5, %9;\n\t"
        "subc.cc.u32 %2, %6, %10;\n\t"
        "subc.u32 %3, %7, %11;"
        : "=r"(s0), "=r"(s1), "=r"(s2), "=r"(s3)
        : "r"(cw[0]), "r"(cw[1]), "r"(cw[2]), "r"(cw[3]), "r"(dw[0]), "r"(dw[1]), "r"(dw[2]), "r"(dw[3]));
    diff[2 * i] = ((unsigned long long)s1 << 32) | s0;
    diff[2 * i + 1] = ((unsigned long long)s3 << 32) | s2;

    // (a1:a0) * (b1:b0) by schoolbook on 32-bit limbs, the way multi-word
    // integer libraries write it: column sums with mad/madc carries.
    unsigned a0 = (unsigned)a[i], a1 = (unsigned)(a[i] >> 32);
    unsigned b0 = (unsigned)b[i], b1 = (unsigned)(b[i] >> 32);
    unsigned w0, w1, w2, w3;
    asm("{\n\t"
        ".reg .u32 t1, t2, t3;\n\t"
        "mul.lo.u32 %0, %4, %6;\n\t"          // w0 = lo(a0 b0)
        "mul.hi.u32 t1, %4, %6;\n\t"          // t1 = hi(a0 b0)
        "mad.lo.cc.u32 t1, %5, %6, t1;\n\t"   // t1 += lo(a1 b0)
        "madc.hi.u32 t2, %5, %6, 0;\n\t"      // t2 = hi(a1 b0) + carry
        "mad.lo.cc.u32 %1, %4, %7, t1;\n\t"   // w1 = t1 + lo(a0 b1)
        "madc.hi.cc.u32 t2, %4, %7, t2;\n\t"  // t2 += hi(a0 b1) + carry
        "addc.u32 t3, 0, 0;\n\t"              // t3 = carry
        "mad.lo.cc.u32 %2, %5, %7, t2;\n\t"   // w2 = t2 + lo(a1 b1)
        "madc.hi.u32 %3, %5, %7, t3;\n\t"     // w3 = hi(a1 b1) + t3 + carry
        "}"
        : "=r"(w0), "=r"(w1), "=r"(w2), "=r"(w3)
        : "r"(a0), "r"(a1), "r"(b0), "r"(b1));
    wide[2 * i] = ((unsigned long long)w1 << 32) | w0;
    wide[2 * i + 1] = ((unsigned long long)w3 << 32) | w2;

    unsigned __int128 cv = ((unsigned __int128)c[2 * i + 1] << 64) | c[2 * i];
    nvcc[i] = cv * 3 + (cv >> 7);
}

// ---------------------------------------------------------------- assert

// out[i] = 2 x[i]; every x[i] must be below `limit`.
extern "C" __global__ void checked_double(const float* x, float* out, float limit, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    assert(x[i] < limit);
    out[i] = 2.0f * x[i];
}

// ---------------------------------------------------------------- WARP_SZ

// out[warp] = the f16x2 sum of the warp's 32 pairs, by __shfl_xor_sync on
// __half2 (cuda_fp16.h forms its shuffle clamp from the ISA constant WARP_SZ);
// each lane adds in the same butterfly order, so every lane ends equal.
extern "C" __global__ void half2_warp_sum(const __half2* x, __half2* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    __half2 v = x[i];
    for (int mask = 16; mask > 0; mask >>= 1) {
        v = __hadd2(v, __shfl_xor_sync(0xffffffffu, v, mask));
    }
    if (threadIdx.x % 32 == 0) out[i / 32] = v;
}

// ---------------------------------------------------------------- integer mma

// One warp: D = A·B + C with int8 multiplicands (s8 A, u8 B when `mixed`, else
// s8 both) and s32 accumulators, for m16n8k32 (k32 != 0) or m16n8k16. The
// fragments arrive as each lane's registers (a: 4 words per lane, b: 2, c and
// d: 4), laid out by the host from the PTX ISA's tables.
extern "C" __global__ void int8_mma(const unsigned* a, const unsigned* b, const int* c, int* d, int k32, int mixed) {
    int lane = threadIdx.x;
    unsigned a0 = a[4 * lane], a1 = a[4 * lane + 1], a2 = a[4 * lane + 2], a3 = a[4 * lane + 3];
    unsigned b0 = b[2 * lane], b1 = b[2 * lane + 1];
    int d0 = c[4 * lane], d1 = c[4 * lane + 1], d2 = c[4 * lane + 2], d3 = c[4 * lane + 3];
    if (k32 && mixed) {
        asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.u8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
            : "+r"(d0), "+r"(d1), "+r"(d2), "+r"(d3)
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    } else if (k32) {
        asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
            : "+r"(d0), "+r"(d1), "+r"(d2), "+r"(d3)
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    } else {
        asm("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};"
            : "+r"(d0), "+r"(d1), "+r"(d2), "+r"(d3)
            : "r"(a0), "r"(a1), "r"(b0));
    }
    d[4 * lane] = d0;
    d[4 * lane + 1] = d1;
    d[4 * lane + 2] = d2;
    d[4 * lane + 3] = d3;
}

// ---------------------------------------------------------------- generic ldmatrix

// One warp: stages 4 8x8 b16 matrices (256 words) in shared memory and loads
// them with ldmatrix.x4 twice, once with .shared addresses and once with the
// same rows' generic addresses (no state space, as llama.cpp's MMQ writes it);
// or, with `global_rows`, gives the generic form global addresses (a finding).
extern "C" __global__ void ldmatrix_generic(const unsigned* in, unsigned* out, int global_rows) {
    __shared__ __align__(16) unsigned tile[128];
    int lane = threadIdx.x;
    for (int i = lane; i < 128; i += 32) tile[i] = in[i];
    __syncwarp();
    const unsigned* row = tile + 4 * lane;  // lane r names row r: 16 bytes
    unsigned shared_row = (unsigned)__cvta_generic_to_shared(row);
    unsigned s0, s1, s2, s3, g0, g1, g2, g3;
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(s0), "=r"(s1), "=r"(s2), "=r"(s3) : "r"(shared_row));
    const unsigned* generic = global_rows ? in + 4 * lane : row;
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(g0), "=r"(g1), "=r"(g2), "=r"(g3) : "l"(generic));
    unsigned* o = out + 8 * lane;
    o[0] = s0; o[1] = s1; o[2] = s2; o[3] = s3;
    o[4] = g0; o[5] = g1; o[6] = g2; o[7] = g3;
}

// ---------------------------------------------------------------- printf

// Thread 0 prints one line through device printf and stores printf's result.
extern "C" __global__ void device_printf(int* result, int i, float x, long long big) {
    if (threadIdx.x == 0) result[0] = printf("printf: %d %5.2f %lld %s %x%%\n", i, x, big, "text", 255u);
}
