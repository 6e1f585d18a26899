// v11_sync_controls — small, known-correct producer/consumer kernels that settle what compute-sanitizer's synccheck
// says about v11_fixed. Not attention: each CTA streams the value tiles of one (batch·head) through a 2-stage ring of
// shared memory and writes, for every query row, the column sums of V (O[b,h,i,c] = Σ_j V[b,h,j,c]); the chapter
// checks that against torch. It keeps the attention signature so the same driver and sanitizer runs take it.
//
// Why these exist: synccheck reported "Barrier error detected. Missing wait." at pipeline::producer_commit() in
// v11_fixed. Either v11_fixed's synchronization is wrong, or synccheck misreads the way libcu++ commits. A reader
// should not have to take either claim on trust, so the chapter runs synccheck on a matrix of controls whose
// correctness does not depend on the question, each differing from the next in one thing:
//
//   CONTROL 1  guide      the Programming Guide's pattern: role-less cuda::make_pipeline(block, &state); every
//                         thread memcpy_async's its 16 bytes, commits, waits, reads, releases.
//   CONTROL 2  guide_idle the same, but only half the threads copy; all of them still acquire and commit — exactly
//                         what v11_fixed does with its 384 non-loading threads.
//   CONTROL 3  roles      make_pipeline(block, &state, role): warps 0–3 produce (acquire, copy, commit), warps 4–7
//                         consume (wait, read, release). Nobody is both.
//   CONTROL 4  raw_inc    no libcu++: hand-written mbarriers doing what producer_commit() compiles to —
//                         cp.async.mbarrier.arrive (pending count +1, arrives when the copies land) then a plain
//                         mbarrier.arrive, from every thread, into one phase.
//   CONTROL 5  raw_noinc  hand-written: cp.async.mbarrier.arrive.noinc is each thread's one arrival (the barrier
//                         counts 256 of them); no plain arrive.
//   CONTROL 6  raw_waitall hand-written: cp.async.wait_all, then one plain mbarrier.arrive. No asynchronous arrive.
//
// Predicted (before running): if synccheck is right about v11_fixed, controls 1–3 are clean and 2 is not; if it
// misreads the asynchronous arrive, every control that issues cp.async.mbarrier.arrive without .noinc (1, 2, 3, 4)
// is flagged and 5, 6 are clean.
#include <cuda_fp16.h>
#include <cuda/pipeline>
#include <cooperative_groups.h>

#ifndef CONTROL
#define CONTROL 1
#endif

namespace cg = cooperative_groups;

#define TILE_ROWS 32             // keys per tile
#define D 64                     // head dim
#define NTHREADS 256             // one 16-byte chunk per thread fills a 32 × 64 fp16 tile
#define STAGES 2
#define CHUNKS (TILE_ROWS * D / 8)

struct Tiles {
  __half v[STAGES][TILE_ROWS * D];
};

// Copy chunk `i` (16 bytes) of tile `t` into `dst`; keys past the end become zeros (how is up to `copy`).
template <class Copy16>
__device__ __forceinline__ void fill_chunk(__half* dst, const __half* vh, int t, int i, int seq_kv, Copy16 copy) {
  const int r = i / (D / 8), c = (i % (D / 8)) * 8;
  const int key = t * TILE_ROWS + r;
  const bool valid = key < seq_kv;
  copy(dst + r * D + c, vh + (size_t)(valid ? key : 0) * D + c, valid);
}

// The consumers' work on a landed tile: thread `col` (< 64) adds its column.
__device__ __forceinline__ void add_tile(const __half* src, int col, float& acc) {
  for (int r = 0; r < TILE_ROWS; ++r) acc += __half2float(src[r * D + col]);
}

__device__ __forceinline__ void write_rows(__half* oh, const float* colsum, int seq_q, int tid, int nthr) {
  for (int i = tid; i < seq_q * D; i += nthr) oh[i] = __float2half(colsum[i % D]);
}

__device__ __forceinline__ unsigned smem_u32(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }

