"""What every chapter notebook does first: pick live or replay, get a record, say so on the page.

``mode`` is the notebook's papermill parameter: ``live`` measures on this machine's GPU and writes a new record;
``replay`` reads the newest committed record of the notebook (for ``device``, a GPU slug such as
``h100-80gb-hbm3``, or any device); ``auto`` is live where a GPU is present and replay elsewhere.

Each chapter module (``flashcore/chapters/<name>.py``) exports ``NOTEBOOK`` (the notebook's stem),
``DEFAULTS`` (its parameters) and ``measure(run, params)`` (the live work; it fills ``run``).
``python -m flashcore.book run-live 01_v12_baseline [--param S=1024]`` runs one chapter's live work without
Jupyter (the GPU-host smoke test).
"""
from __future__ import annotations

import argparse
import html
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from . import records
from .paths import BOOK_DIR

MODES = ("auto", "live", "replay")
CHAPTER_MODULES = {
    "00_method": "method",
    "01_v12_baseline": "v12",
    "02_v11_deadlock": "v11",
    "03_v8_optimization": "v8",
    "04_results": "results",
}
STATUS_DIR = BOOK_DIR / "generated" / "status"


def gpu_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def resolve_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    env = os.environ.get("FLASHCORE_MODE")
    if mode == "auto" and env in ("live", "replay"):
        mode = env
    if mode == "auto":
        return "live" if gpu_available() else "replay"
    if mode == "live" and not gpu_available():
        raise RuntimeError("mode='live' needs a CUDA GPU and none is visible; use mode='replay' (or 'auto')")
    return mode


def banner_html(record: records.Record, mode: str) -> str:
    p = record["provenance"]
    run_rel = f"runs/{record.dir.parent.name}/{record['run_id']}/run.json" if record.path else record["run_id"]
    when = html.escape(str(p.get("date", "?")))
    sha = html.escape(str(p.get("commit", "?"))[:10]) + (" (dirty)" if p.get("dirty") else "")
    gpu = html.escape(str(p.get("gpu", "?")))
    if mode == "replay":
        head = "Replayed from a recorded run"
        body = (f"This page was built on a machine without a GPU (or asked to replay). Every number and chart "
                f"below comes from <code>{html.escape(run_rel)}</code>: {gpu}, {when}, commit <code>{sha}</code>, "
                f"driver {html.escape(str(p.get('driver')))}, CUDA {html.escape(str(p.get('cuda')))}, torch "
                f"{html.escape(str(p.get('torch')))}. Run it live on your GPU with <code>mode='live'</code>.")
        color = "#fff4e5"
    else:
        head = "Live run"
        body = (f"Measured just now on {gpu} ({when}, commit <code>{sha}</code>) and recorded as "
                f"<code>{html.escape(run_rel)}</code>.")
        color = "#e8f5e9"
    return (f'<div class="flashcore-banner" style="border-left:6px solid #e69500;background:{color};'
            f'padding:0.6em 1em;margin:0.5em 0 1em 0"><strong>{head}.</strong> {body}</div>')


def _show(html_text: str) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display

        if get_ipython() is not None:
            display(HTML(html_text))
            return
    except Exception:
        pass
    print(html_text)


def write_status(notebook: str, mode: str, record: records.Record, seconds: float) -> Path:
    """The sidecar the execution-status page reads."""
    STATUS_DIR.mkdir(parents=True, exist_ok=True)
    p = record["provenance"]
    data = dict(notebook=notebook, mode=mode, run_id=record["run_id"], gpu=p.get("gpu"), date=p.get("date"),
                commit=p.get("commit"), dirty=p.get("dirty"), record_seconds=round(seconds, 2),
                record=f"runs/{record.dir.parent.name}/{record['run_id']}/run.json")
    path = STATUS_DIR / f"{notebook}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def chapter(notebook: str, mode: str = "auto", measure: Optional[Callable] = None,
            params: Optional[dict] = None, device: Optional[str] = None, show: bool = True) -> records.Record:
    """Live: run ``measure(run, params)`` into a new record and save it. Replay: load the newest record."""
    t0 = time.time()
    resolved = resolve_mode(mode)
    if resolved == "live":
        if measure is None:
            raise ValueError(f"{notebook}: live mode needs a measure function")
        run = records.Run(notebook, params=params, command=os.environ.get("FLASHCORE_COMMAND", ""))
        measure(run, dict(params or {}))
        record = records.load(run.save())
    else:
        record = records.newest(notebook, device=device)
    write_status(notebook, resolved, record, time.time() - t0)
    if show:
        _show(banner_html(record, resolved))
    return record


def chapter_module(notebook: str):
    if notebook not in CHAPTER_MODULES:
        raise KeyError(f"unknown notebook {notebook!r}; known: {', '.join(CHAPTER_MODULES)}")
    return importlib.import_module(f"flashcore.chapters.{CHAPTER_MODULES[notebook]}")


def _parse_param(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param takes NAME=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    try:
        value = json.loads(value)
    except json.JSONDecodeError:
        pass
    return name, value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flashcore.book", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    live = sub.add_parser("run-live", help="run one chapter's live measurement without Jupyter")
    live.add_argument("notebook", choices=sorted(CHAPTER_MODULES))
    live.add_argument("--param", action="append", type=_parse_param, default=[])
    args = ap.parse_args(argv)
    module = chapter_module(args.notebook)
    params = dict(getattr(module, "DEFAULTS", {}))
    params.update(dict(args.param))
    rec = chapter(args.notebook, mode="live", measure=module.measure, params=params, show=False)
    print(f"recorded {rec.path}")
    for row in rec["results"]:
        print(f"  {row['kernel']:<28} S={row['S']:<6} passed={row['passed']!s:<5} median_us={row['median_us']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def md(text: str) -> None:
    """Show Markdown built from a record's numbers (prose never types a measured number by hand)."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(text))
            return
    except Exception:
        pass
    print(text)


def downloads(record: records.Record) -> None:
    """Download links for the record and every file beside it (.ncu-rep), with how to open them."""
    base = f"/runs/{record.dir.parent.name}/{record['run_id']}"     # a leading / is the book's root
    lines = [f"**Data behind this page** — run `{record['run_id']}`:", "",
             f"- {{download}}`run.json <{base}/run.json>` (the record: provenance, every result row)"]
    for f in record.get("files", []):
        if f.endswith(".ncu-rep"):
            lines.append(f"- {{download}}`{f} <{base}/{f}>` — Nsight Compute report: open it in the Nsight "
                         f"Compute GUI (`ncu-ui {f}`) or print it with `ncu --import {f} --page details`")
    md("\n".join(lines))
