// kernels/common/cluster.cuh — thread-block clusters (sm_90): rank, cluster barriers and distributed shared memory.
//
// The CTAs of a cluster run at the same time on one GPC and can read and write each other's shared memory
// (DSMEM): mapa turns a local shared address into the same offset in CTA `rank`'s shared memory, and the
// `.shared::cluster` loads and stores use it. The split-KV kernels (v8_06 …, flashcore) combine their partial
// results this way. Cluster barriers may be split: arrive early (relaxed: no ordering), wait just before the first
// remote access, so the wait costs nothing if every CTA has long arrived.
#pragma once

__device__ __forceinline__ unsigned cluster_ctarank() {
    unsigned r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
    return r;
}
// every thread of the cluster: arrive with release semantics, wait with acquire (what was written before is visible)
__device__ __forceinline__ void cluster_sync_all() {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// split arrive/wait: arrive at the start (relaxed), wait just before the first remote access, so the wait is free
__device__ __forceinline__ void cluster_arrive_relaxed() {
    asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory"); }

// ------------------------------------------------------------------------------------- distributed shared memory
// the shared::cluster address of `local_addr` (a smem_u32 address) in the shared memory of CTA `rank`
__device__ __forceinline__ unsigned dsmem_addr(unsigned local_addr, unsigned rank) {
    unsigned r;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(local_addr), "r"(rank));
    return r;
}
// remote loads (each one a DSMEM round trip: v8_06 pulls partials with them)
__device__ __forceinline__ float4 ld_dsmem_f4(unsigned addr) {
    float4 v;
    asm volatile("ld.shared::cluster.v4.f32 {%0,%1,%2,%3}, [%4];\n"
                 : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "r"(addr) : "memory");
    return v;
}
__device__ __forceinline__ float ld_dsmem_f(unsigned addr) {
    float v;
    asm volatile("ld.shared::cluster.f32 %0, [%1];\n" : "=f"(v) : "r"(addr) : "memory");
    return v;
}
// remote stores (fire-and-forget: v8_07 … push partials with them; a release barrier makes them visible)
__device__ __forceinline__ void st_dsmem_f2(unsigned addr, float x, float y) {
    asm volatile("st.shared::cluster.v2.f32 [%0], {%1, %2};\n" ::"r"(addr), "f"(x), "f"(y) : "memory");
}
__device__ __forceinline__ void st_dsmem_f(unsigned addr, float x) {
    asm volatile("st.shared::cluster.f32 [%0], %1;\n" ::"r"(addr), "f"(x) : "memory");
}

// ------------------------------------------------------------- transaction-counted pushes (v8_10_mbarrier_combine)
// Asynchronous remote stores that count their bytes down on an mbarrier in the destination CTA (complete_tx), so
// the receiver waits on its own barrier instead of a cluster-wide release fence. Both addresses are shared::cluster.
__device__ __forceinline__ void st_async_f2(unsigned addr, float x, float y, unsigned mbar) {
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.f32 [%0], {%1, %2}, [%3];\n"
                 ::"r"(addr), "f"(x), "f"(y), "r"(mbar) : "memory");
}
__device__ __forceinline__ void st_async_f(unsigned addr, float x, unsigned mbar) {
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.f32 [%0], %1, [%2];\n"
                 ::"r"(addr), "f"(x), "r"(mbar) : "memory");
}
// the receiving side: arm the landing mbarrier (one arrival, expecting `tx_bytes`), publish it to the cluster ...
__device__ __forceinline__ void landing_arm(unsigned mbar, unsigned tx_bytes) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(mbar) : "memory");
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(mbar), "r"(tx_bytes) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// ... and wait until every expected byte has landed (phase 0 complete)
__device__ __forceinline__ void landing_wait(unsigned mbar) {
    asm volatile(
        "{\n"
        ".reg .pred done;\n"
        "WAIT_%=:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], 0;\n"
        "@!done bra WAIT_%=;\n"
        "}\n" ::"r"(mbar) : "memory");
}
