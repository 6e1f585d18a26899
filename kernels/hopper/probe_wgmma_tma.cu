// probe_wgmma_tma — not an attention kernel: two one-CTA unit tests of the Hopper helpers, so that a wrong
// descriptor, swizzle or fragment layout shows up by itself rather than as a wrong attention output.
//   probe_scores: A (64×64) and B (128×64) arrive by TMA (the attention kernels' tensor maps, box 64 and 128 rows,
//                 128-byte swizzle); C = A·Bᵀ by 4 × wgmma.m64n128k16 (both K-major descriptors); C is written as
//                 fp32 [64][128] from the accumulator layout.
//   probe_pv:     P (64×128) is read from global memory straight into A fragments (mma.sync's layout), V (128×64)
//                 arrives by TMA; D = P·V by 8 × wgmma.m64n64k16 with V MN-major (transpose flag); D → fp32 [64][64].
// scripts/explore/hopper_dev.py runs both against torch before any attention kernel.
#include <cuda_fp16.h>

#include "common/mbarrier.cuh"
#include "common/smem.cuh"
#include "common/tma.cuh"
#include "common/wgmma.cuh"

using namespace hopper;

constexpr int SMEM_BYTES = 8192 + 16384 + 1024 + 64;   // A, B (or V), slack to align to 1024, the mbarrier
extern "C" __device__ int probe_wgmma_tma_smem_bytes[2] = {SMEM_BYTES, SMEM_BYTES};

__device__ __forceinline__ unsigned char* aligned_smem(unsigned char* raw) {
    return raw + ((1024 - (smem_u32(raw) & 1023)) & 1023);
}

// Row and column of accumulator element d[4·n + c] of this thread.
__device__ __forceinline__ int acc_row(int i) { return 16 * (threadIdx.x / 32) + (threadIdx.x % 32) / 4 + 8 * ((i >> 1) & 1); }
__device__ __forceinline__ int acc_col(int i) { return 8 * (i >> 2) + 2 * (threadIdx.x % 4) + (i & 1); }

extern "C" __global__ void __launch_bounds__(128, 1)
probe_scores(float* __restrict__ c, const __grid_constant__ TmaMap tma_a, const __grid_constant__ TmaMap tma_b) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char* smem = aligned_smem(smem_raw);
    const unsigned sa = smem_u32(smem), sb = sa + 8192, bar = sa + 8192 + 16384;
    if (threadIdx.x == 0) {
        mbarrier_init(bar, 1);
        mbarrier_init_fence();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        mbarrier_arrive_expect_tx(bar, 8192 + 16384);
        tma_load_rows(sa, &tma_a, bar, 0, 0);
        tma_load_rows(sb, &tma_b, bar, 0, 0);
    }
    mbarrier_wait_parity(bar, 0);
    float d[64];
    fence_operands(d);
    wgmma_fence();
#pragma unroll
    for (int k16 = 0; k16 < 4; ++k16)
        wgmma_m64n128k16_ss(d, desc_k_major(sa) + desc_k_major_step(k16), desc_k_major(sb) + desc_k_major_step(k16),
                            k16 > 0);
    wgmma_commit();
    wgmma_wait<0>();
    fence_operands(d);
#pragma unroll
    for (int i = 0; i < 64; ++i) c[acc_row(i) * 128 + acc_col(i)] = d[i];
}

extern "C" __global__ void __launch_bounds__(128, 1)
probe_pv(const __half* __restrict__ p_global, float* __restrict__ out, const __grid_constant__ TmaMap tma_v) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char* smem = aligned_smem(smem_raw);
    const unsigned sv = smem_u32(smem), bar = sv + 16384;
    if (threadIdx.x == 0) {
        mbarrier_init(bar, 1);
        mbarrier_init_fence();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        mbarrier_arrive_expect_tx(bar, 16384);
        tma_load_rows(sv, &tma_v, bar, 0, 0);
    }
    // A fragments of P [64][128]: k16 step kk, reg 0: (row g, cols 16kk + 2t, +1), 1: row g+8, 2/3: cols + 8
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4, r0 = 16 * (threadIdx.x / 32) + g;
    const unsigned* pw = reinterpret_cast<const unsigned*>(p_global);  // pairs of halves
    unsigned a[8][4];
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) {
        a[kk][0] = pw[(r0 * 128 + 16 * kk + 2 * t) / 2];
        a[kk][1] = pw[((r0 + 8) * 128 + 16 * kk + 2 * t) / 2];
        a[kk][2] = pw[(r0 * 128 + 16 * kk + 8 + 2 * t) / 2];
        a[kk][3] = pw[((r0 + 8) * 128 + 16 * kk + 8 + 2 * t) / 2];
    }
    mbarrier_wait_parity(bar, 0);
    float d[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) d[i] = 0.f;
    fence_operands(d);
    fence_operands(a);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) wgmma_m64n64k16_rs(d, a[kk], desc_mn_major(sv, 128) + desc_mn_major_step(kk));
    wgmma_commit();
    wgmma_wait<0>();
    fence_operands(d);
#pragma unroll
    for (int i = 0; i < 32; ++i) out[acc_row(i) * 64 + acc_col(i)] = d[i];
}
