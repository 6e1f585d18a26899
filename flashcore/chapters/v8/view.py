"""Chapter 3's page, drawn from records only: the ladder tree, the waterfall, the worklog, the evidence, the variants,
the scaling sweep and the conclusion.

Every sentence that compares two measurements is computed here from the record (so it stays true on another GPU's
record), and every comparison goes through :func:`compare`: two timings are a **tie** when their p10–p90 ranges
overlap, or when their gap is no larger than the record's own repeat spread — the largest relative difference
between two measurements of one kernel at one shape in the same record (:func:`repeat_spread`). Nsight Compute
numbers are read from the tidy rows stored in the record (``extra["ncu"]``), so replay needs no report reader.

Record fields read (the H100 record of 2026-11-25 has all of them except ``flashcore`` in ``ladder``, which is then
rebuilt from its mission row): ``extra.mission``, ``extra.steps``, ``extra.ladder`` (id, parent, predicted_us, idea,
moving), ``extra.ncu`` (tidy rows per kernel id), ``extra.sass``, ``extra.sanitizer_verdicts``, ``extra.sweep``,
``extra.big``, ``extra.best``; result rows with ``role`` "mission" (timed) and "check".
"""
from __future__ import annotations

import math
import re
from typing import Dict, List, Optional, Sequence

from ... import book, kernels, plots
from ...labels import label
from ...records import Record
from ...tools import profile
from ..results import spread as spread_rule
from . import LIBRARY, MOVING

PEERS = ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "sdpa_default", "triton_attention")
SWEEP_PEERS = ("sdpa_cudnn", "sdpa_flash", "triton_attention")
BASE_STEP = "v8_05_mma_registers"      # the first register-resident step: what the later rungs must beat
HELD = 0.10                            # a prediction within 10 % of the measurement "held"
MOVED = 0.05                           # a metric that changed by less than 5 % "did not move"

# Metrics where a larger value is the improvement an idea aims for (all others: smaller is better).
HIGHER_IS_BETTER = {"tensor_pipe_pct", "issue_active_pct", "sm_throughput_pct", "achieved_occupancy_pct",
                    "grid_size", "sms_active_pct"}
METRIC_LABELS = {
    "duration_us": "ncu duration (µs)",
    "stall_long_scoreboard": "long-scoreboard stalls",
    "stall_barrier": "barrier stalls",
    "stall_membar": "membar stalls",
    "smem_bank_conflicts": "shared-memory bank conflicts",
    "grid_size": "grid size (CTAs)",
    "tensor_pipe_pct": "tensor-pipe utilisation (%)",
    "sm_throughput_pct": "SM throughput (% of peak)",
    "issue_active_pct": "issue active (% of cycles)",
    "achieved_occupancy_pct": "achieved occupancy (%)",
}
# What a warp-state stall reason means (Nsight Compute's Warp State Statistics), in the words a worklog needs.
STALL_MEANING = {
    "barrier": "waiting at a CTA barrier for the other warps",
    "long_scoreboard": "waiting on an L1TEX operation (global memory, cp.async data, distributed shared memory)",
    "short_scoreboard": "waiting on shared memory or a special-function (MUFU) result",
    "mio_throttle": "the shared-memory / special-function instruction queue is full",
    "membar": "waiting at a memory fence",
    "wait": "a fixed-latency dependency (an HMMA or ALU result not ready yet)",
    "math_pipe_throttle": "the math pipe it needs is busy",
    "no_instruction": "no instruction fetched yet (instruction-cache miss or a branch)",
    "dispatch_stall": "the dispatcher could not issue",
    "imc_miss": "an immediate-constant cache miss",
    "lg_throttle": "the local/global memory queue is full",
    "branch_resolving": "waiting for a branch to resolve",
    "drain": "waiting for stores to drain at exit",
    "not_selected": "ready, but another warp issued",
    "sleeping": "sleeping",
    "tex_throttle": "the texture queue is full",
    "misc": "miscellaneous",
    "gmma": "waiting on a warpgroup MMA",
}
NOT_WAITS = {"selected", "not_selected"}       # issuing, or ready and passed over: not a cost


# ----------------------------------------------------------------------------------------------- record access
def mission_shape(rec: Record) -> tuple:
    B, H, S, D = rec.ext("mission")
    return int(B), int(H), int(S), int(D)


def shape_text(B, H, S, D=None) -> str:
    return f"B{B} H{H} S{S}" + (f" D{D}" if D is not None else "")


def mission_row(rec: Record, kernel: str) -> Optional[dict]:
    """The kernel's timed row at the mission shape (None if the record has none)."""
    if not kernel:
        return None
    B, H, S, _ = mission_shape(rec)
    rows = [r for r in rec.rows(kernel=kernel, B=B, H=H, S=S) if r.get("role", "mission") == "mission"
            and r.get("S_kv", S) == S]
    return rows[0] if rows else None


def us(rec: Record, kernel: str) -> Optional[float]:
    r = mission_row(rec, kernel)
    return r.get("median_us") if r else None


def rungs(rec: Record) -> List[dict]:
    """Every rung of the ladder in page order: the record's ladder, plus ``flashcore`` rebuilt from its mission row
    where the record (older measure code) did not list it."""
    out = [dict(r) for r in rec.ext("ladder")]
    if LIBRARY not in {r["id"] for r in out}:
        row = mission_row(rec, LIBRARY)
        if row is not None:
            out.append(dict(id=LIBRARY, parent=row.get("parent"), predicted_us=row.get("predicted_us"),
                            idea=row.get("idea", ""), source=row.get("source"), moving=MOVING[LIBRARY]))
    return out


def rung(rec: Record, kid: str) -> Optional[dict]:
    return next((r for r in rungs(rec) if r["id"] == kid), None)


def moving_metrics(r: dict) -> tuple:
    """The metrics a rung's header says its idea should move, first the main one: the chapter's table for the
    rung (the header's own words), else the record's."""
    m = MOVING.get(r["id"]) or r.get("moving") or "duration_us"
    return tuple(m) if isinstance(m, (list, tuple)) else (m,)


def moving_metric(r: dict) -> str:
    """The main metric a rung's idea should move (the one its chart panel shows)."""
    return moving_metrics(r)[0]


def ncu_row(rec: Record, kid: Optional[str]) -> dict:
    return dict(rec.get("extra", {}).get("ncu", {}).get(kid) or {}) if kid else {}


def gpu(rec: Record) -> str:
    return str(rec["provenance"].get("gpu", "this GPU"))


def fmt(x, digits: int = 3) -> str:
    """A measured number to ``digits`` significant digits, trailing zeros kept (77.0, 7.96, 0.440); integers from
    100 up (1,133); "—" for a missing value."""
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        return book.fmt(x)
    if isinstance(x, int):
        return f"{x:,}"
    x = float(x)
    if abs(x) >= 10 ** (digits - 1):
        return f"{x:,.0f}"
    if x == 0:
        return "0"
    if abs(x) < 1e-3:
        return f"{x:.1e}"
    return f"{x:#.{digits}g}".rstrip(".")


def count(x) -> str:
    """An integer-valued metric (grid size, registers, CTAs per SM)."""
    return "—" if x is None else f"{int(round(float(x))):,}"


def times(x: float) -> str:
    """A ratio as 1.23×."""
    return f"{x:.2f}×"


def pct(x: float) -> str:
    return f"{x:.1f}%"


def compact(v) -> str:
    """A chart label: 4.28M, 54.3k, 7.96."""
    if v is None:
        return "—"
    v = float(v)
    if abs(v) >= 1e6:
        return f"{v / 1e6:.3g}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.3g}k"
    if v.is_integer():
        return f"{int(v)}"
    return fmt(v)


# ----------------------------------------------------------------------------------------------- the tie rule
def repeat_spread(rec: Record) -> Optional[dict]:
    """The largest relative difference between two timings of one kernel at one shape in this record (its mission
    row and its scaling-sweep point, or two rows of the same code in a variants record): what the run-to-run spread
    really is, beyond one measurement's p10–p90. None if the record times nothing twice."""
    seen: Dict[tuple, List[float]] = {}
    for r in rec.get("results", []):
        if r.get("median_us") and r.get("role", "mission") in ("mission", "variant", "peer"):
            key = (r.get("same_code_as") or r["kernel"], r["B"], r["H"], r["S"], r.get("S_kv", r["S"]))
            seen.setdefault(key, []).append(float(r["median_us"]))
    for r in rec.get("extra", {}).get("sweep", []) or []:
        if r.get("median_us"):
            seen.setdefault((r["kernel"], r["B"], r["H"], r["S"], r.get("S_kv", r["S"])), []).append(
                float(r["median_us"]))
    best = None
    for (kid, B, H, S, _), xs in seen.items():
        if len(xs) < 2:
            continue
        spread = (max(xs) - min(xs)) / min(xs)
        if best is None or spread > best["frac"]:
            best = dict(frac=spread, kernel=kid, shape=shape_text(B, H, S), low=min(xs), high=max(xs))
    return best


