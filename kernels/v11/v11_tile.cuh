// kernels/v11/v11_tile.cuh — what every v11 kernel shares: v12's tiles and math, the roles of the 16 warps, the K/V
// copies of the load warps, and the sync points of the body in their plain and their WATCHDOG form.
//
// v11 computes exactly like v12 (kernels/v12/v12_tile.cuh, included here with a 2-stage K/V ring): Q·Kᵀ by warps 0–5,
// the one softmax warp (15), P·V by warps 0–7 on the smem accumulator. What v11 adds is a pipeline between the 4 load
// warps (11–14) and everyone else. The kernels differ only in how that pipeline is made and who calls which side:
//
//   v11_pipeline        role-less cuda::make_pipeline(block, &state); only the load warps acquire/commit (deadlocks)
//   v11_fixed           the same pipeline; every thread acquires and commits, the load warps copy
//   v11_fixed_roles     make_pipeline(block, &state, role): producers = the load warps, who no longer consume
//   v11_fixed_mbarrier  v11_fixed_roles's protocol on hand-written mbarriers (one .noinc arrival per commit)
//
// Sync points (macros, because in a WATCHDOG build each may `return` from the kernel): PRODUCER_ACQUIRE(),
// PRODUCER_COMMIT(), CONSUMER_WAIT(), CONSUMER_RELEASE(), BLOCK_SYNC(site), and LOAD_KV_TILE(tile) — the design's
// "load warps only" producer side (v11_fixed redefines it). They use the body's names: pipe, role, kh, vh, Ks, Vs,
// seq_kv, n_prod, and in a WATCHDOG build the state V11_WATCHDOG_SHARED() and V11_WATCHDOG_STATE(...) declare.
// Without WATCHDOG they are the plain pipeline calls and __syncthreads().
//
// WATCHDOG build (every wait bounded; see common/watchdog.cuh): `cuda::pipeline` has a bounded consumer_wait_for() but
// no bounded producer_acquire(), so the watchdog polls the very mbarrier the pipeline would wait on (stage s's
// "produced"/"consumed" barrier inside the pipeline state, located by layout, static_asserted below) with the same
// phase parity the pipeline tracks (mirrored per thread exactly as libcu++ updates head/tail/parities); once the phase
// is complete the real pipeline call runs (and returns at once). __syncthreads() becomes an mbarrier with 512
// expected arrivals and a bounded wait: a bar.sync cannot be abandoned. Extra kernel arguments (V11_WATCHDOG_PARAMS):
// `int* wd_buf, long long wd_budget`.
#pragma once

#include <cuda/pipeline>
#include <cooperative_groups.h>

#define STAGES 2                 // the K/V ring
#define KV_STAGES STAGES
#include "v12/v12_tile.cuh"       // v12's tiles, smem layout (with 2 K/V stages) and math
#include "common/mbarrier_sm80.cuh"

namespace cg = cooperative_groups;

#define NWARPS 16
#define LOAD_WARP0 11            // warps 11..14 are the load warps
#define N_LOAD_WARPS 4
#define LOAD_THREADS (N_LOAD_WARPS * 32)
#define SOFTMAX_WARP 15

#include "common/watchdog.cuh"

enum Role { ROLE_COMPUTE = 0, ROLE_LOAD = 1, ROLE_SOFTMAX = 2 };
enum Site { SITE_PRODUCER_ACQUIRE = 1, SITE_CONSUMER_WAIT = 2, SITE_BAR_Q = 3, SITE_BAR_QK = 4,
            SITE_BAR_SOFTMAX = 5, SITE_BAR_RELEASE = 6, SITE_BAR_STORE = 7 };

__device__ __forceinline__ int role_of(int warp) {
  return warp == SOFTMAX_WARP ? ROLE_SOFTMAX : (warp >= LOAD_WARP0 && warp < LOAD_WARP0 + N_LOAD_WARPS)
                                                   ? ROLE_LOAD : ROLE_COMPUTE;
}

