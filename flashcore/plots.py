"""Chart plumbing shared by the chapters: one style, one place figures go, the source note, and the page.

:func:`save` writes ``figures/<name>.png`` (the committed chart) and shows that file on the page
(:func:`flashcore.book.show_figure`), so what a reader sees is exactly what was committed; the figure is then
closed (the Agg backend draws off-screen, so nothing is shown twice). Every chart carries a source note naming the
run it was drawn from, placed below the axes' own labels.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")            # off-screen: save() puts the saved PNG on the page itself
import matplotlib.pyplot as pyplot  # noqa: E402

from .paths import FIGURES_DIR  # noqa: E402

COLORS = {"flashcore": "#d62728", "flashcore_hopper": "#8b0000", "sdpa_cudnn": "#1f77b4", "sdpa_flash": "#2ca02c",
          "sdpa_efficient": "#9467bd", "sdpa_default": "#8c564b", "triton_attention": "#ff7f0e",
          "fa4_hopper": "#17becf"}
STYLE = {"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
         "axes.spines.right": False, "font.size": 9}


def plt():
    """pyplot with the book's style."""
    pyplot.rcParams.update(STYLE)
    return pyplot


def source_note(fig, record) -> None:
    """Stamp the chart with the record it was drawn from (run id, GPU, commit), below everything else."""
    p = record["provenance"]
    fig.canvas.draw()                 # lay the axes out first: the note goes under their lowest tick label
    renderer = fig.canvas.get_renderer()
    lowest = min((ax.get_tightbbox(renderer).y0 for ax in fig.axes if ax.get_visible()), default=0.0)
    y = lowest / fig.bbox.height - 0.01
    fig.text(0.99, y, f"data: run {record['run_id']} · {p.get('gpu')} · commit {str(p.get('commit'))[:10]}",
             fontsize=6, color="#777777", ha="right", va="top")


def save(fig, name: str, record=None, alt: str = "") -> Path:
    """Write ``figures/<name>.png`` (tight bounding box, source note inside it), show it on the page, close it."""
    from . import book

    if not name or "/" in name:
        raise ValueError(f"figure name must be a plain file stem, got {name!r}")
    if record is not None:
        source_note(fig, record)
    out = Path(os.environ.get("FLASHCORE_FIGURES_DIR", FIGURES_DIR))   # tests point this at a temp folder
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, bbox_inches="tight", pad_inches=0.15)
    pyplot.close(fig)
    book.show_figure(path, name, alt)
    return path
