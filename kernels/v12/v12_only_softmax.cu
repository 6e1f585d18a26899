// v12_only_softmax — one fix alone: v12 with the softmax done by all 16 warps, everything else as designed.
//
// What changed from its parent (v12_baseline): softmax_rows_serial (warp 15, lane = row, serial loops with a 32-way
//   bank conflict) → softmax_rows_parallel (2 rows per warp, lanes across the columns, shuffles); the persistent
//   schedule, the scalar loads and the four barriers stay. Also the first step of ladder B (softmax → vec → grid →
//   prefetch), which puts the fixes inside the CTA before the schedule.
// Predicted effect: the largest in-CTA saving at the mission shape (the serial softmax is the longest phase of a key
//   tile while 15 warps wait at barrier 3); ncu: smem bank conflicts and stall_barrier down.
#include "v12/v12_tile.cuh"

extern "C" __device__ int v12_only_softmax_smem_bytes[2] = {SMEM_TOTAL, SMEM_TOTAL};   // no split-KV

extern "C" __global__ void __launch_bounds__(NTHREADS, 2)
v12_only_softmax(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
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
        softmax_rows_parallel(Ss, Ps, Os, ms, ls, kv_valid, warp, lane);
        __syncthreads();                                   // 3: probabilities and rescaled accumulator ready
        pv_accumulate(Ps, Vc, Os, warp);
        __syncthreads();                                   // 4: P·V done before V / O are touched again
      }
      store_output_scalar(o + (size_t)h * seq_q * D, Os, ls, q0, seq_q);
      __syncthreads();                                     // Q, O, m, l are re-initialised by the next tile
    }
  }
}
