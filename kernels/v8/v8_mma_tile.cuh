// kernels/v8/v8_mma_tile.cuh — the tile operations of the mma.sync kernels (v8_05 … v8_10 and the library's
// flashcore), named after the algorithm, so that each kernel body reads like FlashAttention-2's loop:
//
//   load_tile_async   Q / K / V rows → swizzled shared memory by cp.async (rows past the end zero-filled)
//   load_q_fragments  this warp's Q rows → registers (ldmatrix), once
//   qk_scores         S = Q·Kᵀ for one 64-key tile, fp32 in registers (ldmatrix + mma.sync)
//   mask_tail         keys past seq_kv → −inf (only the last tile has any)
//   ONLINE_SOFTMAX    new row max, rescale O and the row sum, P = exp2(S·scale·log2 e − m) packed to fp16
//   pv_accumulate     O += P·V (P straight from registers, V by ldmatrix.trans)
//   finish_row_sums   each row's sum over the 4 lanes (a quad) that hold it
//   store_rows        O / l → fp16 → global, staged through this warp's own Q rows for 16-byte stores
//                     (stage_tile_rows + copy_rows_out: v8_05 … v8_08 normalise in their own order)
//   check_split_launch  split-KV: trap on a launch whose grid or shared memory disagrees with `split`
//   push_partials     split-KV: unnormalised O, m, l → the owning CTA's landing buffer (st.shared::cluster)
//   combine_landing   split-KV: the owner merges the cluster's partials of its rows from local shared memory
//
// Layout shared by every kernel here: 4 warps; a warp owns MT m16 tiles (16 query rows each) of the CTA's
// BLOCK_M = 4·16·MT rows; keys in tiles of BLOCK_N = 64; Q/K/V rows are 128 bytes in shared memory, swizzled by
// XOR-ing the 16-byte chunk index with (row & 7) so every ldmatrix phase hits 32 distinct banks. The operations
// are written for MT m-tiles per warp: MT = 1 is v8_05's FA2 layout; v8_09's idea is MT = 2. Register arrays carry
// MT as their first extent (s[MT][8][4], acc_o[MT][8][4]): that is how the operations know it (template kMT).
// Per-thread coordinates inside an m16n8 accumulator (common/mma_sync.cuh): rows g and g+8, columns 2t, 2t+1.
//
// A kernel defines BLOCK_M (and, for the split-KV kernels, CLUSTER) before including this header.
#pragma once

#include <cuda_fp16.h>

#include "common/cp_async.cuh"
#include "common/mma_sync.cuh"
#include "common/smem.cuh"
#include "common/softmax_math.cuh"

#define HEAD_DIM 64
#define BLOCK_N 64     // keys per tile
#define NWARPS 4
#define ROW_BYTES 128  // 64 fp16
#define OP_STRIDE 72   // floats per row of an fp32 partial O (64 + 8 pad: conflict-free float2 stores)

// −inf, spelled as the kernels always spelled it (a bit pattern the compiler folds late: a literal −inf would let it
// simplify max(−inf, x) earlier and schedule the loop differently)
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// shared-memory sizes (bytes): the Q tile and a ring of STAGES × (K tile, V tile) ...
__host__ __device__ constexpr int ring_bytes(int block_m, int stages) {
    return block_m * ROW_BYTES + stages * 2 * BLOCK_N * ROW_BYTES;
}
// ... and the split-KV landing buffer behind it: the cluster's partial O rows [block_m][OP_STRIDE], row max, row sum
__host__ __device__ constexpr int landing_bytes(int block_m) { return block_m * OP_STRIDE * 4 + 2 * block_m * 4; }

// ---------------------------------------------------------------------------------------------- tile loads
// byte offset of (row, 16-byte chunk) in a swizzled [rows][64] fp16 tile
__device__ __forceinline__ unsigned swz(int row, int chunk) {
    return row * ROW_BYTES + ((chunk ^ (row & 7)) << 4);
}
// the K and V tiles of ring stage `st` (K, V interleaved: one stage is 2 × 8 KB)
__device__ __forceinline__ unsigned char* stage_k(unsigned char* ring, int st) {
    return ring + st * 2 * BLOCK_N * ROW_BYTES;
}
__device__ __forceinline__ unsigned char* stage_v(unsigned char* ring, int st) {
    return ring + (st * 2 + 1) * BLOCK_N * ROW_BYTES;
}

