// kernels/v8/v8_mma_tile.cuh — the tile operations of the mma.sync kernels (v8_05 … v8_10 and the library's
// flashcore), named after the algorithm, so that each kernel body reads like FlashAttention-2's loop:
//
//   load_tile_async   Q / K / V rows → swizzled shared memory by cp.async (rows past the end zero-filled)
//   load_q_fragments  this warp's Q rows → registers (ldmatrix), once
//   qk_scores         S = Q·Kᵀ for one 64-key tile, fp32 in registers (ldmatrix + mma.sync)
//   mask_tail         keys past seq_kv → −inf (only the last tile has any)
//   mask_causal       keys past each query row → −inf (flashcore's causal variant; only the diagonal tile has any)
//   negate_fragments  Q → −Q in registers (flashcore's feature variants, for a negative scale)
//   kv_head_of, kv_tiles_of, scale_log2_of, load_q_fragments_for, mask_keys
//                     flashcore's feature switches, one helper each (below): unset, the ladder's expressions
//   ONLINE_SOFTMAX    new row max, rescale O and the row sum, P = exp2(S·scale·log2 e − m) packed to fp16 (or bf16)
//   pv_accumulate     O += P·V (P straight from registers, V by ldmatrix.trans)
//   finish_row_sums   each row's sum over the 4 lanes (a quad) that hold it
//   store_rows        O / l → fp16 → global, staged through this warp's own Q rows for 16-byte stores
//                     (stage_tile_rows + copy_rows_out: v8_05 … v8_08 normalise in their own order)
//   check_split_launch  split-KV: trap on a launch whose grid or shared memory disagrees with `split`
//   push_partials     split-KV: unnormalised O, m, l → the owning CTA's landing buffer (st.shared::cluster)
//   combine_landing   split-KV: the owner merges the cluster's partials of its rows from local shared memory
//
// Layout shared by every kernel here: 4 warps; a warp owns MT m16 tiles (16 query rows each) of the CTA's
// BLOCK_M = 4·16·MT rows; keys in tiles of BLOCK_N = 64; Q/K/V rows are 2·HEAD_DIM bytes (128 at D = 64) in shared
// memory, swizzled by
// XOR-ing the 16-byte chunk index with (row & 7) so every ldmatrix phase hits 32 distinct banks. The operations
// are written for MT m-tiles per warp: MT = 1 is v8_05's FA2 layout; v8_09's idea is MT = 2. Register arrays carry
// MT as their first extent (s[MT][8][4], acc_o[MT][DTILES][4]): that is how the operations know it (template kMT;
// kKS and kDT, the head dim's k16 steps and n8 tiles, likewise from qf[MT][KSTEPS][4] and acc_o).
// Per-thread coordinates inside an m16n8 accumulator (common/mma_sync.cuh): rows g and g+8, columns 2t, 2t+1.
//
// A kernel defines BLOCK_M (and, for the split-KV kernels, CLUSTER) before including this header.
//
// The library kernel's features are compile-time parameters of this header (kernels/flashcore.cu builds one variant
// per (dtype, head dim, causal); flashcore/specs/v8_mma.py names them): FC_BF16 = 1 makes elem_t bf16 (mma.sync
// .bf16, P packed to bf16), HEAD_DIM = 128 widens every row (ROW_BYTES, the chunk loops, the O accumulators), and
// the causal mask is mask_causal, which flashcore.cu calls under FC_CAUSAL (and negate_fragments under
// FC_FEATURES). Unset, each is the ladder's value (fp16, 64), spelled so that the ladder's kernels — and flashcore's
// base build — compile to the same machine code, instruction for instruction (scripts/check_sass_identity.py).
#pragma once

#include <cuda_fp16.h>
#if FC_BF16
#include <cuda_bf16.h>
#endif

#include "common/cp_async.cuh"
#include "common/mma_sync.cuh"
#include "common/smem.cuh"
#include "common/softmax_math.cuh"

