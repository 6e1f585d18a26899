"""Chapter 1 — v12, the correct baseline: reproduced on the H100, checked, timed, profiled, and taken apart.

Live work (``measure``): correctness of v12 over S × B·H, the failed no-4th-barrier shortcut, compute-sanitizer
on v12 and on the shortcut, CUDA-graph timings of v12, its ablation ladder and the SDPA backends in one process,
and one Nsight Compute ``--set full`` report (v12 plus the ladder) at the mission shape.
Everything below ``measure`` reads only a Record.
"""
from __future__ import annotations

from .. import bench, plots, profile
from ..records import Record
from ..specs.v12 import ALONE, BM, BN, LADDER, LADDER_B

NOTEBOOK = "01_v12_baseline"
DEFAULTS = dict(B=1, H=8, S=512, D=64, seqs=[128, 384, 512, 1000, 2048], bhs=[1, 8, 64], runs=3, samples=20,
                sanitize_shape="1,2,128,64", ncu=True, sanitize=True)

# Quoted history, NOT a measurement: the original assessment's *estimated* per-cause split of v12's 1508 µs on an
# NVIDIA L4 (../shared/origin/flashcore-v12-honest-assessment.md, "Current v12 Bottlenecks", Oct 2025).
SEED_ESTIMATE_L4_US = {"barriers (4 per tile)": 44.0, "scalar loads": 165.0, "no overlap": 220.0,
                       "WMMA compute": 110.0, "other (unexplained)": 1000.0}
SEED_MEASURED_L4_US = 1508.0   # the assessment's measured total on the L4 (quoted, not ours)

# What each ladder step removes (the cause a step's time delta is charged to)
CAUSES = {"v12_abl_1_grid": "persistent per-head schedule (only B·H CTAs busy)",
          "v12_abl_2_vec": "scalar 2-byte loads",
          "v12_abl_3_softmax": "one serial softmax warp",
          "v12_abl_4_prefetch": "no load/compute overlap"}
CAUSES_B = {"v12_only_softmax": CAUSES["v12_abl_3_softmax"], "v12_only_softmax_vec": CAUSES["v12_abl_2_vec"],
            "v12_abl_3_softmax": CAUSES["v12_abl_1_grid"], "v12_abl_4_prefetch": CAUSES["v12_abl_4_prefetch"]}
RESIDUAL = "what is left: 4 barriers/tile, WMMA via smem, launch"
SDPA = ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "sdpa_default")


def _bh_pairs(bhs):
    """B·H → (B, H): 1 → (1,1), 8 → (1,8), 64 → (4,16); other values → (1, bh)."""
    return [{1: (1, 1), 8: (1, 8), 64: (4, 16)}.get(int(n), (1, int(n))) for n in bhs]


def _lpg(us_guess: float) -> int:
    """Launches per graph: ~10 ms of work per replay, at least 1, at most 20."""
    return max(1, min(20, int(10000 / max(us_guess, 1.0))))


