// v8_02_swizzle — v8_01 with shared-memory row strides chosen so WMMA loads and stores hit 32 distinct banks.
//
// What changed from v8_01_vec_async (one idea): padding, not new code. WMMA needs a linear leading dimension, so
// the "swizzle" is a row stride whose offset between consecutive rows lands on a different bank group:
//   scores (fp32)      ld 48 → 40 floats  (row step 160 B ≡ 8 banks: an 8-row fragment phase covers all 32 banks)
//   output acc (fp32)  ld 64 → 72 floats  (ld 64 put every row of a fragment on the SAME banks: 8-way conflicts
//                                           on every accumulator load/store of P·V, twice per warp per step)
//   probabilities (fp16) ld 32 → 40 halves (row step 80 B: the 8 rows one ldmatrix phase reads fall in 8 distinct
//                                           16-byte bank groups; at 64 B they fell in 2 → 4-way conflicts)
// Q/K/V keep the seed's 72-half rows (144 B ≡ 16 B mod 128: already conflict-free for ldmatrix).
//
// Predicted at B1 H8 S512 D64 on H100: 20 µs (v8_01 24 µs).
// ncu: l1tex__data_bank_conflicts_pipe_lsu_mem_shared (ld and st) should drop several-fold; the remaining
// conflicts come from the one-thread-per-row softmax (row stride 40 floats: 8-way instead of 16-way), which
// v8_03 removes. Stall "mio_throttle"/"short_scoreboard" should shrink.
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
#define LDS 40              // score row stride in floats (32 used + 8: rows 8 banks apart)
#define LDP 40              // probability row stride in halves (80 B: conflict-free ldmatrix)
#define LDO 72              // output-accumulator row stride in floats (rows 8 banks apart)
#define STAGES 3            // K/V ring: compute one tile while two load

// Shared-memory carve-up (bytes), each region 32-byte aligned for WMMA. flashcore/specs/v8.py mirrors this.
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

// cp.async of 16 bytes; src_bytes = 0 writes zeros (rows past the end of the sequence).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void pipeline_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void pipeline_wait_prior() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// One K tile and one V tile (BLOCK_N rows × 64 halves each) → smem, 16 bytes per cp.async.
__device__ __forceinline__ void load_kv_tile(__half* sK, __half* sV, const __half* k, const __half* v, int kv0,
                                             int seq_kv) {
  constexpr int CHUNKS = BLOCK_N * (D / 8);   // 16-byte chunks per tile
  for (int c = threadIdx.x; c < CHUNKS; c += NTHREADS) {
    int r = c / (D / 8), col = (c % (D / 8)) * 8;
    bool ok = kv0 + r < seq_kv;
    size_t g = (size_t)(ok ? kv0 + r : 0) * D + col;
    cp_async16(sK + r * LDK + col, k + g, ok);
    cp_async16(sV + r * LDK + col, v + g, ok);
  }
}

extern "C" __global__ void __launch_bounds__(NTHREADS)
v8_02_swizzle(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
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

  // Q tile: 16-byte (uint4) loads, zeros past seq_q. Output accumulator, m and l initialised.
  for (int c = tid; c < BLOCK_M * (D / 8); c += NTHREADS) {
    int r = c / (D / 8), col = (c % (D / 8)) * 8;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (q0 + r < seq_q) val = *reinterpret_cast<const uint4*>(qh + (size_t)(q0 + r) * D + col);
    *reinterpret_cast<uint4*>(sQ + r * LDK + col) = val;
  }
  for (int i = tid; i < BLOCK_M * D; i += NTHREADS) sO[(i / D) * LDO + i % D] = 0.f;
  for (int r = tid; r < BLOCK_M; r += NTHREADS) { sM[r] = -1e30f; sL[r] = 0.f; }

  const int nkb = (seq_kv + BLOCK_N - 1) / BLOCK_N;
  // Prologue: tiles 0 and 1 in flight (one commit group each; an empty group keeps the count uniform).
#pragma unroll
  for (int t = 0; t < STAGES - 1; ++t) {
    if (t < nkb) load_kv_tile(sK + t * BLOCK_N * LDK, sV + t * BLOCK_N * LDK, kh, vh, t * BLOCK_N, seq_kv);
    pipeline_commit();
  }

  for (int j = 0; j < nkb; ++j) {
    const int cur = j % STAGES;
    __half* curK = sK + cur * BLOCK_N * LDK;
    __half* curV = sV + cur * BLOCK_N * LDK;
    pipeline_wait_prior<STAGES - 2>();   // tile j has landed; tile j+1 may still be in flight
    __syncthreads();                     // ...for every thread's copies; and step j-1 is done with its buffer
    {
      const int t = j + STAGES - 1, slot = t % STAGES;   // refill the slot step j-1 used, two tiles ahead
      if (t < nkb) load_kv_tile(sK + slot * BLOCK_N * LDK, sV + slot * BLOCK_N * LDK, kh, vh, t * BLOCK_N, seq_kv);
      pipeline_commit();
    }

    // S = Q·Kᵀ: 3×2 tiles of 16×16, warps 0–5, k = 64 in four 16-steps.
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

    // Online softmax, one thread per query row: new max, probabilities (fp16), running sum, rescale factor.
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
    __syncthreads();

    // Rescale the output accumulator by each row's alpha.
    for (int i = tid; i < BLOCK_M * D; i += NTHREADS) sO[(i / D) * LDO + i % D] *= sAlpha[i / D];
    __syncthreads();

    // O += P·V: 3×4 tiles, one per warp, accumulator round-trips through shared memory.
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
