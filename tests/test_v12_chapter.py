"""Chapter 1 (v12): kernels compile without spills, variants share v12's body, and the chapter's tables and charts
work on a synthetic record (numbers made up here, never shown in the book); the committed record if there is one."""
from pathlib import Path

import pytest

from flashcore import kernels, records
from flashcore.chapters import v12
from flashcore.paths import KERNELS_DIR
from flashcore.specs import v12 as v12_specs

PROV = dict(gpu="Test GPU", gpu_slug="test-gpu", sm="sm_90", driver="0", cuda="13.0", torch="x", cupy="x",
            commit="1" * 40, dirty=False, date="2026-01-01T00:00:00+00:00", command="pytest", notebook=v12.NOTEBOOK)
MARKER = "// ---- v12 body:"


@pytest.fixture(autouse=True)
def _figures_elsewhere(tmp_path, monkeypatch):
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


def test_variants_share_the_v12_body():
    base = (KERNELS_DIR / "v12_baseline.cu").read_text()
    body = base[base.index(MARKER):]
    for f in sorted(KERNELS_DIR.glob("v12_*.cu")):
        text = f.read_text()
        assert text.lstrip().startswith("//"), f.name
        assert text[text.index(MARKER):] == body, f"{f.name}: body differs; run scripts/gen_variants.py"
        assert f"#define V12_ENTRY {f.stem}" in text


def test_geometry():
    s = kernels.LaunchShape(bh=8, seq_q=512, seq_kv=512, num_sms=132)
    assert kernels.get("v12_baseline").grid(s) == (132, 1, 1)
    assert kernels.get("v12_abl_1_grid").grid(s) == (16, 8, 1)
    assert kernels.get("v12_baseline").smem_bytes(s) == 39168
    assert kernels.get("v12_abl_4_prefetch").smem_bytes(s) == 39168 + 2 * 48 * 72 * 2
    assert v12.steps_per_cta("v12_baseline", 1, 8, 512, 132) == 16 * 11
    assert v12.steps_per_cta("v12_abl_1_grid", 1, 8, 512, 132) == 11


US = dict(v12_baseline=1000.0, v12_abl_1_grid=100.0, v12_abl_2_vec=80.0, v12_abl_3_softmax=30.0,
          v12_abl_4_prefetch=25.0, v12_only_vec=900.0, v12_only_softmax=400.0, v12_only_softmax_vec=300.0,
          v12_no_4th_barrier=990.0, sdpa_cudnn=10.0, sdpa_flash=11.0, sdpa_efficient=20.0, sdpa_default=10.0)


def _record(tmp_path):
    from flashcore.bench import summarize
    from flashcore.check import CheckResult

    run = records.Run(v12.NOTEBOOK, runs_dir=tmp_path, provenance=dict(PROV))
    for (B, H) in ((1, 1), (1, 8), (4, 16)):
        for S in (128, 512):
            c = CheckResult("v12_baseline", B, H, S, S, 64, 1, 1e-4, 1.5e-4, 3.1e-4, True, True, 3, 0, 0)
            run.add_result("v12_baseline", B, H, S, 64, check=c, role="sweep")
    for kid, us in US.items():
        bad = kid == "v12_no_4th_barrier"
        c = None if kid.startswith("sdpa") else CheckResult(kid, 1, 8, 512, 512, 64, 7, 0.3 if bad else 1e-4,
                                                             1.5e-4, 3.1e-4, not bad, not bad, 3, 0, 0)
        run.add_result(kid, 1, 8, 512, 64, check=c, timing=summarize([us] * 5, 2, "graph"), role="mission")
    for B, H in ((1, 1), (4, 16)):
        for kid in ("v12_baseline", "v12_abl_1_grid", "sdpa_cudnn"):
            run.add_result(kid, B, H, 512, 64, timing=summarize([US[kid]] * 5, 2, "graph"), role="schedule")
    clean = lambda tool, k: dict(tool=tool, kernels=[k], shapes="1,2,128,64", clean=k == "v12_baseline",
                                 errors=0 if k == "v12_baseline" else 7, warnings=0, exit_code=0, timed_out=False,
                                 finished=True, summary="s", log_tail="",
                                 per_launch=[dict(kernel=k, shape="1,2,128,64", problems=0 if k == "v12_baseline"
                                                  else 7, first="" if k == "v12_baseline" else "WAR hazard")])
    run.extra.update(shapes=dict(mission=[1, 8, 512, 64]), ladder=list(v12_specs.LADDER),
                     ladder_b=list(v12_specs.LADDER_B), alone=list(v12_specs.ALONE), num_sms=132,
                     grids={"v12_baseline": dict(grid=[132, 1, 1], block=[512, 1, 1], smem=39168)},
                     sanitizer=[clean(t, "v12_baseline") for t in ("memcheck", "racecheck", "synccheck", "initcheck")]
                     + [clean("racecheck", "v12_no_4th_barrier")], ncu_report="fake.ncu-rep")
    (run.dir / "fake.ncu-rep").write_text("not a report")
    return records.load(run.save())


