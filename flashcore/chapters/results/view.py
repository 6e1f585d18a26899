"""Chapter 4's page, drawn from a run record only: the headline (and the landing page's copy of it), the journey, the
one-run table, the sequence sweep with its verdicts, the shape that fills the chip, the Nsight Compute comparisons,
and the answer to "what does a DSL buy".

Every comparison goes through the spread rule (:mod:`.spread`): a kernel is faster only where its measurements
separate from the other's by more than the record's run-to-run spread; otherwise the page says *tie*. Every number
and every conclusion in the prose is computed here from the record, so the page stays true on another GPU's record.

Records of two generations replay: those written before issue 12 (no ``role`` on rows, one ``best`` kernel, the
big shape as plain rows, one ncu report at the mission shape) and those of the current :mod:`.measure` (rows tagged
``mission``/``check``/``big``, ``ours``, the Triton autotuner's choices, two ncu reports). Where a record lacks
something, the page says the record predates it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ... import book, plots
from ...labels import label
from ...paths import BOOK_DIR
from ...records import Record, RecordError
from ...tools import profile
from .spread import FASTER, SLOWER, TIE, Noise, Verdict, compare, record_noise, shape_key, timed

__all__ = [
    "FASTER", "SLOWER", "TIE", "Verdict", "compare", "record_noise", "noise", "verdict",
    "mission", "ours", "journey", "mission_rows", "mission_row", "big_rows", "sweep_rows", "measurements",
    "summary_rows", "summary_table", "kernel_facts", "headline", "headline_markdown", "headline_numbers",
    "write_headline",
    "plot_headline", "plot_journey", "plot_scaling", "plot_loc", "plot_dsl", "sweep_time_rows", "sweep_verdict_rows",
    "sweep_tables", "big_table_rows", "big_table", "noise_markdown", "journey_markdown", "sweep_markdown",
    "profile_rows", "profile_table_rows", "stall_table_rows", "profile_tables", "long_s_findings",
    "long_s_markdown", "mission_profile_markdown", "dsl_markdown", "triton_config_rows", "triton_config_table",
    "limits_markdown",
    "fmt_us", "fmt_ratio",
]

CUDNN, FA2, TRITON, FA4, SEED, V12 = "sdpa_cudnn", "sdpa_flash", "triton_attention", "fa4_hopper", "v8_seed", \
    "v12_baseline"
HEADLINE_PEERS = (TRITON, CUDNN, FA2, FA4)      # beside our kernels in the headline chart, in this order
GENERATED_ENV = "FLASHCORE_GENERATED_DIR"       # tests write headline.md elsewhere (like FLASHCORE_FIGURES_DIR)


# ------------------------------------------------------------------------------------------------- formatting
def fmt_us(x: float) -> str:
    """A time in µs to 3 significant digits (whole µs from 100 up)."""
    x = float(x)
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def fmt_ratio(x: float) -> str:
    """A ratio: 2 decimals below 10, 3 significant digits above."""
    x = float(x)
    return f"{x:.2f}" if x < 10 else f"{x:.3g}" if x < 100 else f"{x:.0f}"


def _range(row: dict) -> str:
    return f"{fmt_us(row['p10_us'])}–{fmt_us(row['p90_us'])}"


def _tflops(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def _list(values: Sequence) -> str:
    values = [str(v) for v in values]
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def _shape(B, H, S, D=64) -> str:
    return f"B{B} H{H} S{S} D{D}"


def _gpu(rec: Record) -> str:
    return str(rec["provenance"].get("gpu"))


def _record_link(rec: Record) -> str:
    rel = f"runs/{rec.dir.parent.name}/{rec['run_id']}/run.json"
    return f"{{download}}`{rec['run_id']} </{rel}>`"      # a leading / is the book's root


# ------------------------------------------------------------------------------------------ reading the record
def mission(rec: Record) -> tuple:
    return tuple(rec.ext("mission"))


def ours(rec: Record) -> List[str]:
    """Our library kernels in the record: ``ours`` (current records), else the one ``best`` (older ones)."""
    extra = rec.get("extra", {})
    ids = extra.get("ours") or ([extra["best"]] if extra.get("best") else [])
    return [i for i in ids if rec.rows(kernel=i)]


def journey(rec: Record) -> List[str]:
    return [i for i in rec.ext("journey") if mission_row(rec, i)]


def _role(row: dict, default: str) -> str:
    return row.get("role", default)


def mission_rows(rec: Record) -> List[dict]:
    """Rows timed (or checked) at the mission shape — not the extra check shapes."""
    B, H, S, D = mission(rec)
    return [r for r in rec["results"] if _role(r, "mission") == "mission" and (r["B"], r["H"], r["S"]) == (B, H, S)]


def mission_row(rec: Record, kernel: str) -> Optional[dict]:
    rows = [r for r in mission_rows(rec) if r["kernel"] == kernel]
    return rows[0] if rows else None


def big_rows(rec: Record) -> List[dict]:
    """Rows of the shape that fills the chip (``role == "big"``, or, in older records, rows at that shape)."""
    Bb, Hb, Sb, Db = rec.ext("big")
    return [r for r in rec["results"] if _role(r, "big") == "big" and (r["B"], r["H"], r["S"]) == (Bb, Hb, Sb)]


def _big_row(rec: Record, kernel: str) -> Optional[dict]:
    rows = [r for r in timed(big_rows(rec)) if r["kernel"] == kernel]
    return rows[0] if rows else None


def sweep_rows(rec: Record) -> List[dict]:
    return list(rec.get("extra", {}).get("sweep", []))


def _sweep_row(rec: Record, kernel: str, S: int) -> Optional[dict]:
    rows = [r for r in timed(sweep_rows(rec)) if r["kernel"] == kernel and r["S"] == S]
    return rows[0] if rows else None


def _sweep_lengths(rec: Record) -> List[int]:
    return sorted({r["S"] for r in sweep_rows(rec)})


def _sweep_kernels(rec: Record) -> List[str]:
    return list(dict.fromkeys(r["kernel"] for r in sweep_rows(rec)))


def _timed_rows(rec: Record) -> List[dict]:
    """Every timed measurement of the record: result rows (not the check-only ones) and sweep rows."""
    return timed([r for r in rec["results"] if _role(r, "") != "check"] + sweep_rows(rec))


def measurements(rec: Record, kernel: str, shape: tuple, first: str = "results") -> List[dict]:
    """Every timed measurement of ``kernel`` at ``shape`` (B, H, S[, D]) in the record; the result rows first
    (``first="results"``) or the sweep's (``first="sweep"``) — the first one is the one a page quotes."""
    B, H, S = shape[:3]
    D = shape[3] if len(shape) > 3 else 64
    key = (B, H, S, S, D)
    res = [r for r in timed(rec["results"]) if _role(r, "") != "check" and r["kernel"] == kernel
           and shape_key(r) == key]
    swp = [r for r in timed(sweep_rows(rec)) if r["kernel"] == kernel and shape_key(r) == key]
    return res + swp if first == "results" else swp + res


def noise(rec: Record) -> Noise:
    """The record's noise floor (:func:`.spread.record_noise`) over all its timed rows."""
    return record_noise(_timed_rows(rec))


def verdict(rec: Record, a: str, b: str, shape: Optional[tuple] = None, first: str = "results") -> Optional[Verdict]:
    """The spread rule for kernels ``a`` and ``b`` at ``shape`` (default: the mission shape), with every
    measurement the record holds of either there; None where one of them was not timed there."""
    shape = tuple(shape or mission(rec))
    ma, mb = measurements(rec, a, shape, first), measurements(rec, b, shape, first)
    if not ma or not mb:
        return None
    return compare(ma, mb, noise=noise(rec).fraction, a=a, b=b)


# ------------------------------------------------------------------------------------------------ the table
def _check_cell(rec: Record, row: dict) -> str:
    """Mission-shape check, the tail-length check and determinism, in a few words."""
    if row.get("passed") is None and not row.get("lines_of_code") and row["kernel"] != TRITON:
        return "— (peer)"
    if row.get("passed") is None:
        return "not checked"
    tail = rec.get("extra", {}).get("tail_S")
    tail_rows = [r for r in rec["results"] if r.get("role") == "check" and r["kernel"] == row["kernel"]
                 and (tail is None or r["S"] == tail)]
    tail_pass = tail_rows[0].get("passed") if tail_rows else row.get("tail_passed")
    if not row["passed"]:
        return "FAILED"
    words = "pass" if tail_pass is None else ("pass ×2" if tail_pass else "FAILED at the tail")
    return words + (", det." if row.get("deterministic") else "")


