// v12_abl_2_vec — ablation ladder step 2: + 16-byte (uint4) global loads and stores.
//
// What changed from its parent (v12_abl_1_grid): Q, K, V tiles are copied 8 halves at a time (one uint4 per thread
//   per 8 elements instead of eight 2-byte loads), and O is written 8 halves at a time.
// Predicted effect: the load phase of each key tile shrinks (fewer load instructions in flight per thread, one
//   round of L2 latency instead of several); ncu: stall_long_scoreboard per issue down, instructions down;
//   maybe 10–30% of step 1's time.
#define V12_GRID_QTILE 1
#define V12_VEC_LOADS 1
#define V12_ENTRY v12_abl_2_vec
// ---- v12 body: identical in every kernels/v12_*.cu below this line (tests/test_v12_chapter.py checks) ----
#include <cuda_fp16.h>
#include <mma.h>

#ifndef V12_GRID_QTILE          // 1: grid over (query tile, head) instead of persistent per-head CTAs
#define V12_GRID_QTILE 0
#endif
#ifndef V12_VEC_LOADS           // 1: 16-byte (uint4) global loads and stores instead of 2-byte scalar copies
#define V12_VEC_LOADS 0
#endif
#ifndef V12_PAR_SOFTMAX         // 1: all 16 warps do the softmax (2 rows each, lanes across columns, shuffles)
#define V12_PAR_SOFTMAX 0
#endif
#ifndef V12_PREFETCH            // 1: cp.async double buffer: K/V tile i+1 is in flight while tile i is computed
#define V12_PREFETCH 0
#endif
#ifndef V12_SKIP_4TH_BARRIER    // 1: the original's failed shortcut (a race: kept only to show the failure)
#define V12_SKIP_4TH_BARRIER 0
#endif
#if V12_PREFETCH && !V12_VEC_LOADS
#error "V12_PREFETCH needs V12_VEC_LOADS (cp.async copies 16 bytes)"
#endif

using namespace nvcuda;

#define BM 32                    // query rows per tile
#define BN 48                    // keys per tile
#define D 64                     // head dim
#define LDH (D + 8)              // Q/K/V smem row stride (halves)
#define LDS (BN + 16)            // score/prob smem row stride (elements)
#define LDO D                    // accumulator row stride (floats)
#define NTHREADS 512
#define NEG_BIG (-1e30f)
#define KV_STAGES (V12_PREFETCH ? 2 : 1)

// shared-memory layout (bytes); every offset is a multiple of 128
#define OFF_Q 0
#define OFF_K (OFF_Q + BM * LDH * 2)
#define OFF_V (OFF_K + KV_STAGES * BN * LDH * 2)
#define OFF_S (OFF_V + KV_STAGES * BN * LDH * 2)
#define OFF_P (OFF_S + BM * LDS * 4)
#define OFF_O (OFF_P + BM * LDS * 2)
#define OFF_M (OFF_O + BM * LDO * 4)
#define OFF_L (OFF_M + BM * 4)
#define SMEM_TOTAL (OFF_L + BM * 4)

__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gmem_src) {
  unsigned s = (unsigned)__cvta_generic_to_shared(smem_dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(s), "l"(gmem_src));
}
__device__ __forceinline__ uint4 zero16() { uint4 z; z.x = z.y = z.z = z.w = 0u; return z; }
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }

// rows [row0, row0+nrows) of a [seq, 64] matrix → smem with row stride LDH; rows ≥ seq are zero-filled
__device__ __forceinline__ void load_tile(__half* dst, const __half* src, int row0, int nrows, int seq) {
#if V12_VEC_LOADS
  for (int i = threadIdx.x; i < nrows * (D / 8); i += NTHREADS) {
    int r = i / (D / 8), c = (i % (D / 8)) * 8;
    uint4 val = zero16();
    if (row0 + r < seq) val = *reinterpret_cast<const uint4*>(src + (size_t)(row0 + r) * D + c);
    *reinterpret_cast<uint4*>(dst + r * LDH + c) = val;
  }
#else
  for (int i = threadIdx.x; i < nrows * D; i += NTHREADS) {
    int r = i / D, c = i % D;
    dst[r * LDH + c] = (row0 + r < seq) ? src[(size_t)(row0 + r) * D + c] : __float2half(0.f);
  }
#endif
}

#if V12_PREFETCH
// the same, by cp.async (no registers, no wait): out-of-range rows get plain zero stores
__device__ __forceinline__ void load_tile_async(__half* dst, const __half* src, int row0, int nrows, int seq) {
  for (int i = threadIdx.x; i < nrows * (D / 8); i += NTHREADS) {
    int r = i / (D / 8), c = (i % (D / 8)) * 8;
    if (row0 + r < seq) cp_async16(dst + r * LDH + c, src + (size_t)(row0 + r) * D + c);
    else *reinterpret_cast<uint4*>(dst + r * LDH + c) = zero16();
  }
}
#endif

