"""Chapter 2 (v11) on a CPU: the views on synthetic records and on the committed H100 record, the measure path with
the GPU faked (watchdog launches, checks, timings, the controls, compute-sanitizer's processes, ncu) into a record
that every view and the notebook read, the synccheck log shown under the count of its own invocation, and the
notebook's cells (hidden inputs, a parameters cell papermill parses)."""
from __future__ import annotations

import importlib
import io
import itertools
import json
import re
import subprocess
import types
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from flashcore import modelcheck as mc
from flashcore import records
from flashcore import watchdog as wd
from flashcore.chapters import v11 as ch
from flashcore.chapters.v11 import view as ch_view
from flashcore.harness import bench
from flashcore.harness import check as harness_check
from flashcore.harness import measure as harness
from flashcore.kernels import KnownFinding
from flashcore.tools import profile, sanitize

ch_measure = importlib.import_module("flashcore.chapters.v11.measure")   # the package's `measure` is the function
ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / f"{ch.NOTEBOOK}.ipynb"
H100 = "h100-80gb-hbm3"
CONTROLS = [k for k in ch.COMMIT_KIND if k.startswith("v11_ctl")]
PROV = dict(gpu="Test GPU", gpu_slug="test-gpu", sm="sm_90", num_sms=132, driver="0", cuda="13.0", torch="x",
            cupy="x", commit="1" * 40, dirty=False, date="2026-01-01T00:00:00+00:00", command="pytest",
            notebook=ch.NOTEBOOK)


@pytest.fixture(autouse=True)
def _figures_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("FLASHCORE_FIGURES_DIR", str(tmp_path / "figures"))


def _shown(fn, *args, **kw) -> str:
    """What a show_* function puts on the page (outside a notebook it prints the HTML / Markdown)."""
    out = io.StringIO()
    with redirect_stdout(out):
        fn(*args, **kw)
    return out.getvalue()


# ------------------------------------------------------------------------------------ synthetic watchdog records
def _stuck_buffer(ctas=(0, 1), warps=range(16)):
    """A watchdog buffer as v11 as designed leaves it: every warp of each CTA in consumer_wait on produced[0]."""
    buf = wd.allocate(max(ctas) + 1, np)
    for cta in ctas:
        for warp in warps:
            role = 1 if 11 <= warp <= 14 else (2 if warp == 15 else 0)
            reason = 1 if (cta, warp) == (ctas[-1], 5) else 2
            off = wd.HEADER_INTS + (cta * wd.WARPS_PER_CTA + warp) * wd.RECORD_INTS
            buf[off:off + wd.RECORD_INTS] = [reason, cta, warp, 0, role, 2, 0, 0, 0, 0, cta, 0, 128, 512, 0, 0,
                                             99_000_000, 0, 0, 0]
    buf[0], buf[1] = 1, len(ctas) * len(warps)
    return buf


def _guarded(kernel_id, B, H, S, D=64, cycles=wd.DEFAULT_CYCLES, seed=0):
    """What watchdog.launch_guarded returns, without a GPU: v11 as designed stuck, every fix finished."""
    rows = wd.decode(_stuck_buffer()) if kernel_id == "v11_pipeline" else []
    n = B * H * S * D
    return dict(kernel=kernel_id, shape=[B, H, S, D], cycles=int(cycles), seconds=0.06 if rows else 0.002,
                header=dict(abort=int(bool(rows)), records=len(rows), capacity=132 * 16, record_ints=20),
                finished=not rows, rows=rows, diagnosis=wd.diagnose(rows), output_unwritten=n if rows else 0,
                output_elements=n)


