"""Chapter 3 — the v8 ladder: from the original project's best kernel to one that races cuDNN, one idea per step.

The steps are not listed here: :func:`step_ids` reads the registry (``v8_seed`` then every id matching
``v8_<nn>_<idea>``, sorted), so a step added in any ``flashcore/specs/*.py`` joins the chapter by itself.
``measure`` does the live work in one process (checks at several shapes, graph-replay timings beside the SDPA
backends and the Triton peer, sanitizer, one Nsight Compute report per step, SASS counts, the scaling sweep);
everything after it (``*_table``, ``plot_*``) reads only a :class:`~flashcore.records.Record`.

A step may name the ncu metric its idea should move with a spec tag ``"moving=<tidy metric>"`` (a key of
:data:`flashcore.profile.METRICS` or ``stall_<reason>``); otherwise :data:`MOVING` or ``duration_us`` is used.
"""
from __future__ import annotations

import re
import time

from .. import bench, kernels, plots, profile
from ..records import Record

NOTEBOOK = "03_v8_optimization"
CHAPTER = "03_v8_optimization"
STEP_RE = re.compile(r"v8_\d\d_\w+")
DEFAULTS = dict(B=1, H=8, S=512, D=64, steps="all", tail_S=1000, check_S=[128, 2048],
                sweep_S=[128, 256, 512, 1024, 2048, 4096, 8192, 16384], sweep_BH=[1, 8], big=[4, 16, 4096, 64],
                samples=50, sanitize_shape="1,2,200,64", ncu="auto", triton=True, budget_s=0)
PEERS = ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "sdpa_default", "triton_attention")
# The ncu metric each of the WMMA steps is meant to move (later steps may tag their own: "moving=<metric>").
MOVING = {"v8_seed": "duration_us", "v8_01_vec_async": "stall_long_scoreboard",
          "v8_02_swizzle": "smem_bank_conflicts", "v8_03_exp2_fewer_barriers": "stall_barrier",
          "v8_04_grid_132sm": "grid_size"}
NCU_SECTIONS = ("SpeedOfLight", "MemoryWorkloadAnalysis", "Occupancy", "WarpStateStats", "LaunchStats",
                "ComputeWorkloadAnalysis", "SourceCounters")
NCU_MAX_BYTES = 3 * 2 ** 20
MAX_SWEEP_US = 20_000      # a sweep point slower than this (per launch) is measured with fewer samples


# ------------------------------------------------------------------------------------------------ the ladder
def step_ids(steps="all", registry=None) -> list:
    """``v8_seed`` then every registered ``v8_<nn>_<idea>`` id, sorted; ``steps`` may pick a subset."""
    reg = {s.id: s for s in (registry if registry is not None else kernels.all_specs())}
    ladder = sorted(i for i in reg if STEP_RE.fullmatch(i))
    ids = (["v8_seed"] if "v8_seed" in reg else []) + ladder
    if steps in (None, "", "all"):
        return ids
    wanted = [s.strip() for s in (steps.split(",") if isinstance(steps, str) else steps) if s.strip()]
    unknown = [s for s in wanted if s not in ids]
    if unknown:
        raise KeyError(f"unknown v8 step(s) {unknown}; the registry has {ids}")
    return [i for i in ids if i in wanted]


def moving_metric(spec) -> str:
    for t in spec.tags:
        if isinstance(t, str) and t.startswith("moving="):
            return t.split("=", 1)[1]
    return MOVING.get(spec.id, "duration_us")


def _elapsed_ok(t0, budget):
    return not budget or time.time() - t0 < budget


