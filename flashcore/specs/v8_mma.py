"""Chapter 3, the fast end of the v8 ladder: mma.sync + ldmatrix kernels (v8_05 …) and the library's `flashcore`.

Grid functions see the shape and the device's SM count (``LaunchShape``). All of these kernels take any seq_q and
seq_kv (tails masked on both) and any batch·heads. One file per step in kernels/v8/, over the tile operations of
kernels/v8/v8_mma_tile.cuh; the library kernel is kernels/flashcore.cu.

Split-KV (v8_06 … and flashcore): :func:`split_kv` is the one place that decides whether a launch splits the keys
over the CTAs of a cluster. A :class:`SplitKV` holds a kernel's cluster size and query-tile height and gives both
the decision (the spec's ``split``: the launcher passes it to the kernel as ``int split`` and picks the kernel's
shared-memory entry by it) and the grid that goes with it (the spec's ``grid``). The kernel traps on a launch whose
grid does not match its ``split`` argument (or whose cluster size is not its CLUSTER).
"""
from dataclasses import dataclass

from flashcore.kernels import Grid, KernelSpec, LaunchShape, cdiv

CHAPTER = "03_v8_optimization"
BLOCK_M = 64         # query rows per CTA, v8_05 … v8_08 and flashcore (4 warps × one m16 tile)
BLOCK_M2 = 128       # v8_09+: 4 warps × 2 m16 tiles
CLUSTER = 4          # CTAs per cluster in v8_06 … v8_10 (the kernels' CLUSTER): split-KV partners at small shapes
SPLIT_FILL = 4       # split the keys while the split grid is at most SPLIT_FILL × num_sms CTAs


def _grid_flat(s: LaunchShape):
    """One CTA per (head, 64-row query tile), flattened into x (no 65535 limit on batch·heads)."""
    return (s.bh * cdiv(s.seq_q, BLOCK_M), 1, 1)


def split_kv(s: LaunchShape, cluster: int = CLUSTER, fill: float = SPLIT_FILL, block_m: int = BLOCK_M) -> bool:
    """Split the keys over the `cluster` CTAs of a cluster when the unsplit grid cannot fill the GPU."""
    return s.bh * cdiv(s.seq_q, block_m) * cluster <= fill * s.num_sms


@dataclass(frozen=True)
class SplitKV:
    """The split-KV launch of one cluster kernel: ``cluster`` must be the kernel's CLUSTER and ``block_m`` its BLOCK_M.

    Calling it is the decision (:func:`split_kv`); :meth:`grid` is the grid that goes with the same decision.
    """

    cluster: int = CLUSTER
    block_m: int = BLOCK_M
    fill: float = SPLIT_FILL

    def __call__(self, s: LaunchShape) -> bool:
        return split_kv(s, self.cluster, self.fill, self.block_m)

    def grid(self, s: LaunchShape) -> Grid:
        """Split: `cluster` CTAs per query tile. Unsplit: one CTA per query tile, rounded up to whole clusters (the
        extra CTAs exit at once)."""
        tiles = s.bh * cdiv(s.seq_q, self.block_m)
        if self(s):
            return (tiles * self.cluster, 1, 1)
        return (cdiv(tiles, self.cluster) * self.cluster, 1, 1)


def grid_cluster(cluster: int = CLUSTER, fill: float = SPLIT_FILL, block_m: int = BLOCK_M):
    """The grid function of :class:`SplitKV` (a spec needs the same object's decision as its ``split``)."""
    return SplitKV(cluster, block_m, fill).grid


SPLIT = SplitKV()                       # v8_06 … v8_08: 4-CTA clusters, 64-row query tiles
SPLIT_M2 = SplitKV(block_m=BLOCK_M2)    # v8_09, v8_10: 4-CTA clusters, 128-row query tiles


def _spec(id, predicted_us, idea, tags, split=None, **kw):
    return KernelSpec(id=id, source=f"v8/{id}.cu", entry=id, threads=128,
                      grid=split.grid if split is not None else _grid_flat, split=split, chapter=CHAPTER, cross=True,
                      predicted_us=predicted_us, idea=idea, tags=tags, **kw)


SPECS = [
    _spec("v8_05_mma_registers", 7.0,
          "mma.sync m16n8k16 + ldmatrix: S, P and O in registers (FA2 warp layout), swizzled cp.async ring",
          ("mma", "ldmatrix", "cp.async", "swizzle"), parent="v8_04_grid_132sm"),
    _spec("v8_06_cluster_splitkv", 4.5,
          "small problems: split the keys over a 4-CTA cluster, combine the partials through DSMEM (256 CTAs)",
          ("mma", "cluster", "dsmem", "split-kv"), SPLIT, parent="v8_05_mma_registers"),
    _spec("v8_07_dsmem_push", 5.5,
          "split-KV combine: push partials into the owner CTA (st.shared::cluster), one cluster barrier",
          ("mma", "cluster", "dsmem", "split-kv"), SPLIT, parent="v8_06_cluster_splitkv"),
    _spec("v8_08_kv_wait_split", 5.0,
          "K and V in separate cp.async groups: Q·Kᵀ and softmax overlap the V tile's arrival",
          ("mma", "cluster", "dsmem", "split-kv", "pipeline"), SPLIT, parent="v8_07_dsmem_push"),
    _spec("v8_09_two_mtiles", 5.5,
          "two m16 tiles (32 query rows) per warp: each K/V ldmatrix feeds 4 mma; two independent chains",
          ("mma", "cluster", "dsmem", "split-kv", "ilp"), SPLIT_M2, parent="v8_07_dsmem_push"),
    _spec("v8_10_mbarrier_combine", 4.8,
          "combine by st.async + mbarrier transaction count: no release fence (MEMBAR.ALL.GPU) in the cluster barrier",
          ("mma", "cluster", "dsmem", "split-kv", "ilp", "mbarrier"), SPLIT_M2, parent="v8_09_two_mtiles"),
]


