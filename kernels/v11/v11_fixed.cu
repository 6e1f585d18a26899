// v11_fixed — v11_pipeline with the smallest fix of its deadlock: every thread of the block takes part in the
// pipeline's producer side (producer_acquire / producer_commit); only the 4 load warps issue the copies.
//
// The cause (found by the GPU watchdog and proved by flashcore/modelcheck.py, see the chapter): the role-less
//   `cuda::make_pipeline(block, &state)` initialises each stage's "produced" barrier with group.size() = 512 expected
//   arrivals (every thread is a producer AND a consumer), but v11 lets only the 128 load-warp threads call
//   producer_commit(). Each phase of "produced" therefore collects 128 of 512 arrivals and never completes, and
//   consumer_wait() — called by all 16 warps — waits on it forever: the whole block stops at the first wait.
// What changed from its parent (v11_pipeline): the producer_acquire()/producer_commit() pair moved out of the
//   load-warp branch (the V11_FIXED switch below; the body is byte-identical to v11_pipeline.cu, so a diff shows
//   the one idea). 384 threads now commit without copying: an arrival with nothing in flight. Alternatives that
//   also work (said so in the chapter): `make_pipeline(block, &state, role)` with producer = the load warps —
//   which then also needs the load warps to stop calling consumer_release(), else "consumed" over-arrives.
// Predicted effect: it finishes, with v12's numerics; at B1 H8 S512 only 8 of 132 CTAs have work and one softmax
//   warp still serialises every tile, so the double buffer hides little: about v12 with vector loads (~hundreds of
//   µs on H100), far from cuDNN. The ncu metric to watch: stall "barrier" and "long scoreboard" per issue.
// Like v11_pipeline it takes the WATCHDOG build option (v11_fixed_watchdog): it must then finish with no record.
// compute-sanitizer: racecheck is clean; synccheck reports "Missing wait" at pipeline::producer_commit() →
//   barrier::arrive(). It reports the Programming Guide's own cuda::pipeline pattern the same way: the chapter's
//   control matrix (kernels/v11_sync_controls.cu) ties the report to libcu++'s commit (cp.async.mbarrier.arrive,
//   then mbarrier.arrive), and kernels/v11_fixed_mbarrier.cu — this protocol with one .noinc arrival per commit —
//   is the synccheck-clean build.
#define V11_FIXED 1
#define V11_ENTRY v11_fixed
// ---- v11 body: identical in every kernels/v11_*.cu below this line (scripts/gen_variants.py; tests check) ----
#include <cuda_fp16.h>
#include <mma.h>
#include <cuda/pipeline>
#include <cooperative_groups.h>

#ifndef V11_ENTRY
#define V11_ENTRY v11_pipeline
#endif
#ifndef V11_FIXED              // 0: as designed (this file). The fixes, one file each, same body:
#define V11_FIXED 0            //   1 v11_fixed.cu: every thread acquires+commits on the role-less pipeline
#endif                         //   2 v11_fixed_roles.cu: make_pipeline(..., role), producers = the load warps
                               //   3 v11_fixed_mbarrier.cu: 2's protocol on hand-written mbarriers (no libcu++)
#ifndef V11_DRAIN              // 1: a diagnostic build (chapter's synccheck probe): before exiting, every thread waits
#define V11_DRAIN 0            //    for the last 'consumed' phase of each stage it released into
#endif

using namespace nvcuda;
namespace cg = cooperative_groups;

#define BM 32                    // query rows per tile
#define BN 48                    // keys per tile
#define D 64                     // head dim
#define LDH (D + 8)              // Q/K/V smem row stride (halves)
#define LDS (BN + 16)            // score/prob smem row stride (elements)
#define LDO D                    // accumulator row stride (floats)
#define NTHREADS 512
#define NWARPS 16
#define LOAD_WARP0 11            // warps 11..14 are the load warps
#define N_LOAD_WARPS 4
#define LOAD_THREADS (N_LOAD_WARPS * 32)
#define SOFTMAX_WARP 15
#define STAGES 2
#define NEG_BIG (-1e30f)