// ROWS rows × 8 chunks of 16 bytes over the CTA's threads; rows ≥ n_rows are zero-filled (src-size 0).
template <int ROWS>
__device__ __forceinline__ void load_tile_async(unsigned smem, const __half* g, int row0, int n_rows, int tid) {
#pragma unroll
    for (int i = 0; i < (ROWS * 8) / (NWARPS * 32); ++i) {
        int idx = tid + i * NWARPS * 32;
        int row = idx >> 3, chunk = idx & 7;
        bool ok = row0 + row < n_rows;
        const __half* src = ok ? g + (size_t)(row0 + row) * HEAD_DIM + chunk * 8 : g;
        cp_async16_zfill(smem + swz(row, chunk), src, ok ? 16 : 0);
    }
}

// ---------------------------------------------------------------------------------------------- the math
template <int kMT>
__device__ __forceinline__ void init_accumulators(float (&acc_o)[kMT][8][4], float (&m_row)[kMT][2],
                                                  float (&l_row)[kMT][2]) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc_o[mt][i][c] = 0.f;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
        m_row[mt][0] = m_row[mt][1] = neg_inf();   // running max, already × scale·log2 e
        l_row[mt][0] = l_row[mt][1] = 0.f;       // this thread's part of the running sum
    }
}

// Q fragments of rows wrow … wrow + 16·kMT − 1: kMT m-tiles × 4 k16 steps over the head dim
template <int kMT>
__device__ __forceinline__ void load_q_fragments(unsigned (&qf)[kMT][4][4], unsigned sq, int wrow, int lane) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int ks = 0; ks < 4; ++ks)
            ldmatrix_x4(qf[mt][ks], sq + swz(wrow + mt * 16 + (lane & 15), ks * 2 + (lane >> 4)));
}

// S = Q·Kᵀ (kMT × 16 × 64 per warp): each K fragment (one ldmatrix.x4) feeds kMT × 2 mma
template <int kMT>
__device__ __forceinline__ void qk_scores(float (&s)[kMT][8][4], const unsigned (&qf)[kMT][4][4], unsigned sk,
                                          int lane) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int c = 0; c < 4; ++c) s[mt][i][c] = 0.f;
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
#pragma unroll
        for (int np = 0; np < 4; ++np) {
            unsigned b[4];
            ldmatrix_x4(b, sk + swz(np * 16 + (lane & 7) + ((lane >> 4) << 3), ks * 2 + ((lane >> 3) & 1)));
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) {
                mma_16816(s[mt][2 * np], qf[mt][ks], b[0], b[1]);
                mma_16816(s[mt][2 * np + 1], qf[mt][ks], b[2], b[3]);
            }
        }
    }
}

// keys past seq_kv get score −inf (only the last tile, starting at key kv0, can have them)
template <int kMT>
__device__ __forceinline__ void mask_tail(float (&s)[kMT][8][4], int kv0, int seq_kv, int lane) {
    const int t = lane & 3;
    if (kv0 + BLOCK_N > seq_kv) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
            for (int nt = 0; nt < 8; ++nt)
#pragma unroll
                for (int c = 0; c < 4; ++c)
                    if (kv0 + nt * 8 + 2 * t + (c & 1) >= seq_kv) s[mt][nt][c] = neg_inf();
    }
}

