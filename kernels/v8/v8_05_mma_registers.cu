// v8_05_mma_registers — FA2-style: scores and the output accumulator live in registers.
//
// Parent: v8_04_grid_132sm (WMMA fragments, scores and P round-trip through shared memory).
// What changed (one idea): the matrix products are issued as `mma.sync.aligned.m16n8k16` (inline PTX) on operands
//   loaded with `ldmatrix` (x4; `.trans` for V), so S = Q·Kᵀ, P and O never touch shared memory:
//   * each of the 4 warps owns 16 query rows of a 64-row tile; its Q fragments are loaded once into registers;
//   * S (16×64 per warp) is an fp32 accumulator in registers; the row max/sum of the online softmax are reduced
//     inside the quad of 4 lanes that share a row (__shfl_xor 1, 2); exp2 with scale·log2(e) folded into one FFMA;
//   * P is converted to fp16 in registers and is directly the A operand of P·V (the m16n8k16 C layout of two n8
//     tiles is the A layout of one k16 step) — no shared-memory round trip;
//   * K/V tiles (64 keys) arrive by 16-byte cp.async, STAGES-deep ring; shared memory rows are 128 bytes, swizzled
//     by XOR-ing the 16-byte chunk index with (row & 7), so every ldmatrix phase hits 32 distinct banks;
//   * tails on both sequence lengths: out-of-range rows are zero-filled by cp.async (src-size 0), out-of-range keys
//     get score −inf, out-of-range query rows are never stored.
// Grid: one CTA per (head, 64-row query tile): 64 CTAs at the mission shape (half of the 132 SMs idle — v8_06).
// Predicted: 7.0 µs at B1 H8 S512 D64 (H100, CUDA-graph replay).
// ncu metric that should move: shared-memory wavefronts / l1tex data-pipe lsu (no WMMA store/load of S and P),
//   sm__pipe_tensor_op_hmma_cycles_active up; l1tex shared bank conflicts ≈ 0.
#ifndef STAGES
#define STAGES 2
#endif
#define MT 1         // m16 tiles (16 query rows each) per warp
#define BLOCK_M 64   // query rows per CTA (16 per warp)

#include "v8/v8_mma_tile.cuh"

extern "C" __global__ void __launch_bounds__(NWARPS * 32)
v8_05_mma_registers(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                    __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale) {
    __shared__ __align__(128) unsigned char sQ[BLOCK_M * ROW_BYTES];
    __shared__ __align__(128) unsigned char sK[STAGES][BLOCK_N * ROW_BYTES];
    __shared__ __align__(128) unsigned char sV[STAGES][BLOCK_N * ROW_BYTES];

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int n_qblocks = (seq_q + BLOCK_M - 1) / BLOCK_M;
    const int head = blockIdx.x / n_qblocks, qb = blockIdx.x % n_qblocks;
    if (head >= bh) return;
    const int q0 = qb * BLOCK_M;
    const __half* qh = q + (size_t)head * seq_q * HEAD_DIM;
    const __half* kh = k + (size_t)head * seq_kv * HEAD_DIM;
    const __half* vh = v + (size_t)head * seq_kv * HEAD_DIM;
    __half* oh = o + (size_t)head * seq_q * HEAD_DIM;
    const int n_tiles = (seq_kv + BLOCK_N - 1) / BLOCK_N;

    const unsigned sq = smem_u32(sQ);
    // prologue: Q and the first STAGES-1 K/V tiles, one commit group each
    load_tile_async<BLOCK_M>(sq, qh, q0, seq_q, tid);
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < n_tiles) {
            load_tile_async<BLOCK_N>(smem_u32(sK[s]), kh, s * BLOCK_N, seq_kv, tid);
            load_tile_async<BLOCK_N>(smem_u32(sV[s]), vh, s * BLOCK_N, seq_kv, tid);
        }
        cp_async_commit();
    }

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
                load_tile_async<BLOCK_N>(smem_u32(sK[jn % STAGES]), kh, jn * BLOCK_N, seq_kv, tid);
                load_tile_async<BLOCK_N>(smem_u32(sV[jn % STAGES]), vh, jn * BLOCK_N, seq_kv, tid);
            }
            cp_async_commit();
        }
        if (j == 0) load_q_fragments(qf, sq, wrow, lane);
        float s[MT][8][4];
        qk_scores(s, qf, smem_u32(sK[j % STAGES]), lane);
        mask_tail(s, j * BLOCK_N, seq_kv, lane);
        unsigned pf[MT][4][4];
        ONLINE_SOFTMAX(s, m_row, l_row, acc_o, pf, scale_log2);
        pv_accumulate(acc_o, pf, smem_u32(sV[j % STAGES]), lane);
    }
    cp_async_wait<0>();

    // ---- epilogue: finish the row sums inside the quad, normalise, stage this warp's 16 rows in its own Q rows
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l_row[0][r] += __shfl_xor_sync(0xffffffffu, l_row[0][r], 1);
        l_row[0][r] += __shfl_xor_sync(0xffffffffu, l_row[0][r], 2);
        l_row[0][r] = l_row[0][r] > 0.f ? 1.f / l_row[0][r] : 0.f;
    }
    __syncwarp();
    stage_tile_rows(acc_o[0], l_row[0][0], l_row[0][1], sQ, wrow + g, t);
    __syncwarp();
    // (the copy-out loop of copy_rows_out, written out here: as a call, ptxas allocates this kernel's registers
    // differently — scripts/check_sass_identity.py holds every kernel to its machine code from before the move)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        int idx = lane + i * 32;
        int row = warp * 16 + (idx >> 3), chunk = idx & 7;
        if (q0 + row < seq_q)
            *reinterpret_cast<uint4*>(oh + (size_t)(q0 + row) * HEAD_DIM + chunk * 8) =
                *reinterpret_cast<const uint4*>(sQ + swz(row, chunk));
    }
}
