// flashcore_hopper — the library's Hopper kernel: hopper_04_overlap made persistent (one CTA per SM walks a list
// of tiles), so the loads of the next tile and the store of this one overlap.
//
// What it is. O = softmax(Q·Kᵀ·scale)·V, fp16 in, fp32 accumulate, D = 64, not causal, any seq_q, seq_kv ≥ 1.
//   Grid = min(#SMs, #tiles), a tile = 192 query rows of one head (3 consumer warpgroups × 64 rows); CTA b takes
//   tiles b, b + grid, b + 2·grid, … (tile t = head t / n_qblocks, query block t % n_qblocks: consecutive tiles
//   share a head, so the CTAs running at one time read the same K/V from L2).
//   Roles and main loop are hopper_04_overlap's: a producer warp (24 registers) issues TMA copies into a 4-stage
//   K/V ring (full/empty mbarriers); each consumer warpgroup (160 registers) issues S(j) = Q·K(j)ᵀ and
//   O += P(j-1)·V(j-1) back to back in its turn at the tensor cores, runs the softmax of S(j) while O += P·V runs,
//   then releases stage j-1.
//   Across tiles: the ring's stage index and phase continue (a running key-tile count), Q gets its own pair of
//   barriers — q_full (the producer's arrive.expect_tx + the Q bytes; consumers wait with parity tile_iter & 1) and
//   q_empty (one arrival per consumer warp once its last S = Q·Kᵀ of the tile has completed; the producer waits
//   with parity (tile_iter − 1) & 1 before loading the next tile's Q) — and the output is staged per warp in its
//   own 2 KB, so the next tile's Q and K/V stream in while this tile's output is written.
// Parent: hopper_04_overlap.
// What changed (one idea): a static persistent tile scheduler (FlashAttention-3's for non-causal attention).
// Why: in hopper_04 a CTA's producer has nothing to load once its tile's last K/V tile is in, and a new CTA starts
//   cold (barrier init, tensor-map fetch, Q and the first K/V tile from memory, an empty pipeline) — about 2–3 µs
//   per CTA, 10–11 times per SM at B4 H16 S4096 (1408 tiles on 132 SMs). Persistent CTAs pay it once.
// Predicted: B4 H16 S4096 ≈ 455 TFLOP/s (+3–5 % over hopper_04); B8 H16 S2048 gains more (+5–8 %: half as many key
//   tiles per query tile, so the per-tile start costs weigh twice as much); B1 H8 S512 unchanged (24 tiles < 132
//   SMs: one tile per CTA).
// ncu: sm__cycles_active.avg up (no tail of idle SMs between waves), tensor pipe active up a few %,
//   launch__grid_size = 132.
// Knob: EXP2_FMA_EVERY (default 0 = off). When k > 0, every k-th 8-key column of a tile computes 2^x on the FMA pipe
//   (a cubic on the fraction + an exponent-bit add, relative error 7.5e-5, under fp16's half ulp) instead of MUFU:
//   at D = 64 MUFU (16 exp2/clk/SM) is as loaded as the tensor pipe, so moving a quarter of the exponentials to
//   the 128-lane FMA pipe can lift the softmax's ceiling (FlashAttention-4's trick on Blackwell).
#include <cuda_fp16.h>

#include "hopper/hopper_tile.cuh"

#ifndef NUM_CONSUMERS
#define NUM_CONSUMERS 3        // consumer warpgroups per CTA (2 or 3)
#endif
#ifndef STAGES
#define STAGES 4               // K/V ring depth
#endif
#ifndef EXP2_FMA_EVERY
#define EXP2_FMA_EVERY 0       // > 0: every k-th 8-key column computes 2^x on the FMA pipe instead of MUFU
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
// CONSUMERS Q tiles, the K/V ring, 2 KB of output staging per consumer warp; q_full, full[], empty[], q_empty
using Layout = SmemLayout<CONSUMERS, STAGES, 4 * CONSUMERS, 2 + 2 * STAGES>;
constexpr int SMEM_BYTES = Layout::BYTES;
extern "C" __device__ int flashcore_hopper_smem_bytes[2] = {SMEM_BYTES, SMEM_BYTES};
// threads, rows per CTA, and the tensor maps' box heights (flashcore/tma.py)
extern "C" __device__ int flashcore_hopper_geometry[4] = {THREADS, BLOCK_M, WARPGROUP_ROWS, BLOCK_N};

