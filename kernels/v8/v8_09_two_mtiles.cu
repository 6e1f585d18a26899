// v8_09_two_mtiles — each warp owns 32 query rows (two m16 tiles): every K/V fragment feeds 4 mma instead of 2.
//
// Parent: v8_07_dsmem_push (v8_08's split K/V waits are left out: at B4 H16 S4096 their extra barrier and +6
//   registers cost more than they saved at the mission shape).
// Why: at B4 H16 S4096 v8_05/v8_07 read every K and V fragment from shared memory (ldmatrix) once per 16 query rows:
//   32 LDSM.x4 per 64 HMMA per warp and key tile, so the shared-memory pipe is as busy as the tensor pipe (ncu:
//   memory throughput above tensor-pipe utilisation, stall_short_scoreboard / mio_throttle). At the mission shape the
//   single m16 chain per warp is latency-bound (low issue-active, stall_wait on top).
// What changed (one idea): MT=2 m16 tiles per warp (rows warp·32 … warp·32+31; CTA = 4 warps × 32 = 128 query rows,
//   as FA2 does for head dim 64): each ldmatrix.x4 of K (or of V, .trans) now feeds 4 mma.sync, halving the
//   shared-memory traffic per mma, and the two independent m-tile chains interleave (ILP) to hide mma/exp2 latency.
//   Everything else (swizzled cp.async ring, exp2 softmax in registers, cluster split-KV with pushed partials) as v8_07.
// Predicted: 5.5 µs at B1 H8 S512 D64 (H100, CUDA-graph replay); ≥ 300 TFLOP/s at B4 H16 S4096.
// ncu metric that should move: l1tex shared-memory wavefronts per HMMA halve; sm__pipe_tensor_op_hmma_cycles_active
//   up at S4096; issue-active up at the mission shape.
#ifndef STAGES
#define STAGES 2
#endif
#ifndef CLUSTER
#define CLUSTER 4      // CTAs per cluster = key splits at small shapes (flashcore/specs/v8_mma.py: SplitKV)
#endif
#ifndef MT
#define MT 2           // m16 tiles (16 query rows each) per warp (v8_07: 1)
#endif
#define BLOCK_M (NWARPS * 16 * MT)   // query rows per CTA: 128

#include "v8/v8_mma_tile.cuh"

// dynamic shared memory: Q tile [128][64], STAGES × (K tile, V tile) [64][64], then (split mode only) the landing buffer for the
// cluster's partials of my rows: O [CLUSTER][ROWS][OP_STRIDE] fp32, row max [CLUSTER][ROWS], row sum [CLUSTER][ROWS]
constexpr int SMEM_UNSPLIT = ring_bytes(BLOCK_M, STAGES);
constexpr int SMEM_SPLIT = SMEM_UNSPLIT + landing_bytes(BLOCK_M);
static_assert(SMEM_SPLIT <= SMEM_LIMIT, "v8_09_two_mtiles: too much shared memory for one CTA");
extern "C" __device__ int v8_09_two_mtiles_smem_bytes[2] = {SMEM_UNSPLIT, SMEM_SPLIT};

