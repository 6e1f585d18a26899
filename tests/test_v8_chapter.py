"""The v8 chapter on CPU: the ladder's registry rules, and every table/chart on a synthetic record (made-up numbers,
never shown in the book)."""
import re

import pytest

from flashcore import kernels, records
from flashcore.chapters import v8

PROV = dict(gpu="Test GPU", gpu_slug="test-gpu", sm="sm_90", driver="0", cuda="13.0", torch="x", cupy="x",
            commit="1" * 40, dirty=False, date="2026-01-01T00:00:00+00:00", command="pytest",
            notebook="03_v8_optimization")
WMMA_STEPS = ["v8_seed", "v8_01_vec_async", "v8_02_swizzle", "v8_03_exp2_fewer_barriers", "v8_04_grid_132sm"]


@pytest.fixture(autouse=True)
def _figures_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("FLASHCORE_FIGURES_DIR", str(tmp_path / "figures"))


# --------------------------------------------------------------------------------------------- registry rules
def test_step_ids_follow_the_naming_rule():
    ids = v8.step_ids()
    assert ids[0] == "v8_seed"
    assert ids[1:] == sorted(ids[1:])
    assert all(re.fullmatch(r"v8_\d\d_\w+", i) for i in ids[1:])
    assert ids[:5] == WMMA_STEPS          # later steps (v8_05 …) may follow


def test_parent_chain_and_predictions():
    """The WMMA steps form one chain from the seed; every later step's parent is an earlier registered step."""
    ids = v8.step_ids()
    assert kernels.get("v8_seed").parent is None
    for prev, cur in zip(WMMA_STEPS, WMMA_STEPS[1:]):
        assert kernels.get(cur).parent == prev, f"{cur}'s parent is {kernels.get(cur).parent}, expected {prev}"
    for n, i in enumerate(ids[1:], start=1):
        spec = kernels.get(i)
        assert spec.parent in ids[:n], f"{i}'s parent {spec.parent} is not an earlier v8 step"
    for i in ids:
        spec = kernels.get(i)
        assert spec.predicted_us and spec.predicted_us > 0, f"{i} has no predicted_us"
        assert spec.chapter == v8.CHAPTER
        assert spec.idea


def test_headers_state_the_prediction():
    for i in WMMA_STEPS:
        spec = kernels.get(i)
        head = spec.path.read_text()[:3000]
        assert f"{spec.predicted_us:g} µs" in head, f"{spec.source} header does not state {spec.predicted_us} µs"
        assert "ncu" in head


def test_step_selection():
    assert v8.step_ids("v8_seed,v8_02_swizzle") == ["v8_seed", "v8_02_swizzle"]
    with pytest.raises(KeyError):
        v8.step_ids("v8_99_nope")


def test_smem_layout_matches_seed_description():
    from flashcore.specs.v8 import SEED_SMEM
    assert 48 * 1024 < SEED_SMEM < 51 * 1024     # designs.md: 49.5 KB