def compare_rows(a: Optional[dict], b: Optional[dict], spread: Optional[dict]) -> Optional[dict]:
    """Row ``a`` against row ``b`` (timed rows) by the book's spread rule (:mod:`flashcore.chapters.results.spread`,
    the rule chapter 4 and the headline use), with this record's repeat spread as the noise floor: ``verdict``
    "faster" / "slower" / "tie" (said of a), ``ratio`` = b/a (>1: a is faster), ``gap`` = |a−b|/min, ``why`` for a
    tie."""
    if not a or not b or not a.get("median_us") or not b.get("median_us"):
        return None
    noise = spread["frac"] if spread else 0.0
    v = spread_rule.compare([a], [b], noise=noise)
    ta, tb = float(a["median_us"]), float(b["median_us"])
    why = ""
    if v.outcome == spread_rule.TIE:
        why = ("their p10–p90 ranges overlap" if v.overlap else
               f"the {pct(100 * abs(ta - tb) / min(ta, tb))} gap is inside the {pct(100 * noise)} by which two "
               f"measurements of {label(spread['kernel'])} at {spread['shape']} in this record differ")
    return dict(verdict=v.outcome, ratio=tb / ta, gap=abs(ta - tb) / min(ta, tb), why=why, a=ta, b=tb)


def compare(rec: Record, new: str, old: str) -> Optional[dict]:
    """``new`` against ``old`` at the mission shape, by the tie rule (module docstring)."""
    return compare_rows(mission_row(rec, new), mission_row(rec, old), repeat_spread(rec))


def verdict_text(c: Optional[dict]) -> str:
    """'1.06× faster', '1.16× slower', 'tie'."""
    if not c:
        return "—"
    if c["verdict"] == "tie":
        return "tie"
    return f"{times(c['ratio'])} faster" if c["verdict"] == "faster" else f"{times(1 / c['ratio'])} slower"


# ----------------------------------------------------------------------------------------------- the tree
def children(rec: Record) -> Dict[Optional[str], List[str]]:
    ids = [r["id"] for r in rungs(rec)]
    kids: Dict[Optional[str], List[str]] = {}
    for r in rungs(rec):
        parent = r.get("parent") if r.get("parent") in ids else None
        kids.setdefault(parent, []).append(r["id"])
    return kids


def library_path(rec: Record) -> List[str]:
    """The rungs from the seed to the library kernel (the ladder's trunk)."""
    by_id = {r["id"]: r for r in rungs(rec)}
    path, cur = [], LIBRARY if LIBRARY in by_id else None
    while cur in by_id:
        path.append(cur)
        cur = by_id[cur].get("parent")
    return path[::-1]


def dead_ends(rec: Record) -> List[str]:
    """Leaves of the tree that are not the library kernel: ideas nothing was built on."""
    kids = children(rec)
    trunk = set(library_path(rec))
    return [r["id"] for r in rungs(rec) if not kids.get(r["id"]) and r["id"] not in trunk]


def tree_lines(rec: Record) -> List[str]:
    """The ladder as a tree, one rung a line: label, measured µs, verdict against its parent; dead ends marked."""
    kids = children(rec)
    by_id = {r["id"]: r for r in rungs(rec)}
    ends = set(dead_ends(rec))
    spread = repeat_spread(rec)
    entries = []

    def walk(kid, prefix, last, root):
        branch = "" if root else ("└ " if last else "├ ")
        r = by_id[kid]
        c = compare_rows(mission_row(rec, kid), mission_row(rec, r.get("parent")), spread)
        note = ([verdict_text(c)] if c else []) + (["dead end"] if kid in ends else [])
        t = us(rec, kid)
        entries.append((prefix + branch + label(kid), f"{fmt(t)} µs" if t else "not timed", ", ".join(note)))
        sub = kids.get(kid, [])
        for i, ch in enumerate(sub):
            walk(ch, prefix + ("" if root else ("  " if last else "│ ")), i == len(sub) - 1, False)

    for i, root in enumerate(kids.get(None, [])):
        walk(root, "", i == len(kids[None]) - 1, True)
    entries.insert(0, ("rung", "measured", "vs parent"))
    w0 = max(len(e[0]) for e in entries) + 2
    w1 = max(len(e[1]) for e in entries)
    return [f"{a:<{w0}}{b:>{w1}}  {c}".rstrip() for a, b, c in entries]


def tree_md(rec: Record) -> str:
    B, H, S, D = mission_shape(rec)
    return (f"At {shape_text(B, H, S, D)} on {gpu(rec)}:\n\n```text\n" + "\n".join(tree_lines(rec)) + "\n```")


def show_tree(rec: Record) -> None:
    book.md(tree_md(rec))


# ----------------------------------------------------------------------------------------------- headline
def headline(rec: Record) -> dict:
    """The chapter's key numbers: seed, library kernel and peers at the mission shape."""
    B, H, S, D = mission_shape(rec)
    seed, lib = us(rec, "v8_seed"), us(rec, LIBRARY)
    cud, tri, fa2 = us(rec, "sdpa_cudnn"), us(rec, "triton_attention"), us(rec, "sdpa_flash")
    timed = [r["id"] for r in rungs(rec) if us(rec, r["id"])]
    fastest = min(timed, key=lambda i: us(rec, i)) if timed else None
    return dict(shape=shape_text(B, H, S, D), gpu=gpu(rec), seed=seed, library=lib, cudnn=cud, triton=tri,
                flash=fa2, fastest=fastest, fastest_us=us(rec, fastest) if fastest else None,
                seed_x_cudnn=seed / cud if seed and cud else None, library_x_cudnn=lib / cud if lib and cud else None,
                speedup=seed / lib if seed and lib else None, n_rungs=len(rungs(rec)), n_timed=len(timed))


def summary_md(rec: Record) -> str:
    h = headline(rec)
    if not h["seed"] or not h["library"]:
        return f"*This record times {h['n_timed']} of {h['n_rungs']} rungs at {h['shape']}.*"
    vs_cud = compare(rec, LIBRARY, "sdpa_cudnn")
    text = (f"At {h['shape']} on {h['gpu']}, the faithful v8 (`v8_seed`) takes **{fmt(h['seed'])} µs**, "
            f"{times(h['seed_x_cudnn'])} the time of cuDNN measured in the same process. The ladder ends on "
            f"`{LIBRARY}` at **{fmt(h['library'])} µs**: {times(h['speedup'])} faster than the seed, and "
            f"{_against(vs_cud, 'cuDNN')}.")
    if h["fastest"] != LIBRARY and h["fastest_us"]:
        text += f" (The fastest rung in this record is {label(h['fastest'])} at {fmt(h['fastest_us'])} µs.)"
    return text


def _against(c: Optional[dict], who: str) -> str:
    if not c:
        return f"not compared with {who} (missing from this record)"
    if c["verdict"] == "tie":
        return f"a tie with {who} ({fmt(c['a'])} vs {fmt(c['b'])} µs: {c['why']})"
    return f"{verdict_text(c)} than {who} ({fmt(c['b'])} µs)"


def show_summary(rec: Record) -> None:
    book.md(summary_md(rec))


# ----------------------------------------------------------------------------------------------- the ladder table
def ladder_rows(rec: Record) -> List[dict]:
    """One row per rung: its parent, the header's prediction, the measurement, the verdict against the parent,
    the time relative to cuDNN's, and the checks it passed."""
    cud = us(rec, "sdpa_cudnn")
    spread = repeat_spread(rec)
    out = []
    for r in rungs(rec):
        t = us(rec, r["id"])
        checks = [x for x in rec.rows(kernel=r["id"]) if x.get("role", "mission") in ("mission", "check")
                  and x.get("passed") is not None]
        c = compare_rows(mission_row(rec, r["id"]), mission_row(rec, r.get("parent")), spread)
        out.append({"rung": label(r["id"]), "predicted µs": r.get("predicted_us"), "measured µs": t,
                    "÷ predicted": t / r["predicted_us"] if t and r.get("predicted_us") else None,
                    "vs parent": verdict_text(c) if c else None,
                    "÷ cuDNN": t / cud if t and cud else None,
                    "checks": f"{sum(bool(x['passed']) for x in checks)}/{len(checks)}" if checks else None})
    return out


