// hopper_03_warpspec — warp specialization: one producer warp feeds three consumer warpgroups through an
// mbarrier ring (full/empty per stage), the producer's warpgroup gives its registers to the consumers (setmaxnreg).
//
// What it is. A CTA of 4 warpgroups (512 threads) owns 192 query rows of one head:
//   warpgroup 0 = producer: setmaxnreg.dec to 24 registers; one thread issues every TMA copy — Q (one 64-row box
//     per consumer), then for each key tile j: wait empty[j % STAGES] (parity (j / STAGES & 1) ^ 1), arm
//     full[j % STAGES] with the bytes of a K and a V tile (arrive.expect_tx), copy both;
//   warpgroups 1–3 = consumers: setmaxnreg.inc to 160; each owns 64 query rows and runs hopper_02's tile loop —
//     wait full[s] (parity j / STAGES & 1), S = Q·Kᵀ, softmax, O += P·V — then releases the stage: lane 0 of each
//     consumer warp arrives once on empty[s] after that warp's wgmma.wait_group 0 (empty[s] expects 12 arrivals:
//     wait_group only tells a warp that its own 16 rows are done, so the stage is free when all 12 warps say so).
//   This is v11's design (kernels/v11_pipeline.cu: load warps + compute warps over a 2-stage pipeline), done with
//   the protocol flashcore/modelcheck.py checks: every barrier's arrival count is the number of threads that
//   arrive on it, each waiter names the phase it wants by parity, and the producer starts on parity 1 (a fresh
//   barrier counts as released). The K/V ring has STAGES = 4 stages; the output is staged per warp in its own
//   2 KB (no cross-warp barrier anywhere in the consumer path).
// Parent: hopper_02_tma.
// What changed (one idea): roles. In hopper_02 every warp waits at a __syncthreads per tile and thread 0 issues the
//   next copy only after the whole CTA is done with a stage; here nobody waits for anybody but the data: a
//   consumer warpgroup that is ahead runs ahead by up to STAGES tiles, and the three consumer warpgroups of a CTA
//   drift apart so that one's softmax runs while another's GEMMs occupy the tensor cores. The CTA grows from 64 to
//   192 query rows (one CTA per SM: 176 KB of shared memory), so each K/V tile fetched serves 3× the rows.
// Why: in hopper_02 the tensor pipe idles during every softmax of a CTA unless another CTA on the SM happens to be in
//   its GEMMs; 3 CTAs per SM gave that by chance, with 3× the K/V traffic into shared memory.
// Predicted: B4 H16 S4096 ≈ 390 TFLOP/s (between Triton's 356 and cuDNN's 432: the overlap between warpgroups is
//   free-running, not scheduled); B1 H8 S512 ≈ 10 µs (24 CTAs on 132 SMs: fewer, larger tiles hurt small shapes).
// ncu: tensor pipe active up (~60–65 %), stall_barrier gone, stall_wait (wgmma) and stall_long_scoreboard (mbarrier
//   try_wait) are the top stalls of the consumer warps; registers/thread reported as the launch cap (128).
#include <cuda_fp16.h>

#include "common/mbarrier.cuh"
#include "common/tma.cuh"
#include "common/wgmma.cuh"

using namespace hopper;

