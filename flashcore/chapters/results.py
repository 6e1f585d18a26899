"""Chapter 4 — results: every FlashCore kernel and every peer at the mission shape in ONE live run.

The journey (v12 → v11 fixed → v8 seed → each ladder step → flashcore) against cuDNN, the Triton peer with its
lines of code, the scaling sweep, and the headline fragment the landing page includes.
"""
from __future__ import annotations

import re

from .. import bench, kernels, plots, profile
from ..paths import BOOK_DIR, KERNELS_DIR, ROOT
from ..records import Record

NOTEBOOK = "04_results"
DEFAULTS = dict(B=1, H=8, S=512, D=64, tail_S=1000, sweep_S=[128, 256, 512, 1024, 2048, 4096, 8192, 16384],
                sweep_BH=(1, 8), big=(4, 16, 4096, 64), samples=50)
PEERS = ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "sdpa_default", "triton_attention")


def journey_ids() -> list:
    """The kernels of the story, in order, that exist in the registry."""
    reg = {s.id: s for s in kernels.all_specs()}
    ladder = sorted(i for i in reg if re.fullmatch(r"v8_\d\d_\w+", i))
    wanted = ["v12_baseline", "v11_fixed", "v8_seed", *ladder, "flashcore"]
    return [i for i in wanted if i in reg]


def code_lines(path) -> int:
    """Lines of code: non-blank lines that are not only a comment (// or # or inside /* */ or docstrings)."""
    text = open(path).read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    if str(path).endswith(".py"):
        text = re.sub(r'""".*?"""', "", text, flags=re.S)
    return sum(1 for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(("//", "#")))


def _triton():
    try:
        from .. import triton_peer
        return triton_peer
    except Exception:
        return None