def show_ladder(rec: Record) -> None:
    B, H, S, D = mission_shape(rec)
    book.table(ladder_rows(rec), formats={"÷ cuDNN": "{:.2f}", "÷ predicted": "{:.2f}", "predicted µs": fmt,
                                          "measured µs": fmt},
               caption=f"The ladder at {shape_text(B, H, S, D)}: median µs per launch (CUDA-graph replay); "
                       f"÷ predicted and ÷ cuDNN are ratios of times (below 1: faster than that); checks passed "
                       f"of checks run")


# ----------------------------------------------------------------------------------------------- the worklog
def _stalls(row: dict) -> Dict[str, float]:
    return {k: v for k, v in profile.stall_breakdown(row).items() if k not in NOT_WAITS}


def _moved(metric: str, before, after) -> Optional[str]:
    """"as intended", "the wrong way" or "not" (within MOVED), for a metric's parent → step values."""
    if before is None or after is None:
        return None
    if before == 0 and after == 0:
        return "not"
    base = max(abs(before), abs(after))
    if abs(after - before) / base < MOVED:
        return "not"
    better = (after > before) if metric in HIGHER_IS_BETTER else (after < before)
    return "as intended" if better else "the wrong way"


def rung_evidence(rec: Record, kid: str) -> dict:
    """Everything the worklog says about one rung, as numbers: prediction, measurement, the verdict against the
    parent, the miss split into inherited × own, and what its Nsight Compute report shows against the parent's."""
    r = rung(rec, kid) or dict(id=kid, parent=None, predicted_us=None, idea="", moving="duration_us")
    parent = r.get("parent")
    row, prow = mission_row(rec, kid), mission_row(rec, parent)
    ev = dict(id=kid, parent=parent, idea=r.get("idea", ""), predicted=r.get("predicted_us"),
              measured=row.get("median_us") if row else None, p10=row.get("p10_us") if row else None,
              p90=row.get("p90_us") if row else None, error=(row or {}).get("error"))
    ev["vs_parent"] = compare_rows(row, prow, repeat_spread(rec))
    ev["ratio_to_prediction"] = ev["measured"] / ev["predicted"] if ev["measured"] and ev["predicted"] else None
    prung = rung(rec, parent) if parent else None
    if prung and prung.get("predicted_us") and ev["predicted"] and prow and prow.get("median_us") and ev["measured"]:
        # measured/predicted = (parent measured/parent predicted) × (this step's change / the change predicted)
        ev["parent_predicted"] = prung["predicted_us"]
        ev["inherited"] = prow["median_us"] / prung["predicted_us"]
        ev["own"] = ev["ratio_to_prediction"] / ev["inherited"]
    s, p = ncu_row(rec, kid), ncu_row(rec, parent)
    ev["has_ncu"] = bool(s)
    if s:
        ev["metrics"] = [(m, p.get(m), s.get(m), _moved(m, p.get(m), s.get(m)) if parent else None)
                         for m in moving_metrics(r) if m != "duration_us"]
        ev["issue"], ev["occupancy"], ev["tensor"] = (s.get("issue_active_pct"), s.get("achieved_occupancy_pct"),
                                                      s.get("tensor_pipe_pct"))
        ev["parent_issue"], ev["parent_occupancy"], ev["parent_tensor"] = (
            p.get("issue_active_pct"), p.get("achieved_occupancy_pct"), p.get("tensor_pipe_pct"))
        st, pst = _stalls(s), _stalls(p)
        ev["top_stalls"] = [(k, v, pst.get(k, 0.0) if p else None) for k, v in list(st.items())[:2] if v >= 0.05]
        top = {k for k, _, _ in ev["top_stalls"]}
        ev["new_stalls"] = [(k, pst.get(k, 0.0), v) for k, v in st.items() if p and pst.get(k, 0.0) < 0.05
                            and v >= 0.3 and k not in top][:2]
        ev["instructions_ratio"] = (s["instructions"] / p["instructions"] if s.get("instructions")
                                    and p.get("instructions") else None)
        ev["grid"], ev["parent_grid"] = s.get("grid_size"), p.get("grid_size")
        ev["registers"], ev["parent_registers"] = s.get("registers_per_thread"), p.get("registers_per_thread")
        ev["reg_limit"], ev["parent_reg_limit"] = (s.get("occupancy_limit_registers"),
                                                   p.get("occupancy_limit_registers"))
        ev["sms"] = s.get("sm_count")
    return ev


def _register_bound(reg_limit, grid, sms) -> bool:
    """True if the registers' cap on CTAs per SM binds at this launch: the grid needs more CTAs per SM than the
    registers allow (a cap above the demand costs nothing)."""
    return bool(reg_limit and grid and sms and grid / sms > reg_limit)


def short(kid: str) -> str:
    """"step 05" for a numbered step, the label otherwise (for lists in running prose)."""
    m = re.match(r"v8_(\d\d)_", kid or "")
    return f"step {m.group(1)}" if m else label(kid)


def _is_cluster_kernel(kid: str) -> bool:
    try:
        return "cluster" in kernels.get(kid).tags
    except KeyError:          # a kernel no longer registered: say nothing the registry cannot back
        return False


def _meaning(kid: str, reason: str) -> str:
    text = STALL_MEANING.get(reason, reason.replace("_", " "))
    if reason == "membar" and _is_cluster_kernel(kid):
        text += (" — here the release semantics of the cluster barrier, which compile to a GPU-scope fence "
                 "(`MEMBAR.ALL.GPU` in the SASS)")
    return text


def _limiter(ev: dict) -> str:
    """What the step's own report says holds it back: issue rate, occupancy, tensor pipe, the largest waits."""
    def with_parent(v, pv):
        return pct(v) + (f" (parent {pct(pv)})" if pv is not None and ev.get("parent") else "")

    parts = []
    if ev.get("issue") is not None:
        parts.append(f"the SMs issue an instruction in {with_parent(ev['issue'], ev.get('parent_issue'))} of "
                     f"active cycles")
    if ev.get("occupancy") is not None:
        parts.append(f"achieved occupancy is {with_parent(ev['occupancy'], ev.get('parent_occupancy'))}")
    if ev.get("tensor") is not None:
        parts.append(f"the tensor pipe is busy {with_parent(ev['tensor'], ev.get('parent_tensor'))} of the time")
    text = ("In its report " + ", ".join(parts)) if parts else ""
    if ev.get("issue") is not None and ev["issue"] < 40:
        text += " (latency-bound: most issue slots go unused because no warp is ready)"
    waits = ev.get("top_stalls") or []
    if waits:
        described = []
        for i, (k, v, pv) in enumerate(waits):
            phrase = (f"{k.replace('_', ' ')}, {fmt(v)} per issued instruction"
                      + (f" (parent {fmt(pv)})" if pv is not None and ev.get("parent") else ""))
            if i == 0 or k == "membar":
                phrase += f": {_meaning(ev['id'], k)}"
            described.append(phrase)
        text += ("; " if text else "Its ") + "warps wait mostly on " + "; then ".join(described)
    return text + "." if text else ""