// S = scale · Q·Kᵀ for the 32×48 tile: warps 0–5, a 2×3 grid of 16×16 WMMA tiles, 4 k-steps over D
__device__ __forceinline__ void qk_scores(const __half* Qs, const __half* Ks, float* Ss, float scale, int warp) {
  if (warp >= 6) return;
  const int rt = warp / 3, ct = warp % 3;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.f);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;   // Kᵀ: K rows read as columns
    wmma::load_matrix_sync(a, Qs + rt * 16 * LDH + kk * 16, LDH);
    wmma::load_matrix_sync(b, Ks + ct * 16 * LDH + kk * 16, LDH);
    wmma::mma_sync(acc, a, b, acc);
  }
#pragma unroll
  for (int i = 0; i < acc.num_elements; ++i) acc.x[i] *= scale;
  wmma::store_matrix_sync(Ss + rt * 16 * LDS + ct * 16, acc, LDS, wmma::mem_row_major);
}

// online softmax for one key tile: new running max, P = exp(S − m) in fp16, l updated, accumulator row rescaled
__device__ __forceinline__ void online_softmax_update(const float* Ss, __half* Ps, float* Os, float* ms, float* ls,
                                                      int kv_valid, int warp, int lane) {
#if V12_PAR_SOFTMAX
  for (int r = warp * 2; r < warp * 2 + 2; ++r) {             // 16 warps × 2 rows; lanes across the columns
    const float* srow = Ss + r * LDS;
    const int c0 = lane, c1 = lane + 32;
    const bool v0 = c0 < kv_valid, v1 = c1 < BN && c1 < kv_valid;
    float s0 = v0 ? srow[c0] : NEG_BIG, s1 = v1 ? srow[c1] : NEG_BIG;
    const float m_old = ms[r];
    float mx = fmaxf(s0, s1);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    mx = fmaxf(mx, m_old);
    const float p0 = v0 ? __expf(s0 - mx) : 0.f, p1 = v1 ? __expf(s1 - mx) : 0.f;
    Ps[r * LDS + c0] = __float2half(p0);
    if (c1 < BN) Ps[r * LDS + c1] = __float2half(p1);
    float sum = p0 + p1;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    const float alpha = __expf(m_old - mx);
    Os[r * LDO + lane] *= alpha;
    Os[r * LDO + lane + 32] *= alpha;
    const float l_old = ls[r];
    __syncwarp();
    if (lane == 0) { ms[r] = mx; ls[r] = l_old * alpha + sum; }
  }
#else
  if (warp != 15) return;                                      // the one softmax warp: lane = row, serial loops
  const int r = lane;
  const float* srow = Ss + r * LDS;
  const float m_old = ms[r];
  float mx = m_old;
  for (int c = 0; c < kv_valid; ++c) mx = fmaxf(mx, srow[c]);
  float sum = 0.f;
  for (int c = 0; c < BN; ++c) {
    const float p = (c < kv_valid) ? __expf(srow[c] - mx) : 0.f;
    Ps[r * LDS + c] = __float2half(p);
    sum += p;
  }
  const float alpha = __expf(m_old - mx);
  ls[r] = ls[r] * alpha + sum;
  ms[r] = mx;
  for (int c = 0; c < D; ++c) Os[r * LDO + c] *= alpha;
#endif
}

// O += P·V on the smem accumulator: warps 0–7, a 2×4 grid of 16×16 tiles, load → 3 mma → store
__device__ __forceinline__ void pv_accumulate(const __half* Ps, const __half* Vs, float* Os, int warp) {
  if (warp >= 8) return;
  const int rt = warp / 4, ct = warp % 4;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::load_matrix_sync(acc, Os + rt * 16 * LDO + ct * 16, LDO, wmma::mem_row_major);
#pragma unroll
  for (int kk = 0; kk < BN / 16; ++kk) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b;
    wmma::load_matrix_sync(a, Ps + rt * 16 * LDS + kk * 16, LDS);
    wmma::load_matrix_sync(b, Vs + kk * 16 * LDH + ct * 16, LDH);
    wmma::mma_sync(acc, a, b, acc);
  }
  wmma::store_matrix_sync(Os + rt * 16 * LDO + ct * 16, acc, LDO, wmma::mem_row_major);
}

