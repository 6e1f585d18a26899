"""Chart plumbing shared by the chapters: one style, one place figures go, and the replay note on each chart."""
from __future__ import annotations

import os
from pathlib import Path

from .paths import FIGURES_DIR

COLORS = {"flashcore": "#d62728", "sdpa_cudnn": "#1f77b4", "sdpa_flash": "#2ca02c", "sdpa_efficient": "#9467bd",
          "sdpa_default": "#8c564b", "triton_attention": "#ff7f0e"}


def plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as pyplot

    pyplot.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                            "axes.spines.right": False, "font.size": 9})
    return pyplot


def source_note(fig, record) -> None:
    """Stamp the chart with the record it was drawn from (run id, GPU, commit)."""
    p = record["provenance"]
    fig.text(0.01, -0.04, f"data: run {record['run_id']} · {p.get('gpu')} · commit {str(p.get('commit'))[:10]}",
             fontsize=6, color="#777777", ha="left", va="bottom")


def save(fig, name: str, record=None) -> Path:
    """Write ``figures/<name>.png`` (the committed chart) and return its path."""
    if not name or "/" in name:
        raise ValueError(f"figure name must be a plain file stem, got {name!r}")
    if record is not None:
        source_note(fig, record)
    out = Path(os.environ.get("FLASHCORE_FIGURES_DIR", FIGURES_DIR))   # tests point this at a temp folder
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, bbox_inches="tight")
    return path
