// v8_08_kv_wait_split — K and V in separate cp.async groups: Q·Kᵀ and the softmax start before V has landed.
//
// Parent: v8_07_dsmem_push. Its loop waited for a whole (K, V) tile pair before the first mma; at the mission shape
//   each CTA of a split cluster walks only 2 key tiles, so the wait for the first pair (L2/DRAM latency) is exposed
//   almost entirely (stall_long_scoreboard / barrier before the first HMMA).
// What changed (one idea): the K tile and the V tile of each stage are committed as two cp.async groups; the loop
//   waits for K_j (wait_group 2·STAGES−3), runs S = Q·Kᵀ and the online softmax, then waits for V_j
//   (wait_group 2·STAGES−2) and a second barrier before P·V. The V latency hides behind Q·Kᵀ + exp2.
//   Cost: one more __syncthreads per key tile (visible at large shapes, if anywhere).
// Predicted: 5.0 µs at B1 H8 S512 D64 (H100, CUDA-graph replay).
// ncu metric that should move: stall_long_scoreboard + stall_barrier per issued instruction down at the mission shape.
#include <cuda_fp16.h>

#ifndef STAGES
#define STAGES 2
#endif

#define HEAD_DIM 64
#define BLOCK_M 64   // query rows per CTA (16 per warp)
#define BLOCK_N 64   // keys per tile
#define NWARPS 4
#define ROW_BYTES 128  // 64 fp16
#ifndef CLUSTER
#define CLUSTER 4      // CTAs per cluster = key splits at small shapes (must match flashcore/specs/v8_mma.py)
#endif
#define OP_STRIDE 72   // floats per row of the fp32 partial O (64 + 8 pad: conflict-free float2 stores)

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
// distributed shared memory (sm_90 clusters)
__device__ __forceinline__ unsigned cluster_ctarank() {
    unsigned r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
    return r;
}
__device__ __forceinline__ void cluster_sync_all() {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// split arrive/wait: arrive at the start (relaxed), wait just before the first remote access, so the wait is free
__device__ __forceinline__ void cluster_arrive_relaxed() {
    asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory"); }
__device__ __forceinline__ unsigned dsmem_addr(unsigned local_addr, unsigned rank) {
    unsigned r;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(local_addr), "r"(rank));
    return r;
}
__device__ __forceinline__ void st_dsmem_f2(unsigned addr, float x, float y) {
    asm volatile("st.shared::cluster.v2.f32 [%0], {%1, %2};\n" ::"r"(addr), "f"(x), "f"(y) : "memory");
}
__device__ __forceinline__ void st_dsmem_f(unsigned addr, float x) {
    asm volatile("st.shared::cluster.f32 [%0], %1;\n" ::"r"(addr), "f"(x) : "memory");
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
extern "C" __global__ void __cluster_dims__(CLUSTER, 1, 1) __launch_bounds__(NWARPS * 32)
v8_08_kv_wait_split(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                    __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale) {
    // dynamic shared memory: Q tile, STAGES × (K tile, V tile), then (split mode only) the landing buffer for the
    // cluster's partials of my rows: O [CLUSTER][ROWS][OP_STRIDE] fp32, row max [CLUSTER][ROWS], row sum [CLUSTER][ROWS]
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char* sQ = smem;
    unsigned char* sKV = smem + BLOCK_M * ROW_BYTES;
    unsigned char* sLand = sKV + STAGES * 2 * BLOCK_N * ROW_BYTES;
#define SK(st) (sKV + (st) * 2 * BLOCK_N * ROW_BYTES)
#define SV(st) (sKV + ((st) * 2 + 1) * BLOCK_N * ROW_BYTES)

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int n_qblocks = (seq_q + BLOCK_M - 1) / BLOCK_M;
    // split mode iff the grid has CLUSTER CTAs per query tile (see split_kv() in flashcore/specs/v8_mma.py)
    const bool split = (int)gridDim.x == CLUSTER * bh * n_qblocks;
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
    load_tile_async(sq, qh, q0, seq_q, tid);
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < n_tiles)
            load_tile_async(smem_u32(SK(s)), kh, (t_begin + s) * BLOCK_N, seq_kv, tid);
        cp_async_commit();  // group: K_s (and Q with K_0)
        if (s < n_tiles)
            load_tile_async(smem_u32(SV(s)), vh, (t_begin + s) * BLOCK_N, seq_kv, tid);
        cp_async_commit();  // group: V_s
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
        cp_async_wait<2 * STAGES - 3>();  // K_j (and Q) landed for this thread (V_j may still be in flight)
        __syncthreads();                  // ... for every thread; and everybody is done with tile j-1's buffers
        {
            int jn = j + STAGES - 1;
            if (jn < n_tiles)
                load_tile_async(smem_u32(SK(jn % STAGES)), kh, (t_begin + jn) * BLOCK_N, seq_kv, tid);
            cp_async_commit();
            if (jn < n_tiles)
                load_tile_async(smem_u32(SV(jn % STAGES)), vh, (t_begin + jn) * BLOCK_N, seq_kv, tid);
            cp_async_commit();
        }
        if (j == 0) {
#pragma unroll
            for (int ks = 0; ks < 4; ++ks)
                ldmatrix_x4(qf[ks], sq + swz(warp * 16 + (lane & 15), ks * 2 + (lane >> 4)));
        }
        const unsigned sk = smem_u32(SK(j % STAGES)), sv = smem_u32(SV(j % STAGES));

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
        const int kv0 = (t_begin + j) * BLOCK_N;
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
        cp_async_wait<2 * STAGES - 2>();  // V_j landed for this thread
        __syncthreads();                  // ... for every thread
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

    // ---- finish the row sums inside the quad
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 1);
        l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 2);
    }
    if (split) {
        // ---- push this CTA's partial rows to their owner CTA's landing buffer (rows r·ROWS … belong to CTA r)
        constexpr int ROWS = BLOCK_M / CLUSTER;
        const unsigned land = smem_u32(sLand);
        const int r0 = warp * 16 + g;
        cluster_wait();  // every CTA of the cluster is running: its shared memory may be written
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int row = r0 + 8 * h;
            const unsigned owner = row / ROWS;
            const unsigned dst = dsmem_addr(land, owner);
            const int lrow = (rank * ROWS + row % ROWS);  // [source rank][local row]
#pragma unroll
            for (int dt = 0; dt < 8; ++dt)
                st_dsmem_f2(dst + (lrow * OP_STRIDE + dt * 8 + 2 * t) * 4, acc_o[dt][2 * h], acc_o[dt][2 * h + 1]);
            if (t == 0) {
                st_dsmem_f(dst + (CLUSTER * ROWS * OP_STRIDE + lrow) * 4, m_row[h]);
                st_dsmem_f(dst + (CLUSTER * ROWS * OP_STRIDE + CLUSTER * ROWS + lrow) * 4, l_row[h]);
            }
        }
        cluster_sync_all();  // every push of the cluster has landed and is visible
        // ---- combine my ROWS rows from local shared memory: one 16-byte output chunk (8 columns) per item
        const float* land_o = reinterpret_cast<const float*>(sLand);
        const float* land_m = land_o + CLUSTER * ROWS * OP_STRIDE;
        const float* land_l = land_m + CLUSTER * ROWS;
        for (int item = tid; item < ROWS * 8; item += NWARPS * 32) {
            const int lr = item >> 3, chunk = item & 7;
            const int row = rank * ROWS + lr;
            float m_max = NEG_INF;
#pragma unroll
            for (int c = 0; c < CLUSTER; ++c) m_max = fmaxf(m_max, land_m[c * ROWS + lr]);
            float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, l_sum = 0.f;
#pragma unroll
            for (int c = 0; c < CLUSTER; ++c) {
                const float w = m_max == NEG_INF ? 0.f : fast_exp2(land_m[c * ROWS + lr] - m_max);
                l_sum += w * land_l[c * ROWS + lr];
                const float4 a = *reinterpret_cast<const float4*>(land_o + (c * ROWS + lr) * OP_STRIDE + chunk * 8);
                const float4 b = *reinterpret_cast<const float4*>(land_o + (c * ROWS + lr) * OP_STRIDE + chunk * 8 + 4);
                acc[0] += w * a.x; acc[1] += w * a.y; acc[2] += w * a.z; acc[3] += w * a.w;
                acc[4] += w * b.x; acc[5] += w * b.y; acc[6] += w * b.z; acc[7] += w * b.w;
            }
            const float inv = l_sum > 0.f ? 1.f / l_sum : 0.f;
            if (q0 + row < seq_q) {
                uint4 out;
                out.x = pack_half2(acc[0] * inv, acc[1] * inv);
                out.y = pack_half2(acc[2] * inv, acc[3] * inv);
                out.z = pack_half2(acc[4] * inv, acc[5] * inv);
                out.w = pack_half2(acc[6] * inv, acc[7] * inv);
                *reinterpret_cast<uint4*>(oh + (size_t)(q0 + row) * HEAD_DIM + chunk * 8) = out;
            }
        }
        return;
    }
    // ---- unsplit epilogue (v8_05): normalise, stage this warp's 16 rows in its own Q rows, 16-byte stores
#pragma unroll
    for (int r = 0; r < 2; ++r) l_row[r] = l_row[r] > 0.f ? 1.f / l_row[r] : 0.f;
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
