"""Page 6 (flashcore.chapters.gpus): the H100-vs-H200 model on synthetic and committed records, with the H200's
chapter-0 record missing (today) and present (a synthetic one, as the lead's live run will write it)."""
import json
import math
import shutil
from pathlib import Path

import pytest

from flashcore.chapters import gpus
from flashcore.chapters.gpus import model

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs"
H100, H200 = "h100-80gb-hbm3", "h200"


def _newest(slug, nb):
    found = sorted(RUNS.glob(f"{slug}/*-{nb}/run.json"))
    if not found:
        pytest.skip(f"no committed {nb} record of {slug}")
    return found[-1]


def _copy(src: Path, runs: Path) -> Path:
    dst = runs / src.parent.parent.name / src.parent.name / "run.json"
    dst.parent.mkdir(parents=True)
    shutil.copy(src, dst)
    return dst


@pytest.fixture
def runs_without_h200_method(tmp_path):
    for slug, nb in ((H100, "00_method"), (H100, "04_results"), (H200, "04_results")):
        _copy(_newest(slug, nb), tmp_path)
    return tmp_path


def _synthetic_h200_method(runs: Path, bw_factor=1.4, gemm_factor=1.0, launch_factor=1.0) -> Path:
    """The H100 chapter-0 record re-labelled as the H200's, with its ceilings scaled (a test fixture only)."""
    d = json.loads(_newest(H100, "00_method").read_text())
    d["run_id"] = "20991231T000000Z-00_method"
    d["provenance"].update(gpu="NVIDIA H200", gpu_slug=H200, date="2099-12-31T00:00:00+00:00")
    c = d["extra"]["ceilings"]
    c["copy_tbps"] *= bw_factor
    c["gemm_fp16_tflops"] *= gemm_factor
    c["empty_graph"]["median_us"] *= launch_factor
    path = runs / H200 / d["run_id"] / "run.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(d))
    return path


def test_missing_h200_method_record_is_named_and_ratios_still_shown(runs_without_h200_method):
    cmp = gpus.compare(H100, H200, runs_dir=runs_without_h200_method)
    assert len(cmp.missing) == 1 and "h200" in cmp.missing[0] and "00_method" in cmp.missing[0]
    assert not cmp.predicted and cmp.rows
    assert all("predicted" not in r and "shares" in r for r in cmp.rows)
    text = gpus.missing_text(cmp)
    assert "00_method" in text and "flashcore-stub" not in text          # the page is not a stub: ratios exist
    html = gpus.ratio_table(cmp, show=False)
    assert "—" in html and "nan" not in html.lower() and "None" not in html
    assert "waits for the missing chapter-0 record" in gpus.conclusion_text(cmp)


def test_prediction_with_both_method_records(runs_without_h200_method):
    _synthetic_h200_method(runs_without_h200_method, bw_factor=1.4)
    cmp = gpus.compare(H100, H200, runs_dir=runs_without_h200_method)
    assert cmp.missing == [] and cmp.predicted
    a, b = cmp.ceilings[H100], cmp.ceilings[H200]
    assert math.isclose(b.copy_tbps / a.copy_tbps, 1.4)
    for r in cmp.rows:
        s = r["shares"]
        # same SMs, same launch: only the bandwidth share moves, by 1/1.4
        expect = 1 - min(s["memory"], 1 - min(s["launch"], 1)) * (1 - 1 / 1.4)
        assert math.isclose(r["predicted"], expect, rel_tol=1e-9)
        assert r["predicted"] <= 1
    assert "0.71×" in gpus.model_text(cmp)                               # a purely bandwidth-bound kernel
    assert "predicts" in gpus.prediction_text(cmp)
    assert "The prediction holds for" in gpus.conclusion_text(cmp)


def test_model_arithmetic_on_a_pure_case():
    a = model.Ceilings("a", "A", "r", "p", copy_tbps=2.0, gemm_tflops=700, exp2_per_s=4e12, launch_us=2.0, l2_bytes=1)
    b = model.Ceilings("b", "B", "r", "p", copy_tbps=3.0, gemm_tflops=700, exp2_per_s=4e12, launch_us=1.0, l2_bytes=1)
    assert math.isclose(model.predicted_ratio(dict(launch=0, memory=1.0), a, b), 2 / 3)
    assert math.isclose(model.predicted_ratio(dict(launch=1.0, memory=0.5), a, b), 0.5)      # launch first, capped
    assert math.isclose(model.predicted_ratio(dict(launch=0, memory=0), a, b), 1.0)
    assert model.bound_by(dict(launch=0.1, memory=0.6, tensor=0.2, exp=0.1)) == "memory"
    assert model.bound_by(dict(launch=0.3, memory=0.2, tensor=0.2, exp=0.1)) == "latency"
    fl = model.floors(a, (1, 8, 512, 64))
    assert math.isclose(fl["memory"], 4 * 8 * 512 * 64 * 2 / 2e12 * 1e6)
    assert math.isclose(fl["tensor"], 4 * 8 * 512 * 512 * 64 / 700e12 * 1e6)


def test_a_ratio_inside_the_in_record_spread_is_a_tie(runs_without_h200_method):
    cmp = gpus.compare(H100, H200, runs_dir=runs_without_h200_method)
    assert cmp.noise > 0 and cmp.noise_from["run_id"]
    for r in cmp.rows:
        if abs(r["ratio"] - 1) <= cmp.noise or r["lo"] <= 1 <= r["hi"]:
            assert r["change"] == "tie"
        else:
            assert r["change"] == ("less time" if r["ratio"] < 1 else "more time")


def test_no_chapter_4_record_makes_a_stub_page(tmp_path):
    _copy(_newest(H100, "04_results"), tmp_path)
    cmp = gpus.compare(H100, H200, runs_dir=tmp_path)
    assert not cmp.rows and len(cmp.missing) == 3
    assert "flashcore-stub" in gpus.missing_text(cmp)
    assert gpus.plot_mission(cmp) is None and gpus.plot_sweep(cmp) is None


def test_charts_are_drawn_under_their_figure_names(runs_without_h200_method, tmp_path, monkeypatch):
    monkeypatch.setenv("FLASHCORE_FIGURES_DIR", str(tmp_path / "figures"))
    _synthetic_h200_method(runs_without_h200_method)
    cmp = gpus.compare(H100, H200, runs_dir=runs_without_h200_method)
    gpus.plot_mission(cmp)
    gpus.plot_sweep(cmp)
    assert sorted(p.stem for p in (tmp_path / "figures").glob("*.png")) == sorted(gpus.FIGURES)


def test_not_a_chapter_of_the_one_gpu_book():
    """The page reads two GPUs by design: registering it as a chapter would make book_gpu() demand a 06_gpus
    record of every GPU."""
    from flashcore.chapters import CHAPTERS

    assert gpus.NOTEBOOK not in CHAPTERS
    assert set(gpus.SOURCES) <= set(CHAPTERS)
