"""Chapter 1 — v12, the correct baseline, its failed shortcut, and the ablation ladder that measures where its time goes.

One file per kernel in kernels/v12/, each a body over the tile operations of kernels/v12/v12_tile.cuh, so a step's
diff against its parent swaps one call. The ladder is cumulative: v12 → 1 grid → 2 vec → 3 softmax → 4 prefetch,
each step one more fix, so the steps' time deltas add up to v12's time minus the last step's. ``v12_only_*`` apply
fixes to v12 with its persistent schedule kept: alone, and as a second ladder in the other order (softmax → vec →
grid → prefetch), to show how much a ladder's order decides the shares.
"""
from ..kernels import KernelSpec, LaunchShape, cdiv

CHAPTER = "01_v12_baseline"
BM, BN, D = 32, 48, 64       # the kernels' tile (kernels/v12/v12_tile.cuh): query rows, keys, head dim


def persistent_grid(s: LaunchShape):
    """One CTA per SM (the original: 58 on the L4); CTA i takes heads i, i + gridDim.x, ... (extra CTAs idle)."""
    return (s.num_sms, 1, 1)


def tile_grid(s: LaunchShape):
    """One CTA per (32-row query tile, head)."""
    return (cdiv(s.seq_q, BM), s.bh, 1)


def _spec(id_, grid, idea, parent, **kw):
    return KernelSpec(id=id_, source=f"v12/{id_}.cu", entry=id_, threads=512, grid=grid, parent=parent,
                      chapter=CHAPTER, cross=False, idea=idea, tags=kw.pop("tags", ("v12",)), **kw)


SPECS = [
    _spec("v12_baseline", persistent_grid, parent=None,
          idea="the original's correct baseline: 32×48 tiles, 16 warps with roles, one softmax warp, scalar loads, "
               "smem accumulator, 4 barriers per key tile, persistent CTAs over heads"),
    _spec("v12_no_4th_barrier", persistent_grid, parent="v12_baseline",
          idea="the original's shortcut: drop the 4th barrier per key tile (a race on V and the accumulator)",
          expect_failure=True, tags=("v12", "failure")),
    _spec("v12_abl_1_grid", tile_grid, parent="v12_baseline",
          idea="grid over (query tile, head) instead of persistent per-head CTAs", tags=("v12", "ladder")),
    _spec("v12_abl_2_vec", tile_grid, parent="v12_abl_1_grid",
          idea="+ 16-byte uint4 global loads and stores instead of scalar 2-byte copies", tags=("v12", "ladder")),
    _spec("v12_abl_3_softmax", tile_grid, parent="v12_abl_2_vec",
          idea="+ softmax by all 16 warps (2 rows each, shuffles) instead of one serial warp", tags=("v12", "ladder")),
    _spec("v12_abl_4_prefetch", tile_grid, parent="v12_abl_3_softmax",
          idea="+ cp.async double-buffered K/V: tile i+1 loads while tile i computes", tags=("v12", "ladder")),
    # one fix alone on top of v12 (persistent schedule kept): how order-dependent the ladder's shares are
    _spec("v12_only_vec", persistent_grid, parent="v12_baseline", idea="v12 + uint4 loads only",
          tags=("v12", "alone")),
    _spec("v12_only_softmax", persistent_grid, parent="v12_baseline", idea="v12 + all-warp softmax only",
          tags=("v12", "alone")),
    _spec("v12_only_softmax_vec", persistent_grid, parent="v12_only_softmax",
          idea="v12 + all-warp softmax + uint4 loads, persistent schedule kept", tags=("v12", "ladder_b")),
]

LADDER = ["v12_baseline", "v12_abl_1_grid", "v12_abl_2_vec", "v12_abl_3_softmax", "v12_abl_4_prefetch"]
ALONE = ["v12_only_vec", "v12_only_softmax"]
# the same four fixes in the other order: inside the CTA first, the schedule last
LADDER_B = ["v12_baseline", "v12_only_softmax", "v12_only_softmax_vec", "v12_abl_3_softmax", "v12_abl_4_prefetch"]
