"""Chapter 2's live work on a GPU: fills one run record (see the package docstring for what, and ``view`` for how
the page reads it).

Record layout (what ``view`` reads; the H100 record of 2026-11-25 has the same keys, except where noted):

* results: ``v11_pipeline`` and the three watchdog builds (``outcome``, ``stuck_warps``, ...); per fix one
  ``role="mission"`` row (checked, then timed) and ``role="check"`` rows at the other ``check_S``; ``v12_baseline``
  and the SDPA backends as ``role="mission"`` rows (older records: separate ``"check"`` and ``"timing"`` rows).
* extra: ``watchdog`` (decoded launches), ``modelcheck`` (:func:`flashcore.modelcheck.run_all`), ``controls`` (the
  synccheck controls' own checks), ``sync_matrix`` (one synccheck summary per control and fix, each with the
  ``log_head`` of its own invocation; older records: a ``details`` dict from separate runs), ``sanitizer``
  (racecheck and synccheck of the fixes, with verdicts by the one rule), ``ncu_report``, ``shape``.

Imports of torch stay inside the functions that need a GPU (``import flashcore`` and replay run on a CPU).
"""
from __future__ import annotations

import time

from ... import modelcheck, watchdog
from ...harness import check as harness_check
from ...harness import measure as harness
from ...tools import profile, sanitize
from . import FIX_VARIANTS, WATCHDOG_BUILDS

SDPA_PEERS = ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "sdpa_default")
CONTROL_SHAPES_S = (512, 1000)          # the controls' own checks (B1 H8); the first is replaced by the mission S
SYNCCHECK_TIMEOUT_S = 120
RACECHECK_TIMEOUT_S = 200
NCU_TIMEOUT_S = 300


def control_ids() -> list:
    """The synccheck controls of the v11 control kernel file, in the matrix's order."""
    from ...specs.v11 import CONTROLS

    return list(CONTROLS)


def watchdog_runs(B: int, H: int, S: int, D: int, cycles: int) -> dict:
    """The guarded launches: v11 as designed (the watchdog must stop it) and each fix's watchdog build (must
    finish). ``seconds_with_compile`` includes the first launch's compile; ``seconds`` is the launch alone."""
    out = {}
    for kid in WATCHDOG_BUILDS:
        t0 = time.perf_counter()
        res = watchdog.launch_guarded(kid, B, H, S, D, cycles=cycles, seed=3)
        res["seconds_with_compile"] = time.perf_counter() - t0
        out[kid] = res
    return out


def check_control(kernel_id: str, B: int = 1, H: int = 8, S: int = 512, seed: int = 0) -> dict:
    """A control computes O[b,h,i,:] = Σ_j V[b,h,j,:] for every row i (it is not attention, so the attention check
    does not apply): compare with fp64 on a NaN-poisoned output."""
    import torch

    launch = harness.kernel(kernel_id).launch
    q, k, v = harness_check.make_inputs(B, H, S, 64, seed=seed)
    o = torch.full_like(q, float("nan"))
    launch(q, k, v, o)
    torch.cuda.synchronize()
    ref = v.double().sum(dim=2, keepdim=True).expand(B, H, S, 64)
    err = float((o.double() - ref).abs().max() / ref.abs().max())
    finite = bool(torch.isfinite(o).all())
    return dict(kernel=kernel_id, B=B, H=H, S=S, max_rel_err=err, finite=finite, passed=finite and err < 2e-3)


def _without(summary: dict, *keys) -> dict:
    return {k: v for k, v in summary.items() if k not in keys}


