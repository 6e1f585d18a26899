"""Chapter 0 (method): the measure path on a CPU with the GPU faked → a record → every view → the notebook replayed;
the roof verdict computed from the record (and flipped by a record whose intensity is above the ridge); the committed
H100 record still replays; tables without NaN/None; charts without colliding or cut-off labels; the notebook's
parameters parse and its narrative cells hide their source. Numbers in the synthetic records are made up here and
never shown in the book."""
from __future__ import annotations

import logging
import re

import nbformat
import pytest

from flashcore import book, records
from flashcore.chapters import method
from flashcore.harness import bench
from flashcore.harness.bench import summarize
from flashcore.harness.check import CheckResult
from flashcore.paths import NOTEBOOKS_DIR

PROV = dict(gpu="Test GPU", gpu_slug="test-gpu", sm="sm_90", driver="0", cuda="13.0", torch="x", cupy="x",
            commit="1" * 40, dirty=False, date="2026-01-01T00:00:00+00:00", command="pytest",
            notebook=method.NOTEBOOK, num_sms=132, l2_bytes=50 << 20)
H100 = "h100-80gb-hbm3"
# made-up per-call µs of the fake GPU, per contender (the harness times what contender.timed returns)
FAKE_US = dict(sdpa_cudnn=9.0, sdpa_flash=10.0, sdpa_efficient=20.0, sdpa_default=9.1)
BAD_CELL_TEXT = re.compile(r"\b(NaN|nan|None)\b")


@pytest.fixture(autouse=True)
def _figures_elsewhere(tmp_path, monkeypatch):
    """Synthetic charts must never land in the committed figures/ folder."""
    monkeypatch.setenv("FLASHCORE_FIGURES_DIR", str(tmp_path / "figures"))


