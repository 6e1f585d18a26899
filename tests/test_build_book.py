"""scripts/build_book.py: notebook selection, the execution-status page, the headline placeholder (no GPU, no
papermill run: the functions are called directly on temporary folders)."""
import importlib.util
import re
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("build_book", ROOT / "scripts" / "build_book.py")
build_book = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_book)


def test_every_chapter_notebook_is_in_the_toc():
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = {c["file"] for part in toc["parts"] for c in part["chapters"]}
    for nb in build_book.notebooks():
        assert f"book/chapters/{nb.stem}" in files, f"{nb.name} is executed but not in _toc.yml"


def test_only_rejects_unknown_notebooks():
    with pytest.raises(SystemExit, match="unknown notebook"):
        build_book.notebooks("00_method,99_nope")
    assert [p.stem for p in build_book.notebooks("00_method")] == ["00_method"]


def test_status_page_lists_failures_and_records(tmp_path, monkeypatch):
    monkeypatch.setattr(build_book, "GENERATED_DIR", tmp_path)
    (tmp_path / "status").mkdir()
    rec = sorted((ROOT / "runs").glob("*/*-00_method/run.json"))
    if not rec:
        pytest.skip("no committed method record")
    data = json.loads(rec[-1].read_text())
    side = dict(notebook="00_method", mode="replay", run_id=data["run_id"], gpu=data["provenance"]["gpu"],
                date=data["provenance"]["date"], commit=data["provenance"]["commit"], dirty=False,
                record=str(rec[-1].relative_to(ROOT)))
    (tmp_path / "status" / "00_method.json").write_text(json.dumps(side))
    page = build_book.write_status([dict(notebook="00_method", seconds=3.2, error=None),
                                    dict(notebook="01_v12_baseline", seconds=1.0, error="PapermillExecutionError: boom")],
                                   "replay").read_text()
    assert data["run_id"] in page and "replay" in page and "checks passed" in page
    assert "**failed**: PapermillExecutionError: boom" in page


def test_headline_placeholder(tmp_path, monkeypatch):
    monkeypatch.setattr(build_book, "GENERATED_DIR", tmp_path)
    build_book.ensure_headline()
    assert "no headline" in (tmp_path / "headline.md").read_text()


# ------------------------------------------------------------------------------------- one GPU per book
def _fake_record(runs: Path, slug: str, notebook: str, date: str, gpu: str = None) -> Path:
    """A minimal valid record (runs/<slug>/<stamp>-<notebook>/run.json)."""
    from flashcore import records

    run_id = date.replace("-", "").replace(":", "")[:15] + "Z-" + notebook
    prov = {f: None for f in records.PROVENANCE_FIELDS}
    prov.update(gpu=gpu or f"NVIDIA {slug.upper()}", notebook=notebook, date=date, commit="0" * 40, dirty=False)
    d = runs / slug / run_id
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps(dict(schema=1, run_id=run_id, provenance=prov, params={}, results=[],
                                                extra={}, files=[])))
    return d / "run.json"


STEMS = ["00_method", "04_results"]


def test_choose_gpu_default_is_the_newest_complete_set(tmp_path):
    for nb in STEMS:
        _fake_record(tmp_path, "h100", nb, "2026-11-25T20:00:00+00:00")
    _fake_record(tmp_path, "h200", "04_results", "2026-12-01T00:00:00+00:00")     # newer, but incomplete
    gpu, why = build_book.choose_gpu(None, tmp_path, STEMS)
    assert gpu == "h100" and "every chapter" in why
    _fake_record(tmp_path, "h200", "00_method", "2026-12-01T01:00:00+00:00")      # now complete, and newest
    assert build_book.choose_gpu(None, tmp_path, STEMS)[0] == "h200"
    assert build_book.choose_gpu("h100", tmp_path, STEMS) == ("h100", "chosen with --gpu (make book GPU=…)")
    with pytest.raises(SystemExit, match="no records of it; GPUs with records: h100, h200"):
        build_book.choose_gpu("a100", tmp_path, STEMS)


def test_choose_gpu_without_a_complete_set_takes_the_most_complete(tmp_path):
    _fake_record(tmp_path, "h100", "00_method", "2026-11-25T20:00:00+00:00")
    _fake_record(tmp_path, "h100", "04_results", "2026-11-25T20:00:00+00:00")
    _fake_record(tmp_path, "h200", "04_results", "2026-12-01T00:00:00+00:00")
    gpu, why = build_book.choose_gpu(None, tmp_path, STEMS + ["05_hopper"])
    assert gpu == "h100" and "2 of 3" in why and "stub" in why