// 2^x for x ≤ 0 on the FMA pipe: x = j + f with j = round(x) (the 1.5·2^23 trick puts j in the low mantissa bits),
// 2^f for f in [-0.5, 0.5] by a cubic (relative error 7.5e-5), 2^j added to the exponent field. x is clamped at -126
// so the result stays a positive (possibly subnormal) float; -inf (a masked key) gives ~1e-38, i.e. 0 in fp16.
__device__ __forceinline__ float exp2_fma(float x) {
    x = fmaxf(x, -126.f);
    const float shifted = x + 12582912.f;
    const float f = x - (shifted - 12582912.f);
    const float p = fmaf(fmaf(fmaf(0.0551716648f, f, 0.2426111251f), f, 0.6932609677f), f, 0.9999280572f);
    return __int_as_float(__float_as_int(p) + (__float_as_int(shifted) << 23));
}
// flashcore_hopper's EXP2_FMA_EVERY knob as online_softmax_update's exp2 policy: every k-th column on the FMA pipe.
struct Exp2Knob {
    static __device__ __forceinline__ float of(float x, int n) {
        return (EXP2_FMA_EVERY > 0 && n % (EXP2_FMA_EVERY > 0 ? EXP2_FMA_EVERY : 1) == EXP2_FMA_EVERY - 1)
                   ? exp2_fma(x) : fast_exp2(x);
    }
};

// FAULT_SKIP_RELEASE (a build mode for chapter 5's watchdog demo, only with WATCHDOG): the last consumer warp skips its
// release (empty[s] arrive) of this CTA's first key tile, once. empty[0] then never completes its phase, so the
// producer's wait to refill stage 0 (key tile STAGES: needs more than STAGES key tiles per CTA) cannot return; the
// demo shows the watchdog turning that hang into records — the producer's (reason 1, site empty[s], stage 0, parity
// 0), then every consumer's waiting on full[s] (reason 2) — and a kernel that returns. A normal build: no change.
#ifdef FAULT_SKIP_RELEASE
#ifndef WATCHDOG
#error "FAULT_SKIP_RELEASE without WATCHDOG hangs the GPU: build it with -DWATCHDOG"
#endif
__device__ __forceinline__ bool skips_release(int consumer, int warp_in_group, int key_tile_count) {
    return consumer == CONSUMERS - 1 && warp_in_group == 3 && key_tile_count == 0;
}
#else
__device__ __forceinline__ bool skips_release(int, int, int) { return false; }
#endif

