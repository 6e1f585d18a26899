"""Chapter 0's page, drawn from a run record only: the problem in numbers, the roof and the floors, the SDPA peers,
the timing methods, and the roofline.

Every sentence that draws a conclusion from a number (which side of the ridge the mission shape is on, which floor is
largest, how far per-call events over-state a kernel) is computed here from the record, so it stays true on another
GPU's record. Records from before a field existed are still read: the page says what the record lacks.
"""
from __future__ import annotations

from typing import Optional

from ... import book, plots
from ...harness import bench
from ...labels import label
from ...records import Record
from ...tools import profile

__all__ = ["SDPA_BACKENDS", "us", "shapes", "problem_numbers", "problem_table", "floors", "roof", "roof_text",
           "floors_table", "kernels_launched", "backend_rows", "backend_table", "kernels_table", "backend_text", "timing_rows",
           "timing_table", "timing_text", "roofline_text", "ncu_note", "plot_floors", "plot_backends",
           "plot_timing_methods", "plot_roofline"]

SDPA_BACKENDS = bench.SDPA_BACKENDS
FLOOR_NAMES = {"tensor": "tensor cores (GEMM rate)", "exp": "exponentials (ex2 rate)",
               "memory": "memory (copy bandwidth)", "launch": "launch (empty kernel)"}
METHODS = {"graph": "graph replay", "graph_l2_flushed": "graph, L2 flushed", "loop": "eager loop",
           "events": "per-call events", "ncu_free": "ncu, clocks free", "ncu_base": "ncu, base clocks"}


# ------------------------------------------------------------------------------------------------ numbers
def us(value) -> str:
    """A time in µs as the book prints it: three significant digits (trailing zeros kept: 9.50, 14.0), whole
    microseconds from 100 up (1,572)."""
    return book.MISSING if value is None else (f"{value:,.0f}" if abs(value) >= 100 else f"{value:#.3g}")


def shapes(rec: Record) -> tuple:
    """(mission, big): the two shapes of the record, each [B, H, S, D]."""
    s = rec.ext("shapes")
    return tuple(s["mission"]), tuple(s["big"])


def _shape_text(shape) -> str:
    B, H, S, D = shape
    return f"B{B} H{H} S{S} D{D}"


def _row(rec: Record, kernel: str, shape) -> dict:
    B, H, S, D = shape
    return rec.row(kernel=kernel, B=B, H=H, S=S)


def problem_numbers(B: int = 1, H: int = 8, S: int = 512, D: int = 64) -> dict:
    """The shape in numbers (no measurement involved): FLOPs of the two GEMMs, the fewest bytes a fused kernel moves
    (read Q, K, V, write O), one exponential per score, and their ratio, the arithmetic intensity."""
    flops, nbytes = bench.attention_flops(B, H, S, D), bench.attention_bytes(B, H, S, D)
    return dict(flops=flops, bytes=nbytes, scores=B * H * S * S, exps=B * H * S * S, intensity=flops / nbytes)


def _sms(rec: Record) -> Optional[int]:
    return rec["provenance"].get("num_sms") or rec["extra"].get("device", {}).get("sm_count")


def problem_table(rec: Record, show: bool = True) -> str:
    """The mission shape in numbers beside the GPU's measured ceilings."""
    mission, _ = shapes(rec)
    n, c = problem_numbers(*mission), rec.ext("ceilings")
    rows = [("FLOPs (two GEMMs: Q·Kᵀ and P·V)", f"{n['flops'] / 1e6:.0f} MFLOP"),
            ("fewest bytes (read Q, K, V; write O)", f"{n['bytes'] / 2 ** 20:.1f} MiB"),
            ("scores = exponentials", f"{n['exps'] / 2 ** 20:.1f} Mi"),
            ("arithmetic intensity", f"{n['intensity']:.0f} FLOP/B"),
            ("measured fp16 GEMM rate (cuBLAS)", f"{c['gemm_fp16_tflops']:.0f} TFLOP/s"),
            ("measured copy bandwidth", f"{c['copy_tbps']:.2f} TB/s"),
            ("measured ex2 rate", f"{c['exp2_per_s'] / 1e12:.2f} T exp/s"),
            ("measured empty-kernel launch (graph replay)", f"{c['empty_graph']['median_us']:.2f} µs")]
    dev = rec["extra"].get("device") or {}
    if dev.get("dram_theoretical_tbps"):
        rows.append(("DRAM bandwidth the driver reports (theoretical)", f"{dev['dram_theoretical_tbps']:.2f} TB/s"))
    return book.table([{"quantity": q, _shape_text(mission): v} for q, v in rows], show=show)


