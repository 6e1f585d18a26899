"""The book's chapters: one package per chapter notebook.

Each package has ``measure.py`` — ``measure(run, params)``, the live work on a GPU, which fills a run record — and
``view.py`` — the page's tables, charts and numbered prose, drawn only from a :class:`~flashcore.records.Record`
(so a machine without a GPU replays the page). Its ``__init__`` exports ``NOTEBOOK`` (the notebook's stem),
``DEFAULTS`` (its papermill parameters), ``FIGURES`` (the names of the charts its page shows: the browser tests
look for each one), ``measure`` and the view functions.
"""
from __future__ import annotations

import importlib

# notebook stem → chapter package, in the book's order
CHAPTERS = {
    "00_method": "method",
    "01_v12_baseline": "v12",
    "02_v11_deadlock": "v11",
    "03_v8_optimization": "v8",
    "04_results": "results",
    "05_hopper": "hopper",
}


def module(notebook: str):
    """The chapter package of a notebook stem."""
    if notebook not in CHAPTERS:
        raise KeyError(f"unknown notebook {notebook!r}; known: {', '.join(CHAPTERS)}")
    return importlib.import_module(f"{__name__}.{CHAPTERS[notebook]}")
