"""Chapter 3 (the v8 ladder) on a CPU: the ladder's registry rules and tree, the tie rule, every view on synthetic
records and on the committed H100 record, worklog sentences that agree with the numbers (also when the order flips),
both measures (ladder and variants) with the GPU faked — measure → record → every view → the notebook's
cells — and the variant sweep as data (registry-free specs that reproduce the registered kernels' launches; no
eval)."""
import dataclasses
import html
import importlib
import json
import re
from pathlib import Path

import pytest

from flashcore import book, kernels, records
from flashcore.chapters import v8
from flashcore.harness.bench import summarize
from flashcore.kernels import LaunchShape

v8_measure = importlib.import_module("flashcore.chapters.v8.measure")
v8_view = importlib.import_module("flashcore.chapters.v8.view")

ROOT = Path(__file__).resolve().parent.parent
H100 = ROOT / "runs" / "h100-80gb-hbm3" / "20261125T191325Z-03_v8_optimization"
H200_RESULTS = ROOT / "runs" / "h200" / "20261130T234832Z-04_results"
NOTEBOOK = ROOT / "notebooks" / "03_v8_optimization.ipynb"
PROV = dict(gpu="Test GPU", gpu_slug="test-gpu", sm="sm_90", driver="0", cuda="13.0", torch="x", cupy="x",
            commit="1" * 40, dirty=False, date="2026-01-01T00:00:00+00:00", command="pytest",
            notebook="03_v8_optimization")
WMMA_STEPS = ["v8_seed", "v8_01_vec_async", "v8_02_swizzle", "v8_03_exp2_fewer_barriers", "v8_04_grid_132sm"]
MAX_COLUMNS = 7


@pytest.fixture(autouse=True)
def _figures_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("FLASHCORE_FIGURES_DIR", str(tmp_path / "figures"))


def _h100():
    if not (H100 / "run.json").exists():
        pytest.skip("the committed H100 record of chapter 3 is not in this checkout")
    return records.load(H100)


# --------------------------------------------------------------------------------------------- registry rules
def test_step_ids_follow_the_naming_rule():
    ids = v8.step_ids() if hasattr(v8, "step_ids") else v8_measure.step_ids()
    assert ids[0] == "v8_seed"
    assert ids[1:] == sorted(ids[1:]) and all(re.fullmatch(r"v8_\d\d_\w+", i) for i in ids[1:])
    assert ids[:5] == WMMA_STEPS
    assert v8_measure.step_ids("v8_seed,v8_02_swizzle") == ["v8_seed", "v8_02_swizzle"]
    with pytest.raises(KeyError):
        v8_measure.step_ids("v8_99_nope")


def test_every_rung_has_a_parent_a_prediction_and_a_header():
    ids = v8_measure.step_ids()
    for n, i in enumerate(ids):
        spec = kernels.get(i)
        assert spec.predicted_us and spec.predicted_us > 0 and spec.idea and spec.chapter == v8.NOTEBOOK
        assert (spec.parent is None) == (i == "v8_seed")
        assert spec.parent is None or spec.parent in ids[:n], f"{i}'s parent is not an earlier step"
        assert v8.header_text(i), f"{spec.source} opens with no header comment"
    assert kernels.get(v8.LIBRARY).parent in ids


def test_moving_metrics_are_tidy_ncu_metrics():
    from flashcore.tools import profile
    for kid, metrics in v8.MOVING.items():
        for m in metrics:
            assert m in profile.METRICS or m.startswith("stall_"), (kid, m)


# --------------------------------------------------------------------------------------------- synthetic records
# (made-up numbers, never shown in the book)
US = {"v8_seed": 80.0, "v8_01_vec_async": 70.0, "v8_02_swizzle": 60.0, "v8_03_exp2_fewer_barriers": 25.0,
      "v8_04_grid_132sm": 20.0, "v8_05_mma_registers": 8.0, "v8_06_cluster_splitkv": 9.5, "v8_07_dsmem_push": 8.02,
      "v8_08_kv_wait_split": 7.0, "flashcore": 6.0}
PARENT = {"v8_01_vec_async": "v8_seed", "v8_02_swizzle": "v8_01_vec_async",
          "v8_03_exp2_fewer_barriers": "v8_02_swizzle", "v8_04_grid_132sm": "v8_03_exp2_fewer_barriers",
          "v8_05_mma_registers": "v8_04_grid_132sm", "v8_06_cluster_splitkv": "v8_05_mma_registers",
          "v8_07_dsmem_push": "v8_06_cluster_splitkv", "v8_08_kv_wait_split": "v8_07_dsmem_push",
          "flashcore": "v8_07_dsmem_push"}


