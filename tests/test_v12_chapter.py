"""Chapter 1 (v12): the kernels compile without spills and each step differs from its parent by its idea; the
measure path on a CPU with the GPU faked → a record → every view → the notebook replayed; the committed H100 record
still replays; tables without NaN/None; charts without colliding or cut-off labels; prose that branches on the record.
Numbers in the synthetic records are made up here and never shown in the book."""
import importlib
import re

import nbformat
import pytest

from flashcore import kernels, records
from flashcore.chapters import v12
from flashcore.harness import bench
from flashcore.harness.bench import summarize
from flashcore.harness.check import CheckResult
from flashcore.paths import NOTEBOOKS_DIR
from flashcore.specs import v12 as v12_specs
from test_method_chapter import chart_collisions, run_notebook_in_replay, table_problems

PROV = dict(gpu="Test GPU", gpu_slug="test-gpu", sm="sm_90", driver="0", cuda="13.0", torch="x", cupy="x",
            commit="1" * 40, dirty=False, date="2026-01-01T00:00:00+00:00", command="pytest", notebook=v12.NOTEBOOK)
H100 = "h100-80gb-hbm3"
SHORTCUT = "v12_no_4th_barrier"
# made-up µs of the fake GPU at the mission shape, per contender
US = dict(v12_baseline=1000.0, v12_abl_1_grid=100.0, v12_abl_2_vec=80.0, v12_abl_3_softmax=30.0,
          v12_abl_4_prefetch=25.0, v12_only_vec=900.0, v12_only_softmax=400.0, v12_only_softmax_vec=300.0,
          v12_no_4th_barrier=990.0, sdpa_cudnn=10.0, sdpa_flash=11.0, sdpa_efficient=20.0, sdpa_default=10.0)


@pytest.fixture(autouse=True)
def _figures_elsewhere(tmp_path, monkeypatch):
    """Synthetic charts must never land in the committed figures/ folder."""
    monkeypatch.setenv("FLASHCORE_FIGURES_DIR", str(tmp_path / "figures"))


def test_specs_registered_and_compile_without_spills():
    from flashcore.compile import find_nvcc, nvcc_compile

    try:
        find_nvcc()
    except Exception:
        pytest.skip("no nvcc")
    specs = kernels.all_specs(chapter=v12_specs.CHAPTER)
    ids = {s.id for s in specs}
    assert set(v12_specs.LADDER + v12_specs.ALONE + v12_specs.LADDER_B) <= ids and "v12_no_4th_barrier" in ids
    assert kernels.get("v12_no_4th_barrier").expect_failure
    for s in specs:
        rep = nvcc_compile(s)
        assert rep.spill_stores == 0 and rep.spill_loads == 0 and rep.stack_bytes == 0, s.id
        assert rep.registers <= 64, s.id          # __launch_bounds__(512, 2)


def test_v12_steps_differ_from_their_parents_by_their_idea():
    """Every v12 kernel is its own file: a body over kernels/v12/v12_tile.cuh (no device helper of its own), and a
    step's diff against its parent touches only the lines of its idea (the call it swaps, the schedule line, …)."""
    import difflib
    import re

    ideas = {   # id → what every changed line of its body (entry and smem-symbol lines aside) must mention
        "v12_no_4th_barrier": r"__syncthreads|4th barrier",
        "v12_abl_1_grid": r"h0 = ",
        "v12_abl_2_vec": r"load_tile_vec|store_output_vec|load_tile_scalar|store_output_scalar",
        "v12_abl_3_softmax": r"softmax_rows_(parallel|serial)",
        "v12_abl_4_prefetch": r"KV_STAGES|load_tile|cp_async|stage|Kc|Vc|__syncthreads|kt \+ 1|^}$",
        "v12_only_vec": r"load_tile_vec|store_output_vec|load_tile_scalar|store_output_scalar",
        "v12_only_softmax": r"softmax_rows_(parallel|serial)",
        "v12_only_softmax_vec": r"load_tile_vec|store_output_vec|load_tile_scalar|store_output_scalar",
    }

    def body(spec):
        lines = spec.path.read_text().splitlines()
        return [l.strip() for l in lines if not l.startswith("//") and l.strip()]

    specs = {s.id: s for s in kernels.all_specs(chapter=v12_specs.CHAPTER)}
    assert set(ideas) | {"v12_baseline"} == set(specs)
    for spec in specs.values():
        text = spec.path.read_text()
        assert spec.source == f"v12/{spec.id}.cu" and spec.entry == spec.id and not spec.defines, spec.id
        assert '#include "v12/v12_tile.cuh"' in text, spec.source
        assert not re.search(r"__device__[^;{]*\(", text), f"{spec.source}: helpers go to v12_tile.cuh"
    for kid, idea in ideas.items():
        spec, parent = specs[kid], specs[specs[kid].parent]
        changed = [l[1:].strip() for l in difflib.unified_diff(body(parent), body(spec), lineterm="", n=0)
                   if l[:1] in "+-" and l[:3] not in ("+++", "---")]
        code = [l for l in changed if not re.search(rf"\b({spec.entry}|{parent.entry})(_smem_bytes)?\b", l)]
        assert code, f"{kid}: no change from {parent.id}"
        stray = [l for l in code if not re.search(idea, l)]
        assert not stray, f"{kid}: lines beyond its idea changed from {parent.id}: {stray}"


