"""Chapter 2 — v11, the pipeline that deadlocked: reproduce the hang safely, find the cause, prove the fix.

Live work (``measure``): launch ``v11_pipeline`` (always built with its watchdog) at a small cycle budget and decode
what the stuck warps wrote; run the model checker on v11 as designed and on the fix; check ``v11_fixed`` at the
mission shape and S ∈ {128, 512, 1000, 2048}; compute-sanitizer synccheck + racecheck on it; time it beside
``v12_baseline`` (when registered) and the SDPA backends in the same process; one Nsight Compute report. Tables and
the swimlane chart below read only a record.
"""
from __future__ import annotations

import time

from .. import bench, modelcheck, plots, watchdog
from ..records import Record

NOTEBOOK = "02_v11_deadlock"
DEFAULTS = dict(B=1, H=8, S=512, D=64, watchdog_cycles=watchdog.DEFAULT_CYCLES, samples=30,
                check_S=(128, 512, 1000, 2048), model_tiles=3, ncu=True, sanitize=True)


# ------------------------------------------------------------------------------------------------ live work
def _launcher(kernel_id: str):
    from .. import kernels
    from ..compile import load_kernel

    return load_kernel(kernels.get(kernel_id))


def _timed_launch(launch, q, k, v):
    import torch

    o = torch.empty_like(q)
    return lambda: launch(q, k, v, o)


def watchdog_runs(params: dict) -> dict:
    """The guarded launches: v11 as designed (expected to be stopped by the watchdog) and the fix (must finish)."""
    B, H, S, D = (int(params[k]) for k in ("B", "H", "S", "D"))
    cycles = int(params.get("watchdog_cycles", watchdog.DEFAULT_CYCLES))
    out = {}
    for kid in ("v11_pipeline", "v11_fixed_watchdog", "v11_fixed_roles_watchdog", "v11_fixed_mbarrier_watchdog"):
        t0 = time.perf_counter()
        res = watchdog.launch_guarded(kid, B, H, S, D, cycles=cycles, seed=3)
        res["seconds_with_compile"] = time.perf_counter() - t0
        out[kid] = res
    return out


