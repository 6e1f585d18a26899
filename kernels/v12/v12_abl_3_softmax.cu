// v12_abl_3_softmax — ablation ladder step 3: + the softmax done by all 16 warps instead of one serial warp.
//
// What changed from its parent (v12_abl_2_vec): each warp owns 2 of the 32 rows; lanes split a row's 48 scores
//   (and its 64 accumulator values), max and sum by warp shuffles. The one-warp version has every lane walk its own
//   row serially with a row stride of 64 floats: all 32 lanes hit the same bank (32-way conflicts), 48 + 48 + 64
//   dependent smem round trips per tile on one warp while 15 warps wait at barrier 3.
// Predicted effect: the largest per-tile saving after the grid; ncu: smem bank conflicts and stall_barrier down.
#include "v12/v12_tile.cuh"

extern "C" __device__ int v12_abl_3_softmax_smem_bytes[2] = {SMEM_TOTAL, SMEM_TOTAL};   // no split-KV

extern "C" __global__ void __launch_bounds__(NTHREADS, 2)
v12_abl_3_softmax(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
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
  const int h0 = blockIdx.y, h_step = gridDim.y, qt0 = blockIdx.x, qt_step = gridDim.x;   // one tile per CTA
  for (int h = h0; h < bh; h += h_step) {
    const __half* qh = q + (size_t)h * seq_q * D;
    const __half* kh = k + (size_t)h * seq_kv * D;
    const __half* vh = v + (size_t)h * seq_kv * D;
    for (int qt = qt0; qt < n_qt; qt += qt_step) {
      const int q0 = qt * BM;
      load_tile_vec(Qs, qh, q0, BM, seq_q);
      init_tile_state(Os, ms, ls);
      for (int kt = 0; kt < n_kt; ++kt) {
        const int k0 = kt * BN;
        const int kv_valid = min(BN, seq_kv - k0);
        const __half* Kc = Ks;
        const __half* Vc = Vs;
        load_tile_vec(Ks, kh, k0, BN, seq_kv);
        load_tile_vec(Vs, vh, k0, BN, seq_kv);
        __syncthreads();                                   // 1: K, V (and Q, O, m, l at kt = 0) in smem
        qk_scores(Qs, Kc, Ss, softmax_scale, warp);
        __syncthreads();                                   // 2: scores complete
        softmax_rows_parallel(Ss, Ps, Os, ms, ls, kv_valid, warp, lane);
        __syncthreads();                                   // 3: probabilities and rescaled accumulator ready
        pv_accumulate(Ps, Vc, Os, warp);
        __syncthreads();                                   // 4: P·V done before V / O are touched again
      }
      store_output_vec(o + (size_t)h * seq_q * D, Os, ls, q0, seq_q);
      __syncthreads();                                     // Q, O, m, l are re-initialised by the next tile
    }
  }
}