#ifndef NUM_CONSUMERS
#define NUM_CONSUMERS 3        // consumer warpgroups per CTA (2 or 3)
#endif
#ifndef STAGES
#define STAGES 4               // K/V ring depth
#endif
constexpr int HEAD_DIM_ = 64;
constexpr int CONSUMERS = NUM_CONSUMERS;
constexpr int BLOCK_M = 64 * CONSUMERS;  // query rows per CTA: 64 per consumer warpgroup
constexpr int BLOCK_N = 128;             // keys per tile
constexpr int THREADS = 128 * (1 + CONSUMERS);
constexpr int PRODUCER_REGS = 24;
constexpr int CONSUMER_REGS = CONSUMERS == 3 ? 160 : 240;
static_assert(CONSUMERS == 2 || CONSUMERS == 3, "2 or 3 consumer warpgroups");
static_assert(128 * (PRODUCER_REGS + CONSUMERS * CONSUMER_REGS) <= 65536, "setmaxnreg budgets exceed the register file");
constexpr int EMPTY_ARRIVALS = 4 * CONSUMERS;  // one per consumer warp
constexpr int ROW_BYTES = HEAD_DIM_ * 2;             // one swizzled 128-byte row
constexpr int Q_TILE_BYTES = 64 * ROW_BYTES;         // 8 KB: one consumer's rows (one TMA box)
constexpr int KV_TILE_BYTES = BLOCK_N * ROW_BYTES;   // 16 KB
constexpr int OUT_WARP_BYTES = 16 * ROW_BYTES;       // 2 KB: one warp's output rows, staged
constexpr int SMEM_Q = 0;                                              // CONSUMERS × Q tile
constexpr int SMEM_KV = SMEM_Q + CONSUMERS * Q_TILE_BYTES;             // stage s: K, then V
constexpr int SMEM_OUT = SMEM_KV + STAGES * 2 * KV_TILE_BYTES;         // 4·CONSUMERS warps × 2 KB
constexpr int SMEM_BARRIERS = SMEM_OUT + 4 * CONSUMERS * OUT_WARP_BYTES;  // q_full, full[STAGES], empty[STAGES]
constexpr int SMEM_LAYOUT_BYTES = SMEM_BARRIERS + (1 + 2 * STAGES) * 8;
constexpr int SMEM_BYTES = SMEM_LAYOUT_BYTES + 1024;  // + slack to align the base to 1024 bytes
static_assert(SMEM_BYTES <= 227 * 1024, "dynamic shared memory over the 227 KB a block may have");
extern "C" __constant__ int hopper_03_warpspec_smem_bytes = SMEM_BYTES;
extern "C" __constant__ int hopper_03_warpspec_threads = THREADS;
extern "C" __constant__ int hopper_03_warpspec_block_m = BLOCK_M;
extern "C" __constant__ int hopper_03_warpspec_q_box_rows = 64;   // the tensor maps' box heights (flashcore/tma.py)
extern "C" __constant__ int hopper_03_warpspec_kv_box_rows = BLOCK_N;

// ---------------------------------------------------------------------------------------------- loads (TMA)
__device__ __forceinline__ unsigned swizzled(int row, int chunk) {  // byte offset of a 16-byte chunk in a tile
    return row * ROW_BYTES + ((chunk ^ (row & 7)) << 4);
}
// Arm the stage's barrier with the bytes of one K and one V tile, then start both copies (one thread).
__device__ __forceinline__ void load_kv_tile(unsigned k_tile, unsigned v_tile, unsigned full_bar, const TmaMap* tma_k,
                                             const TmaMap* tma_v, int tile, int head) {
    mbarrier_arrive_expect_tx(full_bar, 2 * KV_TILE_BYTES);
    tma_load_rows(k_tile, tma_k, full_bar, tile * BLOCK_N, head);
    tma_load_rows(v_tile, tma_v, full_bar, tile * BLOCK_N, head);
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
hopper_03_warpspec(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                   __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale,
                   const __grid_constant__ TmaMap tma_q, const __grid_constant__ TmaMap tma_k,
                   const __grid_constant__ TmaMap tma_v
#ifdef WATCHDOG
                   , int* __restrict__ wd_buf, long long wd_budget
#endif
) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char* smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);  // 1024-aligned base
    const unsigned s_base = smem_u32(smem);
    auto q_tile = [&](int consumer) { return s_base + SMEM_Q + consumer * Q_TILE_BYTES; };
    auto k_tile = [&](int stage) { return s_base + SMEM_KV + stage * 2 * KV_TILE_BYTES; };
    auto v_tile = [&](int stage) { return s_base + SMEM_KV + stage * 2 * KV_TILE_BYTES + KV_TILE_BYTES; };
    const unsigned q_full = s_base + SMEM_BARRIERS;
    auto full = [&](int stage) { return s_base + SMEM_BARRIERS + 8 * (1 + stage); };
    auto empty = [&](int stage) { return s_base + SMEM_BARRIERS + 8 * (1 + STAGES + stage); };

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, warpgroup = tid >> 7;
    const int n_qblocks = (seq_q + BLOCK_M - 1) / BLOCK_M;
    const int head = blockIdx.x / n_qblocks, q0 = (blockIdx.x % n_qblocks) * BLOCK_M;
    if (head >= bh) return;
    const int n_tiles = (seq_kv + BLOCK_N - 1) / BLOCK_N;