// ONLINE_SOFTMAX(s, m_row, l_row, acc_o, pf, scale_log2): the online softmax of one key tile, per m-tile: the row
// max over this tile (the 4 lanes of a quad share a row), the rescale factor alpha = exp2(m_old − m_new) applied to O
// and to the running sum, and P = exp2(S·scale·log2 e − m) as fp16 A fragments (the C layout of n8 tiles 2kk and
// 2kk+1 is the A layout of k16 step kk). `pf` is declared by the caller ([MT][4][4]).
// A macro, not a function, for one measured reason: as an inlined function its two small arrays (mx, alpha) would be
// allocated at the kernel's entry instead of here, which permutes ptxas's register allocation and schedule (same
// instructions, different order) — and scripts/check_sass_identity.py holds every kernel to its exact machine code.
#define ONLINE_SOFTMAX(s, m_row, l_row, acc_o, pf, scale_log2)                                                    \
    _Pragma("unroll") for (int mt_ = 0; mt_ < (int)(sizeof(m_row) / sizeof(m_row[0])); ++mt_) {                  \
        float mx[2] = {neg_inf(), neg_inf()};                                                                     \
        _Pragma("unroll") for (int nt = 0; nt < 8; ++nt) {                                                        \
            mx[0] = fmaxf(mx[0], fmaxf(s[mt_][nt][0], s[mt_][nt][1]));                                            \
            mx[1] = fmaxf(mx[1], fmaxf(s[mt_][nt][2], s[mt_][nt][3]));                                            \
        }                                                                                                         \
        float alpha[2];                                                                                           \
        _Pragma("unroll") for (int r = 0; r < 2; ++r) {                                                           \
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));                                         \
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));                                         \
            float m_new = fmaxf(m_row[mt_][r], mx[r] * (scale_log2));                                             \
            alpha[r] = fast_exp2(m_row[mt_][r] - m_new);                                                          \
            m_row[mt_][r] = m_new;                                                                                \
            l_row[mt_][r] *= alpha[r];                                                                            \
        }                                                                                                         \
        _Pragma("unroll") for (int nt = 0; nt < 8; ++nt) {                                                        \
            float p0 = fast_exp2(fmaf(s[mt_][nt][0], (scale_log2), -m_row[mt_][0]));                              \
            float p1 = fast_exp2(fmaf(s[mt_][nt][1], (scale_log2), -m_row[mt_][0]));                              \
            float p2 = fast_exp2(fmaf(s[mt_][nt][2], (scale_log2), -m_row[mt_][1]));                              \
            float p3 = fast_exp2(fmaf(s[mt_][nt][3], (scale_log2), -m_row[mt_][1]));                              \
            l_row[mt_][0] += p0 + p1;                                                                             \
            l_row[mt_][1] += p2 + p3;                                                                             \
            pf[mt_][nt >> 1][(nt & 1) * 2 + 0] = pack_half2(p0, p1);                                              \
            pf[mt_][nt >> 1][(nt & 1) * 2 + 1] = pack_half2(p2, p3);                                              \
        }                                                                                                         \
        _Pragma("unroll") for (int dt = 0; dt < 8; ++dt) {                                                        \
            acc_o[mt_][dt][0] *= alpha[0];                                                                        \
            acc_o[mt_][dt][1] *= alpha[0];                                                                        \
            acc_o[mt_][dt][2] *= alpha[1];                                                                        \
            acc_o[mt_][dt][3] *= alpha[1];                                                                        \
        }                                                                                                         \
    }

// O += P·V: each V fragment (one ldmatrix.x4.trans) feeds kMT × 2 mma
template <int kMT>
__device__ __forceinline__ void pv_accumulate(float (&acc_o)[kMT][8][4], const unsigned (&pf)[kMT][4][4], unsigned sv,
                                              int lane) {
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
        for (int dp = 0; dp < 4; ++dp) {
            unsigned b[4];
            ldmatrix_x4_trans(b, sv + swz(kk * 16 + (lane & 15), dp * 2 + (lane >> 4)));
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) {
                mma_16816(acc_o[mt][2 * dp], pf[mt][kk], b[0], b[1]);
                mma_16816(acc_o[mt][2 * dp + 1], pf[mt][kk], b[2], b[3]);
            }
        }
    }
}

// each row's sum over the quad of lanes that hold its columns
template <int kMT>
__device__ __forceinline__ void finish_row_sums(float (&l_row)[kMT][2]) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            l_row[mt][r] += __shfl_xor_sync(0xffffffffu, l_row[mt][r], 1);
            l_row[mt][r] += __shfl_xor_sync(0xffffffffu, l_row[mt][r], 2);
        }
}

