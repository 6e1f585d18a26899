// v8_04_grid_132sm — v8_03 with the grid shaped for 132 SMs: 32-row query tiles, 8 warps, launch bounds.
//
// What changed from v8_03_exp2_fewer_barriers (one idea: the launch geometry). At the mission shape a 48-row tile
// makes ceil(512/48)·8 = 88 CTAs: 44 of the H100's 132 SMs idle, and each busy SM runs one 12-warp CTA through
// 16 serial key steps. With BLOCK_M = 32 and 8 warps (still 4 softmax rows per warp, one P·V tile per warp,
// warps 0–3 on Q·Kᵀ) the grid is 16·8 = 128 CTAs: one wave that covers 128 SMs. __launch_bounds__(256, 4) lets
// ptxas plan for 4 CTAs/SM (≤ 64 registers) so larger shapes run several CTAs per SM to hide latency.
// (BLOCK_M is a compile-time knob: 16 → 4 warps, 256 CTAs; 64 → 16 warps, 64 CTAs.)
//
// Predicted at B1 H8 S512 D64 on H100: 12 µs (v8_03 15 µs): the same per-CTA step chain, a third less work per
// CTA (32 rows instead of 48) and 1.45× more SMs busy; the step latency itself does not shrink, so not 2×.
// ncu: launch__grid_size 88 → 128, sm__cycles_active.avg (SMs busy) up, duration down; achieved occupancy per
// active SM about the same (one CTA per SM at this shape).
#include <cuda_fp16.h>
#include <mma.h>

using namespace nvcuda;

#ifndef BLOCK_M
#define BLOCK_M 32          // query rows per CTA (was 48)
#endif
#define BLOCK_N 32          // keys per step
#define NWARPS (BLOCK_M / 4)   // 4 softmax rows per warp; (BLOCK_M/16)·4 P·V tiles, one per warp
#ifndef MIN_BLOCKS
#define MIN_BLOCKS 4        // CTAs per SM ptxas should plan registers for
#endif
#define NTHREADS (NWARPS * 32)
#define D HEAD_DIM          // 64
#define LDK 72              // Q/K/V smem row stride in halves (64 + 8 padding)
#define LDS 40              // score row stride in floats (32 used + 8: rows 8 banks apart)
#define LDP 40              // probability row stride in halves (80 B: conflict-free ldmatrix)
#define LDO 72              // output-accumulator row stride in floats (rows 8 banks apart)
#define STAGES 3            // K/V ring: compute one tile while two load
#define ROWS_PER_WARP (BLOCK_M / NWARPS)   // softmax rows owned by each warp (4)

// Shared-memory carve-up (bytes), each region 32-byte aligned for WMMA (the <entry>_smem_bytes below).
#define ALIGN32(x) (((x) + 31) / 32 * 32)
#define OFF_O 0
#define OFF_S ALIGN32(OFF_O + BLOCK_M * LDO * 4)
#define OFF_Q ALIGN32(OFF_S + BLOCK_M * LDS * 4)
#define OFF_K ALIGN32(OFF_Q + BLOCK_M * LDK * 2)
#define OFF_V ALIGN32(OFF_K + STAGES * BLOCK_N * LDK * 2)
#define OFF_P ALIGN32(OFF_V + STAGES * BLOCK_N * LDK * 2)
#define SMEM_TOTAL ALIGN32(OFF_P + BLOCK_M * LDP * 2)

#include "v8/v8_wmma_tile.cuh"

static_assert(SMEM_TOTAL <= SMEM_LIMIT, "v8_04_grid_132sm: too much shared memory for one CTA");
extern "C" __device__ int v8_04_grid_132sm_smem_bytes[2] = {SMEM_TOTAL, SMEM_TOTAL};   // no split-KV

extern "C" __global__ void __launch_bounds__(NTHREADS, MIN_BLOCKS)
v8_04_grid_132sm(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                 __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale) {
  extern __shared__ __align__(128) unsigned char smem[];
  float* sO = reinterpret_cast<float*>(smem + OFF_O);
  float* sS = reinterpret_cast<float*>(smem + OFF_S);
  __half* sQ = reinterpret_cast<__half*>(smem + OFF_Q);
  __half* sK = reinterpret_cast<__half*>(smem + OFF_K);
  __half* sV = reinterpret_cast<__half*>(smem + OFF_V);
  __half* sP = reinterpret_cast<__half*>(smem + OFF_P);

  const int head = blockIdx.y, q0 = blockIdx.x * BLOCK_M;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const __half* qh = q + (size_t)head * seq_q * D;
  const __half* kh = k + (size_t)head * seq_kv * D;
  const __half* vh = v + (size_t)head * seq_kv * D;
  __half* oh = o + (size_t)head * seq_q * D;

  // Q tile (16-byte loads, zeros past seq_q); output accumulator, m and l initialised.
  load_q_tile(sQ, qh, q0, seq_q);
  zero_output(sO);
  const float scale_log2 = softmax_scale * 1.4426950408889634f;   // exp(x·scale) = exp2(x·scale·log2 e)
  float m_run[ROWS_PER_WARP], l_run[ROWS_PER_WARP];                 // this warp's rows: running max and sum
#pragma unroll
  for (int rr = 0; rr < ROWS_PER_WARP; ++rr) { m_run[rr] = -1e30f; l_run[rr] = 0.f; }

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

    // S = Q·Kᵀ: (BLOCK_M/16)×2 tiles of 16×16, one per warp for the first warps, k = 64 in four 16-steps.
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
    __syncthreads();

    // Online softmax, one warp per ROWS_PER_WARP rows, one lane per key column; the same warp rescales its output rows.
    {
      const bool valid = j * BLOCK_N + lane < seq_kv;
#pragma unroll
      for (int rr = 0; rr < ROWS_PER_WARP; ++rr) {
        const int r = warp * ROWS_PER_WARP + rr;
        const float s = valid ? sS[r * LDS + lane] * scale_log2 : -1e30f;
        const float m_new = fmaxf(m_run[rr], warp_max(s));
        const float p = exp2f(s - m_new);
        const float alpha = exp2f(m_run[rr] - m_new);
        l_run[rr] = l_run[rr] * alpha + warp_sum(p);
        m_run[rr] = m_new;
        sP[r * LDP + lane] = __float2half(p);
        sO[r * LDO + lane] *= alpha;
        sO[r * LDO + lane + 32] *= alpha;
      }
    }
    __syncthreads();

    // O += P·V: (BLOCK_M/16)×4 tiles, one per warp, accumulator round-trips through shared memory.
    {
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
    // no barrier here: the next step's top barrier orders this P·V before anyone touches sO, sP or this K/V slot
  }

  __syncthreads();   // every warp's last P·V has landed in sO

  // O / l → fp16: each warp writes its own rows (it holds their l), two halves per lane, 128 B per row.
#pragma unroll
  for (int rr = 0; rr < ROWS_PER_WARP; ++rr) {
    const int r = warp * ROWS_PER_WARP + rr;
    if (q0 + r >= seq_q) continue;
    const float inv = 1.f / l_run[rr];
    const __half2 out = __floats2half2_rn(sO[r * LDO + 2 * lane] * inv, sO[r * LDO + 2 * lane + 1] * inv);
    *reinterpret_cast<__half2*>(oh + (size_t)(q0 + r) * D + 2 * lane) = out;
  }
}