#ifndef HEAD_DIM
#define HEAD_DIM 64    // 64 or 128
#endif
#define BLOCK_N 64     // keys per tile
#define NWARPS 4
#define ROW_BYTES (HEAD_DIM * 2)      // one row of 16-bit elements: 128 bytes at D = 64
#define OP_STRIDE (HEAD_DIM + 8)      // floats per row of an fp32 partial O (+ 8 pad: conflict-free float2 stores)
#define CHUNKS (HEAD_DIM / 8)         // 16-byte chunks per row
#define CHUNK_SHIFT (HEAD_DIM == 128 ? 4 : 3)   // log2(CHUNKS): idx >> CHUNK_SHIFT is the row of chunk idx
#define KSTEPS (HEAD_DIM / 16)        // k16 steps of Q·Kᵀ over the head dim; n16 pairs of P·V
#define DTILES (HEAD_DIM / 8)         // n8 tiles of O over the head dim
static_assert(HEAD_DIM == 64 || HEAD_DIM == 128, "v8_mma_tile.cuh: HEAD_DIM must be 64 or 128");

// The element type of q, k, v, o and of P in P·V: fp16 (the ladder), or bf16 (FC_BF16)
#if FC_BF16
typedef __nv_bfloat16 elem_t;
#else
typedef __half elem_t;
#endif
// two fp32 → one register of two elements (round to nearest), lo in the low half
__device__ __forceinline__ unsigned pack_elem2(float lo, float hi) {
#if FC_BF16
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
#else
    return pack_half2(lo, hi);
#endif
}
// D = A(16×16, row) · B(16×8, col) + D in the element type, fp32 accumulate
__device__ __forceinline__ void mma_elem(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
#if FC_BF16
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    mma_16816(d, a, b0, b1);
#endif
}

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

// ROWS rows × CHUNKS chunks of 16 bytes over the CTA's threads; rows ≥ n_rows are zero-filled (src-size 0).
template <int ROWS>
__device__ __forceinline__ void load_tile_async(unsigned smem, const elem_t* g, int row0, int n_rows, int tid) {
#pragma unroll
    for (int i = 0; i < (ROWS * CHUNKS) / (NWARPS * 32); ++i) {
        int idx = tid + i * NWARPS * 32;
        int row = idx >> CHUNK_SHIFT, chunk = idx & (CHUNKS - 1);
        bool ok = row0 + row < n_rows;
        const elem_t* src = ok ? g + (size_t)(row0 + row) * HEAD_DIM + chunk * 8 : g;
        cp_async16_zfill(smem + swz(row, chunk), src, ok ? 16 : 0);
    }
}

// ---------------------------------------------------------------------------------------------- the math
template <int kMT, int kDT>
__device__ __forceinline__ void init_accumulators(float (&acc_o)[kMT][kDT][4], float (&m_row)[kMT][2],
                                                  float (&l_row)[kMT][2]) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int i = 0; i < kDT; ++i)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc_o[mt][i][c] = 0.f;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
        m_row[mt][0] = m_row[mt][1] = neg_inf();   // running max, already × scale·log2 e
        l_row[mt][0] = l_row[mt][1] = 0.f;       // this thread's part of the running sum
    }
}

// Q fragments of rows wrow … wrow + 16·kMT − 1: kMT m-tiles × kKS (HEAD_DIM / 16) k16 steps over the head dim
template <int kMT, int kKS>
__device__ __forceinline__ void load_q_fragments(unsigned (&qf)[kMT][kKS][4], unsigned sq, int wrow, int lane) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int ks = 0; ks < kKS; ++ks)
            ldmatrix_x4(qf[mt][ks], sq + swz(wrow + mt * 16 + (lane & 15), ks * 2 + (lane >> 4)));
}

