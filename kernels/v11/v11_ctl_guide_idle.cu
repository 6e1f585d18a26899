// v11_ctl_guide_idle — synccheck control 2: v11_ctl_guide with half the threads committing without copying.
//
// Parent: none (a control; kernels/v11/v11_controls.cuh explains the matrix). Differs from v11_ctl_guide in one
//   thing: threads 0–127 copy two chunks each, threads 128–255 only acquire and commit — exactly what v11_fixed does
//   with its 384 non-loading threads.
// Predicted: correct output; if synccheck is right about v11_fixed, this one is flagged and v11_ctl_guide is not.
#include "v11/v11_controls.cuh"

extern "C" __global__ void __launch_bounds__(NTHREADS)
v11_ctl_guide_idle(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                   __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale) {
  (void)q; (void)k; (void)softmax_scale;
  guide_control<NTHREADS / 2, 2>(v, o, bh, seq_q, seq_kv);  // threads 0..127 copy two chunks each, 128..255 only
                                                            // acquire and commit
}