def floors(rec: Record) -> dict:
    """Lower bounds on the mission shape's time (µs), one per resource, from the measured ceilings: the time it
    would take if that resource alone limited it. Keys: tensor, exp, memory, launch."""
    mission, _ = shapes(rec)
    c = rec.ext("ceilings")
    return bench.floors_us(*mission, gemm_tflops=c["gemm_fp16_tflops"], copy_tbps=c["copy_tbps"],
                           exp2_per_s=c["exp2_per_s"], launch_us=c["empty_graph"]["median_us"])


def roof(rec: Record, shape=None) -> dict:
    """Where ``shape`` (default: the mission shape) sits against the measured roofs: the ridge point (GEMM rate ÷
    copy bandwidth, FLOP/B), its arithmetic intensity, the side of the ridge it is on ("bandwidth" below the ridge,
    "compute" at or above it), the roof it can reach there (TFLOP/s) and the largest floor."""
    c = rec.ext("ceilings")
    peak, bw = c["gemm_fp16_tflops"], c["copy_tbps"]
    shape = tuple(shape or shapes(rec)[0])
    intensity = problem_numbers(*shape)["intensity"]
    ridge = peak / bw
    fl = floors(rec) if shape == shapes(rec)[0] else {}
    return dict(peak_tflops=peak, bw_tbps=bw, ridge=ridge, intensity=intensity,
                side="bandwidth" if intensity < ridge else "compute", roof_tflops=min(peak, bw * intensity),
                floors=fl, largest=max(fl, key=fl.get) if fl else None)


def roof_text(rec: Record) -> str:
    """The floors and the roof in words, computed: which side of the ridge the mission shape is on and which floor
    is largest (so it is right on any GPU's record)."""
    mission, _ = shapes(rec)
    r = roof(rec)
    fl, largest = r["floors"], r["largest"]
    below = r["side"] == "bandwidth"
    bound, other = ("memory", "tensor") if below else ("tensor", "memory")
    text = (f"The mission shape's {{term}}`arithmetic intensity` is **{r['intensity']:.0f} FLOP/B**. The measured "
            f"{{term}}`ridge point` — the GEMM rate over the copy bandwidth, {r['peak_tflops']:.0f} TFLOP/s ÷ "
            f"{r['bw_tbps']:.2f} TB/s — is **{r['ridge']:.0f} FLOP/B**, so the mission shape is "
            + (f"**below the ridge, on the bandwidth slope** of the {{term}}`roofline` {{cite}}`williams2009roofline`"
               if below else f"**at or above the ridge, under the compute roof** of the {{term}}`roofline` "
                             f"{{cite}}`williams2009roofline`")
            + f". The {{term}}`floors <floor>` say the same thing in time: the {FLOOR_NAMES[bound]} floor, "
              f"{us(fl[bound])} µs, is above the {FLOOR_NAMES[other]} floor, {us(fl[other])} µs (the two compare "
              f"exactly as intensity and ridge do). ")
    if largest == "launch":
        rest = max(v for k, v in fl.items() if k != "launch")
        text += (f"Largest of all is the **launch floor, {us(fl['launch'])} µs**: at this size no kernel can be "
                 f"faster than one launch, and the biggest of the other floors is {100 * rest / fl['launch']:.0f}% "
                 f"of it. This is what makes the problem unusual: it is a latency problem dressed up as a compute "
                 f"problem, and the question for every design is how many of the "
                 f"{_sms(rec) or 'available'} {{term}}`SMs <SM>` it keeps busy, and for how long.")
    else:
        text += (f"Largest of all is the **{FLOOR_NAMES[largest]} floor, {us(fl[largest])} µs**, above even one "
                 f"launch ({us(fl['launch'])} µs): on this GPU that resource, not the launch, bounds the mission "
                 f"shape.")
    return text


