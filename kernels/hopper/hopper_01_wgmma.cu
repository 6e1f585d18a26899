// hopper_01_wgmma — Hopper's own tensor-core instruction: one warpgroup, wgmma for both GEMMs, cp.async loads.
//
// What it is. O = softmax(Q·Kᵀ·scale)·V, fp16 in, fp32 accumulate, D = 64, not causal. One CTA = one warpgroup
//   (4 warps, 128 threads) owns 64 query rows of one head and walks the keys 128 at a time:
//     S = Q·Kᵀ      4 × wgmma.m64n128k16, both operands in shared memory (K-major, 128-byte swizzle);
//     softmax       online, in the accumulator registers (the m16n8 layout of mma.sync, 16 column tiles);
//     O += P·V      8 × wgmma.m64n64k16, P from registers (mma.sync's A-fragment layout), V from shared memory
//                   read MN-major (the transpose flag), so no ldmatrix.trans and no P round trip through memory.
//   Loads are the v8 line's: cp.async, 16 bytes per thread, a 2-stage ring of K/V tiles, into the 128-byte-swizzled
//   layout wgmma's descriptors read (chunk c of row r at c ^ (r % 8), tiles 1024-byte aligned).
// Parent: v8_07_dsmem_push (kernels/v8_07_dsmem_push.cu, the mma.sync kernel the library ships as `flashcore`).
// What changed (one idea): the MMA instruction. v8 issues 64 mma.sync.m16n8k16 per warp per 64-key tile, each
//   fed by ldmatrix from shared memory into registers; here one warpgroup instruction covers 64 rows × 128 keys × 16
//   of the head dim and reads its B operand straight from shared memory (descriptors, no ldmatrix), so the issue
//   slots the v8 line spends on ldmatrix + mma.sync (≈ 200 per warp per tile) drop to 12 wgmma per warpgroup.
//   The key tile doubles to 128 (one m64n128 per k16 step); the split-KV cluster of v8_06/07 is left out here.
// Why: the v8 kernels stall on the tensor pipe's issue path at long sequences (269 TFLOP/s at B4 H16 S4096 against
//   cuDNN's 432); wgmma is the only way to the Hopper tensor core's full rate (mma.sync reaches about half of it).
// Predicted: B4 H16 S4096 ≈ 320 TFLOP/s (~0.86 ms): three CTAs per SM (72 KB of shared memory each) take turns at the
//   tensor cores, but each warpgroup waits for its own GEMMs (wgmma.wait_group 0) before every softmax, and the loads
//   are issued by the same threads. B1 H8 S512 (64 CTAs on 132 SMs, 4 key tiles each) ≈ 9 µs — worse than v8's 6.2:
//   no split-KV, and 64-row CTAs leave half the SMs idle.
// ncu: sm__pipe_tensor_op_hmma_cycles_active (tensor pipe) up from v8's ~45 % to ~55–60 %; issue slots used per
//   tile down; top stall moves from stall_math_pipe_throttle / short_scoreboard (ldmatrix) to stall_wait (wgmma
//   wait_group) and stall_barrier (the per-tile __syncthreads).
#include <cuda_fp16.h>

#include "common/cp_async.cuh"
#include "hopper/hopper_tile.cuh"

constexpr int BLOCK_M = 64;    // query rows per CTA = one warpgroup
constexpr int STAGES = 2;      // K/V ring depth
constexpr int THREADS = 128;
using Layout = SmemLayout<1, STAGES, 0, 0>;  // Q, the K/V ring; each warp stages its output in its own Q rows
constexpr int SMEM_BYTES = Layout::BYTES;
extern "C" __device__ int hopper_01_wgmma_smem_bytes[2] = {SMEM_BYTES, SMEM_BYTES};
extern "C" __device__ int hopper_01_wgmma_geometry[4] = {THREADS, BLOCK_M, 0, 0};  // no TMA: no box rows

