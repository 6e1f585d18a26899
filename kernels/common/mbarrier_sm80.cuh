// kernels/common/mbarrier_sm80.cuh — the sm_80 subset of shared-memory mbarriers, written by hand: what the v11 family
// (kernels/v11/) and its synccheck controls use instead of — or to look inside — libcu++'s cuda::pipeline.
//
// An mbarrier counts arrivals for one phase; when the expected count has arrived the phase completes and the next
// begins. Waiters name a phase by its parity. `cp.async.mbarrier.arrive` makes an arrival that lands when this
// thread's earlier cp.async copies have landed: without .noinc it first raises the pending count by one (so it needs a
// plain arrive as well, which is what libcu++'s producer_commit() does); with .noinc it is the thread's one arrival.
// Hopper's transaction-count barriers (expect_tx, TMA) are in common/mbarrier.cuh (namespace hopper); do not include
// both in one kernel without qualifying the calls.
#pragma once

__device__ __forceinline__ void mbar_init(unsigned addr, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(addr), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(unsigned addr) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(addr) : "memory");
}
// true once the phase of this parity has completed (one test, no waiting)
__device__ __forceinline__ bool mbar_test_parity(unsigned addr, unsigned parity) {
  unsigned ok;
  asm volatile("{\n .reg .pred p;\n mbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n"
               " selp.u32 %0, 1, 0, p;\n}" : "=r"(ok) : "r"(addr), "r"(parity) : "memory");
  return ok != 0;
}
// the raw 64-bit barrier word (opaque: a plain load of it reads 0 on the H100; the watchdog records it anyway)
__device__ __forceinline__ unsigned long long mbar_raw(unsigned addr) {
  unsigned long long w;
  asm volatile("ld.volatile.shared.b64 %0, [%1];" : "=l"(w) : "r"(addr) : "memory");
  return w;
}
// an arrival that lands when this thread's cp.async copies have landed: pending count +1, then the async arrival ...
__device__ __forceinline__ void cp_async_mbar_arrive(unsigned addr) {
  asm volatile("cp.async.mbarrier.arrive.shared::cta.b64 [%0];" :: "r"(addr) : "memory");
}
// ... or, with .noinc, the thread's one arrival on the barrier
__device__ __forceinline__ void cp_async_mbar_arrive_noinc(unsigned addr) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" :: "r"(addr) : "memory");
}
