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

#include "common/mbarrier.cuh"  // smem_u32
#include "common/tma.cuh"       // fence_proxy_async_smem
#include "common/wgmma.cuh"

using namespace hopper;

constexpr int HEAD_DIM_ = 64;
constexpr int BLOCK_M = 64;    // query rows per CTA = one warpgroup
constexpr int BLOCK_N = 128;   // keys per tile
constexpr int STAGES = 2;      // K/V ring depth
constexpr int THREADS = 128;
constexpr int ROW_BYTES = HEAD_DIM_ * 2;              // one swizzled 128-byte row
constexpr int Q_TILE_BYTES = BLOCK_M * ROW_BYTES;     // 8 KB
constexpr int KV_TILE_BYTES = BLOCK_N * ROW_BYTES;    // 16 KB
constexpr int SMEM_Q = 0;
constexpr int SMEM_KV = SMEM_Q + Q_TILE_BYTES;        // stage s: K at SMEM_KV + s·32 KB, V 16 KB after it
constexpr int SMEM_LAYOUT_BYTES = SMEM_KV + STAGES * 2 * KV_TILE_BYTES;
constexpr int SMEM_BYTES = SMEM_LAYOUT_BYTES + 1024;  // + slack to align the base to 1024 bytes
static_assert(SMEM_BYTES <= 227 * 1024, "dynamic shared memory over the 227 KB a block may have");
extern "C" __constant__ int hopper_01_wgmma_smem_bytes = SMEM_BYTES;
extern "C" __constant__ int hopper_01_wgmma_threads = THREADS;
extern "C" __constant__ int hopper_01_wgmma_block_m = BLOCK_M;

// ---------------------------------------------------------------------------------------------- loads (cp.async)
__device__ __forceinline__ unsigned swizzled(int row, int chunk) {  // byte offset of a 16-byte chunk in a tile
    return row * ROW_BYTES + ((chunk ^ (row & 7)) << 4);
}
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// ROWS rows of 64 fp16 from row0 on into a swizzled tile; rows at or past n_rows become zeros.
template <int ROWS>
__device__ __forceinline__ void load_tile(unsigned tile, const __half* g, int row0, int n_rows, int tid) {
#pragma unroll
    for (int i = 0; i < ROWS * 8 / THREADS; ++i) {
        const int idx = tid + i * THREADS, row = idx >> 3, chunk = idx & 7;
        const bool inside = row0 + row < n_rows;
        const __half* src = inside ? g + (size_t)(row0 + row) * HEAD_DIM_ + chunk * 8 : g;
        cp_async16(tile + swizzled(row, chunk), src, inside ? 16 : 0);
    }
}
__device__ __forceinline__ void load_kv_tile(unsigned k_tile, unsigned v_tile, const __half* kh, const __half* vh,
                                             int tile, int seq_kv, int tid) {
    load_tile<BLOCK_N>(k_tile, kh, tile * BLOCK_N, seq_kv, tid);
    load_tile<BLOCK_N>(v_tile, vh, tile * BLOCK_N, seq_kv, tid);
}

// ---------------------------------------------------------------------------------------------- the math
// Per thread: rows g = lane/4 and g + 8 of its warp's 16; s[4·n + c] is key 8n + 2·(lane%4) + (c & 1) of row
// g + 8·(c >> 1). The same indexing holds for o[] over the 64 head-dim columns.
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ unsigned pack_half2(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
}

// S = Q·Kᵀ for the warpgroup's 64 rows × the tile's 128 keys (issued and waited for).
__device__ __forceinline__ void compute_scores(float (&s)[64], unsigned q_tile, unsigned k_tile) {
    const unsigned long long dq = desc_k_major(q_tile), dk = desc_k_major(k_tile);
    fence_operands(s);
    wgmma_fence();
#pragma unroll
    for (int k16 = 0; k16 < HEAD_DIM_ / 16; ++k16)
        wgmma_m64n128k16_ss(s, dq + desc_k_major_step(k16), dk + desc_k_major_step(k16), k16 > 0);
    wgmma_commit();
    wgmma_wait<0>();
    fence_operands(s);
}

// Keys at or past seq_kv (only in the last tile) must weigh nothing.
__device__ __forceinline__ void mask_tail_keys(float (&s)[64], int kv0, int seq_kv, int lane) {
    const float NEG_INF = __int_as_float(0xff800000);
#pragma unroll
    for (int n = 0; n < BLOCK_N / 8; ++n)
#pragma unroll
        for (int c = 0; c < 4; ++c)
            if (kv0 + n * 8 + 2 * (lane & 3) + (c & 1) >= seq_kv) s[4 * n + c] = NEG_INF;
}

