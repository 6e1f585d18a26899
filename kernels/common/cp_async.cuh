// kernels/common/cp_async.cuh — cp.async (Ampere+): 16-byte copies global → shared that bypass the registers.
//
// A thread issues copies, closes them into a *group* with cp_async_commit(), and later waits until at most N of its
// groups are still in flight (cp_async_wait<N>): that is how a K/V ring keeps tiles j+1 … j+N loading while tile j
// is computed. The wait is per thread: a __syncthreads() after it publishes every thread's copies to the block.
#pragma once

#include "common/smem.cuh"

// 16 bytes, source fully read (v12's prefetch; its out-of-range rows get plain zero stores instead).
__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gmem_src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(smem_dst)), "l"(gmem_src));
}
// 16 bytes of which the first `src_bytes` are read and the rest zero-filled: src_bytes = 0 writes 16 zero bytes,
// which is how every tile load here pads rows past the end of the sequence (the source address must stay valid).
__device__ __forceinline__ void cp_async16_zfill(unsigned smem_dst, const void* gmem_src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_dst), "l"(gmem_src), "r"(src_bytes));
}
// the same for a shared-memory pointer and a valid flag (false: 16 zero bytes), the WMMA kernels' form
__device__ __forceinline__ void cp_async16_zfill(void* smem_dst, const void* gmem_src, bool valid) {
    unsigned s = smem_u32(smem_dst);
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem_src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Wait until at most N of this thread's committed groups are still in flight (N = 0: all of them have landed).
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
// Wait for every copy this thread issued, committed or not (v11's synccheck control 6).
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }
