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

#include "hopper/hopper_tile.cuh"

constexpr int BLOCK_M = 64;    // query rows per CTA = one warpgroup
constexpr int STAGES = 2;      // K/V ring depth
constexpr int THREADS = 128;
using Layout = SmemLayout<1, STAGES, 0, 1 + STAGES>;  // Q, the K/V ring, q_full, full[STAGES]
constexpr int SMEM_BYTES = Layout::BYTES;
extern "C" __device__ int hopper_02_tma_smem_bytes[2] = {SMEM_BYTES, SMEM_BYTES};
// threads, rows per CTA, and the tensor maps' box heights (flashcore/tma.py)
extern "C" __device__ int hopper_02_tma_geometry[4] = {THREADS, BLOCK_M, BLOCK_M, BLOCK_N};

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
    const TileSmem<Layout> sm(smem_raw);
    const unsigned sq = sm.q_tile(0);
    const unsigned q_full = sm.barrier(0);
    auto full = [&](int stage) { return sm.barrier(1 + stage); };

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int n_qblocks = (seq_q + BLOCK_M - 1) / BLOCK_M;
    const int head = blockIdx.x / n_qblocks, q0 = (blockIdx.x % n_qblocks) * BLOCK_M;
    if (head >= bh) return;
    const int n_tiles = (seq_kv + BLOCK_N - 1) / BLOCK_N;
    Watchdog wd{WD_BUFFER, WD_ROLE_CONSUMER, head, q0 / BLOCK_M, -1};

    if (tid == 0) {
        mbarrier_init(q_full, 1);
        for (int st = 0; st < STAGES; ++st) mbarrier_init(full(st), 1);
        mbarrier_init_fence();
    }
    __syncthreads();
    if (tid == 0) {  // prologue: Q, and the first STAGES tiles
        prefetch_maps(&tma_q, &tma_k, &tma_v);
        mbarrier_arrive_expect_tx(q_full, Q_TILE_BYTES);
        tma_load_rows(sq, &tma_q, q_full, q0, head);
        for (int st = 0; st < STAGES && st < n_tiles; ++st)
            load_kv_tile(sm.k_tile(st), sm.v_tile(st), full(st), &tma_k, &tma_v, st, head);
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
        compute_scores(s, sq, sm.k_tile(stage));
        if ((j + 1) * BLOCK_N > seq_kv) mask_tail_keys(s, j * BLOCK_N, seq_kv, lane);
        float alpha[2];
        online_softmax_update(s, m_row, l_row, alpha, scale_log2);
        unsigned p[BLOCK_N / 16][4];
        convert_p_to_a_fragments(s, p);
        rescale_output(o_acc, alpha);
        accumulate_pv(o_acc, p, sm.v_tile(stage));
        __syncthreads();  // every warp's wgmma on this stage has completed: refill it
        if (tid == 0 && j + STAGES < n_tiles)
            load_kv_tile(sm.k_tile(stage), sm.v_tile(stage), full(stage), &tma_k, &tma_v, j + STAGES, head);
    }
    // the loop's last __syncthreads: every warp's last wgmma has read Q, its rows can stage the output
    store_output_rows(o_acc, l_row, sm.q_rows(warp), o + (size_t)head * seq_q * HEAD_DIM_,
                      q0 + warp * 16, seq_q, lane);
}
