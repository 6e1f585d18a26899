"""Page 6, drawn from the records only: the banner (two GPUs by design), the model and both GPUs' ceilings, the
prediction per kernel and shape, then the measured ratios, the charts, and the conclusion — every sentence that
draws a conclusion is computed from the comparison, so it stays true when the records change.
"""
from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path
from typing import Optional

from ... import book, plots
from ...labels import label
from .model import BOUND_NAMES, Comparison

__all__ = ["banner", "missing_text", "ceilings_table", "model_text", "prediction_text", "prediction_table",
           "ratio_table", "ratio_text", "conclusion_text", "plot_mission", "plot_sweep", "write_status",
           "downloads", "CONTENDERS"]

CONTENDERS = ("flashcore", "triton_attention", "sdpa_cudnn", "sdpa_flash")   # the kernels of the scaling sweep


def _shape(shape) -> str:
    B, H, S, D = shape
    return f"B{B} H{H} S{S}" + ("" if D == 64 else f" D{D}")


def _short(cmp: Comparison, slug: str) -> str:
    """A GPU's name without the vendor ("H100 80GB HBM3")."""
    return cmp.gpu(slug).replace("NVIDIA ", "")


def _pct(x: Optional[float]) -> str:
    return book.MISSING if x is None else f"{100 * x:.0f}%"


# ----------------------------------------------------------------------------------------------- banner
def banner(cmp: Comparison, show: bool = True) -> str:
    """This page reads two GPUs by design; every other page of a build reads one (named on the landing page)."""
    paths = [f"runs/{rec.dir.parent.name}/{rec['run_id']}" for rec in cmp.used()]
    links = ", ".join(f"<code>{html.escape(p)}</code>" for p in paths) or "none"
    this_book = os.environ.get(book.GPU_ENV)
    body = (f"<strong>This page reads two GPUs by design</strong>: {html.escape(cmp.gpu(cmp.reference))} and "
            f"{html.escape(cmp.gpu(cmp.other))}. Every other page of the book shows one GPU's records"
            + (f" (this build: <code>{html.escape(this_book)}</code>)" if this_book else "")
            + f". Replayed from the records {links}; nothing here was measured during the build.")
    out = (f'<div class="flashcore-banner" style="border-left:6px solid #e69500;background:#fff4e5;'
           f'padding:0.6em 1em;margin:0.5em 0 1em 0">{body}</div>')
    if show:
        book._show_html(out)
    return out


def missing_text(cmp: Comparison) -> str:
    """Which records the page lacks and what it shows without them ("" when nothing is missing)."""
    if not cmp.missing:
        return ""
    lacks_times = not cmp.rows
    stub = f"```{{container}} flashcore-stub\n" if lacks_times else ""
    return stub + ("**Missing records.** This page needs, and does not find: " + "; ".join(cmp.missing) + ". "
            + ("Without both GPUs' chapter-4 records there is nothing to compare: run chapter 4 live on each GPU "
               "(`python -m flashcore live 04_results`)." if lacks_times else
               "The measured ratios below are complete; the predicted ones need both GPUs' chapter-0 ceilings and "
               "show — until that record exists (run `python -m flashcore live 00_method` on that GPU).")) + ("\n```" if stub else "")


# ------------------------------------------------------------------------------------------------ model
def ceilings_table(cmp: Comparison, show: bool = True) -> str:
    """Both GPUs' ceilings, and the time ratio each contributes to the model."""
    a, b = cmp.ceilings.get(cmp.reference), cmp.ceilings.get(cmp.other)
    ra, rb = _short(cmp, cmp.reference), _short(cmp, cmp.other)

    def row(name, fa, fb, fmt, time_ratio, used):
        va, vb = (fa(a) if a else None), (fb(b) if b else None)
        return {"ceiling (chapter 0)": name, ra: fmt.format(va) if va is not None else None,
                rb: fmt.format(vb) if vb is not None else None,
                "time ratio": f"{time_ratio(va, vb):.2f}" if None not in (va, vb) else None, "scales": used}

    rows = [row("copy bandwidth, TB/s", lambda c: c.copy_tbps, lambda c: c.copy_tbps, "{:.2f}",
                lambda x, y: x / y, "the bandwidth share"),
            row("GEMM rate, TFLOP/s", lambda c: c.gemm_tflops, lambda c: c.gemm_tflops, "{:.0f}",
                lambda x, y: x / y, "all the rest"),
            row("launch floor, µs", lambda c: c.launch_us, lambda c: c.launch_us, "{:.2f}",
                lambda x, y: y / x, "the launch share"),
            row("ex2 rate, T/s", lambda c: c.exp2_per_s / 1e12, lambda c: c.exp2_per_s / 1e12, "{:.2f}",
                lambda x, y: x / y, "(shown; part of the rest)")]
    return book.table(rows, caption=f"time ratio = {rb} time ÷ {ra} time that the ceiling alone would give",
                      show=show)


