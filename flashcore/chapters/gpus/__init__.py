"""Page 6 — H100 and H200: which kernels gain from the extra memory bandwidth, predicted from chapter 0's floors of
both GPUs, then measured with chapter 4's records of the same kernels at the same shapes.

Not a chapter of :data:`flashcore.chapters.CHAPTERS`, on purpose: a chapter measures and writes ONE GPU's record
(``measure(run, params)``) and a book shows one GPU; this page measures nothing and reads the records of TWO GPUs
by design (its banner says so). Registering it there would also make :func:`flashcore.book.book_gpu` demand a
``06_gpus`` record of every GPU. So it keeps the chapter layout where it applies — ``NOTEBOOK``, ``DEFAULTS``,
``FIGURES`` (the browser tests read them) — with :mod:`.model` (the prediction, pure arithmetic on two records) in
place of ``measure.py``, and :mod:`.view` (the page).
"""
NOTEBOOK = "06_gpus"
DEFAULTS = dict(reference="h100-80gb-hbm3", other="h200")
# The charts the page shows, in page order (the browser tests look for each one by name).
FIGURES = ["06_gpus_mission", "06_gpus_sweep"]
# The records the page reads, per GPU: chapter 0 (the ceilings) and chapter 4 (the kernels' times).
SOURCES = ("00_method", "04_results")

from .model import *  # noqa: E402,F401,F403
from .view import *  # noqa: E402,F401,F403
