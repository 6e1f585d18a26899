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
#include <cuda_fp16.h>

#ifndef STAGES
#define STAGES 2
#endif

#define HEAD_DIM 64
#define BLOCK_M 64   // query rows per CTA (16 per warp)
#define BLOCK_N 64   // keys per tile
#define NWARPS 4
#define ROW_BYTES 128  // 64 fp16

// ---------------------------------------------------------------------------------------------- PTX helpers
__device__ __forceinline__ unsigned smem_u32(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
// byte offset of (row, 16-byte chunk) in a swizzled [rows][64] fp16 tile
__device__ __forceinline__ unsigned swz(int row, int chunk) {
    return row * ROW_BYTES + ((chunk ^ (row & 7)) << 4);
}
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
// D = A(16×16, row) · B(16×8, col) + D, fp16 in, fp32 accumulate
__device__ __forceinline__ void mma_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ unsigned pack_half2(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
}

// ---------------------------------------------------------------------------------------------- tile loads
// 64 rows × 8 chunks of 16 bytes, 128 threads → 4 cp.async each; rows ≥ n_rows are zero-filled.
__device__ __forceinline__ void load_tile_async(unsigned smem, const __half* g, int row0, int n_rows, int tid) {
#pragma unroll
    for (int i = 0; i < (64 * 8) / (NWARPS * 32); ++i) {
        int idx = tid + i * NWARPS * 32;
        int row = idx >> 3, chunk = idx & 7;
        bool ok = row0 + row < n_rows;
        const __half* src = ok ? g + (size_t)(row0 + row) * HEAD_DIM + chunk * 8 : g;
        cp_async16(smem + swz(row, chunk), src, ok ? 16 : 0);
    }
}

// ---------------------------------------------------------------------------------------------- the kernel
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
    load_tile_async(sq, qh, q0, seq_q, tid);
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < n_tiles) {
            load_tile_async(smem_u32(sK[s]), kh, s * BLOCK_N, seq_kv, tid);
            load_tile_async(smem_u32(sV[s]), vh, s * BLOCK_N, seq_kv, tid);
        }
        cp_async_commit();
    }

    // per-thread coordinates inside the m16n8 accumulator: rows g and g+8, columns 2t, 2t+1
    const int g = lane >> 2, t = lane & 3;
    const float scale_log2 = softmax_scale * 1.4426950408889634f;
    const float NEG_INF = __int_as_float(0xff800000);

    unsigned qf[4][4];             // Q fragments: 4 k16 steps over the head dim
    float acc_o[8][4];             // O: 8 n8 tiles over the head dim
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc_o[i][j] = 0.f;
    float m_row[2] = {NEG_INF, NEG_INF};  // running max (already × scale·log2e) of rows g, g+8
    float l_row[2] = {0.f, 0.f};          // this thread's part of the running sum

    for (int j = 0; j < n_tiles; ++j) {
        cp_async_wait<STAGES - 2>();  // tile j (and Q) landed for this thread
        __syncthreads();              // ... for every thread; and everybody is done with tile j-1's buffer
        {
            int jn = j + STAGES - 1;
            if (jn < n_tiles) {
                load_tile_async(smem_u32(sK[jn % STAGES]), kh, jn * BLOCK_N, seq_kv, tid);
                load_tile_async(smem_u32(sV[jn % STAGES]), vh, jn * BLOCK_N, seq_kv, tid);
            }
            cp_async_commit();
        }
        if (j == 0) {
#pragma unroll
            for (int ks = 0; ks < 4; ++ks)
                ldmatrix_x4(qf[ks], sq + swz(warp * 16 + (lane & 15), ks * 2 + (lane >> 4)));
        }
        const unsigned sk = smem_u32(sK[j % STAGES]), sv = smem_u32(sV[j % STAGES]);

        // ---- S = Q · Kᵀ (16 × 64 per warp)
        float s[8][4];
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int c = 0; c < 4; ++c) s[i][c] = 0.f;
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) {
#pragma unroll
            for (int np = 0; np < 4; ++np) {
                unsigned b[4];
                ldmatrix_x4(b, sk + swz(np * 16 + (lane & 7) + ((lane >> 4) << 3), ks * 2 + ((lane >> 3) & 1)));
                mma_16816(s[2 * np], qf[ks], b[0], b[1]);
                mma_16816(s[2 * np + 1], qf[ks], b[2], b[3]);
            }
        }
        // ---- mask keys past seq_kv (only the last tile can have them)
        const int kv0 = j * BLOCK_N;
        if (kv0 + BLOCK_N > seq_kv) {
#pragma unroll
            for (int nt = 0; nt < 8; ++nt)
#pragma unroll
                for (int c = 0; c < 4; ++c)
                    if (kv0 + nt * 8 + 2 * t + (c & 1) >= seq_kv) s[nt][c] = NEG_INF;
        }
        // ---- online softmax: new row max, rescale factors, P = exp2(S·scale·log2e − m)
        float mx[2] = {NEG_INF, NEG_INF};
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
            mx[0] = fmaxf(mx[0], fmaxf(s[nt][0], s[nt][1]));
            mx[1] = fmaxf(mx[1], fmaxf(s[nt][2], s[nt][3]));
        }
        float alpha[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            float m_new = fmaxf(m_row[r], mx[r] * scale_log2);
            alpha[r] = fast_exp2(m_row[r] - m_new);
            m_row[r] = m_new;
            l_row[r] *= alpha[r];
        }
        unsigned pf[4][4];  // P as fp16 A fragments: 4 k16 steps over the 64 keys
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
            float p0 = fast_exp2(fmaf(s[nt][0], scale_log2, -m_row[0]));
            float p1 = fast_exp2(fmaf(s[nt][1], scale_log2, -m_row[0]));
            float p2 = fast_exp2(fmaf(s[nt][2], scale_log2, -m_row[1]));
            float p3 = fast_exp2(fmaf(s[nt][3], scale_log2, -m_row[1]));
            l_row[0] += p0 + p1;
            l_row[1] += p2 + p3;
            pf[nt >> 1][(nt & 1) * 2 + 0] = pack_half2(p0, p1);
            pf[nt >> 1][(nt & 1) * 2 + 1] = pack_half2(p2, p3);
        }