def summary_rows(rec: Record) -> List[dict]:
    """One row per kernel and peer at the mission shape, in story order then peers; formatted for the page."""
    cud = mission_row(rec, CUDNN)
    order = journey(rec) + [r["kernel"] for r in mission_rows(rec) if r["kernel"] not in journey(rec)]
    out = []
    for k in dict.fromkeys(order):
        r = mission_row(rec, k)
        if r is None:
            continue
        ok = isinstance(r.get("median_us"), (int, float))
        out.append({"kernel": label(k),
                    "median µs": fmt_us(r["median_us"]) if ok else "not timed",
                    "p10–p90 µs": _range(r) if ok else "—",
                    "× cuDNN time": fmt_ratio(r["median_us"] / cud["median_us"]) if ok and cud else "—",
                    "TFLOP/s": _tflops(r["tflops"]) if ok and r.get("tflops") else "—",
                    "check": _check_cell(rec, r),
                    "lines": str(r["lines_of_code"]) if r.get("lines_of_code") else "—"})
    return out


def _lines_rule(rec: Record) -> str:
    """How the record counted lines of code (older records counted the kernel's own file only)."""
    return rec.get("extra", {}).get("lines_rule") or ("code lines of the kernel's own source file, no comments or "
                                                      "blank lines (this record predates counting included headers)")


def summary_table(rec: Record, show: bool = True) -> str:
    B, H, S, D = mission(rec)
    tail = rec.get("extra", {}).get("tail_S") or rec.get("params", {}).get("tail_S")
    cap = (f"Every kernel and peer at {_shape(B, H, S, D)}, one run on {_gpu(rec)}. check: fp64 reference at "
           f"S = {S}" + (f" and at S = {tail}, a length no tile divides (pass ×2: both passed)" if tail else "")
           + "; det.: bit-identical outputs over repeated launches; lines: " + _lines_rule(rec) + ".")
    return book.table(summary_rows(rec), caption=cap, show=show)


# --------------------------------------------------------------------------------------------- the headline
def _primary(rec: Record) -> str:
    """The library kernel the headline leads with: the fastest of ours at the mission shape."""
    cands = [k for k in ours(rec) if mission_row(rec, k) and isinstance(mission_row(rec, k).get("median_us"), float)]
    if not cands:
        raise RecordError(f"run {rec.get('run_id')} has no timed library kernel at the mission shape")
    return min(cands, key=lambda k: mission_row(rec, k)["median_us"])


def _suffix_from(lengths: List[int], outcomes: Dict[int, str], outcome: str) -> Optional[int]:
    """The smallest S from which every longer length of the sweep has ``outcome`` (None if the longest has not)."""
    start = None
    for s in reversed(lengths):
        if outcomes.get(s) != outcome:
            break
        start = s
    return start


def _sweep_verdicts(rec: Record, k: str, peer: str) -> Dict[int, Verdict]:
    bsz, heads = rec.get("extra", {}).get("sweep_BH") or (sweep_rows(rec)[0]["B"], sweep_rows(rec)[0]["H"])
    D = mission(rec)[3]
    out = {}
    for s in _sweep_lengths(rec):
        v = verdict(rec, k, peer, (bsz, heads, s, D), first="sweep")
        if v is not None:
            out[s] = v
    return out


def _tflops_ratio(rec: Record, k: str, peer: str, S: int) -> Optional[float]:
    a, b = _sweep_row(rec, k, S), _sweep_row(rec, peer, S)
    return a["tflops"] / b["tflops"] if a and b else None


def _tie_words(rec: Record, v: Verdict, shape: tuple) -> str:
    """Why a comparison is a tie, with the numbers that make it one."""
    if v.overlap:
        return "their p10–p90 ranges overlap"
    for k in (v.a, v.b):
        meds = [r["median_us"] for r in measurements(rec, k, shape)]
        if len(meds) > 1 and max(meds) - min(meds) >= v.gap_us:
            times = "twice" if len(meds) == 2 else f"{len(meds)} times"
            return (f"this record measured {label(k)} at this shape {times} — "
                    f"{_list([fmt_us(m) + ' µs' for m in meds])} — and those differ by "
                    f"{max(meds) - min(meds):.2f} µs, more than the {v.gap_us:.2f} µs gap")
    n = noise(rec)
    return (f"the {v.gap_us:.2f} µs gap is within this record's run-to-run spread ({100 * n.fraction:.1f} %: "
            f"{label(n.kernel)} measured twice at one shape)")


def kernel_facts(rec: Record, k: str) -> dict:
    """Everything the record says about our kernel ``k`` against the peers: at the mission shape (``vs``), over the
    sweep (``sweep``: the spread rule's verdict at each length, where it is slower from some length on and its
    throughput ratio there) and at the shape that fills the chip (``big``)."""
    B, H, S, D = mission(rec)
    f = dict(kernel=k, row=mission_row(rec, k), us=mission_row(rec, k)["median_us"], vs={}, sweep={}, big={})
    for peer in (CUDNN, FA2, TRITON, FA4, SEED, V12):
        v = verdict(rec, k, peer)
        if v is not None:
            f["vs"][peer] = dict(verdict=v, row=mission_row(rec, peer),
                                 why=_tie_words(rec, v, (B, H, S, D)) if v.outcome == TIE else v.reason())
    lengths = _sweep_lengths(rec)
    for peer in (TRITON, CUDNN, FA2, FA4):
        vs = _sweep_verdicts(rec, k, peer)
        if not vs:
            continue
        outcomes = {s: v.outcome for s, v in vs.items()}
        slower_from = _suffix_from([s for s in lengths if s in vs], outcomes, SLOWER)
        tail = [_tflops_ratio(rec, k, peer, s) for s in lengths if slower_from and s >= slower_from]
        f["sweep"][peer] = dict(verdicts=vs, faster=[s for s in vs if outcomes[s] == FASTER],
                                tie=[s for s in vs if outcomes[s] == TIE],
                                slower=[s for s in vs if outcomes[s] == SLOWER], slower_from=slower_from,
                                tail_tflops_ratio=(min(tail), max(tail)) if tail and None not in tail else None)
    mine = _big_row(rec, k)
    if mine:
        big = tuple(rec.ext("big"))
        peers = [p for p in (CUDNN, FA2, TRITON, FA4) if _big_row(rec, p)]
        f["big"] = dict(shape=big, row=mine, ratios={p: mine["tflops"] / _big_row(rec, p)["tflops"] for p in peers},
                        verdicts={p: verdict(rec, k, p, big) for p in peers})
    return f


def headline(rec: Record) -> dict:
    """Every fact the headline states, computed from the record (the tests recompute each from the raw rows): the
    primary library kernel's facts (:func:`kernel_facts`) plus ``others``, the facts of every other library kernel."""
    k = _primary(rec)
    return dict(kernel_facts(rec, k), gpu=_gpu(rec), mission=mission(rec),
                others=[kernel_facts(rec, o) for o in ours(rec) if o != k and mission_row(rec, o)
                        and isinstance(mission_row(rec, o).get("median_us"), float)])


def _vs_words(name: str, v: Verdict, row: dict, why: str) -> str:
    peer = f"{fmt_us(row['median_us'])} µs, p10–p90 {_range(row)}"
    if v.outcome == TIE:
        return f"**a tie with {name}** ({peer}): {why}"
    return f"**{fmt_ratio(v.ratio)}× the time of {name}** ({peer})" + ("" if v.outcome == FASTER else " — slower")


def _lengths_words(values: List[int]) -> str:
    return "S = " + _list(values) if values else "no length"


PEER_NAMES = {CUDNN: "cuDNN", FA2: "FlashAttention-2", TRITON: "Triton", FA4: "FA4"}


def _loss_lines(f: dict) -> List[str]:
    """Where kernel ``f`` loses (and ties) in the sweep and at the big shape, one line each."""
    name, sw, out = f"`{f['kernel']}`", f["sweep"], []
    if TRITON in sw:
        t = sw[TRITON]
        n = len(t["verdicts"])
        text = (f"Triton is faster at **{len(t['slower'])} of {n} lengths** ({_lengths_words(t['slower'])})"
                if t["slower"] else f"Triton is faster at none of the {n} lengths")
        if t["tie"]:
            text += f"; a tie at {_lengths_words(t['tie'])}"
        if t["faster"]:
            text += f"; {name} is faster at {_lengths_words(t['faster'])}"
        out.append(text + ".")
    for peer in (CUDNN, FA2, FA4):
        p = sw.get(peer)
        if not p or not p["slower"]:
            continue
        if p["slower_from"] is not None and p["tail_tflops_ratio"]:
            lo, hi = p["tail_tflops_ratio"]
            rng = f"{lo:.2f}×" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}–{hi:.2f}×"
            out.append(f"From S = {p['slower_from']} up, {name} is slower than {PEER_NAMES[peer]} at every length, "
                       f"at **{rng} its throughput**.")
        else:
            out.append(f"{name} is slower than {PEER_NAMES[peer]} at {_lengths_words(p['slower'])}.")
    if f["big"]:
        bb = f["big"]
        ratios = ", ".join(f"{fmt_ratio(r)}× {PEER_NAMES[p]}'s" + (" (a tie)" if bb["verdicts"][p].outcome == TIE
                                                                    else "") for p, r in bb["ratios"].items())
        out.append(f"At {_shape(*bb['shape'])}, a shape that fills the chip: {_tflops(bb['row']['tflops'])} TFLOP/s"
                   + (f" — {ratios} throughput." if ratios else "."))
    return out