def _synthetic_record(tmp_path):
    rows = wd.decode(_stuck_buffer())
    extra = {"watchdog": {"v11_pipeline": _guarded("v11_pipeline", 1, 8, 512),
                          "v11_fixed_watchdog": _guarded("v11_fixed_watchdog", 1, 8, 512)},
             "modelcheck": mc.run_all(tiles=3), "shape": [1, 8, 512, 64]}
    assert extra["watchdog"]["v11_pipeline"]["rows"] == rows
    results = [dict(kernel="v11_pipeline", B=1, H=8, S=512, D=64, passed=False, outcome="deadlock-detected"),
               dict(kernel="v11_fixed", B=1, H=8, S=128, D=64, passed=True, max_abs_err=1e-4, tol=2e-4,
                    deterministic=True, role="check")]
    for name, us in (("v11_fixed", 300.0), ("v12_baseline", 400.0), ("sdpa_cudnn", 10.0)):
        results.append(dict(kernel=name, B=1, H=8, S=512, D=64, median_us=us, p10_us=us * 0.99, p90_us=us * 1.01,
                            tflops=1.0, role="timing"))
    data = dict(run_id="synthetic", provenance=dict(PROV), params=dict(ch.DEFAULTS), results=results, extra=extra)
    return records.Record(data, tmp_path / "run.json")


def test_chapter_tables_and_swimlane_from_a_synthetic_record(tmp_path):
    rec = _synthetic_record(tmp_path)
    assert len(ch.watchdog_rows(rec)) == 16 and {r["role"] for r in ch.watchdog_rows(rec)} == {
        "compute", "load", "softmax"}
    s = ch.watchdog_summary(rec)
    assert (s["cta"], s["warps"], s["ctas"], s["total_warps"], s["same_everywhere"]) == (0, 16, 2, 32, True)
    assert s["roles"] == {"compute": 11, "load": 4, "softmax": 1} and (s["arrivals_seen"], s["needed"]) == (128, 512)
    (site,) = ch.watchdog_sites(rec)
    assert site["warps"] == 32 and site["CTAs"] == 2 and site["arrivals / needed"] == "128 / 512"
    models = {r["model"]: r for r in ch.model_rows(rec)}
    assert models["v11 as designed"]["verdict"].startswith("deadlock after")
    assert models["v11 as designed"]["stuck on (arrivals / expected)"] == "produced[0] (128 / 512)"
    assert models["fix (a): every thread commits"]["verdict"].startswith("deadlock-free")
    assert "over-arrives" in models["roles, load warps still release"]["verdict"]
    trace = ch.trace_rows(rec, "v11")
    assert [r["step"] for r in trace[-3:]] == ["stuck"] * 3 and "128 of 512" in trace[-1]["operation"]
    assert ch.trace_rows(rec, "v11_fixed") == []
    assert ch.trace_rows(rec, "v11_role_overrelease", "over_arrival")[-1]["step"] == "race"
    assert "The two agree" in ch.agreement(rec)
    ch.plot_swimlane(rec, "v11")
    assert (tmp_path / "figures" / "02_v11_swimlane.png").exists()
    (fixed,) = [r for r in ch.timing_rows(rec) if r["kernel"] == "v11 fixed (all commit)"]
    assert fixed["× cuDNN"] == 30.0
    assert "25.0 % faster than v12 baseline's 400 µs" in ch.timing_summary(rec)
    assert ch.check_rows(rec) == [{"kernel": "v11 fixed (all commit)", "B1 H8 S128": "1.0e-04 ✓",
                                   "deterministic": True}]


def test_watchdog_summary_folds_the_identical_rows_into_one_line(tmp_path):
    rec = _synthetic_record(tmp_path)
    page = _shown(ch.show_watchdog, rec)
    assert "**16 warps of CTA 0** (11 compute, 4 load, 1 softmax) wait in `consumer_wait`" in page
    assert "Every one of the 2 CTAs that had work shows the same (32 warps in all)" in page
    body = page[page.index("<details"):]
    assert body.count("<tr>") == 17 + 2 and "The 16 watchdog records of CTA 0" in body   # rows and sites, folded
    assert page.count("<table") == 2 and page.index("<table") > page.index("<details")
    assert page.index("<details") > page.index("16 warps of CTA 0")