def _ncu(n, kid, us):
    return dict(duration_us=us * 1.4, instructions=1e6 * (1.3 if "06" in kid or "07" in kid else 1.0),
                issue_active_pct=30.0 - n, achieved_occupancy_pct=6.25 * (1 + (n > 5)), tensor_pipe_pct=2.0 * n,
                grid_size=64.0 * (1 + (n > 5)), sm_count=132.0, registers_per_thread=128.0,
                occupancy_limit_registers=4.0, smem_bank_conflicts=1000.0 / (n + 1), stall_barrier=5.0 - 0.4 * n,
                stall_long_scoreboard=3.0 if n != 6 else 6.0, stall_membar=1.5 if n >= 6 else 0.0,
                stall_wait=1.0, stall_selected=1.0, sm_throughput_pct=10.0 + n)


def _record(tmp_path, us=None, with_triton=True, with_flashcore_in_ladder=True, spread=0.005, ncu=True):
    """A chapter-3 record: the ladder (seed … 08, flashcore), the peers, a sweep with one repeated point."""
    us = dict(US, **(us or {}))
    run = records.Run(v8.NOTEBOOK, runs_dir=tmp_path, provenance=dict(PROV))
    ladder = []
    for n, kid in enumerate(us):
        parent = PARENT.get(kid)
        entry = dict(id=kid, parent=parent, predicted_us=us[kid] * 0.8, idea=f"idea {n}", source=f"{kid}.cu",
                     moving=v8.MOVING[kid][0], threads=128)
        if kid != "flashcore" or with_flashcore_in_ladder:
            ladder.append(entry)
        t = summarize([us[kid] * f for f in (0.998, 1.0, 1.002)], 20, "graph")
        run.add_result(kid, 1, 8, 512, 64, timing=t, role="mission", passed=True, max_abs_err=1e-4, tol=4e-4,
                       deterministic=True, tflops=1.0, parent=parent, predicted_us=us[kid] * 0.8, idea=f"idea {n}")
        for s in (1000, 128, 2048):
            run.add_result(kid, 1, 8, s, 64, role="check", passed=True, max_abs_err=1e-4, tol=4e-4,
                           deterministic=True)
    peers = [("sdpa_cudnn", 9.5), ("sdpa_flash", 10.0), ("sdpa_efficient", 20.0), ("sdpa_default", 9.5)]
    peers += [("triton_attention", 6.5)] if with_triton else []
    for name, u in peers:
        run.add_result(name, 1, 8, 512, 64, timing=summarize([u * 0.998, u, u * 1.002], 20, "graph"),
                       role="mission", tflops=2.0)
    sweep = []
    for S in (256, 512, 2048, 4096):
        for kid, base in (("flashcore", us["flashcore"]), ("sdpa_cudnn", 9.5), ("sdpa_flash", 10.0),
                          ("triton_attention", 6.5)):
            if kid == "triton_attention" and not with_triton:
                continue
            grow = (S / 512) ** 2 * (1.8 if kid == "flashcore" and S >= 2048 else 1.0)
            t = base * grow * (1 + spread if (kid, S) == ("sdpa_cudnn", 512) else 1.0)
            sweep.append(dict(kernel=kid, B=1, H=8, S=S, S_kv=S, D=64, median_us=t, p10_us=t * 0.999,
                              p90_us=t * 1.001, tflops=1e3 / t, big=False))
    sweep += [dict(kernel=k, B=4, H=16, S=4096, S_kv=4096, D=64, median_us=1e3 / tf, p10_us=1, p90_us=1, tflops=tf,
                   big=True) for k, tf in (("sdpa_cudnn", 400.0), ("flashcore", 250.0), ("sdpa_flash", 300.0))]
    run.extra.update(mission=[1, 8, 512, 64], big=[4, 16, 4096, 64], best="flashcore", steps=[k for k in us
                                                                                          if k != "flashcore"],
                     ladder=ladder, sweep=sweep,
                     ncu={k: _ncu(n, k, us[k]) for n, k in enumerate(us)} if ncu else {}, ncu_reports={},
                     sass={k: dict(HMMA=12, LDSM=8, LDGSTS=24, BAR=5, **{"MUFU.EX2": 5, "LDL": 0, "STL": 0})
                           for k in us},
                     sanitizer_verdicts=[dict(tool=t, kernel=k, clean=True) for t in ("memcheck", "racecheck")
                                         for k in us])
    return records.load(run.save())