#define OFF_Q 0
#define OFF_K (OFF_Q + BM * LDH * 2)
#define OFF_V (OFF_K + STAGES * BN * LDH * 2)
#define OFF_S (OFF_V + STAGES * BN * LDH * 2)
#define OFF_P (OFF_S + BM * LDS * 4)
#define OFF_O (OFF_P + BM * LDS * 2)
#define OFF_M (OFF_O + BM * LDO * 4)
#define OFF_L (OFF_M + BM * 4)
#define SMEM_TOTAL (OFF_L + BM * 4)

enum Role { ROLE_COMPUTE = 0, ROLE_LOAD = 1, ROLE_SOFTMAX = 2 };
enum Site { SITE_PRODUCER_ACQUIRE = 1, SITE_CONSUMER_WAIT = 2, SITE_BAR_Q = 3, SITE_BAR_QK = 4,
            SITE_BAR_SOFTMAX = 5, SITE_BAR_RELEASE = 6, SITE_BAR_STORE = 7 };

__device__ __forceinline__ int role_of(int warp) {
  return warp == SOFTMAX_WARP ? ROLE_SOFTMAX : (warp >= LOAD_WARP0 && warp < LOAD_WARP0 + N_LOAD_WARPS)
                                                   ? ROLE_LOAD : ROLE_COMPUTE;
}

// ------------------------------------------------------------------------------------------- the math (v12's)
__device__ __forceinline__ void load_q_tile(__half* Qs, const __half* src, int q0, int seq) {
  for (int i = threadIdx.x; i < BM * D; i += NTHREADS) {     // scalar copies by every thread, as in v12
    int r = i / D, c = i % D;
    Qs[r * LDH + c] = (q0 + r < seq) ? src[(size_t)(q0 + r) * D + c] : __float2half(0.f);
  }
}

// one 16-byte chunk of a K/V row into a stage: cuda::memcpy_async through the pipeline, or a zero store past the end
__device__ __forceinline__ void copy16(__half* dst, const __half* src, bool valid,
                                       cuda::pipeline<cuda::thread_scope_block>& pipe) {
  if (valid) cuda::memcpy_async(dst, src, cuda::aligned_size_t<16>(16), pipe);
  else *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
}

// the load warps' part of a K/V tile; rows ≥ seq become zeros
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

__device__ __forceinline__ void qk_scores(const __half* Qs, const __half* Ks, float* Ss, float scale, int warp) {
  if (warp >= 6) return;                                      // warps 0–5: 2×3 WMMA tiles
  const int rt = warp / 3, ct = warp % 3;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.f);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
    wmma::load_matrix_sync(a, Qs + rt * 16 * LDH + kk * 16, LDH);
    wmma::load_matrix_sync(b, Ks + ct * 16 * LDH + kk * 16, LDH);
    wmma::mma_sync(acc, a, b, acc);
  }
#pragma unroll
  for (int i = 0; i < acc.num_elements; ++i) acc.x[i] *= scale;
  wmma::store_matrix_sync(Ss + rt * 16 * LDS + ct * 16, acc, LDS, wmma::mem_row_major);
}

__device__ __forceinline__ void online_softmax_update(const float* Ss, __half* Ps, float* Os, float* ms, float* ls,
                                                      int kv_valid, int warp, int lane) {
  if (warp != SOFTMAX_WARP) return;                           // the one softmax warp: lane = row
  const int r = lane;
  const float* srow = Ss + r * LDS;
  const float m_old = ms[r];
  float mx = m_old;
  for (int c = 0; c < kv_valid; ++c) mx = fmaxf(mx, srow[c]);
  float sum = 0.f;
  for (int c = 0; c < BN; ++c) {
    const float p = (c < kv_valid) ? __expf(srow[c] - mx) : 0.f;
    Ps[r * LDS + c] = __float2half(p);
    sum += p;
  }
  const float alpha = __expf(m_old - mx);
  ls[r] = ls[r] * alpha + sum;
  ms[r] = mx;
  for (int c = 0; c < D; ++c) Os[r * LDO + c] *= alpha;
}