// ---------------------------------------------------------------------------------------------- loads (cp.async)
// ROWS rows of 64 fp16 from row0 on into a swizzled tile; rows at or past n_rows become zeros.
template <int ROWS>
__device__ __forceinline__ void load_tile(unsigned tile, const __half* g, int row0, int n_rows, int tid) {
#pragma unroll
    for (int i = 0; i < ROWS * 8 / THREADS; ++i) {
        const int idx = tid + i * THREADS, row = idx >> 3, chunk = idx & 7;
        const bool inside = row0 + row < n_rows;
        const __half* src = inside ? g + (size_t)(row0 + row) * HEAD_DIM_ + chunk * 8 : g;
        cp_async16_zfill(tile + swizzled(row, chunk), src, inside ? 16 : 0);
    }
}
__device__ __forceinline__ void load_kv_tile(unsigned k_tile, unsigned v_tile, const __half* kh, const __half* vh,
                                             int tile, int seq_kv, int tid) {
    load_tile<BLOCK_N>(k_tile, kh, tile * BLOCK_N, seq_kv, tid);
    load_tile<BLOCK_N>(v_tile, vh, tile * BLOCK_N, seq_kv, tid);
}

// ---------------------------------------------------------------------------------------------- the kernel
extern "C" __global__ void __launch_bounds__(THREADS, 1)
hopper_01_wgmma(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    const TileSmem<Layout> sm(smem_raw);
    const unsigned sq = sm.q_tile(0);

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int n_qblocks = (seq_q + BLOCK_M - 1) / BLOCK_M;
    const int head = blockIdx.x / n_qblocks, q0 = (blockIdx.x % n_qblocks) * BLOCK_M;
    if (head >= bh) return;
    const __half* kh = k + (size_t)head * seq_kv * HEAD_DIM_;
    const __half* vh = v + (size_t)head * seq_kv * HEAD_DIM_;
    const int n_tiles = (seq_kv + BLOCK_N - 1) / BLOCK_N;

    // prologue: Q with tile 0 in one commit group, then tiles 1 … STAGES-2
    load_tile<BLOCK_M>(sq, q + (size_t)head * seq_q * HEAD_DIM_, q0, seq_q, tid);
#pragma unroll
    for (int st = 0; st < STAGES - 1; ++st) {
        if (st < n_tiles) load_kv_tile(sm.k_tile(st), sm.v_tile(st), kh, vh, st, seq_kv, tid);
        cp_async_commit();
    }

    const float scale_log2 = softmax_scale * 1.4426950408889634f;
    float o_acc[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) o_acc[i] = 0.f;
    float m_row[2] = {__int_as_float(0xff800000), __int_as_float(0xff800000)};
    float l_row[2] = {0.f, 0.f};

    for (int j = 0; j < n_tiles; ++j) {
        cp_async_wait<STAGES - 2>();  // my copies of tile j (and Q) have landed
        fence_proxy_async_smem();     // ... and are visible to wgmma (the async proxy)
        __syncthreads();              // everyone's copies; and everyone is done with tile j-1's stage
        {
            const int jn = j + STAGES - 1;
            if (jn < n_tiles) load_kv_tile(sm.k_tile(jn % STAGES), sm.v_tile(jn % STAGES), kh, vh, jn, seq_kv, tid);
            cp_async_commit();
        }
        float s[64];
        compute_scores(s, sq, sm.k_tile(j % STAGES));
        if ((j + 1) * BLOCK_N > seq_kv) mask_tail_keys(s, j * BLOCK_N, seq_kv, lane);
        float alpha[2];
        online_softmax_update(s, m_row, l_row, alpha, scale_log2);
        unsigned p[BLOCK_N / 16][4];
        convert_p_to_a_fragments(s, p);
        rescale_output(o_acc, alpha);
        accumulate_pv(o_acc, p, sm.v_tile(j % STAGES));
    }
    cp_async_wait<0>();
    __syncthreads();  // every warp's last wgmma has read Q: its rows can stage the output
    store_output_rows(o_acc, l_row, sm.q_rows(warp), o + (size_t)head * seq_q * HEAD_DIM_,
                      q0 + warp * 16, seq_q, lane);
}