def test_geometry():
    s = kernels.LaunchShape(bh=8, seq_q=512, seq_kv=512, num_sms=132)
    assert kernels.get("v12_baseline").grid(s) == (132, 1, 1)
    assert kernels.get("v12_abl_1_grid").grid(s) == (16, 8, 1)
    assert v12.steps_per_cta([132, 1, 1], 1, 8, 512) == 16 * 11          # persistent: 16 query tiles × 11 key tiles
    assert v12.steps_per_cta([16, 8, 1], 1, 8, 512) == 11                # one query tile per CTA
    assert v12.steps_per_cta([132, 1, 1], 4, 64, 512) == 2 * 16 * 11     # 256 heads on 132 CTAs: two each


def test_seed_estimate_is_quoted_history():
    assert sum(v12.SEED_ESTIMATE_L4_US.values()) == pytest.approx(1539.0)   # the assessment's own rows
    assert v12.SEED_MEASURED_L4_US == 1508.0 and v12.SEED_SDPA_L4_US == 30.0 and v12.SEED_L4_SMS == 58


def test_ratio_format():
    assert [v12.ratio(x) for x in (0.904, 2.734, 10.84, 171.2, 1234.5, None)] == \
        ["0.90", "2.73", "10.8", "171", "1,234", "—"]