def model_text(cmp: Comparison) -> str:
    a, b = cmp.ceilings.get(cmp.reference), cmp.ceilings.get(cmp.other)
    ra, rb = _short(cmp, cmp.reference), _short(cmp, cmp.other)
    text = (f"**The model.** Chapter 0's {{term}}`floors <floor>` split each kernel's measured time *T* on the "
            f"{ra} into shares: the launch floor, the {{term}}`memory floor <floor>` (the compulsory bytes — Q, K, V "
            f"read once, O written once — at the measured copy bandwidth) and the tensor and exponential floors, "
            f"each divided by *T*. On the {rb}, the launch share scales with the launch floor, the bandwidth share "
            f"with the inverse copy bandwidth, and everything else — tensor work, exponentials and the "
            f"{{term}}`latency <latency-bound>` no floor explains, all of it on the SMs — with the inverse GEMM "
            f"rate:\n\n"
            f"```\nT({rb.split()[0]}) / T({ra.split()[0]}) = s_launch · L'/L + s_memory · BW/BW' + "
            f"(1 − s_launch − s_memory) · G/G'\n```\n\n"
            f"with *s* the shares on the {ra}, *L* the launch floor, *BW* the copy bandwidth and *G* the GEMM rate "
            f"of the {ra}, primed for the {rb}. "
            f"A kernel is *bound by* a floor when that floor is at least half its time; when none is, it is "
            f"{{term}}`latency-bound`. Only a {{term}}`bandwidth-bound` kernel can gain much from faster memory {{cite}}`nvidia_h200`: a pure one would take "
            + (f"**{a.copy_tbps / b.copy_tbps:.2f}×** its time on the {rb} (the copy-bandwidth ratio)."
               if a and b else "the copy-bandwidth ratio of its time on the other GPU (both chapter-0 records needed).")
            + " The model ignores L2: where the working set fits in L2 it stays there between the timing loop's "
              "replays, so the bandwidth share overstates the kernel's use of DRAM.")
    if a and a.l2_bytes:
        text += f" (The {ra}'s L2 holds {a.l2_bytes / 2 ** 20:.0f} MiB.)"
    return text


def _l2_note(cmp: Comparison, shape) -> str:
    from ...harness import bench

    a = cmp.ceilings.get(cmp.reference)
    if not a or not a.l2_bytes:
        return ""
    nbytes = bench.attention_bytes(*shape)
    return "fits in L2" if nbytes <= a.l2_bytes else "exceeds L2"


# ------------------------------------------------------------------------------------------- prediction
def _selection(cmp: Comparison) -> list:
    """The rows a reader needs first: the sweep's four contenders at the smallest, the mission and the largest
    sweep length, and everything at the large shape; the rest goes in a dropdown."""
    sweep = [r for r in cmp.rows if r["source"] == "sweep"]
    lengths = sorted({r["shape"][2] for r in sweep})
    keep_s = {lengths[0], lengths[-1]} if lengths else set()
    results = [r for r in cmp.rows if r["source"] == "results"]
    shapes = sorted({r["shape"] for r in results}, key=lambda s: s[0] * s[1] * s[2])
    picked = []
    for shape in shapes:
        picked += [r for r in results if r["shape"] == shape and r["kernel"] in CONTENDERS]
    picked += [r for r in sweep if r["shape"][2] in keep_s and r["kernel"] in CONTENDERS]
    return picked


def _prediction_rows(rows) -> list:
    out = []
    for r in rows:
        sh = r.get("shares") or {}
        out.append({"kernel": label(r["kernel"]), "shape": _shape(r["shape"]),
                    "launch": _pct(sh.get("launch")), "memory": _pct(sh.get("memory")),
                    "tensor": _pct(sh.get("tensor")), "bound by": BOUND_NAMES.get(r.get("bound"), None),
                    "predicted": f"{r['predicted']:.2f}" if r.get("predicted") is not None else None})
    return out