def test_watchdog_summary_says_when_ctas_differ(tmp_path):
    rec = _synthetic_record(tmp_path)
    rows = rec["extra"]["watchdog"]["v11_pipeline"]["rows"]
    rows[-1] = dict(rows[-1], site="producer_acquire", barrier="stage 0 'consumed' mbarrier (pipeline)")
    assert not ch.watchdog_summary(rec)["same_everywhere"]
    page = _shown(ch.show_watchdog, rec)
    assert "The other CTAs differ" in page and page.index("<table") < page.index("<details")   # sites in view
    assert len(ch.watchdog_sites(rec)) == 2


def test_timing_ties_inside_the_spread(tmp_path):
    rec = _synthetic_record(tmp_path)
    for r in rec["results"]:
        if r["kernel"] == "v12_baseline":
            r.update(median_us=302.0, p10_us=290.0, p90_us=310.0)
    assert "a tie with v12 baseline's 302 µs" in ch.timing_summary(rec)
    assert not ch.separates(*(r for r in rec["results"] if r.get("role") == "timing" and r["kernel"] in
                              ("v11_fixed", "v12_baseline")))


# ------------------------------------------------------------------------------------ the synccheck matrix
def _matrix_summary(kid, flagged, errors=3):
    per = [dict(kernel=kid, shape="1,8,512,64", problems=3 if flagged else 0,
                first="Barrier error detected. Missing wait." if flagged else "",
                kinds=["Barrier error detected. Missing wait."] if flagged else [],
                frames=["cuda::__4::pipeline<(cuda::std::__4::thread_scope)2>::producer_commit()", kid] if flagged
                else [])]
    return dict(tool="synccheck", kernels=[kid], shapes="1,8,512,64", clean=not flagged,
                errors=errors if flagged else 0, finished=not flagged, timed_out=False, per_launch=per,
                summary=f"ERROR SUMMARY: {errors if flagged else 0} errors")


@pytest.mark.parametrize("pattern, expected", [("pair", True), ("everything", False)])
def test_sync_matrix_verdict_reads_the_pattern_from_the_record(tmp_path, pattern, expected):
    rec = _synthetic_record(tmp_path)
    ids = CONTROLS + list(ch.FIX_VARIANTS)
    flagged = set(ch.PAIR_COMMITTERS) if pattern == "pair" else set(ids)
    rec["extra"]["sync_matrix"] = dict(shape="1,8,512,64", kernels=ids, details={},
                                       summaries=[_matrix_summary(k, k in flagged) for k in ids])
    rec["extra"]["controls"] = [dict(kernel=k, S=512, passed=True) for k in CONTROLS]
    v = ch.sync_matrix_verdict(rec)
    assert v["as_predicted"] is expected and set(v["flagged"]) == flagged and v["unfinished"] == []
    assert v["checks"] == len(CONTROLS) + 1 and v["checks_passed"] == v["checks"]
    table = {r["kernel"]: r for r in ch.sync_matrix_rows(rec)}
    assert list(table) == [ch_view.label(k) for k in ids]
    fixed = table["v11 fixed (all commit)"]
    assert fixed["synccheck"] == "Missing wait in producer_commit()"
    assert table["control: guide pattern"]["own check"] == "1/1"
    assert ("exactly the pattern predicted" in ch.sync_matrix_reading(rec)) is expected


def test_sync_matrix_unfinished_kernel_settles_nothing(tmp_path):
    rec = _synthetic_record(tmp_path)
    ids = CONTROLS + list(ch.FIX_VARIANTS)
    sums = [_matrix_summary(k, k in ch.PAIR_COMMITTERS) for k in ids]
    sums[-1] = dict(sums[-1], finished=False, timed_out=True, per_launch=[])       # v11_fixed_mbarrier timed out
    rec["extra"]["sync_matrix"] = dict(shape="1,8,512,64", kernels=ids, summaries=sums)
    v = ch.sync_matrix_verdict(rec)
    assert v["unfinished"] == ["v11_fixed_mbarrier"] and v["as_predicted"] is None
    assert "cannot settle" in ch.sync_matrix_reading(rec)
    assert ch.sync_matrix_rows(rec)[-1]["synccheck"] == "did not finish"