# ------------------------------------------------------------------------------------------------ faked GPU
def _fake_gpu(monkeypatch, scale=1.0, ncu=True):
    """Every GPU call of chapter 1's measure returns made-up numbers (``scale`` multiplies our kernels' times);
    the harness's own check-then-time routine runs for real (only its check, clock and inputs are faked)."""
    import torch

    from flashcore.harness import measure as harness
    from flashcore.tools import profile, sanitize, sass

    m = importlib.import_module("flashcore.chapters.v12.measure")   # the package exports the function as `measure`

    def timed_as(kid, B, H):
        def call():
            return None
        bh = B * H
        grows = kid != "v12_baseline" and not kid.startswith("v12_only")    # the persistent ones stay flat
        call.us = US[kid] * (1 if kid.startswith("sdpa") else scale) * (max(1.0, bh / 8) if grows else 1.0)
        return call

    def fake_kernel(kid, defines=()):
        spec = kernels.get(kid)
        return harness.Contender(kid, launch=lambda q, k, v, o: None,
                                 timed=lambda q, k, v, o: timed_as(kid, q.shape[0], q.shape[1]),
                                 expect_failure=spec.expect_failure)

    def fake_sdpa(name, check=False):
        return harness.Contender(name, launch=lambda q, k, v, o: None,
                                 timed=lambda q, k, v, o: timed_as(name, q.shape[0], q.shape[1]), check=check)

    def fake_check(fn, B, H, S, D=64, seed=0, runs=3, S_kv=None, scale=None, kernel=""):
        bad = kernel == SHORTCUT
        return CheckResult(kernel, B, H, S, S_kv or S, D, seed, 0.35 if bad else 1.5e-4, 1.8e-4, 3.7e-4, not bad,
                           not bad, runs, 0, 0)

    def fake_geometry(ids, bh, seq):
        shape = kernels.LaunchShape(bh=bh, seq_q=seq, seq_kv=seq, num_sms=132)
        return 132, {k: dict(grid=list(kernels.get(k).grid(shape)), block=[512, 1, 1], smem=39168) for k in ids}

    def fake_jobs(tools, ids, shapes, timeout=300, **kw):
        out = []
        for tool in tools:
            for kid in ids:
                bad = kid == SHORTCUT
                out.append(dict(tool=tool, kernels=[kid], shapes=shapes, clean=not bad, errors=1234 if bad else 0,
                                warnings=56 if bad else 0, exit_code=0, timed_out=False, finished=True,
                                summary=f"{tool.upper()} SUMMARY: {1234 if bad else 0} errors",
                                per_launch=[dict(kernel=kid, shape=shapes, problems=20 if bad else 0,
                                                 first="Error: Potential WAR hazard" if bad else "", kinds=[],
                                                 frames=[])],
                                log_tail="tail", log_head=f"========= {tool} report of {kid}"))
        return out

    def fake_report(path):
        return [dict(launch_label=f"{kid} 1,8,512,64", kernel_name=kid, duration_us=US[kid] * 1.3, grid_size=128.0,
                     sm_cycles_active_avg=10.0 if i == 0 else 90.0, elapsed_cycles=100.0, sm_count=132.0,
                     tensor_pipe_pct=1.0 + i, dram_throughput_pct=0.5, smem_bank_conflicts=7e6 if i < 3 else 1.7e6,
                     instructions=9e6, registers_per_thread=64.0, stall_barrier=30.0 if i < 3 else 5.0,
                     stall_long_scoreboard=2.0, stall_wait=1.0)
                for i, kid in enumerate(v12_specs.LADDER)]

    def fake_ncu(out_rep, **kw):
        if not ncu:
            raise FileNotFoundError("ncu (Nsight Compute) not found on this machine")
        assert kw.get("sections") and "ncu_set" not in kw          # the book's sections, never --set full
        out_rep.write_bytes(b"fake report")
        return out_rep

    monkeypatch.setattr(m, "resources", lambda ids: {k: dict(kernel=k, registers=60, spill_stores=0) for k in ids})
    monkeypatch.setattr(m, "geometry", fake_geometry)
    monkeypatch.setattr(harness, "kernel", fake_kernel)
    monkeypatch.setattr(harness, "sdpa", fake_sdpa)
    monkeypatch.setattr(harness, "check_kernel", fake_check)
    monkeypatch.setattr(harness, "make_inputs",
                        lambda B, H, S, D=64, seed=0, S_kv=None: (torch.zeros(B, H, 1, 1),) * 3)
    monkeypatch.setattr(bench, "time_graph", lambda fn, launches_per_graph=20, samples=50, warmup=3, flush=False:
                        summarize([fn.us * 0.995, fn.us, fn.us * 1.005], launches_per_graph, "fake graph"))
    monkeypatch.setattr(sanitize, "run_jobs", fake_jobs)
    monkeypatch.setattr(profile, "ncu_profile", fake_ncu)
    monkeypatch.setattr(profile, "read_report", fake_report)
    monkeypatch.setattr(sass, "evidence", lambda spec, arch="sm_90": dict(HMMA=14, LDL=0))


def _measured_record(tmp_path, monkeypatch, **gpu) -> records.Record:
    """Chapter 1's real measure, on the faked GPU, into a record under tmp_path."""
    _fake_gpu(monkeypatch, **gpu)
    params = dict(v12.DEFAULTS, seqs=[128, 512], bhs=[1, 8, 64])
    run = records.Run(v12.NOTEBOOK, params=params, runs_dir=tmp_path, provenance=dict(PROV))
    v12.measure(run, params)
    return records.load(run.save())


TABLES = ("launch_table", "correctness_table", "sanitizer_table", "timing_table", "schedule_table", "ladder_table",
          "ladder_files_table", "alone_table", "step_latency_table", "both_orders_table", "ncu_table", "stall_table")
TEXTS = ("history_text", "design_text", "correctness_text", "race_text", "timing_text", "schedule_text",
         "ladder_intro_text", "sources_text", "explained_text", "estimate_text", "ncu_text", "stall_text",
         "lessons_text")
CHARTS = ("plot_schedule", "plot_ladder", "plot_estimate_vs_measured", "plot_stalls")


def _all_views(rec) -> dict:
    return dict(tables={n: getattr(v12, n)(rec, show=False) for n in TABLES},
                texts={n: getattr(v12, n)(rec) for n in TEXTS},
                charts={n: getattr(v12, n)(rec) for n in CHARTS})


