// The backward kernels: G = dY.B, dB = s.dY^T.P, dA = s.G^T.X and
// dX = dY.W0 + s.G.A, for one adapter or one adapter per row (the formulas
// and their rounding points are in backward_params.h).
//
// This is the straightforward form: one thread per output element, f32 FMA
// accumulation in a fixed order, each stored value rounded once. Every
// operand is read in its stored layout (W0 as [N, K], B as [N, r]); no
// transposed copy is made. Adjacent threads own adjacent output columns, so
// the loads along a warp are consecutive in the innermost dimension wherever
// the operand allows it (dY.W0, G.A, G^T.X, dY^T.P by rows).
//
// Determinism: dA and dB reduce over M, split in fixed chunks of
// rows_per_split rows (the chunking depends on M only, not on the device); each split stores its f32 partial, and lora_backward_finish adds
// the splits in split order. No floating-point atomics anywhere, so results
// are bit-identical run to run.
//
// Dropout: the mask is regenerated from Philox-4x32-10 (philox.cuh, bit for
// bit as src/reference/philox.rs) where it is needed (dA's X~ and dX's
// adapter term), never stored.
//
// Adapter indices are validated where they are read: a row whose index lies
// outside [-1, L) never addresses an adapter; it is treated as -1 (G row 0,
// base-only dX, excluded from every dA/dB) and lora_backward_g reports it
// through the status word, as the forward does.

#include "backward_params.h"
#include "dtype.cuh"
#include "philox.cuh"

