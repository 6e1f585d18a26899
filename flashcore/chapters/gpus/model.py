"""The prediction and the comparison, pure arithmetic on two GPUs' records (no GPU, no plotting).

**The model.** A kernel's time on the reference GPU, T, is split by chapter 0's floors of that GPU (each the time
the kernel's shape would take if one resource alone limited it — launch, memory at the copy bandwidth, tensor cores
at the GEMM rate, exponentials at the ex2 rate): the *share* of a floor is floor ÷ T. On the other GPU,

    T' / T  =  s_launch · (L' / L)  +  s_memory · (BW / BW')  +  (1 − s_launch − s_memory) · (G / G')

where L, BW, G are the measured launch floor, copy bandwidth and GEMM rate of the reference GPU and L', BW', G' of
the other: the launch share scales with the launch floor, the bandwidth share with the inverse copy bandwidth, and
everything else — tensor work, exponentials and the latency that no floor explains, all of it running on the SMs —
with the inverse GEMM rate (same SMs and clocks give 1). The memory share counts only the compulsory bytes (read Q,
K, V once, write O once); where the working set fits in L2 it stays there between the timing loop's replays, and
the share is an upper bound on the kernel's use of DRAM.

**What separates.** A measured ratio T'/T is a change only if (1) the p10–p90 range of the ratio,
[p10'/p90, p90'/p10], excludes 1, and (2) it differs from 1 by more than the larger *in-record spread*: the largest
relative difference between two measurements of the same kernel at the same shape inside ONE record (chapter 4
times the mission shape twice: in its summary and in its sweep). A prediction agrees when it falls inside the
ratio's p10–p90 range widened by that spread.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ... import records
from ...harness import bench
from ...records import Record, RecordError

__all__ = ["Ceilings", "Comparison", "ceilings", "timings", "floors", "shares", "bound_by", "predicted_ratio",
           "in_record_spread", "compare", "BOUND_NAMES"]

BOUND_NAMES = {"launch": "launch", "memory": "bandwidth", "tensor": "tensor-core", "exp": "exponential",
               "latency": "latency"}
DOMINANT = 0.5       # a floor that is at least half the measured time names what bounds the kernel


@dataclass
class Ceilings:
    """Chapter 0's measured ceilings of one GPU, and where they come from."""
    slug: str
    gpu: str
    run_id: str
    rel: str
    copy_tbps: float
    gemm_tflops: float
    exp2_per_s: float
    launch_us: float
    l2_bytes: Optional[int]


def _rel(rec: Record) -> str:
    return f"runs/{rec.dir.parent.name}/{rec['run_id']}/run.json"


def ceilings(rec: Record) -> Ceilings:
    """The ceilings of a chapter-0 record; a :class:`RecordError` names what the record lacks."""
    c = rec.ext("ceilings")
    need = {"copy_tbps": c.get("copy_tbps"), "gemm_fp16_tflops": c.get("gemm_fp16_tflops"),
            "exp2_per_s": c.get("exp2_per_s"), "empty_graph.median_us": (c.get("empty_graph") or {}).get("median_us")}
    missing = [k for k, v in need.items() if not isinstance(v, (int, float))]
    if missing:
        raise RecordError(f"{_rel(rec)} lacks ceilings {', '.join(missing)}")
    p = rec["provenance"]
    l2 = p.get("l2_bytes") or (rec["extra"].get("device") or {}).get("l2_bytes")
    return Ceilings(slug=rec.dir.parent.name, gpu=p.get("gpu", "?"), run_id=rec["run_id"], rel=_rel(rec),
                    copy_tbps=need["copy_tbps"], gemm_tflops=need["gemm_fp16_tflops"], exp2_per_s=need["exp2_per_s"],
                    launch_us=need["empty_graph.median_us"], l2_bytes=l2)


def timings(rec: Record) -> list:
    """Every timed (kernel, shape) of a chapter-4 record, with where in the record it sits: ``results`` (the
    summary and the large shape) or ``sweep`` (the scaling sweep), as dicts with kernel, shape (B, H, S, D),
    source, median_us, p10_us, p90_us."""
    out = []
    for r in rec.get("results", []):
        if r.get("median_us") is None:
            continue
        src = "sweep" if r.get("stage") == "sweep" else "results"
        out.append(dict(kernel=r["kernel"], shape=(r["B"], r["H"], r["S"], r.get("D", 64)), source=src,
                        median_us=r["median_us"], p10_us=r.get("p10_us"), p90_us=r.get("p90_us")))
    for r in rec.get("extra", {}).get("sweep", []) or []:
        if r.get("median_us") is not None:
            out.append(dict(kernel=r["kernel"], shape=(r["B"], r["H"], r["S"], r.get("D", 64)), source="sweep",
                            median_us=r["median_us"], p10_us=r.get("p10_us"), p90_us=r.get("p90_us")))
    return out


def floors(c: Ceilings, shape) -> dict:
    """Chapter 0's four floors (µs) for ``shape`` on the GPU of ``c``: launch, memory, tensor, exp."""
    return bench.floors_us(*shape, gemm_tflops=c.gemm_tflops, copy_tbps=c.copy_tbps, exp2_per_s=c.exp2_per_s,
                           launch_us=c.launch_us)


def shares(c: Ceilings, shape, t_us: float) -> dict:
    """Each floor as a share of the measured time (a share above 1 would mean the kernel beat a floor)."""
    return {k: v / t_us for k, v in floors(c, shape).items()}


