"""Chapter 2 — v11, the pipeline that deadlocked: reproduce the hang safely, find the cause, prove the fix.

``measure`` (GPU): launch ``v11_pipeline`` (always built with its watchdog) at a bounded cycle budget and decode
what the stuck warps wrote; run the model checker on v11 as designed and on the fixes; check the fixes at the
mission shape and at ``check_S``, then time them beside ``v12_baseline`` and the SDPA backends (the harness's one
check-then-time routine); check the synccheck controls against their own reference; compute-sanitizer synccheck on
every control and fix and racecheck on the fixes (``tools.sanitize``: one process per kernel, one verdict rule);
one Nsight Compute report of ``v11_fixed``. ``view``: every table, chart and numbered sentence of the page, from a
record only.

The kernel lists below are shared by both halves (defined before they are imported).
"""
from ... import watchdog

NOTEBOOK = "02_v11_deadlock"
DEFAULTS = dict(B=1, H=8, S=512, D=64, watchdog_cycles=watchdog.DEFAULT_CYCLES, samples=30,
                check_S=(128, 512, 1000, 2048), model_tiles=3, ncu=True, sanitize=True)
# The charts the page shows, in page order (the browser tests look for each one).
FIGURES = ["02_v11_swimlane", "02_v11_timing", "02_v11_stalls"]

# The three fixes, the watchdog builds launched guarded (v11 as designed first), the synccheck controls.
FIX_VARIANTS = ("v11_fixed", "v11_fixed_roles", "v11_fixed_mbarrier")
WATCHDOG_BUILDS = ("v11_pipeline", "v11_fixed_watchdog", "v11_fixed_roles_watchdog", "v11_fixed_mbarrier_watchdog")

from .measure import measure  # noqa: E402
from .view import *  # noqa: E402,F401,F403