def test_measure_writes_a_record_every_view_reads(tmp_path, monkeypatch):
    rec = _measured_record(tmp_path, monkeypatch)
    mission = {r["kernel"]: r for r in rec.rows(role="mission")}
    assert set(mission) == set(US)
    assert mission[SHORTCUT]["passed"] is False and mission[SHORTCUT]["median_us"]      # kept, timed, failing
    assert all(r["passed"] for k, r in mission.items() if k != SHORTCUT and not k.startswith("sdpa"))
    assert {r["kernel"] for r in rec.rows(role="drift")} == set(v12.SDPA)                # the peers, twice
    assert len(v12.sweep_rows(rec)) == 6 and all(r["role"] == "check" for r in v12.sweep_rows(rec))
    assert {r["B"] * r["H"] for r in rec.rows(role="schedule")} == {1, 64}
    assert rec.ext("tile") == [32, 48] and rec.ext("ncu_report") == "v12_ladder.ncu-rep"
    assert {r["kernel"] for r in rec["results"] if r.get("ncu_report")} == set(v12_specs.LADDER)
    views = _all_views(rec)
    for name, html in views["tables"].items():
        assert table_problems(html) == [], name
        assert not re.search(r"<td>(v12|sdpa)_\w+</td>", html), f"{name} shows a raw kernel id"
    for name, fig in views["charts"].items():
        assert chart_collisions(fig) == [], name
    logs = v12.sanitizer_logs(rec, show=False)
    assert "racecheck report of v12_no_4th_barrier" in logs and "predates" not in logs   # log_head of that run


def test_ladders_add_up_and_tables_say_what_the_record_says(tmp_path, monkeypatch):
    rec = _measured_record(tmp_path, monkeypatch)
    h = v12.headline(rec)
    assert h["v12_us"] == pytest.approx(1000.0) and h["x_cudnn"] == pytest.approx(100.0) and h["busy_ctas"] == 8
    for order in ("a", "b"):
        b = v12.breakdown(rec, order)
        assert sum(b.values()) == pytest.approx(1000.0)          # deltas + residual = total, exactly
        e = v12.explained(rec, order)
        assert e["explained"] == pytest.approx(0.975) and len(e["top"]) == 3
    assert v12.ladder(rec, "a")[1]["removed µs"] == pytest.approx(900.0)
    assert v12.ladder(rec, "b")[1]["removed µs"] == pytest.approx(600.0)
    assert v12.sweep_ok(rec)["passed"] == 6
    steps = {r["_id"]: r["steps per CTA"] for r in v12.step_latency(rec)}
    assert steps["v12_baseline"] == 176 and steps["v12_abl_1_grid"] == 11
    sched = {r["B·H"]: r for r in v12.schedule_rows(rec)}
    assert sched[64]["CTAs with work (v12)"] == 64 and sched[64]["_grid"] == pytest.approx(800.0)
    san = {(r["tool"], r["_id"]): r for r in v12.sanitizer_rows(rec)}
    assert san[("racecheck", SHORTCUT)]["errors"] == 1234 and san[("racecheck", SHORTCUT)]["verdict"] == "problems"
    assert all(san[(t, "v12_baseline")]["verdict"] == "clean" for t in ("memcheck", "racecheck", "synccheck",
                                                                       "initcheck"))
    r = v12.race_demo(rec)
    assert r["passed"] is False and r["racecheck_errors"] == 1234
    assert v12.drift(rec)["sdpa_cudnn"] == pytest.approx(10.0)
    assert v12.stall_table_rows(rec)[0]["stall reason"] == "barrier"


def test_prose_comes_from_the_record(tmp_path, monkeypatch):
    """The L4 figure is labelled as quoted history, THIS record's ratio is stated, and the branches follow the data."""
    rec = _measured_record(tmp_path, monkeypatch)
    hist = v12.history_text(rec)
    assert "quoted, not measured here" in hist and "50×" in hist and "100× cuDNN" in hist
    t = v12.timing_text(rec)
    assert "takes 0.66× that" in t and "no faster" not in t and "10.0× cuDNN" in t   # 1000 µs vs the L4's 1508
    assert "both catch the race" in v12.lessons_text(rec)
    assert "step that moves it most is **+ warp softmax**" in v12.stall_text(rec)
    assert "The biggest cost had no name" in v12.estimate_text(rec)
    assert "while B·H stays under the SM count" in v12.schedule_text(rec)


