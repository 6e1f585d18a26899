// v12_abl_4_prefetch — ablation ladder step 4: + cp.async double buffer for K/V (load of tile i+1 overlaps tile i).
//
// What changed from its parent (v12_abl_3_softmax): K and V get two smem stages; tile i+1 is issued with 16-byte
//   cp.async right after barrier 1 of tile i and waited for (cp.async.wait_group 0) just before barrier 1 of tile
//   i+1, so its global-memory latency hides behind Q·Kᵀ, softmax and P·V. Still four barriers per tile, still WMMA
//   with the smem accumulator. This is the end of the ladder: what remains is the cost of the v12 design itself
//   (barrier-separated phases, WMMA through smem) plus the launch.
// Predicted effect: a further cut of the load phase; ncu: stall_long_scoreboard per issue near zero. Dynamic smem
//   grows by one K and one V stage (13.5 KiB).
#define KV_STAGES 2                    // K/V double buffer (v12_tile.cuh's default: 1)
#include "v12/v12_tile.cuh"

extern "C" __device__ int v12_abl_4_prefetch_smem_bytes[2] = {SMEM_TOTAL, SMEM_TOTAL};   // no split-KV

extern "C" __global__ void __launch_bounds__(NTHREADS, 2)
v12_abl_4_prefetch(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
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
      load_tile_async(Ks, kh, 0, BN, seq_kv);
      load_tile_async(Vs, vh, 0, BN, seq_kv);
      cp_async_commit();
      for (int kt = 0; kt < n_kt; ++kt) {
        const int k0 = kt * BN;
        const int kv_valid = min(BN, seq_kv - k0);
        const int stage = kt & 1;
        const __half* Kc = Ks + stage * BN * LDH;
        const __half* Vc = Vs + stage * BN * LDH;
        cp_async_wait<0>();
        __syncthreads();                                   // 1: tile kt landed (and Q, O, m, l at kt = 0)
        if (kt + 1 < n_kt) {                               // tile kt+1 into the other stage, read again at kt+1
          load_tile_async(Ks + (stage ^ 1) * BN * LDH, kh, k0 + BN, BN, seq_kv);
          load_tile_async(Vs + (stage ^ 1) * BN * LDH, vh, k0 + BN, BN, seq_kv);
          cp_async_commit();
        }
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