def bound_by(sh: dict) -> str:
    """The floor that is at least half the time (the largest such), else ``latency``: no floor explains the
    time, the kernel waits on its own dependency chains."""
    k = max(sh, key=sh.get)
    return k if sh[k] >= DOMINANT else "latency"


def predicted_ratio(sh: dict, ref: Ceilings, new: Ceilings) -> float:
    """T'/T from the shares on the reference GPU and both GPUs' ceilings (the model in the module docstring)."""
    s_launch = min(sh["launch"], 1.0)
    s_memory = min(sh["memory"], 1.0 - s_launch)
    rest = 1.0 - s_launch - s_memory
    return (s_launch * new.launch_us / ref.launch_us + s_memory * ref.copy_tbps / new.copy_tbps
            + rest * ref.gemm_tflops / new.gemm_tflops)


def in_record_spread(rec: Record) -> Optional[dict]:
    """The largest relative difference between two measurements of one kernel at one shape in ``rec`` (None if
    nothing is measured twice): dict(spread, kernel, shape, a_us, b_us, run_id)."""
    by: dict = {}
    for t in timings(rec):
        by.setdefault((t["kernel"], t["shape"]), []).append(t["median_us"])
    worst = None
    for (kernel, shape), us in by.items():
        if len(us) < 2:
            continue
        a, b = min(us), max(us)
        spread = (b - a) / a
        if worst is None or spread > worst["spread"]:
            worst = dict(spread=spread, kernel=kernel, shape=shape, a_us=a, b_us=b, run_id=rec["run_id"])
    return worst


@dataclass
class Comparison:
    """Two GPUs' records side by side: what was found, what is missing, and one row per common (kernel, shape)."""
    reference: str
    other: str
    records: dict                       # slug → {stem: Record or None}
    ceilings: dict                      # slug → Ceilings or None
    missing: list                       # sentences naming each record (or field) the page lacks
    rows: list = field(default_factory=list)
    noise: float = 0.0
    noise_from: Optional[dict] = None

    @property
    def predicted(self) -> bool:
        return all(self.ceilings.get(g) for g in (self.reference, self.other))

    def gpu(self, slug: str) -> str:
        for rec in self.records.get(slug, {}).values():
            if rec is not None:
                return rec["provenance"].get("gpu", slug)
        return slug

    def used(self) -> list:
        """Every record the page reads, reference GPU first."""
        return [rec for slug in (self.reference, self.other) for rec in self.records[slug].values() if rec]


def _newest(stem: str, slug: str, runs_dir: Path) -> Optional[Record]:
    try:
        return records.newest(stem, device=slug, runs_dir=runs_dir)
    except RecordError:
        return None


def compare(reference: str = "h100-80gb-hbm3", other: str = "h200", runs_dir: Path = records.RUNS_DIR,
            stems=("00_method", "04_results")) -> Comparison:
    """Load both GPUs' newest chapter-0 and chapter-4 records and compare every kernel timed at the same shape in
    both. Missing records are listed in ``missing`` (the page says which), never raised."""
    method, results = stems
    recs = {g: {s: _newest(s, g, Path(runs_dir)) for s in stems} for g in (reference, other)}
    missing, ceil = [], {}
    for g in (reference, other):
        for s, what in ((method, "chapter 0: the ceilings the prediction needs"),
                        (results, "chapter 4: the kernels' times")):
            if recs[g][s] is None:
                missing.append(f"`runs/{g}/<run-id>-{s}/run.json` ({what} on {g})")
        ceil[g] = None
        if recs[g][method] is not None:
            try:
                ceil[g] = ceilings(recs[g][method])
            except RecordError as exc:
                missing.append(str(exc))
    cmp = Comparison(reference, other, recs, ceil, missing)
    a, b = recs[reference][results], recs[other][results]
    if a is None or b is None:
        return cmp
    spreads = [s for s in (in_record_spread(a), in_record_spread(b)) if s]
    if spreads:
        cmp.noise_from = max(spreads, key=lambda s: s["spread"])
        cmp.noise = cmp.noise_from["spread"]
    theirs = {(t["kernel"], t["shape"], t["source"]): t for t in timings(b)}
    for t in timings(a):
        u = theirs.get((t["kernel"], t["shape"], t["source"]))
        if u is None:
            continue
        row = dict(kernel=t["kernel"], shape=t["shape"], source=t["source"], ref_us=t["median_us"],
                   new_us=u["median_us"], ratio=u["median_us"] / t["median_us"])
        if None not in (t["p10_us"], t["p90_us"], u["p10_us"], u["p90_us"]):
            row.update(lo=u["p10_us"] / t["p90_us"], hi=u["p90_us"] / t["p10_us"])
        else:
            row.update(lo=row["ratio"], hi=row["ratio"])
        row["separates"] = (row["hi"] < 1 or row["lo"] > 1) and abs(row["ratio"] - 1) > cmp.noise
        row["change"] = ("tie" if not row["separates"] else "less time" if row["ratio"] < 1 else "more time")
        ref_c = ceil[reference]
        if ref_c is not None:
            row["shares"] = shares(ref_c, t["shape"], t["median_us"])
            row["bound"] = bound_by(row["shares"])
        if cmp.predicted:
            p = predicted_ratio(row["shares"], ref_c, ceil[other])
            row["predicted"] = p
            row["agrees"] = row["lo"] - cmp.noise <= p <= row["hi"] + cmp.noise
        cmp.rows.append(row)
    return cmp
