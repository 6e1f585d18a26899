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
#include <cuda_fp16.h>

#ifndef STAGES
#define STAGES 2
#endif

#define HEAD_DIM 64
#ifndef MT
#define MT 2         // m16 tiles (16 query rows each) per warp
#endif
#define BLOCK_M (NWARPS * 16 * MT)   // query rows per CTA: 128
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
// asynchronous remote stores that complete_tx on the destination CTA's mbarrier (both addresses shared::cluster)
__device__ __forceinline__ void st_async_f2(unsigned addr, float x, float y, unsigned mbar) {
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.f32 [%0], {%1, %2}, [%3];\n"
                 ::"r"(addr), "f"(x), "f"(y), "r"(mbar) : "memory");
}
__device__ __forceinline__ void st_async_f(unsigned addr, float x, unsigned mbar) {
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.f32 [%0], %1, [%2];\n"
                 ::"r"(addr), "f"(x), "r"(mbar) : "memory");
}
__device__ __forceinline__ void mbar_init_expect(unsigned mbar, unsigned tx_bytes) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(mbar) : "memory");
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(mbar), "r"(tx_bytes) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_wait_phase0(unsigned mbar) {
    asm volatile(
        "{\n"
        ".reg .pred done;\n"
        "WAIT_%=:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], 0;\n"
        "@!done bra WAIT_%=;\n"
        "}\n" ::"r"(mbar) : "memory");
}
__device__ __forceinline__ unsigned pack_half2(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
}

// ---------------------------------------------------------------------------------------------- tile loads
// ROWS rows × 8 chunks of 16 bytes over the CTA's threads; rows ≥ n_rows are zero-filled (src-size 0).
template <int ROWS>
__device__ __forceinline__ void load_tile_async(unsigned smem, const __half* g, int row0, int n_rows, int tid) {
#pragma unroll
    for (int i = 0; i < (ROWS * 8) / (NWARPS * 32); ++i) {
        int idx = tid + i * NWARPS * 32;
        int row = idx >> 3, chunk = idx & 7;
        bool ok = row0 + row < n_rows;
        const __half* src = ok ? g + (size_t)(row0 + row) * HEAD_DIM + chunk * 8 : g;
        cp_async16(smem + swz(row, chunk), src, ok ? 16 : 0);
    }
}