def test_sync_matrix_verdict_without_a_matrix(tmp_path):
    rec = _synthetic_record(tmp_path)
    assert ch.sync_matrix_verdict(rec)["as_predicted"] is None
    assert ch.sync_matrix_rows(rec) == [] and ch.synccheck_logs(rec) == []
    assert "predates the controls" in ch.sync_matrix_reading(rec)


def test_pair_committers_are_the_kernels_that_issue_the_pair():
    assert ch.PAIR_COMMITTERS == {"v11_ctl_guide", "v11_ctl_guide_idle", "v11_ctl_roles", "v11_ctl_raw_inc",
                                  "v11_fixed", "v11_fixed_roles"}


def test_every_control_has_a_commit_kind():
    """The matrix's description column covers every control the registry declares (and nothing else)."""
    assert ch_measure.control_ids() == CONTROLS


# ------------------------------------------------------------------------------------ the measure path, GPU faked
def _synccheck_log(kid, errors):
    frames = ["cuda::__4::barrier<(cuda::std::__4::thread_scope)2, cuda::std::__4::__empty_completion>::arrive(long)"
              "+0x28a0 in barrier_block_scope.h:135",
              "cuda::__4::pipeline<(cuda::std::__4::thread_scope)2>::producer_commit()+0x28a0 in pipeline:147",
              f"{kid}+0x2810 in 4ed7e9ae.cubin.cu:442"]
    report = ["========= Barrier error detected. Missing wait.",
              "=========     at unsigned long long cuda::ptx::__4::mbarrier_arrive<void>(unsigned long long *)+0x28a0"
              " in mbarrier_arrive.h:49", "=========     by thread (0,0,0) in block (4,0,0)",
              "=========     Barrier is located at shared address 0x400"]
    report += [f"=========         Device Frame: {f}" for f in frames] + ["========= "]
    return "\n".join(["========= COMPUTE-SANITIZER", f"FLASHCORE-LAUNCH kernel={kid} shape=1,8,512,64"]
                     + report * 12 + ["========= Target application returned an error",
                                      f"========= ERROR SUMMARY: {errors} errors",
                                      f"========= ERROR SUMMARY: {errors - 12} errors were not printed."])


def _fake_sanitizer_processes(monkeypatch):
    """compute-sanitizer's processes, faked below tools.sanitize (its parsing and verdict rule run for real): a
    kernel that commits with libcu++'s pair is flagged by synccheck, with a count no other invocation has."""
    counts = itertools.count(1000, 37)
    calls = []

    def run(cmd, capture_output=True, text=True, timeout=None, env=None):
        tool = cmd[cmd.index("--tool") + 1]
        kid = cmd[cmd.index("--kernels") + 1]
        calls.append((tool, kid, cmd[cmd.index("--shapes") + 1]))
        if tool == "synccheck" and kid in ch.PAIR_COMMITTERS:
            return types.SimpleNamespace(stdout=_synccheck_log(kid, next(counts)), stderr="", returncode=1)
        summary = ("RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)" if tool == "racecheck"
                   else "ERROR SUMMARY: 0 errors")
        log = (f"========= COMPUTE-SANITIZER\nFLASHCORE-LAUNCH kernel={kid} shape=1,8,512,64\nFLASHCORE-DRIVER done\n"
               f"========= {summary}")
        return types.SimpleNamespace(stdout=log, stderr="", returncode=0)

    monkeypatch.setattr(sanitize, "find_sanitizer", lambda: "compute-sanitizer")
    fake_subprocess = types.SimpleNamespace(run=run, TimeoutExpired=subprocess.TimeoutExpired)
    monkeypatch.setattr(sanitize, "subprocess", fake_subprocess)
    return calls


def _fake_ncu_rows(path):
    return [dict(launch_label="v11_fixed 1,8,512,64", duration_us=1700.0, grid_size=132.0, sm_count=132.0,
                 sm_throughput_pct=0.4, achieved_occupancy_pct=25.0, tensor_pipe_pct=0.9, issue_active_pct=6.5,
                 registers_per_thread=94.0, stall_barrier=48.0, stall_short_scoreboard=7.0, stall_wait=2.0,
                 stall_long_scoreboard=0.7)]