// ---------------------------------------------------------------------------------------------- epilogues
// One m-tile of this warp's O rows (r0 = its first row, rows r0 and r0 + 8 per lane), times the reciprocal row sums
// inv0 / inv1, as fp16 into the warp's own (swizzled) Q rows: the staging area for 16-byte global stores.
__device__ __forceinline__ void stage_tile_rows(const float (&acc)[8][4], float inv0, float inv1, unsigned char* sQ,
                                                int r0, int t) {
#pragma unroll
    for (int dt = 0; dt < 8; ++dt) {
        *reinterpret_cast<unsigned*>(sQ + swz(r0, dt) + t * 4) = pack_half2(acc[dt][0] * inv0, acc[dt][1] * inv0);
        *reinterpret_cast<unsigned*>(sQ + swz(r0 + 8, dt) + t * 4) = pack_half2(acc[dt][2] * inv1, acc[dt][3] * inv1);
    }
}
// The warp's staged rows wrow … wrow + 16·kMT − 1 → global, 16 bytes per lane per store; rows past seq_q skipped.
template <int kMT>
__device__ __forceinline__ void copy_rows_out(const unsigned char* sQ, __half* oh, int q0, int seq_q, int wrow,
                                              int lane) {
#pragma unroll
    for (int i = 0; i < kMT * 4; ++i) {
        int idx = lane + i * 32;
        int row = wrow + (idx >> 3), chunk = idx & 7;
        if (q0 + row < seq_q)
            *reinterpret_cast<uint4*>(oh + (size_t)(q0 + row) * HEAD_DIM + chunk * 8) =
                *reinterpret_cast<const uint4*>(sQ + swz(row, chunk));
    }
}
// O / l → fp16 → global for this warp's rows (v8_09's epilogue): normalise per m-tile, stage, copy out.
template <int kMT>
__device__ __forceinline__ void store_rows(const float (&acc_o)[kMT][8][4], const float (&l_row)[kMT][2],
                                           unsigned char* sQ, __half* oh, int q0, int seq_q, int wrow, int g, int t,
                                           int lane) {
    __syncwarp();
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
        const float inv0 = l_row[mt][0] > 0.f ? 1.f / l_row[mt][0] : 0.f;
        const float inv1 = l_row[mt][1] > 0.f ? 1.f / l_row[mt][1] : 0.f;
        stage_tile_rows(acc_o[mt], inv0, inv1, sQ, wrow + mt * 16 + g, t);
    }
    __syncwarp();
    copy_rows_out<kMT>(sQ, oh, q0, seq_q, wrow, lane);
}

// acc[0..7] / l → fp16 → one 16-byte chunk (8 columns) of output row `row` (skipped past seq_q)
__device__ __forceinline__ void store_chunk(__half* oh, int q0, int row, int chunk, int seq_q, const float (&acc)[8],
                                            float l_sum) {
    const float inv = l_sum > 0.f ? 1.f / l_sum : 0.f;
    if (q0 + row < seq_q) {
        uint4 out;
        out.x = pack_half2(acc[0] * inv, acc[1] * inv);
        out.y = pack_half2(acc[2] * inv, acc[3] * inv);
        out.z = pack_half2(acc[4] * inv, acc[5] * inv);
        out.w = pack_half2(acc[6] * inv, acc[7] * inv);
        *reinterpret_cast<uint4*>(oh + (size_t)(q0 + row) * HEAD_DIM + chunk * 8) = out;
    }
}
// acc += w · (a, b): one source's weighted partial of a 16-byte output chunk
__device__ __forceinline__ void accumulate_chunk(float (&acc)[8], float w, const float4& a, const float4& b) {
    acc[0] += w * a.x; acc[1] += w * a.y; acc[2] += w * a.z; acc[3] += w * a.w;
    acc[4] += w * b.x; acc[5] += w * b.y; acc[6] += w * b.z; acc[7] += w * b.w;
}

// ---------------------------------------------------------------------------------------------- split-KV
#ifdef CLUSTER
#include "common/cluster.cuh"

