"""The results chapter's functions on a synthetic record (numbers made up here, never shown in the book)."""
import pytest

from flashcore import records
from flashcore.chapters import results

PROV = dict(gpu="Test GPU", gpu_slug="test-gpu", sm="sm_90", driver="0", cuda="13.0", torch="x", cupy="x",
            commit="1" * 40, dirty=False, date="2026-01-01T00:00:00+00:00", command="pytest", notebook="04_results")


@pytest.fixture(autouse=True)
def _figures_elsewhere(tmp_path, monkeypatch):
    """Synthetic charts must never land in the committed figures/ folder."""
    monkeypatch.setenv("FLASHCORE_FIGURES_DIR", str(tmp_path / "figures"))


def _record(tmp_path, with_triton=True):
    run = records.Run("04_results", runs_dir=tmp_path, provenance=dict(PROV))
    from flashcore.bench import summarize

    def add(kernel, us, S=512, **kw):
        run.add_result(kernel, 1, 8, S, 64, timing=summarize([us] * 5, 20, "graph"), tflops=1.0, **kw)

    for k, us in [("v12_baseline", 900.0), ("v8_seed", 50.0), ("flashcore", 5.0), ("sdpa_cudnn", 10.0),
                  ("sdpa_flash", 11.0)]:
        add(k, us, lines_of_code=100, passed=True)
    if with_triton:
        add("triton_attention", 6.0, lines_of_code=40)
    run.extra.update(mission=[1, 8, 512, 64], big=[4, 16, 4096, 64], best="flashcore",
                     journey=["v12_baseline", "v8_seed", "flashcore"],
                     sweep=[dict(kernel=k, B=1, H=8, S=s, D=64, median_us=1.0 * s, p10_us=1.0, p90_us=1.0,
                                 tflops=float(s)) for k in ("flashcore", "sdpa_cudnn") for s in (128, 256)])
    return records.load(run.save())


def test_code_lines_skips_comments(tmp_path):
    f = tmp_path / "k.cu"
    f.write_text("// header\n/* block\n comment */\nint a;\n\n  // note\nint b; // trailing\n")
    assert results.code_lines(f) == 2


def test_headline_and_table(tmp_path):
    pytest.importorskip("pandas")
    rec = _record(tmp_path)
    h = results.headline(rec)
    assert h["best_us"] == 5.0 and h["ratio_cudnn"] == 0.5 and h["triton_us"] == 6.0 and h["v12_us"] == 900.0
    table = results.summary_table(rec)
    assert table.loc["flashcore", "× cuDNN"] == 0.5


def test_charts_draw_from_record(tmp_path):
    rec = _record(tmp_path, with_triton=False)
    for fn in (results.plot_scaling, results.plot_loc):
        assert fn(rec) is not None
    assert results.headline(rec)["triton_us"] is None


def test_journey_ids_are_registered():
    from flashcore import kernels

    ids = results.journey_ids()
    assert all(kernels.get(i) for i in ids)
    assert ids == sorted(ids, key=ids.index)  # stable order: history first, flashcore last
    if "flashcore" in ids:
        assert ids[-1] == "flashcore"