extern "C" __global__ void __cluster_dims__(CLUSTER, 1, 1) __launch_bounds__(NWARPS * 32)
v8_09_two_mtiles(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                 __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale,
                 int split) {
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char* sQ = smem;
    unsigned char* sKV = smem + BLOCK_M * ROW_BYTES;
    unsigned char* sLand = sKV + STAGES * 2 * BLOCK_N * ROW_BYTES;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int n_qblocks = (seq_q + BLOCK_M - 1) / BLOCK_M;
    const int tile = split ? (int)blockIdx.x / CLUSTER : (int)blockIdx.x;
    const int rank = split ? (int)cluster_ctarank() : 0;
    const int head = tile / n_qblocks, qb = tile % n_qblocks;
    if (head >= bh) return;  // only the padding CTAs of the unsplit grid (never in split mode: no cluster barrier)
    if (split) cluster_arrive_relaxed();  // "I have started": my landing buffer exists (waited for before pushing)
    const int q0 = qb * BLOCK_M;
    const __half* qh = q + (size_t)head * seq_q * HEAD_DIM;
    const __half* kh = k + (size_t)head * seq_kv * HEAD_DIM;
    const __half* vh = v + (size_t)head * seq_kv * HEAD_DIM;
    __half* oh = o + (size_t)head * seq_q * HEAD_DIM;
    const int n_kv_tiles = (seq_kv + BLOCK_N - 1) / BLOCK_N;
    // this CTA's key tiles [t_begin, t_end): all of them, or its share of the cluster's split
    const int t_begin = split ? rank * n_kv_tiles / CLUSTER : 0;
    const int t_end = split ? (rank + 1) * n_kv_tiles / CLUSTER : n_kv_tiles;
    const int n_tiles = t_end - t_begin;

    const unsigned sq = smem_u32(sQ);
    // prologue: Q and the first STAGES-1 K/V tiles, one commit group per stage
    load_tile_async<BLOCK_M>(sq, qh, q0, seq_q, tid);
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < n_tiles) {
            load_tile_async<BLOCK_N>(smem_u32(stage_k(sKV, s)), kh, (t_begin + s) * BLOCK_N, seq_kv, tid);
            load_tile_async<BLOCK_N>(smem_u32(stage_v(sKV, s)), vh, (t_begin + s) * BLOCK_N, seq_kv, tid);
        }
        cp_async_commit();
    }
    check_split_launch(split, bh, n_qblocks, split ? SMEM_SPLIT : SMEM_UNSPLIT);   // split: the launcher's decision

    const int g = lane >> 2, t = lane & 3;  // this thread's rows g, g+8 and columns 2t, 2t+1 in an m16n8 tile
    const float scale_log2 = softmax_scale * 1.4426950408889634f;
    const int wrow = warp * 16 * MT;  // this warp's first query row in the CTA tile
    unsigned qf[MT][4][4];            // Q fragments, loaded once
    float acc_o[MT][8][4], m_row[MT][2], l_row[MT][2];
    init_accumulators(acc_o, m_row, l_row);

    for (int j = 0; j < n_tiles; ++j) {
        cp_async_wait<STAGES - 2>();  // tile j (and Q) landed for this thread
        __syncthreads();              // ... for every thread; and everybody is done with tile j-1's buffer
        {
            int jn = j + STAGES - 1;
            if (jn < n_tiles) {
                load_tile_async<BLOCK_N>(smem_u32(stage_k(sKV, jn % STAGES)), kh, (t_begin + jn) * BLOCK_N,
                                         seq_kv, tid);
                load_tile_async<BLOCK_N>(smem_u32(stage_v(sKV, jn % STAGES)), vh, (t_begin + jn) * BLOCK_N,
                                         seq_kv, tid);
            }
            cp_async_commit();
        }
        if (j == 0) load_q_fragments(qf, sq, wrow, lane);
        const unsigned sk = smem_u32(stage_k(sKV, j % STAGES)), sv = smem_u32(stage_v(sKV, j % STAGES));
        float s[MT][8][4];
        qk_scores(s, qf, sk, lane);
        mask_tail(s, (t_begin + j) * BLOCK_N, seq_kv, lane);
        unsigned pf[MT][4][4];
        ONLINE_SOFTMAX(s, m_row, l_row, acc_o, pf, scale_log2);
        pv_accumulate(acc_o, pf, sv, lane);
    }
    cp_async_wait<0>();
    finish_row_sums(l_row);

    if (split) {
        cluster_wait();  // every CTA of the cluster is running: its shared memory may be written
        push_partials(acc_o, m_row, l_row, smem_u32(sLand), rank, wrow, lane);
        cluster_sync_all();  // every push of the cluster has landed and is visible
        combine_landing(sLand, rank, oh, q0, seq_q, tid);
        return;
    }
    // ---- unsplit epilogue: normalise, stage this warp's rows in its own Q rows, 16-byte stores
    store_rows(acc_o, l_row, sQ, oh, q0, seq_q, wrow, g, t, lane);
}
