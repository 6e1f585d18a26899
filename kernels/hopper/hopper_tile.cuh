// kernels/hopper/hopper_tile.cuh — the tile operations of the Hopper kernels (hopper_01_wgmma … flashcore_hopper),
// named after the algorithm, so that each kernel body reads like FlashAttention-3's loop and a step's diff against
// its parent shows its one idea (schedule, roles, barriers), not the arithmetic every step shares:
//
//   SmemLayout, TileSmem  the shared-memory layout (Q tiles, the K/V ring, output staging, mbarriers) and the
//                         addresses of its tiles, from a 1024-byte-aligned base (the 128-byte swizzle's period)
//   swizzled              byte offset of a 16-byte chunk in a swizzled tile (what TMA's 128-byte swizzle writes)
//   prefetch_maps         the three tensor maps into the TMA unit's descriptor cache (one thread)
//   load_q_boxes          Q of one work tile by TMA: one 64-row box per consumer warpgroup, armed on q_full
//   load_kv_tile          one K and one V tile by TMA into a ring stage, armed on its full barrier
//   compute_scores        S = Q·Kᵀ (4 × wgmma.m64n128k16, issued and waited for); issue_scores: issued only
//   mask_tail_keys        keys past seq_kv → −inf (only the last tile has any)
//   online_softmax_update new row max, alpha, P = 2^(S·scale·log2 e − m) in place of S, the row sums
//   convert_p_to_a_fragments  P (fp32 accumulator layout) → fp16 A fragments of O += P·V
//   rescale_output        O *= alpha
//   accumulate_pv         O += P·V (8 × wgmma.m64n64k16, P from registers; issued and waited for); issue_pv: issued
//   take/pass_tensor_core_turn  round-robin turns of the consumer warpgroups at the tensor cores (named barriers)
//   store_output_rows     O / l → fp16 → global, staged per warp through 2 KB of swizzled shared memory
//
// Layout shared by every kernel here: D = 64 (a row is 128 bytes), keys in tiles of BLOCK_N = 128, a warpgroup owns
// 64 query rows; per thread the wgmma accumulator holds rows g = lane/4 and g + 8 of its warp's 16, and s[4·n + c]
// is key 8n + 2·(lane%4) + (c & 1) of row g + 8·(c >> 1) (the same indexing for o[] over the 64 head-dim columns).
// Everything here is inlined and written exactly as the steps had it, so moving it changed no machine code
// (scripts/check_sass_identity.py --family hopper).
#pragma once

#include <cuda_fp16.h>

#include "common/mbarrier.cuh"
#include "common/smem.cuh"
#include "common/softmax_math.cuh"
#include "common/tma.cuh"
#include "common/wgmma.cuh"

using namespace hopper;

constexpr int HEAD_DIM_ = 64;
constexpr int BLOCK_N = 128;                          // keys per tile (the K and V boxes are 128 rows)
constexpr int WARPGROUP_ROWS = 64;                    // query rows per warpgroup (one wgmma M; one Q box)
constexpr int ROW_BYTES = HEAD_DIM_ * 2;              // one swizzled 128-byte row
constexpr int Q_TILE_BYTES = WARPGROUP_ROWS * ROW_BYTES;  // 8 KB: one warpgroup's rows (one TMA box)
constexpr int KV_TILE_BYTES = BLOCK_N * ROW_BYTES;    // 16 KB
constexpr int OUT_WARP_BYTES = 16 * ROW_BYTES;        // 2 KB: one warp's output rows, staged

// ---------------------------------------------------------------------------------------------- shared memory
// In this order: Q_TILES Q tiles, the K/V ring (stage s: K, then V), OUT_WARPS warps' output staging, BARRIERS
// mbarriers; + 1024 bytes of slack to align the base to 1024.
template <int Q_TILES, int RING_STAGES, int OUT_WARPS, int BARRIERS>
struct SmemLayout {
    static constexpr int Q = 0;
    static constexpr int KV = Q + Q_TILES * Q_TILE_BYTES;
    static constexpr int OUT = KV + RING_STAGES * 2 * KV_TILE_BYTES;
    static constexpr int BARRIER = OUT + OUT_WARPS * OUT_WARP_BYTES;
    static constexpr int BYTES = BARRIER + BARRIERS * 8 + 1024;
    static_assert(BYTES <= SMEM_LIMIT, "dynamic shared memory over the 227 KB a block may have");
};

