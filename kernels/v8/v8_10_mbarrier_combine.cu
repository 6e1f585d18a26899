// v8_10_mbarrier_combine — the cluster combine without a GPU-wide fence: st.async + an mbarrier transaction count.
//
// Parent: v8_09_two_mtiles. In v8_06…v8_09 the combine waits at `barrier.cluster.arrive.release`, which the SASS shows
//   as MEMBAR.ALL.GPU + ERRBAR + CGAERRBAR before UCGABAR_ARV (a fence that drains every outstanding memory operation
//   of the thread, at GPU scope), and ncu puts stall_membar near the top at the mission shape.
// What changed (one idea): partials are pushed with `st.async.shared::cluster.mbarrier::complete_tx::bytes`: each
//   remote store decrements the transaction count of an mbarrier *in the owner CTA*, which armed it at start
//   (mbarrier.init + arrive.expect_tx of the exact byte count it will receive). The owner waits on its own mbarrier
//   (try_wait.parity), not on a fence; the cluster barriers are relaxed (no .release → no MEMBAR): one at start
//   ("every CTA has armed its mbarrier", after fence.mbarrier_init), one split arrive/wait around the combine so no
//   CTA leaves while pushes into it may be in flight.
// Predicted: 4.8 µs at B1 H8 S512 D64 (H100, CUDA-graph replay).
// ncu metric that should move: stall_membar → ≈ 0 at the mission shape; duration down.
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
constexpr int SMEM_SPLIT = SMEM_UNSPLIT + landing_bytes(BLOCK_M) + 16;   // + the landing buffer's mbarrier
static_assert(SMEM_SPLIT <= SMEM_LIMIT, "v8_10_mbarrier_combine: too much shared memory for one CTA");
extern "C" __device__ int v8_10_mbarrier_combine_smem_bytes[2] = {SMEM_UNSPLIT, SMEM_SPLIT};

// v8_09's push_partials with st.async: each remote store counts its bytes down on the owner's landing mbarrier
// (`mbar`, a smem_u32 address in this CTA: mapped to the owner's like the landing buffer), so the owner waits for
// its own barrier's transaction count instead of a release fence across the cluster.
template <int kMT>
__device__ __forceinline__ void push_partials_async(const float (&acc_o)[kMT][8][4], const float (&m_row)[kMT][2],
                                                    const float (&l_row)[kMT][2], unsigned land, unsigned mbar,
                                                    int rank, int wrow, int g, int t) {
    constexpr int ROWS = BLOCK_M / CLUSTER;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int row = wrow + mt * 16 + g + 8 * h;
            const unsigned dst = dsmem_addr(land, row / ROWS);
            const unsigned dbar = dsmem_addr(mbar, row / ROWS);
            const int lrow = rank * ROWS + row % ROWS;  // [source rank][local row]
#pragma unroll
            for (int dt = 0; dt < 8; ++dt)
                st_async_f2(dst + (lrow * OP_STRIDE + dt * 8 + 2 * t) * 4, acc_o[mt][dt][2 * h],
                            acc_o[mt][dt][2 * h + 1], dbar);
            if (t == 0) {
                st_async_f(dst + (CLUSTER * ROWS * OP_STRIDE + lrow) * 4, m_row[mt][h], dbar);
                st_async_f(dst + (CLUSTER * ROWS * OP_STRIDE + CLUSTER * ROWS + lrow) * 4, l_row[mt][h], dbar);
            }
        }
}

extern "C" __global__ void __cluster_dims__(CLUSTER, 1, 1) __launch_bounds__(NWARPS * 32)
v8_10_mbarrier_combine(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                       __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale,
                       int split) {
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char* sQ = smem;
    unsigned char* sKV = smem + BLOCK_M * ROW_BYTES;
    unsigned char* sLand = sKV + STAGES * 2 * BLOCK_N * ROW_BYTES;
    // the landing buffer's mbarrier (8 bytes) follows it: BLOCK_M rows × (64 + 2) floats, then the mbarrier
    const unsigned mbar = smem_u32(sLand) + BLOCK_M * OP_STRIDE * 4 + 2 * BLOCK_M * 4;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int n_qblocks = (seq_q + BLOCK_M - 1) / BLOCK_M;
    const int tile = split ? (int)blockIdx.x / CLUSTER : (int)blockIdx.x;
    const int rank = split ? (int)cluster_ctarank() : 0;
    const int head = tile / n_qblocks, qb = tile % n_qblocks;
    if (head >= bh) return;  // only the padding CTAs of the unsplit grid (never in split mode: no cluster barrier)
    if (split) {
        // arm my landing mbarrier with the bytes the cluster will push into it: BLOCK_M rows × (64 O + m + l) floats
        if (tid == 0) landing_arm(mbar, BLOCK_M * (HEAD_DIM + 2) * 4);
        __syncthreads();
        cluster_arrive_relaxed();  // "my mbarrier is armed" (waited for before pushing)
    }
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
        cluster_wait();  // every CTA of the cluster has armed its mbarrier: its landing buffer may be written
        push_partials_async(acc_o, m_row, l_row, smem_u32(sLand), mbar, rank, wrow, g, t);
        cluster_arrive_relaxed();  // "my pushes are issued" (the exit barrier, waited for at the very end)
        landing_wait(mbar);        // every byte of my rows has landed (transaction count reached zero)
        combine_landing(sLand, rank, oh, q0, seq_q, tid);
        cluster_wait();  // nobody leaves while a push into it may still be in flight
        return;
    }
    // ---- unsplit epilogue: normalise, stage this warp's rows in its own Q rows, 16-byte stores
    store_rows(acc_o, l_row, sQ, oh, q0, seq_q, wrow, g, t, lane);
}