# ------------------------------------------------------------------------------------------------ chart checks
def chart_collisions(fig, pad: float = 1.0) -> list:
    """What a reader would see wrong in a chart: pairs of drawn texts whose boxes overlap, a drawn line (a roof, a
    reference line) crossing a text, and texts outside what ``savefig(bbox_inches="tight")`` keeps (cut off)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)              # plots.save closed the figure: lay it out again off-screen
    canvas.draw()
    renderer = canvas.get_renderer()
    hidden = set()                             # tick labels of ticks outside the view limits are never drawn
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            eps = (hi - lo) * 1e-6
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - eps <= tick.get_loc() <= hi + eps:
                    hidden.update({id(tick.label1), id(tick.label2)})
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in hidden]
    boxes = []
    for t in texts:
        b = t.get_window_extent(renderer)
        boxes.append((t.get_text(), (b.x0 + pad, b.y0 + pad, b.x1 - pad, b.y1 - pad)))
    problems = []
    saved = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)
    for text, (x0, y0, x1, y1) in boxes:
        if x0 < saved.x0 - 1 or x1 > saved.x1 + 1 or y0 < saved.y0 - 1 or y1 > saved.y1 + 1:
            problems.append((text, "cut off"))
    for i, (ta, a) in enumerate(boxes):
        for tb, b in boxes[i + 1:]:
            if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                problems.append((ta, tb))
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_linestyle() in ("None", "", " ") or not line.get_visible():
                continue
            pts = line.get_transform().transform(np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float))
            dense = (np.concatenate([np.linspace(p, q, 60) for p, q in zip(pts[:-1], pts[1:])]) if len(pts) > 1
                     else pts)
            for text, (x0, y0, x1, y1) in boxes:
                if ((dense[:, 0] > x0) & (dense[:, 0] < x1) & (dense[:, 1] > y0) & (dense[:, 1] < y1)).any():
                    problems.append((text, f"line {line.get_label()}"))
    return problems


def table_problems(html: str) -> list:
    """Cells a reader should never see: NaN, None, an empty cell, a Python tuple."""
    cells = re.findall(r"<td>(.*?)</td>", html)
    return [c for c in cells if BAD_CELL_TEXT.search(c) or not c.strip() or re.fullmatch(r"\(.*,.*\)", c)]


def test_chart_checker_catches_what_a_reader_would_see():
    """The checker itself must fail on a collision, a line through a label and a cut-off legend."""
    plt = pytest.importorskip("matplotlib.pyplot")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="diagonal")
    ax.text(0.5, 0.5, "on the line")
    ax.text(0.1, 0.9, "twice")
    ax.text(0.1, 0.9, "twice again")
    ax.add_artist(ax.legend(["a very long legend entry"], loc="upper left", bbox_to_anchor=(1.02, 1)))
    ax.legend(["second legend"], loc="lower left", bbox_to_anchor=(1.02, 0))
    found = chart_collisions(fig)
    assert ("twice", "twice again") in found
    assert any(t == "on the line" and w.startswith("line") for t, w in found)
    assert ("a very long legend entry", "cut off") in found
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ faked GPU
def _fake_gpu(monkeypatch, gemm_tflops=735.0, copy_tbps=2.4, exp_per_s=4.1e12, launch_us=1.4, ncu=True):
    """Every GPU call of chapter 0's measure returns made-up numbers; the harness's own check-then-time routine
    runs for real (only its check, clock and inputs are faked)."""
    import importlib

    import torch

    from flashcore.harness import measure as harness
    from flashcore.tools import profile

    m = importlib.import_module("flashcore.chapters.method.measure")   # the package exports the function as `measure`

    def timing(us, n=20, what="fake graph"):
        return summarize([us * 0.99, us, us * 1.01], n, what)

    monkeypatch.setattr(m, "gemm_ceiling", lambda: dict(gemm_fp16_tflops=gemm_tflops, gemm_method="fake"))
    monkeypatch.setattr(m, "copy_ceiling", lambda: dict(copy_tbps=copy_tbps, copy_method="fake"))
    monkeypatch.setattr(m, "exp2_ceiling", lambda: dict(exp2_per_s=exp_per_s, exp2_method="fake"))
    monkeypatch.setattr(m, "launch_ceilings", lambda samples: dict(
        empty_graph=timing(launch_us).row(), empty_events=timing(40.0, 1).row(), empty_loop=timing(20.0, 200).row()))
    monkeypatch.setattr(m, "device_facts", lambda: dict(sm_count=132, memory_clock_khz=2_619_000,
                                                        memory_bus_bits=5120, dram_theoretical_tbps=3.35))

    def fake_check(fn, B, H, S, D=64, seed=0, runs=3, S_kv=None, scale=None, kernel=""):
        return CheckResult(kernel, B, H, S, S_kv or S, D, seed, 1.8e-4, 1.8e-4, 3.7e-4, True, True, runs, 0, 0)

    def fake_sdpa(name, check=False):
        def timed(q, k, v, o):
            def call():
                return None
            call.us = FAKE_US[name] * (S_of(q) / 512) ** 2
            return call
        return harness.Contender(name, launch=lambda q, k, v, o: None, timed=timed, check=check)

    def S_of(q):
        return q.shape[2]

    def fake_graph(fn, launches_per_graph=20, samples=50, warmup=3, flush=False):
        return timing(getattr(fn, "us", 5.0) * (1.02 if flush else 1.0), launches_per_graph)

    monkeypatch.setattr(harness, "check_kernel", fake_check)
    monkeypatch.setattr(harness, "sdpa", fake_sdpa)
    monkeypatch.setattr(harness, "make_inputs", lambda B, H, S, D=64, seed=0, S_kv=None: (torch.zeros(B, H, S, D),) * 3)
    monkeypatch.setattr(m, "make_inputs", lambda B, H, S, D=64, seed=0, S_kv=None: (torch.zeros(B, H, S, D),) * 3)
    monkeypatch.setattr(bench, "time_graph", fake_graph)
    monkeypatch.setattr(bench, "time_events", lambda fn, samples=100, warmup=3: timing(getattr(fn, "us", 5) + 70, 1))
    monkeypatch.setattr(bench, "time_eager_loop", lambda fn, launches=200, samples=20, warmup=3: timing(60.0, 200))

    def fake_ncu(out_rep, **kw):
        if not ncu:
            raise FileNotFoundError("ncu (Nsight Compute) not found on this machine")
        out_rep.write_bytes(b"fake report")
        return out_rep

    monkeypatch.setattr(profile, "ncu_profile", fake_ncu)

    def fake_report(path):
        rows = [dict(launch_label=f"{n} 1,8,512,64", kernel_name=f"{n}_kernel", duration_us=FAKE_US[n] * 1.2)
                for n in FAKE_US]
        rows.append(dict(launch_label="sdpa_flash 1,8,512,64", kernel_name="combine", duration_us=2.0))
        rows.append(dict(launch_label="empty_kernel 1,1,1,1", kernel_name="empty", duration_us=2.0))
        return rows

    monkeypatch.setattr(profile, "read_report", fake_report)


def _measured_record(tmp_path, monkeypatch, **gpu) -> records.Record:
    """Chapter 0's real measure, on the faked GPU, into a record under tmp_path."""
    _fake_gpu(monkeypatch, **gpu)
    run = records.Run(method.NOTEBOOK, params=dict(method.DEFAULTS), runs_dir=tmp_path, provenance=dict(PROV))
    method.measure(run, dict(method.DEFAULTS))
    return records.load(run.save())


