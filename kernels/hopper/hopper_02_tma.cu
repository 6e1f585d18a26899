// hopper_02_tma — the copy engine: TMA loads into a K/V ring guarded by mbarriers with transaction counts.
//
// What it is. hopper_01_wgmma's math (one warpgroup per CTA, 64 query rows, 128-key tiles, wgmma for S = Q·Kᵀ and
//   O += P·V) fed by the Tensor Memory Accelerator instead of cp.async: one thread issues one
//   cp.async.bulk.tensor per tile (Q: a 64-row box, K and V: 128-row boxes) from host-made tensor maps
//   (flashcore/tma.py), each landing on the mbarrier of its stage, which expects the tile's bytes (arrive.expect_tx
//   by the issuing thread, complete_tx by the copy engine). The 128-byte swizzle is done by the copy engine and
//   matches wgmma's descriptors; rows past the end of a sequence are zero-filled by the engine (the 3-D map
//   {64, S, BH} has S as its bound), so no per-row bounds checks remain in the loads.
// Parent: hopper_01_wgmma.
// What changed (one idea): how tiles get into shared memory. 128 threads × 24 cp.async per tile (and the address
//   arithmetic and predicates for each) become 2 instructions from one thread; the ring's "tile j landed" is a
//   parity wait on full[j % STAGES] instead of cp.async.wait_group + fence.proxy.async. "Stage free" is still the
//   end-of-tile __syncthreads (every warp's wgmma on the stage has completed), after which thread 0 refills it with
//   tile j + STAGES — there is no producer role yet (hopper_03_warpspec adds it).
// Why: issue slots. At D = 64 the tensor pipe and the exp2 unit (MUFU) are equally loaded (256 FLOP per score at
//   16 exp2/clk/SM vs 4096 FLOP/clk/SM), so every instruction that is neither MMA nor softmax costs time; the
//   loads were ~25 % of hopper_01's non-MMA instructions per tile.
// Predicted: B4 H16 S4096 ≈ 340 TFLOP/s (+5–8 % over hopper_01: fewer instructions, loads no longer serialized
//   with the warps' own issue); B1 H8 S512 ≈ 9 µs (latency-bound, unchanged: the first tile's wait dominates).
// ncu: issue slots (sm__inst_issued per tile) down; smsp__pcsamp stall_long_scoreboard / stall_barrier from the
//   cp.async.wait_group path replaced by a little stall_wait on the mbarrier try_wait loop; tensor pipe up a few %.
#include <cuda_fp16.h>

#include "common/mbarrier.cuh"
#include "common/tma.cuh"
#include "common/wgmma.cuh"

using namespace hopper;

constexpr int HEAD_DIM_ = 64;
constexpr int BLOCK_M = 64;    // query rows per CTA = one warpgroup
constexpr int BLOCK_N = 128;   // keys per tile
constexpr int STAGES = 2;      // K/V ring depth
constexpr int THREADS = 128;
constexpr int ROW_BYTES = HEAD_DIM_ * 2;              // one swizzled 128-byte row
constexpr int Q_TILE_BYTES = BLOCK_M * ROW_BYTES;     // 8 KB
constexpr int KV_TILE_BYTES = BLOCK_N * ROW_BYTES;    // 16 KB
constexpr int SMEM_Q = 0;
constexpr int SMEM_KV = SMEM_Q + Q_TILE_BYTES;        // stage s: K at SMEM_KV + s·32 KB, V 16 KB after it
constexpr int SMEM_BARRIERS = SMEM_KV + STAGES * 2 * KV_TILE_BYTES;  // q_full, then full[STAGES]
constexpr int SMEM_LAYOUT_BYTES = SMEM_BARRIERS + (1 + STAGES) * 8;
constexpr int SMEM_BYTES = SMEM_LAYOUT_BYTES + 1024;  // + slack to align the base to 1024 bytes
static_assert(SMEM_BYTES <= 227 * 1024, "dynamic shared memory over the 227 KB a block may have");
extern "C" __constant__ int hopper_02_tma_smem_bytes = SMEM_BYTES;
extern "C" __constant__ int hopper_02_tma_threads = THREADS;
extern "C" __constant__ int hopper_02_tma_block_m = BLOCK_M;
extern "C" __constant__ int hopper_02_tma_q_box_rows = BLOCK_M;   // the tensor maps' box heights (flashcore/tma.py)
extern "C" __constant__ int hopper_02_tma_kv_box_rows = BLOCK_N;

