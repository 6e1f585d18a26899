// hopper_04_overlap — the softmax hides under the GEMMs: inside a warpgroup (the next S = Q·Kᵀ and this tile's
// O += P·V are in flight while the softmax runs) and between warpgroups (they take turns at the tensor cores).
//
// What it is. hopper_03_warpspec's CTA (a producer warp + 3 consumer warpgroups × 64 query rows, 128-key tiles,
//   a 4-stage full/empty mbarrier ring) with the consumers' tile loop reordered:
//     tile 0:   S = Q·K0ᵀ, wait, softmax → P0 (fp16 registers)
//     tile j≥1: wait full[j]; take the tensor-core turn (named barrier); issue S = Q·Kjᵀ; issue O += P(j-1)·V(j-1);
//               pass the turn to the next warpgroup; wait for S only (wgmma.wait_group 1); softmax on S (max, exp2,
//               row sums, in place, fp32) — while O += P·V still runs; wait for O (wait_group 0); release stage
//               j-1; rescale O by this tile's alpha; convert S → P(j)
//     after:    O += P(last)·V(last), wait, release, store.
//   Live registers: S (64) + P (32) + O (32) — P(j) overwrites P(j-1) only after the GEMM that reads it is done,
//   so the 160-register budget of 3 consumer warpgroups holds. The turn-taking (ids 1–3, 256 threads: my 128 sync,
//   the previous warpgroup's 128 arrive; consumer 0 hands itself the first turn) makes the GEMMs of the three
//   warpgroups run back to back instead of interleaved, so each gets its S early and its softmax overlaps the
//   others' GEMMs. It is compiled out of WATCHDOG builds (a named barrier cannot be bounded; it never decides
//   correctness: every warpgroup takes exactly n_tiles − 1 turns).
// Parent: hopper_03_warpspec.
// What changed (one idea): the order of the consumer loop — issue the next GEMM before the softmax, and schedule the
//   warpgroups' GEMMs round robin (FlashAttention-3's intra-warpgroup overlap + its warp scheduler barrier).
// Why: in hopper_03 each warpgroup alternates GEMM (tensor pipe busy, MUFU idle) and softmax (MUFU busy, tensor
//   idle); at D = 64 the two take equal time per tile (256 FLOP per score at 4096 FLOP/clk/SM vs 16 exp2/clk/SM),
//   so the best a warpgroup can do alone is 50 %; overlap lets the two units run at once.
// Predicted: B4 H16 S4096 ≈ 440 TFLOP/s (≈ cuDNN's 432: the tensor pipe and MUFU both busy most of the time);
//   B1 H8 S512 ≈ 10 µs (unchanged: 4 tiles per warpgroup leave little to overlap).
// ncu: sm__pipe_tensor_op_hmma_cycles_active up to ~70 %, MUFU (xu pipe) utilisation up; stall_wait down, stall
//   barrier (the turn) appears small; issue slots used per cycle up.
#include <cuda_fp16.h>

#include "common/mbarrier.cuh"
#include "common/tma.cuh"
#include "common/wgmma.cuh"

using namespace hopper;

