// v11_ctl_raw_waitall — synccheck control 6: hand-written mbarriers, no asynchronous arrive at all.
//
// Parent: none (a control; kernels/v11/v11_controls.cuh explains the matrix). Differs from v11_ctl_raw_inc in one
//   thing: the commit waits for its own copies (cp.async.wait_all), then makes one plain mbarrier.arrive.
// Predicted: correct output; synccheck clean.
#include "v11/v11_controls.cuh"

extern "C" __global__ void __launch_bounds__(NTHREADS)
v11_ctl_raw_waitall(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                    __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale) {
  (void)q; (void)k; (void)softmax_scale;
  raw_ring_control(v, o, bh, seq_q, seq_kv, [](unsigned full) {
    cp_async_wait_all();             // this thread's copies have landed ...
    mbar_arrive(full);               // ... then one plain arrival
  });
}
