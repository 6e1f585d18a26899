"""Chapter 3, the fast end of the v8 ladder: mma.sync + ldmatrix kernels (v8_05 …) and the library's `flashcore`.

Grid functions see the shape and the device's SM count (``LaunchShape``). All of these kernels take any seq_q and
seq_kv (tails masked on both) and any batch·heads.
"""
from flashcore.kernels import KernelSpec, LaunchShape, cdiv

CHAPTER = "03_v8_optimization"
BLOCK_M = 64


def _grid_flat(s: LaunchShape):
    """One CTA per (head, 64-row query tile), flattened into x (no 65535 limit on batch·heads)."""
    return (s.bh * cdiv(s.seq_q, BLOCK_M), 1, 1)


CLUSTER = 4          # CTAs per cluster in v8_06+ (split-KV partners at small shapes)
SPLIT_FILL = 4       # split the keys while the split grid is at most SPLIT_FILL × num_sms CTAs


def split_kv(s: LaunchShape, cluster: int = CLUSTER, fill: float = SPLIT_FILL, block_m: int = BLOCK_M) -> bool:
    """v8_06+: split the keys over the `cluster` CTAs of a cluster when the unsplit grid cannot fill the GPU."""
    return s.bh * cdiv(s.seq_q, block_m) * cluster <= fill * s.num_sms


def grid_cluster(cluster: int = CLUSTER, fill: float = SPLIT_FILL, block_m: int = BLOCK_M):
    """v8_06+: split → `cluster` CTAs per query tile (the kernel recognises this grid size); else one CTA per query
    tile, rounded up to whole clusters (the extra CTAs exit at once). `cluster` must match the kernel's CLUSTER."""
    def grid(s: LaunchShape):
        tiles = s.bh * cdiv(s.seq_q, block_m)
        if split_kv(s, cluster, fill, block_m):
            return (tiles * cluster, 1, 1)
        return (cdiv(tiles, cluster) * cluster, 1, 1)
    return grid


_grid_cluster = grid_cluster()


SPECS = [
    KernelSpec(
        id="v8_05_mma_registers", source="v8_05_mma_registers.cu", entry="v8_05_mma_registers", threads=128,
        grid=_grid_flat, parent="v8_04_grid_132sm", chapter=CHAPTER, cross=True, max_seq=1 << 30,
        predicted_us=7.0,
        idea="mma.sync m16n8k16 + ldmatrix: S, P and O in registers (FA2 warp layout), swizzled cp.async ring",
        tags=("mma", "ldmatrix", "cp.async", "swizzle"),
    ),
]


def smem_ring(stages: int, block_m: int = BLOCK_M):
    """Q tile (block_m × 64 fp16) + `stages` × (K tile + V tile) of 64 × 64 fp16."""
    return lambda s: block_m * 128 + stages * 2 * 64 * 128


SPECS += [
    KernelSpec(
        id="v8_06_cluster_splitkv", source="v8_06_cluster_splitkv.cu", entry="v8_06_cluster_splitkv", threads=128,
        grid=_grid_cluster, smem_bytes=smem_ring(2), parent="v8_05_mma_registers", chapter=CHAPTER, cross=True,
        predicted_us=4.5,
        idea="small problems: split the keys over a 4-CTA cluster, combine the partials through DSMEM (256 CTAs)",
        tags=("mma", "cluster", "dsmem", "split-kv"),
    ),
]


def landing_bytes(block_m: int = BLOCK_M) -> int:
    """v8_07+: fp32 partial rows [block_m][72] of the cluster + row max and row sum [block_m]."""
    return block_m * 72 * 4 + 2 * block_m * 4


def smem_ring_landing(stages: int, cluster: int = CLUSTER, fill: float = SPLIT_FILL, block_m: int = BLOCK_M):
    """v8_07+: the ring, plus the landing buffer for the cluster's partials when the keys are split."""
    ring = smem_ring(stages, block_m)
    return lambda s: ring(s) + (landing_bytes(block_m) if split_kv(s, cluster, fill, block_m) else 0)


