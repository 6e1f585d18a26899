// v11_pipeline — the original's "expert" kernel (Oct 2025) that compiled and never finished, rebuilt from its design
// facts so that the hang can be reproduced, diagnosed and explained.
//
// What it is: v12's tiles, roles and smem layout (32 query rows × 48 keys, 512 threads = 16 warps: warps 0–10
//   compute, 11–14 load, 15 softmax; scores/probabilities/accumulator in smem, persistent CTAs over (batch·head)),
//   plus a 2-stage K/V ring driven by a block-scope `cuda::pipeline`:
//   * the pipeline is created for the whole block with NO role argument:
//       `cuda::make_pipeline(this_thread_block(), &state)`   (state: `__shared__ pipeline_shared_state<block, 2>`);
//   * only the 4 load warps call producer_acquire(), issue 16-byte `cuda::memcpy_async` copies of K and V, and
//     producer_commit(); every thread calls consumer_wait() before Q·Kᵀ and consumer_release() after P·V;
//   * loop: tile 0 prefetched before the key loop; iteration i prefetches tile i+1 into the other stage, waits for
//     tile i, then Q·Kᵀ → barrier → softmax (one warp) → barrier → P·V → release → barrier.
// What changed from its parent (v12_baseline): the loads (scalar, all threads, one buffer) became a 2-stage pipeline
//   fed by the load warps only. Predicted effect (the original's hope): load latency hidden behind compute.
// What libcu++ does with that (cuda/pipeline, read in the chapter): the role-less make_pipeline initialises BOTH
//   barriers of every stage ("produced", "consumed") with an expected arrival count of group.size() = 512, i.e.
//   every thread of the block is a producer AND a consumer. producer_commit() is one arrival on "produced";
//   consumer_wait() waits for the phase of "produced" to complete. The model checker (flashcore/modelcheck.py) and
//   the GPU watchdog below show what that means when only 128 threads ever commit.
//
// The WATCHDOG build option (the chapter's spec always sets it: this kernel is never launched without it). Every wait
//   that can block is bounded by a budget of `wd_budget` clock64 cycles, measured from the start of that wait:
//   * pipeline waits: `cuda::pipeline` has a bounded consumer_wait_for() but no bounded producer_acquire(), so the
//     watchdog polls the very mbarrier the pipeline would wait on (stage s's "produced"/"consumed" barrier inside
//     the pipeline_shared_state, located by layout, static_asserted below) with the same phase parity the pipeline
//     tracks (mirrored per thread exactly as libcu++ updates head/tail/parities), using mbarrier.test_wait.parity;
//     once the phase is complete the real pipeline call runs (and returns at once);
//   * __syncthreads() becomes an mbarrier with 512 expected arrivals (arrive + bounded test_wait.parity poll):
//     a bar.sync cannot be abandoned, so with some threads gone it would hang;
//   * on timeout a thread sets a global abort flag (every other waiting thread then gives up too, recording where
//     it was) and the first lane of each warp writes one record: CTA, warp, lane, role, wait site, stage, phase
//     index and parity, key tile, query tile, head, the arrivals counted on that barrier so far (a shared-memory
//     mirror: +1 per producer_commit / consumer_release / block arrival), the expected count, the raw mbarrier
//     word (opaque: a plain load of it reads 0 on the H100) and the cycles waited. Then the thread returns.
//     flashcore/watchdog.py decodes the buffer.
//   Extra kernel arguments (after softmax_scale) when WATCHDOG is set: `int* wd_buf, long long wd_budget`.
#include "v11/v11_tile.cuh"

extern "C" __device__ int v11_pipeline_smem_bytes[2] = {SMEM_TOTAL, SMEM_TOTAL};   // no split-KV