#ifndef NUM_CONSUMERS
#define NUM_CONSUMERS 3        // consumer warpgroups per CTA (2 or 3)
#endif
#ifndef STAGES
#define STAGES 4               // K/V ring depth
#endif
constexpr int HEAD_DIM_ = 64;
constexpr int CONSUMERS = NUM_CONSUMERS;
constexpr int BLOCK_M = 64 * CONSUMERS;  // query rows per CTA: 64 per consumer warpgroup
constexpr int BLOCK_N = 128;             // keys per tile
constexpr int THREADS = 128 * (1 + CONSUMERS);
constexpr int PRODUCER_REGS = 24;
constexpr int CONSUMER_REGS = CONSUMERS == 3 ? 160 : 240;
static_assert(CONSUMERS == 2 || CONSUMERS == 3, "2 or 3 consumer warpgroups");
static_assert(STAGES >= 2, "a consumer holds two stages at once (K of tile j, V of tile j-1)");
static_assert(128 * (PRODUCER_REGS + CONSUMERS * CONSUMER_REGS) <= 65536, "setmaxnreg budgets exceed the register file");
constexpr int EMPTY_ARRIVALS = 4 * CONSUMERS;  // one per consumer warp
constexpr int ROW_BYTES = HEAD_DIM_ * 2;             // one swizzled 128-byte row
constexpr int Q_TILE_BYTES = 64 * ROW_BYTES;         // 8 KB: one consumer's rows (one TMA box)
constexpr int KV_TILE_BYTES = BLOCK_N * ROW_BYTES;   // 16 KB
constexpr int OUT_WARP_BYTES = 16 * ROW_BYTES;       // 2 KB: one warp's output rows, staged
constexpr int SMEM_Q = 0;                                              // CONSUMERS × Q tile
constexpr int SMEM_KV = SMEM_Q + CONSUMERS * Q_TILE_BYTES;             // stage s: K, then V
constexpr int SMEM_OUT = SMEM_KV + STAGES * 2 * KV_TILE_BYTES;         // 4·CONSUMERS warps × 2 KB
constexpr int SMEM_BARRIERS = SMEM_OUT + 4 * CONSUMERS * OUT_WARP_BYTES;  // q_full, full[STAGES], empty[STAGES]
constexpr int SMEM_LAYOUT_BYTES = SMEM_BARRIERS + (1 + 2 * STAGES) * 8;
constexpr int SMEM_BYTES = SMEM_LAYOUT_BYTES + 1024;  // + slack to align the base to 1024 bytes
static_assert(SMEM_BYTES <= 227 * 1024, "dynamic shared memory over the 227 KB a block may have");
extern "C" __constant__ int hopper_04_overlap_smem_bytes = SMEM_BYTES;
extern "C" __constant__ int hopper_04_overlap_threads = THREADS;
extern "C" __constant__ int hopper_04_overlap_block_m = BLOCK_M;
extern "C" __constant__ int hopper_04_overlap_q_box_rows = 64;   // the tensor maps' box heights (flashcore/tma.py)
extern "C" __constant__ int hopper_04_overlap_kv_box_rows = BLOCK_N;

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

// Issue O += P·V over the tile's 128 keys; the caller waits before touching o or p again.
__device__ __forceinline__ void issue_pv(float (&o)[32], unsigned (&p)[BLOCK_N / 16][4], unsigned v_tile) {
    const unsigned long long dv = desc_mn_major(v_tile, BLOCK_N);
    fence_operands(o);
    fence_operands(p);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BLOCK_N / 16; ++kk) wgmma_m64n64k16_rs(o, p[kk], dv + desc_mn_major_step(kk));
    wgmma_commit();
}