# --------------------------------------------------------------------------------------------- from a record
def _record(tmp_path, with_triton=True):
    from flashcore.bench import summarize

    run = records.Run(v8.NOTEBOOK, runs_dir=tmp_path, provenance=dict(PROV))
    ladder = []
    us = [80.0, 70.0, 60.0, 25.0, 20.0]
    for n, (i, u) in enumerate(zip(WMMA_STEPS, us)):
        parent = WMMA_STEPS[n - 1] if n else None
        ladder.append(dict(id=i, parent=parent, predicted_us=30.0 - 4 * n, idea="an idea", source=f"{i}.cu",
                           moving=v8.MOVING[i], threads=384))
        run.add_result(i, 1, 8, 512, 64, timing=summarize([u] * 5, 20, "graph"), role="mission", passed=True,
                       tflops=1.0, predicted_us=30.0 - 4 * n, parent=parent)
        for s in (1000, 128):
            run.add_result(i, 1, 8, s, 64, role="check", passed=True, max_abs_err=1e-4)
    peers = [("sdpa_cudnn", 9.5), ("sdpa_flash", 10.0)] + ([("triton_attention", 6.0)] if with_triton else [])
    for name, u in peers:
        run.add_result(name, 1, 8, 512, 64, timing=summarize([u] * 5, 20, "graph"), role="mission", tflops=2.0)
    ncu = {}
    for n, i in enumerate(WMMA_STEPS):
        ncu[i] = dict(duration_us=100.0 - 10 * n, smem_bank_conflicts=1000.0 / (n + 1), grid_size=88 + 10 * n,
                      stall_barrier=5.0 - n, stall_long_scoreboard=3.0, stall_mio_throttle=1.0 * n,
                      sm_throughput_pct=10.0 * n, registers_per_thread=56)
    run.extra.update(mission=[1, 8, 512, 64], big=[4, 16, 4096, 64], best="v8_04_grid_132sm", steps=WMMA_STEPS,
                     ladder=ladder, ncu=ncu, ncu_reports={}, sass={i: dict(HMMA=12, LDGSTS=24, BAR=5) for i in
                                                                     WMMA_STEPS},
                     sanitizer_verdicts=[dict(tool=t, kernel=i, clean=True) for t in ("memcheck", "racecheck")
                                         for i in WMMA_STEPS],
                     sweep=[dict(kernel=k, B=1, H=8, S=s, D=64, median_us=1.0 * s, p10_us=1.0, p90_us=1.0,
                                 tflops=float(s), big=False) for k in ("v8_04_grid_132sm", "sdpa_cudnn")
                            for s in (128, 256)] +
                     [dict(kernel=k, B=4, H=16, S=4096, D=64, median_us=100.0, tflops=t, big=True)
                      for k, t in (("sdpa_cudnn", 400.0), ("v8_04_grid_132sm", 100.0))])
    return records.load(run.save())


def test_tables(tmp_path):
    pytest.importorskip("pandas")
    rec = _record(tmp_path)
    lad = v8.ladder_table(rec)
    assert list(lad.index) == WMMA_STEPS
    assert lad.loc["v8_04_grid_132sm", "× cuDNN"] == pytest.approx(20.0 / 9.5)
    assert lad.loc["v8_04_grid_132sm", "× Triton"] == pytest.approx(20.0 / 6.0)
    assert lad.loc["v8_01_vec_async", "speed-up vs parent"] == pytest.approx(80.0 / 70.0)
    assert lad.loc["v8_01_vec_async", "shapes passed"] == "3/3"
    assert bool(lad.loc["v8_02_swizzle", "racecheck"]) is True
    m = v8.metric_table(rec)
    assert m.loc["v8_02_swizzle", "metric"] == "smem_bank_conflicts"
    assert m.loc["v8_02_swizzle", "change"] == pytest.approx((1000 / 3) / (1000 / 2))
    assert v8.stall_table(rec).shape[0] == 5
    assert v8.sass_table(rec).loc["v8_seed", "HMMA"] == 12
    assert v8.big_table(rec).loc["v8_04_grid_132sm", "× cuDNN TFLOP/s"] == pytest.approx(0.25)
    h = v8.headline(rec)
    assert h["best_us"] == 20.0 and h["cudnn"] == 9.5 and h["triton"] == 6.0
    assert v8.peers_table(rec).loc["sdpa_flash", "median µs"] == 10.0
    assert len(v8.check_table(rec)) == 15


def test_charts_draw_from_record(tmp_path):
    pytest.importorskip("matplotlib")
    rec = _record(tmp_path, with_triton=False)
    for fn in (v8.plot_waterfall, v8.plot_moving_metrics, v8.plot_stalls, v8.plot_scaling):
        assert fn(rec) is not None
    assert v8.headline(rec)["triton"] is None
    assert (tmp_path / "figures" / "03_v8_waterfall.png").exists()


def test_defaults_are_mode_independent():
    for key in ("B", "H", "S", "D", "steps", "sweep_S"):
        assert key in v8.DEFAULTS
    assert v8.DEFAULTS["sweep_S"][0] == 128 and v8.DEFAULTS["sweep_S"][-1] == 16384
