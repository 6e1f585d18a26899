"""Execute every notebook with papermill, write the execution-status page, build the book — for ONE GPU.

    python scripts/build_book.py                         # mode=auto: live on a GPU host, replay elsewhere
    python scripts/build_book.py --mode replay           # CPU build from the committed records (`make test`)
    python scripts/build_book.py --mode replay --gpu h200          # the H200's records (`make book GPU=h200`)
    python scripts/build_book.py --mode live --no-build --only 01_v12_baseline   # GPU host: new records only

**One GPU per book.** A replay build shows the records of one GPU throughout, chosen by ``--gpu`` (a folder of
``runs/``; ``make book GPU=…``); by default the newest *complete* set — the GPU with a record of every chapter whose
newest record is the newest (:func:`flashcore.records.complete_devices`). The choice reaches every notebook as
``$FLASHCORE_GPU`` (:func:`flashcore.book.book_gpu` reads it), and the landing page says which GPU it is and links
each record (``book/generated/book_gpu.md``). A chapter with no record on that GPU is built as a short stub page
that says so, instead of failing the build. The one page that reads two GPUs by design is the GPU comparison
(``06_gpus``); its banner says so.

One execution path, papermill, for three reasons: the notebooks' ``parameters`` cell is the same interface a reader
uses to re-run a chapter on their GPU (``papermill notebooks/01_v12_baseline.ipynb out.ipynb -p S 1024``); each
notebook is executed and timed on its own, so the status page can say how long each took; and a failing cell
fails the build with the notebook and cell named. Jupyter Book then renders the executed copies
(``book/chapters/``, ``execute_notebooks: off``) with warnings as errors.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flashcore import records  # noqa: E402
from flashcore.paths import BOOK_DIR, NOTEBOOKS_DIR, RUNS_DIR  # noqa: E402

EXECUTED_DIR = BOOK_DIR / "chapters"
GENERATED_DIR = BOOK_DIR / "generated"
GPU_ENV = "FLASHCORE_GPU"
STUB_CLASS = "flashcore-stub"            # the browser tests recognise a stub page by it
BOOK_GPU_CLASS = "flashcore-book-gpu"    # ... and the landing page's statement of the build's GPU


# --------------------------------------------------------------------------------------------- notebooks
def notebooks(only=None) -> list:
    found = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        names = {n.strip() for n in only.split(",") if n.strip()}
        unknown = names - {p.stem for p in found}
        if unknown:
            raise SystemExit(f"--only: unknown notebook(s) {', '.join(sorted(unknown))}; known: "
                             f"{', '.join(p.stem for p in found)}")
        found = [p for p in found if p.stem in names]
    return found


def chapter_stems() -> list:
    """The notebooks that measure and record (flashcore.chapters.CHAPTERS), in the book's order."""
    from flashcore.chapters import CHAPTERS

    return list(CHAPTERS)


def title_of(nb: Path) -> str:
    """The notebook's first Markdown heading (what the table of contents shows)."""
    import nbformat

    for cell in nbformat.read(str(nb), as_version=4).cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return nb.stem


# ------------------------------------------------------------------------------------------ the book's GPU
def choose_gpu(requested: Optional[str] = None, runs_dir: Optional[Path] = None, stems=None) -> tuple:
    """(gpu slug, why): ``requested`` if runs/ has records of it; else the newest complete set; else — no GPU
    has a record of every chapter — the GPU with records of the most chapters (newest first), and the stub
    pages say what is missing."""
    runs_dir = runs_dir or RUNS_DIR
    stems = list(stems if stems is not None else chapter_stems())
    have = records.devices(runs_dir)
    if requested:
        if requested not in have:
            raise SystemExit(f"--gpu {requested}: runs/ has no records of it; GPUs with records: "
                             f"{', '.join(have) or 'none'}")
        return requested, "chosen with --gpu (make book GPU=…)"
    complete = records.complete_devices(stems, runs_dir)
    if complete:
        return complete[0], "the newest GPU with a record of every chapter (the default)"
    if not have:
        raise SystemExit(f"runs/ has no records at all: a replay build has nothing to show ({runs_dir})")
    count = {g: sum(1 for s in stems if has_record(s, g, runs_dir)) for g in have}
    newest = {g: max((r["provenance"].get("date", "") for r in records.all_records(runs_dir)
                      if r.dir.parent.name == g), default="") for g in have}
    best = max(have, key=lambda g: (count[g], newest[g]))
    return best, (f"no GPU has a record of every chapter; {best} has the most ({count[best]} of {len(stems)}), "
                  "so it is shown and the rest are stub pages")