def _fake_ncu_rows(path):
    rows = []
    for i, kid in enumerate(v12_specs.LADDER):
        rows.append(dict(launch_label=f"{kid} 1,8,512,64", duration_us=100.0 / (i + 1), grid_size=132.0,
                         sm_cycles_active_avg=10.0, elapsed_cycles=100.0, sm_count=132.0,
                         stall_barrier=30.0 / (i + 1), stall_long_scoreboard=2.0, stall_wait=1.0))
    return rows


def test_tables_add_up(tmp_path):
    pytest.importorskip("pandas")
    rec = _record(tmp_path)
    h = v12.headline(rec)
    assert h["v12_us"] == 1000.0 and h["x_cudnn"] == 100.0
    for order in ("a", "b"):
        b = v12.breakdown(rec, order)
        assert abs(sum(b.values()) - 1000.0) < 1e-9          # deltas + residual = total, exactly
        e = v12.explained(rec, order)
        assert abs(e["explained"] - 0.975) < 1e-9 and len(e["top"]) == 3
    assert v12.ladder(rec, "a").loc["v12_abl_1_grid", "removed µs"] == 900.0
    assert v12.ladder(rec, "b").loc["v12_only_softmax", "removed µs"] == 600.0
    assert v12.sweep_ok(rec)["passed"] == 6
    assert len(v12.correctness_table(rec)) == 6
    assert v12.timing_table(rec).loc["v12_baseline", "× cuDNN"] == 100.0
    assert v12.schedule_table(rec).loc[64, "CTAs with work (v12)"] == 64
    assert v12.step_latency(rec).loc["v12_baseline", "steps per CTA"] == 176
    assert len(v12.both_orders(rec)) == 5 and len(v12.alone_table(rec)) == 2
    san = v12.sanitizer_table(rec)
    assert san[san.kernel == "v12_baseline"].clean.all() and not san[san.kernel == "v12_no_4th_barrier"].clean.any()
    r = v12.race_demo(rec)
    assert r["passed"] is False and r["racecheck_errors"] == 7


def test_charts_and_ncu_tables(tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    rec = _record(tmp_path)
    monkeypatch.setattr(v12.profile, "read_report", _fake_ncu_rows)
    assert v12.ncu_table(rec).loc["v12_baseline", "≈ SMs busy"] == pytest.approx(13.2)
    st = v12.stall_table(rec)
    assert list(st.index)[0] == "barrier"
    for fn in (v12.plot_ladder, v12.plot_estimate_vs_measured, v12.plot_stalls):
        assert fn(rec) is not None
    assert (tmp_path / "figures" / "01_v12_ladder.png").exists()


def test_seed_estimate_is_quoted_history():
    assert sum(v12.SEED_ESTIMATE_L4_US.values()) == pytest.approx(1539.0)   # the assessment's own rows
    assert v12.SEED_MEASURED_L4_US == 1508.0


def test_committed_record_if_any():
    try:
        rec = records.newest(v12.NOTEBOOK)
    except records.RecordError:
        pytest.skip("no committed 01_v12_baseline record yet")
    pytest.importorskip("pandas")
    assert v12.sweep_ok(rec)["passed"] == v12.sweep_ok(rec)["shapes"]
    assert v12.explained(rec, "a")["explained"] >= 0.9
    assert not v12.race_demo(rec)["passed"]
    assert all(v12.sanitizer_table(rec).query("kernel == 'v12_baseline'").clean)
