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

#include "hopper/hopper_tile.cuh"

#ifndef NUM_CONSUMERS
#define NUM_CONSUMERS 3        // consumer warpgroups per CTA (2 or 3)
#endif
#ifndef STAGES
#define STAGES 4               // K/V ring depth
#endif
constexpr int CONSUMERS = NUM_CONSUMERS;
constexpr int BLOCK_M = 64 * CONSUMERS;  // query rows per CTA: 64 per consumer warpgroup
constexpr int THREADS = 128 * (1 + CONSUMERS);
constexpr int PRODUCER_REGS = 24;
constexpr int CONSUMER_REGS = CONSUMERS == 3 ? 160 : 240;
static_assert(CONSUMERS == 2 || CONSUMERS == 3, "2 or 3 consumer warpgroups");
static_assert(STAGES >= 2, "a consumer holds two stages at once (K of tile j, V of tile j-1)");
static_assert(128 * (PRODUCER_REGS + CONSUMERS * CONSUMER_REGS) <= 65536, "setmaxnreg budgets exceed the register file");
constexpr int EMPTY_ARRIVALS = 4 * CONSUMERS;  // one per consumer warp
// CONSUMERS Q tiles, the K/V ring, 2 KB of output staging per consumer warp; q_full, full[], empty[]
using Layout = SmemLayout<CONSUMERS, STAGES, 4 * CONSUMERS, 1 + 2 * STAGES>;
constexpr int SMEM_BYTES = Layout::BYTES;
extern "C" __device__ int hopper_04_overlap_smem_bytes[2] = {SMEM_BYTES, SMEM_BYTES};
// threads, rows per CTA, and the tensor maps' box heights (flashcore/tma.py)
extern "C" __device__ int hopper_04_overlap_geometry[4] = {THREADS, BLOCK_M, WARPGROUP_ROWS, BLOCK_N};

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
    const TileSmem<Layout> sm(smem_raw);
    const unsigned q_full = sm.barrier(0);
    auto full = [&](int stage) { return sm.barrier(1 + stage); };
    auto empty = [&](int stage) { return sm.barrier(1 + STAGES + stage); };

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, warpgroup = tid >> 7;
    const int n_qblocks = (seq_q + BLOCK_M - 1) / BLOCK_M;
    const int head = blockIdx.x / n_qblocks, q0 = (blockIdx.x % n_qblocks) * BLOCK_M;
    if (head >= bh) return;
    const int n_tiles = (seq_kv + BLOCK_N - 1) / BLOCK_N;
    Watchdog wd{WD_BUFFER, WD_ROLE_CONSUMER, head, q0 / BLOCK_M, -1};

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
            prefetch_maps(&tma_q, &tma_k, &tma_v);
            load_q_boxes(sm.q_tile(0), &tma_q, q_full, q0, head, seq_q, CONSUMERS);
            for (int j = 0; j < n_tiles; ++j) {
                const int stage = j % STAGES, round = j / STAGES;
                wd.key_tile = j;
                if (!mbarrier_wait(wd, empty(stage), (round & 1) ^ 1, WD_SITE_EMPTY, stage, round, EMPTY_ARRIVALS))
                    return;
                load_kv_tile(sm.k_tile(stage), sm.v_tile(stage), full(stage), &tma_k, &tma_v, j, head);
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

        if (consumer == 0) pass_tensor_core_turn<CONSUMERS>(CONSUMERS - 1);  // consumer 0 takes the first turn
        if (!mbarrier_wait(wd, q_full, 0, WD_SITE_Q_FULL, -1, 0, 1)) return;
        // tile 0: scores and softmax only; its O += P·V is issued with tile 1's scores
        wd.key_tile = 0;
        if (!mbarrier_wait(wd, full(0), 0, WD_SITE_FULL, 0, 0, 1)) return;
        float s[64];
        unsigned p[BLOCK_N / 16][4];
        float alpha[2];
        issue_scores(s, sm.q_tile(consumer), sm.k_tile(0));
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
            issue_scores(s, sm.q_tile(consumer), sm.k_tile(stage));  // S(j) = Q·K(j)ᵀ
            issue_pv(o_acc, p, sm.v_tile(prev));                   // O += P(j-1)·V(j-1)
            pass_tensor_core_turn<CONSUMERS>(consumer);
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
        issue_pv(o_acc, p, sm.v_tile(last));
        wgmma_wait<0>();
        fence_operands(o_acc);
        if (lane == 0) mbarrier_arrive(empty(last));
        store_output_rows(o_acc, l_row, sm.out_rows(4 * consumer + warp_in_group),
                          o + (size_t)head * seq_q * HEAD_DIM_, q0 + 64 * consumer + 16 * warp_in_group, seq_q,
                          lane);
    }
}