def _cells(html_text: str) -> list:
    return [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", html_text)]


def _assert_readable(rows, where):
    assert rows, f"{where}: no rows"
    cols = list(rows[0])
    assert len(cols) <= MAX_COLUMNS, f"{where}: {len(cols)} columns"
    text = book.table(rows, show=False)
    for c in _cells(text):
        assert c.lower() not in ("nan", "none") and not c.startswith("("), f"{where}: cell {c!r}"


# --------------------------------------------------------------------------------------------- the tie rule
def test_compare_rows_tie_rule():
    a = dict(median_us=10.0, p10_us=9.9, p90_us=10.1)
    assert v8.compare_rows(a, dict(median_us=10.05, p10_us=10.0, p90_us=10.1), None)["verdict"] == "tie"  # overlap
    b = dict(median_us=10.3, p10_us=10.25, p90_us=10.35)
    assert v8.compare_rows(a, b, None)["verdict"] == "faster"
    assert v8.compare_rows(b, a, None)["verdict"] == "slower"
    c = v8.compare_rows(a, b, dict(frac=0.05, kernel="sdpa_cudnn", shape="B1 H8 S512"))
    assert c["verdict"] == "tie" and "cuDNN" in c["why"]                       # inside the repeat spread
    assert v8.compare_rows(a, None, None) is None


def test_repeat_spread_reads_the_repeated_point(tmp_path):
    rec = _record(tmp_path, spread=0.04)
    s = v8.repeat_spread(rec)
    assert s["kernel"] == "sdpa_cudnn" and s["frac"] == pytest.approx(0.04, rel=1e-6)


# --------------------------------------------------------------------------------------------- the tree
def test_tree_from_parent_fields(tmp_path):
    rec = _record(tmp_path)
    kids = v8.children(rec)
    assert set(kids["v8_07_dsmem_push"]) == {"v8_08_kv_wait_split", "flashcore"}
    assert v8.library_path(rec)[0] == "v8_seed" and v8.library_path(rec)[-1] == "flashcore"
    assert v8.dead_ends(rec) == ["v8_08_kv_wait_split"]
    lines = v8.tree_lines(rec)
    assert len(lines) == len(v8.rungs(rec)) + 1
    assert any("08 K/V waits split" in ln and "dead end" in ln for ln in lines)
    assert max(len(ln) for ln in lines) <= 80            # readable in the content column


def test_tree_on_the_h100_record_shows_both_branches_of_07():
    rec = _h100()
    kids = v8.children(rec)
    assert {"v8_08_kv_wait_split", "v8_09_two_mtiles", "flashcore"} <= set(kids["v8_07_dsmem_push"])
    assert set(v8.dead_ends(rec)) == {"v8_08_kv_wait_split", "v8_10_mbarrier_combine"}
    assert "flashcore" in v8.tree_md(rec)


# --------------------------------------------------------------------------------------------- every view
VIEW_ROWS = ("ladder_rows", "metric_rows", "ncu_rows", "stall_rows", "sass_rows", "check_rows", "after_rows",
             "peers_rows", "big_rows")


@pytest.mark.parametrize("flashcore_in_ladder", [True, False])
def test_every_view_on_a_synthetic_record(tmp_path, flashcore_in_ladder):
    rec = _record(tmp_path, with_flashcore_in_ladder=flashcore_in_ladder)
    assert [r["id"] for r in v8.rungs(rec)][-1] == "flashcore"    # rebuilt from its row in old records
    for name in VIEW_ROWS:
        _assert_readable(getattr(v8, name)(rec), name)
    for kid in US:
        assert "**Measured**" in v8.rung_md(rec, kid)
    for fn in (v8.summary_md, v8.tree_md, v8.after_md, v8.sanitizer_md, v8.conclusion_md):
        text = fn(rec)
        assert text and "None" not in text and "nan" not in text.lower()
    v8.plot_all(rec)
    for name in v8.FIGURES:
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 5000, name


def test_every_view_on_the_h100_record(tmp_path):
    rec = _h100()
    for name in VIEW_ROWS:
        _assert_readable(getattr(v8, name)(rec), name)
    for r in v8.rungs(rec):
        text = v8.rung_md(rec, r["id"])
        assert "**Measured**" in text and "Why the prediction" in text, r["id"]
    v8.plot_all(rec)
    for name in v8.FIGURES:
        assert (tmp_path / "figures" / f"{name}.png").exists()
    assert v8.check_summary(rec)["failed"] == []
    # the conclusion states where flashcore loses, from this record's sweep
    lo = v8.losses(rec)
    assert set(lo) == {"sdpa_cudnn", "sdpa_flash", "triton_attention"}
    text = v8.conclusion_md(rec)
    assert f"From S = {max(v['behind_from'] for v in lo.values())} on it is behind all 3" in text
    assert v8.variants_md(None, rec).startswith("*This GPU (NVIDIA H100 80GB HBM3) has no variants record yet")


def test_ladder_table_is_short_and_rounded(tmp_path):
    rec = _record(tmp_path)
    rows = v8.ladder_rows(rec)
    assert list(rows[0]) == ["rung", "predicted µs", "measured µs", "÷ predicted", "vs parent", "÷ cuDNN", "checks"]
    assert rows[0]["rung"] == "v8 seed" and rows[1]["vs parent"] == "1.14× faster"
    assert rows[0]["checks"] == "4/4"
    assert v8.fmt(77.04) == "77.0" and v8.fmt(7.955) == "7.96" and v8.fmt(1132.6) == "1,133" and v8.fmt(2) == "2"


def test_check_table_is_a_summary_and_a_dropdown(tmp_path, capsys):
    rec = _record(tmp_path)
    v8.show_checks(rec)
    out = capsys.readouterr().out
    n = len(v8.check_rows(rec))
    assert f"All {n} checks passed" in out and "<details" in out
    assert out.index("All") < out.index("<details")


# --------------------------------------------------------------------------------------------- worklog agrees
def _claimed(text: str, parent_label: str) -> str:
    if f"a tie with {parent_label}" in text:
        return "tie"
    if re.search(rf"faster than {re.escape(parent_label)} \(", text):
        return "faster"
    if re.search(rf"slower than {re.escape(parent_label)} \(", text):
        return "slower"
    return "none"


def _check_worklog_agrees(rec):
    for r in v8.rungs(rec):
        if not r.get("parent"):
            continue
        c = v8.compare(rec, r["id"], r["parent"])
        text = v8.rung_md(rec, r["id"])
        assert _claimed(text, v8.label(r["parent"])) == c["verdict"], (r["id"], c, text[:300])


def test_worklog_states_the_verdict_the_numbers_give(tmp_path):
    _check_worklog_agrees(_record(tmp_path))
    _check_worklog_agrees(_h100())


def test_worklog_follows_the_numbers_when_the_order_flips(tmp_path):
    """06 faster than 05 and 08 slower than 07 in this record: every sentence must say so."""
    a = _record(tmp_path / "a")
    b = _record(tmp_path / "b", us={"v8_06_cluster_splitkv": 6.5, "v8_08_kv_wait_split": 9.0})
    assert v8.compare(a, "v8_06_cluster_splitkv", "v8_05_mma_registers")["verdict"] == "slower"
    assert v8.compare(b, "v8_06_cluster_splitkv", "v8_05_mma_registers")["verdict"] == "faster"
    assert "slower than 05 mma.sync in registers (" in v8.rung_md(a, "v8_06_cluster_splitkv")
    assert "faster than 05 mma.sync in registers (" in v8.rung_md(b, "v8_06_cluster_splitkv")
    assert "slower than 07 DSMEM push (" in v8.rung_md(b, "v8_08_kv_wait_split")
    _check_worklog_agrees(b)
    after_a, after_b = v8.after_md(a), v8.after_md(b)
    assert after_a.startswith("On this record (Test GPU), 06 cluster split-KV is slower than 05")
    assert "06 cluster split-KV" not in after_b.split(";")[0] or "slower" not in after_b.split(";")[0]
    assert "06 cluster split-KV" in after_b and "are faster" in after_b
    # a report finding is written only for rungs that are slower: none are in b's comparison with 05 except 08
    assert "fence" not in after_b or "08" in after_b
    # the tree and the waterfall's verdicts follow the same flip
    assert any("06 cluster split-KV" in ln and "faster" in ln for ln in v8.tree_lines(b))


def test_h200_numbers_do_not_read_as_slower(tmp_path):
    """The H200's pre-consolidation timings (chapter 4's record) in a chapter-3 record: 07 and 08 were not slower
    than 05 there, and no sentence may say they were."""
    if not (H200_RESULTS / "run.json").exists():
        pytest.skip("the H200 chapter-4 record is not in this checkout")
    src = records.load(H200_RESULTS)
    run = records.Run(v8.NOTEBOOK, runs_dir=tmp_path, provenance=dict(PROV, gpu="NVIDIA H200"))
    ids = v8_measure.step_ids() + ["flashcore"]
    ladder = [v8_measure.ladder_entry(kernels.get(i)) for i in ids]
    for r in src["results"]:
        if (r["B"], r["H"], r["S"]) == (1, 8, 512) and r.get("median_us") and r["kernel"] in ids + list(v8.PEERS):
            run.add_result(r["kernel"], 1, 8, 512, 64, timing=summarize([r["p10_us"], r["median_us"], r["p90_us"]],
                                                                         20, "graph"),
                           role="mission", passed=r.get("passed"))
    run.extra.update(mission=[1, 8, 512, 64], steps=ids[:-1], ladder=ladder, sweep=src["extra"]["sweep"],
                     best="flashcore", big=[4, 16, 4096, 64])
    rec = records.load(run.save())
    for kid in ("v8_07_dsmem_push", "v8_08_kv_wait_split"):
        assert v8.compare(rec, kid, "v8_05_mma_registers")["verdict"] != "slower", kid
    text = v8.after_md(rec)
    slower_clause = text.split(";")[0]
    assert "07 DSMEM push" not in slower_clause and "08 K/V waits split" not in slower_clause, text
    assert "slower" not in v8.rung_md(rec, "v8_08_kv_wait_split").split("\n")[0]
    _check_worklog_agrees(rec)


# --------------------------------------------------------------------------------------------- measure, faked GPU
class _FakeLauncher:
    def __init__(self, spec, defines=()):
        self.spec, self.defines, self.num_sms = spec, tuple(defines), 132

    def plan(self, bh, seq_q, seq_kv):
        shape = LaunchShape(bh=bh, seq_q=seq_q, seq_kv=seq_kv, num_sms=self.num_sms)
        split = bool(self.spec.split(shape)) if self.spec.split else False
        return shape, split, tuple(self.spec.grid(shape)), (self.spec.threads, 1, 1), 0

    def __call__(self, q, k, v, o):
        return None


@pytest.fixture
def fake_gpu(monkeypatch):
    """The harness runs for real; the GPU calls (compile, check, clock, ncu, sanitizer, SASS) return made-up
    results. Each kernel's fake time comes from US (variants: by cluster and stages)."""
    torch = pytest.importorskip("torch")
    from flashcore.harness import bench, check as hcheck, measure as hm
    from flashcore.harness.check import CheckResult
    from flashcore.tools import profile, sanitize, sass

    def timed_fn(us):
        def fn():
            return None
        fn.us = us
        return fn

    def fake_kernel(kid, defines=()):
        return hm.Contender(kid, launch=lambda q, k, v, o: None,
                            timed=lambda q, k, v, o, u=US.get(kid, 8.5): timed_fn(u))

    def fake_check(fn, B, H, S, D=64, seed=0, runs=3, S_kv=None, scale=None, kernel=""):
        return CheckResult(kernel, B, H, S, S_kv or S, D, seed, 1e-4, 2e-4, 4.1e-4, True, True, runs, 0, 0)

    def fake_time(fn, launches_per_graph=20, samples=50, warmup=3, flush=False):
        u = getattr(fn, "us", 9.0)
        return summarize([u * 0.99, u, u * 1.01], launches_per_graph, "fake")

    def fake_sdpa(name, check=False):
        return hm.Contender(name, launch=lambda q, k, v, o: None,
                            timed=lambda q, k, v, o: timed_fn({"sdpa_cudnn": 9.5}.get(name, 10.0)), check=False)

    def fake_ncu(path, kernels=(), shapes="", sections=(), timeout=0, **kw):
        Path(path).write_bytes(b"fake report")
        fake_ncu.calls.append(dict(kernels=list(kernels), sections=tuple(sections), kw=kw))
        return Path(path)
    fake_ncu.calls = []

    def fake_read(path):
        return [dict(_ncu(n, k, US.get(k, 9.0)), launch_label=f"{k} 1,8,512,64")
                for n, k in enumerate(fake_ncu.calls[-1]["kernels"])]

    def fake_sanitizer(tool, ids, shapes, timeout=600, extra=()):
        return dict(tool=tool, kernels=list(ids), shapes=shapes, clean=True, errors=0, warnings=0, exit_code=0,
                    timed_out=False, finished=True, summary="ERROR SUMMARY: 0 errors", log_tail="", log_head="",
                    per_launch=[dict(kernel=k, shape=s, problems=0, first="", kinds=[], frames=[])
                                for k in ids for s in shapes.split(";")])

    def fake_variant_launcher(spec, defines=()):
        return _FakeLauncher(spec, defines)

    def fake_variant_us(v):
        return 6.0 + 0.3 * abs(v.cluster - 2) + 0.2 * abs(v.stages - 3) + (1.0 if "09" in v.base else 0.0)

    real_variant_contender = v8_measure.variant_contender

    def variant_contender(v):
        c = real_variant_contender(v)
        return dataclasses.replace(c, timed=lambda q, k, v_, o, u=fake_variant_us(v): timed_fn(u))

    monkeypatch.setattr(hm, "kernel", fake_kernel)
    monkeypatch.setattr(hm, "check_kernel", fake_check)
    monkeypatch.setattr(hcheck, "check_kernel", fake_check)
    monkeypatch.setattr(hm, "make_inputs", lambda *a, **kw: (torch.zeros(1), torch.zeros(1), torch.zeros(1)))
    monkeypatch.setattr(bench, "time_graph", fake_time)
    monkeypatch.setattr(hm, "sdpa", fake_sdpa)
    monkeypatch.setattr(hm, "triton", lambda check=True: fake_kernel("triton_attention"))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **kw: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda *a, **kw: None)
    monkeypatch.setattr(profile, "ncu_profile", fake_ncu)
    monkeypatch.setattr(profile, "read_report", fake_read)
    monkeypatch.setattr(sanitize, "run_sanitizer", fake_sanitizer)
    monkeypatch.setattr(sass, "evidence", lambda spec, arch="sm_90": dict(HMMA=64, LDSM=16, LDGSTS=8, BAR=2,
                                                                          LDL=0, STL=0, **{"MUFU.EX2": 16}))
    monkeypatch.setattr(v8_measure, "load_kernel", fake_variant_launcher)
    monkeypatch.setattr(v8_measure, "variant_contender", variant_contender)
    return dict(ncu=fake_ncu)