@pytest.fixture
def fake_gpu(monkeypatch):
    """Everything measure() touches on a GPU, faked on the CPU; returns the record of questions asked."""
    import torch

    asked = dict(checks=[], timed=[], sanitizer=_fake_sanitizer_processes(monkeypatch), ncu=[])

    def contender(kid, check=True):
        def launch(q, k, v, o):          # the controls' own reference: every output row = column sums of V
            o.copy_(v.float().sum(dim=2, keepdim=True).expand_as(o).to(o.dtype))

        def timed(q, k, v, o):
            fn = lambda: asked["timed"].append(kid)   # noqa: E731
            return fn
        return harness.Contender(kid, launch=launch, timed=timed, check=check,
                                 fields=lambda shape: dict(source=f"{kid}.cu"))

    def fake_check(fn, B, H, S, D=64, seed=0, runs=3, S_kv=None, scale=None, kernel=""):
        asked["checks"].append((kernel, B, H, S))
        return harness_check.CheckResult(kernel, B, H, S, S_kv or S, D, seed, 1e-4, 1e-4, 2.1e-4, True, True, runs,
                                         0, 0)

    us = dict(v11_fixed=1350.0, v11_fixed_roles=1349.0, v11_fixed_mbarrier=1339.0, v12_baseline=1540.0,
              sdpa_cudnn=9.1, sdpa_flash=9.9, sdpa_efficient=21.4, sdpa_default=9.2)

    def fake_time(fn, launches_per_graph=20, samples=50, warmup=3, flush=False):
        fn()
        kid = asked["timed"][-1]
        return bench.summarize([us[kid] * f for f in (0.995, 1.0, 1.005)], launches_per_graph, "fake graph")

    def fake_ncu(out_rep, kernels=(), shapes="", sections=(), timeout=600, **kw):
        asked["ncu"].append(dict(kernels=list(kernels), shapes=shapes, sections=tuple(sections), **kw))
        Path(out_rep).write_bytes(b"fake report")
        return Path(out_rep)

    real_inputs = harness_check.make_inputs
    cpu_inputs = lambda *a, **kw: real_inputs(*a, **dict(kw, device="cpu"))   # noqa: E731
    monkeypatch.setattr(ch_measure.watchdog, "launch_guarded", _guarded)
    monkeypatch.setattr(harness, "kernel", lambda kid, defines=(): contender(kid))
    monkeypatch.setattr(harness, "sdpa", lambda name, check=False: contender(name, check=False))
    monkeypatch.setattr(harness, "check_kernel", fake_check)
    monkeypatch.setattr(harness, "make_inputs", cpu_inputs)
    monkeypatch.setattr(harness_check, "make_inputs", cpu_inputs)
    monkeypatch.setattr(bench, "time_graph", fake_time)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **kw: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(ch_measure, "control_ids", lambda: list(CONTROLS))
    known = KnownFinding(tool="synccheck", kind="Missing wait", frame="producer_commit", why="see chapter 2")
    monkeypatch.setattr(ch_measure, "_known_findings",
                        lambda ids: {k: (known,) if k in ch.PAIR_COMMITTERS else () for k in ids})
    monkeypatch.setattr(profile, "ncu_profile", fake_ncu)
    monkeypatch.setattr(profile, "read_report", _fake_ncu_rows)
    return asked


def _measured(tmp_path, **params) -> records.Record:
    run = records.Run(ch.NOTEBOOK, params=dict(ch.DEFAULTS, **params), runs_dir=tmp_path / "runs",
                      provenance=dict(PROV))
    ch.measure(run, dict(ch.DEFAULTS, **params))
    return records.load(run.save())


