// kernels/common/wgmma.cuh — warpgroup matrix multiply-accumulate (wgmma, sm_90a) for the Hopper kernel family.
//
// A warpgroup is 4 consecutive warps starting at a warp index divisible by 4. One `wgmma.mma_async` multiplies a
// 64×16 A tile by a 16×N B tile into a 64×N fp32 accumulator spread over the warpgroup's registers: warp w holds
// rows 16w … 16w+15 in the m16n8 accumulator layout of mma.sync, repeated over N/8 column tiles —
//   d[4·n + 0], d[4·n + 1] : row 16w + lane/4,     columns 8n + 2·(lane%4) + {0, 1}
//   d[4·n + 2], d[4·n + 3] : row 16w + lane/4 + 8, the same columns.
// B always comes from shared memory through a 64-bit *matrix descriptor*; A comes from shared memory too (the "SS"
// form) or from registers (the "RS" form, in mma.sync's m16n8k16 A-fragment layout: a[0] = row lane/4, columns
// 2·(lane%4)+{0,1}; a[1] = row lane/4+8, same columns; a[2], a[3] = the same rows, columns + 8).
//
// Shared-memory layout (every tile in this family): rows of 64 fp16 = 128 bytes, 128-byte swizzle — the 16-byte
// chunk c of row r sits at chunk c ^ (r % 8) — and tiles 1024-byte aligned, which is what a TMA box with
// CU_TENSOR_MAP_SWIZZLE_128B writes (kernels/common/tma.cuh). For such a tile:
//   * K-major operand (Q as A, K as B of S = Q·Kᵀ: the 16-wide k slice runs along a row): stride byte offset
//     = 1024 (from one 8-row group to the next), leading byte offset unused; the k16 step s starts 32·s bytes in.
//   * MN-major operand (V as B of O = P·V: k runs down the rows, N = 64 along a row): "transpose" flag set, stride
//     byte offset = 1024 (from one 8-row group of k to the next), leading byte offset = distance between 64-wide
//     column blocks (unused at N = 64); the k16 step s starts 16 rows = 2048·s bytes in.
//
// Ordering rules the helpers below encode:
//   wgmma_fence()  before the first wgmma that reads registers written by ordinary instructions (accumulators, the
//                  A fragments) — once per batch;
//   wgmma_commit() closes the batch into a "wgmma-group"; wgmma_wait<N>() returns when at most N of this warp's
//                  groups are pending (per warp: a warp learns only that its own 16 rows are done).
//   fence_operands(x) is a compiler-only fence: it stops the compiler from moving reads or writes of x across the
//                  asynchronous region (otherwise ptxas may serialise the wgmmas: warnings C7515 / C7519).
#pragma once

namespace hopper {

// ------------------------------------------------------------------------------------------------ descriptors
__device__ __forceinline__ unsigned long long make_smem_desc(unsigned smem_byte_addr, unsigned leading_byte_offset,
                                                             unsigned stride_byte_offset) {
    return (unsigned long long)((smem_byte_addr & 0x3FFFFu) >> 4)               // bits  0–13: start address
           | (unsigned long long)((leading_byte_offset & 0x3FFFFu) >> 4) << 16  // bits 16–29: leading offset
           | (unsigned long long)((stride_byte_offset & 0x3FFFFu) >> 4) << 32   // bits 32–45: stride offset
           | 1ull << 62;                                                        // bits 62–63: 1 = 128-byte swizzle
}
// Q or K tile, K-major (the head dim runs along a 128-byte row). Add desc_k_major_step(s) for the k16 step s.
__device__ __forceinline__ unsigned long long desc_k_major(unsigned tile_addr) {
    return make_smem_desc(tile_addr, 16, 1024);
}
__device__ __forceinline__ constexpr unsigned long long desc_k_major_step(int k16) { return (32ull * k16) >> 4; }
// V tile as the B operand of P·V, MN-major (keys down the rows, the head dim along a row), rows = keys in the tile.
__device__ __forceinline__ unsigned long long desc_mn_major(unsigned tile_addr, int rows) {
    return make_smem_desc(tile_addr, rows * 128, 1024);
}
__device__ __forceinline__ constexpr unsigned long long desc_mn_major_step(int k16) { return (2048ull * k16) >> 4; }

// ------------------------------------------------------------------------------------------------ ordering
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
    static_assert(N >= 0 && N <= 7, "wgmma.wait_group takes 0..7");
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
template <int N>
__device__ __forceinline__ void fence_operands(float (&x)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(x[i])::"memory");
}
template <int M, int N>
__device__ __forceinline__ void fence_operands(unsigned (&x)[M][N]) {  // A fragments: [k16 step][4]
#pragma unroll
    for (int i = 0; i < M; ++i)
#pragma unroll
        for (int j = 0; j < N; ++j) asm volatile("" : "+r"(x[i][j])::"memory");
}

// ------------------------------------------------------------------------------------------------ the two MMAs
#define HOPPER_ACC4(d, i) "+f"(d[i]), "+f"(d[(i) + 1]), "+f"(d[(i) + 2]), "+f"(d[(i) + 3])
#define HOPPER_ACC16(d, i) HOPPER_ACC4(d, i), HOPPER_ACC4(d, (i) + 4), HOPPER_ACC4(d, (i) + 8), HOPPER_ACC4(d, (i) + 12)

// S(64×128) = Q(64×16) · K(128×16)ᵀ (+ S if accumulate): both operands K-major in shared memory.
__device__ __forceinline__ void wgmma_m64n128k16_ss(float (&d)[64], unsigned long long desc_a,
                                                    unsigned long long desc_b, int accumulate) {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.b32 p, %66, 0;\n"
        " wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
        "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, "
        "%43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63},"
        " %64, %65, p, 1, 1, 0, 0;\n}\n"
        : HOPPER_ACC16(d, 0), HOPPER_ACC16(d, 16), HOPPER_ACC16(d, 32), HOPPER_ACC16(d, 48)
        : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

// O(64×64) += P(64×16, registers) · V(16×64, shared memory, MN-major: transpose flag 1).
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[32], const unsigned (&a)[4],
                                                   unsigned long long desc_b) {
    asm volatile(
        "{\n"
        " wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
        "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31},"
        " {%32, %33, %34, %35}, %36, 1, 1, 1, 1;\n}\n"
        : HOPPER_ACC16(d, 0), HOPPER_ACC16(d, 16)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}
#undef HOPPER_ACC16
#undef HOPPER_ACC4

// ------------------------------------------------------------------------------------------------ warpgroup roles
// setmaxnreg: the producer warpgroup gives registers back, the consumers take them (sm_90a; needs a register cap
// at entry, i.e. __launch_bounds__(threads, 1), and each role in one branch of a single if/else).
template <int N>
__device__ __forceinline__ void warpgroup_release_registers() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void warpgroup_claim_registers() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
// Named barrier over `threads` threads (ids 1..15; 0 is __syncthreads): sync waits, arrive does not.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

}  // namespace hopper