def _measure(tmp_path, fn, notebook, params):
    run = records.Run(notebook, runs_dir=tmp_path, provenance=dict(PROV, notebook=notebook), params=params)
    fn(run, params)
    return records.load(run.save())


def test_ladder_measure_writes_a_record_every_view_reads(tmp_path, fake_gpu):
    rec = _measure(tmp_path, v8.measure, v8.NOTEBOOK, dict(v8.DEFAULTS, samples=10))
    ids = [r["id"] for r in v8.rungs(rec)]
    assert ids == v8_measure.step_ids() + ["flashcore"]
    assert not rec["extra"].get("errors"), rec["extra"].get("errors")
    for kid in ids:
        row = v8.mission_row(rec, kid)
        assert row["passed"] and row["median_us"] == pytest.approx(US.get(kid, 8.5)), kid
        assert row["parent"] == kernels.get(kid).parent and row["predicted_us"] == kernels.get(kid).predicted_us
        assert row["ncu_report"] == "ladder.ncu-rep"
        assert len([r for r in rec.rows(kernel=kid) if r.get("role") == "check"]) == 3     # tail, tiny, long
    assert {r["kernel"] for r in rec["results"] if r["kernel"].startswith("sdpa_")} == set(v8_measure.SDPA_PEERS)
    assert v8.mission_row(rec, "triton_attention")["passed"]
    # ncu: one process, the book's sections, never --set full
    from flashcore.tools import profile
    call = fake_gpu["ncu"].calls[0]
    assert call["sections"] == tuple(profile.BOOK_SECTIONS) and "ncu_set" not in call["kw"]
    assert set(rec["extra"]["ncu"]) == set(ids)
    # the sweep marks its large point; the sanitizer verdicts cover every tool and rung
    assert sum(r["big"] for r in rec["extra"]["sweep"]) == 4
    assert {(v["tool"], v["kernel"]) for v in rec["extra"]["sanitizer_verdicts"]} == {
        (t, k) for t in ("memcheck", "racecheck") for k in ids}
    assert set(rec["extra"]["phases_s"]) >= {"check and time", "scaling sweep", "sanitize", "ncu", "sass"}
    for name in VIEW_ROWS:
        _assert_readable(getattr(v8, name)(rec), name)
    for kid in ids:
        assert "**Measured**" in v8.rung_md(rec, kid)
    v8.plot_all(rec)
    assert v8.conclusion_md(rec) and v8.after_md(rec)