// The online softmax: new row maxima (in log2 units: × scale·log2 e), the factor alpha that rescales what was
// accumulated under the old maxima, P = 2^(S·scale·log2 e − m) in place of S, and this thread's part of the row sums.
__device__ __forceinline__ void online_softmax_update(float (&s)[64], float (&m_row)[2], float (&l_row)[2],
                                                      float (&alpha)[2], float scale_log2) {
    float mx[2] = {s[0], s[2]};
#pragma unroll
    for (int n = 0; n < BLOCK_N / 8; ++n) {
        mx[0] = fmaxf(mx[0], fmaxf(s[4 * n + 0], s[4 * n + 1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[4 * n + 2], s[4 * n + 3]));
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {  // the four threads of a quad share a row
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        const float m_new = fmaxf(m_row[r], mx[r] * scale_log2);
        alpha[r] = fast_exp2(m_row[r] - m_new);
        m_row[r] = m_new;
    }
    float sum[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < BLOCK_N / 8; ++n)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            s[4 * n + c] = fast_exp2(fmaf(s[4 * n + c], scale_log2, -m_row[c >> 1]));
            sum[c >> 1] += s[4 * n + c];
        }
#pragma unroll
    for (int r = 0; r < 2; ++r) l_row[r] = l_row[r] * alpha[r] + sum[r];
}

// P (fp32, accumulator layout) → fp16 A fragments of O += P·V: k16 step kk covers keys 16kk … 16kk+15.
__device__ __forceinline__ void convert_p_to_a_fragments(const float (&s)[64], unsigned (&p)[BLOCK_N / 16][4]) {
#pragma unroll
    for (int kk = 0; kk < BLOCK_N / 16; ++kk) {
        p[kk][0] = pack_half2(s[8 * kk + 0], s[8 * kk + 1]);  // row g,   keys 16kk + 2t, +1
        p[kk][1] = pack_half2(s[8 * kk + 2], s[8 * kk + 3]);  // row g+8
        p[kk][2] = pack_half2(s[8 * kk + 4], s[8 * kk + 5]);  // row g,   keys 16kk + 8 + 2t, +1
        p[kk][3] = pack_half2(s[8 * kk + 6], s[8 * kk + 7]);  // row g+8
    }
}

__device__ __forceinline__ void rescale_output(float (&o)[32], const float (&alpha)[2]) {
#pragma unroll
    for (int n = 0; n < HEAD_DIM_ / 8; ++n) {
        o[4 * n + 0] *= alpha[0];
        o[4 * n + 1] *= alpha[0];
        o[4 * n + 2] *= alpha[1];
        o[4 * n + 3] *= alpha[1];
    }
}

// O += P·V over the tile's 128 keys (issued and waited for).
__device__ __forceinline__ void accumulate_pv(float (&o)[32], unsigned (&p)[BLOCK_N / 16][4], unsigned v_tile) {
    const unsigned long long dv = desc_mn_major(v_tile, BLOCK_N);
    fence_operands(o);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BLOCK_N / 16; ++kk) wgmma_m64n64k16_rs(o, p[kk], dv + desc_mn_major_step(kk));
    wgmma_commit();
    wgmma_wait<0>();
    fence_operands(o);
}

// Normalise this warp's 16 rows, stage them (swizzled, conflict-free) in 2 KB of shared memory, store 16 B a lane.
__device__ __forceinline__ void store_output_rows(const float (&o)[32], float (&l_row)[2], unsigned char* stage,
                                                  __half* o_head, int row0, int seq_q, int lane) {
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int r = 0; r < 2; ++r) {  // finish the row sums inside the quad, then invert
        l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 1);
        l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 2);
        l_row[r] = l_row[r] > 0.f ? 1.f / l_row[r] : 0.f;
    }
#pragma unroll
    for (int n = 0; n < HEAD_DIM_ / 8; ++n) {
        *reinterpret_cast<unsigned*>(stage + swizzled(g, n) + 4 * t) =
            pack_half2(o[4 * n + 0] * l_row[0], o[4 * n + 1] * l_row[0]);
        *reinterpret_cast<unsigned*>(stage + swizzled(g + 8, n) + 4 * t) =
            pack_half2(o[4 * n + 2] * l_row[1], o[4 * n + 3] * l_row[1]);
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int idx = lane + 32 * i, row = idx >> 3, chunk = idx & 7;
        if (row0 + row < seq_q)
            *reinterpret_cast<uint4*>(o_head + (size_t)(row0 + row) * HEAD_DIM_ + chunk * 8) =
                *reinterpret_cast<const uint4*>(stage + swizzled(row, chunk));
    }
}

// ---------------------------------------------------------------------------------------------- the kernel
extern "C" __global__ void __launch_bounds__(THREADS, 1)
hopper_01_wgmma(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char* smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);  // 1024-aligned base
    const unsigned s_base = smem_u32(smem);
    const unsigned sq = s_base + SMEM_Q;
    auto k_tile = [&](int stage) { return s_base + SMEM_KV + stage * 2 * KV_TILE_BYTES; };
    auto v_tile = [&](int stage) { return s_base + SMEM_KV + stage * 2 * KV_TILE_BYTES + KV_TILE_BYTES; };

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
        if (st < n_tiles) load_kv_tile(k_tile(st), v_tile(st), kh, vh, st, seq_kv, tid);
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
            if (jn < n_tiles) load_kv_tile(k_tile(jn % STAGES), v_tile(jn % STAGES), kh, vh, jn, seq_kv, tid);
            cp_async_commit();
        }
        float s[64];
        compute_scores(s, sq, k_tile(j % STAGES));
        if ((j + 1) * BLOCK_N > seq_kv) mask_tail_keys(s, j * BLOCK_N, seq_kv, lane);
        float alpha[2];
        online_softmax_update(s, m_row, l_row, alpha, scale_log2);
        unsigned p[BLOCK_N / 16][4];
        convert_p_to_a_fragments(s, p);
        rescale_output(o_acc, alpha);
        accumulate_pv(o_acc, p, v_tile(j % STAGES));
    }
    cp_async_wait<0>();
    __syncthreads();  // every warp's last wgmma has read Q: its rows can stage the output
    store_output_rows(o_acc, l_row, smem + SMEM_Q + warp * 16 * ROW_BYTES, o + (size_t)head * seq_q * HEAD_DIM_,
                      q0 + warp * 16, seq_q, lane);
}