// ---------------------------------------------------------------------------------------------- the kernel
extern "C" __global__ void __cluster_dims__(CLUSTER, 1, 1) __launch_bounds__(NWARPS * 32)
v8_10_mbarrier_combine(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                 __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale) {
    // dynamic shared memory: Q tile [128][64], STAGES × (K tile, V tile) [64][64], then (split mode only) the landing
    // buffer for the cluster's partials of my rows: O [CLUSTER][ROWS][OP_STRIDE] fp32, row max and row sum [CLUSTER][ROWS]
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char* sQ = smem;
    unsigned char* sKV = smem + BLOCK_M * ROW_BYTES;
    unsigned char* sLand = sKV + STAGES * 2 * BLOCK_N * ROW_BYTES;
    // the landing buffer's mbarrier (8 bytes) follows it: BLOCK_M rows × (64 + 2) floats, then the mbarrier
    const unsigned mbar = smem_u32(sLand) + BLOCK_M * OP_STRIDE * 4 + 2 * BLOCK_M * 4;
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
    if (split) {
        // arm my landing mbarrier with the bytes the cluster will push into it: BLOCK_M rows × (64 O + m + l) floats
        if (tid == 0) mbar_init_expect(mbar, BLOCK_M * (HEAD_DIM + 2) * 4);
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
            load_tile_async<BLOCK_N>(smem_u32(SK(s)), kh, (t_begin + s) * BLOCK_N, seq_kv, tid);
            load_tile_async<BLOCK_N>(smem_u32(SV(s)), vh, (t_begin + s) * BLOCK_N, seq_kv, tid);
        }
        cp_async_commit();
    }

    // per-thread coordinates inside an m16n8 accumulator: rows g and g+8, columns 2t, 2t+1
    const int g = lane >> 2, t = lane & 3;
    const float scale_log2 = softmax_scale * 1.4426950408889634f;
    const float NEG_INF = __int_as_float(0xff800000);
    const int wrow = warp * 16 * MT;  // this warp's first query row in the CTA tile

    unsigned qf[MT][4][4];         // Q fragments: MT m-tiles × 4 k16 steps over the head dim
    float acc_o[MT][8][4];         // O: MT m-tiles × 8 n8 tiles over the head dim
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc_o[mt][i][c] = 0.f;
    float m_row[MT][2], l_row[MT][2];  // running max (× scale·log2e) and this thread's part of the running sum
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        m_row[mt][0] = m_row[mt][1] = NEG_INF;
        l_row[mt][0] = l_row[mt][1] = 0.f;
    }

    for (int j = 0; j < n_tiles; ++j) {
        cp_async_wait<STAGES - 2>();  // tile j (and Q) landed for this thread
        __syncthreads();              // ... for every thread; and everybody is done with tile j-1's buffer
        {
            int jn = j + STAGES - 1;
            if (jn < n_tiles) {
                load_tile_async<BLOCK_N>(smem_u32(SK(jn % STAGES)), kh, (t_begin + jn) * BLOCK_N, seq_kv, tid);
                load_tile_async<BLOCK_N>(smem_u32(SV(jn % STAGES)), vh, (t_begin + jn) * BLOCK_N, seq_kv, tid);
            }
            cp_async_commit();
        }
        if (j == 0) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int ks = 0; ks < 4; ++ks)
                    ldmatrix_x4(qf[mt][ks], sq + swz(wrow + mt * 16 + (lane & 15), ks * 2 + (lane >> 4)));
        }
        const unsigned sk = smem_u32(SK(j % STAGES)), sv = smem_u32(SV(j % STAGES));

        // ---- S = Q · Kᵀ (MT × 16 × 64 per warp): one K fragment, MT × 2 mma
        float s[MT][8][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int c = 0; c < 4; ++c) s[mt][i][c] = 0.f;
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) {
#pragma unroll
            for (int np = 0; np < 4; ++np) {
                unsigned b[4];
                ldmatrix_x4(b, sk + swz(np * 16 + (lane & 7) + ((lane >> 4) << 3), ks * 2 + ((lane >> 3) & 1)));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_16816(s[mt][2 * np], qf[mt][ks], b[0], b[1]);
                    mma_16816(s[mt][2 * np + 1], qf[mt][ks], b[2], b[3]);
                }
            }
        }
        // ---- mask keys past seq_kv (only the last tile can have them)
        const int kv0 = (t_begin + j) * BLOCK_N;
        if (kv0 + BLOCK_N > seq_kv) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int nt = 0; nt < 8; ++nt)
#pragma unroll
                    for (int c = 0; c < 4; ++c)
                        if (kv0 + nt * 8 + 2 * t + (c & 1) >= seq_kv) s[mt][nt][c] = NEG_INF;
        }
        // ---- online softmax per m-tile: new row max, rescale factors, P = exp2(S·scale·log2e − m) as fp16 A fragments
        unsigned pf[MT][4][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            float mx[2] = {NEG_INF, NEG_INF};
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
                mx[0] = fmaxf(mx[0], fmaxf(s[mt][nt][0], s[mt][nt][1]));
                mx[1] = fmaxf(mx[1], fmaxf(s[mt][nt][2], s[mt][nt][3]));
            }
            float alpha[2];
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
                float m_new = fmaxf(m_row[mt][r], mx[r] * scale_log2);
                alpha[r] = fast_exp2(m_row[mt][r] - m_new);
                m_row[mt][r] = m_new;
                l_row[mt][r] *= alpha[r];
            }
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
                float p0 = fast_exp2(fmaf(s[mt][nt][0], scale_log2, -m_row[mt][0]));
                float p1 = fast_exp2(fmaf(s[mt][nt][1], scale_log2, -m_row[mt][0]));
                float p2 = fast_exp2(fmaf(s[mt][nt][2], scale_log2, -m_row[mt][1]));
                float p3 = fast_exp2(fmaf(s[mt][nt][3], scale_log2, -m_row[mt][1]));
                l_row[mt][0] += p0 + p1;
                l_row[mt][1] += p2 + p3;
                pf[mt][nt >> 1][(nt & 1) * 2 + 0] = pack_half2(p0, p1);
                pf[mt][nt >> 1][(nt & 1) * 2 + 1] = pack_half2(p2, p3);
            }