// one 16-byte chunk of a K/V row into a stage: cuda::memcpy_async through the pipeline, or a zero store past the end
__device__ __forceinline__ void copy16(__half* dst, const __half* src, bool valid,
                                       cuda::pipeline<cuda::thread_scope_block>& pipe) {
  if (valid) cuda::memcpy_async(dst, src, cuda::aligned_size_t<16>(16), pipe);
  else *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
}

// the load warps' part of a K/V tile; rows ≥ seq become zeros (copy16 of the pipe's kind)
template <class Pipe>
__device__ __forceinline__ void issue_kv_copies(__half* Kst, __half* Vst, const __half* kh, const __half* vh,
                                                int k0, int seq, Pipe& pipe) {
  const int lt = threadIdx.x - LOAD_WARP0 * 32;              // 0..127
  for (int i = lt; i < BN * (D / 8); i += N_LOAD_WARPS * 32) {
    int r = i / (D / 8), c = (i % (D / 8)) * 8;
    const bool valid = k0 + r < seq;
    const size_t row = valid ? (size_t)(k0 + r) : 0;
    copy16(Kst + r * LDH + c, kh + row * D + c, valid, pipe);
    copy16(Vst + r * LDH + c, vh + row * D + c, valid, pipe);
  }
}

// libcu++'s pipeline state, read by layout: stage s = {produced, consumed} block barriers (one 8-byte mbarrier each)
typedef cuda::barrier<cuda::thread_scope_block> block_barrier_t;
typedef cuda::pipeline_shared_state<cuda::thread_scope_block, STAGES> pipe_state_t;
static_assert(sizeof(block_barrier_t) == 8, "libcu++ block barrier is expected to be one 8-byte mbarrier");
static_assert(sizeof(pipe_state_t) >= STAGES * 2 * sizeof(block_barrier_t) + 4,
              "pipeline_shared_state layout: stages[{produced, consumed}] then the refcount");

// the address of stage `stage`'s produced (which = 0) or consumed (1) mbarrier inside libcu++'s pipeline state
__device__ __forceinline__ unsigned libcuxx_stage_bar(pipe_state_t& pipe_state, int stage, int which) {
  const block_barrier_t* wd_stage_bars = reinterpret_cast<const block_barrier_t*>(&pipe_state);
  return smem_u32(cuda::device::barrier_native_handle(
      const_cast<block_barrier_t&>(wd_stage_bars[2 * stage + which])));
}

// ------------------------------------------------------------------------------------------- the sync points
#ifdef WATCHDOG
#define V11_WATCHDOG_PARAMS , int* __restrict__ wd_buf, long long wd_budget
// the bounded stand-in for __syncthreads and the arrival mirrors, initialised by thread 0 (the pipeline's own
// group sync right after publishes them)
#define V11_WATCHDOG_SHARED()                                                                                     \
  __shared__ __align__(8) unsigned long long wd_block_bar;                                                       \
  __shared__ unsigned wd_arrivals[STAGES][2];               /* mirror: arrivals on [stage][produced, consumed] */ \
  __shared__ unsigned wd_block_arrivals;                                                                         \
  if (threadIdx.x == 0) {                                                                                        \
    mbar_init(smem_u32(&wd_block_bar), NTHREADS);                                                                \
    for (int s = 0; s < STAGES; ++s) wd_arrivals[s][0] = wd_arrivals[s][1] = 0;                                  \
    wd_block_arrivals = 0;                                                                                       \
  }
// per thread: where the stage barriers are (STAGE_BAR(pipe_state, stage, which)), what make_pipeline gave them (role-
// less: group.size() for both; with roles: producers / consumers), this thread's record, and a mirror of the
// pipeline's head/tail/parities and of the wait counts
#define V11_WATCHDOG_STATE(STAGE_BAR, EXPECTED_PRODUCED, EXPECTED_CONSUMED)                                        \
  auto bar_addr = [&](int stage, int which) { return STAGE_BAR(pipe_state, stage, which); };                     \
  const unsigned wd_expected_produced = EXPECTED_PRODUCED;                                                       \
  const unsigned wd_expected_consumed = EXPECTED_CONSUMED;                                                       \
  Watchdog w{wd_buf, wd_budget, role, warp, lane, 0, 0, 0, 0};                                                   \
  int m_head = 0, m_tail = 0;                                                                                    \
  unsigned m_cons_par = 1, m_prod_par = 0, m_block_par = 0;                                                      \
  int n_acq[STAGES] = {0, 0}, n_wait[STAGES] = {0, 0}, n_block = 0;