def test_variants_measure_writes_a_record_the_page_reads(tmp_path, fake_gpu):
    vrec = _measure(tmp_path, v8.measure_variants, v8.VARIANTS_NOTEBOOK, dict(v8.VARIANT_DEFAULTS, samples=10))
    entries = vrec.ext("variants")
    assert [e["id"] for e in entries if e["kind"] == "build"] == [v.id for v in v8.VARIANTS]
    assert {e["id"] for e in entries if e["kind"] == "registered"} == {"flashcore", "v8_07_dsmem_push"}
    shapes = v8.variant_shapes(vrec)
    assert shapes == [(1, 8, 512), (1, 8, 2048), (4, 16, 4096)]
    for e in entries:
        for sh in shapes:
            row = v8_view._vrow(vrec, e["id"], sh)
            assert row and row["passed"] and row["cluster"] == e["cluster"], (e["id"], sh)
            assert row["ctas"] > 0 and isinstance(row["split"], bool)
    # the launch each variant made: split at the mission shape, nobody split at B4 H16 S4096
    assert v8_view._vrow(vrec, "v8_07_dsmem_push@C2S3", shapes[0])["split"] is True
    assert v8_view._vrow(vrec, "v8_07_dsmem_push@C2S3", shapes[0])["ctas"] == 128
    assert not any(v8_view._vrow(vrec, e["id"], shapes[2])["split"] for e in entries)
    # checks at the extra shapes (tail, tiny, cross)
    cross = [r for r in vrec["results"] if r.get("role") == "check" and r["S"] != r["S_kv"]]
    assert len(cross) == len(entries)
    # the registered v8_07 is the same code as its build: the two rows give the record's repeat spread
    assert v8_view._vrow(vrec, "v8_07_dsmem_push", shapes[0])["same_code_as"] == "v8_07_dsmem_push@C4S2"
    assert v8.repeat_spread(vrec) is not None
    rows = v8.variant_rows(vrec)
    _assert_readable(rows, "variant_rows")
    assert len(rows) == len(entries)
    assert rows[0]["variant"].startswith(("07 DSMEM push", "flashcore"))          # sorted by the mission time
    rec = _record(tmp_path / "ladder")
    text = v8.variants_md(vrec, rec)
    assert f"All {len(entries)} variants passed" in text and "the fastest variant is" in text
    assert "no variant splits the keys" in text
    assert "The last choice." in v8.conclusion_md(rec, vrec)