// ---------------------------------------------------------------------------------------------- loads (TMA)
__device__ __forceinline__ unsigned swizzled(int row, int chunk) {  // byte offset of a 16-byte chunk in a tile
    return row * ROW_BYTES + ((chunk ^ (row & 7)) << 4);
}
// Arm the stage's barrier with the bytes of one K and one V tile, then start both copies (one thread).
__device__ __forceinline__ void load_kv_tile(unsigned k_tile, unsigned v_tile, unsigned full_bar, const TmaMap* tma_k,
                                             const TmaMap* tma_v, int tile, int head) {
    mbarrier_arrive_expect_tx(full_bar, 2 * KV_TILE_BYTES);
    tma_load_rows(k_tile, tma_k, full_bar, tile * BLOCK_N, head);
    tma_load_rows(v_tile, tma_v, full_bar, tile * BLOCK_N, head);
}

// ---------------------------------------------------------------------------------------------- the math
// Per thread: rows g = lane/4 and g + 8 of its warp's 16; s[4·n + c] is key 8n + 2·(lane%4) + (c & 1) of row
// g + 8·(c >> 1). The same indexing holds for o[] over the 64 head-dim columns.
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ unsigned pack_half2(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
}

// S = Q·Kᵀ for the warpgroup's 64 rows × the tile's 128 keys (issued and waited for).
__device__ __forceinline__ void compute_scores(float (&s)[64], unsigned q_tile, unsigned k_tile) {
    const unsigned long long dq = desc_k_major(q_tile), dk = desc_k_major(k_tile);
    fence_operands(s);
    wgmma_fence();
#pragma unroll
    for (int k16 = 0; k16 < HEAD_DIM_ / 16; ++k16)
        wgmma_m64n128k16_ss(s, dq + desc_k_major_step(k16), dk + desc_k_major_step(k16), k16 > 0);
    wgmma_commit();
    wgmma_wait<0>();
    fence_operands(s);
}

// Keys at or past seq_kv (only in the last tile) must weigh nothing.
__device__ __forceinline__ void mask_tail_keys(float (&s)[64], int kv0, int seq_kv, int lane) {
    const float NEG_INF = __int_as_float(0xff800000);
#pragma unroll
    for (int n = 0; n < BLOCK_N / 8; ++n)
#pragma unroll
        for (int c = 0; c < 4; ++c)
            if (kv0 + n * 8 + 2 * (lane & 3) + (c & 1) >= seq_kv) s[4 * n + c] = NEG_INF;
}

// The online softmax: new row maxima (in log2 units: × scale·log2 e), the factor alpha that rescales what was
// accumulated under the old maxima, P = 2^(S·scale·log2 e − m) in place of S, and this thread's part of the row sums.
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
            s[4 * n + c] = fast_exp2(fmaf(s[4 * n + c], scale_log2, -m_row[c >> 1]));
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

// O += P·V over the tile's 128 keys (issued and waited for).
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

// ---------------------------------------------------------------------------------------------- the kernel
#ifdef WATCHDOG
#define GIVE_UP_TOGETHER(ok) \
    if (__syncthreads_or(!(ok))) return  // a timed-out wait ends the whole CTA, never half of it
#else
#define GIVE_UP_TOGETHER(ok) (void)(ok)
#endif

