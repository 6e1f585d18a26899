// v12_no_4th_barrier — the original's failed shortcut, kept to show the failure (expect_failure=True).
//
// What changed from its parent (v12_baseline): the 4th __syncthreads of each key tile is gone. Warps 8–15 finish
//   their (empty) P·V step at once and start loading the next K/V tile while warps 0–7 still read V and
//   read-modify-write the fp32 accumulator; after the last key tile the finalize reads the accumulator while P·V
//   may still be writing it. The original measured max error 0.173 on an L4 ("race on the output accumulator").
// Predicted effect: a little faster than v12 (one barrier of four per tile) and WRONG: the checker's max error far
//   above tolerance (run to run different, so not deterministic either), and compute-sanitizer racecheck reports
//   shared-memory hazards on V / the accumulator.
#include "v12/v12_tile.cuh"

extern "C" __device__ int v12_no_4th_barrier_smem_bytes[2] = {SMEM_TOTAL, SMEM_TOTAL};   // no split-KV

extern "C" __global__ void __launch_bounds__(NTHREADS, 2)
v12_no_4th_barrier(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                   __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale) {
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
  const int n_qt = (seq_q + BM - 1) / BM, n_kt = (seq_kv + BN - 1) / BN;
  const int h0 = blockIdx.x, h_step = gridDim.x, qt0 = 0, qt_step = 1;                    // persistent per head
  for (int h = h0; h < bh; h += h_step) {
    const __half* qh = q + (size_t)h * seq_q * D;
    const __half* kh = k + (size_t)h * seq_kv * D;
    const __half* vh = v + (size_t)h * seq_kv * D;
    for (int qt = qt0; qt < n_qt; qt += qt_step) {
      const int q0 = qt * BM;
      load_tile_scalar(Qs, qh, q0, BM, seq_q);
      init_tile_state(Os, ms, ls);
      for (int kt = 0; kt < n_kt; ++kt) {
        const int k0 = kt * BN;
        const int kv_valid = min(BN, seq_kv - k0);
        const __half* Kc = Ks;
        const __half* Vc = Vs;
        load_tile_scalar(Ks, kh, k0, BN, seq_kv);
        load_tile_scalar(Vs, vh, k0, BN, seq_kv);
        __syncthreads();                                   // 1: K, V (and Q, O, m, l at kt = 0) in smem
        qk_scores(Qs, Kc, Ss, softmax_scale, warp);
        __syncthreads();                                   // 2: scores complete
        softmax_rows_serial(Ss, Ps, Os, ms, ls, kv_valid, warp, lane);
        __syncthreads();                                   // 3: probabilities and rescaled accumulator ready
        pv_accumulate(Ps, Vc, Os, warp);
        // (no 4th barrier: the original's shortcut — P·V may still read V and write O when the next tile loads)
      }
      store_output_scalar(o + (size_t)h * seq_q * D, Os, ls, q0, seq_q);
      __syncthreads();                                     // Q, O, m, l are re-initialised by the next tile
    }
  }
}