template <class Layout>
struct TileSmem {
    unsigned char* ptr;  // the 1024-aligned base
    unsigned base;       // its shared-window address
    __device__ __forceinline__ explicit TileSmem(unsigned char* raw)
        : ptr(raw + ((1024 - (smem_u32(raw) & 1023)) & 1023)), base(smem_u32(ptr)) {}
    __device__ __forceinline__ unsigned q_tile(int warpgroup) const { return base + Layout::Q + warpgroup * Q_TILE_BYTES; }
    __device__ __forceinline__ unsigned k_tile(int stage) const { return base + Layout::KV + stage * 2 * KV_TILE_BYTES; }
    __device__ __forceinline__ unsigned v_tile(int stage) const {
        return base + Layout::KV + stage * 2 * KV_TILE_BYTES + KV_TILE_BYTES;
    }
    __device__ __forceinline__ unsigned barrier(int i) const { return base + Layout::BARRIER + 8 * i; }
    // a warp's output staging: its own 2 KB, or (Layout without OUT) its own 16 rows of the Q tile
    __device__ __forceinline__ unsigned char* out_rows(int warp) const { return ptr + Layout::OUT + warp * OUT_WARP_BYTES; }
    __device__ __forceinline__ unsigned char* q_rows(int warp) const { return ptr + Layout::Q + warp * 16 * ROW_BYTES; }
};

__device__ __forceinline__ unsigned swizzled(int row, int chunk) {  // byte offset of a 16-byte chunk in a tile
    return row * ROW_BYTES + ((chunk ^ (row & 7)) << 4);
}

// ---------------------------------------------------------------------------------------------- loads (TMA)
__device__ __forceinline__ void prefetch_maps(const TmaMap* tma_q, const TmaMap* tma_k, const TmaMap* tma_v) {
    tma_prefetch_map(tma_q);
    tma_prefetch_map(tma_k);
    tma_prefetch_map(tma_v);
}
// Q rows q0 … q0 + 64·max_boxes − 1 of one head, one 64-row box per warpgroup into q_tile0 + c·8 KB; boxes wholly
// past seq_q are skipped (so no copy is ever fully out of bounds) and q_full expects the bytes of the others.
__device__ __forceinline__ void load_q_boxes(unsigned q_tile0, const TmaMap* tma_q, unsigned q_full, int q0,
                                             int head, int seq_q, int max_boxes) {
    const int q_boxes = min(max_boxes, (seq_q - q0 + 63) / 64);
    mbarrier_arrive_expect_tx(q_full, q_boxes * Q_TILE_BYTES);
    for (int c = 0; c < q_boxes; ++c) tma_load_rows(q_tile0 + c * Q_TILE_BYTES, tma_q, q_full, q0 + 64 * c, head);
}
// Arm the stage's barrier with the bytes of one K and one V tile, then start both copies (one thread).
__device__ __forceinline__ void load_kv_tile(unsigned k_tile, unsigned v_tile, unsigned full_bar, const TmaMap* tma_k,
                                             const TmaMap* tma_v, int tile, int head) {
    mbarrier_arrive_expect_tx(full_bar, 2 * KV_TILE_BYTES);
    tma_load_rows(k_tile, tma_k, full_bar, tile * BLOCK_N, head);
    tma_load_rows(v_tile, tma_v, full_bar, tile * BLOCK_N, head);
}