def floors_table(rec: Record, show: bool = True) -> str:
    """The four floors, largest first, with the ceiling each comes from."""
    c, fl = rec.ext("ceilings"), floors(rec)
    mission, _ = shapes(rec)
    n = problem_numbers(*mission)
    source = {"tensor": f"{n['flops'] / 1e6:.0f} MFLOP at {c['gemm_fp16_tflops']:.0f} TFLOP/s",
              "exp": f"{n['exps'] / 2 ** 20:.1f} Mi exp at {c['exp2_per_s'] / 1e12:.2f} T/s",
              "memory": f"{n['bytes'] / 2 ** 20:.1f} MiB at {c['copy_tbps']:.2f} TB/s",
              "launch": "one empty kernel, CUDA-graph replay"}
    largest = max(fl, key=fl.get)
    rows = [{"floor": FLOOR_NAMES[k] + (" (largest)" if k == largest else ""), "µs": v, "from": source[k]}
            for k, v in sorted(fl.items(), key=lambda kv: -kv[1])]
    return book.table(rows, formats={"µs": us}, show=show)


# ------------------------------------------------------------------------------------------------ the peers
def _report(rec: Record, key: str) -> Optional[str]:
    """A report the record names: the new keys, or the names of records from before them ("full")."""
    reps = rec["extra"].get("ncu_reports") or {}
    name = reps.get(key) or (reps.get("full") if key == "base_clocks" else None)
    return name if name and (rec.dir / name).exists() else None


def ncu_note(rec: Record) -> str:
    """What the record says about its Nsight Compute reports, when one is missing (else "")."""
    reps = rec["extra"].get("ncu_reports") or {}
    missing = [k for k in ("base_clocks", "clock_free") if _report(rec, k) is None]
    if not missing:
        return ""
    why = "; ".join(f"{k}: {reps[k + '_error']}" for k in missing if reps.get(k + "_error"))
    return (f"*This record has no Nsight Compute report ({', '.join(missing)})" + (f": {why}" if why else "")
            + ". The columns that read it show —.*")


def kernels_launched(rec: Record) -> dict:
    """{backend: [kernel names]} read from the record's base-clock ncu report ({} if it has none)."""
    name = _report(rec, "base_clocks")
    if name is None:
        return {}
    out: dict = {}
    for r in profile.read_report(rec.file(name)):
        key = r["launch_label"].split(" ")[0] if r["launch_label"] else "?"
        out.setdefault(key, []).append(r["kernel_name"])
    return out


def backend_rows(rec: Record) -> list:
    """One row per SDPA backend: µs at the mission shape with its p10–p90, TFLOP/s at both shapes, the error
    against fp64, and the kernel(s) ncu saw it launch."""
    mission, big = shapes(rec)
    launched = kernels_launched(rec)
    rows = []
    for name in SDPA_BACKENDS:
        m, b = _row(rec, name, mission), _row(rec, name, big)
        rows.append({"backend": label(name), "µs": m["median_us"],
                     "p10–p90 µs": f"{us(m['p10_us'])}–{us(m['p90_us'])}", "TFLOP/s": m["tflops"],
                     f"TFLOP/s at {_shape_text(big)}": b["tflops"], "max |err|": m.get("max_abs_err"),
                     "_kernels": ", ".join(launched.get(name, [])) or None})
    return rows


