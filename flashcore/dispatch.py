"""Which kernel runs a shape: the dispatch table of :func:`flashcore.attention`.

The rule, in order (deterministic: the same registry and records give the same choice):

1. **Can it run the shape?** A kernel is a candidate if it is not a kept failure (``expect_failure``), handles the
   sequence length (``max_seq``), handles ``S_q != S_kv`` when asked (``cross``), and its launch geometry is
   legal for the shape (grid within CUDA's limits, dynamic shared memory within the H100's 227 KB).
2. **The table** (:data:`TABLE`): per range of sequence lengths, the kernel ids preferred, in order. The library
   kernel ``flashcore`` (the v8 chapter's final kernel, fuzzed by ``python -m flashcore.sweep``) comes first
   everywhere.
3. **The records** (a fallback must be known to be correct): if no preferred kernel is a candidate, only
   candidates with a recorded correctness check (``passed``) are kept, and dropped if, for any kind of check
   (correctness, tail, sanitizer), the newest record with that check has a failing row (:data:`CHECK_FIELDS`). They are ranked by the
   median time of the row nearest the shape in the newest record that timed them (fastest first), then those
   without a recorded time by ``predicted_us``, then id. A preferred kernel of the table is skipped if its newest
   check failed (a preferred kernel with no record yet is used: the table is the author's word).
4. No candidate: :class:`NoKernelError` says why each registered kernel was ruled out.

The ranking reads ``runs/`` once per process (:func:`recorded_evidence`); tests pass rows directly.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .kernels import KernelSpec, LaunchShape, is_control

LIBRARY_KERNEL = "flashcore"
MAX_GRID_X = (1 << 31) - 1
MAX_GRID_YZ = 65535
MAX_DYNAMIC_SMEM = 227 * 1024          # H100 (sm_90) opt-in limit per block
MAX_THREADS = 1024


@dataclass(frozen=True)
class Route:
    """One row of the table: sequence lengths ``s_min ≤ max(S_q, S_kv) ≤ s_max`` prefer ``kernels`` in order."""

    s_min: int
    s_max: int
    kernels: Tuple[str, ...]

    def covers(self, s: int) -> bool:
        return self.s_min <= s <= self.s_max


# One kernel for every length today; a length-specialised kernel (e.g. split-KV for S_q = 1) would add a row.
TABLE: Tuple[Route, ...] = (
    Route(1, 1 << 30, (LIBRARY_KERNEL,)),
)


@dataclass(frozen=True)
class Choice:
    kernel: str
    reason: str          # "table", "recorded <run_id> median_us=…", "registered (no record)"


class NoKernelError(RuntimeError):
    """No registered FlashCore kernel can run the shape; the message lists why each was ruled out."""


def launch_problem(spec: KernelSpec, bh: int, S_q: int, S_kv: int, num_sms: int = 132) -> Optional[str]:
    """Why ``spec`` cannot run this shape, or None if it can."""
    if spec.expect_failure:
        return "kept as a failure (expect_failure)"
    if S_q != S_kv and not spec.cross:
        return f"needs S_q == S_kv (cross=False), got S_q={S_q}, S_kv={S_kv}"
    if max(S_q, S_kv) > spec.max_seq:
        return f"max_seq={spec.max_seq} < {max(S_q, S_kv)}"
    shape = LaunchShape(bh=bh, seq_q=S_q, seq_kv=S_kv, num_sms=num_sms)
    try:
        grid = tuple(int(g) for g in spec.grid(shape))
        smem = int(spec.smem_bytes(shape))
    except Exception as exc:  # a grid function that cannot describe this shape
        return f"grid/smem function failed: {exc}"
    if len(grid) != 3 or min(grid) < 1:
        return f"grid {grid} is empty"
    if grid[0] > MAX_GRID_X or grid[1] > MAX_GRID_YZ or grid[2] > MAX_GRID_YZ:
        return f"grid {grid} exceeds CUDA's limits ({MAX_GRID_X}, {MAX_GRID_YZ}, {MAX_GRID_YZ})"
    if smem > MAX_DYNAMIC_SMEM:
        return f"needs {smem} B of dynamic shared memory > {MAX_DYNAMIC_SMEM}"
    if spec.threads > MAX_THREADS:
        return f"{spec.threads} threads per block > {MAX_THREADS}"
    return None


def _size(row: dict) -> float:
    s_kv = row.get("S_kv") or row["S"]
    return math.log2(max(1, row["B"] * row["H"] * row["S"] * s_kv))


def rank_by_records(ids: Sequence[str], specs: Dict[str, KernelSpec], evidence: Dict[str, dict], bh: int,
                    S_q: int, S_kv: int) -> List[Tuple[str, str]]:
    """``ids`` ordered by recorded evidence: [(id, reason)]. Only verified kernels (a recorded check, none of the
    newest failing) are ranked — a fallback must be known to be correct: by the recorded median time of the row
    nearest the shape, then kernels without a recorded time by ``predicted_us``, then id."""
    want = math.log2(max(1, bh * S_q * S_kv))
    ranked = []
    for kid in ids:
        ev = evidence.get(kid)
        if ev is None or ev["failed"] or not ev.get("checked_in"):
            continue
        rows = [r for r in ev["rows"] if isinstance(r.get("median_us"), (int, float))]
        if rows:
            best = min(rows, key=lambda r: (abs(_size(r) - want), r["median_us"]))
            ranked.append(((0, best["median_us"], kid),
                           f"recorded {ev['run_id']}: median_us={best['median_us']:.3g} at "
                           f"B={best['B']} H={best['H']} S={best['S']}"))
        else:
            pred = specs[kid].predicted_us
            ranked.append(((1, pred if pred is not None else math.inf, kid),
                           f"checked in {ev['checked_in']} (no recorded time)"))
    return [(key[-1], why) for key, why in sorted(ranked)]


def choose(B: int, H: int, S_q: int, S_kv: int, specs: Iterable[KernelSpec], evidence: Optional[dict] = None,
           num_sms: int = 132, table: Sequence[Route] = TABLE) -> Choice:
    """The kernel for one shape (pure: the registry and the evidence are arguments)."""
    specs = {s.id: s for s in specs if not is_control(s)}     # controls are experiments, not attention
    bh = B * H
    problems = {kid: launch_problem(s, bh, S_q, S_kv, num_sms) for kid, s in specs.items()}
    ok = [kid for kid, p in problems.items() if p is None]
    evidence = evidence or {}
    failed = {kid for kid, ev in evidence.items() if ev.get("failed")}
    s = max(S_q, S_kv)
    for route in table:
        if route.covers(s):
            for kid in route.kernels:
                if kid in ok and kid not in failed:
                    return Choice(kid, f"table: S in [{route.s_min}, {route.s_max}]")
    ranked = rank_by_records(sorted(ok), specs, evidence, bh, S_q, S_kv)
    if ranked:
        return Choice(*ranked[0])
    def verdict(kid):
        if problems[kid]:
            return problems[kid]
        ev = evidence.get(kid)
        return "failed its newest recorded check" if ev and ev.get("failed") else "no recorded check (unverified)"

    why = "; ".join(f"{kid}: {verdict(kid)}" for kid in sorted(problems))
    raise NoKernelError(f"no FlashCore kernel can run B={B}, H={H}, S_q={S_q}, S_kv={S_kv}, D=64"
                        + (f" ({why})" if why else " (the kernel registry is empty)"))


def row_failed(row: dict) -> bool:
    """A recorded row that rules its kernel out: a failed check, a failed tail check, a sanitizer finding."""
    return row.get("passed") is False or row.get("tail_passed") is False or row.get("clean") is False


CHECK_FIELDS = ("passed", "tail_passed", "clean")


def evidence_from_records(records_iter) -> Dict[str, dict]:
    """{kernel: {run_id, rows, failed, checked_in}}: ``rows`` (and ``run_id``) from the newest record that timed
    the kernel; ``checked_in`` the newest record with a correctness check (``passed``) of it; ``failed`` if, for any kind of check (:data:`CHECK_FIELDS`), the newest record with that check
    of the kernel has a failing row. A sweep record (checks, no times) thus hides neither older times nor the
    verdicts of other kinds of check; a newer passing check of the same kind re-admits a fixed kernel."""
    timed: Dict[str, tuple] = {}
    checked: Dict[Tuple[str, str], tuple] = {}
    for rec in records_iter:
        key = (rec["provenance"].get("date", ""), rec["run_id"])
        by_kernel: Dict[str, list] = {}
        for r in rec.get("results", []):
            by_kernel.setdefault(r["kernel"], []).append(r)
        for kid, rows in by_kernel.items():
            if any(isinstance(r.get("median_us"), (int, float)) for r in rows):
                if kid not in timed or key > timed[kid][0]:
                    timed[kid] = (key, rec["run_id"], rows)
            for f in CHECK_FIELDS:
                if any(r.get(f) is not None for r in rows):
                    if (kid, f) not in checked or key > checked[(kid, f)][0]:
                        checked[(kid, f)] = (key, rec["run_id"], rows)
    out = {}
    for kid in sorted(set(timed) | {k for k, _ in checked}):
        t = timed.get(kid)
        mine = {f: c for (k, f), c in checked.items() if k == kid}
        failed = any(r.get(f) is False for f, c in mine.items() for r in c[2])
        # verified means a correctness check (``passed``); a clean sanitizer run alone says nothing about results
        checked_in = mine["passed"][1] if "passed" in mine else None
        newest_any = max(mine.values(), key=lambda c: c[0])[1] if mine else None
        out[kid] = dict(run_id=t[1] if t else newest_any, rows=t[2] if t else [], failed=failed,
                        checked_in=checked_in)
    return out


@functools.lru_cache(maxsize=8)
def recorded_evidence(device_slug: Optional[str] = None, runs_dir: Optional[str] = None) -> Dict[str, dict]:
    """Evidence from the committed records (of ``device_slug`` if it has any), read once per process."""
    from . import records
    from .paths import RUNS_DIR

    root = Path(runs_dir) if runs_dir else RUNS_DIR
    try:
        recs = list(records.all_records(root))
    except records.RecordError:
        return {}
    mine = [r for r in recs if r.dir.parent.name == device_slug]
    return evidence_from_records(mine or recs)


def route_table(specs: Iterable[KernelSpec], evidence: Optional[dict] = None, B: int = 1, H: int = 8,
                lengths: Sequence[int] = (1, 64, 100, 512, 1000, 4096, 16384), cross: bool = True) -> list:
    """Rows (S_q, S_kv, kernel or error) for the doc and ``python -m flashcore list``."""
    specs = list(specs)
    rows = []
    pairs = [(s, s) for s in lengths] + ([(1, 512), (512, 1000)] if cross else [])
    for S_q, S_kv in pairs:
        try:
            c = choose(B, H, S_q, S_kv, specs, evidence)
            rows.append(dict(S_q=S_q, S_kv=S_kv, kernel=c.kernel, reason=c.reason))
        except NoKernelError as exc:
            rows.append(dict(S_q=S_q, S_kv=S_kv, kernel=None, reason=str(exc)))
    return rows