def test_variant_verdict_follows_the_numbers(tmp_path, fake_gpu, monkeypatch):
    """If a variant beats flashcore's point beyond the spread, the page says the sweep would choose differently."""
    real = v8_measure.variant_contender

    def faster_c8(v):
        c = real(v)
        if v.cluster == 8 and v.stages == 4:
            fn = c.timed(None, None, None, None)
            fn.us = 3.0
            return dataclasses.replace(c, timed=lambda q, k, v_, o: fn)
        return c
    monkeypatch.setattr(v8_measure, "variant_contender", faster_c8)
    vrec = _measure(tmp_path, v8.measure_variants, v8.VARIANTS_NOTEBOOK, dict(v8.VARIANT_DEFAULTS, samples=10))
    text = v8.variant_verdict(vrec)
    assert "the fastest variant is 07 DSMEM push" in text and "would choose differently" in text


def test_notebook_runs_in_replay_against_synthetic_records(tmp_path, fake_gpu, monkeypatch, capsys):
    """Measure both records (faked GPU), then run every code cell of the notebook in replay against them: with the
    variants record, and on a GPU that has none (the page says so in one line)."""
    import nbformat

    runs = tmp_path / "runs"
    _measure(runs, v8.measure, v8.NOTEBOOK, dict(v8.DEFAULTS, samples=10))
    _measure(runs, v8.measure_variants, v8.VARIANTS_NOTEBOOK, dict(v8.VARIANT_DEFAULTS, samples=10))
    real_newest = records.newest
    monkeypatch.setattr(records, "newest", lambda nb, device=None, runs_dir=None: real_newest(
        nb, device=device, runs_dir=runs_dir or runs))
    monkeypatch.setattr(book, "STATUS_DIR", tmp_path / "status")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])]
    params = dict(mode="replay", B=1, H=8, S=512, D=64, steps="all", sweep_S=v8.DEFAULTS["sweep_S"], samples=10,
                  variant_samples=10, device="test-gpu")
    scope = dict(params)
    for src in code:
        exec(compile(src, "<cell>", "exec"), scope)
    out = capsys.readouterr().out
    assert scope["variants"] is not None and "the fastest variant is" in out
    assert "Where it loses" in out and "What the ladder bought" in out
    for name in v8.FIGURES:
        assert (tmp_path / "figures" / f"{name}.png").exists(), name
    # the same page on a GPU with no variants record yet
    for p in runs.glob(f"*/*-{v8.VARIANTS_NOTEBOOK}/run.json"):
        p.unlink()
    scope = dict(params)
    for src in code:
        exec(compile(src, "<cell>", "exec"), scope)
    assert scope["variants"] is None
    assert "has no variants record yet" in capsys.readouterr().out


