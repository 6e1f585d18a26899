// kernels/v11/v11_controls.cuh — what the synccheck controls (kernels/v11/v11_ctl_*.cu) share.
//
// The controls are small, known-correct producer/consumer kernels that settle what compute-sanitizer's synccheck
// says about v11_fixed. Not attention: each CTA streams the value tiles of one (batch·head) through a 2-stage ring of
// shared memory and writes, for every query row, the column sums of V (O[b,h,i,c] = Σ_j V[b,h,j,c]); the chapter
// checks that against torch. They keep the attention signature so the same driver and sanitizer runs take it.
//
// Why these exist: synccheck reported "Barrier error detected. Missing wait." at pipeline::producer_commit() in
// v11_fixed. Either v11_fixed's synchronization is wrong, or synccheck misreads the way libcu++ commits. A reader
// should not have to take either claim on trust, so the chapter runs synccheck on a matrix of controls whose
// correctness does not depend on the question, each differing from the next in one thing:
//
//   v11_ctl_guide      the Programming Guide's pattern: role-less cuda::make_pipeline(block, &state); every
//                         thread memcpy_async's its 16 bytes, commits, waits, reads, releases.
//   v11_ctl_guide_idle the same, but only half the threads copy; all of them still acquire and commit — exactly
//                         what v11_fixed does with its 384 non-loading threads.
//   v11_ctl_roles      make_pipeline(block, &state, role): warps 0–3 produce (acquire, copy, commit), warps 4–7
//                         consume (wait, read, release). Nobody is both.
//   v11_ctl_raw_inc    no libcu++: hand-written mbarriers doing what producer_commit() compiles to —
//                         cp.async.mbarrier.arrive (pending count +1, arrives when the copies land) then a plain
//                         mbarrier.arrive, from every thread, into one phase.
//   v11_ctl_raw_noinc  hand-written: cp.async.mbarrier.arrive.noinc is each thread's one arrival (the barrier
//                         counts 256 of them); no plain arrive.
//   v11_ctl_raw_waitall hand-written: cp.async.wait_all, then one plain mbarrier.arrive. No asynchronous arrive.
//
// Predicted (before running): if synccheck is right about v11_fixed, controls 1–3 are clean and 2 is not; if it
// misreads the asynchronous arrive, every control that issues cp.async.mbarrier.arrive without .noinc (1, 2, 3, 4)
// is flagged and 5, 6 are clean.
// One file per control; this header holds what none of them varies: the tiles, the copy of one 16-byte chunk, the
// consumers' column sums and the output rows, the hand-written ring's barriers, and the two kernels that controls 1–2
// and 4–6 are made of (guide_control, raw_ring_control): each of those control files is the one call that picks its
// variation (how many threads copy; the commit), which is the one thing it differs in.
#pragma once

#include <cuda_fp16.h>
#include <cuda/pipeline>
#include <cooperative_groups.h>

#include "common/cp_async.cuh"
#include "common/mbarrier_sm80.cuh"
#include "common/smem.cuh"

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

// controls 1–3: a chunk through the libcu++ pipeline (memcpy_async), a zero store past the end (a plain arrive
// orders it)
__device__ __forceinline__ auto pipeline_copy16(cuda::pipeline<cuda::thread_scope_block>& pipe) {
  return [&pipe](__half* d, const __half* s, bool valid) {
    if (valid) cuda::memcpy_async(d, s, cuda::aligned_size_t<16>(16), pipe);
    else *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
  };
}

// controls 4–6: a chunk by cp.async, src-size 0 past the end (cp.async writes the zeros)
__device__ __forceinline__ void raw_copy16(__half* d, const __half* s, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(smem_u32(d)), "l"(s), "r"(valid ? 16 : 0)
               : "memory");
}
// controls 4–6: wait (unbounded) for the phase of this parity of a hand-written barrier
__device__ __forceinline__ void wait_parity(unsigned long long* bar, unsigned parity) {
  unsigned done = 0;
  while (!done)
    asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                 " selp.u32 %0, 1, 0, p;\n}" : "=r"(done) : "r"(smem_u32(bar)), "r"(parity) : "memory");
}
// controls 4–6: full[s] and empty[s] each count all NTHREADS threads' arrivals
__device__ __forceinline__ void raw_ring_init(unsigned long long* full, unsigned long long* empty) {
  if (threadIdx.x == 0)
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(smem_u32(&full[s]), NTHREADS);
      mbar_init(smem_u32(&empty[s]), NTHREADS);
    }
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  __syncthreads();
}

