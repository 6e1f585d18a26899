"""Chapter 5's live work on a GPU: the ``05_hopper`` record. Everything is checked before it is timed, through the
harness's one routine (:func:`flashcore.harness.measure.check_then_time`); nothing here writes its own timing loop.

Record (``view`` reads it):

* results — per rung and per knob build, at each of ``time_shapes``, one row (``role="time"``; checked, then timed)
  beside cuDNN, FA2, the Triton kernel and the v8 library kernel ``flashcore``; ``role="check"`` rows at
  ``check_shapes`` (tails, S_q ≠ S_kv, B·H up to 512); the crossover grid as ``stage="grid"`` rows (timed only:
  every contender of the grid was checked above), ``flashcore``, ``flashcore_hopper``, ``hopper_02_tma`` and the
  peers at each grid shape;
* extra — ``ladder`` (id, parent, idea, source, predicted), ``knobs`` (id → -D defines), ``watchdog`` (each WATCHDOG
  build at small shapes: it must finish with no record) and ``fault`` (the FAULT_SKIP_RELEASE build: it must give
  up, with the diagnosis), ``ptxas`` (registers, spills, the wgmma-serialisation warnings per build), ``sass``
  (instruction counts), ``sanitizer`` / ``sanitizer_verdicts``, ``ncu`` (one tidy row per kernel), ``ncu_reports``,
  ``phases_s``, ``errors``.

Imports that touch a GPU (torch, CuPy) happen inside the harness and compile functions when they run.
"""
from __future__ import annotations

import dataclasses
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List, Sequence

from ... import kernels
from ...compile import load_kernel, nvcc_compile
from ...harness import measure as harness
from ...specs import hopper as hopper_specs
from ...tools import sanitize, sass
from ..v8.measure import _Phases, profile_rungs, sanitizer_verdicts
from . import DEFAULTS, LIBRARY, PREDICTED, RUNGS, V8_LIBRARY

SDPA_PEERS = ("sdpa_cudnn", "sdpa_flash")
SANITIZER_TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")     # all four on the library kernel
RUNG_TOOLS = ("memcheck", "racecheck")                                   # the rungs: the two of chapter 3
SANITIZER_TIMEOUT_S = 200
# ptxas warnings that mean a wgmma was serialised (the compiler inserted waits it could not prove unnecessary)
WGMMA_WARNINGS = re.compile(r"\b(C7515|C7519|C7508|C7510)\b[^\n]*")


def ladder_entry(spec) -> dict:
    return dict(id=spec.id, parent=spec.parent, idea=spec.idea, source=spec.source, threads=spec.threads,
                predicted=dict(PREDICTED.get(spec.id, {}), moving=list(PREDICTED.get(spec.id, {}).get("moving", ()))))


def knob_spec(knob: str):
    """The registry-free spec of a knob build of flashcore_hopper (its geometry follows the knob)."""
    base = kernels.get(LIBRARY)
    geo = hopper_specs.KNOB_GEOMETRY.get(knob)
    if geo is None:
        return dataclasses.replace(base, id=knob, parent=LIBRARY, tags=tuple(base.tags) + ("knob",))
    return dataclasses.replace(base, id=knob, parent=LIBRARY, threads=geo.threads, grid=geo.grid,
                               extra_args=geo.tma_args, tags=tuple(base.tags) + ("knob",))


def knob_contender(knob: str) -> harness.Contender:
    spec = knob_spec(knob)
    launch = load_kernel(spec, defines=hopper_specs.KNOBS[knob])
    return harness.Contender(knob, launch=lambda q, k, v, o: launch(q, k, v, o),
                             timed=lambda q, k, v, o: (lambda: launch(q, k, v, o)),
                             fields=lambda shape: dict(source=spec.source, defines=dict(hopper_specs.KNOBS[knob])))


def ptxas_rows(builds: Sequence[tuple]) -> List[dict]:
    """``-Xptxas -v`` of each (label, spec, defines) build with nvcc, in parallel: registers, spills, stack, and any
    warning that a wgmma was serialised."""
    def one(b):
        label, spec, defines = b
        try:
            rep = nvcc_compile(spec, defines=defines)
            return dict(build=label, kernel=spec.id, arch=rep.arch, registers=rep.registers,
                        spill_stores=rep.spill_stores, spill_loads=rep.spill_loads, stack_bytes=rep.stack_bytes,
                        smem_dynamic=rep.smem_dynamic[0],
                        wgmma_warnings=sorted(set(m.group(0).strip() for m in WGMMA_WARNINGS.finditer(rep.log))))
        except Exception as exc:   # no nvcc on this host: the row says so
            return dict(build=label, kernel=spec.id, error=f"{type(exc).__name__}: {str(exc)[:300]}")

    with ThreadPoolExecutor(max_workers=8) as ex:
        return list(ex.map(one, builds))