// S = Q·Kᵀ (kMT × 16 × 64 per warp): each K fragment (one ldmatrix.x4) feeds kMT × 2 mma
template <int kMT, int kKS>
__device__ __forceinline__ void qk_scores(float (&s)[kMT][8][4], const unsigned (&qf)[kMT][kKS][4], unsigned sk,
                                          int lane) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int c = 0; c < 4; ++c) s[mt][i][c] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kKS; ++ks) {
#pragma unroll
        for (int np = 0; np < 4; ++np) {
            unsigned b[4];
            ldmatrix_x4(b, sk + swz(np * 16 + (lane & 7) + ((lane >> 4) << 3), ks * 2 + ((lane >> 3) & 1)));
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) {
                mma_elem(s[mt][2 * np], qf[mt][ks], b[0], b[1]);
                mma_elem(s[mt][2 * np + 1], qf[mt][ks], b[2], b[3]);
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

// The causal mask (FC_CAUSAL in flashcore.cu), SDPA's: query row i sees keys j ≤ i, aligned to the top-left corner
// also when seq_q ≠ seq_kv (torch builds it as ones(L, S).tril(0)). row0 is this warp's first query row; only the
// tile that crosses a row's diagonal has keys to mask (the kernel skips the tiles wholly past its last row, so every
// tile it computes leaves each of its rows at least one key).
template <int kMT>
__device__ __forceinline__ void mask_causal(float (&s)[kMT][8][4], int kv0, int row0, int lane) {
    const int g = lane >> 2, t = lane & 3;
    if (kv0 + BLOCK_N - 1 > row0) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
            for (int nt = 0; nt < 8; ++nt)
#pragma unroll
                for (int c = 0; c < 4; ++c)
                    if (kv0 + nt * 8 + 2 * t + (c & 1) > row0 + mt * 16 + g + 8 * (c >> 1)) s[mt][nt][c] = neg_inf();
    }
}

// A negative softmax scale flips the order of the scores, so the running max of the scaled scores is the min of the
// raw ones: the kernel negates Q once (exact in fp16 and bf16: the sign bit) and scales by |scale| instead.
template <int kMT, int kKS>
__device__ __forceinline__ void negate_fragments(unsigned (&qf)[kMT][kKS][4]) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int ks = 0; ks < kKS; ++ks)
#pragma unroll
            for (int r = 0; r < 4; ++r) qf[mt][ks][r] ^= 0x80008000u;
}

// ------------------------------------------------------------------------- the library kernel's features
// flashcore.cu's feature switches (its top comment), each a helper here so the kernel body reads as before; unset,
// each is exactly the ladder's expression (the base build's machine code does not change).

// The key/value head of a (batch·head) index: FC_FEATURES shares one between kv_group query heads —
// (b·H + h) / (H / H_kv) = b·H_kv + h / (H / H_kv), SDPA's repeat_interleave; otherwise one per query head.
__device__ __forceinline__ int kv_head_of(int head, int kv_group) {
#if FC_FEATURES
    return head / kv_group;
#else
    return head;
#endif
}
// The key tiles a CTA whose query tile starts at q0 walks: all of them; FC_CAUSAL: only those up to its last row
// (keys 0 … min(q0 + BLOCK_M, seq_q) − 1, top-left aligned), the rest being wholly masked.
__device__ __forceinline__ int kv_tiles_of(int seq_kv, int q0, int seq_q) {
#if FC_CAUSAL
    seq_kv = min(seq_kv, min(q0 + BLOCK_M, seq_q));
#endif
    return (seq_kv + BLOCK_N - 1) / BLOCK_N;
}
// softmax_scale · log2 e. FC_FEATURES takes any finite scale: |scale| (the Q fragments are negated for a negative
// one: load_q_fragments_for), at least the smallest normal float — 0 or a denormal scale would flush to 0 and turn a
// masked key's −inf into NaN; the smallest normal gives every unmasked key p = 1 exactly, SDPA's answer for 0.
__device__ __forceinline__ float scale_log2_of(float softmax_scale) {
#if FC_FEATURES
    return fmaxf(fabsf(softmax_scale) * 1.4426950408889634f, 1.17549435e-38f);
#else
    return softmax_scale * 1.4426950408889634f;
#endif
}
// load_q_fragments, then (FC_FEATURES) −Q for a negative scale
template <int kMT, int kKS>
__device__ __forceinline__ void load_q_fragments_for(unsigned (&qf)[kMT][kKS][4], unsigned sq, int wrow, int lane,
                                                     float softmax_scale) {
    load_q_fragments(qf, sq, wrow, lane);
#if FC_FEATURES
    if (softmax_scale < 0.f) negate_fragments(qf);
#endif
}
// mask_tail, then (FC_CAUSAL) the causal mask of this warp's rows from row0
template <int kMT>
__device__ __forceinline__ void mask_keys(float (&s)[kMT][8][4], int kv0, int seq_kv, int row0, int lane) {
    mask_tail(s, kv0, seq_kv, lane);
#if FC_CAUSAL
    mask_causal(s, kv0, row0, lane);
#endif
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
            pf[mt_][nt >> 1][(nt & 1) * 2 + 0] = pack_elem2(p0, p1);                                              \
            pf[mt_][nt >> 1][(nt & 1) * 2 + 1] = pack_elem2(p2, p3);                                              \
        }                                                                                                         \
        _Pragma("unroll") for (int dt = 0; dt < (int)(sizeof(acc_o[0]) / sizeof(acc_o[0][0])); ++dt) {            \
            acc_o[mt_][dt][0] *= alpha[0];                                                                        \
            acc_o[mt_][dt][1] *= alpha[0];                                                                        \
            acc_o[mt_][dt][2] *= alpha[1];                                                                        \
            acc_o[mt_][dt][3] *= alpha[1];                                                                        \
        }                                                                                                         \
    }