namespace fused_lora {
namespace bwd {

// Whether dropout keeps element (m, k) of the [m, K] adapter input.
__device__ __forceinline__ bool keeps(const LoraBwdParams& p, int m, int k) {
    const uint64_t index = static_cast<uint64_t>(m) * p.k + k;
    const philox::Block bits = philox::bits_of_block(p.seed, p.offset, index / 4);
    return philox::uniform_from_bits(bits.w[index % 4]) >= p.dropout_p;
}

// X~[m, k]: the adapter's input after dropout, as the forward stored it in T.
template <typename T> __device__ __forceinline__ float dropped_x(const LoraBwdParams& p, const T* x, int m, int k) {
    const float v = to_f32(x[static_cast<long long>(m) * p.k + k]);
    if (!p.dropout) return v;
    return keeps(p, m, k) ? to_f32(from_f32<T>(v * p.inv_keep)) : 0.0f;
}

__device__ __forceinline__ int rank_of(const LoraBwdParams& p, int adapter) {
    return p.ranks ? reinterpret_cast<const int*>(p.ranks)[adapter] : p.rank;
}

__device__ __forceinline__ float scale_of(const LoraBwdParams& p, int adapter) {
    return p.scales ? reinterpret_cast<const float*>(p.scales)[adapter] : p.scale;
}

// The validated adapter of row m: its index, or -1 for none or out of range.
__device__ __forceinline__ int adapter_of(const LoraBwdParams& p, int m) {
    const int adapter = p.row_adapter ? reinterpret_cast<const int*>(p.row_adapter)[m] : 0;
    return adapter >= 0 && adapter < p.num_adapters ? adapter : -1;
}

template <typename T> __device__ __forceinline__ void store(const LoraBwdParams& p, long long at, float value) {
    T* out = reinterpret_cast<T*>(p.out);
    if (p.accumulate) value += to_f32(out[at]);
    out[at] = from_f32<T>(value);
}

// G [m, r_max] = round_T(dY . B_l); zero past the row's rank and for rows
// without an adapter.
template <typename T> __device__ void g(const LoraBwdParams& p) {
    const long long at = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (at >= static_cast<long long>(p.m) * p.r_max) return;
    const int m = static_cast<int>(at / p.r_max);
    const int j = static_cast<int>(at % p.r_max);
    const int adapter = adapter_of(p, m);
    if (j == 0 && p.status && p.row_adapter) {
        const int index = reinterpret_cast<const int*>(p.row_adapter)[m];
        if (index < -1 || index >= p.num_adapters) {
            const unsigned long long report = (static_cast<unsigned long long>(m) << 32) | static_cast<unsigned int>(index);
            atomicMin(reinterpret_cast<unsigned long long*>(p.status), report);
        }
    }
    float acc = 0.0f;
    if (adapter >= 0 && j < rank_of(p, adapter)) {
        const T* dy = reinterpret_cast<const T*>(p.dy) + static_cast<long long>(m) * p.n;
        const T* b = reinterpret_cast<const T*>(p.b) + static_cast<long long>(adapter) * p.n * p.r_max + j;
        for (int n = 0; n < p.n; ++n) acc = fmaf(to_f32(dy[n]), to_f32(b[static_cast<long long>(n) * p.r_max]), acc);
    }
    reinterpret_cast<T*>(p.g)[at] = from_f32<T>(acc);
}

// The [rows, cols] shape of one adapter's dB or dA.
__device__ __forceinline__ void reduction_shape(const LoraBwdParams& p, int* rows, int* cols) {
    if (p.reduction == LORA_BWD_REDUCE_DB) {
        *rows = p.n;
        *cols = p.r_max;
    } else {
        *rows = p.r_max;
        *cols = p.k;
    }
}

// Whether (row, col) of adapter l's gradient lies inside its rank (the rest
// is padding: never computed).
__device__ __forceinline__ bool inside_rank(const LoraBwdParams& p, int adapter, int row, int col) {
    const int j = p.reduction == LORA_BWD_REDUCE_DB ? col : row;
    return j < rank_of(p, adapter);
}

// Split blockIdx.z's f32 partial of adapter blockIdx.y's dB or dA over its
// chunk of rows, only rows whose adapter is blockIdx.y.
template <typename T> __device__ void rowsum(const LoraBwdParams& p) {
    int rows, cols;
    reduction_shape(p, &rows, &cols);
    const long long per_adapter = static_cast<long long>(rows) * cols;
    const long long at = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (at >= per_adapter) return;
    const int adapter = blockIdx.y;
    const int split = blockIdx.z;
    const int row = static_cast<int>(at / cols);
    const int col = static_cast<int>(at % cols);
    float acc = 0.0f;
    if (inside_rank(p, adapter, row, col)) {
        const int m_begin = split * p.rows_per_split;
        const int m_end = min(m_begin + p.rows_per_split, p.m);
        const bool db = p.reduction == LORA_BWD_REDUCE_DB;
        // dB: dY[m, row] . P[m, col]; dA: G[m, row] . X[m, col].
        const T* lhs = reinterpret_cast<const T*>(db ? p.dy : p.g);
        const int lhs_ld = db ? p.n : p.r_max;
        for (int m = m_begin; m < m_end; ++m) {
            if (adapter_of(p, m) != adapter) continue;
            const float rhs = db ? to_f32(reinterpret_cast<const T*>(p.p)[static_cast<long long>(m) * p.r_max + col])
                                 : dropped_x(p, reinterpret_cast<const T*>(p.x), m, col);
            acc = fmaf(to_f32(lhs[static_cast<long long>(m) * lhs_ld + row]), rhs, acc);
        }
    }
    float* partials = reinterpret_cast<float*>(p.partials);
    partials[(static_cast<long long>(split) * p.num_adapters + adapter) * per_adapter + at] = acc;
}

// Adds the splits in split order, scales, rounds once. Padding past an
// adapter's rank is written as 0 (or left as it was, when accumulating).
template <typename T> __device__ void finish(const LoraBwdParams& p) {
    int rows, cols;
    reduction_shape(p, &rows, &cols);
    const long long per_adapter = static_cast<long long>(rows) * cols;
    const long long at = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (at >= per_adapter) return;
    const int adapter = blockIdx.y;
    const long long out_at = static_cast<long long>(adapter) * per_adapter + at;
    if (!inside_rank(p, adapter, static_cast<int>(at / cols), static_cast<int>(at % cols))) {
        if (!p.accumulate) reinterpret_cast<T*>(p.out)[out_at] = from_f32<T>(0.0f);
        return;
    }
    const float* partials = reinterpret_cast<const float*>(p.partials);
    float sum = 0.0f;
    for (int split = 0; split < p.splits; ++split)
        sum += partials[(static_cast<long long>(split) * p.num_adapters + adapter) * per_adapter + at];
    store<T>(p, out_at, scale_of(p, adapter) * sum);
}

// dX [m, k] = round_T(dY . W0 + s_l . G . A_l), W0 read as stored ([n, k]).
template <typename T> __device__ void dx(const LoraBwdParams& p) {
    const long long at = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (at >= static_cast<long long>(p.m) * p.k) return;
    const int m = static_cast<int>(at / p.k);
    const int k = static_cast<int>(at % p.k);
    const T* dy = reinterpret_cast<const T*>(p.dy) + static_cast<long long>(m) * p.n;
    const T* w = reinterpret_cast<const T*>(p.w) + k;
    float base = 0.0f;
    for (int n = 0; n < p.n; ++n) base = fmaf(to_f32(dy[n]), to_f32(w[static_cast<long long>(n) * p.k]), base);
    const int adapter = adapter_of(p, m);
    float value = base;
    if (adapter >= 0) {
        const T* g = reinterpret_cast<const T*>(p.g) + static_cast<long long>(m) * p.r_max;
        const T* a = reinterpret_cast<const T*>(p.a) + static_cast<long long>(adapter) * p.r_max * p.k + k;
        const int rank = rank_of(p, adapter);
        float lora = 0.0f;
        for (int j = 0; j < rank; ++j) lora = fmaf(to_f32(g[j]), to_f32(a[static_cast<long long>(j) * p.k]), lora);
        const float factor = !p.dropout ? 1.0f : keeps(p, m, k) ? p.inv_keep : 0.0f;
        value = base + scale_of(p, adapter) * lora * factor;
    }
    store<T>(p, at, value);
}

// out [m, k] = X~, for the recompute of P by the forward's shrink.
template <typename T> __device__ void dropped_input(const LoraBwdParams& p) {
    const long long at = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (at >= static_cast<long long>(p.m) * p.k) return;
    const int m = static_cast<int>(at / p.k);
    const int k = static_cast<int>(at % p.k);
    reinterpret_cast<T*>(p.out)[at] = from_f32<T>(dropped_x(p, reinterpret_cast<const T*>(p.x), m, k));
}

}  // namespace bwd
}  // namespace fused_lora

#define STAMP_BACKWARD(SUFFIX, TYPE)                                                                                  \
    extern "C" __global__ void __launch_bounds__(LORA_BWD_THREADS) lora_backward_g_##SUFFIX(const LoraBwdParams p) {  \
        fused_lora::bwd::g<TYPE>(p);                                                                                  \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(LORA_BWD_THREADS)                                                    \
        lora_backward_rowsum_##SUFFIX(const LoraBwdParams p) {                                                        \
        fused_lora::bwd::rowsum<TYPE>(p);                                                                             \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(LORA_BWD_THREADS)                                                    \
        lora_backward_finish_##SUFFIX(const LoraBwdParams p) {                                                        \
        fused_lora::bwd::finish<TYPE>(p);                                                                             \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(LORA_BWD_THREADS) lora_backward_dx_##SUFFIX(const LoraBwdParams p) { \
        fused_lora::bwd::dx<TYPE>(p);                                                                                 \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(LORA_BWD_THREADS)                                                    \
        lora_backward_dropped_input_##SUFFIX(const LoraBwdParams p) {                                                 \
        fused_lora::bwd::dropped_input<TYPE>(p);                                                                      \
    }
FUSED_LORA_FOR_EACH_DTYPE(STAMP_BACKWARD)
