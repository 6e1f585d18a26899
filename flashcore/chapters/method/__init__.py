"""Chapter 0 — the method: the problem in numbers, the GPU's measured ceilings and the floors they set, the SDPA
peers, and how we time.

``measure`` (live, on a GPU) fills a run record; ``view`` draws every table, chart and sentence of the page from a
record, so a machine without a GPU replays the page. :func:`~flashcore.chapters.method.view.roof` and
:func:`~flashcore.chapters.method.view.floors` are what a later page uses to predict how a kernel moves from one
GPU to another (which ceiling bounds it).
"""
NOTEBOOK = "00_method"
DEFAULTS = dict(B=1, H=8, S=512, D=64, big=(4, 16, 4096, 64), samples=50)
# The charts the page shows, in page order (the browser tests look for each one by name).
FIGURES = ["00_method_floors", "00_method_sdpa_backends", "00_method_timing_methods", "00_method_roofline"]

from .measure import measure  # noqa: E402
from .view import *  # noqa: E402,F401,F403