def test_a_chapter_without_a_record_on_the_books_gpu_is_a_stub(tmp_path, monkeypatch):
    """The build's loop: no record of 04_results on h200 → a stub page naming the GPU and where records exist;
    the notebook is not executed."""
    runs, out, gen = tmp_path / "runs", tmp_path / "chapters", tmp_path / "generated"
    _fake_record(runs, "h200", "00_method", "2026-12-01T00:00:00+00:00")
    _fake_record(runs, "h100", "04_results", "2026-11-25T20:00:00+00:00")
    monkeypatch.setattr(build_book, "RUNS_DIR", runs)
    monkeypatch.setattr(build_book, "EXECUTED_DIR", out)
    monkeypatch.setattr(build_book, "GENERATED_DIR", gen)
    monkeypatch.setattr(build_book, "chapter_stems", lambda: STEMS)
    monkeypatch.setattr(build_book, "notebooks", lambda only=None: [build_book.NOTEBOOKS_DIR / "04_results.ipynb"])
    monkeypatch.setattr(build_book, "execute", lambda *a, **k: pytest.fail("a chapter without a record was executed"))
    monkeypatch.setenv("FLASHCORE_GPU", "h200")      # main() sets it for the notebooks; monkeypatch undoes it after
    assert build_book.main(["--mode", "replay", "--gpu", "h200", "--no-build"]) == 0
    import nbformat

    text = nbformat.read(str(out / "04_results.ipynb"), as_version=4).cells[0].source
    assert text.startswith("# ") and build_book.STUB_CLASS in text
    assert "`h200`" in text and "`h100`" in text and "make book GPU=h100" in text
    status = (gen / "status.md").read_text()
    assert "| stub |" in status and "no record on `h200`" in status
    assert "stub pages: 04_results" in (gen / "book_gpu.md").read_text()


def test_injected_parameters_are_hidden(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('mode = "replay"')])
    nb.cells[0].metadata["tags"] = ["injected-parameters"]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, str(path))
    build_book.hide_injected_parameters(path)
    assert "remove-cell" in nbformat.read(str(path), as_version=4).cells[0].metadata["tags"]


def _side(tmp_path, notebook, rec_path, **extra):
    data = json.loads(rec_path.read_text())
    side = dict(notebook=notebook, mode="replay", run_id=data["run_id"], gpu=data["provenance"]["gpu"],
                gpu_slug=rec_path.parent.parent.name, date=data["provenance"]["date"],
                commit=data["provenance"]["commit"], dirty=False, record=str(rec_path.relative_to(ROOT)))
    side.update(extra)
    (tmp_path / "status").mkdir(exist_ok=True)
    (tmp_path / "status" / f"{notebook}.json").write_text(json.dumps(side))
    return side


def test_status_page_names_the_gpu_once_and_keeps_cells_short(tmp_path, monkeypatch):
    monkeypatch.setattr(build_book, "GENERATED_DIR", tmp_path)
    rec = sorted((ROOT / "runs").glob("h100-80gb-hbm3/*-00_method/run.json"))
    if not rec:
        pytest.skip("no committed H100 method record")
    side = _side(tmp_path, "00_method", rec[-1])
    page = build_book.write_status([dict(notebook="00_method", seconds=3.2, error=None),
                                    dict(notebook="05_hopper", seconds=0.0, error=None, stub=True)],
                                   "replay", "h100-80gb-hbm3", "the default").read_text()
    head, table = page.split("| page |", 1)
    assert side["gpu"] in head and "`runs/h100-80gb-hbm3/`" in head
    assert side["gpu"] not in table.split("## Fuzz")[0], "the GPU is named once, above the table"
    stamp = side["run_id"].split("-")[0]
    assert f"{{download}}`{stamp} </{side['record']}>`" in page      # the short id links the full record
    assert "| stub |" in page and "no record on `h100-80gb-hbm3`" in page
    widths = [len(line.split("|")) for line in table.splitlines() if line.startswith("| [")]
    assert widths and all(w == 8 for w in widths), "six columns per row"