def has_record(stem: str, gpu: str, runs_dir: Optional[Path] = None) -> bool:
    runs_dir = runs_dir or RUNS_DIR
    try:
        records.newest(stem, device=gpu, runs_dir=runs_dir)
        return True
    except records.RecordError:
        return False


def replaying(mode: str) -> bool:
    """Whether the notebooks of this build replay (mode replay, or auto on a machine without a GPU)."""
    if mode == "replay":
        return True
    if mode == "live":
        return False
    from flashcore.book import resolve_mode

    return resolve_mode("auto") == "replay"


def write_stub(nb: Path, gpu: str, runs_dir: Optional[Path] = None, out_dir: Optional[Path] = None) -> Path:
    """The executed copy of a chapter with no record on the book's GPU: one Markdown cell that says so."""
    import nbformat

    runs_dir = runs_dir or RUNS_DIR
    others = [g for g in records.devices(runs_dir) if has_record(nb.stem, g, runs_dir)]
    where = (f"Records of this chapter exist for: {', '.join(f'`{g}`' for g in others)} — build the book for one "
             f"of them (`make book GPU={others[0]}`) to read it." if others else
             "No GPU has a record of this chapter yet.")
    text = (f"# {title_of(nb)}\n\n"
            f"```{{container}} {STUB_CLASS}\n"
            f"**No record of this chapter on the GPU of this build (`{gpu}`).** This book shows one GPU's records "
            f"throughout, so this page is a stub. {where} On that GPU, run it live: "
            f"`python -m flashcore live {nb.stem}` or `make book` (notebook `notebooks/{nb.name}`).\n"
            f"```\n")
    out = (out_dir or EXECUTED_DIR) / nb.name
    out.parent.mkdir(parents=True, exist_ok=True)
    book_nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text)])
    book_nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(book_nb, str(out))
    return out


# ------------------------------------------------------------------------------------------- executing
def hide_injected_parameters(path: Path) -> None:
    """papermill adds an ``injected-parameters`` cell (``mode = "replay"``) after the parameters cell; the reader
    sees neither — the page's banner says how it was built."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    changed = False
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
            changed = True
    if changed:
        nbformat.write(nb, str(path))


def execute(nb: Path, mode: str, bar=None) -> dict:
    import papermill

    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    out = EXECUTED_DIR / nb.name
    cmd = f"papermill {nb.relative_to(ROOT)} {out.relative_to(ROOT)} -p mode {mode} (scripts/build_book.py)"
    os.environ["FLASHCORE_COMMAND"] = cmd
    t0 = time.time()
    error = None
    try:
        papermill.execute_notebook(str(nb), str(out), parameters=dict(mode=mode), kernel_name="python3",
                                   cwd=str(ROOT), progress_bar=False, log_output=False)
    except Exception as exc:   # papermill's error names the cell; keep going to report every notebook
        error = f"{type(exc).__name__}: {str(exc)[-1500:]}"
    if out.exists():
        hide_injected_parameters(out)
    seconds = time.time() - t0
    if bar is not None:
        bar.set_postfix_str(f"{nb.stem} {seconds:.0f}s {'FAILED' if error else 'ok'}")
    return dict(notebook=nb.stem, seconds=round(seconds, 1), error=error)


# ---------------------------------------------------------------------------------------- status page
def _results_line(sidecar: dict) -> str:
    """Pass/fail counts of the record a notebook used (read from the record itself)."""
    try:
        rec = records.load(ROOT / sidecar["record"])
    except Exception as exc:
        return f"record unreadable: {exc}"
    rows = [r for r in rec["results"] if r.get("passed") is not None]
    if not rows:
        return f"{len(rec['results'])} rows, no correctness checks"
    failed = [r for r in rows if r["passed"] is False]
    kept = {s.id for s in _specs() if s.expect_failure}
    unexpected = [r for r in failed if r["kernel"] not in kept]
    text = f"{len(rows) - len(failed)}/{len(rows)} checks passed"
    if failed:
        text += f" ({len(failed) - len(unexpected)} expected failures" + (
            f", **{len(unexpected)} unexpected**: {', '.join(sorted({r['kernel'] for r in unexpected}))}"
            if unexpected else "") + ")"
    return text


def _specs() -> list:
    try:
        from flashcore import kernels
        return kernels.all_specs()
    except Exception:
        return []


def error_summary(error: str, limit: int = 200) -> str:
    """The line of a papermill error a reader needs (the exception and its message), not the traceback art."""
    import re

    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip() and not set(ln.strip()) <= set("-—─=")]
    named = [ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", ln)
             and not ln.startswith("PapermillExecutionError")]
    text = (named or lines or ["(no message)"])[-1]
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def record_link(rel: str, label: Optional[str] = None) -> str:
    """A {download} link to a record: the label is the run's time stamp (the chapter is already in the row)."""
    run_id = Path(rel).parent.name
    return f"{{download}}`{label or run_id.split('-')[0]} </{rel}>`"