// The split-KV decision is the launcher's (flashcore/specs/v8_mma.py: SplitKV, the one place that decides it) and
// arrives as the kernel argument `split`; the grid and the dynamic shared memory must be the ones that go with it:
// split, CLUSTER CTAs per query tile; unsplit, one CTA per query tile rounded up to whole clusters (the extra CTAs
// leave at once); and at least `smem_bytes` of dynamic shared memory (the kernel's <entry>_smem_bytes[split]). A launch
// that disagrees — a grid from another decision or cluster size, a landing buffer that is not there — traps. Call it
// once the prologue's loads are in flight and before anything is written: its latency hides behind theirs (at the
// top of the kernel it cost flashcore 0.9% at B1 H8 S512 on an H200; after the prologue, nothing measurable).
__device__ __forceinline__ void check_split_launch(int split, int bh, int n_qblocks, unsigned smem_bytes) {
    unsigned dynamic_smem;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(dynamic_smem));
    const int tiles = bh * n_qblocks;
    const int grid = split ? CLUSTER * tiles : (tiles + CLUSTER - 1) / CLUSTER * CLUSTER;
    if ((int)gridDim.x != grid || dynamic_smem < smem_bytes) __trap();
}

// Push this CTA's partial rows to their owner's landing buffer [source rank][row][OP_STRIDE] (+ row max, row sum):
// rows r·ROWS … (r+1)·ROWS − 1 of the query tile belong to CTA r. Fire-and-forget remote stores.
template <int kMT>
__device__ __forceinline__ void push_partials(const float (&acc_o)[kMT][8][4], const float (&m_row)[kMT][2],
                                              const float (&l_row)[kMT][2], unsigned land, int rank, int wrow,
                                              int lane) {
    constexpr int ROWS = BLOCK_M / CLUSTER;
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int row = wrow + mt * 16 + g + 8 * h;
            const unsigned dst = dsmem_addr(land, row / ROWS);
            const int lrow = rank * ROWS + row % ROWS;  // [source rank][local row]
#pragma unroll
            for (int dt = 0; dt < 8; ++dt)
                st_dsmem_f2(dst + (lrow * OP_STRIDE + dt * 8 + 2 * t) * 4, acc_o[mt][dt][2 * h],
                            acc_o[mt][dt][2 * h + 1]);
            if (t == 0) {
                st_dsmem_f(dst + (CLUSTER * ROWS * OP_STRIDE + lrow) * 4, m_row[mt][h]);
                st_dsmem_f(dst + (CLUSTER * ROWS * OP_STRIDE + CLUSTER * ROWS + lrow) * 4, l_row[mt][h]);
            }
        }
}

// The owner CTA (`rank`) merges the cluster's partials of its ROWS rows from its landing buffer, in a fixed order
// over the sources (deterministic): weights exp2(m_c − max m), one 16-byte output chunk (8 columns) per item.
__device__ __forceinline__ void combine_landing(const unsigned char* sLand, int rank, __half* oh, int q0, int seq_q,
                                                int tid) {
    constexpr int ROWS = BLOCK_M / CLUSTER;
    const float* land_o = reinterpret_cast<const float*>(sLand);
    const float* land_m = land_o + CLUSTER * ROWS * OP_STRIDE;
    const float* land_l = land_m + CLUSTER * ROWS;
    for (int item = tid; item < ROWS * 8; item += NWARPS * 32) {
        const int lr = item >> 3, chunk = item & 7;
        const int row = rank * ROWS + lr;
        float m_max = neg_inf();
#pragma unroll
        for (int c = 0; c < CLUSTER; ++c) m_max = fmaxf(m_max, land_m[c * ROWS + lr]);
        float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, l_sum = 0.f;
#pragma unroll
        for (int c = 0; c < CLUSTER; ++c) {
            const float w = m_max == neg_inf() ? 0.f : fast_exp2(land_m[c * ROWS + lr] - m_max);
            l_sum += w * land_l[c * ROWS + lr];
            const float4 a = *reinterpret_cast<const float4*>(land_o + (c * ROWS + lr) * OP_STRIDE + chunk * 8);
            const float4 b = *reinterpret_cast<const float4*>(land_o + (c * ROWS + lr) * OP_STRIDE + chunk * 8 + 4);
            accumulate_chunk(acc, w, a, b);
        }
        store_chunk(oh, q0, row, chunk, seq_q, acc, l_sum);
    }
}
#endif  // CLUSTER