// ---------------------------------------------------------------------------------------------- the kernel
extern "C" __global__ void __launch_bounds__(THREADS, 1)
flashcore_hopper(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
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
    const unsigned q_empty = sm.barrier(1 + 2 * STAGES);

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, warpgroup = tid >> 7;
    const int n_qblocks = (seq_q + BLOCK_M - 1) / BLOCK_M;
    const int n_work_tiles = bh * n_qblocks;
    const int n_tiles = (seq_kv + BLOCK_N - 1) / BLOCK_N;  // key tiles per work tile
    Watchdog wd{WD_BUFFER, WD_ROLE_CONSUMER, -1, -1, -1};

    if (tid == 0) {
        mbarrier_init(q_full, 1);
        mbarrier_init(q_empty, EMPTY_ARRIVALS);          // one arrival per consumer warp
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
            int kv_iter = 0, tile_iter = 0;  // key tiles and work tiles this CTA has loaded so far
            for (int tile = blockIdx.x; tile < n_work_tiles; tile += gridDim.x, ++tile_iter) {
                const int head = tile / n_qblocks, q0 = (tile % n_qblocks) * BLOCK_M;
                wd.head = head; wd.query_tile = q0 / BLOCK_M; wd.key_tile = -1;
                if (tile_iter > 0 &&  // every consumer warp is done reading the previous tile's Q
                    !mbarrier_wait(wd, q_empty, (tile_iter - 1) & 1, WD_SITE_Q_EMPTY, -1, tile_iter - 1,
                                   EMPTY_ARRIVALS))
                    return;
                load_q_boxes(sm.q_tile(0), &tma_q, q_full, q0, head, seq_q, CONSUMERS);
                for (int j = 0; j < n_tiles; ++j, ++kv_iter) {
                    const int stage = kv_iter % STAGES, round = kv_iter / STAGES;
                    wd.key_tile = j;
                    if (!mbarrier_wait(wd, empty(stage), (round & 1) ^ 1, WD_SITE_EMPTY, stage, round,
                                       EMPTY_ARRIVALS))
                        return;
                    load_kv_tile(sm.k_tile(stage), sm.v_tile(stage), full(stage), &tma_k, &tma_v, j, head);
                }
            }
        }
    } else {
        // ------------------------------------------------------------------ consumers: 64 query rows each
        warpgroup_claim_registers<CONSUMER_REGS>();
        const int consumer = warpgroup - 1, warp_in_group = warp & 3;
        const float scale_log2 = softmax_scale * 1.4426950408889634f;
        if (consumer == 0) pass_tensor_core_turn<CONSUMERS>(CONSUMERS - 1);  // consumer 0 takes the first turn
        int kv_iter = 0, tile_iter = 0;  // key tiles and work tiles this warpgroup has consumed so far
        for (int tile = blockIdx.x; tile < n_work_tiles; tile += gridDim.x, ++tile_iter) {
            const int head = tile / n_qblocks, q0 = (tile % n_qblocks) * BLOCK_M;
            wd.head = head; wd.query_tile = q0 / BLOCK_M; wd.key_tile = -1;
            float o_acc[32];
#pragma unroll
            for (int i = 0; i < 32; ++i) o_acc[i] = 0.f;
            float m_row[2] = {__int_as_float(0xff800000), __int_as_float(0xff800000)};
            float l_row[2] = {0.f, 0.f};
            if (!mbarrier_wait(wd, q_full, tile_iter & 1, WD_SITE_Q_FULL, -1, tile_iter, 1)) return;

            // key tile 0: scores and softmax only; its O += P·V is issued with key tile 1's scores
            float s[64];
            unsigned p[BLOCK_N / 16][4];
            float alpha[2];
            {
                const int stage = kv_iter % STAGES, round = kv_iter / STAGES;
                wd.key_tile = 0;
                if (!mbarrier_wait(wd, full(stage), round & 1, WD_SITE_FULL, stage, round, 1)) return;
                issue_scores(s, sm.q_tile(consumer), sm.k_tile(stage));
                wgmma_wait<0>();
                fence_operands(s);
                if (BLOCK_N > seq_kv) mask_tail_keys(s, 0, seq_kv, lane);
                online_softmax_update<Exp2Knob>(s, m_row, l_row, alpha, scale_log2);  // alpha = 0: O is still zero
                convert_p_to_a_fragments(s, p);
            }
            for (int j = 1; j < n_tiles; ++j) {
                const int it = kv_iter + j, stage = it % STAGES, round = it / STAGES, prev = (it - 1) % STAGES;
                wd.key_tile = j;
                if (!mbarrier_wait(wd, full(stage), round & 1, WD_SITE_FULL, stage, round, 1)) return;
                take_tensor_core_turn(consumer);
                issue_scores(s, sm.q_tile(consumer), sm.k_tile(stage));  // S(j) = Q·K(j)ᵀ
                issue_pv(o_acc, p, sm.v_tile(prev));                   // O += P(j-1)·V(j-1)
                pass_tensor_core_turn<CONSUMERS>(consumer);
                wgmma_wait<1>();  // S(j) done, O += P·V may still run
                fence_operands(s);
                if ((j + 1) * BLOCK_N > seq_kv) mask_tail_keys(s, j * BLOCK_N, seq_kv, lane);
                online_softmax_update<Exp2Knob>(s, m_row, l_row, alpha, scale_log2);
                wgmma_wait<0>();  // O += P(j-1)·V(j-1) done: stage j-1 is free, p and o may be touched
                fence_operands(o_acc);
                fence_operands(p);
                if (lane == 0 && !skips_release(consumer, warp_in_group, it - 1)) mbarrier_arrive(empty(prev));
                rescale_output(o_acc, alpha);
                convert_p_to_a_fragments(s, p);
            }
            if (lane == 0) mbarrier_arrive(q_empty);  // this warp's last S = Q·Kᵀ of the tile has completed
            const int last = (kv_iter + n_tiles - 1) % STAGES;
            issue_pv(o_acc, p, sm.v_tile(last));
            wgmma_wait<0>();
            fence_operands(o_acc);
            if (lane == 0 && !skips_release(consumer, warp_in_group, kv_iter + n_tiles - 1))
                mbarrier_arrive(empty(last));
            kv_iter += n_tiles;
            __syncwarp();  // the previous tile's reads of this staging area (other lanes) are done
            store_output_rows(o_acc, l_row, sm.out_rows(4 * consumer + warp_in_group),
                              o + (size_t)head * seq_q * HEAD_DIM_, q0 + 64 * consumer + 16 * warp_in_group,
                              seq_q, lane);
        }
    }
}