def backend_table(rec: Record, show: bool = True) -> str:
    mission, big = shapes(rec)
    cols = ["backend", "µs", "p10–p90 µs", "TFLOP/s", f"TFLOP/s at {_shape_text(big)}", "max |err|"]
    return book.table(backend_rows(rec), columns=cols, caption=f"median µs (graph replay), its p10–p90, TFLOP/s and the error "
                                                 f"against fp64 at {_shape_text(mission)}; TFLOP/s at the big shape",
                      formats={"µs": us, "TFLOP/s": "{:.1f}", f"TFLOP/s at {_shape_text(shapes(rec)[1])}": "{:.0f}",
                               "max |err|": "{:.1e}"}, show=show)


def kernels_table(rec: Record, show: bool = True) -> str:
    """Which kernel(s) each backend launched at the mission shape, as ncu saw them (— without a report)."""
    rows = [{"backend": r["backend"], "kernel(s) ncu saw it launch": r["_kernels"]} for r in backend_rows(rec)]
    return book.table(rows, show=show)


def backend_text(rec: Record) -> str:
    """The peers in words: the fastest backend at each shape, its lead, and which backend the default picks."""
    mission, big = shapes(rec)
    m = {n: _row(rec, n, mission) for n in SDPA_BACKENDS}
    b = {n: _row(rec, n, big) for n in SDPA_BACKENDS}
    named = [n for n in SDPA_BACKENDS if n != "sdpa_default"]
    fast = min(named, key=lambda n: m[n]["median_us"])
    second = min((n for n in named if n != fast), key=lambda n: m[n]["median_us"])
    separated = m[fast]["p90_us"] < m[second]["p10_us"]
    top_big = max(named, key=lambda n: b[n]["tflops"])
    peak = rec.ext("ceilings")["gemm_fp16_tflops"]
    text = (f"At {_shape_text(mission)} the fastest named backend is **{label(fast)}**, {us(m[fast]['median_us'])} µs"
            + (f", ahead of {label(second)} ({us(m[second]['median_us'])} µs; their p10–p90 ranges do not overlap)"
               if separated else f", tied with {label(second)} ({us(m[second]['median_us'])} µs: their p10–p90 "
                                 f"ranges overlap)")
            + f". At {_shape_text(big)} the best is {label(top_big)} at {b[top_big]['tflops']:.0f} TFLOP/s, "
              f"{100 * b[top_big]['tflops'] / peak:.0f}% of the measured GEMM rate.")
    launched = kernels_launched(rec)
    if launched.get("sdpa_default"):
        same = [n for n in named if launched.get(n) == launched["sdpa_default"]]
        text += (f" SDPA's default dispatch launched the same kernel as {label(same[0])} here." if same else
                 " SDPA's default dispatch launched a kernel none of the named backends did.")
    return text


# ------------------------------------------------------------------------------------------------ timing
def _ncu_durations(rec: Record, key: str) -> dict:
    """{launch label: summed ncu duration µs} (a backend may launch several kernels per call: flash's split-KV and
    its combine)."""
    name = _report(rec, key)
    out: dict = {}
    if name is None:
        return out
    for r in profile.read_report(rec.file(name)):
        k = r["launch_label"].split(" ")[0]
        out[k] = out.get(k, 0.0) + (r["duration_us"] or 0.0)
    return out


def timing_rows(rec: Record) -> list:
    """The same kernels timed by every method (µs per launch)."""
    m = rec.ext("timing_methods")
    base, free = _ncu_durations(rec, "base_clocks"), _ncu_durations(rec, "clock_free")
    rows = []
    for name, t in m.items():
        rows.append({"kernel": label(name), METHODS["graph"]: t["graph"]["median_us"],
                     METHODS["graph_l2_flushed"]: (t.get("graph_l2_flushed") or {}).get("median_us"),
                     METHODS["loop"]: t["loop"]["median_us"], METHODS["events"]: t["events"]["median_us"],
                     METHODS["ncu_free"]: free.get(name), METHODS["ncu_base"]: base.get(name)})
    return rows


def timing_table(rec: Record, show: bool = True) -> str:
    rows = timing_rows(rec)
    return book.table(rows, caption="median µs per launch, by timing method", show=show,
                      formats={m: us for m in METHODS.values()})