def measure(run, params: dict) -> None:
    import torch

    from .. import kernels, profile, sanitize
    from ..check import check_kernel, make_inputs

    B, H, S, D = (int(params[k]) for k in ("B", "H", "S", "D"))
    samples = int(params.get("samples", 30))

    # 1. The hang, reproduced safely: the watchdog stops v11 and says where every warp was.
    wd = watchdog_runs(params)
    run.extra["watchdog"] = wd
    v11 = wd["v11_pipeline"]
    outcome = "deadlock-detected" if v11["rows"] else "finished"
    run.add_result("v11_pipeline", B, H, S, D, passed=False if v11["rows"] else None, outcome=outcome,
                   diagnosis=v11["diagnosis"]["sentence"], watchdog_cycles=v11["cycles"],
                   watchdog_seconds=v11["seconds"], stuck_warps=len(v11["rows"]))
    for kid in ("v11_fixed_watchdog", "v11_fixed_roles_watchdog", "v11_fixed_mbarrier_watchdog"):
        fx = wd[kid]
        run.add_result(kid, B, H, S, D, outcome="deadlock-detected" if fx["rows"] else "finished",
                       watchdog_cycles=fx["cycles"], watchdog_seconds=fx["seconds"], stuck_warps=len(fx["rows"]),
                       unwritten=fx["output_unwritten"])

    # 2. The model checker: v11 as designed, the fix, the known cases (no GPU involved, recorded for the page).
    t0 = time.perf_counter()
    run.extra["modelcheck"] = modelcheck.run_all(int(params.get("model_tiles", 3)))
    run.extra["modelcheck_seconds"] = time.perf_counter() - t0

    # 3. The fixes are right: the checker at the mission shape and the sequence lengths the issue asks for.
    shapes = [(B, H, S)] + [(1, 8, int(s)) for s in params.get("check_S", DEFAULTS["check_S"]) if int(s) != S or
                                                                                            (B, H) != (1, 8)]
    for kid in FIX_VARIANTS:
        launch = _launcher(kid)
        for (b, h, s) in shapes:
            chk = check_kernel(lambda q, k, v, o: launch(q, k, v, o), b, h, s, D, seed=11 + s, kernel=kid)
            run.add_result(kid, b, h, s, D, check=chk, role="check")
    # ... and so are the synccheck controls, against their own reference (column sums of V)
    run.extra["controls"] = [check_control(kid, 1, 8, s, seed=s) for kid in control_ids() for s in (S, 1000)]

    # 4. Time the fixes beside v12 (if its chapter registered it) and the SDPA backends, same process, same inputs.
    q, k, v = make_inputs(B, H, S, D, seed=5)
    timed = {kid: _timed_launch(_launcher(kid), q, k, v) for kid in FIX_VARIANTS}
    try:
        timed["v12_baseline"] = _timed_launch(_launcher("v12_baseline"), q, k, v)
    except Exception as exc:   # the v12 chapter may not have registered its kernel yet
        run.extra["v12_skipped"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    timed.update(bench.sdpa_callables(q, k, v))
    for name, fn in timed.items():
        t = bench.time_graph(fn, launches_per_graph=10 if name.startswith("v1") else 20, samples=samples)
        run.add_result(name, B, H, S, D, timing=t, tflops=bench.tflops(B, H, S, D, t.median_us), role="timing")
    del q, k, v
    torch.cuda.empty_cache()

    # 5. compute-sanitizer: racecheck on the fixes (one process); synccheck on every control and fix, one process
    #    each (a synccheck error aborts the launch it is in); then one Nsight Compute report.
    shape = f"{B},{H},{S},{D}"
    if params.get("sanitize", True):
        race = sanitize.run_sanitizer("racecheck", list(FIX_VARIANTS), shape, timeout=200)
        matrix = sync_matrix(shape)
        run.extra["sync_matrix"] = matrix
        sums = [race] + [m for m in matrix["summaries"] if m["kernels"][0] in FIX_VARIANTS]
        run.extra["sanitizer"] = dict(summaries=[{k: v for k, v in s_.items() if k != "per_launch"} for s_ in sums],
                                      verdicts=sanitize.verdicts(sums))
    if params.get("ncu", True):
        rep = profile.ncu_profile(run.dir / "v11_fixed.ncu-rep", kernels=["v11_fixed"], shapes=shape,
                                  ncu_set="full", timeout=200)
        run.extra["ncu_report"] = run.rel(rep)
        for row in run.results:
            if row["kernel"] == "v11_fixed" and row.get("role") == "timing":
                row["ncu_report"] = run.rel(rep)
    run.extra["shape"] = [B, H, S, D]


SANITIZE_VARIANTS = {"v11_fixed": (), "v11_fixed+drain": (("V11_DRAIN", "1"),)}   # label → extra -D for v11_fixed
FIX_VARIANTS = ("v11_fixed", "v11_fixed_roles", "v11_fixed_mbarrier")


def control_ids() -> list:
    """The synccheck controls of kernels/v11_sync_controls.cu, in the order of the matrix."""
    from ..specs.v11 import CONTROLS

    return list(CONTROLS)


def check_control(kernel_id: str, B: int = 1, H: int = 8, S: int = 512, seed: int = 0) -> dict:
    """A control computes O[b,h,i,:] = Σ_j V[b,h,j,:] for every row i: compare with fp64, output NaN-poisoned first."""
    import torch

    from ..check import make_inputs

    launch = _launcher(kernel_id)
    q, k, v = make_inputs(B, H, S, 64, seed=seed)
    o = torch.full_like(q, float("nan"))
    launch(q, k, v, o)
    torch.cuda.synchronize()
    ref = v.double().sum(dim=2, keepdim=True).expand(B, H, S, 64)
    err = float((o.double() - ref).abs().max() / ref.abs().max())
    finite = bool(torch.isfinite(o).all())
    return dict(kernel=kernel_id, B=B, H=H, S=S, max_rel_err=err, finite=finite, passed=finite and err < 2e-3)


def sync_matrix(shape: str = "1,8,512,64", timeout: int = 120,
                details: tuple = ("v11_ctl_guide", "v11_fixed"), workers: int = 4) -> dict:
    """synccheck on every control and every fix, ONE process per kernel: a synccheck error aborts the launch it is
    in, so a shared process would stop at the first flagged kernel. Each summary keeps, per launch, the distinct
    report headlines and device frames; ``details`` get the head of their log with backtraces."""
    from .. import sanitize, sweep

    ids = control_ids() + list(FIX_VARIANTS)
    summaries = sweep.sanitize_jobs(["synccheck"], ids, shape, timeout=timeout, workers=workers)   # one per kernel
    verdicts = sanitize.verdicts(summaries)
    flagged = {r["kernel"] for r in verdicts if not r["clean"]}
    return dict(shape=shape, kernels=ids, summaries=summaries, verdicts=verdicts,
                details={kid: synccheck_detail(kid, shape) for kid in details if kid in flagged})


def sanitize_target(variant: str = "v11_fixed", shape: str = "1,8,512,64") -> None:
    """What compute-sanitizer runs for :func:`synccheck_detail`: one launch of a registered kernel, or of a v11_fixed
    diagnostic build named in SANITIZE_VARIANTS (no registry entry needed for a -D variant)."""
    import cupy

    from .. import kernels
    from ..compile import load_kernel

    B, H, S, D = (int(x) for x in shape.split(","))
    if variant in SANITIZE_VARIANTS:
        launch = load_kernel(kernels.get("v11_fixed"), defines=SANITIZE_VARIANTS[variant])
    else:
        launch = load_kernel(kernels.get(variant))
    rng = cupy.random.default_rng(0)
    q, k, v = (rng.standard_normal((B, H, S, D), dtype=cupy.float32).astype(cupy.float16) for _ in range(3))
    o = cupy.full((B, H, S, D), cupy.nan, dtype=cupy.float16)
    cupy.cuda.Device().synchronize()
    print(f"FLASHCORE-LAUNCH kernel={variant} shape={shape}", flush=True)
    launch(q, k, v, o, stream=cupy.cuda.get_current_stream().ptr)
    cupy.cuda.Device().synchronize()
    print("FLASHCORE-DRIVER done", flush=True)


def synccheck_detail(variant: str = "v11_fixed", shape: str = "1,8,512,64", timeout: int = 120) -> dict:
    """compute-sanitizer synccheck with device backtraces; keeps the head of the log (where and what it reports)."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    from ..sanitize import find_sanitizer

    cmd = [find_sanitizer(), "--tool", "synccheck", "--print-limit", "6", "--show-backtrace", "device",
           sys.executable, "-c", f"from flashcore.chapters import v11; v11.sanitize_target({variant!r}, {shape!r})"]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        log, code, timed_out = proc.stdout + proc.stderr, proc.returncode, False
    except subprocess.TimeoutExpired as exc:
        log = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        code, timed_out = None, True
    lines = [ln for ln in log.splitlines() if ln.startswith("=")]
    m = re.search(r"ERROR SUMMARY: (\d+) error", log)
    kinds = sorted({ln.strip("= ").strip() for ln in lines if "error detected" in ln.lower() or "Barrier" in ln})
    return dict(variant=variant, shape=shape, errors=int(m.group(1)) if m else None, exit_code=code,
                timed_out=timed_out, finished="FLASHCORE-DRIVER done" in log, kinds=kinds[:10],
                clean=(m is not None and int(m.group(1)) == 0 and "FLASHCORE-DRIVER done" in log),
                log_head="\n".join(lines[:70]))


def probe(out_dir: str = ".", cycles: int = watchdog.DEFAULT_CYCLES) -> dict:
    """GPU smoke test for this chapter's kernels (no record): watchdog launches, checks, synccheck. JSON to out_dir."""
    import json
    import traceback
    from pathlib import Path

    from .. import sanitize
    from ..check import check_spec

    out: dict = {}
    params = dict(DEFAULTS, watchdog_cycles=cycles)

    def step(name, fn):
        t0 = time.perf_counter()
        try:
            out[name] = fn()
        except Exception as exc:
            out[name] = dict(error=f"{type(exc).__name__}: {exc}", tb=traceback.format_exc()[-3000:])
        print(f"== {name} ({time.perf_counter() - t0:.1f} s)", flush=True)
        print(json.dumps(out[name], default=str)[:3000], flush=True)

    step("watchdog", lambda: watchdog_runs(params))
    if isinstance(out.get("watchdog"), dict) and "v11_pipeline" in out["watchdog"]:
        print(watchdog.format_rows(out["watchdog"]["v11_pipeline"]["rows"][:20]), flush=True)
    for S in (128, 512, 1000, 2048):
        step(f"check_S{S}", lambda S=S: check_spec("v11_fixed", 1, 8, S, 64, seed=S).row())
    step("check_B2H4_S300", lambda: check_spec("v11_fixed", 2, 4, 300, 64, seed=1).row())

    def quick_time():
        from ..check import make_inputs
        q, k, v = make_inputs(1, 8, 512, 64, seed=5)
        fns = {"v11_fixed": _timed_launch(_launcher("v11_fixed"), q, k, v)}
        try:
            fns["v12_baseline"] = _timed_launch(_launcher("v12_baseline"), q, k, v)
        except Exception as exc:
            fns_err = str(exc)[:200]
            out["v12_err"] = fns_err
        fns["sdpa_cudnn"] = bench.sdpa_callables(q, k, v)["sdpa_cudnn"]
        return {n: bench.time_graph(f, launches_per_graph=10, samples=10).row() for n, f in fns.items()}

    step("timing", quick_time)
    step("synccheck", lambda: sanitize.run_sanitizer("synccheck", ["v11_fixed"], "1,8,512,64", timeout=120))
    step("racecheck", lambda: sanitize.run_sanitizer("racecheck", ["v11_fixed"], "1,8,512,64", timeout=120))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "probe.json").write_text(json.dumps(out, default=str, indent=1))
    return out