#define PRODUCER_ACQUIRE()                                                                                          \
  do {                                                                                                             \
    if (!wd_wait(w, bar_addr(m_head, 1), m_cons_par, SITE_PRODUCER_ACQUIRE, m_head, n_acq[m_head],                \
                 &wd_arrivals[m_head][1], wd_expected_consumed)) return;                                           \
    ++n_acq[m_head];                                                                                               \
    pipe.producer_acquire();                                                                                       \
  } while (0)
#define PRODUCER_COMMIT()                                                                                           \
  do {                                                                                                             \
    pipe.producer_commit();                                                                                        \
    atomicAdd(&wd_arrivals[m_head][0], 1u);                                                                        \
    if (++m_head == STAGES) { m_head = 0; m_cons_par ^= 1u; }                                                      \
  } while (0)
#define CONSUMER_WAIT()                                                                                             \
  do {                                                                                                             \
    if (!wd_wait(w, bar_addr(m_tail, 0), m_prod_par, SITE_CONSUMER_WAIT, m_tail, n_wait[m_tail],                  \
                 &wd_arrivals[m_tail][0], wd_expected_produced)) return;                                           \
    ++n_wait[m_tail];                                                                                              \
    pipe.consumer_wait();                                                                                          \
  } while (0)
#define CONSUMER_RELEASE()                                                                                          \
  do {                                                                                                             \
    pipe.consumer_release();                                                                                       \
    atomicAdd(&wd_arrivals[m_tail][1], 1u);                                                                        \
    if (++m_tail == STAGES) { m_tail = 0; m_prod_par ^= 1u; }                                                      \
  } while (0)
#define BLOCK_SYNC(site)                                                                                            \
  do {                                                                                                             \
    mbar_arrive(smem_u32(&wd_block_bar));                                                                          \
    atomicAdd(&wd_block_arrivals, 1u);                                                                             \
    if (!wd_wait(w, smem_u32(&wd_block_bar), m_block_par, site, -1, n_block, &wd_block_arrivals, NTHREADS))       \
      return;                                                                                                      \
    m_block_par ^= 1u; ++n_block;                                                                                  \
  } while (0)
#else
#define V11_WATCHDOG_PARAMS
#define V11_WATCHDOG_SHARED()
#define V11_WATCHDOG_STATE(STAGE_BAR, EXPECTED_PRODUCED, EXPECTED_CONSUMED)
#define PRODUCER_ACQUIRE() pipe.producer_acquire()
#define PRODUCER_COMMIT() pipe.producer_commit()
#define CONSUMER_WAIT() pipe.consumer_wait()
#define CONSUMER_RELEASE() pipe.consumer_release()
#define BLOCK_SYNC(site) __syncthreads()
#endif

// Load one K/V tile into the next stage, as designed: only the load warps take part in the pipeline's producer side
// (acquire, copy, commit). The stage is n_prod & 1, which is exactly the pipeline's head (the count carries on across
// query tiles and heads, like the pipeline's state).
#define LOAD_KV_TILE(tile)                                                                                          \
  do {                                                                                                             \
    if (role == ROLE_LOAD) {                                                                                       \
      const int st_ = n_prod & 1;   /* = the pipeline's head */                                                   \
      PRODUCER_ACQUIRE();                                                                                          \
      issue_kv_copies(Ks + st_ * BN * LDH, Vs + st_ * BN * LDH, kh, vh, (tile) * BN, seq_kv, pipe);                \
      PRODUCER_COMMIT();                                                                                           \
      ++n_prod;                                                                                                    \
    }                                                                                                              \
  } while (0)