__device__ __forceinline__ void pv_accumulate(const __half* Ps, const __half* Vs, float* Os, int warp) {
  if (warp >= 8) return;                                      // warps 0–7: 2×4 WMMA tiles
  const int rt = warp / 4, ct = warp % 4;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::load_matrix_sync(acc, Os + rt * 16 * LDO + ct * 16, LDO, wmma::mem_row_major);
#pragma unroll
  for (int kk = 0; kk < BN / 16; ++kk) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b;
    wmma::load_matrix_sync(a, Ps + rt * 16 * LDS + kk * 16, LDS);
    wmma::load_matrix_sync(b, Vs + kk * 16 * LDH + ct * 16, LDH);
    wmma::mma_sync(acc, a, b, acc);
  }
  wmma::store_matrix_sync(Os + rt * 16 * LDO + ct * 16, acc, LDO, wmma::mem_row_major);
}

__device__ __forceinline__ void store_output(__half* o, const float* Os, const float* ls, int q0, int seq_q) {
  for (int i = threadIdx.x; i < BM * D; i += NTHREADS) {
    int r = i / D, c = i % D;
    if (q0 + r < seq_q) o[(size_t)(q0 + r) * D + c] = __float2half(Os[r * LDO + c] / ls[r]);
  }
}

// ------------------------------------------------------------------------------------------- mbarrier helpers
typedef cuda::barrier<cuda::thread_scope_block> block_barrier_t;
typedef cuda::pipeline_shared_state<cuda::thread_scope_block, STAGES> pipe_state_t;
static_assert(sizeof(block_barrier_t) == 8, "libcu++ block barrier is expected to be one 8-byte mbarrier");
static_assert(sizeof(pipe_state_t) >= STAGES * 2 * sizeof(block_barrier_t) + 4,
              "pipeline_shared_state layout: stages[{produced, consumed}] then the refcount");

__device__ __forceinline__ unsigned smem_addr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ bool mbar_test_parity(unsigned addr, unsigned parity) {
  unsigned ok;
  asm volatile("{\n .reg .pred p;\n mbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n"
               " selp.u32 %0, 1, 0, p;\n}" : "=r"(ok) : "r"(addr), "r"(parity) : "memory");
  return ok != 0;
}
__device__ __forceinline__ void mbar_init(unsigned addr, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(addr), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(unsigned addr) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(addr) : "memory");
}
__device__ __forceinline__ unsigned long long mbar_raw(unsigned addr) {
  unsigned long long w;
  asm volatile("ld.volatile.shared.b64 %0, [%1];" : "=l"(w) : "r"(addr) : "memory");
  return w;
}

