// kernels/v8/v8_wmma_tile.cuh — the tile operations of the WMMA kernels (v8_seed … v8_04), named after the algorithm.
//
// One CTA per (query tile, head); the key axis walked BLOCK_N = 32 keys at a time with an online softmax; scores,
// probabilities and the output accumulator in shared memory (WMMA fragments round-trip through it).
//
//   load_q_tile          the CTA's BLOCK_M query rows → smem by 16-byte (uint4) loads, zeros past seq_q
//   zero_output          the fp32 output accumulator = 0
//   load_kv_tile         one K tile and one V tile (BLOCK_N rows) → smem by 16-byte cp.async, zeros past seq_kv
//   qk_scores            S = Q·Kᵀ: (BLOCK_M/16) × 2 WMMA tiles of 16×16, one per warp for the first warps
//   softmax_rows_thread  one thread per query row (the seed's): new max, P (fp16), running sum, alpha in smem
//   rescale_output       O *= alpha, row by row, by every thread (the seed's separate pass)
//   pv_accumulate        O += P·V: (BLOCK_M/16) × 4 WMMA tiles, one per warp, the accumulator through smem
//
// Written out in the kernels, not here: the epilogue (O / l → fp16 → global), and in v8_03 / v8_04 the warp softmax
// (v8_03's idea) with Q·Kᵀ and P·V beside it. As calls, their small local arrays (WMMA fragments, the staging
// array) would be allocated at the kernel's entry instead, which changes ptxas's register allocation there — and
// scripts/check_sass_identity.py holds every kernel to its machine code from before the move.
//
// A kernel defines its tile and layout before including this header: BLOCK_M, BLOCK_N, NTHREADS, D, LDK, LDS, LDP,
// LDO; the steps change them one idea at a time.
#pragma once

#include <cuda_fp16.h>
#include <mma.h>

#include "common/cp_async.cuh"
#include "common/smem.cuh"
#include "common/softmax_math.cuh"

using namespace nvcuda;

// Q tile: 16-byte (uint4) loads, zeros past seq_q.
__device__ __forceinline__ void load_q_tile(__half* sQ, const __half* qh, int q0, int seq_q) {
  for (int c = threadIdx.x; c < BLOCK_M * (D / 8); c += NTHREADS) {
    int r = c / (D / 8), col = (c % (D / 8)) * 8;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (q0 + r < seq_q) val = *reinterpret_cast<const uint4*>(qh + (size_t)(q0 + r) * D + col);
    *reinterpret_cast<uint4*>(sQ + r * LDK + col) = val;
  }
}

__device__ __forceinline__ void zero_output(float* sO) {
  for (int i = threadIdx.x; i < BLOCK_M * D; i += NTHREADS) sO[(i / D) * LDO + i % D] = 0.f;
}

// One K tile and one V tile (BLOCK_N rows × 64 halves each) → smem, 16 bytes per cp.async; rows past the end of the
// sequence are zero-filled by cp.async (src-size 0).
__device__ __forceinline__ void load_kv_tile(__half* sK, __half* sV, const __half* k, const __half* v, int kv0,
                                             int seq_kv) {
  constexpr int CHUNKS = BLOCK_N * (D / 8);   // 16-byte chunks per tile
  for (int c = threadIdx.x; c < CHUNKS; c += NTHREADS) {
    int r = c / (D / 8), col = (c % (D / 8)) * 8;
    bool ok = kv0 + r < seq_kv;
    size_t g = (size_t)(ok ? kv0 + r : 0) * D + col;
    cp_async16_zfill(sK + r * LDK + col, k + g, ok);
    cp_async16_zfill(sV + r * LDK + col, v + g, ok);
  }
}

// S = Q·Kᵀ: (BLOCK_M/16)×2 tiles of 16×16, one per warp for the first warps, k = 64 in four 16-steps.
__device__ __forceinline__ void qk_scores(const __half* sQ, const __half* curK, float* sS, int warp) {
  if (warp < (BLOCK_M / 16) * (BLOCK_N / 16)) {
    const int tm = warp / (BLOCK_N / 16), tn = warp % (BLOCK_N / 16);
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.f);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;   // Kᵀ read from row-major K
      wmma::load_matrix_sync(a, sQ + tm * 16 * LDK + kk * 16, LDK);
      wmma::load_matrix_sync(b, curK + tn * 16 * LDK + kk * 16, LDK);
      wmma::mma_sync(acc, a, b, acc);
    }
    wmma::store_matrix_sync(sS + tm * 16 * LDS + tn * 16, acc, LDS, wmma::mem_row_major);
  }
}

// Online softmax, one thread per query row (key tile j): new max, probabilities (fp16), running sum, rescale factor.
__device__ __forceinline__ void softmax_rows_thread(const float* sS, __half* sP, float* sM, float* sL, float* sAlpha,
                                                    int j, int seq_kv, float softmax_scale) {
  const int tid = threadIdx.x;
  if (tid < BLOCK_M) {
    const int r = tid;
    const float m_old = sM[r];
    float m_new = m_old;
    for (int c = 0; c < BLOCK_N; ++c) {
      float s = (j * BLOCK_N + c < seq_kv) ? sS[r * LDS + c] * softmax_scale : -1e30f;
      m_new = fmaxf(m_new, s);
    }
    float sum = 0.f;
    for (int c = 0; c < BLOCK_N; ++c) {
      float p = (j * BLOCK_N + c < seq_kv) ? expf(sS[r * LDS + c] * softmax_scale - m_new) : 0.f;
      sum += p;
      sP[r * LDP + c] = __float2half(p);
    }
    const float alpha = expf(m_old - m_new);
    sL[r] = sL[r] * alpha + sum;
    sM[r] = m_new;
    sAlpha[r] = alpha;
  }
}
// Rescale the output accumulator by each row's alpha.
__device__ __forceinline__ void rescale_output(float* sO, const float* sAlpha) {
  for (int i = threadIdx.x; i < BLOCK_M * D; i += NTHREADS) sO[(i / D) * LDO + i % D] *= sAlpha[i / D];
}

// O += P·V: (BLOCK_M/16)×4 tiles, one per warp, accumulator round-trips through shared memory.
__device__ __forceinline__ void pv_accumulate(const __half* sP, const __half* curV, float* sO, int warp) {
  const int tm = warp / (D / 16), tn = warp % (D / 16);
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::load_matrix_sync(acc, sO + tm * 16 * LDO + tn * 16, LDO, wmma::mem_row_major);
#pragma unroll
  for (int kk = 0; kk < BLOCK_N / 16; ++kk) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b;
    wmma::load_matrix_sync(a, sP + tm * 16 * LDP + kk * 16, LDP);
    wmma::load_matrix_sync(b, curV + kk * 16 * LDK + tn * 16, LDK);
    wmma::mma_sync(acc, a, b, acc);
  }
  wmma::store_matrix_sync(sO + tm * 16 * LDO + tn * 16, acc, LDO, wmma::mem_row_major);
}