#ifdef WATCHDOG
    Watchdog wd{wd_buf, wd_budget, WD_ROLE_CONSUMER, head, q0 / BLOCK_M, -1};
#else
    Watchdog wd{nullptr, 0, WD_ROLE_CONSUMER, head, q0 / BLOCK_M, -1};
#endif

    if (tid == 0) {
        mbarrier_init(q_full, 1);
        for (int st = 0; st < STAGES; ++st) {
            mbarrier_init(full(st), 1);                // the producer's arrive.expect_tx (+ the tile bytes)
            mbarrier_init(empty(st), EMPTY_ARRIVALS);  // one arrival per consumer warp
        }
        mbarrier_init_fence();
    }
    __syncthreads();  // the last block-wide barrier: from here on, roles only wait for data

    if (warpgroup == 0) {
        // ------------------------------------------------------------------ producer: one thread issues every copy
        warpgroup_release_registers<PRODUCER_REGS>();
        if (warp == 0 && lane == 0) {
            wd.role = WD_ROLE_PRODUCER;
            tma_prefetch_map(&tma_q);
            tma_prefetch_map(&tma_k);
            tma_prefetch_map(&tma_v);
            const int q_boxes = min(CONSUMERS, (seq_q - q0 + 63) / 64);  // boxes wholly past seq_q are skipped
            mbarrier_arrive_expect_tx(q_full, q_boxes * Q_TILE_BYTES);
            for (int c = 0; c < q_boxes; ++c) tma_load_rows(q_tile(c), &tma_q, q_full, q0 + 64 * c, head);
            for (int j = 0; j < n_tiles; ++j) {
                const int stage = j % STAGES, round = j / STAGES;
                wd.key_tile = j;
                if (!mbarrier_wait(wd, empty(stage), (round & 1) ^ 1, WD_SITE_EMPTY, stage, round, EMPTY_ARRIVALS))
                    return;
                load_kv_tile(k_tile(stage), v_tile(stage), full(stage), &tma_k, &tma_v, j, head);
            }
        }
    } else {
        // ------------------------------------------------------------------ consumers: 64 query rows each
        warpgroup_claim_registers<CONSUMER_REGS>();
        const int consumer = warpgroup - 1, warp_in_group = warp & 3;
        const float scale_log2 = softmax_scale * 1.4426950408889634f;
        float o_acc[32];
#pragma unroll
        for (int i = 0; i < 32; ++i) o_acc[i] = 0.f;
        float m_row[2] = {__int_as_float(0xff800000), __int_as_float(0xff800000)};
        float l_row[2] = {0.f, 0.f};

        if (!mbarrier_wait(wd, q_full, 0, WD_SITE_Q_FULL, -1, 0, 1)) return;
        for (int j = 0; j < n_tiles; ++j) {
            const int stage = j % STAGES, round = j / STAGES;
            wd.key_tile = j;
            if (!mbarrier_wait(wd, full(stage), round & 1, WD_SITE_FULL, stage, round, 1)) return;
            float s[64];
            compute_scores(s, q_tile(consumer), k_tile(stage));
            if ((j + 1) * BLOCK_N > seq_kv) mask_tail_keys(s, j * BLOCK_N, seq_kv, lane);
            float alpha[2];
            online_softmax_update(s, m_row, l_row, alpha, scale_log2);
            unsigned p[BLOCK_N / 16][4];
            convert_p_to_a_fragments(s, p);
            rescale_output(o_acc, alpha);
            accumulate_pv(o_acc, p, v_tile(stage));
            if (lane == 0) mbarrier_arrive(empty(stage));  // this warp's wgmma on the stage have completed
        }
        store_output_rows(o_acc, l_row, smem + SMEM_OUT + (4 * consumer + warp_in_group) * OUT_WARP_BYTES,
                          o + (size_t)head * seq_q * HEAD_DIM_, q0 + 64 * consumer + 16 * warp_in_group, seq_q,
                          lane);
    }
}
