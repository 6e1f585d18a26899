"""Chapter 3 — the v8 ladder: the seed (the original v8, rebuilt) and the WMMA steps v8_01 … v8_04.

Later steps (v8_05_* and on, mma.sync/ldmatrix, and ``flashcore``) live in ``flashcore/specs/v8_mma.py``; the
chapter finds every ``v8_<nn>_<idea>`` id in the registry, so they join the ladder without an edit here.
``predicted_us`` is each file header's prediction at B1 H8 S512 D64 on an H100 (cuDNN ≈ 9.5 µs there).
One file per step in kernels/v8/, over the WMMA tile operations of kernels/v8/v8_wmma_tile.cuh.
"""
from __future__ import annotations

from ..kernels import KernelSpec, cdiv

CHAPTER = "03_v8_optimization"


def _grid(block_m: int):
    return lambda s: (cdiv(s.seq_q, block_m), s.bh, 1)


def _spec(id, block_m, threads, parent, predicted, idea):
    return KernelSpec(id=id, source=f"v8/{id}.cu", entry=id, threads=threads, grid=_grid(block_m), parent=parent,
                      chapter=CHAPTER, cross=True, predicted_us=predicted, idea=idea, tags=("wmma", "v8"))


SPECS = [
    _spec("v8_seed", 48, 384, None, 30.0,
          "the original v8: 48×32 tiles, 12 warps, WMMA, uint4 loads, cp.async double buffer drained by "
          "wait_prior(0), scores/probabilities/output in shared memory"),
    _spec("v8_01_vec_async", 48, 384, "v8_seed", 24.0,
          "a real 3-stage cp.async pipeline: wait_prior(1), tile j+2 loads while tile j computes"),
    _spec("v8_02_swizzle", 48, 384, "v8_01_vec_async", 20.0,
          "shared-memory row strides padded so WMMA loads/stores are bank-conflict free"),
    _spec("v8_03_exp2_fewer_barriers", 48, 384, "v8_02_swizzle", 15.0,
          "softmax over all warps with shuffles, exp2 with scale·log2e folded in, 3 barriers per key step (was 5)"),
    _spec("v8_04_grid_132sm", 32, 256, "v8_03_exp2_fewer_barriers", 12.0,
          "grid for 132 SMs: 32-row query tiles, 8 warps → 128 CTAs at B1H8S512, __launch_bounds__(256, 4)"),
]