extern "C" __global__ void __launch_bounds__(THREADS, 1)
hopper_02_tma(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
              __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale,
              const __grid_constant__ TmaMap tma_q, const __grid_constant__ TmaMap tma_k,
              const __grid_constant__ TmaMap tma_v
#ifdef WATCHDOG
              , int* __restrict__ wd_buf, long long wd_budget
#endif
) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char* smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);  // 1024-aligned base
    const unsigned s_base = smem_u32(smem);
    const unsigned sq = s_base + SMEM_Q;
    auto k_tile = [&](int stage) { return s_base + SMEM_KV + stage * 2 * KV_TILE_BYTES; };
    auto v_tile = [&](int stage) { return s_base + SMEM_KV + stage * 2 * KV_TILE_BYTES + KV_TILE_BYTES; };
    const unsigned q_full = s_base + SMEM_BARRIERS;
    auto full = [&](int stage) { return s_base + SMEM_BARRIERS + 8 * (1 + stage); };

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int n_qblocks = (seq_q + BLOCK_M - 1) / BLOCK_M;
    const int head = blockIdx.x / n_qblocks, q0 = (blockIdx.x % n_qblocks) * BLOCK_M;
    if (head >= bh) return;
    const int n_tiles = (seq_kv + BLOCK_N - 1) / BLOCK_N;
#ifdef WATCHDOG
    Watchdog wd{wd_buf, wd_budget, WD_ROLE_CONSUMER, head, q0 / BLOCK_M, -1};
#else
    Watchdog wd{nullptr, 0, WD_ROLE_CONSUMER, head, q0 / BLOCK_M, -1};
#endif

    if (tid == 0) {
        mbarrier_init(q_full, 1);
        for (int st = 0; st < STAGES; ++st) mbarrier_init(full(st), 1);
        mbarrier_init_fence();
    }
    __syncthreads();
    if (tid == 0) {  // prologue: Q, and the first STAGES tiles
        tma_prefetch_map(&tma_q);
        tma_prefetch_map(&tma_k);
        tma_prefetch_map(&tma_v);
        mbarrier_arrive_expect_tx(q_full, Q_TILE_BYTES);
        tma_load_rows(sq, &tma_q, q_full, q0, head);
        for (int st = 0; st < STAGES && st < n_tiles; ++st)
            load_kv_tile(k_tile(st), v_tile(st), full(st), &tma_k, &tma_v, st, head);
    }

    const float scale_log2 = softmax_scale * 1.4426950408889634f;
    float o_acc[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) o_acc[i] = 0.f;
    float m_row[2] = {__int_as_float(0xff800000), __int_as_float(0xff800000)};
    float l_row[2] = {0.f, 0.f};

    GIVE_UP_TOGETHER(mbarrier_wait(wd, q_full, 0, WD_SITE_Q_FULL, -1, 0, 1));
    for (int j = 0; j < n_tiles; ++j) {
        const int stage = j % STAGES, round = j / STAGES;
        wd.key_tile = j;
        GIVE_UP_TOGETHER(mbarrier_wait(wd, full(stage), round & 1, WD_SITE_FULL, stage, round, 1));
        float s[64];
        compute_scores(s, sq, k_tile(stage));
        if ((j + 1) * BLOCK_N > seq_kv) mask_tail_keys(s, j * BLOCK_N, seq_kv, lane);
        float alpha[2];
        online_softmax_update(s, m_row, l_row, alpha, scale_log2);
        unsigned p[BLOCK_N / 16][4];
        convert_p_to_a_fragments(s, p);
        rescale_output(o_acc, alpha);
        accumulate_pv(o_acc, p, v_tile(stage));
        __syncthreads();  // every warp's wgmma on this stage has completed: refill it
        if (tid == 0 && j + STAGES < n_tiles)
            load_kv_tile(k_tile(stage), v_tile(stage), full(stage), &tma_k, &tma_v, j + STAGES, head);
    }
    // the loop's last __syncthreads: every warp's last wgmma has read Q, its rows can stage the output
    store_output_rows(o_acc, l_row, smem + SMEM_Q + warp * 16 * ROW_BYTES, o + (size_t)head * seq_q * HEAD_DIM_,
                      q0 + warp * 16, seq_q, lane);
}