def measure(run, params: dict) -> None:
    import time

    import torch

    from .. import kernels, sanitize
    from ..check import check_kernel, make_inputs
    from ..compile import load_kernel, nvcc_compile

    B, H, S, D = (int(params[k]) for k in ("B", "H", "S", "D"))
    runs, samples = int(params.get("runs", 3)), int(params.get("samples", 20))
    ids = ["v12_baseline", "v12_no_4th_barrier"] + LADDER[1:] + ALONE + [k_ for k_ in LADDER_B if k_ not in
                                                                           LADDER + ALONE]
    launchers = {kid: load_kernel(kernels.get(kid)) for kid in ids}
    try:                                                 # ptxas's view (registers, smem, spills); CPU-side
        run.extra["resources"] = {kid: nvcc_compile(kernels.get(kid)).row() for kid in ids}
        for r in run.extra["resources"].values():
            r.pop("log", None)
            r.pop("cubin", None)
    except Exception as exc:                             # no nvcc on this host: say so, go on
        run.extra["resources_error"] = str(exc)[:300]
    run.extra["num_sms"] = launchers["v12_baseline"].num_sms
    run.extra["grids"] = {kid: dict(zip(("grid", "block", "smem"), launchers[kid].geometry(B * H, S, S)[1:]))
                          for kid in ids}

    def as_fn(kid):
        launch = launchers[kid]
        return lambda q, k, v, o: launch(q, k, v, o)

    # 1. correctness of v12 over the sweep (fresh seeded inputs per shape, NaN-poisoned outputs, fp64 reference)
    t0 = time.time()
    for Bs, Hs in _bh_pairs(params.get("bhs", DEFAULTS["bhs"])):
        for Ss in params.get("seqs", DEFAULTS["seqs"]):
            chk = check_kernel(as_fn("v12_baseline"), Bs, Hs, int(Ss), D, seed=100 + int(Ss) + Bs * Hs, runs=runs,
                               kernel="v12_baseline")
            run.add_result("v12_baseline", Bs, Hs, int(Ss), D, check=chk, role="sweep")
    run.extra["sweep_seconds"] = time.time() - t0

    # 2. at the mission shape: every variant checked (the shortcut too), then timed beside the SDPA backends
    q, k, v = make_inputs(B, H, S, D, seed=2026)
    o = torch.empty_like(q)
    timings = {}
    for name, fn in bench.sdpa_callables(q, k, v).items():
        timings[name] = bench.time_graph(fn, samples=samples)
    for kid in ids:
        chk = check_kernel(as_fn(kid), B, H, S, D, seed=7, runs=runs, kernel=kid)
        t = None
        if chk.passed or kernels.get(kid).expect_failure:
            launch = launchers[kid]
            fn = (lambda L=launch: L(q, k, v, o))
            t_one = bench.time_graph(fn, launches_per_graph=1, samples=3, warmup=1)
            t = bench.time_graph(fn, launches_per_graph=_lpg(t_one.median_us), samples=max(5, samples // 2))
        timings[kid] = t
        run.add_result(kid, B, H, S, D, check=chk, timing=t, role="mission",
                       tflops=bench.tflops(B, H, S, D, t.median_us) if t else None)
    after = {}
    for name in SDPA:                                   # the row is the timing before ours; again after, as a drift check
        t = timings[name]
        run.add_result(name, B, H, S, D, timing=t, role="mission", tflops=bench.tflops(B, H, S, D, t.median_us))
        after[name] = bench.time_graph(bench.sdpa_callables(q, k, v)[name], samples=samples).row()
    run.extra["sdpa_after"] = after

    # 3. the schedule in numbers: v12 and the per-tile grid at S (mission) for every B·H of the sweep
    for Bs, Hs in _bh_pairs(params.get("bhs", DEFAULTS["bhs"])):
        if Bs * Hs == B * H:
            continue
        qs, ks, vs = make_inputs(Bs, Hs, S, D, seed=5)
        os_ = torch.empty_like(qs)
        for kid in ("v12_baseline", "v12_abl_1_grid"):
            fn = (lambda L=launchers[kid]: L(qs, ks, vs, os_))
            t_one = bench.time_graph(fn, launches_per_graph=1, samples=3, warmup=1)
            t = bench.time_graph(fn, launches_per_graph=_lpg(t_one.median_us), samples=max(5, samples // 2))
            run.add_result(kid, Bs, Hs, S, D, timing=t, role="schedule")
        t = bench.time_graph(bench.sdpa_callables(qs, ks, vs)["sdpa_cudnn"], samples=samples)
        run.add_result("sdpa_cudnn", Bs, Hs, S, D, timing=t, role="schedule")
    del q, k, v, o
    torch.cuda.empty_cache()

    # 4. compute-sanitizer: all four tools on v12, racecheck on the shortcut (it must see the race)
    if params.get("sanitize", True):
        shape = params.get("sanitize_shape", DEFAULTS["sanitize_shape"])
        sums = [sanitize.run_sanitizer(t, ["v12_baseline"], shape, timeout=240) for t in sanitize.TOOLS]
        sums.append(sanitize.run_sanitizer("racecheck", ["v12_no_4th_barrier"], shape, timeout=240))
        run.extra["sanitizer"] = sums

    # 5. Nsight Compute, full set: v12 and the ladder at the mission shape, one report
    if params.get("ncu", True):
        rep = profile.ncu_profile(run.dir / "v12_ladder_full.ncu-rep", kernels=LADDER, shapes=f"{B},{H},{S},{D}",
                                  ncu_set="full")
        run.extra["ncu_report"] = run.rel(rep)
        for row in run.results:
            if row["kernel"] in LADDER and row.get("role") == "mission":
                row["ncu_report"] = run.rel(rep)
    try:                                                 # SASS instruction counts (cuobjdump/nvdisasm)
        from .. import sass
        run.extra["sass"] = {kid: sass.evidence(kernels.get(kid)) for kid in LADDER}
    except Exception as exc:
        run.extra["sass_error"] = str(exc)[:300]
    run.extra["shapes"] = dict(mission=[B, H, S, D])
    run.extra["ladder"] = list(LADDER)
    run.extra["alone"] = list(ALONE)
    run.extra["ladder_b"] = list(LADDER_B)


# ------------------------------------------------------------------------------------------------ from a record
def _mission(rec: Record):
    return rec.ext("shapes")["mission"]


def _t(rec: Record, kid: str) -> float:
    B, H, S, D = _mission(rec)
    return rec.row(kernel=kid, B=B, H=H, S=S, role="mission")["median_us"]


def headline(rec: Record) -> dict:
    """v12's time and its ratios to cuDNN and flash at the mission shape (same run)."""
    v12 = _t(rec, "v12_baseline")
    cud, fl = _t(rec, "sdpa_cudnn"), _t(rec, "sdpa_flash")
    last = _t(rec, LADDER[-1])
    return dict(v12_us=v12, cudnn_us=cud, flash_us=fl, x_cudnn=v12 / cud, x_flash=v12 / fl, last_id=LADDER[-1],
                last_us=last, last_x_cudnn=last / cud, speedup_ladder=v12 / last)


def correctness_table(rec: Record):
    import pandas as pd

    rows = [dict(B=r["B"], H=r["H"], S=r["S"], max_abs_err=r["max_abs_err"], tol=r["tol"], passed=r["passed"],
                 deterministic=r["deterministic"], unwritten=r.get("unwritten"))
            for r in rec.rows(kernel="v12_baseline", role="sweep")]
    return pd.DataFrame(rows).sort_values(["B", "H", "S"]).reset_index(drop=True)


def sweep_ok(rec: Record) -> dict:
    rows = rec.rows(kernel="v12_baseline", role="sweep")
    return dict(shapes=len(rows), passed=sum(bool(r["passed"]) for r in rows),
                deterministic=sum(bool(r["deterministic"]) for r in rows),
                worst_err=max(r["max_abs_err"] for r in rows), worst_ratio=max(r["max_abs_err"] / r["tol"] for r in rows))


def timing_table(rec: Record):
    """Every kernel of the run at the mission shape: check, µs (p10–p90), × cuDNN, × flash."""
    import pandas as pd

    B, H, S, D = _mission(rec)
    cud, fl = _t(rec, "sdpa_cudnn"), _t(rec, "sdpa_flash")
    rows = []
    for r in rec.rows(B=B, H=H, S=S, role="mission"):
        us = r["median_us"]
        rows.append({"kernel": r["kernel"], "passed": r["passed"], "max |err|": r["max_abs_err"],
                     "deterministic": r["deterministic"], "µs": us,
                     "p10–p90": f"{r['p10_us']:.1f}–{r['p90_us']:.1f}" if us is not None else "",
                     "× cuDNN": us / cud if us else None, "× flash": us / fl if us else None})
    return pd.DataFrame(rows).set_index("kernel")


def _steps(rec: Record, order: str):
    if order == "a":
        return rec.ext("ladder"), CAUSES
    return rec.ext("ladder_b"), CAUSES_B


def ladder(rec: Record, order: str = "a"):
    """A cumulative ladder: each step's µs, the time it removed, and that delta's share of v12's time.

    ``order="a"``: the schedule first (grid → vec → softmax → prefetch); ``"b"``: inside the CTA first
    (softmax → vec → grid → prefetch). The deltas of either add up to v12's time minus the last step's."""
    import pandas as pd

    steps, causes = _steps(rec, order)
    total = _t(rec, steps[0])
    rows, prev = [], total
    for kid in steps:
        us = _t(rec, kid)
        first = kid == steps[0]
        rows.append({"step": kid, "fix": "v12 as designed" if first else causes[kid], "µs": us,
                     "removed µs": None if first else prev - us,
                     "share of v12": None if first else (prev - us) / total})
        prev = us
    return pd.DataFrame(rows).set_index("step")


def breakdown(rec: Record, order: str = "a") -> dict:
    """{cause: µs} — a ladder's deltas plus the residual (its last step's time); sums to v12's time exactly."""
    steps, causes = _steps(rec, order)
    lad = ladder(rec, order)
    out = {causes[k]: float(lad.loc[k, "removed µs"]) for k in steps[1:]}
    out[RESIDUAL] = float(lad.loc[steps[-1], "µs"])
    return out


def explained(rec: Record, order: str = "a") -> dict:
    """How much of v12's time the named causes account for (Σ deltas / total), and the top three causes."""
    b = breakdown(rec, order)
    total = _t(rec, "v12_baseline")
    named = {k: v for k, v in b.items() if k != RESIDUAL}
    top = sorted(named.items(), key=lambda kv: -kv[1])[:3]
    return dict(total_us=total, explained_us=sum(named.values()), explained=sum(named.values()) / total,
                residual_us=b[RESIDUAL], top=[(k, v, v / total) for k, v in top])


def both_orders(rec: Record):
    """Each cause's share of v12's time when it is fixed first-ish (order b) or after the schedule (order a)."""
    import pandas as pd

    a, b = breakdown(rec, "a"), breakdown(rec, "b")
    total = _t(rec, "v12_baseline")
    return pd.DataFrame({"schedule first (µs)": a, "share (schedule first)": {k: v / total for k, v in a.items()},
                         "CTA first (µs)": b, "share (CTA first)": {k: v / total for k, v in b.items()}})


def steps_per_cta(kid: str, B: int, H: int, S: int, num_sms: int) -> int:
    """Key-tile steps the busiest CTA runs in sequence: heads per CTA × query tiles × key tiles (persistent) or
    key tiles only (one query tile per CTA)."""
    n_qt, n_kt = -(-S // BM), -(-S // BN)
    from .. import kernels

    if kernels.get(kid).grid.__name__ == "persistent_grid":
        return -(-(B * H) // num_sms) * n_qt * n_kt
    return n_kt


def step_latency(rec: Record):
    """µs per key-tile step of the busiest CTA: the time the schedule multiplies."""
    import pandas as pd

    B, H, S, D = _mission(rec)
    rows = []
    for kid in dict.fromkeys(list(rec.ext("ladder")) + list(rec.ext("ladder_b")) + list(rec.ext("alone"))):
        n = steps_per_cta(kid, B, H, S, rec.ext("num_sms"))
        us = _t(rec, kid)
        rows.append({"kernel": kid, "schedule": "persistent (per head)" if n > -(-S // BN) else "per query tile",
                     "steps per CTA": n, "µs": us, "µs per step": us / n})
    return pd.DataFrame(rows).set_index("kernel")


def alone_table(rec: Record):
    """One fix alone on v12 (persistent schedule kept) beside the same fix's ladder delta: order matters."""
    import pandas as pd

    total = _t(rec, "v12_baseline")
    lad = ladder(rec, "a")
    pairs = {"v12_only_vec": "v12_abl_2_vec", "v12_only_softmax": "v12_abl_3_softmax"}
    rows = []
    for kid in rec.ext("alone"):
        us = _t(rec, kid)
        step = pairs.get(kid)
        rows.append({"variant": kid, "µs": us, "saves alone (µs)": total - us, "share alone": (total - us) / total,
                     "share in the ladder": lad.loc[step, "share of v12"] if step else None})
    return pd.DataFrame(rows).set_index("variant")


def schedule_table(rec: Record):
    """v12 (persistent, one CTA per head busy) vs the per-tile grid vs cuDNN at S (mission) over B·H."""
    import pandas as pd

    B, H, S, D = _mission(rec)
    rows = {}
    for r in rec.rows(S=S):
        if r.get("role") in ("mission", "schedule") and r["kernel"] in ("v12_baseline", "v12_abl_1_grid",
                                                                       "sdpa_cudnn"):
            rows.setdefault(r["B"] * r["H"], {})[r["kernel"]] = r["median_us"]
    df = pd.DataFrame.from_dict(rows, orient="index").sort_index()
    df.index.name = "B·H"
    df["CTAs with work (v12)"] = [min(bh, rec.ext("num_sms")) for bh in df.index]
    df["SMs"] = rec.ext("num_sms")
    return df


def _ncu_rows(rec: Record) -> dict:
    rows = profile.read_report(rec.file(rec.ext("ncu_report")))
    return {kid: (profile.rows_for(rows, kid) or [None])[0] for kid in rec.ext("ladder")}


NCU_COLUMNS = {"duration_us": "ncu µs (base clock)", "grid_size": "CTAs launched",
               "achieved_occupancy_pct": "achieved occupancy %",
               "theoretical_occupancy_pct": "theoretical occupancy %", "issue_active_pct": "issue active %",
               "tensor_pipe_pct": "tensor pipe %", "dram_throughput_pct": "DRAM throughput %",
               "l2_throughput_pct": "L2 throughput %", "smem_bank_conflicts": "smem bank conflicts",
               "instructions": "instructions", "registers_per_thread": "registers"}


def ncu_table(rec: Record):
    """Nsight Compute's view of v12 and each ladder step (full set, mission shape)."""
    import pandas as pd

    data = {}
    for kid, row in _ncu_rows(rec).items():
        row = row or {}
        d = {lab: row.get(key) for key, lab in NCU_COLUMNS.items()}
        act, ela, sms = row.get("sm_cycles_active_avg"), row.get("elapsed_cycles"), row.get("sm_count")
        busy = 100.0 * act / ela if act and ela else None       # mean over SMs of cycles active / elapsed
        d["SM busy % (avg cycles active / elapsed)"] = busy
        d["≈ SMs busy"] = busy * sms / 100.0 if busy is not None and sms else None
        data[kid] = d
    return pd.DataFrame(data).T


def stall_table(rec: Record, top: int = 8):
    """Warp-state breakdown (warps stalled per issued instruction) of v12 and each ladder step, v12's top reasons."""
    import pandas as pd

    rows = _ncu_rows(rec)
    stalls = {kid: profile.stall_breakdown(r) if r else {} for kid, r in rows.items()}
    reasons = list(stalls[LADDER[0]])[:top]
    df = pd.DataFrame({kid: {k: s.get(k, 0.0) for k in reasons} for kid, s in stalls.items()})
    df.index.name = "stall reason"
    return df


def sanitizer_table(rec: Record):
    import pandas as pd

    from ..sanitize import verdicts

    rows = verdicts(rec.ext("sanitizer"))
    return pd.DataFrame([{k: r[k] for k in ("tool", "kernel", "launches", "problems", "clean", "first")}
                         for r in rows])


def race_demo(rec: Record) -> dict:
    """The shortcut: its check at the mission shape and what racecheck said about it."""
    B, H, S, D = _mission(rec)
    chk = rec.row(kernel="v12_no_4th_barrier", S=S, role="mission")
    race = [s for s in rec.ext("sanitizer") if s["tool"] == "racecheck" and "v12_no_4th_barrier" in s["kernels"]]
    r = race[0] if race else {}
    return dict(max_abs_err=chk["max_abs_err"], tol=chk["tol"], passed=chk["passed"],
                deterministic=chk["deterministic"], racecheck_errors=r.get("errors"),
                racecheck_clean=r.get("clean"), racecheck_summary=r.get("summary", ""),
                first=next((p["first"] for p in r.get("per_launch", []) if p.get("first")), ""))


# ------------------------------------------------------------------------------------------------ charts
CAUSE_COLORS = {CAUSES["v12_abl_1_grid"]: "#d62728", CAUSES["v12_abl_2_vec"]: "#ff7f0e",
                CAUSES["v12_abl_3_softmax"]: "#9467bd", CAUSES["v12_abl_4_prefetch"]: "#2ca02c", RESIDUAL: "#7f7f7f"}


FIX_LABELS = {CAUSES["v12_abl_1_grid"]: "tile grid", CAUSES["v12_abl_2_vec"]: "uint4",
              CAUSES["v12_abl_3_softmax"]: "warp softmax", CAUSES["v12_abl_4_prefetch"]: "cp.async"}


def plot_ladder(rec: Record):
    """Both ladders, µs per step on a log axis, with cuDNN of the same run."""
    plt = plots.plt()
    cud = _t(rec, "sdpa_cudnn")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), sharey=True)
    for ax, order, title in zip(axes, ("a", "b"), ("schedule first", "inside the CTA first")):
        lad = ladder(rec, order)
        steps, causes = _steps(rec, order)
        colors = ["#444444"] + [CAUSE_COLORS.get(causes[k], "#999999") for k in steps[1:]]
        ax.bar(range(len(steps)), lad["µs"], color=colors)
        ax.axhline(cud, color=plots.COLORS["sdpa_cudnn"], ls="--", lw=1, label="sdpa_cudnn (same run)")
        ax.set_yscale("log")
        ax.set_xticks(range(len(steps)))
        ax.set_xticklabels(["v12"] + ["+ " + FIX_LABELS[causes[k]] for k in steps[1:]], fontsize=7)
        for i, us in enumerate(lad["µs"]):
            ax.text(i, us * 1.08, f"{us:.0f}" if us >= 10 else f"{us:.1f}", ha="center", fontsize=7)
        ax.set_title(f"ladder, {title}", fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("µs per launch (log)")
    fig.suptitle("Fixing v12 one cost at a time (mission shape)", fontsize=10)
    plots.save(fig, "01_v12_ladder", rec)
    return fig


def plot_estimate_vs_measured(rec: Record):
    """The seed's estimated split (L4, quoted) beside the measured ones (this run), as shares of each total."""
    plt = plots.plt()
    bars = [("measured, H100\nschedule first", breakdown(rec, "a")),
            ("measured, H100\nCTA first", breakdown(rec, "b")),
            ("estimated, L4\n(assessment, quoted)", SEED_ESTIMATE_L4_US)]
    est_colors = ["#fdd0a2", "#fdae6b", "#fd8d3c", "#e6550d", "#dddddd"]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for y, (label, parts) in enumerate(bars):
        total, left = sum(parts.values()), 0.0
        for i, (name, us) in enumerate(parts.items()):
            share = us / total
            color = est_colors[i % len(est_colors)] if parts is SEED_ESTIMATE_L4_US else CAUSE_COLORS.get(name, "#999")
            ax.barh(y, share, left=left, color=color, edgecolor="white")
            if share > 0.05:
                ax.text(left + share / 2, y, f"{name.split(' (')[0]}\n{us:.0f} µs", ha="center", va="center",
                        fontsize=6)
            left += share
    ax.set_yticks(range(len(bars)))
    ax.set_yticklabels([b[0] for b in bars], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the kernel's total time")
    from matplotlib.patches import Patch
    ax.legend(handles=[Patch(color=c, label=n) for n, c in CAUSE_COLORS.items()], fontsize=6, ncol=3,
              loc="upper center", bbox_to_anchor=(0.5, -0.18), title="measured causes", title_fontsize=7)
    ax.set_title("Where v12's time goes: the original estimate vs two measured ladders")
    plots.save(fig, "01_v12_estimate_vs_measured", rec)
    return fig


def plot_stalls(rec: Record):
    plt = plots.plt()
    df = stall_table(rec)
    fig, ax = plt.subplots(figsize=(8, 3.4))
    cols = [LADDER[0], LADDER[-1]]
    df[cols].plot.barh(ax=ax, color=["#d62728", "#ff9896"])
    ax.invert_yaxis()
    ax.set_xlabel("warps stalled per issued instruction (ncu)")
    ax.set_title("Warp states: v12 vs the end of the ladder (mission shape)")
    ax.legend(fontsize=7)
    plots.save(fig, "01_v12_stalls", rec)
    return fig