def test_measure_with_the_gpu_faked_writes_a_record_every_view_reads(tmp_path, fake_gpu):
    rec = _measured(tmp_path)
    # what was asked of the (fake) GPU
    fixes_checked = {(k, s) for k, _, _, s in fake_gpu["checks"] if k in ch.FIX_VARIANTS}
    assert fixes_checked == {(k, s) for k in ch.FIX_VARIANTS for s in ch.DEFAULTS["check_S"]}
    assert ("v12_baseline", 1, 8, 512) in fake_gpu["checks"]
    assert not any(k.startswith("sdpa") for k, *_ in fake_gpu["checks"])                 # peers: timed, not checked
    sync = sorted(k for t, k, _ in fake_gpu["sanitizer"] if t == "synccheck")
    race = sorted(k for t, k, _ in fake_gpu["sanitizer"] if t == "racecheck")
    assert sync == sorted(CONTROLS + list(ch.FIX_VARIANTS)) and race == sorted(ch.FIX_VARIANTS)   # one process each
    assert fake_gpu["ncu"] == [dict(kernels=["v11_fixed"], shapes="1,8,512,64", sections=profile.BOOK_SECTIONS)]
    # the record
    assert rec.row(kernel="v11_pipeline")["outcome"] == "deadlock-detected"
    assert rec.row(kernel="v11_fixed", role="mission")["ncu_report"] == "v11_fixed.ncu-rep"
    assert [c["passed"] for c in rec.ext("controls")] == [True] * 2 * len(CONTROLS)
    assert all(s.get("log_head") is not None for s in rec.ext("sync_matrix")["summaries"])
    san = {(v["tool"], v["kernel"]): v["clean"] for v in rec.ext("sanitizer")["verdicts"]}
    assert san == {("racecheck", k): True for k in ch.FIX_VARIANTS} | {
        ("synccheck", "v11_fixed"): "known", ("synccheck", "v11_fixed_roles"): "known",
        ("synccheck", "v11_fixed_mbarrier"): True}
    # every view reads it
    assert ch.watchdog_summary(rec)["warps"] == 16 and ch.fix_watchdog_rows(rec)
    assert ch.checks_passed(rec) == dict(passed=12, checks=12, worst=pytest.approx(1e-4 / 2.1e-4))
    assert all("✓" in r["B1 H8 S512"] for r in ch.check_rows(rec))
    assert {r["kernel"]: r["synccheck"] for r in ch.sanitizer_rows(rec)}["v11 fixed (all commit)"].startswith(
        "flagged: a known finding")
    v = ch.sync_matrix_verdict(rec)
    assert v["as_predicted"] is True and v["racecheck_clean"] and v["checks_passed"] == v["checks"] == 24
    assert len(ch.timing_rows(rec)) == 8 and "a tie with" in ch.timing_summary(rec)
    assert ch.ncu_rows(rec)[0]["value"] == 1700.0 and ch.stall_rows(rec)[0]["stall reason"] == "barrier"
    assert "block barriers" in ch.design_reading(rec) and "of which 8 have work" in ch.ncu_summary(rec)
    for fn in (ch.show_watchdog, ch.show_sanitizer, ch.show_synccheck_logs):
        page = _shown(fn, rec)
        assert not re.search(r"\b(None|NaN|nan)\b", page)
    for plot in (ch.plot_swimlane, ch.plot_timing, ch.plot_stalls):
        assert plot(rec) is not None
    assert sorted(p.stem for p in (tmp_path / "figures").glob("*.png")) == sorted(ch.FIGURES)


def test_the_log_shown_is_from_the_invocation_the_table_counts(tmp_path, fake_gpu):
    """Each flagged kernel's log is shown under the count of its own synccheck process: every invocation of the fake
    counts differently, so a log from another process would carry another number."""
    rec = _measured(tmp_path)
    table = {r["kernel"]: r["errors"] for r in ch.sync_matrix_rows(rec)}
    logs = ch.synccheck_logs(rec)
    assert sorted(g["kernel"] for g in logs) == sorted(ch.PAIR_COMMITTERS)
    assert len({g["errors"] for g in logs}) == len(logs)                      # all counts differ
    page = _shown(ch.show_synccheck_logs, rec)
    for g in logs:
        assert g["same_invocation"] and g["errors"] == g["table_errors"] == table[ch_view.label(g["kernel"])]
        assert f"ERROR SUMMARY: {g['errors']} errors" in g["log"]          # the log's own summary line
        summary = f"{ch_view.label(g['kernel'])}: the synccheck log of the run counted in the table ({g['errors']:,}"
        block = page[page.index(summary):].split("</details>")[0]
        assert f"ERROR SUMMARY: {g['errors']} errors" in block and g["kernel"] in block
    assert "separate" not in page


