// v11_ctl_roles — synccheck control 3: the libcu++ pipeline with producer and consumer roles.
//
// Parent: none (a control; kernels/v11/v11_controls.cuh explains the matrix). Differs from v11_ctl_guide in one
//   thing: make_pipeline(block, &state, role): warps 0–3 produce (acquire, copy two chunks, commit), warps 4–7
//   consume (wait, add a column, release). Nobody is both.
// Predicted: correct output; flagged exactly when v11_ctl_guide is (the same producer_commit()).
#include "v11/v11_controls.cuh"

extern "C" __global__ void __launch_bounds__(NTHREADS)
v11_ctl_roles(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
              __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale) {
  (void)q; (void)k; (void)softmax_scale;
  V11_CONTROL_PROLOGUE()
  __shared__ cuda::pipeline_shared_state<cuda::thread_scope_block, STAGES> state;
  auto block = cg::this_thread_block();
  const cuda::pipeline_role role = tid < NTHREADS / 2 ? cuda::pipeline_role::producer
                                                       : cuda::pipeline_role::consumer;
  cuda::pipeline<cuda::thread_scope_block> pipe = cuda::make_pipeline(block, &state, role);
  if (role == cuda::pipeline_role::producer) {
    for (int t = 0; t < n_tiles; ++t) {
      pipe.producer_acquire();
      for (int j = 0; j < 2; ++j) fill_chunk(tiles.v[t % STAGES], vh, t, tid * 2 + j, seq_kv, pipeline_copy16(pipe));
      pipe.producer_commit();
    }
  } else {
    const int col = tid - NTHREADS / 2;
    for (int t = 0; t < n_tiles; ++t) {
      pipe.consumer_wait();
      if (col < D) add_tile(tiles.v[t % STAGES], col, acc);
      pipe.consumer_release();
    }
    if (col < D) colsum[col] = acc;
  }
  V11_CONTROL_EPILOGUE()
}