// O += P·V: each V fragment (one ldmatrix.x4.trans) feeds kMT × 2 mma
template <int kMT, int kDT>
__device__ __forceinline__ void pv_accumulate(float (&acc_o)[kMT][kDT][4], const unsigned (&pf)[kMT][4][4], unsigned sv,
                                              int lane) {
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
        for (int dp = 0; dp < kDT / 2; ++dp) {
            unsigned b[4];
            ldmatrix_x4_trans(b, sv + swz(kk * 16 + (lane & 15), dp * 2 + (lane >> 4)));
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) {
                mma_elem(acc_o[mt][2 * dp], pf[mt][kk], b[0], b[1]);
                mma_elem(acc_o[mt][2 * dp + 1], pf[mt][kk], b[2], b[3]);
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
template <int kDT>
__device__ __forceinline__ void stage_tile_rows(const float (&acc)[kDT][4], float inv0, float inv1, unsigned char* sQ,
                                                int r0, int t) {
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt) {
        *reinterpret_cast<unsigned*>(sQ + swz(r0, dt) + t * 4) = pack_elem2(acc[dt][0] * inv0, acc[dt][1] * inv0);
        *reinterpret_cast<unsigned*>(sQ + swz(r0 + 8, dt) + t * 4) = pack_elem2(acc[dt][2] * inv1, acc[dt][3] * inv1);
    }
}
// The warp's staged rows wrow … wrow + 16·kMT − 1 → global, 16 bytes per lane per store; rows past seq_q skipped.
template <int kMT>
__device__ __forceinline__ void copy_rows_out(const unsigned char* sQ, elem_t* oh, int q0, int seq_q, int wrow,
                                              int lane) {
#pragma unroll
    for (int i = 0; i < kMT * (CHUNKS / 2); ++i) {
        int idx = lane + i * 32;
        int row = wrow + (idx >> CHUNK_SHIFT), chunk = idx & (CHUNKS - 1);
        if (q0 + row < seq_q)
            *reinterpret_cast<uint4*>(oh + (size_t)(q0 + row) * HEAD_DIM + chunk * 8) =
                *reinterpret_cast<const uint4*>(sQ + swz(row, chunk));
    }
}
// O / l → fp16 → global for this warp's rows (v8_09's epilogue): normalise per m-tile, stage, copy out.
template <int kMT, int kDT>
__device__ __forceinline__ void store_rows(const float (&acc_o)[kMT][kDT][4], const float (&l_row)[kMT][2],
                                           unsigned char* sQ, elem_t* oh, int q0, int seq_q, int wrow, int g, int t,
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
__device__ __forceinline__ void store_chunk(elem_t* oh, int q0, int row, int chunk, int seq_q, const float (&acc)[8],
                                            float l_sum) {
    const float inv = l_sum > 0.f ? 1.f / l_sum : 0.f;
    if (q0 + row < seq_q) {
        uint4 out;
        out.x = pack_elem2(acc[0] * inv, acc[1] * inv);
        out.y = pack_elem2(acc[2] * inv, acc[3] * inv);
        out.z = pack_elem2(acc[4] * inv, acc[5] * inv);
        out.w = pack_elem2(acc[6] * inv, acc[7] * inv);
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
template <int kMT, int kDT>
__device__ __forceinline__ void push_partials(const float (&acc_o)[kMT][kDT][4], const float (&m_row)[kMT][2],
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
            for (int dt = 0; dt < kDT; ++dt)
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
__device__ __forceinline__ void combine_landing(const unsigned char* sLand, int rank, elem_t* oh, int q0, int seq_q,
                                                int tid) {
    constexpr int ROWS = BLOCK_M / CLUSTER;
    const float* land_o = reinterpret_cast<const float*>(sLand);
    const float* land_m = land_o + CLUSTER * ROWS * OP_STRIDE;
    const float* land_l = land_m + CLUSTER * ROWS;
    for (int item = tid; item < ROWS * CHUNKS; item += NWARPS * 32) {
        const int lr = item >> CHUNK_SHIFT, chunk = item & (CHUNKS - 1);
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