def measure(run, params: dict) -> None:
    import torch

    from ..check import check_kernel, make_inputs
    from ..compile import load_kernel

    B, H, S, D = (int(params[k]) for k in ("B", "H", "S", "D"))
    samples = int(params.get("samples", 50))
    ids = journey_ids()
    launch = {i: load_kernel(kernels.get(i)) for i in ids}
    tp = _triton()
    loc = {i: code_lines(kernels.get(i).path) for i in ids}

    # Everything at the mission shape, one process, one set of inputs.
    q, k, v = make_inputs(B, H, S, D, seed=404)
    o = torch.empty_like(q)
    tail = int(params.get("tail_S", 1000))
    for i in ids:
        chk = check_kernel(lambda a, b, c, d, f=launch[i]: f(a, b, c, d), B, H, S, D, seed=41, kernel=i)
        chk_tail = check_kernel(lambda a, b, c, d, f=launch[i]: f(a, b, c, d), B, H, tail, D, seed=42, kernel=i)
        t = bench.time_graph(lambda f=launch[i]: f(q, k, v, o), samples=samples,
                             launches_per_graph=2 if i == "v12_baseline" else 20)
        run.add_result(i, B, H, S, D, check=chk, timing=t, tflops=bench.tflops(B, H, S, D, t.median_us),
                       lines_of_code=loc[i], tail_S=tail, tail_passed=chk_tail.passed,
                       tail_max_abs_err=chk_tail.max_abs_err, source=kernels.get(i).source)
    for name, fn in bench.sdpa_callables(q, k, v).items():
        t = bench.time_graph(fn, samples=samples)
        run.add_result(name, B, H, S, D, timing=t, tflops=bench.tflops(B, H, S, D, t.median_us))
    if tp is not None:
        tri = lambda a, b, c, d: d.copy_(tp.triton_attention(a, b, c))
        chk = check_kernel(tri, B, H, S, D, seed=41, kernel="triton_attention")
        t = bench.time_graph(lambda: tp.triton_attention(q, k, v), samples=samples)
        run.add_result("triton_attention", B, H, S, D, check=chk, timing=t,
                       tflops=bench.tflops(B, H, S, D, t.median_us), lines_of_code=tp.kernel_lines(),
                       config=tp.best_config(S, S), source="triton_attention.py")

    # The scaling sweep: flashcore against the peers over S (B·H fixed), TFLOP/s and µs.
    best = "flashcore" if "flashcore" in launch else (ids[-1] if ids else None)
    sweep = []
    bsz, heads = params.get("sweep_BH", DEFAULTS["sweep_BH"])
    for s in params.get("sweep_S", DEFAULTS["sweep_S"]):
        qs, ks, vs = make_inputs(bsz, heads, s, D, seed=s)
        os_ = torch.empty_like(qs)
        lpg = 20 if s <= 2048 else 4
        cands = dict(bench.sdpa_callables(qs, ks, vs))
        cands = {n: cands[n] for n in ("sdpa_cudnn", "sdpa_flash")}
        if best:
            cands["flashcore"] = lambda f=launch[best]: f(qs, ks, vs, os_)
        if tp is not None:
            cands["triton_attention"] = lambda: tp.triton_attention(qs, ks, vs)
        for n, fn in cands.items():
            t = bench.time_graph(fn, launches_per_graph=lpg, samples=max(10, samples // 3))
            sweep.append(dict(kernel=n, B=bsz, H=heads, S=s, D=D, median_us=t.median_us, p10_us=t.p10_us,
                              p90_us=t.p90_us, tflops=bench.tflops(bsz, heads, s, D, t.median_us)))
        del qs, ks, vs, os_
    torch.cuda.empty_cache()
    Bb, Hb, Sb, Db = params.get("big", DEFAULTS["big"])
    qb, kb, vb = make_inputs(Bb, Hb, Sb, Db, seed=99)
    ob = torch.empty_like(qb)
    bigc = {n: f for n, f in bench.sdpa_callables(qb, kb, vb).items() if n in ("sdpa_cudnn", "sdpa_flash")}
    if best:
        bigc["flashcore"] = lambda: launch[best](qb, kb, vb, ob)
        chk = check_kernel(lambda a, b, c, d: launch[best](a, b, c, d), Bb, Hb, Sb, Db, seed=98, runs=1,
                           kernel=best)
        run.extra["big_check"] = chk.row()
    if tp is not None:
        bigc["triton_attention"] = lambda: tp.triton_attention(qb, kb, vb)
    for n, fn in bigc.items():
        t = bench.time_graph(fn, launches_per_graph=4, samples=max(10, samples // 3))
        run.add_result(n, Bb, Hb, Sb, Db, timing=t, tflops=bench.tflops(Bb, Hb, Sb, Db, t.median_us))
    run.extra["sweep"] = sweep
    run.extra["journey"] = ids
    run.extra["best"] = best
    run.extra["mission"] = [B, H, S, D]
    run.extra["big"] = [Bb, Hb, Sb, Db]

    # One Nsight Compute report: the best kernel beside cuDNN (why it is faster, or why it is not).
    if best:
        rep = profile.ncu_profile(run.dir / "flashcore_vs_cudnn.ncu-rep", kernels=[best], sdpa=["cudnn"],
                                  shapes=f"{B},{H},{S},{D}")
        for row in run.results:
            if row["kernel"] in (best, "sdpa_cudnn") and row["S"] == S:
                row["ncu_report"] = run.rel(rep)
        run.extra["ncu_report"] = run.rel(rep)


# ------------------------------------------------------------------------------------------------ from a record
def mission_rows(rec: Record) -> list:
    B, H, S, D = rec.ext("mission")
    return [r for r in rec["results"] if r["S"] == S and r["B"] == B and r["H"] == H]


def summary_table(rec: Record):
    import pandas as pd

    cud = rec.row(kernel="sdpa_cudnn", S=rec.ext("mission")[2])["median_us"]
    rows = []
    for r in mission_rows(rec):
        rows.append({"kernel": r["kernel"], "median µs": r["median_us"], "p10–p90 µs":
                     f"{r['p10_us']:.2f}–{r['p90_us']:.2f}", "× cuDNN": r["median_us"] / cud,
                     "TFLOP/s": r.get("tflops"), "passed": r.get("passed"),
                     "deterministic": r.get("deterministic"), "lines of code": r.get("lines_of_code")})
    return pd.DataFrame(rows).set_index("kernel")


def headline(rec: Record) -> dict:
    B, H, S, D = rec.ext("mission")
    best = rec.ext("best")
    h = dict(cudnn=rec.row(kernel="sdpa_cudnn", S=S)["median_us"], best=best,
             best_us=rec.row(kernel=best, S=S)["median_us"], v12_us=rec.row(kernel="v12_baseline", S=S)["median_us"]
             if rec.rows(kernel="v12_baseline", S=S) else None)
    tri = rec.rows(kernel="triton_attention", S=S)
    h["triton_us"] = tri[0]["median_us"] if tri else None
    h["ratio_cudnn"] = h["best_us"] / h["cudnn"]
    return h


def plot_journey(rec: Record, name: str = "04_results_journey"):
    """v12 → … → flashcore against cuDNN: one bar per kernel, log scale."""
    plt = plots.plt()
    B, H, S, D = rec.ext("mission")
    ids = [i for i in rec.ext("journey") if rec.rows(kernel=i, S=S)]
    us = [rec.row(kernel=i, S=S)["median_us"] for i in ids]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    colors = [plots.COLORS["flashcore"] if i == "flashcore" else "#555555" for i in ids]
    ax.bar(range(len(ids)), us, color=colors)
    ax.set_yscale("log")
    for n, peer in enumerate(("sdpa_cudnn", "sdpa_flash", "triton_attention")):
        rows = rec.rows(kernel=peer, S=S)
        if rows:
            ax.axhline(rows[0]["median_us"], color=plots.COLORS[peer], ls="--", lw=1.2,
                       label=f"{peer} {rows[0]['median_us']:.1f} µs")
    for x, u in enumerate(us):
        ax.text(x, u * 1.08, f"{u:.1f}", ha="center", fontsize=7)
    ax.set_xticks(range(len(ids)))
    ax.set_xticklabels(ids, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("µs (median of CUDA-graph replays, log)")
    ax.set_title(f"From the correct baseline to FlashCore — B{B} H{H} S{S} D{D}, {rec['provenance']['gpu']}")
    ax.legend(fontsize=7, loc="upper right")
    plots.save(fig, name, rec)
    return fig


def plot_scaling(rec: Record):
    plt = plots.plt()
    sweep = rec.ext("sweep")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for n in dict.fromkeys(r["kernel"] for r in sweep):
        rows = [r for r in sweep if r["kernel"] == n]
        a1.plot([r["S"] for r in rows], [r["tflops"] for r in rows], "o-", label=n, color=plots.COLORS.get(n))
        a2.plot([r["S"] for r in rows], [r["median_us"] for r in rows], "o-", label=n, color=plots.COLORS.get(n))
    for a in (a1, a2):
        a.set_xscale("log", base=2)
        a.set_xlabel("sequence length S")
    a2.set_yscale("log")
    a1.set_ylabel("TFLOP/s")
    a2.set_ylabel("µs")
    r0 = sweep[0]
    a1.set_title(f"B{r0['B']} H{r0['H']} D{r0['D']}: throughput")
    a2.set_title("time")
    a1.legend(fontsize=7)
    plots.save(fig, "04_results_scaling", rec)
    return fig


def plot_loc(rec: Record):
    """Lines of code against µs: what each implementation cost to write, and what it bought."""
    plt = plots.plt()
    rows = [r for r in mission_rows(rec) if r.get("lines_of_code")]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in rows:
        ax.scatter(r["lines_of_code"], r["median_us"], color=plots.COLORS.get(r["kernel"], "#555555"))
        ax.annotate(r["kernel"], (r["lines_of_code"], r["median_us"]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    cud = rec.row(kernel="sdpa_cudnn", S=rec.ext("mission")[2])["median_us"]
    ax.axhline(cud, color=plots.COLORS["sdpa_cudnn"], ls="--", lw=1, label="sdpa_cudnn")
    ax.set_yscale("log")
    ax.set_xlabel("lines of code (kernel source, no comments/blank lines)")
    ax.set_ylabel("µs at the mission shape")
    ax.legend(fontsize=7)
    plots.save(fig, "04_results_loc", rec)
    return fig


def write_headline(rec: Record) -> None:
    """figures/headline.png and book/generated/headline.md: the landing page's chart and three numbers."""
    plot_journey(rec, name="headline")
    h = headline(rec)
    rel = f"runs/{rec.dir.parent.name}/{rec['run_id']}/run.json"
    link = f"{{download}}`{rec['run_id']} </{rel}>`"   # a leading / is the book root
    lines = [f"- **{h['best_us']:.2f} µs** — `{h['best']}` at B1 H8 S512 D64 on {rec['provenance']['gpu']}, "
             f"**{h['ratio_cudnn']:.2f}× cuDNN's time** ({h['cudnn']:.2f} µs) in the same run (record: {link})."]
    if h["triton_us"]:
        r = h["triton_us"] / h["best_us"]
        S = rec.ext("mission")[2]
        mine, tri = rec.row(kernel=h["best"], S=S), rec.row(kernel="triton_attention", S=S)
        spread = (f"p10–p90 {mine['p10_us']:.2f}–{mine['p90_us']:.2f} vs {tri['p10_us']:.2f}–{tri['p90_us']:.2f} µs"
                  + ("; the ranges overlap, so call it a tie" if mine["p90_us"] >= tri["p10_us"] and
                     tri["p90_us"] >= mine["p10_us"] else ""))
        lines.append(f"- **{r:.2f}×** faster than our tuned Triton kernel ({h['triton_us']:.2f} µs; {spread}), "
                     f"same run." if r >= 1 else f"- Our tuned Triton kernel is still faster: "
                     f"**{h['triton_us']:.2f} µs**, {1 / r:.2f}× less time than `{h['best']}` ({spread}), same run.")
    if h["v12_us"]:
        lines.append(f"- **{h['v12_us'] / h['best_us']:.0f}×** faster than the correct baseline v12 "
                     f"({h['v12_us']:.0f} µs), same run.")
    out = BOOK_DIR / "generated"
    out.mkdir(parents=True, exist_ok=True)
    (out / "headline.md").write_text("\n".join(lines) + "\n")