extern "C" __global__ void __launch_bounds__(NTHREADS)
v11_sync_control(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                 __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale) {
  (void)q; (void)k; (void)softmax_scale;
  __shared__ __align__(128) Tiles tiles;
  __shared__ float colsum[D];
  const int h = blockIdx.x;
  if (h >= bh) return;
  const __half* vh = v + (size_t)h * seq_kv * D;
  __half* oh = o + (size_t)h * seq_q * D;
  const int tid = threadIdx.x, n_tiles = (seq_kv + TILE_ROWS - 1) / TILE_ROWS;
  float acc = 0.f;

#if CONTROL == 1 || CONTROL == 2 || CONTROL == 3
  __shared__ cuda::pipeline_shared_state<cuda::thread_scope_block, STAGES> state;
  auto block = cg::this_thread_block();
  auto async16 = [&](cuda::pipeline<cuda::thread_scope_block>& pipe) {
    return [&pipe](__half* d, const __half* s, bool valid) {   // zero store past the end (plain arrive orders it)
      if (valid) cuda::memcpy_async(d, s, cuda::aligned_size_t<16>(16), pipe);
      else *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
    };
  };
#if CONTROL == 1 || CONTROL == 2
  cuda::pipeline<cuda::thread_scope_block> pipe = cuda::make_pipeline(block, &state);
  // CONTROL 2: threads 0..127 copy two chunks each, threads 128..255 only acquire and commit
  const bool copies = (CONTROL == 1) || tid < NTHREADS / 2;
  const int per_thread = (CONTROL == 1) ? 1 : 2;
  auto produce = [&](int t) {
    pipe.producer_acquire();
    if (copies)
      for (int j = 0; j < per_thread; ++j)
        fill_chunk(tiles.v[t % STAGES], vh, t, (CONTROL == 1) ? tid : tid * 2 + j, seq_kv, async16(pipe));
    pipe.producer_commit();
  };
  for (int t = 0; t < STAGES - 1 && t < n_tiles; ++t) produce(t);          // prologue: fill all but one stage
  for (int t = 0; t < n_tiles; ++t) {
    if (t + STAGES - 1 < n_tiles) produce(t + STAGES - 1);
    pipe.consumer_wait();
    if (tid < D) add_tile(tiles.v[t % STAGES], tid, acc);
    pipe.consumer_release();
  }
  if (tid < D) colsum[tid] = acc;
#else   // CONTROL 3: producer and consumer roles
  const cuda::pipeline_role role = tid < NTHREADS / 2 ? cuda::pipeline_role::producer
                                                       : cuda::pipeline_role::consumer;
  cuda::pipeline<cuda::thread_scope_block> pipe = cuda::make_pipeline(block, &state, role);
  if (role == cuda::pipeline_role::producer) {
    for (int t = 0; t < n_tiles; ++t) {
      pipe.producer_acquire();
      for (int j = 0; j < 2; ++j) fill_chunk(tiles.v[t % STAGES], vh, t, tid * 2 + j, seq_kv, async16(pipe));
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
#endif

#else   // CONTROLS 4–6: hand-written mbarriers, full[s] counts NTHREADS arrivals, empty[s] counts NTHREADS
  __shared__ __align__(8) unsigned long long full[STAGES], empty[STAGES];
  if (tid == 0)
    for (int s = 0; s < STAGES; ++s) {
      asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(smem_u32(&full[s])), "r"(NTHREADS) : "memory");
      asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(smem_u32(&empty[s])), "r"(NTHREADS) : "memory");
    }
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  __syncthreads();
  auto wait_parity = [](unsigned long long* bar, unsigned parity) {
    unsigned done = 0;
    while (!done)
      asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                   " selp.u32 %0, 1, 0, p;\n}" : "=r"(done) : "r"(smem_u32(bar)), "r"(parity) : "memory");
  };
  auto arrive = [](unsigned long long* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(smem_u32(bar)) : "memory");
  };
  auto cp16 = [](__half* d, const __half* s, bool valid) {      // src-size 0 past the end: cp.async writes zeros
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(smem_u32(d)), "l"(s), "r"(valid ? 16 : 0)
                 : "memory");
  };
  auto produce = [&](int t) {
    const int s = t % STAGES;
    if (t >= STAGES) wait_parity(&empty[s], ((t / STAGES) - 1) & 1);      // consumers released the previous use
    fill_chunk(tiles.v[s], vh, t, tid, seq_kv, cp16);
#if CONTROL == 4
    asm volatile("cp.async.mbarrier.arrive.shared::cta.b64 [%0];" :: "r"(smem_u32(&full[s])) : "memory");
    arrive(&full[s]);
#elif CONTROL == 5
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" :: "r"(smem_u32(&full[s])) : "memory");
#else
    asm volatile("cp.async.wait_all;" ::: "memory");
    arrive(&full[s]);
#endif
  };
  for (int t = 0; t < STAGES - 1 && t < n_tiles; ++t) produce(t);
  for (int t = 0; t < n_tiles; ++t) {
    if (t + STAGES - 1 < n_tiles) produce(t + STAGES - 1);
    wait_parity(&full[t % STAGES], (t / STAGES) & 1);
    if (tid < D) add_tile(tiles.v[t % STAGES], tid, acc);
    arrive(&empty[t % STAGES]);
  }
  if (tid < D) colsum[tid] = acc;
#endif
  __syncthreads();
  write_rows(oh, colsum, seq_q, tid, NTHREADS);
}