def timing_text(rec: Record) -> str:
    """How much the per-call events over-state a kernel, and how far the L2 flush moves the graph time."""
    t = rec.ext("timing_methods")
    c, e = t["sdpa_cudnn"], t["empty_kernel"]
    gap = c["events"]["median_us"] - c["graph"]["median_us"]
    text = (f"Per-call events over-state cuDNN's time by **{us(gap)} µs** in this run "
            f"({us(c['events']['median_us'])} µs against {us(c['graph']['median_us'])} µs by graph replay); for the "
            f"empty kernel they read {us(e['events']['median_us'])} µs for a launch that takes "
            f"{us(e['graph']['median_us'])} µs.")
    flushed = c.get("graph_l2_flushed")
    if flushed:
        overlap = not (flushed["p10_us"] > c["graph"]["p90_us"] or flushed["p90_us"] < c["graph"]["p10_us"])
        text += (f" Flushing L2 before each replay moves cuDNN from {us(c['graph']['median_us'])} to "
                 f"{us(flushed['median_us'])} µs" + (" — inside the run-to-run spread (their p10–p90 ranges "
                                                     "overlap)" if overlap else "")
                 + ": only the first launch of each replay starts cold")
        nbytes, l2 = problem_numbers(*shapes(rec)[0])["bytes"], rec["provenance"].get("l2_bytes")
        text += (f", and the inputs and output ({nbytes / 2 ** 20:.0f} MiB) fit in the {l2 / 2 ** 20:.0f} MiB L2 for "
                 f"the rest." if l2 and nbytes < l2 else ".")
    return text


def roofline_text(rec: Record) -> str:
    """Where the backends land against the roof at both shapes (computed)."""
    mission, big = shapes(rec)
    parts = []
    for shape in (mission, big):
        r = roof(rec, shape)
        best = max(_row(rec, n, shape)["tflops"] for n in SDPA_BACKENDS)
        parts.append((shape, r, best))
    (m_shape, m_roof, m_best), (b_shape, b_roof, b_best) = parts
    side = {"bandwidth": "on the bandwidth slope", "compute": "under the compute roof"}
    return (f"At {_shape_text(m_shape)} ({m_roof['intensity']:.0f} FLOP/B, {side[m_roof['side']]}) the roof allows "
            f"{m_roof['roof_tflops']:.0f} TFLOP/s and the best backend reaches {m_best:.0f}, "
            f"{100 * m_best / m_roof['roof_tflops']:.0f}% of it: the problem is too small to fill the machine. At "
            f"{_shape_text(b_shape)} ({b_roof['intensity']:.0f} FLOP/B, {side[b_roof['side']]}) the best reaches "
            f"{b_best:.0f} TFLOP/s, {100 * b_best / b_roof['roof_tflops']:.0f}% of the roof there. The dotted line "
            f"is what the mission shape would reach if it took exactly one empty-kernel launch.")


# ------------------------------------------------------------------------------------------------ charts
def _value_labels(ax, xs, values, fmt, reference_ys=(), log=False, fontsize=7):
    """Value labels above bars; a label that would sit on a reference line goes inside its bar instead."""
    for x, v in zip(xs, values):
        y, va, color = v * (1.06 if log else 1.0), "bottom", "black"
        top = v * (1.35 if log else 1.0) + (0 if log else 0.08 * max(values))
        if any(y <= ref <= top for ref in reference_ys):
            y, va, color = v * (0.94 if log else 1.0) - (0 if log else 0.02 * max(values)), "top", "white"
        ax.text(x, y, fmt(v), ha="center", va=va, fontsize=fontsize, color=color)


def _two_lines(name: str, width: int = 10) -> str:
    """A tick label over two lines if it is longer than ``width`` characters (so neighbouring bars' labels never
    touch), broken nearest its middle: at a space, after a hyphen, or inside a camel-case word (hyphenated)."""
    if len(name) <= width:
        return name
    cuts = [(i, name[:i] + "\n" + name[i + 1:]) for i, ch in enumerate(name) if ch == " "]
    cuts += [(i, name[:i + 1] + "\n" + name[i + 1:]) for i, ch in enumerate(name) if ch == "-"]
    cuts += [(i, name[:i] + "-\n" + name[i:]) for i in range(1, len(name)) if name[i - 1].islower() and name[i].isupper()]
    if not cuts:
        return name
    return min(cuts, key=lambda c: abs(c[0] - len(name) / 2))[1]


