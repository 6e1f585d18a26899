// v8_07_dsmem_push — the split-KV combine without remote-load round trips: push partials, one cluster barrier.
//
// Parent: v8_06_cluster_splitkv. Its ncu report at the mission shape showed the split *slower* than v8_05, with
//   stall_long_scoreboard and stall_membar on top: the combine pulled every partial with ld.shared::cluster, and
//   the loads were issued one after another (volatile asm, each one a full DSMEM round trip), ~16 of them per thread
//   for a 4-CTA cluster (the time grew with the cluster size: 2 < 4 < 8 CTAs).
// What changed (one idea): each CTA *pushes* its partial (unnormalised O rows, row max, row sum) straight from its
//   registers into the shared memory of the CTA that owns those rows (`st.shared::cluster`, fire-and-forget; with
//   4 warps × 16 rows and CLUSTER=4, warp w's rows all belong to CTA w), into a dedicated landing buffer
//   [CLUSTER][16 rows][72 floats]; then ONE cluster barrier (arrive.release / wait.acquire), and each CTA combines
//   its 16 rows from local shared memory (fixed order over the sources: deterministic). No remote loads, no second
//   barrier (nobody touches another CTA's memory after the barrier).
// Predicted: 5.5 µs at B1 H8 S512 D64 (H100, CUDA-graph replay).
// ncu metric that should move: stall_long_scoreboard and stall_membar per issued instruction down; duration down.
// Knobs: CLUSTER (CTAs per query tile when the keys are split) and STAGES (cp.async ring depth). The library kernel
//   (kernels/flashcore.cu) is this kernel with CLUSTER=2, STAGES=3 (the variant sweep's choice at the mission shape).
//   Measured afterwards: the barrier.cluster.arrive.release above still compiles to MEMBAR.ALL.GPU (v8_10 removes it).
#ifndef STAGES
#define STAGES 2
#endif
#ifndef CLUSTER
#define CLUSTER 4      // CTAs per cluster = key splits at small shapes (flashcore/specs/v8_mma.py: SplitKV)
#endif
#define MT 1           // m16 tiles (16 query rows each) per warp
#define BLOCK_M 64     // query rows per CTA (16 per warp)

#include "v8/v8_mma_tile.cuh"

// dynamic shared memory: Q tile, STAGES × (K tile, V tile), then (split mode only) the landing buffer for the
// cluster's partials of my rows: O [CLUSTER][ROWS][OP_STRIDE] fp32, row max [CLUSTER][ROWS], row sum [CLUSTER][ROWS]
constexpr int SMEM_UNSPLIT = ring_bytes(BLOCK_M, STAGES);
constexpr int SMEM_SPLIT = SMEM_UNSPLIT + landing_bytes(BLOCK_M);
static_assert(SMEM_SPLIT <= SMEM_LIMIT, "v8_07_dsmem_push: too much shared memory for one CTA");
extern "C" __device__ int v8_07_dsmem_push_smem_bytes[2] = {SMEM_UNSPLIT, SMEM_SPLIT};

extern "C" __global__ void __cluster_dims__(CLUSTER, 1, 1) __launch_bounds__(NWARPS * 32)
v8_07_dsmem_push(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
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
    // prologue: Q and the first STAGES-1 K/V tiles, one commit group each
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
    // ---- unsplit epilogue (v8_05): normalise, stage this warp's 16 rows in its own Q rows, 16-byte stores
#pragma unroll
    for (int r = 0; r < 2; ++r) l_row[0][r] = l_row[0][r] > 0.f ? 1.f / l_row[0][r] : 0.f;
    __syncwarp();
    stage_tile_rows(acc_o[0], l_row[0][0], l_row[0][1], sQ, wrow + g, t);
    __syncwarp();
    copy_rows_out<MT>(sQ, oh, q0, seq_q, wrow, lane);
}
