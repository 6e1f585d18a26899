"""Chapter 3 — the v8 ladder: the seed (the original v8, rebuilt) and the WMMA steps v8_01 … v8_04.

Later steps (v8_05_* and on, mma.sync/ldmatrix, and ``flashcore``) live in ``flashcore/specs/v8_mma.py``; the
chapter finds every ``v8_<nn>_<idea>`` id in the registry, so they join the ladder without an edit here.
``predicted_us`` is each file header's prediction at B1 H8 S512 D64 on an H100 (cuDNN ≈ 9.5 µs there).
"""
from __future__ import annotations

from ..kernels import KernelSpec, cdiv

CHAPTER = "03_v8_optimization"
BLOCK_N, LDK = 32, 72


def _align32(x: int) -> int:
    return (x + 31) // 32 * 32


def smem_layout(block_m: int, stages: int, lds: int, ldp: int, ldo: int, stats: bool) -> int:
    """Bytes of dynamic shared memory, mirroring the OFF_* macros of the .cu files (32-byte aligned regions)."""
    off = _align32(block_m * ldo * 4)                 # output accumulator (fp32)
    off = _align32(off + block_m * lds * 4)           # scores (fp32)
    if stats:                                         # m, l, alpha (the seed … v8_02)
        for _ in range(3):
            off = _align32(off + block_m * 4)
    off = _align32(off + block_m * LDK * 2)           # Q
    off = _align32(off + stages * BLOCK_N * LDK * 2)  # K ring
    off = _align32(off + stages * BLOCK_N * LDK * 2)  # V ring
    return _align32(off + block_m * ldp * 2)          # probabilities (fp16)


def _grid(block_m: int):
    return lambda s: (cdiv(s.seq_q, block_m), s.bh, 1)


def _spec(id, source, block_m, threads, smem, parent, predicted, idea, defines=()):
    return KernelSpec(id=id, source=source, entry=id, threads=threads, grid=_grid(block_m),
                      smem_bytes=lambda s, n=smem: n, defines=tuple(defines), parent=parent, chapter=CHAPTER,
                      cross=True, predicted_us=predicted, idea=idea, tags=("wmma", "v8"))


SEED_SMEM = smem_layout(48, 2, 48, 32, 64, stats=True)
SPECS = [
    _spec("v8_seed", "v8_seed.cu", 48, 384, SEED_SMEM, None, 30.0,
          "the original v8: 48×32 tiles, 12 warps, WMMA, uint4 loads, cp.async double buffer drained by "
          "wait_prior(0), scores/probabilities/output in shared memory"),
    _spec("v8_01_vec_async", "v8_01_vec_async.cu", 48, 384, smem_layout(48, 3, 48, 32, 64, stats=True),
          "v8_seed", 24.0, "a real 3-stage cp.async pipeline: wait_prior(1), tile j+2 loads while tile j computes"),
    _spec("v8_02_swizzle", "v8_02_swizzle.cu", 48, 384, smem_layout(48, 3, 40, 40, 72, stats=True),
          "v8_01_vec_async", 20.0, "shared-memory row strides padded so WMMA loads/stores are bank-conflict free"),
    _spec("v8_03_exp2_fewer_barriers", "v8_03_exp2_fewer_barriers.cu", 48, 384,
          smem_layout(48, 3, 40, 40, 72, stats=False), "v8_02_swizzle", 15.0,
          "softmax over all warps with shuffles, exp2 with scale·log2e folded in, 3 barriers per key step (was 5)"),
    _spec("v8_04_grid_132sm", "v8_04_grid_132sm.cu", 32, 256, smem_layout(32, 3, 40, 40, 72, stats=False),
          "v8_03_exp2_fewer_barriers", 12.0,
          "grid for 132 SMs: 32-row query tiles, 8 warps → 128 CTAs at B1H8S512, __launch_bounds__(256, 4)"),
]
