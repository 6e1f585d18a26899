// v11_ctl_guide — synccheck control 1: the Programming Guide's cuda::pipeline pattern, known correct.
//
// Parent: none (a control, not a ladder step: kernels/v11/v11_controls.cuh explains the matrix). Role-less
//   cuda::make_pipeline(block, &state); every thread memcpy_async's its 16 bytes of the tile, commits, waits, reads
//   (the first 64 threads add their column), releases. The reference the other controls differ from.
// Predicted: correct output; synccheck clean if it reads libcu++'s producer_commit() right, flagged if it misreads
//   the asynchronous arrive (cp.async.mbarrier.arrive without .noinc).
#include "v11/v11_controls.cuh"

extern "C" __global__ void __launch_bounds__(NTHREADS)
v11_ctl_guide(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
              __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale) {
  (void)q; (void)k; (void)softmax_scale;
  guide_control<NTHREADS, 1>(v, o, bh, seq_q, seq_kv);      // every thread copies its one chunk
}