def write_status(executions: list, mode: str, gpu: Optional[str] = None, why: str = "") -> Path:
    """book/generated/status.md: every notebook, its mode, the record(s) it used, runtime, result — for the
    build's GPU, named once at the top. Short cells (a record is linked by its time stamp) so nothing runs past
    the content column."""
    status_dir = GENERATED_DIR / "status"
    sides = {}
    for ex in executions:
        p = status_dir / f"{ex['notebook']}.json"
        sides[ex["notebook"]] = json.loads(p.read_text()) if p.exists() and not ex.get("stub") else None
    names = sorted({s.get("gpu") for s in sides.values() if s and s.get("gpu") and not s.get("records")})
    gpu_text = " and ".join(f"**{n}**" for n in names) or (f"`{gpu}`" if gpu else "no GPU")
    lines = ["# Execution status", "",
             f"Built {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `--mode {mode}` for {gpu_text}"
             + (f" (`runs/{gpu}/`; {why})" if gpu else "") + ". Each notebook was executed by papermill; *replay* "
             "means the page was drawn from the committed record linked here (by its time stamp), on a machine "
             "without a GPU; *live* means it was measured during this build; *stub* means this GPU has no record "
             "of the chapter.", "",
             "| page | mode | record | commit | built in | result |", "|---|---|---|---|---|---|"]
    for ex in executions:
        nb, side = ex["notebook"], sides[ex["notebook"]]
        page = f"[{nb}](../chapters/{nb}.ipynb)"
        if ex.get("stub"):
            lines.append(f"| {page} | stub | — | — | {ex['seconds']:.0f} s | no record on `{gpu}` |")
            continue
        if ex["error"] or side is None:
            err = _cell(error_summary(ex["error"] or "no status written"))
            lines.append(f"| {page} | — | — | — | {ex['seconds']:.0f} s | **failed**: {err} |")
            continue
        if side.get("records"):          # a page that reads several GPUs' records by design
            links = ", ".join(record_link(r["record"], f"{r['gpu_slug'].split('-')[0]} ch{r['notebook'][:2]}")
                              for r in side["records"])
            lines.append(f"| {page} | {side['mode']} | {links} | — | "
                         f"{ex['seconds']:.0f} s | {_cell(side.get('result', ''))} |")
            continue
        sha = "`" + str(side.get("commit") or "?")[:7] + "`" + (" dirty" if side.get("dirty") else "")
        lines.append(f"| {page} | {side['mode']} | {record_link(side['record'])} | {sha} | {ex['seconds']:.0f} s | "
                     f"{_results_line(side)} |")
    lines += ["", _sweep_section(gpu)]
    path = GENERATED_DIR / "status.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _sweep_section(gpu: Optional[str] = None) -> str:
    """The fuzz and sanitizer sweep (``python -m flashcore sweep``), from the newest record of the book's GPU."""
    try:
        rec = records.newest("sweep", device=gpu, runs_dir=RUNS_DIR)
    except records.RecordError:
        where = f" of `{gpu}`" if gpu else ""
        return (f"## Fuzz and sanitizer sweep\n\nNo sweep record{where} is committed: run `python -m flashcore sweep` "
                "on that GPU.")
    try:
        from flashcore import sweep
        rows = sweep.status_rows(rec)
        body = "\n".join(["| check | subject | result | detail |", "|---|---|---|---|"] +
                         [f"| {_cell(r['check'])} | {_cell(r['subject'])} | "
                          f"{'' if r.get('passed', True) else '**FAILED** '}{_cell(r['result'])} | "
                          f"{_cell(r['detail'])} |" for r in rows])
    except Exception as exc:   # the page still says which record exists
        body = f"(could not summarise the sweep record: {exc})"
    p = rec["provenance"]
    rel = f"runs/{rec.dir.parent.name}/{rec['run_id']}/run.json"
    return (f"## Fuzz and sanitizer sweep\n\nRecord {record_link(rel)} — {p.get('gpu')}, {p.get('date')}, commit "
            f"`{str(p.get('commit'))[:7]}`.\n\n{body}")


# -------------------------------------------------------------------------------------- landing page
def ensure_headline() -> None:
    """The landing page includes book/generated/headline.md, written by the results chapter from its record."""
    path = GENERATED_DIR / "headline.md"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("*The results chapter has not been executed in this build, so there is no headline "
                        "yet.*\n")