def prediction_text(cmp: Comparison) -> str:
    if not cmp.rows or "shares" not in cmp.rows[0]:
        return "*The prediction needs the reference GPU's chapter-0 record (see above).*"
    ra, rb = _short(cmp, cmp.reference), _short(cmp, cmp.other)
    by: dict = {}
    for r in cmp.rows:
        by.setdefault(r["bound"], []).append(r)
    parts = ", ".join(f"{len(v)} {BOUND_NAMES[k]}-bound" for k, v in sorted(by.items(), key=lambda kv: -len(kv[1])))
    top = max(cmp.rows, key=lambda r: r["shares"]["memory"])
    text = (f"**The prediction, before any ratio.** Of the {len(cmp.rows)} (kernel, shape) pairs both records "
            f"timed, the floors on the {ra} call {parts}. The largest bandwidth share is "
            f"{_pct(top['shares']['memory'])}: {label(top['kernel'])} at {_shape(top['shape'])} "
            f"({_l2_note(cmp, top['shape']) or 'L2 size not recorded'}).")
    if cmp.predicted:
        lo = min(cmp.rows, key=lambda r: r["predicted"])
        hi = max(cmp.rows, key=lambda r: r["predicted"])
        text += (f" So the model predicts the {rb} takes between **{lo['predicted']:.2f}×** "
                 f"({label(lo['kernel'])}, {_shape(lo['shape'])}) and **{hi['predicted']:.2f}×** "
                 f"({label(hi['kernel'])}, {_shape(hi['shape'])}) of the {ra}'s time")
        memory = by.get("memory", [])
        text += (f"; the bandwidth-bound ones ({', '.join(sorted({label(r['kernel']) for r in memory}))}) gain most."
                 if memory else ": no kernel here is bandwidth-bound, so none should gain much from the faster "
                                "memory.")
    return text


def prediction_table(cmp: Comparison, show: bool = True) -> str:
    """Shares of each floor on the reference GPU, what bounds the kernel, and the predicted time ratio."""
    if not cmp.rows:
        return ""
    rb, ra = _short(cmp, cmp.other), _short(cmp, cmp.reference)
    cap = (f"share of the measured {ra} time each floor takes; predicted = {rb} time ÷ {ra} time"
           + (" (— until both chapter-0 records exist)" if cmp.missing else ""))
    out = book.table(_prediction_rows(_selection(cmp)), caption=cap, show=False)
    out += _all_pairs(cmp, _prediction_rows)
    if show:
        book._show_html(out)
    return out


def _all_pairs(cmp: Comparison, make_rows) -> str:
    """Every pair, in two dropdowns: chapter 4's summary shapes, then its scaling sweep."""
    out = ""
    for source, title in (("results", "chapter 4's summary shapes"), ("sweep", "chapter 4's scaling sweep")):
        rows = [r for r in cmp.rows if r["source"] == source]
        if rows:
            out += book.dropdown(f"All {len(rows)} pairs of {title}", book.table(make_rows(rows), show=False),
                                 show=False)
    return out


# -------------------------------------------------------------------------------------------- measured
def _ratio_rows(rows) -> list:
    out = []
    for r in rows:
        if r.get("predicted") is None:
            verdict = None
        else:
            verdict = "agrees" if r["agrees"] else "missed"
        out.append({"kernel": label(r["kernel"]), "shape": _shape(r["shape"]),
                    "predicted": f"{r['predicted']:.2f}" if r.get("predicted") is not None else None,
                    "measured": f"{r['ratio']:.2f}", "p10–p90": f"{r['lo']:.2f}–{r['hi']:.2f}",
                    "change": r["change"], "prediction": verdict})
    return out


def ratio_text(cmp: Comparison) -> str:
    ra, rb = _short(cmp, cmp.reference), _short(cmp, cmp.other)
    n = cmp.noise_from
    if n is None:
        return (f"Measured ratio = median time on the {rb} ÷ median time on the {ra}, same kernel and shape. "
                "Neither record measures a kernel twice, so only the p10–p90 ranges decide what separates.")
    return (f"Measured ratio = median time on the {rb} ÷ median time on the {ra}, same kernel and shape. "
            f"**What separates from noise**: the p10–p90 range of the ratio must exclude 1, and the ratio must "
            f"differ from 1 by more than **{100 * cmp.noise:.1f}%** — the largest difference between two "
            f"measurements of one kernel at one shape inside one record ({label(n['kernel'])} at "
            f"{_shape(n['shape'])}: {n['a_us']:.2f} and {n['b_us']:.2f} µs in `{n['run_id']}`). Anything closer "
            f"to 1 is a tie.")


def ratio_table(cmp: Comparison, show: bool = True) -> str:
    if not cmp.rows:
        return ""
    rb, ra = _short(cmp, cmp.other), _short(cmp, cmp.reference)
    cap = f"{rb} time ÷ {ra} time; change: separates from noise or tie; prediction: inside the range ± the spread"
    out = book.table(_ratio_rows(_selection(cmp)), caption=cap, show=False)
    out += _all_pairs(cmp, _ratio_rows)
    if show:
        book._show_html(out)
    return out


