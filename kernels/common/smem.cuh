// kernels/common/smem.cuh — the one shared-memory address helper every PTX wrapper here takes.
//
// PTX instructions that name shared memory (cp.async, ldmatrix, mbarrier, mapa, st.shared::cluster) want the
// 32-bit address in the shared window, not a generic 64-bit pointer: smem_u32 converts one into the other.
#pragma once

__device__ __forceinline__ unsigned smem_u32(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// The most dynamic shared memory one CTA may have on sm_90 (227 KB). Every kernel that uses dynamic shared memory
// defines `extern "C" __device__ int <entry>_smem_bytes[2]` = {bytes without, bytes with the split-KV landing
// buffer} from its own layout and static_asserts it against this (kernels/README.md, "shared memory"). __device__,
// not __constant__: a module with a __constant__ variable costs every launch of its kernels ~0.15 µs (measured on
// an H200, flashcore at B1 H8 S512: 6.16 → 6.31 µs), a __device__ variable nothing.
constexpr int SMEM_LIMIT = 227 * 1024;