def test_variants_record_live_measures_and_saves_it(monkeypatch, tmp_path):
    """Live: the notebook's second call measures the variant sweep into its own record (no status page entry, no
    banner); replay: the record of the same GPU, or None."""
    calls = []
    monkeypatch.setattr(book, "resolve_mode", lambda mode: "live")
    monkeypatch.setattr(book, "chapter", lambda nb, **kw: calls.append((nb, kw)) or "the record")
    rec = _record(tmp_path)
    assert v8.variants_record(rec, mode="auto", params=dict(samples=7)) == "the record"
    (nb, kw), = calls
    assert nb == v8.VARIANTS_NOTEBOOK and kw["measure"] is v8.measure_variants and kw["mode"] == "live"
    assert kw["params"]["samples"] == 7 and kw["params"]["shapes"] == v8.VARIANT_DEFAULTS["shapes"]
    assert kw["show"] is False and kw["status"] is False
    monkeypatch.setattr(book, "resolve_mode", lambda mode: "replay")
    assert v8.variants_record(rec, mode="replay") is None
    assert set(v8.RECORDS) == {v8.NOTEBOOK, v8.VARIANTS_NOTEBOOK}


# --------------------------------------------------------------------------------------------- variants as data
SHAPES = [LaunchShape(*s) for s in ((8, 512, 512), (8, 1024, 1024), (8, 2048, 2048), (64, 4096, 4096),
                                    (1, 1, 1), (6, 77, 77), (8, 512, 1000), (2, 100, 300))]


def _define(path: Path, name: str) -> int:
    m = re.search(rf"#define {name} (\d+)", path.read_text())
    return int(m.group(1))