// Every control's first and last lines: head blockIdx.x's V tiles and output rows, the shared tiles, the column sum
// (a macro, so that each control's locals are its kernel's own, as they were written).
#define V11_CONTROL_PROLOGUE()                                                                                    \
  __shared__ __align__(128) Tiles tiles;                                                                        \
  __shared__ float colsum[D];                                                                                   \
  const int h = blockIdx.x;                                                                                     \
  if (h >= bh) return;                                                                                          \
  const __half* vh = v + (size_t)h * seq_kv * D;                                                                \
  __half* oh = o + (size_t)h * seq_q * D;                                                                       \
  const int tid = threadIdx.x, n_tiles = (seq_kv + TILE_ROWS - 1) / TILE_ROWS;                                  \
  float acc = 0.f;
#define V11_CONTROL_EPILOGUE()                                                                                    \
  __syncthreads();                                                                                              \
  write_rows(oh, colsum, seq_q, tid, NTHREADS);

// The kernel of controls 1 and 2: the Programming Guide's role-less pipeline. Every thread acquires and commits each
// tile; COPYING threads (the first ones) copy PER_THREAD chunks each (1: every thread its own; 2: half of them two);
// every thread waits, the first 64 add their column, every thread releases.
template <int COPYING, int PER_THREAD>
__device__ __forceinline__ void guide_control(const __half* v, __half* o, int bh, int seq_q, int seq_kv) {
  V11_CONTROL_PROLOGUE()
  __shared__ cuda::pipeline_shared_state<cuda::thread_scope_block, STAGES> state;
  auto block = cg::this_thread_block();
  cuda::pipeline<cuda::thread_scope_block> pipe = cuda::make_pipeline(block, &state);
  const bool copies = COPYING == NTHREADS || tid < COPYING;
  const int per_thread = PER_THREAD;
  auto produce = [&](int t) {
    pipe.producer_acquire();
    if (copies)
      for (int j = 0; j < per_thread; ++j)
        fill_chunk(tiles.v[t % STAGES], vh, t, PER_THREAD == 1 ? tid : tid * PER_THREAD + j, seq_kv,
                   pipeline_copy16(pipe));
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
  V11_CONTROL_EPILOGUE()
}

// The kernel of controls 4–6, but for the commit: every CTA streams the V tiles of head blockIdx.x through the ring on
// hand-written mbarriers (full[s] and empty[s] count all 256 threads); every thread copies its 16-byte chunk of tile t
// by cp.async and then commits it with `commit(full)` — full: the shared-window address of full[t % STAGES], and the
// one thing the three controls differ in; the first 64 threads add their column of each landed tile.
template <class Commit>
__device__ __forceinline__ void raw_ring_control(const __half* v, __half* o, int bh, int seq_q, int seq_kv,
                                                 Commit commit) {
  V11_CONTROL_PROLOGUE()
  __shared__ __align__(8) unsigned long long full[STAGES], empty[STAGES];
  raw_ring_init(full, empty);
  auto produce = [&](int t) {
    const int s = t % STAGES;
    if (t >= STAGES) wait_parity(&empty[s], ((t / STAGES) - 1) & 1);   // consumers released it
    fill_chunk(tiles.v[s], vh, t, tid, seq_kv, raw_copy16);
    commit(smem_u32(&full[s]));
  };
  for (int t = 0; t < STAGES - 1 && t < n_tiles; ++t) produce(t);
  for (int t = 0; t < n_tiles; ++t) {
    if (t + STAGES - 1 < n_tiles) produce(t + STAGES - 1);
    wait_parity(&full[t % STAGES], (t / STAGES) & 1);
    if (tid < D) add_tile(tiles.v[t % STAGES], tid, acc);
    mbar_arrive(smem_u32(&empty[t % STAGES]));
  }
  if (tid < D) colsum[tid] = acc;
  V11_CONTROL_EPILOGUE()
}