def plot_floors(rec: Record):
    """The four floors of the mission shape beside what cuDNN and FlashAttention-2 take (same record)."""
    plt = plots.plt()
    mission, _ = shapes(rec)
    fl = floors(rec)
    largest = max(fl, key=fl.get)
    items = [(FLOOR_NAMES[k] + " floor", v, "#d62728" if k == largest else "#999999") for k, v in fl.items()]
    items += [(label(n) + ", measured", _row(rec, n, mission)["median_us"], plots.COLORS.get(n, "gray"))
              for n in ("sdpa_cudnn", "sdpa_flash")]
    items.sort(key=lambda it: it[1])
    fig, ax = plt.subplots(figsize=(7.2, 2.9))
    ys = range(len(items))
    ax.barh(list(ys), [it[1] for it in items], color=[it[2] for it in items])
    ax.set_yticks(list(ys))
    ax.set_yticklabels([it[0] for it in items], fontsize=8)
    top = max(it[1] for it in items)
    for y, (_, v, _) in zip(ys, items):
        ax.text(v + 0.01 * top, y, f"{us(v)} µs", va="center", fontsize=7)
    ax.set_xlim(0, top * 1.15)
    ax.set_xlabel("µs per call (mission shape)")
    ax.set_title(f"What bounds {_shape_text(mission)}: four floors and two peers", fontsize=9)
    plots.save(fig, "00_method_floors", rec, alt="the mission shape's floors (tensor, exp, memory, launch) and the "
                                                 "measured time of cuDNN and FlashAttention-2")
    return fig


def plot_backends(rec: Record):
    """The SDPA backends: µs at the mission shape (with the empty-kernel launch), TFLOP/s at the big shape."""
    plt = plots.plt()
    mission, big = shapes(rec)
    names = list(SDPA_BACKENDS)
    colors = [plots.COLORS.get(n, "gray") for n in names]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(7.4, 3.4))
    us = [_row(rec, n, mission)["median_us"] for n in names]
    a1.bar(range(len(names)), us, color=colors)
    launch = rec.ext("ceilings")["empty_graph"]["median_us"]
    a1.axhline(launch, color="k", ls=":", lw=1, label=f"empty kernel ({launch:.2f} µs)")
    _value_labels(a1, range(len(names)), us, lambda v: f"{v:.1f}", reference_ys=[launch])
    a1.set_ylim(0, max(us) * 1.18)
    a1.set_ylabel("µs per call (graph replay, median)")
    a1.set_title(_shape_text(mission), fontsize=9)
    a1.legend(fontsize=7, loc="upper left")
    tf = [_row(rec, n, big)["tflops"] for n in names]
    a2.bar(range(len(names)), tf, color=colors)
    _value_labels(a2, range(len(names)), tf, lambda v: f"{v:.0f}")
    a2.set_ylim(0, max(tf) * 1.18)
    a2.set_ylabel("TFLOP/s")
    a2.set_title(_shape_text(big), fontsize=9)
    fig.suptitle("PyTorch SDPA's backends, one run", fontsize=10)
    for a in (a1, a2):
        a.set_xticks(range(len(names)))
        a.set_xticklabels([_two_lines(label(n).replace(" (SDPA)", "")) for n in names], fontsize=7.5)
    fig.tight_layout()
    plots.save(fig, "00_method_sdpa_backends", rec, alt="SDPA backends: µs at the mission shape, TFLOP/s at the "
                                                        "big shape")
    return fig