def test_measure_survives_a_failed_ncu_and_no_v12(tmp_path, fake_gpu, monkeypatch):
    def no_ncu(*a, **kw):
        raise RuntimeError("ncu failed (exit 1)")

    real_kernel = harness.kernel

    def kernel(kid, defines=()):
        if kid == "v12_baseline":
            raise RuntimeError("no such kernel here")
        return real_kernel(kid, defines)

    monkeypatch.setattr(profile, "ncu_profile", no_ncu)
    monkeypatch.setattr(harness, "kernel", kernel)
    rec = _measured(tmp_path)
    assert "ncu failed" in rec.ext("ncu_error") and "ncu_report" not in rec["extra"]
    assert ch.ncu_rows(rec) == [] and ch.plot_stalls(rec) is None and "ncu failed" in ch.ncu_summary(rec)
    assert "In this run v12 baseline was not timed (RuntimeError: no such kernel here)" in ch.timing_summary(rec)
    assert "cannot answer" in ch.design_reading(rec)           # no ncu report: no reading of the design


def test_measure_without_sanitizers(tmp_path, fake_gpu):
    rec = _measured(tmp_path, sanitize=False, ncu=False)
    assert fake_gpu["sanitizer"] == [] and fake_gpu["ncu"] == []
    assert ch.sanitizer_rows(rec) == [] and ch.sync_matrix_rows(rec) == []
    assert "no sanitizer run" in _shown(ch.show_sanitizer, rec)
    assert "No synccheck log" in _shown(ch.show_synccheck_logs, rec)


# ------------------------------------------------------------------------------------ the committed H100 record
@pytest.fixture(scope="module")
def h100():
    try:
        return records.newest(ch.NOTEBOOK, device=H100)
    except records.RecordError:
        pytest.skip("no committed H100 record of chapter 2")


def test_h100_record_replays_through_every_view(h100):
    s = ch.watchdog_summary(h100)
    assert (s["warps"], s["ctas"], s["same_everywhere"], s["arrivals_seen"], s["needed"]) == (16, 8, True, 128, 512)
    assert len(ch.watchdog_rows(h100)) == 16 and len(ch.watchdog_sites(h100)) == 1
    assert "The two agree" in ch.agreement(h100)
    c = ch.checks_passed(h100)
    assert c["passed"] == c["checks"] == 12 and c["worst"] < 1
    assert ch.sync_matrix_verdict(h100)["as_predicted"] is True
    assert [r["synccheck"] for r in ch.sanitizer_rows(h100)] == ["flagged: Missing wait", "flagged: Missing wait",
                                                                  "clean"]
    rows = {r["kernel"]: r for r in ch.timing_rows(h100)}
    assert set(rows) >= {"v11 fixed (all commit)", "v12 baseline", "cuDNN (SDPA)"}
    assert "faster than v12 baseline's" in ch.timing_summary(h100)
    assert ch.stall_rows(h100)[0]["stall reason"] == "barrier"
    for plot in (ch.plot_swimlane, ch.plot_timing, ch.plot_stalls):
        assert plot(h100) is not None
    for fn in (ch.show_watchdog, ch.show_sanitizer, ch.show_synccheck_logs):
        page = _shown(fn, h100)
        assert not re.search(r"\b(None|NaN|nan)\b", page)