# ------------------------------------------------------------------------------------------------ from a record
def diagnosis(rec: Record) -> dict:
    """The watchdog's summary for v11 as designed (from the record)."""
    return rec.ext("watchdog")["v11_pipeline"]["diagnosis"]


def watchdog_table(rec: Record, kernel: str = "v11_pipeline", cta=None):
    """The decoded watchdog rows of one CTA (the first that has any), one row per warp."""
    import pandas as pd

    rows = rec.ext("watchdog")[kernel]["rows"]
    if not rows:
        return pd.DataFrame([dict(note=f"{kernel}: no warp gave up — the kernel finished within its budget")])
    cta = rows[0]["cta"] if cta is None else cta
    cols = ["cta", "warp", "role", "site", "barrier", "stage", "phase", "key_tile", "query_tile", "iteration",
            "arrivals_seen", "needed_arrivals", "expected", "reason", "cycles_waited"]
    return pd.DataFrame([{c: r.get(c) for c in cols} for r in rows if r["cta"] == cta]).set_index("warp")


def watchdog_sites(rec: Record):
    """Every stuck warp of every CTA, grouped by where it waits."""
    import pandas as pd

    rows = rec.ext("watchdog")["v11_pipeline"]["rows"]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return (df.groupby(["site", "barrier", "phase", "role", "reason"]).agg(warps=("warp", "size"),
            ctas=("cta", "nunique"), arrivals_seen=("arrivals_seen", "max"), needed=("needed_arrivals", "max"))
            .reset_index())


