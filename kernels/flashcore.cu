// flashcore — the library's kernel: v8_07_dsmem_push with 2-CTA clusters and a 3-stage cp.async ring.
//
// Parent: v8_07_dsmem_push (kernels/v8/v8_07_dsmem_push.cu). The ladder step that is fastest at the mission shape
//   (64-row query tiles, 4 warps × one m16 tile, S, P and O in registers, split-KV combined by pushing partials into
//   the owning CTA's shared memory), frozen at the knobs the variant sweep chose there (chapter 3, record 03_v8_variants):
//   CLUSTER = 2 (two CTAs share a query tile's keys when the unsplit grid cannot fill the GPU; v8_07 uses 4) and
//   STAGES = 3 (a 3-deep K/V ring; v8_07 uses 2). `python -m flashcore` and `flashcore.attention` run this file.
//   Dispatching by shape to v8_09/v8_10 (two m-tiles per warp) was measured (scripts/explore/v8_crossover.py, 12 shapes,
//   H100) and did not pay: they won only at the two largest shapes, by a few percent.
// What changed (one idea, the knobs): CLUSTER 4 → 2, STAGES 2 → 3. Its own file, so that no ladder edit changes what
//   users run; `diff kernels/v8/v8_07_dsmem_push.cu kernels/flashcore.cu` shows the two knobs and the entry. Like
//   v8_06 … v8_10 it takes the split-KV decision as `int split` (flashcore/specs/v8_mma.py: FLASHCORE_SPLIT gives the
//   decision and the grid) and traps on a launch that disagrees with it.
// Predicted: 5.5 µs at B1 H8 S512 D64 (H100, CUDA-graph replay), as measured for this build of v8_07.
// ncu metric that should move against v8_07: at the mission shape 128 CTAs of 2-CTA clusters instead of 256 of
//   4-CTA clusters (launch__grid_size), each walking 4 key tiles; combine traffic per row halves.
//
// Features (SDPA's semantics), compile-time parameters of this one source: flashcore/specs/v8_mma.py builds a variant
// per (dtype, head dim, causal) with -D flags. Unset, each is the base build — fp16, D = 64, not causal, the scale
// taken as given, one key/value head per query head — whose machine code is what every record measured
// (scripts/check_sass_identity.py holds it, and every ladder kernel, instruction for instruction):
//   FC_FEATURES = 1  set by every variant: grouped key/value heads in the kernel (query head h reads key/value head
//                    h / kv_group: SDPA's enable_gqa) and any finite softmax_scale (a negative one negates Q once —
//                    exact in fp16 and bf16 — and scales by |scale|; 0 or a denormal one becomes the smallest normal
//                    float, so p = 1 exactly for every unmasked key and a masked key's −inf stays −inf)
//   FC_BF16 = 1      bf16 inputs, output and P (mma.sync .bf16); otherwise fp16
//   HEAD_DIM = 128   the head dimension (64 by default): rows, chunk loops and O accumulators widen with it
//   FC_CAUSAL = 1    SDPA's causal mask, top-left aligned: query i sees keys j ≤ i (also when seq_q ≠ seq_kv); a CTA
//                    walks only the key tiles up to its last row's diagonal (the rest are wholly masked)
// Every build takes `int kv_group` after `split` (one ABI); the base build ignores it (the library expands grouped
// key/value heads before launching it, and passes 1).
#define STAGES 3       // K/V ring depth (v8_07: 2)
#define CLUSTER 2      // CTAs per cluster = key splits at small shapes (v8_07: 4; flashcore/specs/v8_mma.py)
#define MT 1           // m16 tiles (16 query rows each) per warp
#define BLOCK_M 64     // query rows per CTA (16 per warp)

#include "v8/v8_mma_tile.cuh"

// dynamic shared memory: Q tile, STAGES × (K tile, V tile), then (split mode only) the landing buffer for the
// cluster's partials of my rows: O [CLUSTER][ROWS][OP_STRIDE] fp32, row max [CLUSTER][ROWS], row sum [CLUSTER][ROWS]
constexpr int SMEM_UNSPLIT = ring_bytes(BLOCK_M, STAGES);
constexpr int SMEM_SPLIT = SMEM_UNSPLIT + landing_bytes(BLOCK_M);
static_assert(SMEM_SPLIT <= SMEM_LIMIT, "flashcore: too much shared memory for one CTA");
extern "C" __device__ int flashcore_smem_bytes[2] = {SMEM_UNSPLIT, SMEM_SPLIT};

extern "C" __global__ void __cluster_dims__(CLUSTER, 1, 1) __launch_bounds__(NWARPS * 32)
flashcore(const elem_t* __restrict__ q, const elem_t* __restrict__ k, const elem_t* __restrict__ v,
          elem_t* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale,
          int split, int kv_group) {
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
    const elem_t* qh = q + (size_t)head * seq_q * HEAD_DIM;
    const elem_t* kh = k + (size_t)kv_head_of(head, kv_group) * seq_kv * HEAD_DIM;
    const elem_t* vh = v + (size_t)kv_head_of(head, kv_group) * seq_kv * HEAD_DIM;
    elem_t* oh = o + (size_t)head * seq_q * HEAD_DIM;
    const int n_kv_tiles = kv_tiles_of(seq_kv, q0, seq_q);
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
    const float scale_log2 = scale_log2_of(softmax_scale);
    const int wrow = warp * 16 * MT;  // this warp's first query row in the CTA tile
    unsigned qf[MT][KSTEPS][4];       // Q fragments, loaded once
    float acc_o[MT][DTILES][4], m_row[MT][2], l_row[MT][2];
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
        if (j == 0) load_q_fragments_for(qf, sq, wrow, lane, softmax_scale);
        const unsigned sk = smem_u32(stage_k(sKV, j % STAGES)), sv = smem_u32(stage_v(sKV, j % STAGES));
        float s[MT][8][4];
        qk_scores(s, qf, sk, lane);
        mask_keys(s, (t_begin + j) * BLOCK_N, seq_kv, q0 + wrow, lane);
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