def test_prose_branches_when_v12_is_as_slow_as_on_the_l4(tmp_path, monkeypatch):
    rec = _measured_record(tmp_path, monkeypatch, scale=1.55)
    assert "— no faster." in v12.timing_text(rec)


def test_a_record_without_ncu_says_so(tmp_path, monkeypatch):
    rec = _measured_record(tmp_path, monkeypatch, ncu=False)
    assert "not found" in rec.ext("ncu_error")
    assert "no Nsight Compute report" in v12.ncu_table(rec, show=False)
    assert v12.stall_table(rec, show=False) == "" and v12.plot_stalls(rec) is None and v12.ncu_text(rec) == ""
    assert "Barriers are where the warps wait" not in v12.lessons_text(rec)


# ------------------------------------------------------------------------------------------------ H100 record
def _h100():
    try:
        return records.newest(v12.NOTEBOOK, device=H100)
    except records.RecordError:
        pytest.skip("no committed H100 record of chapter 1")


def test_committed_h100_record_replays():
    rec = _h100()
    assert v12.sweep_ok(rec)["passed"] == v12.sweep_ok(rec)["shapes"] == 15        # role "sweep" rows
    assert v12.explained(rec, "a")["explained"] >= 0.9
    assert not v12.race_demo(rec)["passed"] and v12.race_demo(rec)["racecheck_errors"] > 0
    assert all(r["verdict"] == "clean" for r in v12.sanitizer_rows(rec) if r["_id"] == "v12_baseline")
    assert "sdpa_cudnn" in v12.drift(rec)                                            # the old sdpa_after extra
    assert "predates" in v12.sanitizer_logs(rec, show=False)                         # no log_head then: said so
    views = _all_views(rec)
    for name, html in views["tables"].items():
        assert table_problems(html) == [], name
    for name, fig in views["charts"].items():
        assert chart_collisions(fig) == [], name
    assert "171× cuDNN" in v12.history_text(rec) and "— no faster." in v12.timing_text(rec)
    assert "**7.3 of 132 SMs**" in v12.ncu_text(rec)                                 # read from the committed report


# ------------------------------------------------------------------------------------------------ notebook
def _notebook():
    return nbformat.read(NOTEBOOKS_DIR / f"{v12.NOTEBOOK}.ipynb", 4)


def test_parameters_cell_parses_cleanly(caplog):
    import logging

    papermill = pytest.importorskip("papermill.inspection")
    with caplog.at_level(logging.WARNING):
        params = papermill.inspect_notebook(str(NOTEBOOKS_DIR / f"{v12.NOTEBOOK}.ipynb"))
    assert not [r for r in caplog.records if "parse" in r.getMessage().lower()]
    assert {"mode", "device", "B", "H", "S", "D", "seqs", "bhs", "runs", "samples"} == set(params)
    assert params["device"]["default"] == "None"


def test_only_the_chapter_call_shows_its_source():
    code = [c for c in _notebook().cells if c.cell_type == "code"]
    shown = [c for c in code if "remove-input" not in c.metadata.get("tags", [])]
    assert len(shown) == 1 and "book.chapter(" in shown[0].source
    assert "parameters" in code[0].metadata["tags"]
    assert all(len(line) <= 66 for line in shown[0].source.splitlines())
    markdown = "\n".join(c.source for c in _notebook().cells if c.cell_type == "markdown")
    assert not re.search(r"\d+(\.\d+)?\s*µs|fifty|\d+(\.\d+)?× (slower|faster|cuDNN|SDPA)", markdown), \
        "a measured number typed into the prose"


def test_notebook_replays_a_measured_record_and_shows_every_figure(tmp_path, monkeypatch):
    rec = _measured_record(tmp_path / "runs", monkeypatch)
    page = run_notebook_in_replay(_notebook(), rec, monkeypatch, tmp_path)
    assert {p.stem for p in (tmp_path / "figures").glob("*.png")} == set(v12.FIGURES)
    assert "Replayed from a recorded run on Test GPU" in page and "All 6 shapes of the correctness sweep" in page
    for html in re.findall(r'<table class="flashcore-table">.*?</table>', page, re.S):
        assert table_problems(html) == []