def _all_views(rec) -> dict:
    """Every table (HTML), sentence and chart the page shows, drawn from ``rec``."""
    tables = {f.__name__: f(rec, show=False) for f in (method.problem_table, method.floors_table,
                                                       method.backend_table, method.kernels_table,
                                                       method.timing_table)}
    texts = {f.__name__: f(rec) for f in (method.roof_text, method.backend_text, method.timing_text,
                                          method.roofline_text, method.ncu_note)}
    charts = {f.__name__: f(rec) for f in (method.plot_floors, method.plot_backends, method.plot_timing_methods,
                                           method.plot_roofline)}
    return dict(tables=tables, texts=texts, charts=charts)


def test_measure_writes_a_record_every_view_reads(tmp_path, monkeypatch):
    rec = _measured_record(tmp_path, monkeypatch)
    mission, big = method.shapes(rec)
    assert mission == (1, 8, 512, 64) and big == (4, 16, 4096, 64)
    assert {r["kernel"] for r in rec.rows(role="mission")} == set(bench.SDPA_BACKENDS)
    assert all(r["passed"] and r["max_abs_err"] is not None for r in rec.rows(role="mission"))    # checked
    assert all(r["passed"] is None and r["median_us"] for r in rec.rows(role="big"))            # timed only
    assert all(r["ncu_report"] == "sdpa_backends.ncu-rep" for r in rec.rows(role="mission"))
    assert set(rec.ext("ceilings")) >= {"gemm_fp16_tflops", "copy_tbps", "exp2_per_s", "empty_graph"}
    assert rec.ext("device")["dram_theoretical_tbps"] == 3.35
    assert set(rec.ext("timing_methods")) == {"sdpa_cudnn", "sdpa_flash", "empty_kernel"}
    views = _all_views(rec)
    for name, html in views["tables"].items():
        assert table_problems(html) == [], name
    for name, fig in views["charts"].items():
        assert chart_collisions(fig) == [], name
    assert views["texts"]["ncu_note"] == ""
    assert "combine" in method.kernels_table(rec, show=False)          # both kernels of a split-KV backend
    timing = {r["kernel"]: r for r in method.timing_rows(rec)}
    assert timing["FlashAttention-2 (SDPA)"]["ncu, base clocks"] == pytest.approx(10.0 * 1.2 + 2.0)


def test_a_record_without_ncu_says_so(tmp_path, monkeypatch):
    rec = _measured_record(tmp_path, monkeypatch, ncu=False)
    assert "base_clocks_error" in rec.ext("ncu_reports")
    assert "no Nsight Compute report" in method.ncu_note(rec) and "not found" in method.ncu_note(rec)
    views = _all_views(rec)
    assert "—" in views["tables"]["kernels_table"] and table_problems(views["tables"]["timing_table"]) == []


def test_roof_verdict_below_the_ridge(tmp_path, monkeypatch):
    """H100-like ceilings: ridge 735/2.4 ≈ 306 FLOP/B above the mission shape's 256: the bandwidth slope."""
    rec = _measured_record(tmp_path, monkeypatch, gemm_tflops=735.0, copy_tbps=2.4)
    r = method.roof(rec)
    assert r["intensity"] == 256 and r["ridge"] == pytest.approx(306.25) and r["side"] == "bandwidth"
    assert r["floors"]["memory"] > r["floors"]["tensor"]           # the floors agree with the ridge
    text = method.roof_text(rec)
    assert "below the ridge, on the bandwidth slope" in text and "compute roof" not in text
    assert "**306 FLOP/B**" in text and "**256 FLOP/B**" in text
    assert r["largest"] == "launch" and "launch floor" in text