def measure(run, params: dict) -> None:
    import torch

    from .. import sanitize, sass
    from ..check import check_kernel, make_inputs
    from ..compile import load_kernel

    t_start = time.time()
    p = dict(DEFAULTS, **params)
    B, H, S, D = (int(p[k]) for k in ("B", "H", "S", "D"))
    samples, budget = int(p["samples"]), float(p.get("budget_s") or 0)
    ids = step_ids(p["steps"])
    reg = {s.id: s for s in kernels.all_specs()}
    timed = ids + (["flashcore"] if "flashcore" in reg and "flashcore" not in ids else [])
    phases = {}
    launch, compile_errors = {}, {}
    for i in timed:
        try:
            launch[i] = load_kernel(reg[i])
        except Exception as exc:      # a step that does not compile is recorded, not fatal
            compile_errors[i] = str(exc)[:2000]
    run.extra["compile_errors"] = compile_errors
    run.extra["steps"] = ids
    run.extra["ladder"] = [dict(id=i, parent=reg[i].parent, predicted_us=reg[i].predicted_us, idea=reg[i].idea,
                                source=reg[i].source, moving=moving_metric(reg[i]), threads=reg[i].threads)
                           for i in ids]
    run.extra["mission"] = [B, H, S, D]
    phases["compile"] = time.time() - t_start

    # 1. Checks (harness rule, NaN-poisoned output): mission shape, a tail S, a tiny and a long S.
    t0 = time.time()
    check_shapes = [S, int(p["tail_S"])] + [int(x) for x in p["check_S"]]
    checks = {}
    for i in timed:
        if i not in launch:
            continue
        checks[i] = {}
        for n, s in enumerate(dict.fromkeys(check_shapes)):
            try:
                c = check_kernel(lambda a, b, c_, d, f=launch[i]: f(a, b, c_, d), B, H, s, D, seed=300 + n,
                                 kernel=i)
                checks[i][s] = c
            except Exception as exc:
                checks[i][s] = exc
                torch.cuda.synchronize()
    phases["check"] = time.time() - t0

    # 2. Timings at the mission shape, every step beside the peers, one process, one set of inputs.
    t0 = time.time()
    q, k, v = make_inputs(B, H, S, D, seed=404)
    o = torch.empty_like(q)
    for i in timed:
        spec = reg[i]
        c = checks.get(i, {}).get(S)
        ok = i in launch and not isinstance(c, Exception) and (c.passed or spec.expect_failure)
        t = bench.time_graph(lambda f=launch[i]: f(q, k, v, o), samples=samples) if ok else None
        others = {s: c2 for s, c2 in checks.get(i, {}).items() if s != S}
        run.add_result(i, B, H, S, D, check=c if not isinstance(c, Exception) else None, timing=t, role="mission",
                       tflops=bench.tflops(B, H, S, D, t.median_us) if t else None, parent=spec.parent,
                       predicted_us=spec.predicted_us, idea=spec.idea, source=spec.source,
                       error=(compile_errors.get(i) or (str(c)[:1000] if isinstance(c, Exception) else None)),
                       all_shapes_passed=bool(c is not None and not isinstance(c, Exception) and c.passed and all(
                           not isinstance(x, Exception) and x.passed for x in others.values())))
        for s, c2 in others.items():
            if isinstance(c2, Exception):
                run.add_result(i, B, H, s, D, role="check", error=str(c2)[:1000], passed=False)
            else:
                run.add_result(i, B, H, s, D, check=c2, role="check")
    sd = bench.sdpa_callables(q, k, v)
    for name in ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "sdpa_default"):
        t = bench.time_graph(sd[name], samples=samples)
        run.add_result(name, B, H, S, D, timing=t, role="mission", tflops=bench.tflops(B, H, S, D, t.median_us))
    tp = _triton() if p.get("triton", True) else None
    if tp is not None:
        try:
            tri = lambda a, b, c_, d: d.copy_(tp.triton_attention(a, b, c_))
            chk = check_kernel(tri, B, H, S, D, seed=41, kernel="triton_attention")
            t = bench.time_graph(lambda: tp.triton_attention(q, k, v), samples=samples)
            run.add_result("triton_attention", B, H, S, D, check=chk, timing=t, role="mission",
                           tflops=bench.tflops(B, H, S, D, t.median_us), config=tp.best_config(S, S))
        except Exception as exc:
            run.extra["triton_error"] = str(exc)[:2000]
            tp = None
    phases["time"] = time.time() - t0

    # 3. The scaling sweep: the best kernel (flashcore if registered, else the fastest passing step) vs peers.
    t0 = time.time()
    mission = {r["kernel"]: r for r in run.results if r.get("role") == "mission" and r["median_us"]}
    passing = [i for i in timed if i in mission and mission[i].get("passed")]
    best = "flashcore" if "flashcore" in passing else (min(passing, key=lambda i: mission[i]["median_us"])
                                                         if passing else None)
    run.extra["best"] = best
    sweep = []
    bsz, heads = (int(x) for x in p["sweep_BH"])
    Bb, Hb, Sb, Db = (int(x) for x in p["big"])
    points = [(bsz, heads, int(s)) for s in p["sweep_S"]] + [(Bb, Hb, Sb)]
    for (b_, h_, s_) in points:
        if not _elapsed_ok(t_start, budget * 0.6):
            run.extra.setdefault("skipped", []).append(f"sweep from B{b_}H{h_}S{s_} (time budget)")
            break
        qs, ks, vs = make_inputs(b_, h_, s_, D, seed=s_)
        os_ = torch.empty_like(qs)
        cands = {n: f for n, f in bench.sdpa_callables(qs, ks, vs).items() if n in ("sdpa_cudnn", "sdpa_flash")}
        if best:
            cands[best] = lambda f=launch[best]: f(qs, ks, vs, os_)
        if tp is not None:
            cands["triton_attention"] = lambda: tp.triton_attention(qs, ks, vs)
        for n, fn in cands.items():
            try:
                fn()
                torch.cuda.synchronize()
                lpg = 20 if s_ <= 2048 and b_ * h_ <= 8 else 4
                t = bench.time_graph(fn, launches_per_graph=lpg, samples=max(10, samples // 3))
                sweep.append(dict(kernel=n, B=b_, H=h_, S=s_, D=D, median_us=t.median_us, p10_us=t.p10_us,
                                  p90_us=t.p90_us, tflops=bench.tflops(b_, h_, s_, D, t.median_us),
                                  big=(b_, h_, s_) == (Bb, Hb, Sb)))
            except Exception as exc:
                sweep.append(dict(kernel=n, B=b_, H=h_, S=s_, D=D, error=str(exc)[:500]))
        del qs, ks, vs, os_
        torch.cuda.empty_cache()
    run.extra["sweep"] = sweep
    run.extra["big"] = [Bb, Hb, Sb, Db]
    phases["sweep"] = time.time() - t0

    # 4. SASS evidence (static instruction counts of the nvcc cubin), stored so replay needs no tool.
    t0 = time.time()
    ev = {}
    for i in timed:
        ev[i] = sass_counts(reg[i])
    run.extra["sass"] = ev
    phases["sass"] = time.time() - t0

    # 5. compute-sanitizer memcheck + racecheck over every step at a small tail shape (one process per tool).
    t0 = time.time()
    san, verdicts = [], []
    ok_ids = [i for i in timed if i in launch]
    for tool in ("memcheck", "racecheck"):
        if not ok_ids or not _elapsed_ok(t_start, budget * 0.75):
            run.extra.setdefault("skipped", []).append(f"sanitizer {tool} (time budget)")
            continue
        s = sanitize.run_sanitizer(tool, ok_ids, p["sanitize_shape"], timeout=120)
        verdicts += sanitize.verdicts([s])
        s.pop("per_launch", None)
        san.append(s)
    run.extra["sanitizer"] = san
    run.extra["sanitizer_verdicts"] = verdicts
    phases["sanitize"] = time.time() - t0

    # 6. One Nsight Compute report per step at the mission shape; tidy rows kept in the record as well.
    t0 = time.time()
    shape = f"{B},{H},{S},{D}"
    mode = p.get("ncu", "auto")
    ncu_rows, ncu_files, ncu_info = {}, {}, dict(mode=mode)
    for i in ok_ids:
        if not _elapsed_ok(t_start, budget):
            run.extra.setdefault("skipped", []).append(f"ncu {i} (time budget)")
            continue
        path = run.dir / f"{i}.ncu-rep"
        use_full = mode == "full" or (mode == "auto" and ncu_info.get("full_ok", True))
        try:
            t1 = time.time()
            if use_full:
                profile.ncu_profile(path, kernels=[i], shapes=shape, ncu_set="full", timeout=90)
                if path.stat().st_size > NCU_MAX_BYTES and mode == "auto":   # too big: sections from now on
                    ncu_info["full_ok"] = False
                    ncu_info["full_bytes_first"] = path.stat().st_size
                    profile.ncu_profile(path, kernels=[i], shapes=shape, sections=NCU_SECTIONS, timeout=90)
            else:
                profile.ncu_profile(path, kernels=[i], shapes=shape, sections=NCU_SECTIONS, timeout=90)
            ncu_info.setdefault("seconds", {})[i] = round(time.time() - t1, 1)
            rows = profile.rows_for(profile.read_report(path), i) or profile.read_report(path)
            ncu_rows[i] = rows[-1]
            ncu_files[i] = run.rel(path)
            for r in run.results:
                if r["kernel"] == i and r.get("role") == "mission":
                    r["ncu_report"] = ncu_files[i]
        except Exception as exc:
            ncu_info.setdefault("errors", {})[i] = str(exc)[-1500:]
    ncu_info["set"] = "full" if ncu_info.get("full_ok", True) and mode != "sections" else "sections"
    run.extra["ncu"] = ncu_rows
    run.extra["ncu_reports"] = ncu_files
    run.extra["ncu_info"] = ncu_info
    phases["ncu"] = time.time() - t0
    run.extra["phases_s"] = {k_: round(v_, 1) for k_, v_ in phases.items()}


def sass_counts(spec) -> dict:
    """SASS instruction counts: nvcc's cubin where nvcc exists, else NVRTC's cubin for this GPU (GPU hosts)."""
    from .. import sass

    try:
        return dict(sass.evidence(spec), cubin_from="nvcc sm_90")
    except Exception as exc:
        first = str(exc)[:200]
    try:
        import tempfile

        from cupy.cuda import compiler

        from ..compile import device_arch, nvrtc_options

        arch = device_arch()
        opts = tuple(o for o in nvrtc_options(arch, spec.defines) if not o.startswith("-arch"))
        blob = compiler.compile_using_nvrtc(spec.path.read_text(), opts, arch)
        if not isinstance(blob, (bytes, bytearray)) or not blob.startswith(b"\x7fELF"):
            raise RuntimeError("NVRTC returned PTX, not a cubin")
        with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
            fh.write(blob)
            fh.flush()
            return dict(sass.instruction_counts(sass.sass_of(fh.name)), cubin_from=f"NVRTC {arch}")
    except Exception as exc:
        return dict(error=f"nvcc: {first}; NVRTC: {str(exc)[:200]}")


def _triton():
    try:
        from .. import triton_peer
        if hasattr(triton_peer, "available") and not triton_peer.available():
            return None
        return triton_peer
    except Exception:
        return None


# ------------------------------------------------------------------------------------------------ from a record
def _mission(rec: Record, kernel: str):
    rows = [r for r in rec.rows(kernel=kernel, S=rec.ext("mission")[2]) if r.get("role", "mission") == "mission"
            and r["B"] == rec.ext("mission")[0] and r["H"] == rec.ext("mission")[1]]
    return rows[0] if rows else None


def _us(rec, kernel):
    r = _mission(rec, kernel)
    return r["median_us"] if r and r.get("median_us") is not None else None


def sanitizer_verdicts(rec: Record) -> dict:
    """{(tool, kernel): clean} from the stored per-kernel verdicts (problems attributed to that kernel's launches)."""
    return {(v["tool"], v["kernel"]): bool(v["clean"]) for v in rec.get("extra", {}).get("sanitizer_verdicts", [])}


def ladder_table(rec: Record):
    """One row per step: parent, idea, predicted vs measured µs, × cuDNN, × Triton, checks, sanitizer."""
    import pandas as pd

    cud, tri = _us(rec, "sdpa_cudnn"), _us(rec, "triton_attention")
    san = sanitizer_verdicts(rec)
    rows = []
    for st in rec.ext("ladder"):
        r = _mission(rec, st["id"]) or {}
        us = r.get("median_us")
        checked = rec.rows(kernel=st["id"])
        rows.append({"step": st["id"], "parent": st["parent"] or "—", "predicted µs": st["predicted_us"],
                     "measured µs": us, "measured / predicted": us / st["predicted_us"]
                     if us and st["predicted_us"] else None,
                     "× cuDNN": us / cud if us and cud else None, "× Triton": us / tri if us and tri else None,
                     "speed-up vs parent": (_us(rec, st["parent"]) / us) if us and st["parent"] and
                     _us(rec, st["parent"]) else None,
                     "shapes passed": f"{sum(bool(c.get('passed')) for c in checked)}/{len(checked)}",
                     "memcheck": san.get(("memcheck", st["id"])), "racecheck": san.get(("racecheck", st["id"])),
                     "idea": st["idea"]})
    return pd.DataFrame(rows).set_index("step")


def check_table(rec: Record):
    """Every check row: step × S → max |err| / tolerance and pass."""
    import pandas as pd

    rows = []
    for st in rec.ext("ladder"):
        for r in rec.rows(kernel=st["id"]):
            rows.append({"step": st["id"], "S": r["S"], "passed": r.get("passed"), "max |err|": r.get("max_abs_err"),
                         "tolerance": r.get("tol"), "deterministic": r.get("deterministic")})
    return pd.DataFrame(rows).set_index(["step", "S"]).sort_index() if rows else pd.DataFrame(rows)


def peers_table(rec: Record):
    import pandas as pd

    cud = _us(rec, "sdpa_cudnn")
    rows = []
    for n in PEERS + ("flashcore",):
        us = _us(rec, n)
        if us is not None:
            rows.append({"kernel": n, "median µs": us, "× cuDNN": us / cud if cud else None,
                         "TFLOP/s": _mission(rec, n).get("tflops")})
    return pd.DataFrame(rows).set_index("kernel")


def metric_table(rec: Record):
    """Each step's moving metric (from its ncu report) before (parent) and after (the step)."""
    import pandas as pd

    ncu = rec.ext("ncu")
    rows = []
    for st in rec.ext("ladder"):
        m = st["moving"]
        after = ncu.get(st["id"], {}).get(m)
        before = ncu.get(st["parent"], {}).get(m) if st["parent"] else None
        rows.append({"step": st["id"], "metric": m, "parent": before, "step value": after,
                     "change": (after / before) if before and after is not None else None,
                     "ncu duration µs (parent → step)": (ncu.get(st["parent"], {}).get("duration_us"),
                                                          ncu.get(st["id"], {}).get("duration_us"))})
    return pd.DataFrame(rows).set_index("step")


def ncu_table(rec: Record, keys=("duration_us", "sm_throughput_pct", "tensor_pipe_pct", "achieved_occupancy_pct",
                                 "smem_bank_conflicts", "registers_per_thread", "grid_size",
                                 "dynamic_smem_per_block", "local_memory_bytes")):
    import pandas as pd

    ncu = rec.ext("ncu")
    return pd.DataFrame([{"step": i, **{k: ncu[i].get(k) for k in keys}} for i in rec.ext("steps") if i in ncu]
                        ).set_index("step")


def sass_table(rec: Record):
    """Static SASS instruction counts per step (recorded at run time; computed here on CPU if they are missing)."""
    import pandas as pd

    ev = dict(rec.ext("sass"))
    for i in rec.ext("steps"):
        if i not in ev or "error" in ev[i]:
            try:
                from .. import sass
                ev[i] = sass.evidence(kernels.get(i))
            except Exception as exc:
                ev[i] = dict(error=str(exc)[:120])
    cols = ("HMMA", "LDSM", "LDGSTS", "LDG.128", "BAR", "MUFU.EX2", "LDS", "STS", "LDL", "STL", "cubin_from", "error")
    return pd.DataFrame([{"step": i, **{c: ev[i].get(c) for c in cols if c in ev[i]}} for i in rec.ext("steps")]
                        ).set_index("step")


def stall_table(rec: Record, top: int = 6):
    """Warp-stall breakdown per step (warps stalled per issued instruction), the biggest reasons overall."""
    import pandas as pd

    ncu = rec.ext("ncu")
    per = {i: profile.stall_breakdown(ncu[i]) for i in rec.ext("steps") if i in ncu}
    total: dict = {}
    for d in per.values():
        for kk, vv in d.items():
            total[kk] = total.get(kk, 0) + vv
    keep = [kk for kk, _ in sorted(total.items(), key=lambda kv: -kv[1])[:top]]
    rows = []
    for i, d in per.items():
        row = {"step": i, **{kk: d.get(kk, 0.0) for kk in keep}}
        row["other"] = sum(vv for kk, vv in d.items() if kk not in keep)
        rows.append(row)
    return pd.DataFrame(rows).set_index("step") if rows else pd.DataFrame()


def headline(rec: Record) -> dict:
    B, H, S, D = rec.ext("mission")
    steps = [i for i in rec.ext("steps") if _us(rec, i) is not None]
    best = rec.ext("best")
    h = dict(shape=f"B{B} H{H} S{S} D{D}", cudnn=_us(rec, "sdpa_cudnn"), flash=_us(rec, "sdpa_flash"),
             triton=_us(rec, "triton_attention"), seed=_us(rec, "v8_seed"), best=best,
             best_us=_us(rec, best) if best else None, n_steps=len(rec.ext("steps")), n_timed=len(steps),
             last=steps[-1] if steps else None, last_us=_us(rec, steps[-1]) if steps else None)
    fastest = min(steps, key=lambda i: _us(rec, i)) if steps else None
    h.update(fastest=fastest, fastest_us=_us(rec, fastest) if fastest else None)
    h["fastest_x_cudnn"] = h["fastest_us"] / h["cudnn"] if h["fastest_us"] and h["cudnn"] else None
    h["best_x_cudnn"] = h["best_us"] / h["cudnn"] if h["best_us"] and h["cudnn"] else None
    h["seed_x_cudnn"] = h["seed"] / h["cudnn"] if h["seed"] and h["cudnn"] else None
    big = [r for r in rec.ext("sweep") if r.get("big") and r.get("tflops")]
    h["big"] = {r["kernel"]: r["tflops"] for r in big}
    return h


def plot_waterfall(rec: Record, name: str = "03_v8_waterfall"):
    """The ladder: measured µs per step (bars, log), predicted (◆), peers as lines, ×speed-up over each parent."""
    plt = plots.plt()
    B, H, S, D = rec.ext("mission")
    lad = rec.ext("ladder")
    ids = [st["id"] for st in lad]
    meas = [_us(rec, i) for i in ids]
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(ids) + 2), 4))
    x = range(len(ids))
    ax.bar(x, [m or 0 for m in meas], color=["#555555" if m else "#dddddd" for m in meas], label="measured")
    ax.plot(x, [st["predicted_us"] for st in lad], "D", color=plots.COLORS["flashcore"], ms=6, label="predicted")
    for n in ("sdpa_cudnn", "sdpa_flash", "triton_attention"):
        us = _us(rec, n)
        if us:
            ax.axhline(us, ls="--", lw=1.1, color=plots.COLORS[n], label=f"{n} {us:.1f} µs")
    for xi, st, m in zip(x, lad, meas):     # the label: µs and the speed-up over the step's parent
        if m:
            pm = _us(rec, st["parent"]) if st["parent"] else None
            ax.text(xi, m * 1.07, f"{m:.1f}" + (f"\n×{pm / m:.2f}" if pm else ""), ha="center", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(list(x))
    ax.set_xticklabels(ids, rotation=25, ha="right", fontsize=7)
    ax.set_ylabel("µs per launch (graph replay, log)")
    ax.set_title(f"The v8 ladder, predicted vs measured — B{B} H{H} S{S} D{D}, {rec['provenance'].get('gpu')}")
    ax.legend(fontsize=7, loc="upper right")
    plots.save(fig, name, rec)
    return fig


def plot_moving_metrics(rec: Record, name: str = "03_v8_moving_metrics"):
    """One panel per step: its moving ncu metric in the parent's report and in its own."""
    plt = plots.plt()
    df = metric_table(rec)
    df = df[df["parent"].notna() & df["step value"].notna()]
    n = max(1, len(df))
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (step, r) in zip(axes.flat, df.iterrows()):
        ax.bar(["parent", "step"], [r["parent"], r["step value"]], color=["#999999", plots.COLORS["flashcore"]])
        ax.set_title(f"{step}\n{r['metric']}", fontsize=7)
        ax.tick_params(labelsize=7)
    fig.suptitle("Did each idea move its metric? (Nsight Compute, parent vs step)", fontsize=9)
    fig.tight_layout()
    plots.save(fig, name, rec)
    return fig


def plot_stalls(rec: Record, name: str = "03_v8_stalls"):
    plt = plots.plt()
    df = stall_table(rec)
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(3, len(df)) + 1.2))
    if len(df):
        df.iloc[::-1].plot.barh(stacked=True, ax=ax, width=0.75, colormap="tab10")
    ax.set_xlabel("warps stalled per issued instruction (ncu WarpStateStats)")
    ax.set_title("Where the warps wait, step by step")
    ax.legend(fontsize=7, loc="lower right")
    plots.save(fig, name, rec)
    return fig