@pytest.mark.parametrize("kid", ["flashcore", "v8_07_dsmem_push"])
def test_registered_points_are_the_variants_they_claim(kid):
    """The variant the sweep labels as a registered kernel launches exactly as that kernel does, and the kernel's
    source has that cluster size and ring depth."""
    cluster, stages = v8_measure.REGISTERED_POINTS[kid]
    spec = kernels.get(kid)
    assert (_define(spec.path, "CLUSTER"), _define(spec.path, "STAGES")) == (cluster, stages)
    v = next(v for v in v8.VARIANTS if v.registered == kid)
    assert (v.cluster, v.stages) == (cluster, stages)
    vs = v8_measure.variant_spec(v)
    for s in SHAPES:
        assert vs.grid(s) == spec.grid(s) and bool(vs.split(s)) == bool(spec.split(s)), (kid, s)
    assert dict(v.defines) == {"CLUSTER": str(cluster), "STAGES": str(stages)}


def test_variant_specs_are_registry_free():
    before = {s.id for s in kernels.all_specs()}
    for v in v8.VARIANTS:
        spec = v8_measure.variant_spec(v)
        assert spec.id == v.id and spec.split.cluster == v.cluster and spec.parent == v.base
        for s in SHAPES:
            grid, split = spec.grid(s), spec.split(s)
            tiles = s.bh * -(-s.seq_q // spec.split.block_m)
            assert grid[0] % v.cluster == 0 and grid[0] >= tiles
            assert (grid[0] == v.cluster * tiles) == bool(split)
    assert {s.id for s in kernels.all_specs()} == before            # nothing was registered
    with pytest.raises(ValueError):
        v8_measure.variant_spec(v8.Variant("v8_05_mma_registers", 2, 3))    # no cluster to vary
    with pytest.raises(ValueError):
        v8_measure.variant_spec(v8.Variant("v8_07_dsmem_push", 3, 2))       # 3 does not divide 64 rows


def _have_nvcc():
    try:
        from flashcore.compile import find_nvcc
        find_nvcc()
        return True
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not _have_nvcc(), reason="nvcc not installed")
def test_every_variant_compiles_without_spills():
    from concurrent.futures import ThreadPoolExecutor

    from flashcore.compile import nvcc_compile

    def one(v):
        return v, nvcc_compile(v8_measure.variant_spec(v), defines=v.defines)

    with ThreadPoolExecutor(8) as ex:
        for v, rep in ex.map(one, v8.VARIANTS):
            assert rep.spill_stores == rep.spill_loads == rep.stack_bytes == 0, v.id
            unsplit, split = rep.smem_dynamic
            assert 0 < unsplit < split <= 227 * 1024, (v.id, rep.smem_dynamic)


def test_no_eval_and_no_sweep_script():
    for path in list((ROOT / "flashcore" / "chapters" / "v8").glob("*.py")):
        assert not re.search(r"\beval\(|\bexec\(", path.read_text()), path
    assert not (ROOT / "scripts" / "v8_mma_sweep.py").exists()
    assert not (ROOT / "scripts" / "explore" / "v8_mma_final.sh").exists()


# --------------------------------------------------------------------------------------------- the notebook
def test_notebook_parameters_and_hidden_inputs():
    import nbformat
    import papermill.inspection

    params = papermill.inspection.inspect_notebook(str(NOTEBOOK))
    assert set(params) == {"mode", "B", "H", "S", "D", "steps", "sweep_S", "samples", "variant_samples", "device"}
    assert params["device"]["default"] == "None"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        tags = c.metadata.get("tags", [])
        narrative = re.fullmatch(r"(book|v8)\.(md|table|show_\w+|downloads)\(.*\)\s*;?", c.source.strip(), re.S)
        if "parameters" in tags or narrative:
            assert "remove-input" in tags, c.source[:80]
    sources = "\n".join(c.source for c in nb.cells)
    for name in v8.FIGURES:                        # every chart in FIGURES is drawn by a cell of the notebook
        fn = name.replace("03_v8_", "plot_")
        assert f"v8.{fn}(rec)" in sources, name
    for rid in v8_measure.step_ids() + ["flashcore"]:   # every rung has its worklog section
        assert f'v8.show_rung(rec, "{rid}")' in sources, rid
    cited = set(re.findall(r"\{cite\}`([^`]+)`", sources))
    bib = (ROOT / "book" / "references.bib").read_text()
    for key in cited:
        assert re.search(rf"@\w+\{{{re.escape(key)},", bib), key
    terms = set(re.findall(r"\{term\}`(?:[^<`]*<)?([^>`]+)>?`", sources))
    glossary = (ROOT / "book" / "glossary.md").read_text()
    for t in terms:
        assert re.search(rf"^{re.escape(t)}$", glossary, re.M), t