def _loses_anywhere(f: dict) -> bool:
    return any(p["slower"] for p in f["sweep"].values()) or \
        any(v.outcome == SLOWER for v in f["big"].get("verdicts", {}).values())


def headline_markdown(rec: Record) -> str:
    """The landing page's headline (book/generated/headline.md): the scope, where our kernel wins, where it loses,
    and the history — every number from ``rec``."""
    h = headline(rec)
    k, (B, H, S, D), row = h["kernel"], h["mission"], h["row"]
    name = f"`{k}`"
    vs = h["vs"]
    every = [h] + h["others"]
    losers = [f"`{f['kernel']}`" for f in every if _loses_anywhere(f)]
    lengths = _sweep_lengths(rec)
    out = [f"**Scope: one shape, then a sweep.** The first list is measured at the mission shape only — "
           f"B = {B}, H = {H}, S = {S}, D = {D}, fp16, non-causal forward pass — on {h['gpu']}; the second is the "
           f"same run's sweep over sequence length" + (f", where {_list(losers)} lose{'s' if len(losers) == 1 else ''}"
                                                      if losers else "") +
           f". One run, CUDA-graph replay medians (record {_record_link(rec)}). A win is claimed only where "
           f"repeated measurements separate; anything closer is called a tie.", "",
           f"**Where {name} wins — {_shape(B, H, S, D)}**", ""]
    first = f"- **{fmt_us(h['us'])} µs** for {name} (p10–p90 {_range(row)})"
    if CUDNN in vs:
        first += ": " + _vs_words("cuDNN", vs[CUDNN]["verdict"], vs[CUDNN]["row"], vs[CUDNN]["why"])
    if FA2 in vs:
        first += "; " + _vs_words("FlashAttention-2", vs[FA2]["verdict"], vs[FA2]["row"], vs[FA2]["why"])
    out.append(first + ".")
    if TRITON in vs:
        t = vs[TRITON]
        lines = t["row"].get("lines_of_code")
        who = f"our {lines}-line Triton kernel" if lines else "our Triton kernel"
        if t["verdict"].outcome == TIE:
            out.append(f"- Against {who}: **a tie**. Triton takes {fmt_us(t['row']['median_us'])} µs (p10–p90 "
                       f"{_range(t['row'])}); {t['why']}.")
        else:
            out.append(f"- Against {who}: " + _vs_words("Triton", t["verdict"], t["row"], t["why"]) + ".")
    if FA4 in vs:
        out.append("- Against FlashAttention-4's Hopper path: " + _vs_words("FA4", vs[FA4]["verdict"], vs[FA4]["row"],
                                                                            vs[FA4]["why"]) + ".")
    if SEED in vs:
        seed = vs[SEED]["row"]
        out.append(f"- **{fmt_ratio(seed['median_us'] / h['us'])}× less time than `v8_seed`** "
                   f"({fmt_us(seed['median_us'])} µs), the original project's best kernel, where chapter 3 starts.")
    sw = h["sweep"]
    bits = [f"than {PEER_NAMES[p]} at {_lengths_words(sw[p]['faster'])}" for p in (CUDNN, FA2) if p in sw
            and sw[p]["faster"]]
    if bits:
        out.append(f"- In the sweep (B{_sweep_bh(rec)}) it is also faster " + " and ".join(bits) + ".")
    for o in h["others"]:
        if CUDNN in o["vs"]:
            out.append(f"- `{o['kernel']}`: {fmt_us(o['us'])} µs, "
                       f"{fmt_ratio(o['vs'][CUDNN]['verdict'].ratio)}× cuDNN's time.")
    where = f"the same run, B{_sweep_bh(rec)}, S = {lengths[0]} … {lengths[-1]}" if lengths else "the same run"
    out += ["", f"**Where {name} loses — {where}**" if len(every) == 1 else
            f"**Where each of our kernels loses — {where}**", ""]
    if len(every) == 1:
        out += [f"- {line}" for line in _loss_lines(h)] or [f"- In this record {name} is slower than no peer."]
    else:
        for f in every:
            out.append(f"- `{f['kernel']}`:")
            out += [f"  - {line}" for line in _loss_lines(f)] or ["  - slower than no peer in this record."]
    if V12 in vs and CUDNN in vs:
        v12 = vs[V12]["row"]
        out += ["", f"**History.** v12, the correct baseline of chapter 1, takes {fmt_us(v12['median_us'])} µs here: "
                    f"**{fmt_ratio(v12['median_us'] / vs[CUDNN]['row']['median_us'])}× cuDNN's time** in this "
                    f"record. (The original assessment's multiple for v12 was measured on another GPU, an NVIDIA L4; "
                    f"the results chapter quotes it as history.)"]
    return "\n".join(out) + "\n"


def _sweep_bh(rec: Record) -> str:
    bsz, heads = rec.get("extra", {}).get("sweep_BH") or (sweep_rows(rec)[0]["B"], sweep_rows(rec)[0]["H"])
    return f"{bsz} H{heads}"


def headline_numbers(rec: Record) -> Dict[str, str]:
    """The headline's main numbers as they are printed (name → text), for the landing page's browser test."""
    h = headline(rec)
    nums = {"time_us": fmt_us(h["us"]), "p10_p90": _range(h["row"])}
    for peer, key in ((CUDNN, "cudnn"), (FA2, "fa2"), (TRITON, "triton")):
        if peer in h["vs"]:
            nums[f"{key}_us"] = fmt_us(h["vs"][peer]["row"]["median_us"])
            nums[f"{key}_p10_p90"] = _range(h["vs"][peer]["row"])
            nums[f"vs_{key}"] = ("tie" if h["vs"][peer]["verdict"].outcome == TIE
                                 else fmt_ratio(h["vs"][peer]["verdict"].ratio) + "×")
    if SEED in h["vs"]:
        nums["vs_v8_seed"] = fmt_ratio(h["vs"][SEED]["row"]["median_us"] / h["us"]) + "×"
    if V12 in h["vs"] and CUDNN in h["vs"]:
        nums["v12_vs_cudnn"] = fmt_ratio(h["vs"][V12]["row"]["median_us"] / h["vs"][CUDNN]["row"]["median_us"]) + "×"
    if TRITON in h["sweep"]:
        t = h["sweep"][TRITON]
        nums["triton_faster_lengths"] = f"{len(t['slower'])} of {len(t['verdicts'])}"
    if CUDNN in h["sweep"] and h["sweep"][CUDNN]["tail_tflops_ratio"]:
        lo, hi = h["sweep"][CUDNN]["tail_tflops_ratio"]
        nums["cudnn_tail_throughput"] = f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}–{hi:.2f}"
        nums["cudnn_slower_from"] = str(h["sweep"][CUDNN]["slower_from"])
    if h["big"]:
        nums["big_tflops"] = _tflops(h["big"]["row"]["tflops"])
    nums["gpu"] = h["gpu"]
    nums["run_id"] = rec["run_id"]
    return nums


def _generated_dir() -> Path:
    return Path(os.environ.get(GENERATED_ENV, BOOK_DIR / "generated"))


def write_headline(rec: Record, show: bool = True) -> Path:
    """figures/headline.png (the landing page's chart) and book/generated/headline.md (its text); the text is also
    shown on this page (``show``), so the chapter says exactly what the landing page says."""
    text = headline_markdown(rec)
    out = _generated_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "headline.md"
    path.write_text(text)
    if show:
        book.md(text)
    plot_headline(rec)
    return path


# ------------------------------------------------------------------------------------------------- charts
def _value_column(ax, ys, texts, fontsize=8):
    """Value labels in a column just right of the axes (outside the data area: no reference line can cross them)."""
    import matplotlib.transforms as mtransforms

    trans = mtransforms.blended_transform_factory(ax.transAxes, ax.transData)
    return [ax.text(1.01, y, t, transform=trans, ha="left", va="center", fontsize=fontsize, clip_on=False,
                    gid="value-label") for y, t in zip(ys, texts)]


