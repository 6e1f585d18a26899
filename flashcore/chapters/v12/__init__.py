"""Chapter 1 — v12, the correct baseline: reproduced on this GPU, checked, sanitized, timed beside the SDPA peers,
profiled, and taken apart by an ablation ladder.

``measure`` (live, on a GPU) fills a run record; ``view`` draws every table, chart and sentence of the page from a
record, so a machine without a GPU replays the page. Numbers from the original L4 work are quoted history
(``SEED_*`` in ``view``), always labelled as such and never mixed into a ratio with this record's numbers.
"""
NOTEBOOK = "01_v12_baseline"
DEFAULTS = dict(B=1, H=8, S=512, D=64, seqs=[128, 384, 512, 1000, 2048], bhs=[1, 8, 64], runs=3, samples=20,
                sanitize_shape="1,2,128,64", ncu=True, sanitize=True)
# The charts the page shows, in page order (the browser tests look for each one by name).
FIGURES = ["01_v12_schedule", "01_v12_ladder", "01_v12_estimate_vs_measured", "01_v12_stalls"]

from .measure import measure  # noqa: E402
from .view import *  # noqa: E402,F401,F403