extern "C" __global__ void __launch_bounds__(NTHREADS, 1)
v11_pipeline(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
             __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale V11_WATCHDOG_PARAMS) {
  extern __shared__ __align__(128) unsigned char smem[];
  __half* Qs = reinterpret_cast<__half*>(smem + OFF_Q);
  __half* Ks = reinterpret_cast<__half*>(smem + OFF_K);
  __half* Vs = reinterpret_cast<__half*>(smem + OFF_V);
  float* Ss = reinterpret_cast<float*>(smem + OFF_S);
  __half* Ps = reinterpret_cast<__half*>(smem + OFF_P);
  float* Os = reinterpret_cast<float*>(smem + OFF_O);
  float* ms = reinterpret_cast<float*>(smem + OFF_M);
  float* ls = reinterpret_cast<float*>(smem + OFF_L);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int role = role_of(warp);
  const int n_qt = (seq_q + BM - 1) / BM, n_kt = (seq_kv + BN - 1) / BN;

  // nvcc warns "dynamic initialization is not supported for a __shared__ variable" here, as the original did:
  // the constructor does not run; make_pipeline initialises the barriers instead.
  __shared__ pipe_state_t pipe_state;
  V11_WATCHDOG_SHARED()
  auto block = cg::this_thread_block();
  cuda::pipeline<cuda::thread_scope_block> pipe = cuda::make_pipeline(block, &pipe_state);   // no role: v11's call
  const bool consumes = true;                                 // the role-less pipeline: everyone consumes

  V11_WATCHDOG_STATE(libcuxx_stage_bar, (unsigned)block.size(), (unsigned)block.size())

  // tiles produced / consumed so far by this thread: the ring slot of a tile is its count mod 2, which is exactly
  // the pipeline's head / tail (the count carries on across query tiles and heads, like the pipeline's state)
  int iter = 0, n_prod = 0, n_cons = 0;
  for (int h = blockIdx.x; h < bh; h += gridDim.x) {          // persistent: (batch·head) with stride gridDim.x
    const __half* qh = q + (size_t)h * seq_q * D;
    const __half* kh = k + (size_t)h * seq_kv * D;
    const __half* vh = v + (size_t)h * seq_kv * D;
    WD_ONLY(w.head_idx = h;)
    for (int qt = 0; qt < n_qt; ++qt) {
      const int q0 = qt * BM;
      WD_ONLY(w.qtile = qt; w.ktile = -1;)
      load_tile_scalar(Qs, qh, q0, BM, seq_q);                // scalar copies by every thread, as in v12
      init_tile_state(Os, ms, ls);
      BLOCK_SYNC(SITE_BAR_Q);                                 // Q, O, m, l ready
      LOAD_KV_TILE(0);                                        // prefetch tile 0
      for (int kt = 0; kt < n_kt; ++kt, ++iter) {
        WD_ONLY(w.ktile = kt; w.iter = iter;)
        const int stage = n_cons & 1;                        // = the pipeline's tail
        if (kt + 1 < n_kt) LOAD_KV_TILE(kt + 1);              // tile kt+1 into the other stage
        if (consumes) CONSUMER_WAIT();                        // tile kt has landed
        qk_scores(Qs, Ks + stage * BN * LDH, Ss, softmax_scale, warp);
        BLOCK_SYNC(SITE_BAR_QK);
        softmax_rows_serial(Ss, Ps, Os, ms, ls, min(BN, seq_kv - kt * BN), warp, lane);
        BLOCK_SYNC(SITE_BAR_SOFTMAX);
        pv_accumulate(Ps, Vs + stage * BN * LDH, Os, warp);
        if (consumes) CONSUMER_RELEASE();                     // the stage may be refilled
        ++n_cons;
        BLOCK_SYNC(SITE_BAR_RELEASE);
      }
      WD_ONLY(w.ktile = n_kt;)
      store_output_scalar(o + (size_t)h * seq_q * D, Os, ls, q0, seq_q);
      BLOCK_SYNC(SITE_BAR_STORE);                             // Q, O, m, l are re-initialised by the next tile
    }
  }
}