def plot_journey(rec: Record, name: str = "04_results_journey"):
    """Every kernel of the story at the mission shape, story order top to bottom, against the peers (dashed)."""
    plt = plots.plt()
    B, H, S, D = mission(rec)
    ids = [i for i in journey(rec) if isinstance(mission_row(rec, i).get("median_us"), float)]
    rows = [mission_row(rec, i) for i in ids]
    fig, ax = plt.subplots(figsize=(6.4, 0.27 * len(ids) + 1.5))
    colors = {i: plots.COLORS.get(i, "#d62728") if i in ours(rec) else "#6b6b6b" for i in ids}
    ys = list(range(len(ids)))[::-1]
    ax.barh(ys, [r["median_us"] for r in rows], color=[colors[i] for i in ids], height=0.65)
    ax.set_xscale("log")
    ax.set_yticks(ys)
    ax.set_yticklabels([label(i) for i in ids], fontsize=8)
    ax.grid(axis="y", visible=False)
    for peer in (CUDNN, FA2, TRITON, FA4):
        r = mission_row(rec, peer)
        if r and isinstance(r.get("median_us"), float):
            ax.axvline(r["median_us"], color=plots.COLORS[peer], ls="--", lw=1.2,
                       label=f"{label(peer)}: {fmt_us(r['median_us'])} µs")
    _value_column(ax, ys, [f"{fmt_us(r['median_us'])} µs" for r in rows])
    ax.set_xlabel("time per call, µs (median of CUDA-graph replays; log scale)")
    ax.set_title(f"The journey at {_shape(B, H, S, D)}, {_gpu(rec)}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    plots.save(fig, name, rec, alt=f"Time of every kernel of the story at {_shape(B, H, S, D)} on {_gpu(rec)}, "
                                   f"against cuDNN, FlashAttention-2 and Triton")
    return fig


def plot_headline(rec: Record, name: str = "headline"):
    """The landing page's chart: where flashcore wins (the mission shape, µs with p10–p90) beside where it loses
    (the sweep: throughput relative to cuDNN's at each length)."""
    plt = plots.plt()
    B, H, S, D = mission(rec)
    ids = [i for i in ours(rec) + [p for p in HEADLINE_PEERS]
           if mission_row(rec, i) and isinstance(mission_row(rec, i).get("median_us"), float)]
    rows = [mission_row(rec, i) for i in ids]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(6.4, 6.4), gridspec_kw=dict(height_ratios=[1, 1.45], hspace=0.5))
    ys = list(range(len(ids)))[::-1]
    err = [[r["median_us"] - r["p10_us"] for r in rows], [r["p90_us"] - r["median_us"] for r in rows]]
    a1.barh(ys, [r["median_us"] for r in rows], xerr=err, height=0.6,
            color=[plots.COLORS.get(i, "#555555") for i in ids], error_kw=dict(lw=0.8, capsize=2))
    a1.set_yticks(ys)
    a1.set_yticklabels([label(i) for i in ids])
    a1.grid(axis="y", visible=False)
    a1.set_xlim(0, max(r["p90_us"] for r in rows) * 1.08)
    lead = _primary(rec)
    ties = {i for i in ids if i != lead and (verdict(rec, lead, i) or Verdict("", "", FASTER, 1, 0, 0, False, (1, 1)))
            .outcome == TIE}
    _value_column(a1, ys, [f"{fmt_us(r['median_us'])} µs" + (f" · tie with {label(lead)}" if i in ties else "")
                           for i, r in zip(ids, rows)])
    a1.set_xlabel("µs per call (median; bars: p10–p90)")
    a1.set_title(f"Where it wins: one shape, {_shape(B, H, S, D)}", fontsize=9)

    cud = {r["S"]: r for r in timed(sweep_rows(rec)) if r["kernel"] == CUDNN}
    for k in [i for i in ours(rec) + [FA2, TRITON, FA4] if i in _sweep_kernels(rec)]:
        pts = [(r["S"], r["tflops"] / cud[r["S"]]["tflops"]) for r in timed(sweep_rows(rec))
               if r["kernel"] == k and r["S"] in cud]
        if pts:
            a2.plot(*zip(*pts), "o-", ms=3.5, lw=1.6 if k in ours(rec) else 1.1, color=plots.COLORS.get(k),
                    label=label(k))
    a2.axhline(1.0, color=plots.COLORS[CUDNN], ls="--", lw=1.2, label=f"{label(CUDNN)} = 1")
    a2.set_xscale("log", base=2)
    lengths = _sweep_lengths(rec)
    a2.set_xticks(lengths)
    a2.set_xticklabels([str(s) for s in lengths], fontsize=7)
    a2.set_xlabel(f"sequence length S (B{_sweep_bh(rec)}, D{D})")
    a2.set_ylabel("throughput ÷ cuDNN's at the same S")
    a2.set_title("Where it loses: longer sequences", fontsize=9)
    a2.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"flashcore on {_gpu(rec)} — one run, CUDA-graph replay medians", fontsize=10, y=0.99)
    plots.save(fig, name, rec, alt=f"Left: time at {_shape(B, H, S, D)} of flashcore and its peers. Right: "
                                   f"throughput relative to cuDNN over sequence length, where flashcore falls behind")
    return fig


def plot_scaling(rec: Record, name: str = "04_results_scaling"):
    """The sweep: throughput and time against S for our kernels and the peers."""
    plt = plots.plt()
    rows = timed(sweep_rows(rec))
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True, gridspec_kw=dict(hspace=0.25))
    for k in _sweep_kernels(rec):
        pts = [r for r in rows if r["kernel"] == k]
        if not pts:
            continue
        style = dict(color=plots.COLORS.get(k), lw=1.8 if k in ours(rec) else 1.1, ms=3.5, label=label(k))
        a1.plot([r["S"] for r in pts], [r["tflops"] for r in pts], "o-", **style)
        a2.plot([r["S"] for r in pts], [r["median_us"] for r in pts], "o-", **style)
    lengths = _sweep_lengths(rec)
    a2.set_xscale("log", base=2)
    a2.set_xticks(lengths)
    a2.set_xticklabels([str(s) for s in lengths], fontsize=7)
    a2.set_xlabel("sequence length S")
    a1.tick_params(labelbottom=False)
    a2.set_yscale("log")
    a1.set_ylabel("TFLOP/s (higher is better)")
    a2.set_ylabel("µs per call (log; lower is better)")
    D = mission(rec)[3]
    a1.set_title(f"Throughput, B{_sweep_bh(rec)} D{D}", fontsize=9)
    a2.set_title("Time", fontsize=9)
    a1.legend(fontsize=7, loc="upper left")
    plots.save(fig, name, rec, alt="Throughput and time of flashcore and its peers over sequence length")
    return fig


def plot_loc(rec: Record, name: str = "04_results_loc"):
    """What each kernel cost to write (lines of code, left) beside what it bought (µs at the mission shape, right),
    one row per kernel in story order: the kernel's name labels both bars, so no label can pile onto another."""
    plt = plots.plt()
    B, H, S, D = mission(rec)
    order = journey(rec) + [TRITON]
    rows = [mission_row(rec, k) for k in order if mission_row(rec, k) and mission_row(rec, k).get("lines_of_code")
            and isinstance(mission_row(rec, k).get("median_us"), float)]
    ids = [r["kernel"] for r in rows]
    colors = [plots.COLORS.get(k, "#6b6b6b") if k in ours(rec) or k == TRITON else "#6b6b6b" for k in ids]
    ys = list(range(len(ids)))[::-1]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(6.4, 0.27 * len(ids) + 1.5), sharey=True,
                                 gridspec_kw=dict(width_ratios=[1, 1.3], wspace=0.1))
    loc = [r["lines_of_code"] for r in rows]
    a1.barh(ys, loc, color=colors, height=0.65)
    a1.set_xlim(0, max(loc) * 1.25)
    for y, n in zip(ys, loc):
        a1.text(n + max(loc) * 0.02, y, str(n), va="center", ha="left", fontsize=7, gid="value-label")
    a1.set_yticks(ys)
    a1.set_yticklabels([label(k) for k in ids], fontsize=8)
    a1.set_xlabel("lines of code")
    a1.set_title("Cost: lines of code", fontsize=9)
    a2.barh(ys, [r["median_us"] for r in rows], color=colors, height=0.65)
    a2.set_xscale("log")
    cud = mission_row(rec, CUDNN)
    if cud and isinstance(cud.get("median_us"), float):
        a2.axvline(cud["median_us"], color=plots.COLORS[CUDNN], ls="--", lw=1.1,
                   label=f"{label(CUDNN)}: {fmt_us(cud['median_us'])} µs")
        a2.legend(fontsize=7, loc="lower right")
    _value_column(a2, ys, [f"{fmt_us(r['median_us'])} µs" for r in rows])
    a2.set_xlabel(f"µs per call at {_shape(B, H, S, D)} (log)")
    a2.set_title("What it bought: time", fontsize=9)
    for a in (a1, a2):
        a.grid(axis="y", visible=False)
    plots.save(fig, name, rec, alt="Lines of code and time at the mission shape for every kernel of the story and "
                                   "the Triton kernel")
    return fig


