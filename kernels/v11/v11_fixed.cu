// v11_fixed — v11_pipeline with the smallest fix of its deadlock: every thread of the block takes part in the
// pipeline's producer side (producer_acquire / producer_commit); only the 4 load warps issue the copies.
//
// The cause (found by the GPU watchdog and proved by flashcore/modelcheck.py, see the chapter): the role-less
//   `cuda::make_pipeline(block, &state)` initialises each stage's "produced" barrier with group.size() = 512 expected
//   arrivals (every thread is a producer AND a consumer), but v11 lets only the 128 load-warp threads call
//   producer_commit(). Each phase of "produced" therefore collects 128 of 512 arrivals and never completes, and
//   consumer_wait() — called by all 16 warps — waits on it forever: the whole block stops at the first wait.
// What changed from its parent (v11_pipeline): the producer_acquire()/producer_commit() pair moved out of the
//   load-warp branch (LOAD_KV_TILE, redefined below; the rest of the body is v11_pipeline.cu's, so a diff shows
//   the one idea). 384 threads now commit without copying: an arrival with nothing in flight. Alternatives that
//   also work (said so in the chapter): `make_pipeline(block, &state, role)` with producer = the load warps —
//   which then also needs the load warps to stop calling consumer_release(), else "consumed" over-arrives.
// Predicted effect: it finishes, with v12's numerics; at B1 H8 S512 only 8 of 132 CTAs have work and one softmax
//   warp still serialises every tile, so the double buffer hides little: about v12 with vector loads (~hundreds of
//   µs on H100), far from cuDNN. The ncu metric to watch: stall "barrier" and "long scoreboard" per issue.
// Like v11_pipeline it takes the WATCHDOG build option (v11_fixed_watchdog): it must then finish with no record.
// compute-sanitizer: racecheck is clean; synccheck reports "Missing wait" at pipeline::producer_commit() →
//   barrier::arrive(). It reports the Programming Guide's own cuda::pipeline pattern the same way: the chapter's
//   control matrix (kernels/v11/v11_ctl_*.cu) ties the report to libcu++'s commit (cp.async.mbarrier.arrive,
//   then mbarrier.arrive), and kernels/v11/v11_fixed_mbarrier.cu — this protocol with one .noinc arrival per commit —
//   is the synccheck-clean build.
#ifndef V11_DRAIN
#define V11_DRAIN 0   // 1: the diagnostic build (see the end of the kernel)
#endif
#include "v11/v11_tile.cuh"

// The fix: every thread acquires and commits (the role-less pipeline was made for all 512 of them); only the load
// warps issue copies. 384 threads commit with nothing in flight.
#undef LOAD_KV_TILE
#define LOAD_KV_TILE(tile)                                                                                          \
  do {                                                                                                             \
    PRODUCER_ACQUIRE();                                                                                            \
    if (role == ROLE_LOAD) {                                                                                       \
      const int st_ = n_prod & 1;   /* = the pipeline's head */                                                   \
      issue_kv_copies(Ks + st_ * BN * LDH, Vs + st_ * BN * LDH, kh, vh, (tile) * BN, seq_kv, pipe);                \
    }                                                                                                              \
    PRODUCER_COMMIT();                                                                                             \
    ++n_prod;                                                                                                      \
  } while (0)

extern "C" __device__ int v11_fixed_smem_bytes[2] = {SMEM_TOTAL, SMEM_TOTAL};   // no split-KV

extern "C" __global__ void __launch_bounds__(NTHREADS, 1)
v11_fixed(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
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
#if V11_DRAIN
  // the diagnostic build (chapter 2's synccheck probe): before exiting, every thread waits for the last 'consumed'
  // phase of each stage it released into
  {
    block_barrier_t* bars = reinterpret_cast<block_barrier_t*>(&pipe_state);
    for (int s = 0; s < STAGES; ++s) {
      const int released = (n_cons + (STAGES - 1 - s)) / STAGES;   // tiles g ≡ s (mod 2) this thread released
      if (released == 0) continue;
      const unsigned addr = smem_u32(cuda::device::barrier_native_handle(bars[2 * s + 1]));
      while (!mbar_test_parity(addr, (unsigned)((released - 1) & 1))) {}
    }
  }
#endif
}