def test_book_gpu_statement_names_the_gpu_and_links_every_record(tmp_path, monkeypatch):
    monkeypatch.setattr(build_book, "GENERATED_DIR", tmp_path)
    recs = {nb: sorted((ROOT / "runs").glob(f"h100-80gb-hbm3/*-{nb}/run.json")) for nb in ("00_method", "04_results")}
    if not all(recs.values()):
        pytest.skip("no committed H100 records")
    sides = [_side(tmp_path, nb, paths[-1]) for nb, paths in recs.items()]
    text = build_book.write_book_gpu([dict(notebook=s["notebook"], seconds=1, error=None) for s in sides],
                                     "h100-80gb-hbm3", "the default").read_text()
    assert text.startswith(f"```{{container}} {build_book.BOOK_GPU_CLASS}")
    assert "NVIDIA H100 80GB HBM3" in text and "`runs/h100-80gb-hbm3/`" in text
    for s in sides:
        assert f"{{download}}`{s['notebook']} </{s['record']}>`" in text
    assert "Warning" not in text


# ------------------------------------------------------------------------------------------- notebooks
@pytest.mark.parametrize("nb", [p.name for p in build_book.notebooks()])
def test_parameters_cell_parses_without_warnings(nb, recwarn):
    """papermill must read every parameter of every notebook (it warns "Unable to parse line …" otherwise)."""
    import logging

    from papermill.inspection import inspect_notebook

    records_ = []
    handler = logging.Handler()
    handler.emit = records_.append
    logging.getLogger("papermill").addHandler(handler)
    try:
        params = inspect_notebook(str(build_book.NOTEBOOKS_DIR / nb))
    finally:
        logging.getLogger("papermill").removeHandler(handler)
    assert "mode" in params, f"{nb}: no `mode` parameter"
    bad = [r.getMessage() for r in records_ if r.levelno >= logging.WARNING]
    assert not bad, f"{nb}: papermill cannot parse its parameters cell: {bad}"


def test_narrative_and_parameter_cells_hide_their_source():
    """Cells that only call book.md / book.table, and parameters cells, carry remove-input (the page shows the
    result, not the Python)."""
    import nbformat

    for nb in build_book.notebooks():
        for i, cell in enumerate(nbformat.read(str(nb), as_version=4).cells):
            if cell.cell_type != "code":
                continue
            tags = cell.metadata.get("tags", [])
            lines = [ln for ln in cell.source.splitlines() if ln.strip() and not ln.strip().startswith("#")]
            narrative = lines and all(re.match(r"\s*(book\.md|book\.table)\(|\s*[\"'f)]", ln) for ln in lines) \
                and lines[0].lstrip().startswith("book.")
            if "parameters" in tags or narrative:
                assert {"remove-input", "remove-cell"} & set(tags), \
                    f"{nb.name} cell {i} shows its source: {cell.source[:80]!r}"


# ------------------------------------------------------------------------------------------ publishing
def test_pages_workflow_builds_the_replay_book_and_deploys_it():
    import subprocess

    import yaml

    path = ROOT / ".github" / "workflows" / "book.yml"
    wf = yaml.safe_load(path.read_text())
    on = wf.get("on", wf.get(True))                     # YAML 1.1 reads the bare key `on` as True
    assert "push" in on and "workflow_dispatch" in on
    assert wf["permissions"]["pages"] == "write" and wf["permissions"]["id-token"] == "write"
    assert wf["concurrency"]["group"]
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    runs = [s["run"] for s in build["steps"] if "run" in s]
    uses = [s.get("uses", "") for s in build["steps"]]
    replay = [r for r in runs if "make book" in r and "MODE=replay" in r or "--mode replay" in r]
    assert replay, f"no step builds the book in replay mode: {runs}"
    upload = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    assert any(u.startswith("actions/checkout") for u in uses)
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in deploy["steps"])
    # the step's command, as make resolves it (dry run: nothing executes), runs the replay build
    cmd = replay[0].split()
    dry = subprocess.run(["make", "-n"] + cmd[1:], cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "scripts/build_book.py --mode replay" in dry.stdout, dry.stdout


def test_make_passes_the_gpu_to_the_build():
    import subprocess

    dry = subprocess.run(["make", "-n", "book", "MODE=replay", "GPU=h100-80gb-hbm3"], cwd=ROOT, capture_output=True,
                         text=True)
    assert "scripts/build_book.py --mode replay --gpu h100-80gb-hbm3" in dry.stdout, dry.stdout


def test_error_summary_keeps_the_exception_line():
    err = ("PapermillExecutionError: \n---------------------------------------------------------------------------\n"
           "Exception encountered at \"In [5]\":\n-----\nKeyError                                  Traceback\n"
           "Cell In[5], line 2\n----> 2 rec['x']\n\nKeyError: 'x'\n")
    assert build_book.error_summary(err) == "KeyError: 'x'"
    assert len(build_book.error_summary("ValueError: " + "y" * 500)) == 200