def write_book_gpu(executions: list, gpu: Optional[str], why: str = "") -> Path:
    """book/generated/book_gpu.md (the landing page includes it): which GPU this build shows, and each chapter's
    record — read from the status each executed chapter wrote, so it names what was really used."""
    status_dir = GENERATED_DIR / "status"
    used, stubs = [], []
    for ex in executions:
        p = status_dir / f"{ex['notebook']}.json"
        if ex.get("stub"):
            stubs.append(ex["notebook"])
        elif p.exists() and not ex["error"]:
            side = json.loads(p.read_text())
            if not side.get("records"):
                used.append(side)
    names = sorted({s.get("gpu") for s in used if s.get("gpu")})
    slugs = sorted({s.get("gpu_slug") or Path(s["record"]).parts[1] for s in used})
    if not used:
        text = (f"This build shows no chapter record of GPU `{gpu}`." if gpu else
                "This build executed no chapter, so it names no GPU.")
        if stubs:
            text += f" No record on this GPU yet, so stub pages: {', '.join(stubs)}."
    else:
        gpu_name = " and ".join(names)
        folder = ", ".join(f"`runs/{s}/`" for s in slugs)
        links = " · ".join(record_link(s["record"], s["notebook"]) for s in used)
        text = (f"**This book shows the records of one GPU: {gpu_name}** ({folder}"
                + (f"; {why}" if why else "") + f"). The records behind its pages: {links}."
                + (f" No record on this GPU yet, so stub pages: {', '.join(stubs)}." if stubs else "")
                + " Another GPU's book: `make book GPU=<folder of runs/>`.")
        if len(names) > 1:
            text += f" **Warning: the chapters read records of {len(names)} GPUs.**"
    path = GENERATED_DIR / "book_gpu.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"```{{container}} {BOOK_GPU_CLASS}\n{text}\n```\n")
    return path


def build_html(warnings_as_errors: bool = True) -> int:
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(ROOT), "--path-output", str(ROOT)]
    if warnings_as_errors:
        cmd.append("-W")
    print("$", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", default=os.environ.get("FLASHCORE_MODE") or "auto", choices=("auto", "live", "replay"))
    ap.add_argument("--gpu", default=os.environ.get(GPU_ENV) or None,
                    help="the GPU whose records a replay build shows (a folder of runs/, e.g. h100-80gb-hbm3); "
                         "default: the newest GPU with a record of every chapter")
    ap.add_argument("--only", help="comma-separated notebook stems (default: all)")
    ap.add_argument("--no-build", action="store_true", help="execute notebooks only (a GPU host without jupyter-book)")
    ap.add_argument("--no-execute", action="store_true", help="build from the executed copies already there")
    args = ap.parse_args(argv)
    from tqdm import tqdm

    t0 = time.time()
    executions = []
    replay = replaying(args.mode)
    gpu, why = (choose_gpu(args.gpu) if replay or args.gpu else (None, ""))
    if gpu:
        os.environ[GPU_ENV] = gpu          # every papermill kernel of this build inherits it (book.book_gpu)
        print(f"== the book's GPU: {gpu} ({why})", flush=True)
    if not args.no_execute:
        nbs = notebooks(args.only)
        measured = set(chapter_stems())
        bar = tqdm(nbs, desc="notebooks", unit="nb", file=sys.stdout)
        for nb in bar:
            if replay and nb.stem in measured and not has_record(nb.stem, gpu):
                t1 = time.time()
                write_stub(nb, gpu)
                executions.append(dict(notebook=nb.stem, seconds=round(time.time() - t1, 1), error=None, stub=True))
                tqdm.write(f"  {nb.stem}: no record on {gpu}, stub page")
                continue
            executions.append(execute(nb, args.mode, bar))
            tqdm.write(f"  {nb.stem}: {executions[-1]['seconds']:.0f} s"
                       + (f"  FAILED {executions[-1]['error'][:400]}" if executions[-1]["error"] else ""))
        write_status(executions, args.mode, gpu, why)
        write_book_gpu(executions, gpu, why)
    ensure_headline()
    from flashcore import library_bench        # the library page's measured part, from the book GPU's record
    library_bench.write_page(GENERATED_DIR / "library_record.md", gpu)
    if not (GENERATED_DIR / "book_gpu.md").exists():
        write_book_gpu([], gpu, why)
    failed = [e for e in executions if e["error"]]
    rc = 0 if not failed else 1
    if not args.no_build:
        rc = build_html() or rc
    print(f"done in {time.time() - t0:.0f} s; {len(executions)} notebooks executed, {len(failed)} failed"
          + (f" ({', '.join(e['notebook'] for e in failed)})" if failed else "")
          + (f"; stub pages: {', '.join(e['notebook'] for e in executions if e.get('stub'))}"
             if any(e.get("stub") for e in executions) else ""))
    return rc


if __name__ == "__main__":
    sys.exit(main())
