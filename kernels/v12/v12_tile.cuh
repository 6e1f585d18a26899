// kernels/v12/v12_tile.cuh — v12's tile, its shared-memory layout and its tile operations, named after the algorithm.
//
// Every v12 kernel (kernels/v12/*.cu) is a body over these operations; a ladder step's diff against its parent swaps
// one call (load_tile_scalar → load_tile_vec, softmax_rows_serial → softmax_rows_parallel, …) or one line of the
// schedule. v11 (kernels/v11/) computes with the same tiles and operations.
//
//   tile       32 query rows × 48 keys, head dim 64; 512 threads = 16 warps
//   smem       Q [32][72] fp16 | K, V [KV_STAGES][48][72] fp16 | S [32][64] fp32 | P [32][64] fp16 | O [32][64] fp32
//              | m, l [32] fp32   (rows padded: Q/K/V to 64+8 halves, scores/probs to 48+16; every offset × 128 B)
//
//   load_tile_scalar   rows of a [seq, 64] matrix → smem, one 2-byte element per thread per step (v12 as designed)
//   load_tile_vec      the same, 16 bytes (uint4) per thread per step
//   load_tile_async    the same by cp.async (v12_abl_4_prefetch: the next tile loads while this one computes)
//   init_tile_state    O = 0, m = −big, l = 0 for a new query tile
//   qk_scores          S = scale · Q·Kᵀ: warps 0–5, a 2×3 grid of 16×16 WMMA tiles
//   softmax_rows_serial    the one softmax warp (15): lane = row, serial loops over the 48 scores
//   softmax_rows_parallel  all 16 warps, 2 rows each, lanes across the columns, shuffles
//   pv_accumulate      O += P·V on the smem accumulator: warps 0–7, a 2×4 grid of 16×16 tiles, load → mma → store
//   store_output_scalar / store_output_vec   O / l → global (2-byte or 16-byte stores), rows ≥ seq_q skipped
//
// A kernel that double-buffers K/V defines KV_STAGES 2 before including this header.
#pragma once

#include <cuda_fp16.h>
#include <mma.h>

#include "common/cp_async.cuh"
#include "common/smem.cuh"

using namespace nvcuda;

#define BM 32                    // query rows per tile
#define BN 48                    // keys per tile
#define D 64                     // head dim
#define LDH (D + 8)              // Q/K/V smem row stride (halves)
#define LDS (BN + 16)            // score/prob smem row stride (elements)
#define LDO D                    // accumulator row stride (floats)
#define NTHREADS 512
#define NEG_BIG (-1e30f)
#ifndef KV_STAGES
#define KV_STAGES 1              // K/V buffers (v12_abl_4_prefetch: 2)
#endif

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
static_assert(SMEM_TOTAL <= SMEM_LIMIT, "v12's tiles must fit one CTA's shared memory");

__device__ __forceinline__ uint4 zero16() { uint4 z; z.x = z.y = z.z = z.w = 0u; return z; }

// rows [row0, row0+nrows) of a [seq, 64] matrix → smem with row stride LDH; rows ≥ seq are zero-filled
__device__ __forceinline__ void load_tile_scalar(__half* dst, const __half* src, int row0, int nrows, int seq) {
  for (int i = threadIdx.x; i < nrows * D; i += NTHREADS) {
    int r = i / D, c = i % D;
    dst[r * LDH + c] = (row0 + r < seq) ? src[(size_t)(row0 + r) * D + c] : __float2half(0.f);
  }
}
__device__ __forceinline__ void load_tile_vec(__half* dst, const __half* src, int row0, int nrows, int seq) {
  for (int i = threadIdx.x; i < nrows * (D / 8); i += NTHREADS) {
    int r = i / (D / 8), c = (i % (D / 8)) * 8;
    uint4 val = zero16();
    if (row0 + r < seq) val = *reinterpret_cast<const uint4*>(src + (size_t)(row0 + r) * D + c);
    *reinterpret_cast<uint4*>(dst + r * LDH + c) = val;
  }
}
// the same, by cp.async (no registers, no wait): out-of-range rows get plain zero stores
__device__ __forceinline__ void load_tile_async(__half* dst, const __half* src, int row0, int nrows, int seq) {
  for (int i = threadIdx.x; i < nrows * (D / 8); i += NTHREADS) {
    int r = i / (D / 8), c = (i % (D / 8)) * 8;
    if (row0 + r < seq) cp_async16(dst + r * LDH + c, src + (size_t)(row0 + r) * D + c);
    else *reinterpret_cast<uint4*>(dst + r * LDH + c) = zero16();
  }
}

// a new query tile: O = 0, m = −big, l = 0 (published by the next __syncthreads)
__device__ __forceinline__ void init_tile_state(float* Os, float* ms, float* ls) {
  for (int i = threadIdx.x; i < BM * LDO; i += NTHREADS) Os[i] = 0.f;
  if (threadIdx.x < BM) { ms[threadIdx.x] = NEG_BIG; ls[threadIdx.x] = 0.f; }
}

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

// Online softmax for one key tile (both versions): new running max, P = exp(S − m) in fp16, l updated, the
// accumulator row rescaled by exp(m_old − m_new). kv_valid: keys of this tile below seq_kv (the rest get P = 0).
// The one softmax warp (15): lane = row, serial loops (a 32-way bank conflict: row stride 64 floats).
__device__ __forceinline__ void softmax_rows_serial(const float* Ss, __half* Ps, float* Os, float* ms, float* ls,
                                                    int kv_valid, int warp, int lane) {
  if (warp != 15) return;
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
}
// All 16 warps × 2 rows; lanes across the columns, max and sum by warp shuffles.
__device__ __forceinline__ void softmax_rows_parallel(const float* Ss, __half* Ps, float* Os, float* ms, float* ls,
                                                      int kv_valid, int warp, int lane) {
  for (int r = warp * 2; r < warp * 2 + 2; ++r) {
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
__device__ __forceinline__ void store_output_scalar(__half* o, const float* Os, const float* ls, int q0, int seq_q) {
  for (int i = threadIdx.x; i < BM * D; i += NTHREADS) {
    int r = i / D, c = i % D;
    if (q0 + r < seq_q) o[(size_t)(q0 + r) * D + c] = __float2half(Os[r * LDO + c] / ls[r]);
  }
}
__device__ __forceinline__ void store_output_vec(__half* o, const float* Os, const float* ls, int q0, int seq_q) {
  for (int i = threadIdx.x; i < BM * (D / 8); i += NTHREADS) {
    int r = i / (D / 8), c = (i % (D / 8)) * 8;
    if (q0 + r >= seq_q) continue;
    const float inv = 1.f / ls[r];
    __align__(16) __half h[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) h[j] = __float2half(Os[r * LDO + c + j] * inv);
    *reinterpret_cast<uint4*>(o + (size_t)(q0 + r) * D + c) = *reinterpret_cast<const uint4*>(h);
  }
}
