// kernels/common/softmax_math.cuh — the arithmetic of an online softmax: exp2, warp reductions, fp16 packing.
//
// exp(x·scale) = exp2(x·scale·log2 e): with the scale folded into one multiply (or FFMA) per score, each
// exponential is a single MUFU.EX2 instead of expf's range reduction.
#pragma once

#include <cuda_fp16.h>

// 2^x on the special-function unit (ex2.approx.ftz: ~2 ulp, denormals flushed), no range reduction.
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
// max / sum of x over the 32 lanes of a warp (every lane gets the result)
__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
// two fp32 → one register of two fp16 (round to nearest), lo in the low half
__device__ __forceinline__ unsigned pack_half2(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
}