def model_table(rec: Record):
    """One row per model: verdict, states explored, trace length, the stuck barrier with its counts."""
    import pandas as pd

    rows = []
    for name, r in rec.ext("modelcheck").items():
        s = r["stuck"][0] if r["stuck"] else {}
        rows.append({"model": name, "deadlock": r["deadlock"], "states explored": r["states"],
                     "trace steps": len(r["trace"]) if r["deadlock"] else None,
                     "stuck on": s.get("barrier"), "arrivals / expected":
                     f"{s['arrived']} / {s['expected']}" if s else None,
                     "over-arrival": bool(r.get("over_arrival")), "model note": r["note"]})
    return pd.DataFrame(rows).set_index("model")


def model_trace(rec: Record, name: str = "v11") -> str:
    r = rec.ext("modelcheck")[name]
    res = modelcheck.Result(**{k: r[k] for k in ("model", "deadlock", "states", "transitions", "terminal_states",
                                                 "trace", "stuck", "barriers", "processes", "note", "truncated")},
                            over_arrival=r.get("over_arrival"))
    return modelcheck.format_trace(res)


def check_table(rec: Record):
    import pandas as pd

    rows = [r for r in rec["results"] if r.get("role") == "check"]
    return pd.DataFrame([{"kernel": r["kernel"], "B": r["B"], "H": r["H"], "S": r["S"], "passed": r["passed"],
                          "max |err| vs fp64": r["max_abs_err"], "tolerance": r.get("tol"),
                          "deterministic": r["deterministic"]} for r in rows])


