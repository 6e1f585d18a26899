// v11_fixed_roles — v11_pipeline fixed the other way: keep the design's division of labour (only the 4 load warps
// acquire, copy and commit) and tell the pipeline so, with a role: `make_pipeline(block, &state, role)`, producer =
// the load warps. The "produced" barrier then expects 128 arrivals (the load threads' commits) and "consumed" 384
// (everyone else's releases). The load warps stop calling consumer_wait()/consumer_release(): a producer thread's
// release would over-arrive on "consumed" (the model checker's v11_role_overrelease trace) and its wait would use a
// parity that only its own releases advance.
// What changed from its parent (v11_pipeline): the make_pipeline call takes the role, and `consumes` keeps the load
//   warps out of the consumer calls (two lines of the body; the rest is v11_pipeline.cu's).
// Predicted effect: same time as v11_fixed (the same copies and barriers; 384 fewer arrivals per tile, a few ns).
//   Proved deadlock-free by flashcore/modelcheck.py (model v11_roles). Its purpose in the chapter is the synccheck
//   matrix: is the "Missing wait" synccheck reports on v11_fixed about who commits, or about how libcu++ commits?
#include "v11/v11_tile.cuh"

extern "C" __device__ int v11_fixed_roles_smem_bytes[2] = {SMEM_TOTAL, SMEM_TOTAL};   // no split-KV

extern "C" __global__ void __launch_bounds__(NTHREADS, 1)
v11_fixed_roles(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
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
  const cuda::pipeline_role prole = role == ROLE_LOAD ? cuda::pipeline_role::producer : cuda::pipeline_role::consumer;
  cuda::pipeline<cuda::thread_scope_block> pipe = cuda::make_pipeline(block, &pipe_state, prole);
  const bool consumes = role != ROLE_LOAD;                     // with roles, producers never consume

  V11_WATCHDOG_STATE(libcuxx_stage_bar, LOAD_THREADS, NTHREADS - LOAD_THREADS)

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
