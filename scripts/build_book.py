"""Execute every chapter notebook with papermill, write the execution-status page, build the book.

    python scripts/build_book.py                    # mode=auto: live on a GPU host, replay elsewhere
    python scripts/build_book.py --mode replay      # CPU build from the committed records (what `make test` does)
    python scripts/build_book.py --mode live --no-build --only 01_v12_baseline   # GPU host: new records only

One execution path, papermill, for three reasons: the notebooks' `parameters` cell is the same interface a reader
uses to re-run a chapter on their GPU (`papermill notebooks/01_v12_baseline.ipynb out.ipynb -p S 1024`); each
notebook is executed and timed on its own, so the status page can say how long each took; and a failing cell
fails the build with the notebook and cell named. Jupyter Book then renders the executed copies
(`book/chapters/`, `execute_notebooks: off`) with warnings as errors.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flashcore.paths import BOOK_DIR, NOTEBOOKS_DIR  # noqa: E402

EXECUTED_DIR = BOOK_DIR / "chapters"
GENERATED_DIR = BOOK_DIR / "generated"


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
    seconds = time.time() - t0
    if bar is not None:
        bar.set_postfix_str(f"{nb.stem} {seconds:.0f}s {'FAILED' if error else 'ok'}")
    return dict(notebook=nb.stem, seconds=round(seconds, 1), error=error)


def _results_line(sidecar: dict) -> str:
    """Pass/fail counts of the record a notebook used (read from the record itself)."""
    from flashcore import records

    try:
        rec = records.load(ROOT / sidecar["record"])
    except Exception as exc:
        return f"record unreadable: {exc}"
    rows = [r for r in rec["results"] if r.get("passed") is not None]
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


def write_status(executions: list, mode: str) -> Path:
    """book/generated/status.md: every notebook, its mode, the run it used, runtime, result."""
    status_dir = GENERATED_DIR / "status"
    lines = ["# Execution status", "",
             f"Built {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `--mode {mode}`. Each chapter "
             "notebook was executed by papermill; *replay* means the page was drawn from the committed record "
             "named here, on a machine without a GPU; *live* means it was measured during this build.", "",
             "| notebook | mode | record | GPU | recorded | commit | executed in | result |",
             "|---|---|---|---|---|---|---|---|"]
    for ex in executions:
        side_path = status_dir / f"{ex['notebook']}.json"
        side = json.loads(side_path.read_text()) if side_path.exists() else None
        if ex["error"] or side is None:
            err = (ex["error"] or "no status written").replace("|", "\\|").replace("\n", " ")[:300]
            lines.append(f"| {ex['notebook']} | — | — | — | — | — | {ex['seconds']:.0f} s | **failed**: {err} |")
            continue
        sha = str(side.get("commit") or "?")[:10] + (" (dirty)" if side.get("dirty") else "")
        rec_link = f"{{download}}`{side['run_id']} </{side['record']}>`"
        lines.append(f"| [{ex['notebook']}](../chapters/{ex['notebook']}.ipynb) | {side['mode']} | {rec_link} | "
                     f"{side.get('gpu')} | {side.get('date')} | `{sha}` | {ex['seconds']:.0f} s | "
                     f"{_results_line(side)} |")
    lines += ["", _sweep_section()]
    path = GENERATED_DIR / "status.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _sweep_section() -> str:
    """The fuzz and sanitizer sweep (``python -m flashcore.sweep``), from its newest committed record."""
    from flashcore import records

    try:
        rec = records.newest("sweep")
    except records.RecordError:
        return ("## Fuzz and sanitizer sweep\n\nNo sweep record is committed yet: run `python -m flashcore.sweep` "
                "on a GPU host.")
    try:
        from flashcore import sweep
        rows = sweep.status_rows(rec)
        cols = list(rows[0]) if rows else []
        body = "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] +
                          ["| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |" for r in rows])
    except Exception as exc:   # the page still says which record exists
        body = f"(could not summarise the sweep record: {exc})"
    p = rec["provenance"]
    base = f"/runs/{rec.dir.parent.name}/{rec['run_id']}/run.json"
    return (f"## Fuzz and sanitizer sweep\n\nRecord {{download}}`{rec['run_id']} <{base}>` — {p.get('gpu')}, "
            f"{p.get('date')}, commit `{str(p.get('commit'))[:10]}`.\n\n{body}")


def ensure_headline() -> None:
    """The landing page includes book/generated/headline.md, written by the results chapter from its record."""
    path = GENERATED_DIR / "headline.md"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("*The results chapter has not been executed in this build, so there is no headline "
                        "yet.*\n")


def build_html(warnings_as_errors: bool = True) -> int:
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(ROOT), "--path-output", str(ROOT)]
    if warnings_as_errors:
        cmd.append("-W")
    print("$", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", default="auto", choices=("auto", "live", "replay"))
    ap.add_argument("--only", help="comma-separated notebook stems (default: all)")
    ap.add_argument("--no-build", action="store_true", help="execute notebooks only (a GPU host without jupyter-book)")
    ap.add_argument("--no-execute", action="store_true", help="build from the executed copies already there")
    args = ap.parse_args(argv)
    from tqdm import tqdm

    t0 = time.time()
    executions = []
    if not args.no_execute:
        nbs = notebooks(args.only)
        bar = tqdm(nbs, desc="notebooks", unit="nb", file=sys.stdout)
        for nb in bar:
            executions.append(execute(nb, args.mode, bar))
            tqdm.write(f"  {nb.stem}: {executions[-1]['seconds']:.0f} s"
                       + (f"  FAILED {executions[-1]['error'][:400]}" if executions[-1]["error"] else ""))
        write_status(executions, args.mode)
    ensure_headline()
    failed = [e for e in executions if e["error"]]
    rc = 0 if not failed else 1
    if not args.no_build:
        rc = build_html() or rc
    print(f"done in {time.time() - t0:.0f} s; {len(executions)} notebooks executed, {len(failed)} failed"
          + (f" ({', '.join(e['notebook'] for e in failed)})" if failed else ""))
    return rc


if __name__ == "__main__":
    sys.exit(main())