def plot_timing_methods(rec: Record):
    """Each kernel timed by every method (log axis: per-call events are an order of magnitude off)."""
    import numpy as np

    plt = plots.plt()
    rows = timing_rows(rec)
    methods = [m for m in METHODS.values() if any(r.get(m) for r in rows)]
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    width = 0.8 / len(methods)
    cmap = plt.get_cmap("tab10")
    for i, m in enumerate(methods):
        xs = np.arange(len(rows)) + (i - (len(methods) - 1) / 2) * width
        vals = [r.get(m) or 0.0 for r in rows]
        ax.bar(xs, vals, width=width * 0.95, label=m, color=cmap(i))
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["kernel"] for r in rows], fontsize=8)
    ax.set_ylabel("µs per launch (log)")
    ax.set_title("One kernel, six clocks: what each timing method measures", fontsize=9)
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    fig.tight_layout()
    plots.save(fig, "00_method_timing_methods", rec, alt="cuDNN, FlashAttention-2 and an empty kernel timed by "
                                                         "graph replay, eager loop, per-call events and ncu")
    return fig


def plot_roofline(rec: Record):
    """The measured roofs (GEMM rate, copy bandwidth), the ridge point, and where each backend lands at both
    shapes. Backends are told apart by colour (legend outside the axes), shapes by marker and a label under each
    group, so no two labels can collide."""
    import numpy as np

    plt = plots.plt()
    c = rec.ext("ceilings")
    peak, bw = c["gemm_fp16_tflops"], c["copy_tbps"]
    ridge = peak / bw
    mission, big = shapes(rec)
    xs_shapes = [problem_numbers(*s)["intensity"] for s in (mission, big)]
    lo, hi = min(xs_shapes + [ridge]) / 8, max(xs_shapes + [ridge]) * 4
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    x = np.logspace(np.log10(lo), np.log10(hi), 300)
    ax.loglog(x, np.minimum(peak, bw * x), "k-", lw=1.5, label="measured roof")
    ax.axvline(ridge, color="#555555", ls="--", lw=1)
    ax.text(ridge * 1.06, peak * 1.12, f"ridge point {ridge:.0f} FLOP/B", fontsize=7, ha="left", va="bottom")
    ax.text(hi / 1.1, peak * 1.12, f"GEMM {peak:.0f} TFLOP/s", fontsize=7, ha="right", va="bottom")
    slope_x = lo * 1.5                         # under the slope, left of where it meets the ridge
    ax.text(slope_x * 1.3, bw * slope_x, f"copy {bw:.2f} TB/s", fontsize=7, ha="left", va="top")
    lowest = []
    for shape, marker in ((mission, "o"), (big, "s")):
        ai = problem_numbers(*shape)["intensity"]
        ys = []
        for n in SDPA_BACKENDS:
            y = _row(rec, n, shape)["tflops"]
            ys.append(y)
            hollow = n == "sdpa_default"          # the default often picks cuDNN: a ring shows both
            ax.loglog([ai], [y], marker, ms=11 if hollow else 6, mfc="none" if hollow else plots.COLORS.get(n),
                      mec=plots.COLORS.get(n, "gray"), mew=1.5 if hollow else 1,
                      label=label(n) if shape == mission else None)
        lowest.append((ai, min(ys), shape))
    launch_us = c["empty_graph"]["median_us"]
    launch_roof = bench.attention_flops(*mission) / (launch_us * 1e-6) / 1e12
    ax.axhline(launch_roof, color="gray", ls=":", lw=1, label=f"{_shape_text(mission)} in one empty launch")
    bottom = min(y for _, y, _ in lowest) / 4
    for ai, y, shape in lowest:                  # each shape's label on the side of its markers away from the ridge
        ax.text(ai, y / 1.5, _shape_text(shape), fontsize=7, ha="right" if ai < ridge else "left", va="top")
    ax.set_xlim(lo, hi)
    ax.set_ylim(bottom, peak * 2.2)
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved, at least)")
    ax.set_ylabel("TFLOP/s")
    ax.set_title("Roofline with measured ceilings", fontsize=9)
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
    fig.tight_layout()
    plots.save(fig, "00_method_roofline", rec, alt="roofline: measured GEMM and copy roofs, the ridge point, the "
                                                   "SDPA backends at the mission and big shapes")
    return fig
