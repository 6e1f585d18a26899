// v8_01_vec_async — v8_seed with a real multi-stage cp.async pipeline.
//
// What changed from v8_seed (one idea): K/V go through a 3-stage ring of shared-memory buffers. Before the loop
// tiles 0 and 1 are in flight; at key step j the kernel waits with wait_prior(1) — tile j has landed, tile j+1
// may still be travelling — then issues tile j+2 and computes tile j while two tiles load. The seed drained its
// prefetch (wait_prior(0)) before computing, so each step paid a full global-memory round trip.
// Everything else (tiles, warps, softmax, barriers, smem layout apart from the third K/V stage) is the seed's.
//
// Predicted at B1 H8 S512 D64 on H100: 24 µs (seed 30 µs): one L2/HBM latency (~1 µs-scale per step at
// low occupancy) hidden behind the math in 15 of 16 steps.
// ncu: warp-state stall "long_scoreboard"/"barrier" waiting on LDGSTS should fall; smem per block rises by one
// K/V stage (launch__shared_mem_per_block_dynamic). SASS: same LDGSTS count, wait_group 1 (DEPBAR.LE SB0, 0x1).
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
#define STAGES 3            // K/V ring: compute one tile while two load

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

static_assert(SMEM_TOTAL <= SMEM_LIMIT, "v8_01_vec_async: too much shared memory for one CTA");
extern "C" __device__ int v8_01_vec_async_smem_bytes[2] = {SMEM_TOTAL, SMEM_TOTAL};   // no split-KV

extern "C" __global__ void __launch_bounds__(NTHREADS)
v8_01_vec_async(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
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
  // Prologue: tiles 0 and 1 in flight (one commit group each; an empty group keeps the count uniform).
#pragma unroll
  for (int t = 0; t < STAGES - 1; ++t) {
    if (t < nkb) load_kv_tile(sK + t * BLOCK_N * LDK, sV + t * BLOCK_N * LDK, kh, vh, t * BLOCK_N, seq_kv);
    cp_async_commit();
  }

  for (int j = 0; j < nkb; ++j) {
    const int cur = j % STAGES;
    __half* curK = sK + cur * BLOCK_N * LDK;
    __half* curV = sV + cur * BLOCK_N * LDK;
    cp_async_wait<STAGES - 2>();   // tile j has landed; tile j+1 may still be in flight
    __syncthreads();                     // ...for every thread's copies; and step j-1 is done with its buffer
    {
      const int t = j + STAGES - 1, slot = t % STAGES;   // refill the slot step j-1 used, two tiles ahead
      if (t < nkb) load_kv_tile(sK + slot * BLOCK_N * LDK, sV + slot * BLOCK_N * LDK, kh, vh, t * BLOCK_N, seq_kv);
      cp_async_commit();
    }

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
