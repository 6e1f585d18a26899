"""When is one kernel faster than another? The spread rule behind every comparison of chapter 4 and the headline.

A *measurement* is one timed row of a record: the median and the p10–p90 range of CUDA-graph replays. One record
can hold several measurements of the same kernel at the same shape — the mission-shape row and the sequence
sweep's row at S = 512, for example — and they differ by more than their own p10–p90 ranges suggest: the ranges
describe one batch of replays, not run-to-run drift. So a win must clear both:

1. **No overlap.** Every p10–p90 range of the faster kernel lies below every range of the slower one.
2. **A gap larger than the spread.** The gap — the slower kernel's fastest median minus the faster kernel's
   slowest median — is larger than the run-to-run spread: the largest difference between two measurements of the
   same kernel at the same shape (of either kernel here, or the record's own relative *noise floor* times the
   larger median, :func:`record_noise`).

Anything else is a **tie**. The ratio a page quotes is between the primary (first) measurements of the two.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

FASTER, SLOWER, TIE = "faster", "slower", "tie"


@dataclass(frozen=True)
class Verdict:
    """How kernel ``a`` compares with kernel ``b`` at one shape (``outcome`` is said of ``a``)."""

    a: str
    b: str
    outcome: str              # FASTER, SLOWER or TIE
    ratio: float              # a's time ÷ b's time, primary measurements (below 1: a takes less time)
    gap_us: float             # the conservative gap between the medians (0 where the ranges overlap)
    spread_us: float          # the run-to-run spread the gap had to beat
    overlap: bool             # some p10–p90 range of a overlaps some range of b
    measurements: Tuple[int, int]   # how many measurements of a and of b were compared

    @property
    def separated(self) -> bool:
        return self.outcome != TIE

    def reason(self) -> str:
        """Why this outcome, in words (numbers to 2 decimals of a µs)."""
        if self.overlap:
            return "their p10–p90 ranges overlap"
        if self.outcome == TIE:
            return (f"the gap between the medians ({self.gap_us:.2f} µs) is not larger than the run-to-run "
                    f"spread ({self.spread_us:.2f} µs)")
        return (f"the ranges do not overlap and the gap ({self.gap_us:.2f} µs) is larger than the run-to-run "
                f"spread ({self.spread_us:.2f} µs)")

    def __str__(self) -> str:
        word = {FASTER: "faster than", SLOWER: "slower than", TIE: "tied with"}[self.outcome]
        return textwrap.fill(f"{self.a} is {word} {self.b} ({self.ratio:.2f}× its time): {self.reason()}", 72,
                             subsequent_indent="  ")


def _bounds(row: dict) -> Tuple[float, float, float]:
    med = float(row["median_us"])
    lo = row.get("p10_us")
    hi = row.get("p90_us")
    return (med if lo is None else float(lo)), med, (med if hi is None else float(hi))


def timed(rows: Iterable[dict]) -> List[dict]:
    """The rows that carry a time (a failed or skipped contender has no median)."""
    return [r for r in rows if isinstance(r.get("median_us"), (int, float))]


def compare(a_rows: Sequence[dict], b_rows: Sequence[dict], noise: float = 0.0, a: str = "a",
            b: str = "b") -> Verdict:
    """The spread rule (module docstring) for the measurements ``a_rows`` of one kernel and ``b_rows`` of another,
    all at the same shape and from the same record; ``noise`` is the record's relative noise floor (a fraction)."""
    a_rows, b_rows = timed(a_rows), timed(b_rows)
    if not a_rows or not b_rows:
        raise ValueError(f"compare needs at least one timed measurement of each kernel ({a}: {len(a_rows)}, "
                         f"{b}: {len(b_rows)})")
    if noise < 0:
        raise ValueError(f"noise is a non-negative fraction, got {noise}")
    A = [_bounds(r) for r in a_rows]
    B = [_bounds(r) for r in b_rows]
    a_med, b_med = [m for _, m, _ in A], [m for _, m, _ in B]
    spread = max(max(a_med) - min(a_med), max(b_med) - min(b_med), noise * max(a_med + b_med))
    ratio = a_med[0] / b_med[0]
    if max(hi for _, _, hi in A) < min(lo for lo, _, _ in B):
        outcome, gap = FASTER, min(b_med) - max(a_med)
    elif max(hi for _, _, hi in B) < min(lo for lo, _, _ in A):
        outcome, gap = SLOWER, min(a_med) - max(b_med)
    else:
        return Verdict(a, b, TIE, ratio, 0.0, spread, True, (len(A), len(B)))
    if gap <= spread:
        outcome = TIE
    return Verdict(a, b, outcome, ratio, max(gap, 0.0), spread, False, (len(A), len(B)))


@dataclass(frozen=True)
class Noise:
    """The largest relative difference between two measurements of the same kernel at the same shape in a record."""

    fraction: float                # (slower − faster) / faster; 0 when nothing was measured twice
    kernel: Optional[str] = None
    shape: Optional[tuple] = None  # (B, H, S, S_kv, D)
    medians: Tuple[float, ...] = ()


def shape_key(row: dict) -> tuple:
    return (row["B"], row["H"], row["S"], row.get("S_kv", row["S"]), row.get("D", 64))


def record_noise(rows: Iterable[dict]) -> Noise:
    """The record's noise floor from every timed row it holds (result rows and sweep rows together)."""
    groups: dict = {}
    for r in timed(rows):
        groups.setdefault((r["kernel"], shape_key(r)), []).append(float(r["median_us"]))
    best = Noise(0.0)
    for (kernel, shape), meds in groups.items():
        if len(meds) > 1:
            frac = (max(meds) - min(meds)) / min(meds)
            if frac > best.fraction:
                best = Noise(frac, kernel, shape, tuple(meds))
    return best