def test_h100_logs_are_labelled_as_separate_invocations(h100):
    """The old record's logs came from separate runs: the page says so and shows both counts, never the detail
    run's count as the table's."""
    table = {r["kernel"]: r["errors"] for r in ch.sync_matrix_rows(h100)}
    assert table["v11 fixed (all commit)"] == 3136
    assert "<td>3,136</td>" in _shown(ch.show_sync_matrix, h100)
    logs = {g["kernel"]: g for g in ch.synccheck_logs(h100)}
    assert not logs["v11_fixed"]["same_invocation"]
    assert (logs["v11_fixed"]["errors"], logs["v11_fixed"]["table_errors"]) == (2624, 3136)
    page = _shown(ch.show_synccheck_logs, h100)
    assert "separate detail runs" in page and "counted 2,624 errors in its detail run and 3,136" in page
    assert "v11 fixed (all commit): synccheck log of a separate detail run (2,624 errors there; 3,136 in the table" \
        in page.replace("&#x27;", "'")
    assert "the run counted in the table" not in page


# ------------------------------------------------------------------------------------ the notebook
def _cells():
    import nbformat

    return nbformat.read(NOTEBOOK, 4).cells


def test_parameters_cell_parses_cleanly_with_papermill(caplog):
    from papermill.inspection import inspect_notebook

    with caplog.at_level("WARNING"):
        params = inspect_notebook(str(NOTEBOOK))
    assert not [r for r in caplog.records if "Unable to parse" in r.getMessage()]
    assert set(params) == {"mode", "B", "H", "S", "D", "watchdog_cycles", "samples", "device"}
    assert params["device"]["default"] == "None"


def test_only_the_cells_that_teach_show_their_code():
    code = [c for c in _cells() if c.cell_type == "code"]
    visible = [c for c in code if "remove-input" not in c.metadata.get("tags", [])]
    assert [c.source.splitlines()[0] for c in visible] == ["from flashcore import book"]   # the chapter call
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "remove-input" in params[0].metadata["tags"]


def test_notebook_cites_and_links_what_it_uses():
    text = "\n".join(c.source for c in _cells() if c.cell_type == "markdown")
    bib = (ROOT / "book" / "references.bib").read_text()
    glossary = (ROOT / "book" / "glossary.md").read_text()
    cited = set(re.findall(r"\{cite\}`([^`]+)`", text))
    assert {"nvidia_cuda_guide_pipelines", "nvidia_ptx_mbarrier", "nvidia_sanitizer_synccheck"} <= cited
    for key in cited:
        assert f"{{{key}," in bib, key
    for key in ("nvidia_cuda_guide_pipelines", "nvidia_ptx_mbarrier", "nvidia_sanitizer_synccheck"):
        entry = bib[bib.index(f"{{{key},"):].split("\n}")[0]
        assert "url" in entry and "https://docs.nvidia.com/" in entry, key
    for term in set(re.findall(r"\{term\}`([^`]+)`", text)):
        assert f"\n{term}\n" in glossary, term


def test_notebook_runs_in_replay_against_a_synthetic_record(tmp_path, fake_gpu, monkeypatch):
    """Every cell of the chapter, executed against a record written by the faked measure: the page shows each chart
    of FIGURES and no NaN/None in what it prints."""
    from flashcore import book

    rec = _measured(tmp_path)
    monkeypatch.setattr(book, "chapter", lambda *a, **kw: rec)
    # source links resolve through the kernel registry (book.py and the kernels' own tests cover them)
    monkeypatch.setattr(book, "kernel_source_link", lambda kid: f"{{download}}`{kid}.cu </kernels/{kid}.cu>`")
    ns: dict = {}
    out = io.StringIO()
    with redirect_stdout(out):
        for cell in _cells():
            if cell.cell_type == "code":
                exec(compile(cell.source, f"<{ch.NOTEBOOK} cell>", "exec"), ns)
    page = out.getvalue()
    assert not re.search(r"\b(None|NaN|nan)\b", page)
    assert sorted(p.stem for p in (tmp_path / "figures").glob("*.png")) == sorted(ch.FIGURES)
    assert "exactly the pattern predicted" in page and "The two agree" in page
    json.dumps(rec)          # the record stays JSON (write-once, replayable)