def conclusion_text(cmp: Comparison) -> str:
    if not cmp.rows:
        return ""
    ra, rb = _short(cmp, cmp.reference), _short(cmp, cmp.other)
    faster = [r for r in cmp.rows if r["change"] == "less time"]
    slower = [r for r in cmp.rows if r["change"] == "more time"]
    ties = len(cmp.rows) - len(faster) - len(slower)

    def names(rows):
        return "; ".join(f"{label(r['kernel'])} at {_shape(r['shape'])} ({r['ratio']:.2f}×)"
                         for r in sorted(rows, key=lambda r: r["ratio"]))

    text = (f"**What the records say.** Of {len(cmp.rows)} pairs, **{ties} are ties** on the {rb}: inside the "
            f"noise. ")
    text += (f"{len(faster)} take less time: {names(faster)}. " if faster else "None takes less time. ")
    text += (f"{len(slower)} take more time: {names(slower)}. " if slower else "None takes more time. ")
    if cmp.predicted:
        agree = [r for r in cmp.rows if r["agrees"]]
        missed = [r for r in cmp.rows if not r["agrees"]]
        text += f"The prediction holds for **{len(agree)} of {len(cmp.rows)}**"
        worst = sorted(missed, key=lambda r: -abs(r["ratio"] - r["predicted"]))
        more = f" and {len(worst) - 5} more (all in the table's dropdown)" if len(worst) > 5 else ""
        text += (f"; it misses by most {names(worst[:5])}{more} — the model has no term for what differs there besides the "
                 "ceilings (clocks under load, the library's kernel choice on each GPU, L2 behaviour), so read "
                 "those as what the floors cannot explain." if missed else ".")
        memory = [r for r in cmp.rows if r.get("bound") == "memory"]
        gained = [r for r in faster if r.get("bound") == "memory"]
        text += (f" Bandwidth-bound pairs: {len(memory)}, of which {len(gained)} measurably gained."
                 if memory else f" No pair is bandwidth-bound at these shapes (the largest bandwidth share is "
                                f"{_pct(max(r['shares']['memory'] for r in cmp.rows))}), so the faster memory has "
                                f"little to give them.")
    else:
        text += "Whether that matches the floors waits for the missing chapter-0 record."
    return text


