// kernels/common/mbarrier.cuh — shared-memory mbarriers for the Hopper kernel family (kernels/hopper/).
//
// An mbarrier is a 64-bit word in shared memory that counts arrivals (and, on Hopper, transaction bytes) for one
// *phase*; when the expected arrivals have arrived and the byte count is back to zero, the phase completes and the
// next one begins. Waiters name the phase they want by its parity (0 or 1): `try_wait.parity(P)` is true once the
// phase of parity P has completed. A fresh barrier is in phase 0, so waiting for parity 1 returns at once — which
// is why a producer that waits on an "empty" barrier starts on parity 1 (the stage is empty before anyone used it).
//
// The pipeline every Hopper kernel here uses (the protocol flashcore/modelcheck.py checks; kernels/hopper/NOTES.md
// gives its counts per kernel):
//   full[s]  : expects 1 arrival — the producer's arrive.expect_tx(bytes of K and V) — plus those bytes, which the
//              TMA unit delivers (complete_tx). Consumers wait on it with parity (round & 1).
//   empty[s] : expects one arrival per consumer *warp* (not warpgroup: wgmma.wait_group only tells a warp that its
//              own 16 rows are done), after that warp's last wgmma on the stage has completed. The producer waits
//              on it with parity (round & 1) ^ 1 before refilling the stage.
//
// WATCHDOG builds (-DWATCHDOG) bound every wait: past `budget` clock64 cycles, or once any thread of the launch has
// given up, the waiter writes one record per warp into a global buffer (flashcore/watchdog.py's layout: an 8-int
// header, then 20 ints per (CTA, warp) slot, slot = cta * 16 + warp) and the kernel returns instead of hanging.
#pragma once

#include "common/smem.cuh"  // smem_u32: the shared-window address every barrier here is named by

namespace hopper {

__device__ __forceinline__ void mbarrier_init(unsigned bar, unsigned expected_arrivals) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(expected_arrivals) : "memory");
}
// Make the initialised barriers visible to the other threads and to the async proxy (the TMA unit) before use.
__device__ __forceinline__ void mbarrier_init_fence() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void mbarrier_arrive(unsigned bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// One arrival that also raises the phase's expected transaction bytes by `bytes` (the TMA copies pay them back).
__device__ __forceinline__ void mbarrier_arrive_expect_tx(unsigned bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
                 : "memory");
}
// true once the phase of this parity has completed (acquire: what the arrivers wrote before arriving is visible)
__device__ __forceinline__ bool mbarrier_try_wait_parity(unsigned bar, unsigned parity) {
    unsigned done;
    asm volatile(
        "{\n .reg .pred p;\n"
        " mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done) : "r"(bar), "r"(parity) : "memory");
    return done != 0;
}
__device__ __forceinline__ void mbarrier_wait_parity(unsigned bar, unsigned parity) {
    while (!mbarrier_try_wait_parity(bar, parity)) {
    }
}
__device__ __forceinline__ unsigned long long mbarrier_raw(unsigned bar) {
    unsigned long long w;
    asm volatile("ld.volatile.shared.b64 %0, [%1];\n" : "=l"(w) : "r"(bar) : "memory");
    return w;
}

// ------------------------------------------------------------------------------------------------ the watchdog
// Record codes beyond flashcore/watchdog.py's v11 ones (roles 0–2, sites 1–7); NOTES.md asks the lead to add them.
enum WatchdogRole { WD_ROLE_PRODUCER = 3, WD_ROLE_CONSUMER = 4 };
enum WatchdogSite {
    WD_SITE_FULL = 8,      // a consumer waits for a K/V stage to land (full[s])
    WD_SITE_EMPTY = 9,     // the producer waits for a K/V stage to be released (empty[s])
    WD_SITE_Q_FULL = 10,   // a consumer waits for its Q tile
    WD_SITE_Q_EMPTY = 11,  // the producer waits until every consumer is done with Q (persistent kernel)
};
constexpr int WD_HEADER_INTS = 8;
constexpr int WD_RECORD_INTS = 20;
constexpr int WD_WARPS_PER_CTA = 16;

// What a waiter says about itself when it gives up. Kernels keep one per thread and update the tile fields.
struct Watchdog {
    int* buf;           // flashcore/watchdog.py layout; buf[0] abort flag, buf[1] records, buf[2] capacity (slots)
    long long budget;   // clock64 cycles one wait may take
    int role, head, query_tile, key_tile;
};

#ifdef WATCHDOG
// Poll one phase with a budget. false = gave up: the record is written (first lane of the warp), the caller returns.
// Inlined on purpose: a real call inside a setmaxnreg region sent ptxas 13.0 into a 10-minute, 17 GB compile.
__device__ __forceinline__ bool mbarrier_wait_bounded(const Watchdog& wd, unsigned bar, unsigned parity, int site,
                                                   int stage, int round, unsigned expected_arrivals) {
    if (mbarrier_try_wait_parity(bar, parity)) return true;
    volatile int* abort_flag = wd.buf;
    const long long t0 = clock64();
    int reason;
    while (true) {
        if (mbarrier_try_wait_parity(bar, parity)) return true;
        if (*abort_flag) { reason = 2; break; }                     // another thread timed out: stop here too
        if (clock64() - t0 > wd.budget) { reason = 1; atomicExch(wd.buf, 1); break; }
        __nanosleep(256);
    }
    const long long waited = clock64() - t0;
    const int warp = threadIdx.x / 32;
    const int slot = blockIdx.x * WD_WARPS_PER_CTA + warp;
    if (slot < wd.buf[2]) {
        int* rec = wd.buf + WD_HEADER_INTS + slot * WD_RECORD_INTS;
        if (atomicCAS(rec, 0, reason) == 0) {
            const unsigned long long raw = mbarrier_raw(bar);
            rec[1] = blockIdx.x;  rec[2] = warp;       rec[3] = threadIdx.x % 32;  rec[4] = wd.role;
            rec[5] = site;        rec[6] = stage;      rec[7] = (int)parity;       rec[8] = wd.key_tile;
            rec[9] = wd.query_tile;  rec[10] = wd.head;  rec[11] = wd.key_tile;
            rec[12] = -1;         // arrivals seen: not counted separately (the raw word holds the pending count)
            rec[13] = (int)expected_arrivals;
            rec[14] = (int)(raw & 0xffffffffu);  rec[15] = (int)(raw >> 32);
            rec[16] = (int)(waited > 0x7fffffffLL ? 0x7fffffff : waited);
            rec[17] = round;  rec[18] = 0;  rec[19] = 0;
            __threadfence();
            atomicAdd(wd.buf + 1, 1);
        }
    }
    return false;
}
#endif

// The one wait every Hopper kernel calls: unbounded in a normal build, bounded (and able to fail) with -DWATCHDOG.
__device__ __forceinline__ bool mbarrier_wait(const Watchdog& wd, unsigned bar, unsigned parity, int site, int stage,
                                              int round, unsigned expected_arrivals) {
#ifdef WATCHDOG
    return mbarrier_wait_bounded(wd, bar, parity, site, stage, round, expected_arrivals);
#else
    (void)wd; (void)site; (void)stage; (void)round; (void)expected_arrivals;
    mbarrier_wait_parity(bar, parity);
    return true;
#endif
}

}  // namespace hopper