SPECS += [
    KernelSpec(
        id="v8_07_dsmem_push", source="v8_07_dsmem_push.cu", entry="v8_07_dsmem_push", threads=128,
        grid=_grid_cluster, smem_bytes=smem_ring_landing(2), parent="v8_06_cluster_splitkv", chapter=CHAPTER,
        cross=True, predicted_us=5.5,
        idea="split-KV combine: push partials into the owner CTA (st.shared::cluster), one cluster barrier",
        tags=("mma", "cluster", "dsmem", "split-kv"),
    ),
]

SPECS += [
    KernelSpec(
        id="v8_08_kv_wait_split", source="v8_08_kv_wait_split.cu", entry="v8_08_kv_wait_split", threads=128,
        grid=_grid_cluster, smem_bytes=smem_ring_landing(2), parent="v8_07_dsmem_push", chapter=CHAPTER,
        cross=True, predicted_us=5.0,
        idea="K and V in separate cp.async groups: Q·Kᵀ and softmax overlap the V tile's arrival",
        tags=("mma", "cluster", "dsmem", "split-kv", "pipeline"),
    ),
]

BLOCK_M2 = 128   # v8_09+: 4 warps × 2 m16 tiles

SPECS += [
    KernelSpec(
        id="v8_09_two_mtiles", source="v8_09_two_mtiles.cu", entry="v8_09_two_mtiles", threads=128,
        grid=grid_cluster(block_m=BLOCK_M2), smem_bytes=smem_ring_landing(2, block_m=BLOCK_M2),
        parent="v8_07_dsmem_push", chapter=CHAPTER, cross=True, predicted_us=5.5,
        idea="two m16 tiles (32 query rows) per warp: each K/V ldmatrix feeds 4 mma; two independent chains",
        tags=("mma", "cluster", "dsmem", "split-kv", "ilp"),
    ),
]

def smem_ring_landing_mbar(stages: int, cluster: int = CLUSTER, fill: float = SPLIT_FILL, block_m: int = BLOCK_M2):
    """v8_10: v8_09's layout plus the landing buffer's 8-byte mbarrier (16 reserved) when the keys are split."""
    base = smem_ring_landing(stages, cluster, fill, block_m)
    return lambda s: base(s) + (16 if split_kv(s, cluster, fill, block_m) else 0)


SPECS += [
    KernelSpec(
        id="v8_10_mbarrier_combine", source="v8_10_mbarrier_combine.cu", entry="v8_10_mbarrier_combine",
        threads=128, grid=grid_cluster(block_m=BLOCK_M2), smem_bytes=smem_ring_landing_mbar(2),
        parent="v8_09_two_mtiles", chapter=CHAPTER, cross=True, predicted_us=4.8,
        idea="combine by st.async + mbarrier transaction count: no release fence (MEMBAR.ALL.GPU) in the cluster barrier",
        tags=("mma", "cluster", "dsmem", "split-kv", "ilp", "mbarrier"),
    ),
]


# The library's kernel: the ladder step that is fastest at the mission shape (v8_07: 64-row query tiles, split-KV
# combined by DSMEM pushes) with the cluster size and ring depth the variant sweep of scripts/v8_mma_sweep.py chose
# there (2-CTA clusters, 3-stage cp.async ring). Dispatching by shape to v8_09/v8_10 (two m-tiles per warp) was the
# candidate next step; scripts/v8_crossover.py measures it (12 shapes, H100): the two-m-tile kernels won only at the
# two largest shapes, by a few percent, and lost everywhere else, so the library keeps this one kernel.
FLASHCORE_CLUSTER = 2
FLASHCORE_STAGES = 3

SPECS += [
    KernelSpec(
        id="flashcore", source="v8_07_dsmem_push.cu", entry="v8_07_dsmem_push", threads=128,
        grid=grid_cluster(FLASHCORE_CLUSTER),
        smem_bytes=smem_ring_landing(FLASHCORE_STAGES, FLASHCORE_CLUSTER),
        defines=(("CLUSTER", str(FLASHCORE_CLUSTER)), ("STAGES", str(FLASHCORE_STAGES))),
        parent="v8_07_dsmem_push", chapter=CHAPTER, cross=True, max_seq=1 << 30, predicted_us=5.5,
        idea="v8_07 with 2-CTA clusters and a 3-stage cp.async ring (the sweep's best at the mission shape)",
        tags=("mma", "cluster", "dsmem", "split-kv", "library"),
    ),
]
