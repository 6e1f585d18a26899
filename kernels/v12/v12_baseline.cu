// v12_baseline — the original's "correct baseline" (Oct 2025, 1508 µs on an L4), rebuilt from its design facts.
//
// What it is: fused attention forward, O = softmax(Q·Kᵀ·scale)·V, fp16 in/out, fp32 math, D = 64, not causal.
//   * tiles: 32 query rows × 48 keys; smem rows padded (Q/K/V to 64+8 halves, scores/probs to 48+16);
//   * 512 threads = 16 warps with roles: warps 0–5 do Q·Kᵀ as a 2×3 grid of 16×16×16 WMMA tiles, warps 0–7 do P·V
//     as 2×4 tiles, warp 15 is the one softmax warp (lane = row, a serial loop over the 48 scores), the 4 "load"
//     warps (11–14) load nothing special: every thread loads, element by element (scalar 2-byte loads);
//   * scores fp32 in smem, probabilities fp16 in smem, the output accumulator fp32 in smem (P·V does a
//     load → mma → store read-modify-write of it), running max m and sum l per row in smem;
//   * four __syncthreads per key tile: load K,V | Q·Kᵀ | softmax | P·V | (4th) — the 4th protects V and the
//     accumulator from the next tile's loads and from the finalize;
//   * persistent grid: one CTA per SM, each loops over (batch·head) with stride gridDim.x and walks every query tile
//     of that head in turn. __launch_bounds__(512, 2).
// Choices where the design facts are silent (said so in the chapter): __expf for the exponentials, the row sum l
//   accumulates the fp32 probabilities (before rounding to fp16), the accumulator rows are not padded (64 floats),
//   the score tile is scaled when it leaves the WMMA fragment, masked keys get probability 0.
// Parent: none (the original's last working kernel). Any S works: the last key tile and the last query tile may be
//   partial (out-of-range K/V rows are zero-filled and masked, out-of-range query rows are never stored).
// Predicted effect on the H100 at B1 H8 S512: ~1 ms. Only 8 of 132 CTAs have work (achieved occupancy and
//   sm__cycles_active far below 100%); inside a CTA, long scoreboard/barrier stalls from the scalar loads and the
//   serial softmax warp (with a 32-way smem bank conflict: lane = row, row stride 64 floats).
//
// The tile operations (loads, Q·Kᵀ, the softmax, P·V, the store) are in kernels/v12/v12_tile.cuh, shared with every
// v12 step and with v11; this file is v12's body: the schedule, the phases of a key tile and the four barriers.
#include "v12/v12_tile.cuh"

extern "C" __device__ int v12_baseline_smem_bytes[2] = {SMEM_TOTAL, SMEM_TOTAL};   // no split-KV

extern "C" __global__ void __launch_bounds__(NTHREADS, 2)
v12_baseline(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
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
        __syncthreads();                                   // 4: P·V done before V / O are touched again
      }
      store_output_scalar(o + (size_t)h * seq_q * D, Os, ls, q0, seq_q);
      __syncthreads();                                     // Q, O, m, l are re-initialised by the next tile
    }
  }
}