#if V11_FIXED == 3
// v11_fixed_mbarrier's pipeline: the four calls of cuda::pipeline over hand-written mbarriers, laid out like
// pipeline_shared_state (stage s = {produced, consumed}) and counted like make_pipeline(..., role): "produced"
// expects the 128 load threads, "consumed" the 384 others. The one difference from libcu++: a producer's arrival
// IS its cp.async.mbarrier.arrive.noinc (it lands when that thread's copies have landed), where libcu++ issues
// cp.async.mbarrier.arrive (pending count +1, then an asynchronous arrival) followed by a plain arrive. Rows past
// the end are zero-filled by cp.async itself (src-size 0), so every write to a stage is tracked by the barrier.
// Its waits are bounded in every build, not only with WATCHDOG: past 2^32 cycles (≈ 2 s) a waiting thread prints
// where it is and traps, so a protocol bug becomes a launch error, never a hung GPU.
struct RawPipeState { unsigned long long bar[STAGES][2]; };
__device__ __noinline__ void raw_wait_slow(unsigned addr, unsigned parity, const char* what, int stage) {
  const long long t0 = clock64();
  while (!mbar_test_parity(addr, parity)) {
    if (clock64() - t0 > (1ll << 32)) {
      printf("v11_fixed_mbarrier: CTA %d warp %d gave up in %s, stage %d, parity %u\n", (int)blockIdx.x,
             (int)(threadIdx.x / 32), what, stage, parity);
      __trap();
    }
  }
}
struct RawPipe {
  RawPipeState* st;
  int head, tail;
  unsigned cpar, ppar;                                       // start like libcu++'s: consumed 1, produced 0
  __device__ unsigned addr(int stage, int which) const { return smem_addr(&st->bar[stage][which]); }
  __device__ void producer_acquire() {
    if (!mbar_test_parity(addr(head, 1), cpar)) raw_wait_slow(addr(head, 1), cpar, "producer_acquire", head);
  }
  __device__ void producer_commit() {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" :: "r"(addr(head, 0)) : "memory");
    if (++head == STAGES) { head = 0; cpar ^= 1u; }
  }
  __device__ void consumer_wait() {
    if (!mbar_test_parity(addr(tail, 0), ppar)) raw_wait_slow(addr(tail, 0), ppar, "consumer_wait", tail);
  }
  __device__ void consumer_release() {
    mbar_arrive(addr(tail, 1));
    if (++tail == STAGES) { tail = 0; ppar ^= 1u; }
  }
};
__device__ __forceinline__ void copy16(__half* dst, const __half* src, bool valid, RawPipe&) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
               :: "r"(smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
#endif

// ------------------------------------------------------------------------------------------- the watchdog
#ifdef WATCHDOG
#define WD_HEADER 8              // ints: [0] abort flag, [1] records written, [2] capacity, [3] record ints
#define WD_REC 20                // ints per record (one per warp: slot = cta * 16 + warp)

struct Watchdog {
  int* buf;
  long long budget;
  int role, warp, lane, head_idx, qtile, ktile, iter;
};

// poll one mbarrier phase with a budget; false = gave up (the record is written, the caller returns)
__device__ __noinline__ bool wd_wait(const Watchdog& w, unsigned addr, unsigned parity, int site, int stage,
                                     int phase, const unsigned* arrivals, unsigned expected) {
  if (mbar_test_parity(addr, parity)) return true;
  volatile int* abort_flag = w.buf;
  const long long t0 = clock64();
  int reason;
  while (true) {
    if (mbar_test_parity(addr, parity)) return true;
    if (*abort_flag) { reason = 2; break; }                  // someone else timed out: give up, say where we are
    if (clock64() - t0 > w.budget) { reason = 1; atomicExch(w.buf, 1); break; }
    __nanosleep(128);
  }
  const long long waited = clock64() - t0;
  int* rec = w.buf + WD_HEADER + (blockIdx.x * NWARPS + w.warp) * WD_REC;
  if (atomicCAS(rec, 0, reason) == 0) {                      // the first lane of the warp to give up writes
    const unsigned long long raw = mbar_raw(addr);
    rec[1] = blockIdx.x;  rec[2] = w.warp;  rec[3] = w.lane;  rec[4] = w.role;  rec[5] = site;
    rec[6] = stage;       rec[7] = (int)parity;  rec[8] = w.ktile;  rec[9] = w.qtile;  rec[10] = w.head_idx;
    rec[11] = w.iter;     rec[12] = (int)*(volatile const unsigned*)arrivals;  rec[13] = (int)expected;
    rec[14] = (int)(raw & 0xffffffffu);  rec[15] = (int)(raw >> 32);
    rec[16] = (int)(waited > 0x7fffffffLL ? 0x7fffffff : waited);  rec[17] = phase;  rec[18] = 0;  rec[19] = 0;
    __threadfence();
    atomicAdd(w.buf + 1, 1);
  }
  return false;
}
#define WD_ONLY(x) x
#else
#define WD_ONLY(x)
#endif

// ------------------------------------------------------------------------------------------- the kernel
extern "C" __global__ void __launch_bounds__(NTHREADS, 1)
V11_ENTRY(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
          __half* __restrict__ o, int bh, int seq_q, int seq_kv, float softmax_scale
#ifdef WATCHDOG
          , int* __restrict__ wd_buf, long long wd_budget
#endif
          ) {
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
  const int role = role_of(warp);
  const int n_qt = (seq_q + BM - 1) / BM, n_kt = (seq_kv + BN - 1) / BN;

  // nvcc warns "dynamic initialization is not supported for a __shared__ variable" here, as the original did:
  // the constructor does not run; make_pipeline initialises the barriers instead.
#if V11_FIXED == 3
  __shared__ RawPipeState pipe_state;
#else
  __shared__ cuda::pipeline_shared_state<cuda::thread_scope_block, STAGES> pipe_state;
#endif
#ifdef WATCHDOG
  __shared__ __align__(8) unsigned long long wd_block_bar;   // the bounded stand-in for __syncthreads
  __shared__ unsigned wd_arrivals[STAGES][2];               // mirror: arrivals on [stage][produced, consumed]
  __shared__ unsigned wd_block_arrivals;
  if (threadIdx.x == 0) {
    mbar_init(smem_addr(&wd_block_bar), NTHREADS);
    for (int s = 0; s < STAGES; ++s) wd_arrivals[s][0] = wd_arrivals[s][1] = 0;
    wd_block_arrivals = 0;
  }
  // (make_pipeline's own group sync below publishes these)
#endif
  auto block = cg::this_thread_block();
#if V11_FIXED == 3
  if (threadIdx.x == 0)
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(smem_addr(&pipe_state.bar[s][0]), LOAD_THREADS);               // produced: the load threads
      mbar_init(smem_addr(&pipe_state.bar[s][1]), NTHREADS - LOAD_THREADS);    // consumed: everyone else
    }
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  block.sync();
  RawPipe pipe{&pipe_state, 0, 0, 1u, 0u};
#elif V11_FIXED == 2
  const cuda::pipeline_role prole = role == ROLE_LOAD ? cuda::pipeline_role::producer : cuda::pipeline_role::consumer;
  cuda::pipeline<cuda::thread_scope_block> pipe = cuda::make_pipeline(block, &pipe_state, prole);
#else
  cuda::pipeline<cuda::thread_scope_block> pipe = cuda::make_pipeline(block, &pipe_state);   // no role: v11's call
#endif
  // Who calls consumer_wait/release: everyone on the role-less pipeline; with roles, producers never consume.
  const bool consumes = V11_FIXED < 2 || role != ROLE_LOAD;

#ifdef WATCHDOG
  auto bar_addr = [&](int stage, int which) {                 // which: 0 = produced, 1 = consumed
#if V11_FIXED == 3
    return smem_addr(&pipe_state.bar[stage][which]);
#else
    const block_barrier_t* wd_stage_bars = reinterpret_cast<const block_barrier_t*>(&pipe_state);
    return smem_addr(cuda::device::barrier_native_handle(
        const_cast<block_barrier_t&>(wd_stage_bars[2 * stage + which])));
#endif
  };
  // what make_pipeline gave the barriers: role-less, group.size() for both; with roles, producers / consumers
  const unsigned wd_expected_produced = V11_FIXED < 2 ? (unsigned)block.size() : LOAD_THREADS;
  const unsigned wd_expected_consumed = V11_FIXED < 2 ? (unsigned)block.size() : NTHREADS - LOAD_THREADS;
  Watchdog w{wd_buf, wd_budget, role, warp, lane, 0, 0, 0, 0};
  int m_head = 0, m_tail = 0;                                 // mirror of the pipeline's head/tail/parities
  unsigned m_cons_par = 1, m_prod_par = 0, m_block_par = 0;
  int n_acq[STAGES] = {0, 0}, n_wait[STAGES] = {0, 0}, n_block = 0;
#define PRODUCER_ACQUIRE()                                                                                          \
  do {                                                                                                             \
    if (!wd_wait(w, bar_addr(m_head, 1), m_cons_par, SITE_PRODUCER_ACQUIRE, m_head, n_acq[m_head],                \
                 &wd_arrivals[m_head][1], wd_expected_consumed)) return;                                                    \
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
                 &wd_arrivals[m_tail][0], wd_expected_produced)) return;                                                    \
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
    mbar_arrive(smem_addr(&wd_block_bar));                                                                         \
    atomicAdd(&wd_block_arrivals, 1u);                                                                             \
    if (!wd_wait(w, smem_addr(&wd_block_bar), m_block_par, site, -1, n_block, &wd_block_arrivals, NTHREADS))      \
      return;                                                                                                      \
    m_block_par ^= 1u; ++n_block;                                                                                  \
  } while (0)
