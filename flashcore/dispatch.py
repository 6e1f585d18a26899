"""Which kernel runs a call: a pure function of the problem and the device — no files read, no state.

:func:`choose` looks at the problem (batch, heads, sequence lengths) and the device (compute capability, SM count)
and nothing else, so the same call always runs the same kernel, whatever is committed under ``runs/``. Its
thresholds are constants in this file; each cites the recorded measurement that put it there (the crossover
record), as FlashAttention's ``hopper/heuristics.h`` does in its comments.

Today the rule has one branch: every shape runs ``flashcore`` (the v8 chapter's library kernel). The candidate
second kernel of that family — two m16 tiles per warp (v8_09 / v8_10) — was measured against it at 12 shapes
(``scripts/explore/v8_crossover.py``, H100, an exploration that wrote no record): it won only at the two largest
shapes, by 3–4 %, and lost everywhere else, so no branch was added for it.

:func:`launch_problem` says why a kernel cannot take a shape at all (used when a caller forces ``kernel=``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from .kernels import KernelSpec, LaunchShape, is_control

LIBRARY_KERNEL = "flashcore"
MAX_GRID_X = (1 << 31) - 1
MAX_GRID_YZ = 65535
MAX_THREADS = 1024


@dataclass(frozen=True)
class Device:
    """What the rule may know about a GPU."""

    sm: int = 90             # compute capability × 10 (the H100 and H200: 90)
    num_sms: int = 132


@dataclass(frozen=True)
class Choice:
    kernel: str
    reason: str              # the rule that fired, in words


class NoKernelError(RuntimeError):
    """No FlashCore kernel can run the problem; the message says why."""


def choose(B: int, H: int, S_q: int, S_kv: int, device: Device = Device()) -> Choice:
    """The kernel for one problem on one device (pure)."""
    for name, value in dict(B=B, H=H, S_q=S_q, S_kv=S_kv).items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if device.sm < 90:
        # flashcore uses thread-block clusters and distributed shared memory (sm_90); nothing older is supported.
        raise NoKernelError(f"FlashCore's kernels need compute capability 9.0 (Hopper); this device is "
                            f"sm_{device.sm}")
    return Choice(LIBRARY_KERNEL, "every shape: the mma.sync library kernel (no measured crossover favours another)")


def launch_problem(spec: KernelSpec, bh: int, S_q: int, S_kv: int, num_sms: int = 132) -> Optional[str]:
    """Why ``spec`` cannot run this shape, or None if it can."""
    if is_control(spec):
        return "a control kernel (an experiment, not attention)"
    if spec.expect_failure:
        return "kept as a failure (expect_failure)"
    if S_q != S_kv and not spec.cross:
        return f"needs S_q == S_kv (cross=False), got S_q={S_q}, S_kv={S_kv}"
    shape = LaunchShape(bh=bh, seq_q=S_q, seq_kv=S_kv, num_sms=num_sms)
    try:
        grid = tuple(int(g) for g in spec.grid(shape))
    except Exception as exc:  # a grid function that cannot describe this shape
        return f"grid function failed: {exc}"
    if len(grid) != 3 or min(grid) < 1:
        return f"grid {grid} is empty"
    if grid[0] > MAX_GRID_X or grid[1] > MAX_GRID_YZ or grid[2] > MAX_GRID_YZ:
        return f"grid {grid} exceeds CUDA's limits ({MAX_GRID_X}, {MAX_GRID_YZ}, {MAX_GRID_YZ})"
    if spec.threads > MAX_THREADS:
        return f"{spec.threads} threads per block > {MAX_THREADS}"
    return None


def route_table(lengths: Sequence[int] = (1, 64, 100, 512, 1000, 4096, 16384), B: int = 1, H: int = 8,
                device: Device = Device(), cross: Iterable[tuple] = ((1, 512), (512, 1000))) -> list:
    """Rows (B, H, S_q, S_kv, kernel, reason) of :func:`choose` for the docs and ``python -m flashcore list``."""
    rows = []
    for S_q, S_kv in [(s, s) for s in lengths] + list(cross):
        try:
            c = choose(B, H, S_q, S_kv, device)
            rows.append(dict(B=B, H=H, S_q=S_q, S_kv=S_kv, kernel=c.kernel, reason=c.reason))
        except NoKernelError as exc:
            rows.append(dict(B=B, H=H, S_q=S_q, S_kv=S_kv, kernel=None, reason=str(exc)))
    return rows