// O / l → global, rows ≥ seq_q skipped
__device__ __forceinline__ void store_output(__half* o, const float* Os, const float* ls, int q0, int seq_q) {
#if V12_VEC_LOADS
  for (int i = threadIdx.x; i < BM * (D / 8); i += NTHREADS) {
    int r = i / (D / 8), c = (i % (D / 8)) * 8;
    if (q0 + r >= seq_q) continue;
    const float inv = 1.f / ls[r];
    __align__(16) __half h[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) h[j] = __float2half(Os[r * LDO + c + j] * inv);
    *reinterpret_cast<uint4*>(o + (size_t)(q0 + r) * D + c) = *reinterpret_cast<const uint4*>(h);
  }
#else
  for (int i = threadIdx.x; i < BM * D; i += NTHREADS) {
    int r = i / D, c = i % D;
    if (q0 + r < seq_q) o[(size_t)(q0 + r) * D + c] = __float2half(Os[r * LDO + c] / ls[r]);
  }
#endif
}

extern "C" __global__ void __launch_bounds__(NTHREADS, 2)
V12_ENTRY(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
          __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale) {
  extern __shared__ __align__(128) unsigned char smem[];
  __half* Qs = reinterpret_cast<__half*>(smem + OFF_Q);
  __half* Ks = reinterpret_cast<__half*>(smem + OFF_K);
  __half* Vs = reinterpret_cast<__half*>(smem + OFF_V);
  float* Ss = reinterpret_cast<float*>(smem + OFF_S);
  __half* Ps = reinterpret_cast<__half*>(smem + OFF_P);
  float* Os = reinterpret_cast<float*>(smem + OFF_O);
  float* ms = reinterpret_cast<float*>(smem + OFF_M);
  float* ls = reinterpret_cast<float*>(smem + OFF_L);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int n_qt = (seq_q + BM - 1) / BM, n_kt = (seq_kv + BN - 1) / BN;
#if V12_GRID_QTILE
  const int h0 = blockIdx.y, h_step = gridDim.y, qt0 = blockIdx.x, qt_step = gridDim.x;   // one tile per CTA
#else
  const int h0 = blockIdx.x, h_step = gridDim.x, qt0 = 0, qt_step = 1;                    // persistent per head
#endif
  for (int h = h0; h < bh; h += h_step) {
    const __half* qh = q + (size_t)h * seq_q * D;
    const __half* kh = k + (size_t)h * seq_kv * D;
    const __half* vh = v + (size_t)h * seq_kv * D;
    for (int qt = qt0; qt < n_qt; qt += qt_step) {
      const int q0 = qt * BM;
      load_tile(Qs, qh, q0, BM, seq_q);
      for (int i = threadIdx.x; i < BM * LDO; i += NTHREADS) Os[i] = 0.f;
      if (threadIdx.x < BM) { ms[threadIdx.x] = NEG_BIG; ls[threadIdx.x] = 0.f; }
#if V12_PREFETCH
      load_tile_async(Ks, kh, 0, BN, seq_kv);
      load_tile_async(Vs, vh, 0, BN, seq_kv);
      cp_async_commit();
#endif
      for (int kt = 0; kt < n_kt; ++kt) {
        const int k0 = kt * BN;
        const int kv_valid = min(BN, seq_kv - k0);
#if V12_PREFETCH
        const int stage = kt & 1;
        const __half* Kc = Ks + stage * BN * LDH;
        const __half* Vc = Vs + stage * BN * LDH;
        cp_async_wait_all();
        __syncthreads();                                   // 1: tile kt landed (and Q, O, m, l at kt = 0)
        if (kt + 1 < n_kt) {                               // tile kt+1 into the other stage, read again at kt+1
          load_tile_async(Ks + (stage ^ 1) * BN * LDH, kh, k0 + BN, BN, seq_kv);
          load_tile_async(Vs + (stage ^ 1) * BN * LDH, vh, k0 + BN, BN, seq_kv);
          cp_async_commit();
        }
#else
        const __half* Kc = Ks;
        const __half* Vc = Vs;
        load_tile(Ks, kh, k0, BN, seq_kv);
        load_tile(Vs, vh, k0, BN, seq_kv);
        __syncthreads();                                   // 1: K, V (and Q, O, m, l at kt = 0) in smem
#endif
        qk_scores(Qs, Kc, Ss, softmax_scale, warp);
        __syncthreads();                                   // 2: scores complete
        online_softmax_update(Ss, Ps, Os, ms, ls, kv_valid, warp, lane);
        __syncthreads();                                   // 3: probabilities and rescaled accumulator ready
        pv_accumulate(Ps, Vc, Os, warp);
#if !V12_SKIP_4TH_BARRIER
        __syncthreads();                                   // 4: P·V done before V / O are touched again
#endif
      }
      store_output(o + (size_t)h * seq_q * D, Os, ls, q0, seq_q);
      __syncthreads();                                     // Q, O, m, l are re-initialised by the next tile
    }
  }
}