def rung_md(rec: Record, kid: str) -> str:
    """The computed half of a rung's worklog paragraph: prediction, measurement, and why they differ, from the
    record. (What changed and why is the notebook's prose above it.)"""
    ev = rung_evidence(rec, kid)
    if ev["measured"] is None:
        why = f" ({ev['error'].splitlines()[0][:200]})" if ev.get("error") else ""
        return f"*This record has no timing of {label(kid)}{why}.*"
    parent_label = label(ev["parent"]) if ev["parent"] else None
    pred = ev["predicted"]
    head = f"**Predicted** {fmt(pred)} µs" if pred else "**No prediction** was recorded"
    if ev.get("parent_predicted"):
        head += f" (its parent: {fmt(ev['parent_predicted'])} µs predicted)"
    head += f". **Measured** {fmt(ev['measured'])} µs (p10–p90 {fmt(ev['p10'])}–{fmt(ev['p90'])})"
    c = ev["vs_parent"]
    if c:
        if c["verdict"] == "tie":
            head += f": a tie with {parent_label} ({fmt(c['b'])} µs; {c['why']})"
        else:
            head += f": {verdict_text(c)} than {parent_label} ({fmt(c['b'])} µs)"
    if ev["ratio_to_prediction"]:
        head += f"; {times(ev['ratio_to_prediction'])} the prediction"
    head += "."

    ratio = ev["ratio_to_prediction"]
    held = ratio is not None and abs(ratio - 1) <= HELD
    body = [f"**Why the prediction {'held' if held else 'missed'}.**" if ratio else "**Evidence.**"]
    if ev.get("own") is not None:
        own = ev["own"]
        verdict = ("relative to its parent the step did what its header predicted" if abs(own - 1) <= HELD else
                   "the step gained less over its parent than its header predicted" if own > 1 else
                   "the step gained more over its parent than its header predicted")
        body.append(f"The {times(ratio)} miss is {times(ev['inherited'])} inherited (the parent's own miss) × "
                    f"{times(own)} of this step's: {verdict}.")
    if not ev["has_ncu"]:
        body.append("This record has no Nsight Compute report of this rung.")
        return head + "\n\n" + " ".join(body)
    delivered = bool(c and c["verdict"] == "faster" and ev.get("own", 1.0) <= 1 + HELD)
    for n, (m, before, after, moved) in enumerate(ev.get("metrics", [])):
        if moved is None:
            continue
        name = METRIC_LABELS.get(m, m.replace("_", " ")) + (" per issued instruction" if m.startswith("stall_")
                                                            else "")
        sentence = (f"{'The metric its header names' if n == 0 else 'The header also names'}, {name}, is "
                    f"{compact(before)} in the parent's report and {compact(after)} in the step's: ")
        if moved == "as intended":
            sentence += "it moved as intended" + ((", and the time followed." if delivered else
                                                   ", but it was not what limited the kernel.") if n == 0 else ".")
        else:
            sentence += ("it moved the wrong way." if moved == "the wrong way" else "it did not move.")
        body.append(sentence)
    lim = _limiter(ev)
    if lim:
        body.append(lim)
    for name, before, after in ev.get("new_stalls", []):
        body.append(f"New in this step: {name.replace('_', ' ')} stalls ({fmt(before)} → {fmt(after)} per issued "
                    f"instruction), {_meaning(kid, name)}.")
    ir = ev.get("instructions_ratio")
    if ir and abs(ir - 1) >= 0.1:
        grid = ""
        if ev.get("grid") and ev.get("parent_grid") and ev["grid"] != ev["parent_grid"]:
            grid = f"; its grid is {count(ev['grid'])} CTAs (parent {count(ev['parent_grid'])})"
        body.append(f"It executes {times(ir)} its parent's instructions{grid}.")
    if _register_bound(ev.get("reg_limit"), ev.get("grid"), ev.get("sms")):
        body.append(f"Its {count(ev['registers'])} registers per thread allow {count(ev['reg_limit'])} CTAs per "
                    f"SM, fewer than its grid of {count(ev['grid'])} CTAs needs on {count(ev['sms'])} SMs.")
    return head + "\n\n" + " ".join(body)


def header_text(kid: str) -> Optional[str]:
    """The comment block that opens a kernel's source file (what changed, why, the prediction, the metric)."""
    try:
        path = kernels.get(kid).path
        lines = path.read_text().splitlines()
    except (KeyError, OSError):
        return None
    head = []
    for line in lines:
        if not line.startswith("//"):
            break
        head.append(line[2:].removeprefix(" "))
    return "\n".join(head) or None


def show_rung(rec: Record, kid: str) -> None:
    """A rung's worklog paragraph (computed) and its kernel header in a dropdown."""
    book.md(rung_md(rec, kid))
    text = header_text(kid)
    if text:
        try:
            name = kernels.get(kid).source
        except KeyError:
            name = kid
        book.dropdown(f"The header of kernels/{name}", code=text)


# ----------------------------------------------------------------------------------------------- after step 05
def descendants(rec: Record, kid: str) -> List[str]:
    kids = children(rec)
    out, todo = [], list(kids.get(kid, []))
    while todo:
        k = todo.pop(0)
        out.append(k)
        todo += kids.get(k, [])
    order = [r["id"] for r in rungs(rec)]
    return sorted(out, key=order.index)


def after_rows(rec: Record, base: str = BASE_STEP) -> List[dict]:
    """Every rung built on ``base``: its time, the verdict against ``base``, and the report numbers that differ."""
    b = ncu_row(rec, base)
    spread = repeat_spread(rec)
    out = []
    for kid in descendants(rec, base):
        s = ncu_row(rec, kid)
        c = compare_rows(mission_row(rec, kid), mission_row(rec, base), spread)
        out.append({"rung": label(kid), "median µs": us(rec, kid), f"vs {short(base)}": verdict_text(c),
                    f"instructions ÷ {short(base)}": s["instructions"] / b["instructions"] if s.get("instructions")
                    and b.get("instructions") else None,
                    "issue active %": s.get("issue_active_pct"), "membar stalls": s.get("stall_membar"),
                    "occupancy %": s.get("achieved_occupancy_pct")})
    return out