def guarded(spec, B: int, H: int, S: int, S_kv: int, cycles: int, defines: tuple = ()) -> dict:
    """One launch of a WATCHDOG build; never raises for a timeout: {finished, seconds, rows, diagnosis, ...}."""
    import numpy as np
    import torch

    from ... import watchdog
    from ...harness.check import make_inputs

    launch = load_kernel(spec, defines=defines)
    q, k, v = make_inputs(B, H, S, 64, seed=7, S_kv=S_kv)
    o = torch.full_like(q, float("nan"))
    shape, _, grid, _, _ = launch.plan(B * H, S, S_kv)
    import cupy

    buf = watchdog.allocate(grid[0], cupy)
    geo = hopper_specs.GEOMETRY[spec.entry]
    extra = geo.tma_args(shape, kernels.LaunchTensors(q, k, v, o, cupy)) + (buf, np.int64(cycles))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    launch(q, k, v, o, extra=extra)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    rows = watchdog.decode(buf)
    return dict(kernel=spec.id, defines=dict(defines), shape=[B, H, S, S_kv], cycles=int(cycles),
                seconds=round(seconds, 4), finished=not rows, records=len(rows), rows=rows[:16],
                diagnosis=watchdog.diagnose(rows), output_unwritten=int(torch.isnan(o).sum()),
                output_elements=int(o.numel()))