#pragma unroll
        for (int dt = 0; dt < 8; ++dt) {
            acc_o[dt][0] *= alpha[0];
            acc_o[dt][1] *= alpha[0];
            acc_o[dt][2] *= alpha[1];
            acc_o[dt][3] *= alpha[1];
        }
        // ---- O += P · V (V fragments by ldmatrix.trans)
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
            for (int dp = 0; dp < 4; ++dp) {
                unsigned b[4];
                ldmatrix_x4_trans(b, sv + swz(kk * 16 + (lane & 15), dp * 2 + (lane >> 4)));
                mma_16816(acc_o[2 * dp], pf[kk], b[0], b[1]);
                mma_16816(acc_o[2 * dp + 1], pf[kk], b[2], b[3]);
            }
        }
    }
    cp_async_wait<0>();

    // ---- epilogue: finish the row sums inside the quad, normalise, stage this warp's 16 rows in its own Q rows
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 1);
        l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 2);
        l_row[r] = l_row[r] > 0.f ? 1.f / l_row[r] : 0.f;
    }
    __syncwarp();
#pragma unroll
    for (int dt = 0; dt < 8; ++dt) {
        int r0 = warp * 16 + g;
        *reinterpret_cast<unsigned*>(sQ + swz(r0, dt) + t * 4) =
            pack_half2(acc_o[dt][0] * l_row[0], acc_o[dt][1] * l_row[0]);
        *reinterpret_cast<unsigned*>(sQ + swz(r0 + 8, dt) + t * 4) =
            pack_half2(acc_o[dt][2] * l_row[1], acc_o[dt][3] * l_row[1]);
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        int idx = lane + i * 32;
        int row = warp * 16 + (idx >> 3), chunk = idx & 7;
        if (q0 + row < seq_q)
            *reinterpret_cast<uint4*>(oh + (size_t)(q0 + row) * HEAD_DIM + chunk * 8) =
                *reinterpret_cast<const uint4*>(sQ + swz(row, chunk));
    }
}