def after_md(rec: Record, base: str = BASE_STEP) -> str:
    """Which rungs built on ``base`` are slower, tied or faster on this record, and what their reports show."""
    if mission_row(rec, base) is None:
        return f"*This record has no timing of {label(base)}.*"
    spread = repeat_spread(rec)
    groups: Dict[str, List[str]] = {"slower": [], "tie": [], "faster": []}
    for kid in descendants(rec, base):
        c = compare_rows(mission_row(rec, kid), mission_row(rec, base), spread)
        if c:
            groups[c["verdict"]].append(kid)
    b_name = short(base)

    def names(ids):
        return _join([label(i) for i in ids])

    parts = []
    if groups["slower"]:
        parts.append(f"{names(groups['slower'])} {'is' if len(groups['slower']) == 1 else 'are'} slower than "
                     f"{label(base)}")
    if groups["tie"]:
        parts.append(f"{names(groups['tie'])} {'ties' if len(groups['tie']) == 1 else 'tie'} with it")
    if groups["faster"]:
        parts.append(f"{names(groups['faster'])} {'is' if len(groups['faster']) == 1 else 'are'} faster")
    if not parts:
        return f"No rung of this record is built on {label(base)}."
    text = f"On this record ({gpu(rec)}), " + "; ".join(parts) + "."
    b = ncu_row(rec, base)
    slow = [k for k in groups["slower"] if ncu_row(rec, k)]
    if not slow:
        return text
    if not b:
        return text + f" The record has no Nsight Compute report of {label(base)} to compare theirs with."

    def listed(fn, ids):
        return _join([f"{short(k)} {fn(ncu_row(rec, k))}" for k in ids])

    def has(key, test):
        return [k for k in slow if ncu_row(rec, k).get(key) is not None and b.get(key) is not None
                and test(ncu_row(rec, k)[key], b[key])]

    findings = []
    more = has("instructions", lambda v, w: v >= 1.05 * w)
    if more:
        ratios = listed(lambda r: times(r["instructions"] / b["instructions"]), more)
        findings.append(f"more instructions executed ({ratios} of {b_name}'s)")
    fence = has("stall_membar", lambda v, w: v >= 0.1 and w < 0.05)
    if fence:
        findings.append(f"waits at memory fences, which {b_name} never has (membar stalls per issued instruction: "
                        f"{listed(lambda r: fmt(r['stall_membar']), fence)})")
    lsb = has("stall_long_scoreboard", lambda v, w: v >= 1.5 * w)
    if lsb:
        findings.append(f"longer waits on L1TEX operations (long-scoreboard stalls, {b_name} "
                        f"{fmt(b['stall_long_scoreboard'])}: {listed(lambda r: fmt(r['stall_long_scoreboard']), lsb)})")
    low = has("issue_active_pct", lambda v, w: v < 0.9 * w)
    if low:
        findings.append(f"fewer issued instructions per cycle (issue active, {b_name} {pct(b['issue_active_pct'])}: "
                        f"{listed(lambda r: pct(r['issue_active_pct']), low)})")
    tens = has("tensor_pipe_pct", lambda v, w: v < 0.9 * w)
    if tens:
        findings.append(f"a less busy tensor pipe ({b_name} {pct(b['tensor_pipe_pct'])}: "
                        f"{listed(lambda r: pct(r['tensor_pipe_pct']), tens)})")
    occ = has("achieved_occupancy_pct", lambda v, w: v > 1.1 * w)
    if occ:
        findings.append(f"more resident warps that did not buy time (achieved occupancy, {b_name} "
                        f"{pct(b['achieved_occupancy_pct'])}: "
                        f"{listed(lambda r: pct(r['achieved_occupancy_pct']), occ)})")
    regs = [k for k in slow if _register_bound(ncu_row(rec, k).get("occupancy_limit_registers"),
                                               ncu_row(rec, k).get("grid_size"), ncu_row(rec, k).get("sm_count"))]
    if regs:
        findings.append("register pressure that caps the CTAs per SM below what the grid needs ("
                        + listed(lambda r: f"{count(r['registers_per_thread'])} registers → "
                                           f"{count(r['occupancy_limit_registers'])} CTAs per SM", regs) + ")")
    if findings:
        text += (f" Their Nsight Compute reports, against {b_name}'s, show " + "; ".join(findings) + ".")
    split = [k for k in slow if (ncu_row(rec, k).get("grid_size") or 0) > (b.get("grid_size") or 1e99)]
    if split and (more or fence):
        text += (f" The split-KV rungs among them ({_join([short(k) for k in split])}) launch more CTAs than "
                 f"{b_name} ({count(b.get('grid_size'))}), each walking fewer keys; but every CTA repeats the Q load "
                 "and the pipeline prologue, and the cluster adds the combine and its barrier"
                 + (f", whose release fence shows as membar stalls in {_join([short(k) for k in fence])}" if fence
                    else "") + ". At this shape that overhead outweighs the shorter walk.")
    same = [k for k in groups["tie"] if ncu_row(rec, k) and (
        (ncu_row(rec, k).get("instructions") or 0) >= 1.05 * (b.get("instructions") or 1e99)
        or ((ncu_row(rec, k).get("stall_membar") or 0) >= 0.1 and (b.get("stall_membar") or 0) < 0.05))]
    if same:
        text += (f" {_cap(_join([short(k) for k in same]))} show the same overheads in their reports (more "
                 f"instructions, fence waits) and only tie with {b_name}: what the split saves, the overhead spends.")
    return text


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _join(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def show_after(rec: Record, base: str = BASE_STEP) -> None:
    book.md(after_md(rec, base))
    rows = after_rows(rec, base)
    if rows:
        book.table(rows, formats={"median µs": fmt, f"instructions ÷ {short(base)}": "{:.2f}",
                                  "membar stalls": "{:.2f}", "issue active %": "{:.1f}", "occupancy %": "{:.1f}"},
                   caption=f"The rungs built on {label(base)}, against it (ncu at the mission shape)")


# ----------------------------------------------------------------------------------------------- ncu evidence
def metric_rows(rec: Record) -> List[dict]:
    """Each rung's named metric in its parent's report and in its own, and whether it moved as intended."""
    out = []
    for r in rungs(rec):
        if not r.get("parent"):
            continue
        m = moving_metric(r)
        before, after = ncu_row(rec, r["parent"]).get(m), ncu_row(rec, r["id"]).get(m)
        out.append({"rung": label(r["id"]), "metric": METRIC_LABELS.get(m, m.replace("_", " ")),
                    "parent": before, "rung value": after,
                    "change": after / before if before and after is not None else None,
                    "moved": {"not": "no change"}.get(_moved(m, before, after), _moved(m, before, after))})
    return out


def show_metrics(rec: Record) -> None:
    book.table(metric_rows(rec), formats={"parent": compact, "rung value": compact, "change": "{:.2f}×"},
               caption="The main metric each header names: parent's report → the rung's report")


def ncu_rows(rec: Record) -> List[dict]:
    out = []
    for r in rungs(rec):
        s = ncu_row(rec, r["id"])
        if s:
            out.append({"rung": label(r["id"]), "ncu µs": s.get("duration_us"),
                        "issue active %": s.get("issue_active_pct"), "tensor pipe %": s.get("tensor_pipe_pct"),
                        "occupancy %": s.get("achieved_occupancy_pct"), "grid": s.get("grid_size"),
                        "registers": s.get("registers_per_thread")})
    return out


def show_ncu(rec: Record) -> None:
    book.table(ncu_rows(rec), formats={"ncu µs": fmt, "issue active %": "{:.1f}", "tensor pipe %": "{:.1f}",
                                       "occupancy %": "{:.1f}", "grid": count, "registers": count},
               caption="Nsight Compute at the mission shape (clocks locked to base: durations are longer than "
                       "the graph-replay times)")


def stall_rows(rec: Record, top: int = 5) -> List[dict]:
    """Warps stalled per issued instruction, per rung: the ``top`` reasons over all rungs, the rest as "other"."""
    per = {r["id"]: _stalls(ncu_row(rec, r["id"])) for r in rungs(rec) if ncu_row(rec, r["id"])}
    total: Dict[str, float] = {}
    for d in per.values():
        for k, v in d.items():
            total[k] = total.get(k, 0.0) + v
    keep = [k for k, _ in sorted(total.items(), key=lambda kv: -kv[1])[:top]]
    out = []
    for kid, d in per.items():
        row = {"rung": label(kid), **{k.replace("_", " "): d.get(k, 0.0) for k in keep}}
        row["other"] = sum(v for k, v in d.items() if k not in keep)
        out.append(row)
    return out


def stalls_md(rec: Record) -> str:
    """The stall chart in one computed sentence: total waits per issued instruction, first and last rung, and
    each one's largest reason."""
    rs = [r["id"] for r in rungs(rec) if ncu_row(rec, r["id"])]
    if len(rs) < 2:
        return "*This record has too few Nsight Compute reports for a comparison.*"
    first, last = rs[0], rs[-1]
    sf, sl = _stalls(ncu_row(rec, first)), _stalls(ncu_row(rec, last))
    top_f, top_l = next(iter(sf), None), next(iter(sl), None)
    return (f"Warps waiting per issued instruction: {fmt(sum(sf.values()))} in {label(first)} (mostly "
            f"{(top_f or '—').replace('_', ' ')}), {fmt(sum(sl.values()))} in {label(last)} (mostly "
            f"{(top_l or '—').replace('_', ' ')}: {STALL_MEANING.get(top_l, top_l)}).")


def show_stalls(rec: Record) -> None:
    book.md(stalls_md(rec))


def sass_rows(rec: Record) -> List[dict]:
    """Static SASS instruction counts per rung (as recorded; an nvcc count computed here where the record has
    none)."""
    ev = dict(rec.get("extra", {}).get("sass") or {})
    out = []
    for r in rungs(rec):
        e = ev.get(r["id"]) or {}
        if not e or "error" in e:
            try:
                from ...tools import sass
                e = dict(sass.evidence(kernels.get(r["id"])), cubin_from="nvcc sm_90 (computed at build)")
            except Exception:      # no nvcc here, or the kernel is gone: the row says so with dashes
                e = {}
        out.append({"rung": label(r["id"]), "HMMA": e.get("HMMA"), "LDSM (ldmatrix)": e.get("LDSM"),
                    "LDGSTS (cp.async)": e.get("LDGSTS"), "BAR": e.get("BAR"), "MUFU.EX2": e.get("MUFU.EX2"),
                    "local LDL+STL": (e["LDL"] + e["STL"]) if "LDL" in e and "STL" in e else None})
    return out


def show_sass(rec: Record) -> None:
    book.table(sass_rows(rec), caption="Static instruction counts in each rung's cubin (cuobjdump -sass)")


# ----------------------------------------------------------------------------------------------- correctness
def check_rows(rec: Record) -> List[dict]:
    out = []
    for r in rungs(rec):
        for x in sorted(rec.rows(kernel=r["id"]), key=lambda x: (x["S"], x.get("S_kv", x["S"]))):
            if x.get("passed") is None and not x.get("error"):
                continue
            out.append({"rung": label(r["id"]), "shape": shape_text(x["B"], x["H"], x["S"])
                        + (f" S_kv{x['S_kv']}" if x.get("S_kv", x["S"]) != x["S"] else ""),
                        "passed": x.get("passed"), "max |err|": x.get("max_abs_err"), "tolerance": x.get("tol"),
                        "deterministic": x.get("deterministic")})
    return out


def check_summary(rec: Record) -> dict:
    rows = check_rows(rec)
    failed = [r for r in rows if r["passed"] is not True]
    worst = max((r["max |err|"] / r["tolerance"] for r in rows if r.get("tolerance") and r.get("max |err|")
                 is not None), default=None)
    shapes = sorted({r["shape"] for r in rows})
    return dict(checks=len(rows), passed=len(rows) - len(failed), failed=failed, worst=worst,
                rungs=len({r["rung"] for r in rows}), shapes=shapes,
                deterministic=all(r["deterministic"] for r in rows if r["deterministic"] is not None))


def sanitizer_verdicts(rec: Record) -> dict:
    """{(tool, kernel): verdict} from the stored per-kernel verdicts (the one rule of tools.sanitize)."""
    return {(v["tool"], v["kernel"]): v["clean"] for v in rec.get("extra", {}).get("sanitizer_verdicts", [])}


def sanitizer_md(rec: Record) -> str:
    verdicts = sanitizer_verdicts(rec)
    if not verdicts:
        return "*This record has no compute-sanitizer run.*"
    ids = [r["id"] for r in rungs(rec)]
    parts = []
    for tool in dict.fromkeys(t for t, _ in verdicts):
        mine = {k: v for (t, k), v in verdicts.items() if t == tool and k in ids}
        clean = [k for k, v in mine.items() if v is True]
        flagged = [k for k, v in mine.items() if v is False]
        unrun = [k for k, v in mine.items() if v is None]
        text = f"{tool}: {len(clean)} of {len(mine)} rungs clean"
        if flagged:
            text += f", **flagged: {', '.join(label(k) for k in flagged)}**"
        if unrun:
            text += f", did not run to the end: {', '.join(label(k) for k in unrun)}"
        parts.append(text)
    shapes = {s.get("shapes") for s in rec.get("extra", {}).get("sanitizer", []) if s.get("shapes")}
    where = f" (shapes B,H,S,D[,S_kv]: {'; '.join(sorted(shapes))})" if shapes else ""
    return "compute-sanitizer" + where + ": " + "; ".join(parts) + "."


def show_checks(rec: Record) -> None:
    s = check_summary(rec)
    if not s["checks"]:
        book.md("*This record has no checks.*")
        return
    verdict = (f"**All {s['checks']} checks passed** ({s['rungs']} rungs × {len(s['shapes'])} shapes)" if not
               s["failed"] else f"**{len(s['failed'])} of {s['checks']} checks failed**: " + ", ".join(
                   f"{r['rung']} at {r['shape']}" for r in s["failed"]))
    worst = (f"; the largest error is {s['worst']:.2f} of its tolerance" if s["worst"] is not None else "")
    det = "; every output is bitwise deterministic across runs" if s["deterministic"] else ""
    book.md(verdict + worst + det + ". " + sanitizer_md(rec))
    body = book.table(check_rows(rec), formats={"max |err|": "{:.1e}", "tolerance": "{:.1e}"}, show=False)
    book.dropdown(f"Every check ({s['checks']} rows): rung, shape, max |err| against fp64, tolerance", body)


# ----------------------------------------------------------------------------------------------- scaling
def sweep_rows(rec: Record, big: bool = False) -> List[dict]:
    return [r for r in rec.get("extra", {}).get("sweep", []) or [] if bool(r.get("big")) == big
            and r.get("median_us")]


def losses(rec: Record, kernel: Optional[str] = None) -> dict:
    """Against each sweep peer: the sweep's S values where ``kernel`` (the record's best, normally flashcore) is
    slower / faster / tied by the tie rule, and ``behind_from``: the smallest S from which it is slower at every
    longer S of the sweep (None if it never is)."""
    kernel = kernel or rec.get("extra", {}).get("best") or LIBRARY
    rows = sweep_rows(rec)
    spread = repeat_spread(rec)
    out = {}
    for peer in SWEEP_PEERS:
        verdicts = {}
        for S in sorted({r["S"] for r in rows}):
            a = next((r for r in rows if r["kernel"] == kernel and r["S"] == S), None)
            b = next((r for r in rows if r["kernel"] == peer and r["S"] == S), None)
            c = compare_rows(a, b, spread)
            if c:
                verdicts[S] = c
        if not verdicts:
            continue
        Ss = sorted(verdicts)
        behind = None
        for i in range(len(Ss) - 1, -1, -1):
            if verdicts[Ss[i]]["verdict"] == "slower":
                behind = Ss[i]
            else:
                break
        out[peer] = dict(verdicts=verdicts, behind_from=behind,
                         ahead=[S for S in Ss if verdicts[S]["verdict"] == "faster"],
                         behind=[S for S in Ss if verdicts[S]["verdict"] == "slower"])
    return out


def big_rows(rec: Record) -> List[dict]:
    big = sweep_rows(rec, big=True)
    cud = next((r["tflops"] for r in big if r["kernel"] == "sdpa_cudnn"), None)
    return [{"kernel": label(r["kernel"]), "µs": r["median_us"], "TFLOP/s": r["tflops"],
             "÷ cuDNN TFLOP/s": r["tflops"] / cud if cud else None} for r in big]


def peers_rows(rec: Record) -> List[dict]:
    cud = us(rec, "sdpa_cudnn")
    out = []
    for n in PEERS + (LIBRARY,):
        r = mission_row(rec, n)
        if r and r.get("median_us"):
            out.append({"kernel": label(n), "median µs": r["median_us"], "p10–p90 µs":
                        f"{fmt(r['p10_us'])}–{fmt(r['p90_us'])}" if r.get("p10_us") else None,
                        "time ÷ cuDNN": r["median_us"] / cud if cud else None, "TFLOP/s": r.get("tflops")})
    return out


def show_scaling_tables(rec: Record) -> None:
    B, H, S, D = mission_shape(rec)
    book.table(peers_rows(rec), formats={"median µs": fmt, "time ÷ cuDNN": "{:.2f}", "TFLOP/s": "{:.1f}"},
               caption=f"The peers at the mission shape {shape_text(B, H, S, D)}, same process")
    big = rec.get("extra", {}).get("big")
    if big_rows(rec):
        book.table(big_rows(rec), formats={"µs": fmt, "TFLOP/s": "{:.0f}", "÷ cuDNN TFLOP/s": "{:.2f}"},
                   caption=f"The large shape {shape_text(*big)}" if big else "The large shape")


# ----------------------------------------------------------------------------------------------- conclusion
def conclusion_md(rec: Record, variants: Optional[Record] = None) -> str:
    """What the ladder bought and where the library kernel loses, from the record."""
    h = headline(rec)
    parts = []
    if h["seed"] and h["library"]:
        gains = []
        for r in rungs(rec):
            c = compare(rec, r["id"], r.get("parent")) if r.get("parent") else None
            if c and c["verdict"] == "faster":
                gains.append((c["ratio"], r["id"]))
        gains.sort(reverse=True)
        evs = [rung_evidence(rec, r["id"]) for r in rungs(rec)]
        predicted = [e for e in evs if e["ratio_to_prediction"]]
        missed = [e for e in predicted if abs(e["ratio_to_prediction"] - 1) > HELD]
        slow = [e for e in missed if e["ratio_to_prediction"] > 1]
        if len(missed) == len(predicted):
            miss = f"All {len(predicted)} predictions missed by more than {HELD:.0%}"
        else:
            miss = f"{len(missed)} of {len(predicted)} predictions missed by more than {HELD:.0%}"
        if missed:
            miss += (", all of them optimistic (the kernel took longer than predicted)" if len(slow) == len(missed)
                     else f", {len(slow)} of them optimistic")
        parts.append(
            f"**What the ladder bought.** At {h['shape']} on {h['gpu']}, from the seed's {fmt(h['seed'])} µs to "
            f"flashcore's {fmt(h['library'])} µs: {times(h['speedup'])}. The seed took {times(h['seed_x_cudnn'])} "
            f"cuDNN's time; flashcore is {_against(compare(rec, LIBRARY, 'sdpa_cudnn'), 'cuDNN')}, and "
            f"{_against(compare(rec, LIBRARY, 'triton_attention'), 'our Triton kernel')}. The largest single "
            f"gains were {_join([f'{label(k)} ({times(g)})' for g, k in gains[:3]])}. {miss}.")
    lo = losses(rec)
    if lo:
        kernel = rec.get("extra", {}).get("best") or LIBRARY
        rows = sweep_rows(rec)
        behind = {p: v["behind_from"] for p, v in lo.items()}
        lists = [f"{label(p)} " + (f"from S = {s} on" if s else "at no length from some S on")
                 for p, s in behind.items()]
        sentence = (f"**Where it loses.** In this record's scaling sweep at B{rows[0]['B']} H{rows[0]['H']}, "
                    f"{label(kernel)} is behind " + _join(lists) + ".")
        if all(behind.values()):
            sentence += f" From S = {max(behind.values())} on it is behind all {len(behind)} of them."
        common = sorted(set.intersection(*(set(v["ahead"]) for v in lo.values())))
        sentence += (f" It is ahead of all {len(lo)} only at S = {_join([str(x) for x in common])}." if common else
                     f" At no length of the sweep is it ahead of all {len(lo)}.")
        bigs = sweep_rows(rec, big=True)
        mine = next((r for r in bigs if r["kernel"] == kernel), None)
        if mine:
            others = [(r["kernel"], r["tflops"]) for r in bigs if r["kernel"] != kernel and r.get("tflops")]
            big = rec.get("extra", {}).get("big") or [mine["B"], mine["H"], mine["S"]]
            sentence += (f" At {shape_text(*big[:3])} it reaches {fmt(mine['tflops'])} TFLOP/s: "
                         + _join([f"{mine['tflops'] / t:.2f}× {label(k)}'s" for k, t in others]) + ".")
        parts.append(sentence)
    if variants is not None:
        v = variant_verdict(variants)
        if v:
            parts.append(f"**The last choice.** {v}")
    return "\n\n".join(parts) if parts else "*This record lacks the timings a conclusion needs.*"


def show_conclusion(rec: Record, variants: Optional[Record] = None) -> None:
    book.md(conclusion_md(rec, variants))


# ----------------------------------------------------------------------------------------------- the variants
def variant_label(r: dict) -> str:
    """A variant's name on the page: the base kernel for a build (naming the registered kernel whose point it is),
    the kernel itself for a registered kernel timed at its point."""
    if r.get("kind") == "registered":
        return label(r["id"]) + (" (library kernel)" if r["id"] == LIBRARY else " (registered kernel)")
    reg = r.get("registered")
    return label(r["base"]) + (f" (build at {label(reg)}'s point)" if reg and reg != r["base"] else "")


def _vrow(vrec: Record, kid: str, shape) -> Optional[dict]:
    B, H, S = (int(x) for x in shape[:3])
    rows = [r for r in vrec.rows(kernel=kid, B=B, H=H, S=S) if r.get("median_us") and r.get("role") != "check"]
    return rows[0] if rows else None


def variant_shapes(vrec: Record) -> List[tuple]:
    B, H, S, _ = mission_shape(vrec)
    return [(B, H, S)] + [tuple(int(x) for x in s[:3]) for s in vrec.ext("shapes")]


def variant_rows(vrec: Record) -> List[dict]:
    """One row per variant: cluster, stages, µs at the mission shape, and time ÷ cuDNN's at every timed shape;
    sorted by the mission time."""
    shapes = variant_shapes(vrec)
    out = []
    for v in vrec.ext("variants"):
        row = {"variant": variant_label(v), "cluster": v["cluster"], "stages": v["stages"]}
        m = _vrow(vrec, v["id"], shapes[0])
        row[f"S{shapes[0][2]} µs"] = m["median_us"] if m else None
        for sh in shapes:
            mine, cud = _vrow(vrec, v["id"], sh), _vrow(vrec, "sdpa_cudnn", sh)
            key = f"÷ cuDNN {'S' + str(sh[2]) if sh[:2] == shapes[0][:2] else shape_text(*sh).replace(' ', '')}"
            row[key] = mine["median_us"] / cud["median_us"] if mine and cud else None
        out.append(row)
    return sorted(out, key=lambda r: (r[f"S{shapes[0][2]} µs"] is None, r[f"S{shapes[0][2]} µs"] or 0))


def variant_checks(vrec: Record) -> dict:
    ids = {v["id"] for v in vrec.ext("variants")}
    rows = [r for r in vrec["results"] if r["kernel"] in ids and r.get("passed") is not None or
            (r["kernel"] in ids and r.get("error"))]
    failed = [r for r in rows if r.get("passed") is not True]
    return dict(checks=len(rows), failed=failed, variants=len(ids),
                shapes=len({(r["B"], r["H"], r["S"], r.get("S_kv", r["S"])) for r in rows}))


def variant_verdict(vrec: Record) -> str:
    """Which variant is fastest at the mission shape, and whether the library's choice holds on this record."""
    shapes = variant_shapes(vrec)
    spread = repeat_spread(vrec)
    vs = vrec.ext("variants")
    timed = [(v, _vrow(vrec, v["id"], shapes[0])) for v in vs]
    timed = [(v, r) for v, r in timed if r]
    if not timed:
        return ""
    best_v, best_r = min(timed, key=lambda vr: vr[1]["median_us"])
    lib = next(((v, r) for v, r in timed if v.get("registered") == vrec.ext("library")), None)
    text = (f"At {shape_text(*shapes[0])} on {gpu(vrec)} the fastest variant is {variant_label(best_v)} "
            f"({fmt(best_r['median_us'])} µs).")
    if lib and lib[0]["id"] != best_v["id"]:
        c = compare_rows(lib[1], best_r, spread)
        text += (f" The library's choice, {variant_label(lib[0])}, " +
                 (f"ties with it ({c['why']}): the choice holds." if c and c["verdict"] == "tie" else
                  f"is {verdict_text(c)} than it: on this GPU the sweep would choose differently."))
    elif lib:
        text += " It is the library's choice: the choice holds on this GPU."
    return text


def variants_md(vrec: Optional[Record], rec: Record) -> str:
    if vrec is None:
        return (f"*This GPU ({gpu(rec)}) has no variants record yet: run the chapter live (`mode='live'`) to "
                f"measure it.*")
    p = vrec["provenance"]
    s = variant_checks(vrec)
    ok = (f"All {s['variants']} variants passed all their checks ({s['checks']} checks at {s['shapes']} shapes)."
          if not s["failed"] else f"**{len(s['failed'])} of {s['checks']} checks failed**: " + ", ".join(
              f"{r['kernel']} at {shape_text(r['B'], r['H'], r['S'])}" for r in s["failed"]) + ".")
    text = (f"Record `{vrec['run_id']}` ({p.get('gpu')}, {p.get('date')}, commit `{str(p.get('commit'))[:10]}`). "
            f"{ok} {variant_verdict(vrec)}")
    shapes = variant_shapes(vrec)
    unsplit = [sh for sh in shapes[1:] if all(not (_vrow(vrec, v["id"], sh) or {}).get("split", True)
                                              for v in vrec.ext("variants"))]
    for sh in unsplit:
        rows = [(v, _vrow(vrec, v["id"], sh)) for v in vrec.ext("variants")]
        rows = [(v, r) for v, r in rows if r]
        if len(rows) > 1:
            lo = min(rows, key=lambda vr: vr[1]["median_us"])
            hi = max(rows, key=lambda vr: vr[1]["median_us"])
            text += (f" At {shape_text(*sh)} no variant splits the keys, so there they differ only in the cluster "
                     f"shape they are launched with and the ring depth: from {fmt(lo[1]['median_us'])} µs "
                     f"({variant_label(lo[0])}) to {fmt(hi[1]['median_us'])} µs ({variant_label(hi[0])}).")
    return text


def show_variants(vrec: Optional[Record], rec: Record) -> None:
    book.md(variants_md(vrec, rec))
    if vrec is None:
        return
    rows = variant_rows(vrec)
    fmts = {k: ("{:.2f}" if k.startswith("÷") else fmt) for k in rows[0]} if rows else {}
    book.table(rows, formats=fmts, caption="The variant sweep: cluster size (C) × cp.async ring stages (S); "
                                           "time ÷ cuDNN's in the same process (< 1: faster than cuDNN)")


# ----------------------------------------------------------------------------------------------- charts
_VERDICT_COLORS = {"faster": "#4d4d4d", "tie": "#a6a6a6", "slower": "#e3a3a3", None: "#4d4d4d"}


def _log_ticks(ax, lo: float, hi: float, axis: str = "x") -> None:
    """Plain-number ticks at 1-2-5 steps on a log axis (10¹ and 10² alone say too little)."""
    from matplotlib.ticker import NullFormatter

    ticks = [m * 10 ** e for e in range(-2, 7) for m in (1, 2, 5) if lo <= m * 10 ** e <= hi]
    set_ticks = ax.set_xticks if axis == "x" else ax.set_yticks
    set_labels = ax.set_xticklabels if axis == "x" else ax.set_yticklabels
    set_ticks(ticks)
    set_labels([f"{t:g}" for t in ticks])
    (ax.xaxis if axis == "x" else ax.yaxis).set_minor_formatter(NullFormatter())


def plot_waterfall(rec: Record, name: str = "03_v8_waterfall"):
    """The ladder, one bar per rung (log µs), top to bottom: colour = the verdict against its parent, ◆ = the
    header's prediction, dashed lines = the peers; each rung's µs and verdict in a column right of the axes (so no
    label crosses a reference line)."""
    from matplotlib.patches import Patch

    plt = plots.plt()
    B, H, S, D = mission_shape(rec)
    rs = rungs(rec)
    spread = repeat_spread(rec)
    n = len(rs)
    fig, ax = plt.subplots(figsize=(7.2, 0.36 * n + 2.0))
    y = list(range(n))[::-1]
    vals, colors, notes = [], [], []
    for r in rs:
        t = us(rec, r["id"])
        c = compare_rows(mission_row(rec, r["id"]), mission_row(rec, r.get("parent")), spread)
        vals.append(t)
        colors.append(plots.COLORS["flashcore"] if r["id"] == LIBRARY else _VERDICT_COLORS[c["verdict"] if c
                                                                                           else None])
        notes.append(f"{fmt(t)} µs" + (f"   {verdict_text(c)}" if c else "") if t else "not timed")
    ax.barh(y, [v or 0 for v in vals], color=colors, height=0.7)
    preds = [(yy, r.get("predicted_us")) for yy, r in zip(y, rs) if r.get("predicted_us")]
    ax.plot([p for _, p in preds], [yy for yy, _ in preds], "D", color="white", mec="black", mew=1.0, ms=6.5,
            label="predicted (kernel header)", zorder=3)
    lines = []
    for peer in ("sdpa_cudnn", "sdpa_flash", "triton_attention"):
        t = us(rec, peer)
        if t:
            lines.append(ax.axvline(t, ls="--", lw=1.2, color=plots.COLORS[peer],
                                    label=f"{label(peer)}: {fmt(t)} µs"))
    ax.set_xscale("log")
    everything = [v for v in vals if v] + [p for _, p in preds] + [ln.get_xdata()[0] for ln in lines]
    ax.set_xlim(min(everything) / 1.6, max(everything) * 1.4)
    _log_ticks(ax, *ax.get_xlim())
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_yticks(y)
    ax.set_yticklabels([label(r["id"]) for r in rs])
    ax.set_xlabel("µs per launch (CUDA-graph replay, log scale)")
    tr = ax.get_yaxis_transform()
    for yy, note in zip(y, notes):
        ax.text(1.02, yy, note, transform=tr, va="center", ha="left", fontsize=8)
    ax.text(1.02, n - 0.35, "measured · vs parent", transform=tr, va="bottom", ha="left", fontsize=8,
            fontweight="bold")
    handles = [Patch(color=_VERDICT_COLORS["faster"], label="faster than its parent"),
               Patch(color=_VERDICT_COLORS["tie"], label="tie with its parent"),
               Patch(color=_VERDICT_COLORS["slower"], label="slower than its parent"),
               Patch(color=plots.COLORS["flashcore"], label=label(LIBRARY))]
    handles += ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.45, -0.07 - 0.5 / n), ncol=2, fontsize=8,
              frameon=False)
    ax.grid(axis="y", visible=False)
    ax.set_title(f"The v8 ladder at {shape_text(B, H, S, D)}, {gpu(rec)}", fontsize=9.5, loc="left")
    plots.save(fig, name, rec, alt="The v8 ladder: measured and predicted time per rung, peers as lines")
    return fig