def _innermost(frames, wanted=("producer_commit", "arrive", "mbarrier")) -> str:
    """The device frame that says what the report points at: the pipeline call if there is one, else the first
    barrier call, else the first frame."""
    for w in wanted:
        for f in frames or ():
            if w in f:
                f = f.replace("cuda::__4::", "cuda::").replace("cuda::std::__4::", "std::")
                return f.replace("(std::thread_scope)2", "thread_scope_block")[:90]
    return (frames or [""])[0][:90]


# How each kernel of the matrix commits a stage: the one variable the synccheck reports follow.
COMMIT_KIND = {
    "v11_ctl_guide": ("libcu++ role-less, all copy", "libcu++ pair"),
    "v11_ctl_guide_idle": ("libcu++ role-less, half copy", "libcu++ pair"),
    "v11_ctl_roles": ("libcu++ with roles", "libcu++ pair"),
    "v11_ctl_raw_inc": ("hand-written", "async arrive + arrive"),
    "v11_ctl_raw_noinc": ("hand-written", "one .noinc async arrive"),
    "v11_ctl_raw_waitall": ("hand-written", "wait_all + one arrive"),
    "v11_fixed": ("libcu++ role-less, load warps copy", "libcu++ pair"),
    "v11_fixed_roles": ("libcu++ with roles", "libcu++ pair"),
    "v11_fixed_mbarrier": ("hand-written, roles' counts", "one .noinc async arrive"),
}


def sync_matrix_table(rec: Record):
    """The synccheck matrix: one row per control and fix — its pipeline, how it commits, its own check, what
    synccheck says and where."""
    import pandas as pd

    m = rec.get("extra", {}).get("sync_matrix")
    if not m:
        return pd.DataFrame([dict(note="no synccheck matrix in this record")])
    checks: dict = {}
    for c in rec.get("extra", {}).get("controls", []):
        checks.setdefault(c["kernel"], []).append(c["passed"])
    for r in rec["results"]:
        if r.get("role") == "check":
            checks.setdefault(r["kernel"], []).append(r["passed"])
    rows = []
    for s_ in m["summaries"]:
        kid = s_["kernels"][0]
        flagged = [p_ for p_ in s_.get("per_launch", []) if p_.get("problems")]
        pipeline, commit = COMMIT_KIND.get(kid, ("", ""))
        report = "; ".join(k.replace("Barrier error detected. ", "") for k in flagged[0].get("kinds", [])) if flagged else ""
        at = _innermost(flagged[0].get("frames")) if flagged else ""
        rows.append({"kernel": kid, "pipeline": pipeline, "a commit is": commit,
                     "own check": f"{sum(checks.get(kid, []))}/{len(checks.get(kid, []))}",
                     "synccheck": "clean" if s_["clean"] else ("flagged" if flagged else "did not finish"),
                     "errors": s_.get("errors"), "report": report,
                     "at": at.replace("cuda::pipeline<thread_scope_block>::", "pipeline::").split("::[lambda")[0]})
    return pd.DataFrame(rows).set_index("kernel")