#pragma unroll
            for (int dt = 0; dt < 8; ++dt) {
                acc_o[mt][dt][0] *= alpha[0];
                acc_o[mt][dt][1] *= alpha[0];
                acc_o[mt][dt][2] *= alpha[1];
                acc_o[mt][dt][3] *= alpha[1];
            }
        }
        // ---- O += P · V: one V fragment (ldmatrix.trans), MT × 2 mma
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
            for (int dp = 0; dp < 4; ++dp) {
                unsigned b[4];
                ldmatrix_x4_trans(b, sv + swz(kk * 16 + (lane & 15), dp * 2 + (lane >> 4)));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_16816(acc_o[mt][2 * dp], pf[mt][kk], b[0], b[1]);
                    mma_16816(acc_o[mt][2 * dp + 1], pf[mt][kk], b[2], b[3]);
                }
            }
        }
    }
    cp_async_wait<0>();

    // ---- finish the row sums inside the quad
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            l_row[mt][r] += __shfl_xor_sync(0xffffffffu, l_row[mt][r], 1);
            l_row[mt][r] += __shfl_xor_sync(0xffffffffu, l_row[mt][r], 2);
        }
    if (split) {
        // ---- push this CTA's partial rows to their owner CTA's landing buffer (rows r·ROWS … belong to CTA r)
        constexpr int ROWS = BLOCK_M / CLUSTER;
        const unsigned land = smem_u32(sLand);
        cluster_wait();  // every CTA of the cluster has armed its mbarrier: its landing buffer may be written
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
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
        cluster_arrive_relaxed();  // "my pushes are issued" (the exit barrier, waited for at the very end)
        mbar_wait_phase0(mbar);    // every byte of my rows has landed (transaction count reached zero)
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
        cluster_wait();  // nobody leaves while a push into it may still be in flight
        return;
    }
    // ---- unsplit epilogue: normalise, stage this warp's rows in its own Q rows, 16-byte stores
    __syncwarp();
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        const float inv0 = l_row[mt][0] > 0.f ? 1.f / l_row[mt][0] : 0.f;
        const float inv1 = l_row[mt][1] > 0.f ? 1.f / l_row[mt][1] : 0.f;
        const int r0 = wrow + mt * 16 + g;
#pragma unroll
        for (int dt = 0; dt < 8; ++dt) {
            *reinterpret_cast<unsigned*>(sQ + swz(r0, dt) + t * 4) =
                pack_half2(acc_o[mt][dt][0] * inv0, acc_o[mt][dt][1] * inv0);
            *reinterpret_cast<unsigned*>(sQ + swz(r0 + 8, dt) + t * 4) =
                pack_half2(acc_o[mt][dt][2] * inv1, acc_o[mt][dt][3] * inv1);
        }
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < MT * 4; ++i) {
        int idx = lane + i * 32;
        int row = wrow + (idx >> 3), chunk = idx & 7;
        if (q0 + row < seq_q)
            *reinterpret_cast<uint4*>(oh + (size_t)(q0 + row) * HEAD_DIM + chunk * 8) =
                *reinterpret_cast<const uint4*>(sQ + swz(row, chunk));
    }
}
