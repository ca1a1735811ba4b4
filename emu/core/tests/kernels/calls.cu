// A device function kept out of line, so the PTX has a `.func` and a `call`
// (in a module of its own: a module that fails to load fails only its tests).

__device__ __noinline__ float horner_cubic(float x, const float* coeffs) {
    return fmaf(fmaf(fmaf(coeffs[3], x, coeffs[2]), x, coeffs[1]), x, coeffs[0]);
}

// out[i] = coeffs[0] + x (coeffs[1] + x (coeffs[2] + x coeffs[3])), fused steps.
extern "C" __global__ void call_noinline(const float* x, const float* coeffs, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = horner_cubic(x[i], coeffs);
}