def plot_moving_metrics(rec: Record, name: str = "03_v8_moving_metrics"):
    """One panel per rung: the metric its header names, in the parent's report and in its own; the rung's bar is
    green if the metric moved as intended, red if the wrong way, grey if it did not move."""
    plt = plots.plt()
    panels = []
    for r in rungs(rec):
        if not r.get("parent"):
            continue
        m = moving_metric(r)
        before, after = ncu_row(rec, r["parent"]).get(m), ncu_row(rec, r["id"]).get(m)
        if before is not None and after is not None:
            panels.append((r, m, before, after, _moved(m, before, after)))
    n = max(1, len(panels))
    cols = min(3, n)
    rows_ = -(-n // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(2.4 * cols, 2.2 * rows_ + 0.5), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    color = {"as intended": "#2ca02c", "the wrong way": "#d62728", "not": "#9e9e9e"}
    for ax, (r, m, before, after, moved) in zip(axes.flat, panels):
        bars = ax.bar(["parent", "rung"], [before, after], color=["#c7c7c7", color.get(moved, "#9e9e9e")], width=0.6)
        top = max(before, after) or 1.0
        ax.set_ylim(0, top * 1.3)
        for b, v in zip(bars, (before, after)):
            ax.text(b.get_x() + b.get_width() / 2, v + top * 0.03, compact(v), ha="center", va="bottom", fontsize=7)
        arrow = "↑" if m in HIGHER_IS_BETTER else "↓"
        ax.set_title(f"{label(r['id'])}\n{METRIC_LABELS.get(m, m)} ({arrow} wanted)", fontsize=7.5)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
        ax.grid(False)
    fig.suptitle("Did each idea move the metric its header names?\nNsight Compute, parent → rung: green = as "
                 "intended, red = the wrong way, grey = within 5%", fontsize=9)
    fig.tight_layout()
    plots.save(fig, name, rec, alt="Each rung's named Nsight Compute metric, parent vs rung")
    return fig


def plot_stalls(rec: Record, name: str = "03_v8_stalls"):
    """Warps stalled per issued instruction, by reason, per rung (stacked), the total right of the axes."""
    plt = plots.plt()
    rows = stall_rows(rec)
    n = max(3, len(rows))
    fig, ax = plt.subplots(figsize=(7.2, 0.36 * n + 1.6))
    if rows:
        reasons = [k for k in rows[0] if k != "rung"]
        cmap = plt.get_cmap("tab10")
        left = [0.0] * len(rows)
        y = list(range(len(rows)))[::-1]
        for i, reason in enumerate(reasons):
            vals = [r[reason] for r in rows]
            ax.barh(y, vals, left=left, color=cmap(i % 10) if reason != "other" else "#cccccc", height=0.7,
                    label=reason)
            left = [a + b for a, b in zip(left, vals)]
        ax.set_yticks(y)
        ax.set_yticklabels([r["rung"] for r in rows])
        tr = ax.get_yaxis_transform()
        for yy, tot in zip(y, left):
            ax.text(1.01, yy, fmt(tot), transform=tr, va="center", ha="left", fontsize=8)
        ax.text(1.01, len(rows) - 0.4, "total", transform=tr, va="bottom", ha="left", fontsize=8,
                fontweight="bold")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.5 / n), ncol=4, fontsize=8, frameon=False)
    ax.set_xlabel("warps stalled per issued instruction\n(Nsight Compute warp-state statistics; issuing excluded)")
    ax.grid(axis="y", visible=False)
    ax.set_title("Where the warps wait, rung by rung", fontsize=10)
    plots.save(fig, name, rec, alt="Warp stall reasons per rung")
    return fig


