"""Chapter 4 — results: every FlashCore kernel and every peer at the mission shape in ONE live run, the sequence
sweep, a shape that fills the chip, two Nsight Compute comparisons, and the landing page's headline.

``measure`` (live, on a GPU) fills a run record; ``view`` draws every table, chart and sentence of the page — and
``book/generated/headline.md`` with ``figures/headline.png`` for the landing page — from a record; ``spread`` is
the spread rule that decides faster / tie / slower for every comparison the page and the headline make.
"""
NOTEBOOK = "04_results"
DEFAULTS = dict(B=1, H=8, S=512, D=64, tail_S=1000, sweep_S=[128, 256, 512, 1024, 2048, 4096, 8192, 16384],
                sweep_BH=(1, 8), big=(4, 16, 4096, 64), samples=50)
# The charts the page shows, in page order (the browser tests look for each one by name). "headline" is also the
# landing page's chart.
FIGURES = ["headline", "04_results_journey", "04_results_scaling", "04_results_loc", "04_results_dsl"]

from .measure import code_lines, journey_ids, library_ids, measure  # noqa: E402,F401
from .view import *  # noqa: E402,F401,F403
