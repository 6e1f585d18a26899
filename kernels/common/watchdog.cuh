// kernels/common/watchdog.cuh — the v11 watchdog: waits with a budget, and a record of where a thread gave up.
//
// In a WATCHDOG build (-DWATCHDOG, a build mode of the v11 kernels, never a variant) every wait that can block polls
// its mbarrier with a budget of `budget` clock64 cycles measured from the start of that wait. On timeout the thread
// sets a global abort flag (every other waiting thread then gives up too, recording where it was) and the first lane
// of each warp writes one record into the buffer flashcore/watchdog.py allocates and decodes: an 8-int header
// ([0] abort flag, [1] records written, [2] capacity, [3] ints per record), then WD_REC ints per (CTA, warp) slot,
// slot = CTA · NWARPS + warp. The caller then returns instead of hanging. Outside a WATCHDOG build this header
// defines nothing but WD_ONLY(x), which drops x.
//
// The including kernel defines NWARPS (warps per CTA) and includes common/mbarrier_sm80.cuh first.
#pragma once

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