// ---------------------------------------------------------------------------------------------- the two GEMMs
// Issue S = Q·Kᵀ for the warpgroup's 64 rows × the tile's 128 keys; the caller waits (wgmma_wait) before reading s.
__device__ __forceinline__ void issue_scores(float (&s)[64], unsigned q_tile, unsigned k_tile) {
    const unsigned long long dq = desc_k_major(q_tile), dk = desc_k_major(k_tile);
    fence_operands(s);
    wgmma_fence();
#pragma unroll
    for (int k16 = 0; k16 < HEAD_DIM_ / 16; ++k16)
        wgmma_m64n128k16_ss(s, dq + desc_k_major_step(k16), dk + desc_k_major_step(k16), k16 > 0);
    wgmma_commit();
}
// S = Q·Kᵀ, issued and waited for.
__device__ __forceinline__ void compute_scores(float (&s)[64], unsigned q_tile, unsigned k_tile) {
    issue_scores(s, q_tile, k_tile);
    wgmma_wait<0>();
    fence_operands(s);
}

// O += P·V over the tile's 128 keys, issued and waited for.
__device__ __forceinline__ void accumulate_pv(float (&o)[32], unsigned (&p)[BLOCK_N / 16][4], unsigned v_tile) {
    const unsigned long long dv = desc_mn_major(v_tile, BLOCK_N);
    fence_operands(o);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BLOCK_N / 16; ++kk) wgmma_m64n64k16_rs(o, p[kk], dv + desc_mn_major_step(kk));
    wgmma_commit();
    wgmma_wait<0>();
    fence_operands(o);
}
// Issue O += P·V only; the caller waits before touching o or p again (p is fenced too: it stays live across the
// softmax that runs while the GEMM does).
__device__ __forceinline__ void issue_pv(float (&o)[32], unsigned (&p)[BLOCK_N / 16][4], unsigned v_tile) {
    const unsigned long long dv = desc_mn_major(v_tile, BLOCK_N);
    fence_operands(o);
    fence_operands(p);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BLOCK_N / 16; ++kk) wgmma_m64n64k16_rs(o, p[kk], dv + desc_mn_major_step(kk));
    wgmma_commit();
}

// Round-robin turns at the tensor cores between consumer warpgroups (named barriers 1..CONSUMERS, 256 threads:
// my 128 sync, the previous warpgroup's 128 arrive). Compiled out of WATCHDOG builds: a named barrier cannot be
// bounded, and the turns never decide correctness.
__device__ __forceinline__ void take_tensor_core_turn(int consumer) {
#ifndef WATCHDOG
    named_barrier_sync(1 + consumer, 256);
#endif
}
template <int CONSUMERS>
__device__ __forceinline__ void pass_tensor_core_turn(int consumer) {
#ifndef WATCHDOG
    named_barrier_arrive(1 + (consumer + 1) % CONSUMERS, 256);
#endif
}

// ---------------------------------------------------------------------------------------------- the softmax
// Keys at or past seq_kv (only in the last tile) must weigh nothing.
__device__ __forceinline__ void mask_tail_keys(float (&s)[64], int kv0, int seq_kv, int lane) {
    const float NEG_INF = __int_as_float(0xff800000);
#pragma unroll
    for (int n = 0; n < BLOCK_N / 8; ++n)
#pragma unroll
        for (int c = 0; c < 4; ++c)
            if (kv0 + n * 8 + 2 * (lane & 3) + (c & 1) >= seq_kv) s[4 * n + c] = NEG_INF;
}

// 2^x of the scores of 8-key column n: MUFU (ex2.approx). A kernel may pass its own policy (flashcore_hopper's
// EXP2_FMA_EVERY knob computes some columns on the FMA pipe).
struct Exp2Mufu {
    static __device__ __forceinline__ float of(float x, int) { return fast_exp2(x); }
};