def test_roof_verdict_flips_above_the_ridge(tmp_path, monkeypatch):
    """A GPU with twice the bandwidth: ridge 735/4.8 ≈ 153 FLOP/B, below 256 — the compute side, said so."""
    rec = _measured_record(tmp_path, monkeypatch, gemm_tflops=735.0, copy_tbps=4.8)
    r = method.roof(rec)
    assert r["side"] == "compute" and r["floors"]["tensor"] > r["floors"]["memory"]
    text = method.roof_text(rec)
    assert "under the compute roof" in text and "bandwidth slope" not in text
    assert text.index("tensor cores (GEMM rate) floor") < text.index("memory (copy bandwidth) floor")
    assert "on the bandwidth slope" not in method.roofline_text(rec).split("At B4")[0]
    assert chart_collisions(method.plot_roofline(rec)) == []


def test_largest_floor_other_than_launch_is_named(tmp_path, monkeypatch):
    rec = _measured_record(tmp_path, monkeypatch, launch_us=0.2)
    assert method.roof(rec)["largest"] == "memory"
    assert "Largest of all is the **memory (copy bandwidth) floor" in method.roof_text(rec)


# ------------------------------------------------------------------------------------------------ H100 record
def _h100():
    try:
        return records.newest(method.NOTEBOOK, device=H100)
    except records.RecordError:
        pytest.skip("no committed H100 record of chapter 0")


def test_committed_h100_record_replays():
    rec = _h100()
    r = method.roof(rec)
    assert r["intensity"] == 256 and 250 < r["ridge"] < 400 and r["side"] == "bandwidth"   # issue 12's slip
    assert "on the bandwidth slope" in method.roof_text(rec)
    views = _all_views(rec)
    for name, html in views["tables"].items():
        assert table_problems(html) == [], name
        assert "<td>sdpa_" not in html, f"{name} shows a raw kernel id"
    for name, fig in views["charts"].items():
        assert chart_collisions(fig) == [], name
    assert "cudnn" in views["tables"]["kernels_table"]          # read from the committed ncu report


# ------------------------------------------------------------------------------------------------ notebook
def _notebook():
    return nbformat.read(NOTEBOOKS_DIR / f"{method.NOTEBOOK}.ipynb", 4)


def test_parameters_cell_parses_cleanly(caplog):
    papermill = pytest.importorskip("papermill.inspection")
    with caplog.at_level(logging.WARNING):
        params = papermill.inspect_notebook(str(NOTEBOOKS_DIR / f"{method.NOTEBOOK}.ipynb"))
    assert not [r for r in caplog.records if "parse" in r.getMessage().lower()]
    assert set(params) == {"mode", "device", *method.DEFAULTS}
    assert params["device"]["default"] == "None" and params["mode"]["default"] == '"auto"'


def test_only_the_chapter_call_shows_its_source():
    code = [c for c in _notebook().cells if c.cell_type == "code"]
    shown = [c for c in code if "remove-input" not in c.metadata.get("tags", [])]
    assert len(shown) == 1 and "book.chapter(" in shown[0].source
    assert "parameters" in code[0].metadata["tags"]
    assert all(len(line) <= 66 for line in shown[0].source.splitlines())   # fits the page's code column


def run_notebook_in_replay(nb, rec, monkeypatch, tmp_path) -> str:
    """Execute a chapter notebook's code cells in this process against ``rec`` (replay), as papermill would with
    ``mode="replay"``; return everything the page printed (Markdown and HTML)."""
    out = []
    monkeypatch.setattr(records, "newest", lambda notebook, device=None, runs_dir=None: rec)
    monkeypatch.setattr(book, "STATUS_DIR", tmp_path / "status")
    monkeypatch.setattr(book, "_show_html", lambda text: out.append(text))
    monkeypatch.setattr(book, "md", lambda text: out.append(text))
    ns: dict = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        exec(compile(cell.source, "<cell>", "exec"), ns)
        if "parameters" in cell.metadata.get("tags", []):
            ns.update(mode="replay", device=rec.dir.parent.name)
    return "\n".join(out)


def test_notebook_replays_a_measured_record_and_shows_every_figure(tmp_path, monkeypatch):
    rec = _measured_record(tmp_path / "runs", monkeypatch)
    page = run_notebook_in_replay(_notebook(), rec, monkeypatch, tmp_path)
    figures = {p.stem for p in (tmp_path / "figures").glob("*.png")}
    assert figures == set(method.FIGURES)
    assert "Replayed from a recorded run on Test GPU" in page
    assert "on the bandwidth slope" in page
    for html in re.findall(r'<table class="flashcore-table">.*?</table>', page, re.S):
        assert table_problems(html) == []
