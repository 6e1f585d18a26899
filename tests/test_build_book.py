"""scripts/build_book.py: notebook selection, the execution-status page, the headline placeholder (no GPU, no
papermill run: the functions are called directly on temporary folders)."""
import importlib.util
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