// Round-robin turns at the tensor cores between consumer warpgroups (named barriers 1..CONSUMERS).
__device__ __forceinline__ void take_tensor_core_turn(int consumer) {
#ifndef WATCHDOG
    named_barrier_sync(1 + consumer, 256);
#endif
}
__device__ __forceinline__ void pass_tensor_core_turn(int consumer) {
#ifndef WATCHDOG
    named_barrier_arrive(1 + (consumer + 1) % CONSUMERS, 256);
#endif
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
extern "C" __global__ void __launch_bounds__(THREADS, 1)
hopper_04_overlap(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
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
    auto q_tile = [&](int consumer) { return s_base + SMEM_Q + consumer * Q_TILE_BYTES; };
    auto k_tile = [&](int stage) { return s_base + SMEM_KV + stage * 2 * KV_TILE_BYTES; };
    auto v_tile = [&](int stage) { return s_base + SMEM_KV + stage * 2 * KV_TILE_BYTES + KV_TILE_BYTES; };
    const unsigned q_full = s_base + SMEM_BARRIERS;
    auto full = [&](int stage) { return s_base + SMEM_BARRIERS + 8 * (1 + stage); };
    auto empty = [&](int stage) { return s_base + SMEM_BARRIERS + 8 * (1 + STAGES + stage); };

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, warpgroup = tid >> 7;
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
        for (int st = 0; st < STAGES; ++st) {
            mbarrier_init(full(st), 1);                // the producer's arrive.expect_tx (+ the tile bytes)
            mbarrier_init(empty(st), EMPTY_ARRIVALS);  // one arrival per consumer warp
        }
        mbarrier_init_fence();
    }
    __syncthreads();  // the last block-wide barrier: from here on, roles only wait for data

    if (warpgroup == 0) {
        // ------------------------------------------------------------------ producer: one thread issues every copy
        warpgroup_release_registers<PRODUCER_REGS>();
        if (warp == 0 && lane == 0) {
            wd.role = WD_ROLE_PRODUCER;
            tma_prefetch_map(&tma_q);
            tma_prefetch_map(&tma_k);
            tma_prefetch_map(&tma_v);
            const int q_boxes = min(CONSUMERS, (seq_q - q0 + 63) / 64);  // boxes wholly past seq_q are skipped
            mbarrier_arrive_expect_tx(q_full, q_boxes * Q_TILE_BYTES);
            for (int c = 0; c < q_boxes; ++c) tma_load_rows(q_tile(c), &tma_q, q_full, q0 + 64 * c, head);
            for (int j = 0; j < n_tiles; ++j) {
                const int stage = j % STAGES, round = j / STAGES;
                wd.key_tile = j;
                if (!mbarrier_wait(wd, empty(stage), (round & 1) ^ 1, WD_SITE_EMPTY, stage, round, EMPTY_ARRIVALS))
                    return;
                load_kv_tile(k_tile(stage), v_tile(stage), full(stage), &tma_k, &tma_v, j, head);
            }
        }
    } else {
        // ------------------------------------------------------------------ consumers: 64 query rows each
        warpgroup_claim_registers<CONSUMER_REGS>();
        const int consumer = warpgroup - 1, warp_in_group = warp & 3;
        const float scale_log2 = softmax_scale * 1.4426950408889634f;
        float o_acc[32];
#pragma unroll
        for (int i = 0; i < 32; ++i) o_acc[i] = 0.f;
        float m_row[2] = {__int_as_float(0xff800000), __int_as_float(0xff800000)};
        float l_row[2] = {0.f, 0.f};

        if (consumer == 0) pass_tensor_core_turn(CONSUMERS - 1);  // consumer 0 takes the first turn
        if (!mbarrier_wait(wd, q_full, 0, WD_SITE_Q_FULL, -1, 0, 1)) return;
        // tile 0: scores and softmax only; its O += P·V is issued with tile 1's scores
        wd.key_tile = 0;
        if (!mbarrier_wait(wd, full(0), 0, WD_SITE_FULL, 0, 0, 1)) return;
        float s[64];
        unsigned p[BLOCK_N / 16][4];
        float alpha[2];
        issue_scores(s, q_tile(consumer), k_tile(0));
        wgmma_wait<0>();
        fence_operands(s);
        if (BLOCK_N > seq_kv) mask_tail_keys(s, 0, seq_kv, lane);
        online_softmax_update(s, m_row, l_row, alpha, scale_log2);  // alpha = 0: O is still zero
        convert_p_to_a_fragments(s, p);
        for (int j = 1; j < n_tiles; ++j) {
            const int stage = j % STAGES, round = j / STAGES, prev = (j - 1) % STAGES;
            wd.key_tile = j;
            if (!mbarrier_wait(wd, full(stage), round & 1, WD_SITE_FULL, stage, round, 1)) return;
            take_tensor_core_turn(consumer);
            issue_scores(s, q_tile(consumer), k_tile(stage));  // S(j) = Q·K(j)ᵀ
            issue_pv(o_acc, p, v_tile(prev));                   // O += P(j-1)·V(j-1)
            pass_tensor_core_turn(consumer);
            wgmma_wait<1>();  // S(j) done, O += P·V may still run
            fence_operands(s);
            if ((j + 1) * BLOCK_N > seq_kv) mask_tail_keys(s, j * BLOCK_N, seq_kv, lane);
            online_softmax_update(s, m_row, l_row, alpha, scale_log2);
            wgmma_wait<0>();  // O += P(j-1)·V(j-1) done: stage j-1 is free, p and o may be touched
            fence_operands(o_acc);
            fence_operands(p);
            if (lane == 0) mbarrier_arrive(empty(prev));
            rescale_output(o_acc, alpha);
            convert_p_to_a_fragments(s, p);
        }
        const int last = (n_tiles - 1) % STAGES;
        issue_pv(o_acc, p, v_tile(last));
        wgmma_wait<0>();
        fence_operands(o_acc);
        if (lane == 0) mbarrier_arrive(empty(last));
        store_output_rows(o_acc, l_row, smem + SMEM_OUT + (4 * consumer + warp_in_group) * OUT_WARP_BYTES,
                          o + (size_t)head * seq_q * HEAD_DIM_, q0 + 64 * consumer + 16 * warp_in_group, seq_q,
                          lane);
    }
}
