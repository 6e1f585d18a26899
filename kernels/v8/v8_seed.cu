// v8_seed — the original project's best kernel (v8), rebuilt faithfully from ../shared/origin/designs.md.
//
// What it is: one CTA per (48-query tile, head); 12 warps (384 threads) all running the same code; the key axis
// walked 32 keys at a time with an online softmax. Q·Kᵀ is a 3×2 grid of 16×16 WMMA tiles (warps 0–5),
// P·V a 3×4 grid (one tile per warp). Shared memory: Q 48×64 fp16, K and V double-buffered (rows padded to 72
// halves), scores 48×48 fp32 (32 used, +16 padding), probabilities 48×32 fp16, m and l, the output accumulator
// 48×64 fp32. Q arrives by 16-byte (uint4) loads, K/V by cp.async into the double buffer — but the wait is
// wait_prior(0): the prefetch of tile j+1 is drained before tile j is computed, so loads barely overlap math.
// The softmax is one thread per row (48 of 384 threads work), expf with the scale applied to every score, and
// five __syncthreads per key step.
// Parent: none (the ladder's first rung). Any seq_q / seq_kv (tails masked with -inf, out-of-range rows zero).
//
// Predicted at B1 H8 S512 D64 on H100: 30 µs (≈ 3.2× cuDNN's ≈ 9.5 µs; on L4 v8 was 3.5× SDPA). 88 CTAs on
// 132 SMs, 16 serial key steps each with five barriers and a 32-step serial softmax loop: latency, not throughput.
// ncu: low sm__throughput and tensor-pipe %, stalls dominated by barrier and long-scoreboard waits,
// l1tex shared-memory bank conflicts from the fp32 score/accumulator tiles (ld 48 and 64 floats).
#include <cuda_fp16.h>
#include <mma.h>

using namespace nvcuda;

#ifndef BLOCK_M
#define BLOCK_M 48          // query rows per CTA
#endif
#define BLOCK_N 32          // keys per step
#define NWARPS 12
#define NTHREADS (NWARPS * 32)
#define D HEAD_DIM          // 64
#define LDK 72              // Q/K/V smem row stride in halves (64 + 8 padding)
#define LDS 48              // score row stride in floats (32 used + 16 padding, as in v8)
#define LDP 32              // probability row stride in halves
#define LDO 64              // output-accumulator row stride in floats
#define STAGES 2            // K/V double buffer

// Shared-memory carve-up (bytes), each region 32-byte aligned for WMMA (the <entry>_smem_bytes below).
#define ALIGN32(x) (((x) + 31) / 32 * 32)
#define OFF_O 0
#define OFF_S ALIGN32(OFF_O + BLOCK_M * LDO * 4)
#define OFF_M ALIGN32(OFF_S + BLOCK_M * LDS * 4)
#define OFF_L ALIGN32(OFF_M + BLOCK_M * 4)
#define OFF_A ALIGN32(OFF_L + BLOCK_M * 4)
#define OFF_Q ALIGN32(OFF_A + BLOCK_M * 4)
#define OFF_K ALIGN32(OFF_Q + BLOCK_M * LDK * 2)
#define OFF_V ALIGN32(OFF_K + STAGES * BLOCK_N * LDK * 2)
#define OFF_P ALIGN32(OFF_V + STAGES * BLOCK_N * LDK * 2)
#define SMEM_TOTAL ALIGN32(OFF_P + BLOCK_M * LDP * 2)

#include "v8/v8_wmma_tile.cuh"

static_assert(SMEM_TOTAL <= SMEM_LIMIT, "v8_seed: too much shared memory for one CTA");
extern "C" __device__ int v8_seed_smem_bytes[2] = {SMEM_TOTAL, SMEM_TOTAL};   // no split-KV

extern "C" __global__ void __launch_bounds__(NTHREADS)
v8_seed(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
        __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale) {
  extern __shared__ __align__(128) unsigned char smem[];
  float* sO = reinterpret_cast<float*>(smem + OFF_O);
  float* sS = reinterpret_cast<float*>(smem + OFF_S);
  float* sM = reinterpret_cast<float*>(smem + OFF_M);
  float* sL = reinterpret_cast<float*>(smem + OFF_L);
  float* sAlpha = reinterpret_cast<float*>(smem + OFF_A);
  __half* sQ = reinterpret_cast<__half*>(smem + OFF_Q);
  __half* sK = reinterpret_cast<__half*>(smem + OFF_K);
  __half* sV = reinterpret_cast<__half*>(smem + OFF_V);
  __half* sP = reinterpret_cast<__half*>(smem + OFF_P);

  const int head = blockIdx.y, q0 = blockIdx.x * BLOCK_M;
  const int tid = threadIdx.x, warp = tid / 32;
  const __half* qh = q + (size_t)head * seq_q * D;
  const __half* kh = k + (size_t)head * seq_kv * D;
  const __half* vh = v + (size_t)head * seq_kv * D;
  __half* oh = o + (size_t)head * seq_q * D;

  // Q tile (16-byte loads, zeros past seq_q); output accumulator, m and l initialised.
  load_q_tile(sQ, qh, q0, seq_q);
  zero_output(sO);
  for (int r = tid; r < BLOCK_M; r += NTHREADS) { sM[r] = -1e30f; sL[r] = 0.f; }

  const int nkb = (seq_kv + BLOCK_N - 1) / BLOCK_N;
  load_kv_tile(sK, sV, kh, vh, 0, seq_kv);
  cp_async_commit();

  for (int j = 0; j < nkb; ++j) {
    const int cur = j % STAGES;
    __half* curK = sK + cur * BLOCK_N * LDK;
    __half* curV = sV + cur * BLOCK_N * LDK;
    if (j + 1 < nkb) {   // prefetch tile j+1 into the other buffer...
      load_kv_tile(sK + (cur ^ 1) * BLOCK_N * LDK, sV + (cur ^ 1) * BLOCK_N * LDK, kh, vh, (j + 1) * BLOCK_N,
                   seq_kv);
      cp_async_commit();
    }
    cp_async_wait<0>();   // ...then wait for everything, including that prefetch (v8's choice)
    __syncthreads();

    // S = Q·Kᵀ: 3×2 tiles of 16×16, warps 0–5, k = 64 in four 16-steps.
    qk_scores(sQ, curK, sS, warp);
    __syncthreads();

    // Online softmax, one thread per query row: new max, probabilities (fp16), running sum, rescale factor.
    softmax_rows_thread(sS, sP, sM, sL, sAlpha, j, seq_kv, softmax_scale);
    __syncthreads();

    // Rescale the output accumulator by each row's alpha.
    rescale_output(sO, sAlpha);
    __syncthreads();

    // O += P·V: 3×4 tiles, one per warp, accumulator round-trips through shared memory.
    pv_accumulate(sP, curV, sO, warp);
    __syncthreads();
  }

  // O / l → fp16, 8 halves (16 bytes) per thread per store, rows past seq_q skipped.
  for (int c = tid; c < BLOCK_M * (D / 8); c += NTHREADS) {
    int r = c / (D / 8), col = (c % (D / 8)) * 8;
    if (q0 + r >= seq_q) continue;
    const float inv = 1.f / sL[r];
    __align__(16) __half out[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) out[e] = __float2half(sO[r * LDO + col + e] * inv);
    *reinterpret_cast<uint4*>(oh + (size_t)(q0 + r) * D + col) = *reinterpret_cast<uint4*>(out);
  }
}
