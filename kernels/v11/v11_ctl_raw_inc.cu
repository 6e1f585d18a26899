// v11_ctl_raw_inc — synccheck control 4: hand-written mbarriers committing the way libcu++ does.
//
// Parent: none (a control; kernels/v11/v11_controls.cuh explains the matrix). Differs from v11_ctl_guide in one
//   thing: no libcu++. full[s]/empty[s] are hand-written mbarriers counting all 256 threads; a producer's commit is
//   what producer_commit() compiles to: cp.async.mbarrier.arrive (pending count +1, arrives when the copies land)
//   then a plain mbarrier.arrive, into one phase.
// Predicted: correct output; flagged if synccheck misreads that arrive pair (then 1–4 are all flagged).
#include "v11/v11_controls.cuh"

extern "C" __global__ void __launch_bounds__(NTHREADS)
v11_ctl_raw_inc(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale) {
  (void)q; (void)k; (void)softmax_scale;
  raw_ring_control(v, o, bh, seq_q, seq_kv, [](unsigned full) {
    cp_async_mbar_arrive(full);      // pending +1; arrives when this thread's copies land ...
    mbar_arrive(full);               // ... and the plain arrival (libcu++'s producer_commit pair)
  });
}
