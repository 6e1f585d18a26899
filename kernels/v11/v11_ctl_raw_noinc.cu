// v11_ctl_raw_noinc — synccheck control 5: hand-written mbarriers, one .noinc asynchronous arrival per commit.
//
// Parent: none (a control; kernels/v11/v11_controls.cuh explains the matrix). Differs from v11_ctl_raw_inc in one
//   thing: the commit is cp.async.mbarrier.arrive.noinc — each thread's one arrival (the barrier counts 256 of
//   them) — and no plain arrive.
// Predicted: correct output; synccheck clean (the protocol v11_fixed_mbarrier uses).
#include "v11/v11_controls.cuh"

extern "C" __global__ void __launch_bounds__(NTHREADS)
v11_ctl_raw_noinc(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                  __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale) {
  (void)q; (void)k; (void)softmax_scale;
  raw_ring_control(v, o, bh, seq_q, seq_kv, [](unsigned full) {
    cp_async_mbar_arrive_noinc(full);  // this thread's one arrival, when its copies land
  });
}