# The library's kernel (kernels/flashcore.cu): the ladder step that is fastest at the mission shape (v8_07: 64-row
# query tiles, split-KV combined by DSMEM pushes) with the cluster size and ring depth the variant sweep of
# chapter 3 records (03_v8_variants) chose there (2-CTA clusters, 3-stage cp.async ring). Dispatching by shape to v8_09/v8_10 (two
# m-tiles per warp) was the candidate next step; scripts/explore/v8_crossover.py measures it (12 shapes, H100): the two-m-tile
# kernels won only at the two largest shapes, by a few percent, and lost everywhere else, so the library keeps this one
# kernel.
FLASHCORE_CLUSTER = 2        # the kernel's CLUSTER
FLASHCORE_STAGES = 3         # the kernel's STAGES (for the record: the Python side launches nothing by it)
FLASHCORE_SPLIT = SplitKV(cluster=FLASHCORE_CLUSTER)

# The library's features (kernels/flashcore.cu, top): compile-time parameters of the one source. The base build (no
# -D flag: fp16, D = 64, not causal) is the one the chapters measured; the feature builds (FC_FEATURES plus the
# dtype / head dim / causal flags: bf16, D = 128, SDPA's causal mask, grouped heads mapped in the kernel, any scale)
# compile without spills for sm_90 (tests/test_library_features.py) and passed their first GPU check, the library
# sweep's 500-case fuzz against the fp64 reference with 0 failures (H200 record
# runs/h200/20261201T041412Z-sweep: causal 212/212, bf16 231/231, D=128 230/230, GQA 56/56, MQA 100/100, negative /
# zero / tiny / large scale 64/52/52/43, S_q = 1 34/34, S_q != S_kv 149/149; tests/test_library_features.py checks
# the record says so). So the library declares them.
FLASHCORE_FEATURES = dict(dtypes=("float16", "bfloat16"), head_dims=(64, 128), causal=True, gqa=True, any_scale=True)
FEATURES_RECORD = "h200/20261201T041412Z-sweep"


def flashcore_variant(features) -> tuple:
    """The -D flags of flashcore's build for a call's features — ``dtype``, ``head_dim``, ``causal``, and whether
    the kernel itself maps grouped heads (``kernel_gqa``) or takes a special scale (``kernel_scale``): none for the
    base build; FC_FEATURES plus the dtype / head dim / causal flags for every other."""
    base = (features.dtype == "float16" and features.head_dim == 64 and not features.causal
            and not getattr(features, "kernel_gqa", False) and not getattr(features, "kernel_scale", False))
    if base:
        return ()
    defines = [("FC_FEATURES", "1")]
    if features.dtype == "bfloat16":
        defines.append(("FC_BF16", "1"))
    if features.head_dim != 64:
        defines.append(("HEAD_DIM", str(int(features.head_dim))))
    if features.causal:
        defines.append(("FC_CAUSAL", "1"))
    return tuple(defines)


def flashcore_variants() -> list:
    """flashcore's builds as (features, -D flags): the base build, then a feature build per (dtype, head dim,
    causal) of ``FLASHCORE_FEATURES`` — what the compile tests build and the GPU checks run."""
    from types import SimpleNamespace

    out = [(SimpleNamespace(dtype="float16", head_dim=64, causal=False, kernel_gqa=False, kernel_scale=False), ())]
    for dtype in FLASHCORE_FEATURES["dtypes"]:
        for head_dim in FLASHCORE_FEATURES["head_dims"]:
            for causal in (False, True):
                f = SimpleNamespace(dtype=dtype, head_dim=head_dim, causal=causal, kernel_gqa=True, kernel_scale=True)
                out.append((f, flashcore_variant(f)))
    return out

SPECS += [
    KernelSpec(
        id="flashcore", source="flashcore.cu", entry="flashcore", threads=128,
        grid=FLASHCORE_SPLIT.grid, split=FLASHCORE_SPLIT,
        parent="v8_07_dsmem_push", chapter=CHAPTER, cross=True, predicted_us=5.5,
        idea="v8_07 with 2-CTA clusters and a 3-stage cp.async ring (the sweep's best at the mission shape)",
        tags=("mma", "cluster", "dsmem", "split-kv", "library"),
        dtypes=FLASHCORE_FEATURES["dtypes"], head_dims=FLASHCORE_FEATURES["head_dims"],
        causal=FLASHCORE_FEATURES["causal"], gqa=FLASHCORE_FEATURES["gqa"], any_scale=FLASHCORE_FEATURES["any_scale"],
        variant=flashcore_variant, kv_group_arg=True,
    ),
]
