"""What a chapter notebook calls to show a page: live or replay, one GPU per book, and the page's pieces.

``mode`` is each notebook's papermill parameter: ``live`` measures on this machine's GPU and writes a new record;
``replay`` reads the newest committed record of the notebook for the book's GPU; ``auto`` is live where a GPU is
present and replay elsewhere. **One GPU per book**: every replayed page of a build reads the records of ONE GPU
(a folder of ``runs/``, e.g. ``h200``), chosen by one parameter — ``FLASHCORE_GPU`` (``make book GPU=h100-80gb-hbm3``
sets it) — and by default the newest *complete* set: the GPU whose records cover every chapter, newest first
(:func:`book_gpu`). A notebook's ``device`` parameter (None by default) overrides it for that page only.

The page's pieces: :func:`md` (Markdown built from a record's numbers: prose never types a measured number),
:func:`table` (a record's numbers as an HTML table: no index column, no NaN/None, rounded, readable labels),
:func:`dropdown` (a summary line with the detail folded away), :func:`show_figure` (a saved chart shown on the
page under its name, which the browser tests look for), :func:`downloads` (the record and its reports).
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from . import records
from .paths import BOOK_DIR, ROOT

MODES = ("auto", "live", "replay")
STATUS_DIR = BOOK_DIR / "generated" / "status"
GPU_ENV = "FLASHCORE_GPU"
MISSING = "—"          # what a table shows where a record has no value


def gpu_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:        # no torch at all: certainly no GPU we can measure on
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


def book_gpu(notebooks: Optional[Sequence[str]] = None, runs_dir: Path = records.RUNS_DIR) -> str:
    """The GPU whose records this build shows: ``$FLASHCORE_GPU`` if set, else the GPU with a record of every
    chapter (``notebooks``, default: every chapter of the book) whose newest such record is the newest."""
    from .chapters import CHAPTERS

    chosen = os.environ.get(GPU_ENV)
    have = records.devices(runs_dir)
    if chosen:
        if chosen not in have:
            raise records.RecordError(f"{GPU_ENV}={chosen!r}, but runs/ has records of {', '.join(have) or 'none'}")
        return chosen
    wanted = list(notebooks or CHAPTERS)
    complete = records.complete_devices(wanted, runs_dir)
    if not complete:
        raise records.RecordError(f"no GPU under {runs_dir} has a record of every chapter ({', '.join(wanted)}); "
                                  f"set {GPU_ENV} to one of: {', '.join(have) or 'none'}")
    return complete[0]


def banner_html(record: records.Record, mode: str) -> str:
    p = record["provenance"]
    run_rel = f"runs/{record.dir.parent.name}/{record['run_id']}/run.json" if record.path else record["run_id"]
    when = html.escape(str(p.get("date", "?")))
    sha = html.escape(str(p.get("commit", "?"))[:10]) + (" (dirty)" if p.get("dirty") else "")
    gpu = html.escape(str(p.get("gpu", "?")))
    if mode == "replay":
        head = f"Replayed from a recorded run on {gpu}"
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


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:      # plain Python (the command line): print instead of display
        return False


def _show_html(text: str) -> None:
    if _in_notebook():
        from IPython.display import HTML, display

        display(HTML(text))
    else:
        print(text)


def write_status(notebook: str, mode: str, record: records.Record, seconds: float) -> Path:
    """The sidecar the execution-status page reads."""
    STATUS_DIR.mkdir(parents=True, exist_ok=True)
    p = record["provenance"]
    data = dict(notebook=notebook, mode=mode, run_id=record["run_id"], gpu=p.get("gpu"),
                gpu_slug=record.dir.parent.name if record.path else None, date=p.get("date"),
                commit=p.get("commit"), dirty=p.get("dirty"), record_seconds=round(seconds, 2),
                record=f"runs/{record.dir.parent.name}/{record['run_id']}/run.json")
    path = STATUS_DIR / f"{notebook}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def chapter(notebook: str, mode: str = "auto", measure: Optional[Callable] = None,
            params: Optional[dict] = None, device: Optional[str] = None, show: bool = True,
            status: bool = True) -> records.Record:
    """Live: run ``measure(run, params)`` into a new record and save it. Replay: load the newest record of the
    book's GPU (``device`` overrides :func:`book_gpu` for this page)."""
    t0 = time.time()
    resolved = resolve_mode(mode)
    if resolved == "live":
        if measure is None:
            raise ValueError(f"{notebook}: live mode needs a measure function")
        run = records.Run(notebook, params=params, command=os.environ.get("FLASHCORE_COMMAND", ""))
        measure(run, dict(params or {}))
        record = records.load(run.save())
    else:
        record = records.newest(notebook, device=device or book_gpu())
    if status:
        write_status(notebook, resolved, record, time.time() - t0)
    if show:
        _show_html(banner_html(record, resolved))
    return record


def md(text: str) -> None:
    """Show Markdown built from a record's numbers (prose never types a measured number by hand). Empty text shows
    nothing (an empty Markdown output would render as its Python repr)."""
    if not text or not text.strip():
        return
    if _in_notebook():
        from IPython.display import Markdown, display

        display(Markdown(text))
    else:
        print(text)