#else
#define PRODUCER_ACQUIRE() pipe.producer_acquire()
#define PRODUCER_COMMIT() pipe.producer_commit()
#define CONSUMER_WAIT() pipe.consumer_wait()
#define CONSUMER_RELEASE() pipe.consumer_release()
#define BLOCK_SYNC(site) __syncthreads()
#endif

  // The helper that loads one K/V tile into a stage. As designed, only the load warps take part in the pipeline's
  // producer side. (V11_FIXED == 1: every thread acquires and commits — the pipeline was made for all of them — and
  // only the load warps issue copies. 2 and 3 keep the design's macro: the pipeline's counts were changed instead.)
#if V11_FIXED == 1
#define LOAD_KV_TILE(tile)                                                                                          \
  do {                                                                                                             \
    PRODUCER_ACQUIRE();                                                                                            \
    if (role == ROLE_LOAD) {                                                                                       \
      const int st_ = n_prod & 1;   /* = the pipeline's head */                                                                                  \
      issue_kv_copies(Ks + st_ * BN * LDH, Vs + st_ * BN * LDH, kh, vh, (tile) * BN, seq_kv, pipe);                \
    }                                                                                                              \
    PRODUCER_COMMIT();                                                                                             \
    ++n_prod;                                                                                                      \
  } while (0)