def sync_matrix_verdict(rec: Record) -> dict:
    """Which kernels synccheck flagged and which it passed, and whether that is the pattern predicted for "synccheck
    misreads libcu++'s commit" (every kernel that issues cp.async.mbarrier.arrive without .noinc followed by an
    arrive is flagged; the others are clean)."""
    m = rec.get("extra", {}).get("sync_matrix")
    if not m:
        return dict(clean=[], flagged=[], predicted_flagged=[], as_predicted=None)
    clean = [s_["kernels"][0] for s_ in m["summaries"] if s_["clean"]]
    flagged = [s_["kernels"][0] for s_ in m["summaries"] if not s_["clean"]]
    uses_pair = {"v11_ctl_guide", "v11_ctl_guide_idle", "v11_ctl_roles", "v11_ctl_raw_inc", "v11_fixed",
                 "v11_fixed_roles"}
    san = rec.get("extra", {}).get("sanitizer", {})
    race = [v for v in san.get("verdicts", []) if v["tool"] == "racecheck"]
    checks = [c["passed"] for c in rec.get("extra", {}).get("controls", [])] + [
        r["passed"] for r in rec["results"] if r.get("role") == "check"]
    return dict(clean=clean, flagged=flagged, predicted_flagged=sorted(uses_pair & set(clean + flagged)),
                as_predicted=set(flagged) == uses_pair & set(clean + flagged),
                racecheck_clean=bool(race) and all(v["clean"] for v in race), racecheck_kernels=len(race),
                checks_passed=sum(bool(c) for c in checks), checks=len(checks))


def timing_table(rec: Record):
    import pandas as pd

    rows = [r for r in rec["results"] if r.get("role") == "timing"]
    cudnn = next((r["median_us"] for r in rows if r["kernel"] == "sdpa_cudnn"), None)
    return pd.DataFrame([{"kernel": r["kernel"], "median µs": r["median_us"],
                          "p10–p90 µs": f"{r['p10_us']:.1f}–{r['p90_us']:.1f}", "TFLOP/s": r.get("tflops"),
                          "× cuDNN": r["median_us"] / cudnn if cudnn else None} for r in rows]).set_index("kernel")


def sanitizer_table(rec: Record):
    import pandas as pd

    san = rec.get("extra", {}).get("sanitizer")
    if not san:
        return pd.DataFrame([dict(note="no sanitizer run in this record")])
    return pd.DataFrame(san["verdicts"])[["tool", "kernel", "launches", "problems", "clean", "summary"]]


def synccheck_table(rec: Record):
    """synccheck with device backtraces: the matrix's detail runs (older records: v11_fixed and its drain build)."""
    import pandas as pd

    det = rec.get("extra", {}).get("sync_matrix", {}).get("details") or rec.get("extra", {}).get("synccheck_detail")
    if not det:
        return pd.DataFrame([dict(note="synccheck was clean: no detail run")])
    return pd.DataFrame([{"build": k, "errors": d["errors"], "finished": d["finished"], "clean": d["clean"],
                          "what it reports": "; ".join(d["kinds"][:3])} for k, d in det.items()]).set_index("build")


def _short(op: str) -> str:
    for a, b in (("producer_acquire consumed", "acq c"), ("producer_commit produced", "cmt p"),
                 ("consumer_wait produced", "wait p"), ("consumer_release consumed", "rel c"),
                 ("sync block (arrive)", "sync↓"), ("sync block", "sync↑")):
        op = op.replace(a, b)
    return op


def ncu_table(rec: Record):
    """The fix's Nsight Compute numbers: where the time goes, and the top warp stalls."""
    import pandas as pd

    from .. import profile

    rows = profile.rows_for(profile.read_report(rec.file(rec.ext("ncu_report"))), "v11_fixed")
    if not rows:
        return pd.DataFrame()
    r = rows[0]
    keys = ["duration_us", "sm_throughput_pct", "dram_throughput_pct", "achieved_occupancy_pct",
            "sms_active_pct", "tensor_pipe_pct", "issue_active_pct", "registers_per_thread", "grid_size"]
    d = {k: r.get(k) for k in keys}
    stalls = sorted(profile.stall_breakdown(r).items(), key=lambda kv: -(kv[1] or 0))[:6]
    d.update({f"stall: {k}": v for k, v in stalls})
    return pd.Series(d).to_frame("v11_fixed")