# ------------------------------------------------------------------------------------------------- tables
def fmt(value, digits: int = 3) -> str:
    """One table cell: None/NaN → "—", bools as yes/no, floats to ``digits`` significant digits (at least the
    integer part), sequences joined with "×" (shapes) or ", "."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return MISSING if math.isnan(value) else ("∞" if value > 0 else "−∞")
        if value == 0:
            return "0"
        if abs(value) >= 10 ** digits:
            return f"{value:,.0f}"
        if abs(value) < 1e-3:
            return f"{value:.1e}"
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(x, int) for x in value):
            return "×".join(str(x) for x in value)
        return ", ".join(fmt(x, digits) for x in value)
    text = str(value)
    return MISSING if text.lower() in ("nan", "none", "") else text


def table(data, columns: Optional[Sequence[str]] = None, digits: int = 3, caption: str = "",
          formats: Optional[dict] = None, show: bool = True) -> str:
    """A record's numbers as a compact HTML table: ``data`` is a list of dicts or a DataFrame (its index becomes a
    column only if it is named). ``formats`` maps a column to a format string ("{:.2f}") or a function. Returns
    the HTML (and shows it in a notebook unless ``show=False``)."""
    rows, cols = _rows(data, columns)
    formats = formats or {}

    def cell(col, value):
        f = formats.get(col)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return MISSING
        if callable(f):
            return f(value)
        if isinstance(f, str):
            try:
                return f.format(value)
            except (ValueError, TypeError):
                return fmt(value, digits)
        return fmt(value, digits)

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{breakable(html.escape(cell(c, r.get(c))))}</td>" for c in cols)
                   + "</tr>" for r in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    out = (f'<div class="flashcore-table-wrap"><table class="flashcore-table">{cap}<thead><tr>{head}</tr></thead>'
           f"<tbody>{body}</tbody></table></div>")
    if show:
        _show_html(out)
    return out


_LONG_TOKEN = re.compile(r"[^\s]{25,}")


def breakable(text: str) -> str:
    """Long unbroken tokens (a mangled kernel name) get break opportunities (<wbr>) after _ , : and ::, so a table
    fits its column without letting the browser break numbers in the middle."""
    return _LONG_TOKEN.sub(lambda m: re.sub(r"(_|,|:|&gt;|&lt;)", r"\1<wbr>", m.group(0)), text)


def _rows(data, columns):
    if hasattr(data, "to_dict") and hasattr(data, "columns"):          # a DataFrame
        frame = data.reset_index() if any(n is not None for n in data.index.names) else data
        rows = frame.to_dict(orient="records")
        cols = list(columns or frame.columns)
    else:
        rows = [dict(r) for r in data]
        cols = list(columns or (dict.fromkeys(k for r in rows for k in r)))
    return rows, cols


def dropdown(summary: str, body: str = "", code: Optional[str] = None, show: bool = True) -> str:
    """A one-line ``summary`` with the detail folded away: ``body`` is HTML (e.g. a :func:`table` with
    ``show=False``), ``code`` a preformatted text (a log)."""
    inner = body + (f"<pre class='flashcore-log'>{html.escape(code)}</pre>" if code is not None else "")
    out = (f'<details class="flashcore-details"><summary>{html.escape(summary)}</summary>'
           f'<div class="flashcore-details-body">{inner}</div></details>')
    if show:
        _show_html(out)
    return out


# ------------------------------------------------------------------------------------------------ figures
def show_figure(path: Path, name: str, alt: str = "") -> None:
    """Show a saved chart on the page as it was written (the PNG itself, so the page shows exactly the committed
    figure), tagged with its name: the browser tests find every chapter figure by ``data-figure``."""
    if not _in_notebook():
        return
    data = base64.b64encode(Path(path).read_bytes()).decode()
    _show_html(f'<figure class="flashcore-figure" id="figure-{html.escape(name)}">'
               f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt or name)}" '
               f'data-figure="{html.escape(name)}" style="max-width:100%;height:auto"/></figure>')


def downloads(record: records.Record) -> None:
    """Download links for the record and every file beside it (.ncu-rep), with how to open them."""
    base = f"/runs/{record.dir.parent.name}/{record['run_id']}"     # a leading / is the book's root
    lines = [f"**Data behind this page** — run `{record['run_id']}`:", "",
             f"- {{download}}`run.json <{base}/run.json>` (the record: provenance, every result row)"]
    for f in record.get("files", []):
        if f.endswith(".ncu-rep") and (record.dir / f).exists():
            lines.append(f"- {{download}}`{f} <{base}/{f}>` — Nsight Compute report: open it in the Nsight "
                         f"Compute GUI (`ncu-ui {f}`) or print it with `ncu --import {f} --page details`")
    md("\n".join(lines))


def kernel_source_link(kernel_id: str) -> str:
    """A {download} link to a kernel's current source file (looked up by id: records keep ids, files move)."""
    from . import kernels

    spec = kernels.get(kernel_id)
    rel = spec.path.resolve().relative_to(ROOT)
    return f"{{download}}`{spec.path.name} </{rel}>`"
