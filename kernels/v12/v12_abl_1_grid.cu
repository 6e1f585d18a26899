// v12_abl_1_grid — ablation ladder step 1: v12 with a grid over (query tile, head) instead of persistent CTAs.
//
// What changed from its parent (v12_baseline): the launch is (ceil(S/32), B·H) CTAs and each CTA computes one
//   32-row query tile of one head; everything inside the tile (scalar loads, one softmax warp, smem accumulator,
//   4 barriers per key tile) is unchanged. At B1 H8 S512 that is 16 × 8 = 128 CTAs on 132 SMs instead of 8 busy
//   CTAs that each walk 16 query tiles in turn.
// Predicted effect: ~16× faster at the mission shape (the same per-tile latency, 16× more tiles in flight);
//   ncu: sm__cycles_active.avg and achieved occupancy up ~16×, per-CTA stall profile unchanged.
#include "v12/v12_tile.cuh"

extern "C" __device__ int v12_abl_1_grid_smem_bytes[2] = {SMEM_TOTAL, SMEM_TOTAL};   // no split-KV

extern "C" __global__ void __launch_bounds__(NTHREADS, 2)
v12_abl_1_grid(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
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
        __syncthreads();                                   // 4: P·V done before V / O are touched again
      }
      store_output_scalar(o + (size_t)h * seq_q * D, Os, ls, q0, seq_q);
      __syncthreads();                                     // Q, O, m, l are re-initialised by the next tile
    }
  }
}