def _dsl_points(rec: Record, k: str) -> List[tuple]:
    """(S, flashcore time ÷ Triton time, verdict) over the sweep."""
    vs = _sweep_verdicts(rec, k, TRITON)
    return [(s, v.ratio, v.outcome) for s, v in sorted(vs.items())]


def plot_dsl(rec: Record, name: str = "04_results_dsl"):
    """Our hand-written kernel's time ÷ the Triton kernel's at every length, each point marked by the spread rule."""
    plt = plots.plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    marks = {FASTER: ("v", "faster"), TIE: ("o", "tie"), SLOWER: ("^", "slower")}
    n = noise(rec).fraction
    drew = set()
    for k in ours(rec):
        pts = _dsl_points(rec, k)
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color=plots.COLORS.get(k), lw=1.2, label=label(k))
        for s, r, o in pts:
            m, word = marks[o]
            ax.scatter([s], [r], marker=m, s=40, zorder=3, color=plots.COLORS.get(k),
                       edgecolor="black" if o == TIE else "none",
                       label=None if word in drew else f"{word} (spread rule)")
            drew.add(word)
    ax.axhline(1.0, color=plots.COLORS[TRITON], ls="--", lw=1.2, label=f"{label(TRITON)} = 1")
    if n:
        ax.axhspan(1 - n, 1 + n, color="#bbbbbb", alpha=0.3, lw=0, label=f"± record noise ({100 * n:.1f} %)")
    lengths = _sweep_lengths(rec)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths)
    ax.set_xticklabels([str(s) for s in lengths], fontsize=7)
    ax.set_xlabel(f"sequence length S (B{_sweep_bh(rec)})")
    ax.set_ylabel("time ÷ Triton's (below 1: ours faster)")
    tri_lines = (mission_row(rec, TRITON) or {}).get("lines_of_code")
    our_lines = (mission_row(rec, ours(rec)[0]) or {}).get("lines_of_code") if ours(rec) else None
    ax.set_title(f"Hand-written CUDA ({our_lines} lines) against Triton ({tri_lines} lines), length by length",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    plots.save(fig, name, rec, alt="Time of flashcore divided by the Triton kernel's at every sequence length")
    return fig


# ---------------------------------------------------------------------------------------------- the sweep
def sweep_time_rows(rec: Record) -> List[dict]:
    """µs at every length: one column per kernel of the sweep."""
    ks = _sweep_kernels(rec)
    out = []
    for s in _sweep_lengths(rec):
        row = {"S": str(s)}
        for k in ks:
            r = _sweep_row(rec, k, s)
            err = [x for x in sweep_rows(rec) if x["kernel"] == k and x["S"] == s and x.get("error")]
            row[label(k)] = fmt_us(r["median_us"]) if r else ("error" if err else "—")
        out.append(row)
    return out


def _verdict_cell(v: Optional[Verdict]) -> str:
    if v is None:
        return "—"
    return f"{v.outcome} ({fmt_ratio(v.ratio)}×)"


def sweep_verdict_rows(rec: Record, k: str) -> List[dict]:
    """For our kernel ``k`` at every length: its throughput ÷ cuDNN's and the spread rule's verdict against each
    fused peer (time ratio in brackets)."""
    peers = [p for p in (CUDNN, FA2, TRITON, FA4) if p in _sweep_kernels(rec)]
    verdicts = {p: _sweep_verdicts(rec, k, p) for p in peers}
    out = []
    for s in _sweep_lengths(rec):
        ratio = _tflops_ratio(rec, k, CUDNN, s)
        row = {"S": str(s), "× cuDNN TFLOP/s": fmt_ratio(ratio) if ratio else "—"}
        for p in peers:
            row[f"vs {label(p)}"] = _verdict_cell(verdicts[p].get(s))
        out.append(row)
    return out


def sweep_tables(rec: Record, show: bool = True) -> List[str]:
    n = noise(rec)
    out = [book.table(sweep_time_rows(rec), caption=f"µs per call at B{_sweep_bh(rec)} (median of CUDA-graph "
                                                    "replays)", show=show)]
    for k in ours(rec):
        out.append(book.table(sweep_verdict_rows(rec, k), show=show, caption=(
            f"{label(k)} against each peer: faster / tie / slower by the spread rule (record noise floor "
            f"{100 * n.fraction:.1f} %), its time ÷ the peer's in brackets.")))
    return out


def big_table_rows(rec: Record) -> List[dict]:
    rows = timed(big_rows(rec))
    cud = _big_row(rec, CUDNN)
    checks = {}
    for r in big_rows(rec):
        if r.get("passed") is not None:
            checks[r["kernel"]] = "passed" if r["passed"] else "FAILED"
    old = rec.get("extra", {}).get("big_check")
    if isinstance(old, dict) and old.get("kernel"):
        checks.setdefault(old["kernel"], "passed" if old.get("passed") else "FAILED")
    return [{"kernel": label(r["kernel"]), "median µs": fmt_us(r["median_us"]), "p10–p90 µs": _range(r),
             "TFLOP/s": _tflops(r["tflops"]),
             "× cuDNN TFLOP/s": fmt_ratio(r["tflops"] / cud["tflops"]) if cud else "—",
             "check": checks.get(r["kernel"], "— (peer)" if r["kernel"].startswith("sdpa_") else "not checked")}
            for r in rows]


def big_table(rec: Record, show: bool = True) -> str:
    return book.table(big_table_rows(rec), show=show,
                      caption=f"{_shape(*rec.ext('big'))}: a shape that fills the chip, same run.")


# ------------------------------------------------------------------------------------------------ prose
def noise_markdown(rec: Record) -> str:
    n = noise(rec)
    if not n.kernel:
        return ("This record measured no kernel twice at the same shape, so its run-to-run spread is unknown; "
                "only the p10–p90 ranges separate a win from a tie here.")
    B, H, S, Skv, D = n.shape
    return (f"This record holds some kernels measured twice at the same shape (the "
            f"mission-shape row and the sweep's row at S = {S}, for example). The largest disagreement: "
            f"{label(n.kernel)} at {_shape(B, H, S, D)}, {_list([fmt_us(m) + ' µs' for m in n.medians])} — "
            f"**{100 * n.fraction:.1f} %** apart, although each measurement's own p10–p90 range is far narrower. "
            f"That is this record's noise floor. The chapter's one rule (`flashcore.chapters.results.spread`): "
            f"a kernel is *faster* only if every {{term}}`p10–p90 <p10–p90>` range of it lies below every range "
            f"of the other, **and** the gap between the medians is larger than the run-to-run spread — the "
            f"larger of the two kernels' own repeated-measurement differences and the noise floor times the "
            f"larger median. Anything else is a **tie**.")


def journey_markdown(rec: Record) -> str:
    B, H, S, D = mission(rec)
    h = headline(rec)
    k, vs = h["kernel"], h["vs"]
    parts = [f"At {_shape(B, H, S, D)} `{k}` takes **{fmt_us(h['us'])} µs**."]
    if SEED in vs:
        parts.append(f"That is {fmt_ratio(vs[SEED]['row']['median_us'] / h['us'])}× less time than `v8_seed` "
                     f"({fmt_us(vs[SEED]['row']['median_us'])} µs), the original project's best kernel and the "
                     f"first rung of chapter 3 — the ratio that measures this book's work.")
    if CUDNN in vs:
        v = vs[CUDNN]["verdict"]
        parts.append({FASTER: f"cuDNN's fused attention takes {fmt_ratio(1 / v.ratio)}× as long "
                              f"({fmt_us(vs[CUDNN]['row']['median_us'])} µs) in the same run.",
                      SLOWER: f"cuDNN's fused attention is faster: {fmt_us(vs[CUDNN]['row']['median_us'])} µs, "
                              f"{fmt_ratio(v.ratio)}× less time.",
                      TIE: f"cuDNN's fused attention ties with it ({fmt_us(vs[CUDNN]['row']['median_us'])} µs): "
                           f"{vs[CUDNN]['why']}."}[v.outcome])
    if V12 in vs and CUDNN in vs:
        v12 = vs[V12]["row"]["median_us"]
        sms = rec["provenance"].get("num_sms")
        busy = (f"v12's persistent CTAs take one head each, so at this shape only {min(B * H, sms)} of the "
                f"{sms} {{term}}`SMs <SM>` have work" if sms else
                "v12's persistent CTAs take one head each, so at this shape most {term}`SMs <SM>` have no work")
        parts.append(f"The correct baseline v12 takes {fmt_us(v12)} µs here, "
                     f"{fmt_ratio(v12 / vs[CUDNN]['row']['median_us'])}× cuDNN's time (the original assessment's "
                     f"\"about fifty times slower than SDPA\" was measured on an NVIDIA L4; this ratio is this "
                     f"record's own). Its ratio to `{k}` is not quoted as a speed-up: {busy}; that ratio "
                     f"measures the baseline's grid more than the kernel engineering.")
    return " ".join(parts)


def sweep_markdown(rec: Record) -> str:
    """The sweep in words, for each of our kernels: where it beats cuDNN, from where it loses, FA2 and Triton."""
    out = []
    for k in ours(rec):
        f = kernel_facts(rec, k)
        sw, parts = f["sweep"], []
        if CUDNN in sw:
            c = sw[CUDNN]
            if c["faster"]:
                parts.append(f"`{k}` is faster than cuDNN at {_lengths_words(c['faster'])}.")
            if c["slower_from"] and c["tail_tflops_ratio"]:
                lo, hi = c["tail_tflops_ratio"]
                parts.append(f"From S = {c['slower_from']} up it is slower at every length, at {lo:.2f}–{hi:.2f}× "
                             f"cuDNN's throughput.")
            elif c["slower"]:
                parts.append(f"It is slower than cuDNN at {_lengths_words(c['slower'])}.")
        if FA2 in sw:
            same = (f", which issues the same {{term}}`mma.sync` instruction as `{k}`,"
                    if k in MMA_SYNC_KERNELS else "")
            parts.append(f"FlashAttention-2 {{cite}}`dao2024flashattention2`{same} is faster at "
                         f"{_lengths_words(sw[FA2]['slower'])}." if sw[FA2]["slower"] else
                         f"FlashAttention-2 {{cite}}`dao2024flashattention2` is faster than `{k}` at no length.")
        if TRITON in sw:
            t = sw[TRITON]
            n = len(t["verdicts"])
            parts.append("Our Triton kernel is faster at "
                         + (f"{len(t['slower'])} of {n} lengths" if t["slower"] else f"none of the {n} lengths")
                         + (f", tied at {_lengths_words(t['tie'])}" if t["tie"] else "")
                         + (f", slower at {_lengths_words(t['faster'])}" if t["faster"] else "") + ".")
        out.append(" ".join(parts))
    return "\n\n".join(out)


# ------------------------------------------------------------------------------------------ Nsight Compute
PROFILE_SOURCES = {"mission": "mission_profile", "long_s": "long_s_profile"}


def profile_rows(rec: Record, which: str) -> tuple:
    """(info, {kernel id: tidy ncu row}) of one of the chapter's ncu reports: ``which`` is "mission" or "long_s".
    Rows come from the record where it holds them, else from the .ncu-rep file beside it. ``info`` says what the
    record holds (``predates``: it has no such report; ``error``: the profile failed when the run was made)."""
    extra = rec.get("extra", {})
    info = dict(extra.get(PROFILE_SOURCES[which]) or {})
    if not info and which == "mission" and extra.get("ncu_report"):       # records before issue 12
        info = dict(report=extra["ncu_report"], shape=list(mission(rec)), kernels=ours(rec) + [CUDNN])
    if not info:
        return dict(predates=True), {}
    if info.get("error"):
        return info, {}
    rows = info.get("rows")
    if rows is None:
        try:
            rows = profile.read_report(rec.file(info["report"]))
        except Exception as exc:            # no ncu_report module, or the file is missing: the page says which
            info["read_error"] = f"{type(exc).__name__}: {exc}"
            return info, {}
    by = {}
    for r in rows:
        kid = str(r.get("launch_label", "")).split(" ")[0]
        if kid and kid not in by:
            by[kid] = r
    return info, by


def _dram(r: dict) -> Optional[float]:
    if r.get("dram_bytes") is not None:
        return r["dram_bytes"]
    if r.get("dram_read_bytes") is not None:
        return r["dram_read_bytes"] + (r.get("dram_write_bytes") or 0)
    return None


def _l2(r: dict) -> Optional[float]:
    """Bytes through L2: ``l2_bytes`` where the report has it, else 32 B × L1→L2 sectors where the tidy row has
    them (``l2_read_sectors`` + ``l2_write_sectors``)."""
    if r.get("l2_bytes") is not None:
        return r["l2_bytes"]
    if r.get("l2_read_sectors") is not None:
        return 32.0 * (r["l2_read_sectors"] + (r.get("l2_write_sectors") or 0))
    return None


def _mb(x: Optional[float]) -> str:
    return "—" if x is None else f"{x / 1e6:.3g}"


def _pct(x) -> str:
    return "—" if x is None else f"{x:.0f} %" if x >= 10 else f"{x:.1f} %"


def _int(x) -> str:
    return "—" if x is None else f"{int(round(x)):,}"


def _smem(r: dict) -> float:
    return (r.get("dynamic_smem_per_block") or 0) + (r.get("static_smem_per_block") or 0)


def _rows_per_cta(r: dict, shape: Sequence[int]) -> Optional[float]:
    if not r.get("grid_size"):
        return None
    B, H, S = shape[:3]
    return B * H * S / r["grid_size"]


# B·H·S ÷ grid is the query rows a CTA owns only where the keys are not split across CTAs: the long-S shape (a
# split-KV kernel at the mission shape has several CTAs per query tile), so only that table shows it.
ROWS_PER_CTA = ("query rows per CTA (B·H·S ÷ grid)",
                lambda r, s: f"{_rows_per_cta(r, s):.4g}" if _rows_per_cta(r, s) else "—")
PROFILE_METRICS = [
    ("ncu duration, µs (base clocks)", lambda r, s: f"{r['duration_us']:.4g}" if r.get("duration_us") else "—"),
    ("grid × threads", lambda r, s: f"{_int(r.get('grid_size'))} × {_int(r.get('block_size'))}"),
    ROWS_PER_CTA,
    ("registers / thread", lambda r, s: _int(r.get("registers_per_thread"))),
    ("shared memory / CTA, KB", lambda r, s: f"{_smem(r) / 1024:.3g}"),
    ("occupancy: theoretical / achieved", lambda r, s: f"{_pct(r.get('theoretical_occupancy_pct'))} / "
                                                       f"{_pct(r.get('achieved_occupancy_pct'))}"),
    ("tensor pipe active", lambda r, s: _pct(r.get("tensor_pipe_pct"))),
    ("issue slots active", lambda r, s: _pct(r.get("issue_active_pct"))),
    ("instructions executed, millions", lambda r, s: f"{r['instructions'] / 1e6:.3g}" if r.get("instructions")
     else "—"),
    ("DRAM traffic, MB", lambda r, s: _mb(_dram(r))),
    ("L2 traffic from L1, MB", lambda r, s: _mb(_l2(r))),
    ("shared-memory bank conflicts", lambda r, s: _int(r.get("smem_bank_conflicts"))),
]


def _profile_order(rec: Record, by: dict) -> List[str]:
    return [k for k in ours(rec) + [FA2, CUDNN, FA4] if k in by]


def profile_table_rows(rec: Record, which: str) -> List[dict]:
    info, by = profile_rows(rec, which)
    if not by:
        return []
    shape = info.get("shape") or mission(rec)
    ks = _profile_order(rec, by)
    metrics = [m for m in PROFILE_METRICS if which == "long_s" or m is not ROWS_PER_CTA]
    rows = [dict({"metric": name}, **{label(k): f(by[k], shape) for k in ks}) for name, f in metrics]
    return [r for r in rows if any(v not in ("—", "— × —") for k, v in r.items() if k != "metric")]


def stall_table_rows(rec: Record, which: str, top: int = 5) -> List[dict]:
    """Warps stalled per issued instruction, by reason: the ``top`` reasons of each kernel (union)."""
    info, by = profile_rows(rec, which)
    ks = _profile_order(rec, by)
    reasons = []
    for k in ks:
        reasons += [s for s in profile.stall_breakdown(by[k]) if s != "selected"][:top]
    reasons = list(dict.fromkeys(reasons))
    return [dict({"stall reason": s.replace("_", " ")},
                 **{label(k): f"{by[k].get('stall_' + s) or 0:.2f}" for k in ks}) for s in reasons]


def profile_tables(rec: Record, which: str, show: bool = True) -> List[str]:
    info, by = profile_rows(rec, which)
    if not by:
        return []
    shape = info.get("shape") or mission(rec)
    report = Path(info.get("report", "")).name
    out = [book.table(profile_table_rows(rec, which), show=show,
                      caption=f"Nsight Compute at {_shape(*shape)}: one report ({report}), clocks locked to base, "
                              f"so durations are longer than the graph-replay times.")]
    out.append(book.table(stall_table_rows(rec, which), show=show,
                          caption="Why warps were not issuing: warps stalled per issued instruction, the top reasons "
                                  "of each kernel."))
    return out


def _top_stall(r: dict) -> tuple:
    st = [(k, v) for k, v in profile.stall_breakdown(r).items() if k != "selected"]
    return st[0] if st else (None, 0.0)


MMA_SYNC_KERNELS = ("flashcore",)     # our library kernels built on mma.sync, like FlashAttention-2


def _mma_kernel(rec: Record, among=None) -> Optional[str]:
    """The library kernel the long-sequence question is about: ``flashcore`` (mma.sync, like FA2) where the record
    has it, else the first of ours (in ``among`` if given)."""
    cands = [o for o in ours(rec) if among is None or o in among]
    return next((o for o in cands if o in MMA_SYNC_KERNELS), cands[0] if cands else None)


def long_s_findings(rec: Record) -> List[str]:
    """What the long-sequence report shows, our mma.sync kernel against FlashAttention-2 (and cuDNN): first what
    differs (the larger of the two factors of time, instruction count and issue rate), then one sentence per
    metric, each computed from the report's rows; [] where the record has no such report."""
    info, by = profile_rows(rec, "long_s")
    k = _mma_kernel(rec, by)
    if k is None or FA2 not in by:
        return []
    a, b = by[k], by[FA2]
    same = k in MMA_SYNC_KERNELS
    shape = info.get("shape") or rec.ext("big")
    out = []
    dur = a["duration_us"] / b["duration_us"] if a.get("duration_us") and b.get("duration_us") else None
    inst = a["instructions"] / b["instructions"] if a.get("instructions") and b.get("instructions") else None
    rate = (a["issue_active_pct"] / b["issue_active_pct"]) if a.get("issue_active_pct") and \
        b.get("issue_active_pct") else None
    ra, rb = _rows_per_cta(a, shape), _rows_per_cta(b, shape)
    sa, sb = _top_stall(a), _top_stall(b)
    if inst and rate:
        if inst >= 1 / rate:
            lead = (f"**What differs:** {'not the instruction but ' if same else ''}the work per instruction. `{k}` "
                    f"needs {inst:.2f}× FA2's instructions for the same FLOPs"
                    + (f", and each of its CTAs owns {ra:.4g} query rows against FA2's {rb:.4g}" if ra and rb
                       and rb > ra * 1.2 else "") + "; its issue rate is "
                    + (f"{rate:.2f}× FA2's." if abs(rate - 1) >= 0.05 else "about FA2's."))
        else:
            lead = (f"**What differs:** how often `{k}` issues, not how much: it needs {inst:.2f}× FA2's "
                    f"instructions but issues {rate:.2f}× as often; its warps stall most on "
                    f"{(sa[0] or '—').replace('_', ' ')}.")
        out.append(lead)
    if dur:
        out.append(f"Under ncu (base clocks) `{k}` takes {a['duration_us']:.4g} µs and FlashAttention-2 "
                   f"{b['duration_us']:.4g} µs: {dur:.2f}× its time.")
    if inst and rate:
        out.append((f"Both issue `mma.sync` (neither uses `wgmma`) and do the same FLOPs. " if same else
                    f"`{k}` issues `wgmma`, FA2 `mma.sync`, for the same FLOPs. ")
                   + f"`{k}` executes **{inst:.2f}× FA2's instructions** and keeps its {{term}}`issue slots "
                   f"<issue slot>` busy {a['issue_active_pct']:.0f} % of the time against FA2's "
                   f"{b['issue_active_pct']:.0f} % ({rate:.2f}×). Time ≈ instructions ÷ issue rate: {inst:.2f} ÷ "
                   f"{rate:.2f} = {inst / rate:.2f}×" + (f", against the measured {dur:.2f}×." if dur else "."))
    if ra and rb:
        out.append(f"`{k}` launches {_int(a['grid_size'])} CTAs of {_int(a.get('block_size'))} threads — "
                   f"{ra:.4g} query rows each — where FA2 launches {_int(b['grid_size'])} of "
                   f"{_int(b.get('block_size'))}, {rb:.4g} rows each"
                   + (f": every K and V tile FA2 stages in shared memory feeds {rb / ra:.2g}× as many query rows, "
                      f"so it loads K and V {rb / ra:.2g}× less often per FLOP and issues fewer loads and "
                      f"`ldmatrix` per `mma.sync`." if rb > ra * 1.2 else "."))
    la, lb = _l2(a), _l2(b)
    if la and lb:
        out.append(f"L2 traffic from the SMs: {_mb(la)} MB against FA2's {_mb(lb)} MB ({la / lb:.2f}×).")
    da, db = _dram(a), _dram(b)
    if da and db:
        out.append(f"DRAM traffic: {_mb(da)} MB against {_mb(db)} MB ({da / db:.2f}×)"
                   + (" — close enough that DRAM does not separate them." if 0.8 < da / db < 1.25 else "."))
    if a.get("tensor_pipe_pct") and b.get("tensor_pipe_pct"):
        out.append(f"The {{term}}`tensor pipe` is active {a['tensor_pipe_pct']:.0f} % of the time in `{k}` against "
                   f"{b['tensor_pipe_pct']:.0f} % in FA2" + (
                       f": the same `mma.sync` work spread over {'more' if (dur or 1) > 1 else 'fewer'} cycles."
                       if same else "."))
    if sa[0] and sb[0]:
        out.append(f"Top stall: {sa[0].replace('_', ' ')} ({sa[1]:.2f} warps per issued instruction) in `{k}`, "
                   f"{sb[0].replace('_', ' ')} ({sb[1]:.2f}) in FA2.")
    for o in ours(rec):
        if o != k and o in by and by[o].get("duration_us") and b.get("duration_us"):
            out.append(f"`{o}` takes {by[o]['duration_us']:.4g} µs under ncu: "
                       f"{by[o]['duration_us'] / b['duration_us']:.2f}× FA2's time.")
    if CUDNN in by and by[CUDNN].get("duration_us") and b.get("duration_us"):
        c = by[CUDNN]
        out.append(f"cuDNN {{cite}}`nvidia_cudnn_attention`, on Hopper's `wgmma` and TMA, takes "
                   f"{c['duration_us']:.4g} µs: {c['duration_us'] / b['duration_us']:.2f}× FA2's time — what the "
                   f"Hopper instructions add on top of FA2's organisation.")
    return out


def long_s_markdown(rec: Record) -> str:
    """The long-sequence comparison's prose: the claim it tests, then what the record shows (or that it predates
    the comparison)."""
    Bb, Hb, Sb, Db = rec.ext("big")
    k = _mma_kernel(rec)
    f = kernel_facts(rec, k)
    fa2 = f["sweep"].get(FA2, {})
    big = f["big"].get("ratios", {}).get(FA2) if f["big"] else None
    premise = (f"FlashAttention-2 {{cite}}`dao2024flashattention2` uses neither — it issues the same "
               f"{{term}}`mma.sync` as `{k}` — and it is faster at {_lengths_words(fa2['slower'])} of the sweep"
               + (f" and {fmt_ratio(1 / big)}× ahead in throughput at {_shape(Bb, Hb, Sb, Db)}"
                  if big and big < 1 else "") + ". So the instruction family cannot be the whole explanation."
               if fa2.get("slower") else
               f"In this record FlashAttention-2 {{cite}}`dao2024flashattention2`, which issues the same "
               f"{{term}}`mma.sync` as `{k}`, is faster at no length of the sweep; the profile still shows how the "
               f"two organise the same instruction.")
    intro = (f"The first edition blamed the losses at long sequences on the missing {{term}}`wgmma` and "
             f"{{term}}`TMA` {{cite}}`shah2024flashattention3`. {premise} "
             + ("To test it, the" if fa2.get("slower") else "The") + f" chapter profiles `{k}` "
             f"beside FlashAttention-2 (and cuDNN) at {_shape(Bb, Hb, Sb, Db)} with {{term}}`ncu` "
             f"{{cite}}`nvidia_nsight_compute`, one report.")
    info, by = profile_rows(rec, "long_s")
    if info.get("predates"):
        return intro + ("\n\n*This record predates the comparison:* it holds no ncu report at "
                        f"{_shape(Bb, Hb, Sb, Db)} (chapter 4's measure writes one since issue 12; re-run the "
                        f"chapter live to see it). What this record can show is below: the mission-shape report, "
                        f"where `{k}` wins.")
    if info.get("error") or info.get("read_error"):
        why = info.get("error") or info.get("read_error")
        return intro + f"\n\n*The profile failed when this run was made:* `{why}`"
    found = long_s_findings(rec)
    if not found:
        return intro + "\n\n*The report does not hold both kernels:* " + ", ".join(sorted(by)) + "."
    return intro + "\n\n" + "\n".join(f"- {x}" for x in found)


def mission_profile_markdown(rec: Record) -> str:
    """Why the library kernel wins at the mission shape, from the mission-shape report."""
    info, by = profile_rows(rec, "mission")
    k = _mma_kernel(rec, by)
    if k is None or CUDNN not in by:
        return ("*This record holds no ncu report of the mission shape.*" if info.get("predates") else
                f"*The mission-shape report could not be read:* {info.get('error') or info.get('read_error')}")
    a, c = by[k], by[CUDNN]
    sms = a.get("sm_count") or c.get("sm_count")
    parts = [f"At the mission shape cuDNN launches {_int(c.get('grid_size'))} CTAs of {_int(c.get('block_size'))} "
             f"threads" + (f" on {_int(sms)} SMs" if sms else "") + f"; `{k}` splits the keys of each query tile "
             f"over a cluster ({{term}}`split-KV`) and launches {_int(a.get('grid_size'))} CTAs of "
             f"{_int(a.get('block_size'))}."]
    if sms and c.get("grid_size") and c["grid_size"] < sms:
        parts.append(f"With {_int(c['grid_size'])} CTAs, at least {_int(sms - c['grid_size'])} of the {_int(sms)} "
                     f"SMs have no cuDNN work while it runs.")
    if a.get("tensor_pipe_pct") and c.get("tensor_pipe_pct"):
        if c["tensor_pipe_pct"] > a["tensor_pipe_pct"]:
            parts.append(f"Where it runs, cuDNN's {{term}}`tensor pipe` is busier ({c['tensor_pipe_pct']:.0f} % "
                         f"against {a['tensor_pipe_pct']:.0f} %): `{k}` wins this shape by using more SMs, not by "
                         f"using each one better.")
        else:
            parts.append(f"`{k}`'s {{term}}`tensor pipe` is also the busier ({a['tensor_pipe_pct']:.0f} % against "
                         f"{c['tensor_pipe_pct']:.0f} %).")
    return " ".join(parts)


def triton_config_rows(rec: Record) -> List[dict]:
    """What Triton's autotuner chose at each length (current records), or at the mission shape (older ones)."""
    chosen = (rec.get("extra", {}).get("triton") or {}).get("chosen")
    if not chosen:
        r = mission_row(rec, TRITON)
        chosen = {str(mission(rec)[2]): r["config"]} if r and r.get("config") else {}
    return [{"S": s, "BLOCK_M × BLOCK_N": f"{c['BLOCK_M']} × {c['BLOCK_N']}", "warps": str(c["num_warps"]),
             "pipeline stages": str(c["num_stages"])} for s, c in sorted(chosen.items(), key=lambda kv: int(kv[0]))]


def triton_config_table(rec: Record, show: bool = True) -> str:
    rows = triton_config_rows(rec)
    return book.table(rows, show=show, caption="What Triton's autotuner chose (its search space: CONFIGS in "
                                               "kernels/triton_attention.py).") if rows else ""


def dsl_markdown(rec: Record) -> str:
    """The answer to the assessment's Option D — what does a DSL buy? — from the record: cost (lines), speed at
    every length (the spread rule), what the compiler and autotuner did that chapter 3 does by hand, and the
    verdict that follows from those numbers."""
    k = _mma_kernel(rec)             # the hand-written kernel chapter 3 documents
    h = kernel_facts(rec, k)
    tri = mission_row(rec, TRITON)
    if not tri or not isinstance(tri.get("median_us"), float):
        return "*This record has no Triton measurement, so it cannot answer the question.*"
    ours_lines, tri_lines = h["row"].get("lines_of_code"), tri.get("lines_of_code")
    extra_t = rec.get("extra", {}).get("triton") or {}
    parts = []
    if ours_lines and tri_lines:
        parts.append(f"**Cost.** Counting {_lines_rule(rec)}: the Triton kernel {{cite}}`tillet2019triton` is "
                     f"{tri_lines} lines of code; "
                     f"`{k}` is {ours_lines} lines of CUDA, {fmt_ratio(ours_lines / tri_lines)}× as many"
                     + (f" (Triton's list of autotuning configs and its launch wrapper add "
                        f"{extra_t['lines']['configs']} and {extra_t['lines']['launch']} lines)"
                        if extra_t.get("lines") else "") + ".")
    t, v = h["sweep"].get(TRITON), h["vs"].get(TRITON)
    if v and t:
        o = v["verdict"].outcome
        first = {FASTER: f"At the mission shape `{k}` is faster ({fmt_ratio(v['verdict'].ratio)}× Triton's time)",
                 TIE: "At the mission shape the two tie",
                 SLOWER: f"Triton is faster even at the mission shape ({fmt_ratio(v['verdict'].ratio)}× "
                         f"less time)"}[o]
        big = h["big"].get("ratios", {}).get(TRITON) if h["big"] else None
        parts.append(f"**Speed.** {first}. Across the sweep Triton is faster at "
                     + (f"{len(t['slower'])} of {len(t['verdicts'])} lengths" if t["slower"] else
                        f"none of the {len(t['verdicts'])} lengths")
                     + (f", tied at {_lengths_words(t['tie'])}" if t["tie"] else "")
                     + (f", and `{k}` is faster at {_lengths_words(t['faster'])}" if t["faster"] else "") + "."
                     + (f" At {_shape(*h['big']['shape'])}, `{k}` reaches {fmt_ratio(big)}× Triton's throughput"
                        + (" (a tie)." if h["big"]["verdicts"][TRITON].outcome == TIE else ".") if big else ""))
    cfg = triton_config_rows(rec)
    searched = extra_t.get("configs_searched")
    if cfg:
        if searched and len(cfg) > 1:
            tiles = sorted({c["BLOCK_M × BLOCK_N"] for c in cfg})
            stages = sorted({c["pipeline stages"] for c in cfg})
            chose = (f"Its {{term}}`autotuner <autotuning>` timed {searched} configurations (tile shape, warps, "
                     f"pipeline depth) at every length and kept the fastest — {_list(tiles)} tiles, {_list(stages)}-stage pipelines "
                     f"across the sweep (table below).")
        else:
            c0 = cfg[0]
            chose = (f"At S = {c0['S']} its {{term}}`autotuner <autotuning>` chose {c0['BLOCK_M × BLOCK_N']} "
                     f"tiles, {c0['warps']} warps and a {c0['pipeline stages']}-stage pipeline; this record predates the per-length record "
                     f"of its choices.")
        parts.append(f"**What Triton did for free.** {chose} The compiler also wrote the shared-memory staging of "
                     f"K and V, their {{term}}`software pipelining`, the tensor-core instruction and the fragment "
                     f"layouts — everything chapter 3 writes by hand."
                     + (f" `{k}`'s tile, cluster size and ring depth were chosen once, by hand, at the mission "
                        f"shape (chapter 3's sweep), and are the same at every length." if k == "flashcore" else ""))
    if t and ours_lines and tri_lines:
        wins, losses = len(t["faster"]), len(t["slower"])
        if losses > wins:
            answer = (f"the DSL bought more speed than the hand-written kernel at {losses} of "
                      f"{len(t['verdicts'])} lengths, with {tri_lines} lines of code against {ours_lines}. What the "
                      f"hand-written kernel buys is control of the schedule — the {{term}}`split-KV` cluster that "
                      f"beats cuDNN at small shapes is outside the autotuner's search space")
            answer += (f"; on this record that buys " + ({FASTER: "a win at the mission shape only",
                                                          TIE: "a tie at the mission shape",
                                                          SLOWER: "nothing at the mission shape"}[v["verdict"].outcome])
                       if v else "") + "."
        elif wins > losses:
            answer = (f"hand-written CUDA is faster at {wins} of {len(t['verdicts'])} lengths, for "
                      f"{fmt_ratio(ours_lines / tri_lines)}× the code.")
        else:
            answer = (f"neither wins more lengths than it loses, and Triton needs {tri_lines} lines of code "
                      f"against {ours_lines}.")
        parts.append(f"**The answer, on this record:** {answer}")
    return "\n\n".join(parts)


def limits_markdown(rec: Record) -> str:
    k = _mma_kernel(rec)
    f = kernel_facts(rec, k)
    B, H, S, D = mission(rec)
    lines = [f"- `{k}` is a forward pass only: fp16, head dimension 64, no causal mask, no dropout.",
             f"- Its headline is one shape, {_shape(B, H, S, D)}, where the grid is small enough that filling the "
             f"SMs matters more than per-SM efficiency — the shape it was tuned at."]
    c = f["sweep"].get(CUDNN)
    if c and c["slower_from"] and c["tail_tflops_ratio"]:
        lo, hi = c["tail_tflops_ratio"]
        has = bool(long_s_findings(rec))
        lines.append(f"- From S = {c['slower_from']} up it reaches {lo:.2f}–{hi:.2f}× cuDNN's throughput; "
                     + ("the profile above says what separates it from FlashAttention-2 there." if has else
                        "what separates it from FlashAttention-2 there needs the long-sequence profile, which this "
                        "record predates."))
    hopper = [o for o in ours(rec) if o not in MMA_SYNC_KERNELS]
    lines.append(f"- `{k}` uses the Ampere-era `mma.sync`; the Hopper instructions (`wgmma`, TMA) are chapter 5's "
                 "subject" + (f", and {_list([f'`{o}`' for o in hopper])} above uses them." if hopper else "."))
    return "\n".join(lines) + "\n"
