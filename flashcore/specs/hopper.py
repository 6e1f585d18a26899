"""Chapter 5 — the Hopper family: wgmma, TMA, warp specialisation, overlap, a persistent scheduler (kernels/hopper/).

Every kernel here is built for ``sm_90a`` (``arch_suffix="a"``: wgmma and setmaxnreg exist only on the
arch-specific target) and takes, after the common ABI (q, k, v, o, bh, seq_q, seq_kv, softmax_scale), the three TMA
tensor maps of :func:`flashcore.tma.hopper_extra_args` — except ``hopper_01_wgmma``, which still loads with cp.async.
WATCHDOG builds append ``(int* buffer, long long budget)`` (:func:`flashcore.watchdog.extra_args`).

The launch geometry below (threads, query rows per CTA, TMA box heights) is also exported by each kernel as
``<entry>_geometry[4]``; ``tests/test_tma.py`` reads it from the nvcc cubin and holds the two equal.
"""
from dataclasses import dataclass

from flashcore.kernels import Grid, KernelSpec, LaunchShape, LaunchTensors, cdiv

CHAPTER = "05_hopper"
BLOCK_N = 128            # keys per K/V tile (every rung): the K and V boxes are 128 rows


@dataclass(frozen=True)
class HopperGeometry:
    """One kernel's launch: ``threads`` per CTA, ``block_m`` query rows per work tile, the Q box height, and
    whether the grid is persistent (one CTA per SM walks the tiles) or one CTA per tile."""

    threads: int
    block_m: int
    q_box_rows: int
    persistent: bool = False
    kv_box_rows: int = BLOCK_N

    def tiles(self, s: LaunchShape) -> int:
        return s.bh * cdiv(max(s.seq_q, 1), self.block_m)

    def grid(self, s: LaunchShape) -> Grid:
        n = self.tiles(s)
        return (max(1, min(s.num_sms, n)) if self.persistent else n, 1, 1)

    def tma_args(self, s: LaunchShape, t: LaunchTensors) -> tuple:
        from flashcore import tma

        return tma.hopper_extra_args(t.q, t.k, t.v, t.o, q_box_rows=self.q_box_rows, kv_box_rows=self.kv_box_rows)

    def watchdog_args(self, s: LaunchShape, t: LaunchTensors) -> tuple:
        """The TMA maps, then the watchdog's (buffer, budget): one record slot per warp of every CTA launched."""
        from flashcore import watchdog

        return self.tma_args(s, t) + watchdog.extra_args(s, t, ctas=self.grid(s)[0])

    def as_list(self) -> list:
        return [self.threads, self.block_m, self.q_box_rows, self.kv_box_rows]


GEOMETRY = {
    "hopper_01_wgmma": HopperGeometry(threads=128, block_m=64, q_box_rows=0, kv_box_rows=0),   # no TMA yet
    "hopper_02_tma": HopperGeometry(threads=128, block_m=64, q_box_rows=64),
    "hopper_03_warpspec": HopperGeometry(threads=512, block_m=192, q_box_rows=64),
    "hopper_04_overlap": HopperGeometry(threads=512, block_m=192, q_box_rows=64),
    "flashcore_hopper": HopperGeometry(threads=512, block_m=192, q_box_rows=64, persistent=True),
}
# flashcore_hopper's knobs (-D build modes the chapter's knob sweep measures; the library runs the default build)
KNOBS = {
    "flashcore_hopper": (),
    "flashcore_hopper@c2": (("NUM_CONSUMERS", "2"),),          # 2 consumer warpgroups, 128 rows, 240 registers each
    "flashcore_hopper@exp4": (("EXP2_FMA_EVERY", "4"),),       # a quarter of the exp2 on the FMA pipe (a cubic)
    "flashcore_hopper@s2": (("STAGES", "2"),),                 # a 2-stage K/V ring instead of 4
}
KNOB_GEOMETRY = {"flashcore_hopper@c2": HopperGeometry(threads=384, block_m=128, q_box_rows=64, persistent=True)}


def _spec(id_, source, parent, idea, predicted_us=None, watchdog=False, tags=()):
    g = GEOMETRY[id_]
    extra = None
    if g.q_box_rows:
        extra = g.watchdog_args if watchdog else g.tma_args
    return KernelSpec(
        id=id_ + ("_watchdog" if watchdog else ""), source=source, entry=id_, threads=g.threads, grid=g.grid,
        defines=(("WATCHDOG", "1"),) if watchdog else (), parent=id_ if watchdog else parent, chapter=CHAPTER,
        cross=True, predicted_us=None if watchdog else predicted_us, extra_args=extra, arch_suffix="a",
        idea=f"{id_} with every mbarrier wait bounded (it must finish with no record)" if watchdog else idea,
        tags=tuple(tags) + (("watchdog",) if watchdog else ()) + ("hopper",))


SPECS = [
    _spec("hopper_01_wgmma", "hopper/hopper_01_wgmma.cu", "v8_07_dsmem_push",
          "wgmma: S = Q·Kᵀ from shared memory (64×128×16 ×4), O += P·V with P from registers; cp.async loads",
          predicted_us=9.0),
    _spec("hopper_02_tma", "hopper/hopper_02_tma.cu", "hopper_01_wgmma",
          "TMA loads (cp.async.bulk.tensor, 128-byte swizzle) into a K/V ring guarded by mbarriers with "
          "transaction counts", predicted_us=9.0),
    _spec("hopper_03_warpspec", "hopper/hopper_03_warpspec.cu", "hopper_02_tma",
          "warp specialisation: a producer warp (setmaxnreg 24) feeds 3 consumer warpgroups (160) through a "
          "4-stage full/empty ring", predicted_us=10.0),
    _spec("hopper_04_overlap", "hopper/hopper_04_overlap.cu", "hopper_03_warpspec",
          "overlap: issue S(j) and O += P(j-1)·V(j-1) back to back, softmax under the P·V GEMM; consumer "
          "warpgroups take turns at the tensor cores", predicted_us=10.0),
    _spec("flashcore_hopper", "hopper/flashcore_hopper.cu", "hopper_04_overlap",
          "persistent: one CTA per SM walks a static list of 192-row tiles; Q gets its own full/empty pair",
          predicted_us=10.0, tags=("library",)),
]
SPECS += [_spec(i, s.source, None, "", watchdog=True) for i, s in
          ((s.id, s) for s in SPECS) if GEOMETRY[i].q_box_rows]