// The online softmax: new row maxima (in log2 units: × scale·log2 e), the factor alpha that rescales what was
// accumulated under the old maxima, P = 2^(S·scale·log2 e − m) in place of S, and this thread's part of the row sums.
template <class Exp2 = Exp2Mufu>
__device__ __forceinline__ void online_softmax_update(float (&s)[64], float (&m_row)[2], float (&l_row)[2],
                                                      float (&alpha)[2], float scale_log2) {
    float mx[2] = {s[0], s[2]};
#pragma unroll
    for (int n = 0; n < BLOCK_N / 8; ++n) {
        mx[0] = fmaxf(mx[0], fmaxf(s[4 * n + 0], s[4 * n + 1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[4 * n + 2], s[4 * n + 3]));
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {  // the four threads of a quad share a row
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        const float m_new = fmaxf(m_row[r], mx[r] * scale_log2);
        alpha[r] = fast_exp2(m_row[r] - m_new);
        m_row[r] = m_new;
    }
    float sum[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < BLOCK_N / 8; ++n)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            s[4 * n + c] = Exp2::of(fmaf(s[4 * n + c], scale_log2, -m_row[c >> 1]), n);
            sum[c >> 1] += s[4 * n + c];
        }
#pragma unroll
    for (int r = 0; r < 2; ++r) l_row[r] = l_row[r] * alpha[r] + sum[r];
}

// P (fp32, accumulator layout) → fp16 A fragments of O += P·V: k16 step kk covers keys 16kk … 16kk+15.
__device__ __forceinline__ void convert_p_to_a_fragments(const float (&s)[64], unsigned (&p)[BLOCK_N / 16][4]) {
#pragma unroll
    for (int kk = 0; kk < BLOCK_N / 16; ++kk) {
        p[kk][0] = pack_half2(s[8 * kk + 0], s[8 * kk + 1]);  // row g,   keys 16kk + 2t, +1
        p[kk][1] = pack_half2(s[8 * kk + 2], s[8 * kk + 3]);  // row g+8
        p[kk][2] = pack_half2(s[8 * kk + 4], s[8 * kk + 5]);  // row g,   keys 16kk + 8 + 2t, +1
        p[kk][3] = pack_half2(s[8 * kk + 6], s[8 * kk + 7]);  // row g+8
    }
}

__device__ __forceinline__ void rescale_output(float (&o)[32], const float (&alpha)[2]) {
#pragma unroll
    for (int n = 0; n < HEAD_DIM_ / 8; ++n) {
        o[4 * n + 0] *= alpha[0];
        o[4 * n + 1] *= alpha[0];
        o[4 * n + 2] *= alpha[1];
        o[4 * n + 3] *= alpha[1];
    }
}

// ---------------------------------------------------------------------------------------------- the output
// Normalise this warp's 16 rows, stage them (swizzled, conflict-free) in 2 KB of shared memory, store 16 B a lane.
__device__ __forceinline__ void store_output_rows(const float (&o)[32], float (&l_row)[2], unsigned char* stage,
                                                  __half* o_head, int row0, int seq_q, int lane) {
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int r = 0; r < 2; ++r) {  // finish the row sums inside the quad, then invert
        l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 1);
        l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 2);
        l_row[r] = l_row[r] > 0.f ? 1.f / l_row[r] : 0.f;
    }
#pragma unroll
    for (int n = 0; n < HEAD_DIM_ / 8; ++n) {
        *reinterpret_cast<unsigned*>(stage + swizzled(g, n) + 4 * t) =
            pack_half2(o[4 * n + 0] * l_row[0], o[4 * n + 1] * l_row[0]);
        *reinterpret_cast<unsigned*>(stage + swizzled(g + 8, n) + 4 * t) =
            pack_half2(o[4 * n + 2] * l_row[1], o[4 * n + 3] * l_row[1]);
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int idx = lane + 32 * i, row = idx >> 3, chunk = idx & 7;
        if (row0 + row < seq_q)
            *reinterpret_cast<uint4*>(o_head + (size_t)(row0 + row) * HEAD_DIM_ + chunk * 8) =
                *reinterpret_cast<const uint4*>(stage + swizzled(row, chunk));
    }
}

// ---------------------------------------------------------------------------------------------- the watchdog
// WATCHDOG builds append (int* wd_buf, long long wd_budget) to the kernel's arguments; WD_BUFFER is what a kernel's
// Watchdog starts from (a normal build has no buffer: its waits never give up).
#ifdef WATCHDOG
#define WD_BUFFER wd_buf, wd_budget
#else
#define WD_BUFFER nullptr, 0
#endif