# ------------------------------------------------------------------------------------------------ the swimlane
def _lane_kind(op: str) -> str:
    if op.startswith("producer_"):
        return "producer"
    if op.startswith("consumer_"):
        return "consumer"
    if op.startswith("sync"):
        return "sync"
    return "work"


OPNAMES = {"wait": "consumer_wait", "acquire": "producer_acquire", "sync": "__syncthreads", "waitbar": "wait"}
KIND_COLORS = {"producer": "#2ca02c", "consumer": "#1f77b4", "sync": "#7f7f7f", "work": "#ff7f0e"}


def plot_swimlane(rec: Record, name: str = "v11", save_as: str = "02_v11_swimlane"):
    """Processes (warps by role) × steps of the model checker's shortest trace to the deadlock; the stuck point
    marked with the barrier, its arrivals and expected count — and the GPU watchdog's count beside it."""
    plt = plots.plt()
    r = rec.ext("modelcheck")[name]
    procs = [p["name"] for p in r["processes"]]
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.75 * len(procs)))
    ypos = {p: len(procs) - 1 - i for i, p in enumerate(procs)}
    for st in r["trace"]:
        y, x = ypos[st["process"]], st["step"]
        kind = _lane_kind(st["op"])
        ax.add_patch(plt.Rectangle((x - 0.45, y - 0.3), 0.9, 0.6, color=KIND_COLORS[kind], alpha=0.85))
        ax.text(x, y, _short(st["op"]), rotation=90, fontsize=6, ha="center", va="center", color="white")
    end = len(r["trace"])
    for s in r["stuck"]:
        y = ypos[s["process"]]
        ax.plot([end], [y], marker="X", color="#d62728", markersize=13)
        ax.text(end + 0.6, y, f"stuck in {OPNAMES.get(s['op'], s['op'])} on {s['barrier']}: "
                f"{s['arrived']}/{s['expected']} arrivals",
                fontsize=7, va="center", color="#d62728")
    if r["deadlock"]:
        ax.axvline(end - 0.5, color="#d62728", ls="--", lw=1)
    wd = rec.get("extra", {}).get("watchdog", {}).get("v11_pipeline", {})
    if wd.get("rows"):
        d = wd["diagnosis"]
        ax.set_title(f"Model checker: {name} — {'deadlock' if r['deadlock'] else 'no deadlock'} after "
                     f"{end} steps. GPU watchdog: {d['warps']} warps stuck; first: {d['first']['site']} on "
                     f"{d['first']['barrier']}, {d['arrivals_seen']}/{d['needed']} arrivals", fontsize=8)
    else:
        ax.set_title(f"Model checker: {name} — {modelcheck_verdict(r)}", fontsize=8)
    ax.set_yticks(list(ypos.values()))
    ax.set_yticklabels(list(ypos.keys()), fontsize=7)
    ax.set_xlim(-1, end + 12)
    ax.set_ylim(-0.7, len(procs) - 0.3)
    ax.set_xlabel("step of the shortest interleaving (breadth-first search)")
    for kind, c in KIND_COLORS.items():
        ax.plot([], [], "s", color=c, label=kind)
    ax.legend(fontsize=6, loc="lower right", ncol=4)
    ax.grid(False)
    plots.save(fig, save_as, rec)
    return fig


def modelcheck_verdict(r: dict) -> str:
    if r["deadlock"]:
        return f"deadlock after {len(r['trace'])} steps ({r['states']} states explored)"
    return f"deadlock-free: all {r['states']} reachable states explored, none stuck"


def plot_timing(rec: Record):
    plt = plots.plt()
    df = timing_table(rec)
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh(df.index, df["median µs"], color=[plots.COLORS.get(n, "#d62728") for n in df.index])
    ax.set_xscale("log")
    ax.set_xlabel("µs (median of CUDA-graph replays, log scale)")
    B, H, S, D = rec.ext("shape")
    ax.set_title(f"v11_fixed beside v12 and the SDPA backends, B{B} H{H} S{S} D{D}")
    plots.save(fig, "02_v11_timing", rec)
    return fig