#else
#define LOAD_KV_TILE(tile)                                                                                          \
  do {                                                                                                             \
    if (role == ROLE_LOAD) {                                                                                       \
      const int st_ = n_prod & 1;   /* = the pipeline's head */                                                                                  \
      PRODUCER_ACQUIRE();                                                                                          \
      issue_kv_copies(Ks + st_ * BN * LDH, Vs + st_ * BN * LDH, kh, vh, (tile) * BN, seq_kv, pipe);                \
      PRODUCER_COMMIT();                                                                                           \
      ++n_prod;                                                                                                    \
    }                                                                                                              \
  } while (0)
#endif

  // tiles produced / consumed so far by this thread: the ring slot of a tile is its count mod 2, which is exactly
  // the pipeline's head / tail (the count carries on across query tiles and heads, like the pipeline's state)
  int iter = 0, n_prod = 0, n_cons = 0;
  for (int h = blockIdx.x; h < bh; h += gridDim.x) {          // persistent: (batch·head) with stride gridDim.x
    const __half* qh = q + (size_t)h * seq_q * D;
    const __half* kh = k + (size_t)h * seq_kv * D;
    const __half* vh = v + (size_t)h * seq_kv * D;
    WD_ONLY(w.head_idx = h;)
    for (int qt = 0; qt < n_qt; ++qt) {
      const int q0 = qt * BM;
      WD_ONLY(w.qtile = qt; w.ktile = -1;)
      load_q_tile(Qs, qh, q0, seq_q);
      for (int i = threadIdx.x; i < BM * LDO; i += NTHREADS) Os[i] = 0.f;
      if (threadIdx.x < BM) { ms[threadIdx.x] = NEG_BIG; ls[threadIdx.x] = 0.f; }
      BLOCK_SYNC(SITE_BAR_Q);                                 // Q, O, m, l ready
      LOAD_KV_TILE(0);                                        // prefetch tile 0
      for (int kt = 0; kt < n_kt; ++kt, ++iter) {
        WD_ONLY(w.ktile = kt; w.iter = iter;)
        const int stage = n_cons & 1;                        // = the pipeline's tail
        if (kt + 1 < n_kt) LOAD_KV_TILE(kt + 1);              // tile kt+1 into the other stage
        if (consumes) CONSUMER_WAIT();                        // tile kt has landed
        qk_scores(Qs, Ks + stage * BN * LDH, Ss, softmax_scale, warp);
        BLOCK_SYNC(SITE_BAR_QK);
        online_softmax_update(Ss, Ps, Os, ms, ls, min(BN, seq_kv - kt * BN), warp, lane);
        BLOCK_SYNC(SITE_BAR_SOFTMAX);
        pv_accumulate(Ps, Vs + stage * BN * LDH, Os, warp);
        if (consumes) CONSUMER_RELEASE();                     // the stage may be refilled
        ++n_cons;
        BLOCK_SYNC(SITE_BAR_RELEASE);
      }
      WD_ONLY(w.ktile = n_kt;)
      store_output(o + (size_t)h * seq_q * D, Os, ls, q0, seq_q);
      BLOCK_SYNC(SITE_BAR_STORE);                             // Q, O, m, l are re-initialised by the next tile
    }
  }
#if V11_DRAIN
  {
    block_barrier_t* bars = reinterpret_cast<block_barrier_t*>(&pipe_state);
    for (int s = 0; s < STAGES; ++s) {
      const int released = (n_cons + (STAGES - 1 - s)) / STAGES;   // tiles g ≡ s (mod 2) this thread released
      if (released == 0) continue;
      const unsigned addr = smem_addr(cuda::device::barrier_native_handle(bars[2 * s + 1]));
      while (!mbar_test_parity(addr, (unsigned)((released - 1) & 1))) {}
    }
  }
#endif
}