def measure(run, params: dict) -> None:
    """Fill ``run`` (a :class:`flashcore.records.Run`) from ``params`` (the notebook's, over :data:`DEFAULTS`)."""
    import torch

    B, H, S, D = (int(params[k]) for k in ("B", "H", "S", "D"))
    samples = int(params.get("samples", 30))
    cycles = int(params.get("watchdog_cycles", watchdog.DEFAULT_CYCLES))
    shape = f"{B},{H},{S},{D}"
    run.extra["shape"] = [B, H, S, D]

    # 1. The hang, reproduced safely: the watchdog stops v11 and says where every warp was; each fix must finish.
    wd = watchdog_runs(B, H, S, D, cycles)
    run.extra["watchdog"] = wd
    v11 = wd["v11_pipeline"]
    run.add_result("v11_pipeline", B, H, S, D, passed=False if v11["rows"] else None,
                   outcome="deadlock-detected" if v11["rows"] else "finished", diagnosis=v11["diagnosis"]["sentence"],
                   watchdog_cycles=v11["cycles"], watchdog_seconds=v11["seconds"], stuck_warps=len(v11["rows"]))
    for kid in WATCHDOG_BUILDS[1:]:
        fx = wd[kid]
        run.add_result(kid, B, H, S, D, outcome="deadlock-detected" if fx["rows"] else "finished",
                       watchdog_cycles=fx["cycles"], watchdog_seconds=fx["seconds"], stuck_warps=len(fx["rows"]),
                       unwritten=fx["output_unwritten"])

    # 2. The model checker: v11 as designed, the fixes, the cases with known answers (CPU work, recorded).
    t0 = time.perf_counter()
    run.extra["modelcheck"] = modelcheck.run_all(int(params.get("model_tiles", 3)))
    run.extra["modelcheck_seconds"] = time.perf_counter() - t0

    # 3. The fixes: checked at the mission shape and at every check_S (B1 H8), then timed; v12 and the SDPA backends
    #    timed beside them in this process, on the same seeded inputs.
    check_shapes = [(1, 8, int(s)) for s in params.get("check_S", ()) if (1, 8, int(s)) != (B, H, S)]
    harness.check_then_time(run, [harness.kernel(kid) for kid in FIX_VARIANTS], B, H, S, D, samples=samples,
                            check_shapes=check_shapes, role="mission")
    yardsticks = [harness.sdpa(name) for name in SDPA_PEERS]
    try:
        yardsticks.insert(0, harness.kernel("v12_baseline"))
    except Exception as exc:   # the v12 kernel does not build here: the page says so instead of failing
        run.extra["v12_skipped"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    harness.check_then_time(run, yardsticks, B, H, S, D, samples=samples, role="mission")
    torch.cuda.empty_cache()

    # 4. The synccheck controls are right by their own reference (column sums of V).
    run.extra["controls"] = [check_control(kid, 1, 8, s, seed=s) for kid in control_ids()
                             for s in (S,) + CONTROL_SHAPES_S[1:]]

    # 5. compute-sanitizer (tools.sanitize: one process per kernel — a synccheck error aborts the launch it is in —
    #    and one verdict rule). synccheck on every control and fix: the matrix; each summary keeps the head of ITS
    #    OWN log, so the page shows a count and the log of one invocation. racecheck on the fixes.
    if params.get("sanitize", True):
        ids = control_ids() + list(FIX_VARIANTS)
        sync = [s for s in sanitize.run_jobs(["synccheck"], ids, shape, timeout=SYNCCHECK_TIMEOUT_S, workers=4)
                if not s.get("superseded")]
        race = [s for s in sanitize.run_jobs(["racecheck"], list(FIX_VARIANTS), shape, timeout=RACECHECK_TIMEOUT_S,
                                             workers=len(FIX_VARIANTS)) if not s.get("superseded")]
        run.extra["sync_matrix"] = dict(shape=shape, kernels=ids, summaries=sync, verdicts=sanitize.verdicts(sync))
        fixes = race + [s for s in sync if s["kernels"][0] in FIX_VARIANTS]
        run.extra["sanitizer"] = dict(summaries=race + [_without(s, "per_launch", "log_head") for s in fixes
                                                         if s["tool"] == "synccheck"],   # the matrix holds those
                                      verdicts=sanitize.verdicts(fixes, known=_known_findings(FIX_VARIANTS)))

    # 6. One Nsight Compute report of v11_fixed (the sections the book reads; clocks locked to base).
    if params.get("ncu", True):
        try:
            rep = profile.ncu_profile(run.dir / "v11_fixed.ncu-rep", kernels=["v11_fixed"], shapes=shape,
                                      sections=profile.BOOK_SECTIONS, timeout=NCU_TIMEOUT_S)
        except Exception as exc:   # no ncu, or it failed: the record says why and the page shows no stall chart
            run.extra["ncu_error"] = f"{type(exc).__name__}: {str(exc)[-1500:]}"
        else:
            run.extra["ncu_report"] = run.rel(rep)
            for row in run.results:
                if row["kernel"] == "v11_fixed" and row.get("role") == "mission" and row.get("median_us"):
                    row["ncu_report"] = run.rel(rep)


def _known_findings(ids) -> dict:
    """kernel id → its registered KnownFindings (what the one rule may call "known" rather than a failure)."""
    from ... import kernels

    return {kid: kernels.get(kid).known_findings for kid in ids}