# ---------------------------------------------------------------------------------------------- charts
def _source_note(fig, cmp: Comparison) -> None:
    """Both records under the chart (plots.source_note stamps one), below its lowest tick label."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    lowest = min((ax.get_tightbbox(renderer).y0 for ax in fig.axes if ax.get_visible()), default=0.0)
    runs = " + ".join(f"{rec['run_id']} ({rec.dir.parent.name})" for rec in cmp.used()
                      if rec["provenance"].get("notebook") == "04_results")
    fig.text(0.99, lowest / fig.bbox.height - 0.01, f"data: runs {runs}", fontsize=6, color="#777777", ha="right",
             va="top")


def _legend_above(ax, title: str, ncol: int) -> None:
    """The legend between the title and the axes, out of the data; the title padded over it."""
    n = len(ax.get_legend_handles_labels()[0])
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=ncol, frameon=False)
    ax.set_title(title, fontsize=9, pad=10 + 11 * -(-n // ncol))


def _references(ax, cmp: Comparison, horizontal: bool) -> None:
    """The tie band (1 ± the in-record spread) and, with both chapter-0 records, the pure-bandwidth ratio."""
    line = ax.axvline if horizontal else ax.axhline
    span = ax.axvspan if horizontal else ax.axhspan
    line(1.0, color="#444444", lw=1)
    if cmp.noise:
        span(1 - cmp.noise, 1 + cmp.noise, color="#999999", alpha=0.15, lw=0,
             label=f"tie: within {100 * cmp.noise:.1f}% (in-record spread)")
    if cmp.predicted:
        a, b = cmp.ceilings[cmp.reference], cmp.ceilings[cmp.other]
        line(a.copy_tbps / b.copy_tbps, color=plots.COLORS["sdpa_flash"], ls=":", lw=1.2,
             label=f"purely bandwidth-bound: {a.copy_tbps / b.copy_tbps:.2f}")


def plot_mission(cmp: Comparison):
    """Every kernel at the chapter-4 summary shapes: measured ratio with its p10–p90 range, and the prediction."""
    rows = [r for r in cmp.rows if r["source"] == "results"]
    if not rows:
        return None
    plt = plots.plt()
    shapes = sorted({r["shape"] for r in rows}, key=lambda s: s[0] * s[1] * s[2])
    order = [r for shape in shapes for r in rows if r["shape"] == shape]
    fig, ax = plt.subplots(figsize=(7.2, 0.24 * len(order) + 1.4))
    ys = list(range(len(order)))[::-1]
    for y, r in zip(ys, order):
        ax.errorbar(r["ratio"], y, xerr=[[r["ratio"] - r["lo"]], [r["hi"] - r["ratio"]]], fmt="o", ms=4,
                    color=plots.COLORS.get(r["kernel"], "#333333"), ecolor="#888888", capsize=2)
        if r.get("predicted") is not None:
            ax.plot(r["predicted"], y, marker="D", mfc="none", mec="#000000", ms=5, ls="none")
    if any(r.get("predicted") is not None for r in order):
        ax.plot([], [], marker="D", mfc="none", mec="#000000", ls="none", label="predicted from the floors")
    ax.plot([], [], "o", color="#333333", label="measured (p10–p90)")
    _references(ax, cmp, horizontal=True)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{label(r['kernel'])} · {_shape(r['shape'])}" for r in order], fontsize=8)
    ra, rb = _short(cmp, cmp.reference), _short(cmp, cmp.other)
    ax.set_xlabel(f"time on the {rb} ÷ time on the {ra} (below 1: the {rb.split()[0]} is faster)")
    _legend_above(ax, f"Same kernels, same shapes: {rb} against {ra}", ncol=2)
    _source_note(fig, cmp)
    plots.save(fig, "06_gpus_mission", None, alt=f"time ratio {rb}/{ra} per kernel, measured and predicted")
    return fig


def plot_sweep(cmp: Comparison):
    """The scaling sweep: the ratio against sequence length for the four contenders, measured and predicted."""
    rows = [r for r in cmp.rows if r["source"] == "sweep"]
    if not rows:
        return None
    plt = plots.plt()
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    for k in [c for c in CONTENDERS if any(r["kernel"] == c for r in rows)]:
        mine = sorted((r for r in rows if r["kernel"] == k), key=lambda r: r["shape"][2])
        xs = [r["shape"][2] for r in mine]
        color = plots.COLORS.get(k, "#333333")
        ax.errorbar(xs, [r["ratio"] for r in mine], yerr=[[r["ratio"] - r["lo"] for r in mine],
                                                          [r["hi"] - r["ratio"] for r in mine]],
                    fmt="o-", ms=3, lw=1, color=color, capsize=2, label=f"{label(k)} measured")
        if all(r.get("predicted") is not None for r in mine):
            ax.plot(xs, [r["predicted"] for r in mine], ls="--", lw=1, color=color, label=f"{label(k)} predicted")
    _references(ax, cmp, horizontal=False)
    ax.set_xscale("log", base=2)
    B, H = (rows[0]["shape"][:2] if rows else (1, 1))
    ax.set_xlabel(f"sequence length S (B={B}, H={H}, D=64)")
    ra, rb = _short(cmp, cmp.reference), _short(cmp, cmp.other)
    ax.set_ylabel(f"time {rb.split()[0]} ÷ time {ra.split()[0]}")
    _legend_above(ax, "The scaling sweep on both GPUs", ncol=3)
    _source_note(fig, cmp)
    plots.save(fig, "06_gpus_sweep", None, alt=f"time ratio {rb}/{ra} against sequence length")
    return fig


# ----------------------------------------------------------------------------------------- status, data
def write_status(cmp: Comparison, notebook: str = "06_gpus") -> Path:
    """The execution-status sidecar of a page that reads several records."""
    book.STATUS_DIR.mkdir(parents=True, exist_ok=True)
    recs = [dict(notebook=r["provenance"].get("notebook"), gpu=r["provenance"].get("gpu"),
                 gpu_slug=r.dir.parent.name, run_id=r["run_id"],
                 record=f"runs/{r.dir.parent.name}/{r['run_id']}/run.json") for r in cmp.used()]
    result = (f"{len(cmp.rows)} pairs compared" + (f"; missing: {len(cmp.missing)} record(s)" if cmp.missing else ""))
    data = dict(notebook=notebook, mode="replay", records=recs, result=result,
                written=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    path = book.STATUS_DIR / f"{notebook}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def downloads(cmp: Comparison) -> None:
    """Download links for every record the page read."""
    lines = ["**Data behind this page**:", ""]
    for rec in cmp.used():
        base = f"/runs/{rec.dir.parent.name}/{rec['run_id']}"
        lines.append(f"- {{download}}`{rec['run_id']} <{base}/run.json>` — {rec['provenance'].get('gpu')}, "
                     f"chapter {rec['provenance'].get('notebook')}")
    book.md("\n".join(lines))
