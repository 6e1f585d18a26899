// v8_06_cluster_splitkv — a grid shaped for 132 SMs: split the keys over a 4-CTA cluster, combine through DSMEM.
//
// Parent: v8_05_mma_registers (one CTA per 64-row query tile: 8 heads × 8 tiles = 64 CTAs at the mission shape,
//   so 68 of the 132 SMs idle and each busy SM walks all 512 keys serially).
// What changed (one idea): when batch·heads·query-tiles × 4 ≤ 4 × num_SMs (small problems), every query tile is
//   handled by a thread-block cluster of CLUSTER=4 CTAs (`__cluster_dims__`, so a plain launch works); CTA r of the
//   cluster runs the v8_05 loop over its quarter of the key tiles only and leaves its unnormalised O (fp32), row max
//   and row sum in its own shared memory; after one cluster barrier each CTA combines 16 of the 64 rows by reading
//   the 4 partials through distributed shared memory (mapa + ld.shared::cluster), in a fixed order (deterministic),
//   and stores them; a second cluster barrier keeps the partials alive until all readers are done. No global
//   workspace, no atomics, one kernel. Large problems (B4 H16 S4096) keep v8_05's one-CTA-per-tile schedule (the
//   grid is rounded up to whole clusters; the extra CTAs exit).
// Mission shape: 256 CTAs of 128 threads (≈2 per SM), each 2 key tiles instead of 8.
// Split or not is the launcher's decision (flashcore/specs/v8_mma.py: SplitKV, the same object that gives the grid),
//   passed as the argument `int split`; check_split_launch traps on a launch whose grid disagrees with it. (Until
//   issue 13 the kernels inferred it from gridDim.x; v8_07 … v8_10 and flashcore take it the same way.)
// Predicted: 4.5 µs at B1 H8 S512 D64 (H100, CUDA-graph replay).
// ncu metric that should move: sm__throughput / "SM busy" across SMs (launch__grid_size 64 → 256,
//   achieved occupancy up), duration down; stall_long_scoreboard share down (less serial latency per CTA).
#ifndef STAGES
#define STAGES 2
#endif
#ifndef CLUSTER
#define CLUSTER 4      // CTAs per cluster = key splits at small shapes (flashcore/specs/v8_mma.py: SplitKV)
#endif
#define MT 1           // m16 tiles (16 query rows each) per warp
#define BLOCK_M 64     // query rows per CTA (16 per warp)

#include "v8/v8_mma_tile.cuh"

// dynamic shared memory: Q tile, then STAGES × (K tile, V tile); after the loop the K/V ring holds the fp32 partial
// O [64][OP_STRIDE], the row maxima [64] and the row sums [64] (split mode): no extra bytes for the split
constexpr int SMEM_BYTES = ring_bytes(BLOCK_M, STAGES);
static_assert(landing_bytes(BLOCK_M) <= STAGES * 2 * BLOCK_N * ROW_BYTES, "the partials must fit in the K/V ring");
static_assert(SMEM_BYTES <= SMEM_LIMIT, "v8_06_cluster_splitkv: too much shared memory for one CTA");
extern "C" __device__ int v8_06_cluster_splitkv_smem_bytes[2] = {SMEM_BYTES, SMEM_BYTES};

// Split mode, after the key loop: this CTA's partial (unnormalised O, row max, row sum) stays in its own K/V ring.
__device__ __forceinline__ void park_partials(const float (&acc_o)[MT][8][4], const float (&m_row)[MT][2],
                                              const float (&l_row)[MT][2], unsigned char* sKV, int warp, int g,
                                              int t) {
    __syncthreads();  // every warp is done reading the ring
    float* part_o = reinterpret_cast<float*>(sKV);
    float* part_m = part_o + BLOCK_M * OP_STRIDE;
    float* part_l = part_m + BLOCK_M;
    const int r0 = warp * 16 + g;
#pragma unroll
    for (int dt = 0; dt < 8; ++dt) {
        *reinterpret_cast<float2*>(part_o + r0 * OP_STRIDE + dt * 8 + 2 * t) = make_float2(acc_o[0][dt][0], acc_o[0][dt][1]);
        *reinterpret_cast<float2*>(part_o + (r0 + 8) * OP_STRIDE + dt * 8 + 2 * t) =
            make_float2(acc_o[0][dt][2], acc_o[0][dt][3]);
    }
    if (t == 0) {
        part_m[r0] = m_row[0][0];
        part_m[r0 + 8] = m_row[0][1];
        part_l[r0] = l_row[0][0];
        part_l[r0 + 8] = l_row[0][1];
    }
}
extern "C" __global__ void __cluster_dims__(CLUSTER, 1, 1) __launch_bounds__(NWARPS * 32)
v8_06_cluster_splitkv(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                      __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale,
                      int split) {
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char* sQ = smem;
    unsigned char* sKV = smem + BLOCK_M * ROW_BYTES;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int n_qblocks = (seq_q + BLOCK_M - 1) / BLOCK_M;
    const int tile = split ? (int)blockIdx.x / CLUSTER : (int)blockIdx.x;
    const int rank = split ? (int)cluster_ctarank() : 0;
    const int head = tile / n_qblocks, qb = tile % n_qblocks;
    if (head >= bh) return;  // only the padding CTAs of the unsplit grid (never in split mode: no cluster barrier)
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
    check_split_launch(split, bh, n_qblocks, SMEM_BYTES);   // split: the launcher's decision

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
        park_partials(acc_o, m_row, l_row, sKV, warp, g, t);
        cluster_sync_all();  // all partials of the cluster are written and visible
        // ---- CTA `rank` combines rows [rank·64/CLUSTER, (rank+1)·64/CLUSTER) by reading the CLUSTER partials through
        // distributed shared memory (ld.shared::cluster: one DSMEM round trip per load), in a fixed order
        // (deterministic): 8 columns (one 16-byte store) per item
        const unsigned part_base = smem_u32(sKV);
        constexpr int ROWS = BLOCK_M / CLUSTER;
        for (int item = tid; item < ROWS * 8; item += NWARPS * 32) {
            const int row = rank * ROWS + (item >> 3), chunk = item & 7;
            float mc[CLUSTER], m_max = neg_inf();
#pragma unroll
            for (int c = 0; c < CLUSTER; ++c) {
                mc[c] = ld_dsmem_f(dsmem_addr(part_base + (BLOCK_M * OP_STRIDE + row) * 4, c));
                m_max = fmaxf(m_max, mc[c]);
            }
            float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, l_sum = 0.f;
#pragma unroll
            for (int c = 0; c < CLUSTER; ++c) {
                const float w = m_max == neg_inf() ? 0.f : fast_exp2(mc[c] - m_max);
                const unsigned base = dsmem_addr(part_base, c);
                l_sum += w * ld_dsmem_f(base + (BLOCK_M * OP_STRIDE + BLOCK_M + row) * 4);
                const float4 a = ld_dsmem_f4(base + (row * OP_STRIDE + chunk * 8) * 4);
                const float4 b = ld_dsmem_f4(base + (row * OP_STRIDE + chunk * 8 + 4) * 4);
                accumulate_chunk(acc, w, a, b);
            }
            store_chunk(oh, q0, row, chunk, seq_q, acc, l_sum);
        }
        cluster_sync_all();  // keep every partial alive until the whole cluster has read it
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