def measure(run, params: dict) -> None:
    """The chapter's record: checks and timings of the ladder, the knobs and the peers; the crossover grid; the
    watchdog and fault runs; ptxas and SASS; sanitizers; Nsight Compute."""
    p = dict(DEFAULTS, **params)
    t_start = time.time()
    budget = p.get("budget_s")             # seconds the whole measure may take (None: no limit)

    def left() -> float:
        return float("inf") if not budget else budget - (time.time() - t_start)

    samples = int(p["samples"])
    reg = {s.id: s for s in kernels.all_specs()}
    rung_ids = [i for i in RUNGS if i in reg]
    phase = _Phases(run)
    run.extra.update(ladder=[ladder_entry(reg[i]) for i in rung_ids], big=list(p["big"]), mission=list(p["mission"]),
                     knobs={k: dict(hopper_specs.KNOBS[k]) for k in p["knobs"]})

    # 0. Compile: the rungs, the knob builds, the v8 library kernel, the peers.
    ours, errors = [], {}
    for kid in rung_ids + list(p["knobs"]) + [V8_LIBRARY]:
        t = time.time()
        try:
            ours.append(knob_contender(kid) if kid in hopper_specs.KNOBS else harness.kernel(kid))
        except Exception as exc:
            errors[kid] = f"{type(exc).__name__}: {str(exc)[:2000]}"
        phase.seconds[f"compile {kid}"] = round(time.time() - t, 1)
    run.extra["compile_errors"] = errors
    tri = harness.triton() if p.get("triton", True) else None
    peers = [harness.sdpa(n) for n in SDPA_PEERS] + ([tri] if tri is not None else [])

    # 1. Check everything at every check shape (once, at the first time shape), then time at each time shape.
    checks = [tuple(int(x) for x in s) for s in p["check_shapes"]]
    D = int(p["big"][3])
    for n, shape in enumerate(p["time_shapes"]):
        b, h, s = (int(x) for x in shape[:3])
        phase(f"B{b} H{h} S{s}", harness.check_then_time, run, ours, b, h, s, D, samples=samples,
              check_shapes=checks if n == 0 else (), role="time")
        phase(f"B{b} H{h} S{s} peers", harness.check_then_time, run, peers, b, h, s, D, samples=samples,
              role="time")

    # 2. The crossover grid: both library kernels, the small-shape rung, the peers. Only kernels that passed every
    #    check above are timed here.
    failed = {r["kernel"] for r in run.results if r.get("passed") is False}
    by_id = {c.id: c for c in ours}
    gridders = [by_id[i] for i in (V8_LIBRARY, LIBRARY, "hopper_02_tma") if i in by_id and i not in failed]
    gridders += [harness.sdpa("sdpa_cudnn"), harness.sdpa("sdpa_flash")] + ([tri] if tri is not None else [])
    rows = phase("grid", harness.scaling_sweep, gridders, [tuple(int(x) for x in g) for g in p["grid"]], D=D,
                 samples=int(p["grid_samples"]),
                 lpg=lambda pt: 20 if pt[0] * pt[1] * max(pt[2], pt[3] if len(pt) > 3 else pt[2]) <= 8 * 4096 else 4)
    for r in rows or []:
        run.add_result(r.pop("kernel"), r.pop("B"), r.pop("H"), r.pop("S"), r.pop("D"), stage="grid", **r)

    # 3. WATCHDOG builds must finish with no record; the fault-injected build must give up with a diagnosis.
    wd_shapes = [tuple(int(x) for x in s) for s in p["watchdog_shapes"]]
    cycles = int(p["watchdog_cycles"])
    run.extra["watchdog"] = phase("watchdog", _watchdog_all, reg, wd_shapes, cycles)
    run.extra["fault"] = phase("fault", guarded, reg[LIBRARY + "_watchdog"], *(int(x) for x in p["fault_shape"]), cycles,
                               defines=(("FAULT_SKIP_RELEASE", "1"),)) if LIBRARY + "_watchdog" in reg else None

    # 4. ptxas and SASS (nvcc on this host): every rung, watchdog and knob build.
    builds = [(i, reg[i], ()) for i in rung_ids]
    builds += [(i, reg[i], ()) for i in reg if i.endswith("_watchdog") and reg[i].chapter == hopper_specs.CHAPTER]
    builds += [(k, reg[LIBRARY], hopper_specs.KNOBS[k]) for k in p["knobs"]]
    builds += [(f"{LIBRARY}_watchdog+FAULT_SKIP_RELEASE", reg[LIBRARY + "_watchdog"],
                (("FAULT_SKIP_RELEASE", "1"),))] if LIBRARY + "_watchdog" in reg else []
    run.extra["ptxas"] = phase("ptxas", ptxas_rows, builds) or []
    run.extra["sass"] = phase("sass", _sass_counts, [reg[i] for i in rung_ids]) or {}

    # 5. compute-sanitizer: all four tools on the library kernel, memcheck and racecheck on the other rungs.
    ok = [i for i in rung_ids if i not in errors]
    skipped = run.extra.setdefault("skipped", {})
    if p.get("sanitize", True) and ok and left() < 150:
        skipped["sanitize"] = f"{left():.0f} s of the budget left"
    elif p.get("sanitize", True) and ok:
        jobs = [(SANITIZER_TOOLS, [i for i in ok if i == LIBRARY]), (RUNG_TOOLS, [i for i in ok if i != LIBRARY])]
        summaries = []
        for tools, ids in jobs:
            if ids:
                summaries += phase(f"sanitize {','.join(tools)}", sanitize.run_jobs, tools, ids,
                                   p["sanitize_shapes"], timeout=int(min(SANITIZER_TIMEOUT_S, left() / 2))) or []
        run.extra["sanitizer"] = [{k: v for k, v in s.items() if k != "per_launch"} for s in summaries]
        run.extra["sanitizer_verdicts"] = sanitizer_verdicts(summaries)

    # 6. Nsight Compute at the compute-bound shape: every rung and the v8 library kernel (one report).
    if p.get("ncu", True) and ok and left() < 90:
        skipped["ncu"] = f"{left():.0f} s of the budget left"
    elif p.get("ncu", True) and ok:
        big = ",".join(str(int(x)) for x in p["big"])
        phase("ncu", profile_rungs, run, ok + [V8_LIBRARY], big)


def _watchdog_all(reg, shapes, cycles) -> List[dict]:
    out = []
    for spec in reg.values():
        if spec.chapter == hopper_specs.CHAPTER and "watchdog" in spec.tags:
            for (B, H, S, *rest) in shapes:
                out.append(guarded(spec, B, H, S, rest[0] if rest else S, cycles))
    return out


def _sass_counts(specs) -> dict:
    def one(spec):
        try:
            return spec.id, dict(sass.evidence(spec), cubin_from="nvcc sm_90a")
        except Exception as exc:
            return spec.id, dict(error=str(exc)[:300])

    with ThreadPoolExecutor(max_workers=8) as ex:
        return dict(ex.map(one, specs))