def plot_scaling(rec: Record, name: str = "03_v8_scaling"):
    plt = plots.plt()
    sweep = [r for r in rec.ext("sweep") if not r.get("big") and r.get("median_us")]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    best = rec.ext("best")
    for n in dict.fromkeys(r["kernel"] for r in sweep):
        rows = [r for r in sweep if r["kernel"] == n]
        color = plots.COLORS["flashcore"] if n == best else plots.COLORS.get(n)
        a1.plot([r["S"] for r in rows], [r["tflops"] for r in rows], "o-", label=n, color=color)
        a2.plot([r["S"] for r in rows], [r["median_us"] for r in rows], "o-", label=n, color=color)
    for a in (a1, a2):
        a.set_xscale("log", base=2)
        a.set_xlabel("sequence length S")
        a.legend(fontsize=7)
    a2.set_yscale("log")
    a1.set_ylabel("TFLOP/s")
    a2.set_ylabel("µs per launch")
    if sweep:
        fig.suptitle(f"Scaling at B{sweep[0]['B']} H{sweep[0]['H']} D{sweep[0]['D']}", fontsize=9)
    plots.save(fig, name, rec)
    return fig


def big_table(rec: Record):
    import pandas as pd

    big = [r for r in rec.ext("sweep") if r.get("big") and r.get("median_us")]
    cud = next((r["tflops"] for r in big if r["kernel"] == "sdpa_cudnn"), None)
    return pd.DataFrame([{"kernel": r["kernel"], "µs": r["median_us"], "TFLOP/s": r["tflops"],
                          "× cuDNN TFLOP/s": r["tflops"] / cud if cud else None} for r in big]).set_index("kernel") \
        if big else pd.DataFrame()
