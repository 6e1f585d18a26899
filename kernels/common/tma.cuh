// kernels/common/tma.cuh — the Tensor Memory Accelerator (TMA) for the Hopper kernel family (kernels/hopper/).
//
// A TMA copy moves one box of a tensor between global and shared memory with a single instruction from a single
// thread. The box's shape, the tensor's sizes and strides, the swizzle and the out-of-bounds behaviour live in a
// 128-byte *tensor map* that the host encodes (flashcore/tma.py, cuTensorMapEncodeTiled) and passes by value as a
// `const __grid_constant__` kernel parameter. Every map here views a [BH, S, 64] fp16 tensor as 3-D {64, S, BH}
// (innermost first) with a box {64, rows, 1} and the 128-byte swizzle, so
//   * one box row = one 128-byte row of the tile, 16-byte chunk c of row r lands at chunk c ^ (r % 8) — exactly the
//     layout wgmma's 128-byte-swizzle descriptors read (kernels/common/wgmma.cuh), provided the destination is
//     1024-byte aligned;
//   * rows at or past S (the tail of a sequence) are filled with zeros and still count towards the transaction
//     bytes, so the byte count a stage expects never depends on the shape.
// A load completes on an mbarrier (complete_tx::bytes): the issuing thread must have armed that barrier with
// mbarrier_arrive_expect_tx for the same number of bytes (kernels/common/mbarrier.cuh).
#pragma once

namespace hopper {

// The opaque CUtensorMap, without <cuda.h> (NVRTC): 128 bytes, 64-byte aligned.
struct __align__(64) TmaMap {
    unsigned long long word[16];
};

// Fetch the map into the TMA unit's descriptor cache ahead of the first copy (one thread, once per kernel).
__device__ __forceinline__ void tma_prefetch_map(const TmaMap* map) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<unsigned long long>(map)) : "memory");
}

// Copy the box at (column 0, row `row`, slice `bh`) into shared memory at `dst` (1024-byte aligned for the
// 128-byte swizzle); its bytes complete on the mbarrier at `bar`.
__device__ __forceinline__ void tma_load_rows(unsigned dst, const TmaMap* map, unsigned bar, int row, int bh) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
        " [%0], [%1, {%3, %4, %5}], [%2];\n" ::"r"(dst),
        "l"(reinterpret_cast<unsigned long long>(map)), "r"(bar), "r"(0), "r"(row), "r"(bh)
        : "memory");
}

// Writes by ordinary stores (or cp.async) that the async proxy (wgmma, TMA) reads next need this fence in each
// writing thread, before the barrier that orders them.
__device__ __forceinline__ void fence_proxy_async_smem() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

}  // namespace hopper