def plot_scaling(rec: Record, name: str = "03_v8_scaling"):
    """The library kernel against the peers over S: throughput (left) and time (right), one legend below."""
    plt = plots.plt()
    rows = sweep_rows(rec)
    best = rec.get("extra", {}).get("best") or LIBRARY
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(7.4, 3.5))
    for kid in dict.fromkeys(r["kernel"] for r in rows):
        mine = sorted((r for r in rows if r["kernel"] == kid), key=lambda r: r["S"])
        color = plots.COLORS["flashcore"] if kid == best else plots.COLORS.get(kid)
        kw = dict(color=color, lw=2.2 if kid == best else 1.3, ms=4)
        a1.plot([r["S"] for r in mine], [r["tflops"] for r in mine], "o-", label=label(kid), **kw)
        a2.plot([r["S"] for r in mine], [r["median_us"] for r in mine], "o-", **kw)
    Ss = sorted({r["S"] for r in rows})
    for a in (a1, a2):
        a.set_xscale("log", base=2)
        a.set_xticks(Ss)
        a.set_xticklabels([f"{s // 1024}k" if s >= 1024 else str(s) for s in Ss], fontsize=8)
        a.set_xlabel("sequence length S (keys = queries)")
    a2.set_yscale("log")
    a1.set_ylabel("TFLOP/s")
    a2.set_ylabel("µs per launch (log)")
    if rows:
        fig.suptitle(f"Scaling at B{rows[0]['B']} H{rows[0]['H']} D{rows[0]['D']} on {gpu(rec)}", fontsize=10)
    fig.legend(*a1.get_legend_handles_labels(), loc="upper center", ncol=4, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.93))
    fig.tight_layout(rect=(0, 0, 1, 0.86))
    plots.save(fig, name, rec, alt="Throughput and time over the sequence length, library kernel vs peers")
    return fig


def plot_all(rec: Record) -> None:
    for fn in (plot_waterfall, plot_moving_metrics, plot_stalls, plot_scaling):
        fn(rec)


def downloads(rec: Record, variants: Optional[Record] = None) -> None:
    book.downloads(rec)
    if variants is not None:
        book.downloads(variants)


__all__ = [n for n in dir() if not n.startswith("_") and n not in (
    "annotations", "math", "re", "Dict", "List", "Optional", "Sequence", "book", "kernels", "plots", "profile",
    "spread_rule", "Record")]
