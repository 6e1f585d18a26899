"""Chapter 3's live work on a GPU: the ladder record (:func:`measure`) and the variant sweep's record
(:func:`measure_variants`). Both check before they time, through the harness's one routine
(:func:`flashcore.harness.measure.check_then_time`); nothing here writes its own timing loop.

Ladder record (``03_v8_optimization``; ``view`` reads it, and the H100 record of 2026-11-25 has the same fields):

* results — per rung (``v8_seed``, every ``v8_<nn>_<idea>`` step, ``flashcore``) one ``role="mission"`` row (checked,
  then timed; ``parent``, ``predicted_us``, ``idea``, ``source``) and ``role="check"`` rows at ``tail_S`` and
  ``check_S``; the SDPA backends and the Triton kernel as ``role="mission"`` rows;
* extra — ``steps`` (seed + numbered steps), ``ladder`` (every rung: id, parent, predicted_us, idea, source, moving,
  threads), ``mission``, ``best`` (the kernel the sweep follows), ``sweep`` (rows of
  :func:`~flashcore.harness.measure.scaling_sweep`, ``big`` marking the large point), ``big``, ``sass`` (counts per
  rung), ``sanitizer`` (summaries) and ``sanitizer_verdicts`` (per tool and rung, by the one rule), ``ncu`` (one tidy
  row per rung), ``ncu_reports``, ``ncu_info``, ``compile_errors``, ``errors`` (a phase that failed), ``phases_s``.

Variants record (``03_v8_variants``): one row per variant and shape (``role="variant"``, with ``base``,
``cluster``, ``stages``, ``ctas`` and ``split`` — the launch it made), ``role="check"`` rows at the extra check
shapes, cuDNN as ``role="peer"`` rows; extra ``variants`` (the data below), ``mission``, ``shapes``,
``check_shapes``, ``library``, ``compile_errors``, ``phases_s``.

Imports that touch a GPU (torch, CuPy) happen inside the harness and compile functions when they run.
"""
from __future__ import annotations

import dataclasses
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

from ... import kernels
from ...compile import load_kernel
from ...harness import measure as harness
from ...specs import v8_mma
from ...tools import profile, sanitize, sass
from . import DEFAULTS, LIBRARY, MOVING, VARIANT_DEFAULTS

STEP_RE = re.compile(r"v8_\d\d_\w+")
SDPA_PEERS = ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "sdpa_default")
SWEEP_SDPA = ("sdpa_cudnn", "sdpa_flash")
SANITIZER_TOOLS = ("memcheck", "racecheck")
NCU_TIMEOUT_S = 300
SANITIZER_TIMEOUT_S = 150


# ------------------------------------------------------------------------------------------------ the ladder
def step_ids(steps="all", registry: Optional[Sequence] = None) -> List[str]:
    """``v8_seed`` then every registered ``v8_<nn>_<idea>`` id, sorted; ``steps`` ("all" or "id,id,…") picks some."""
    reg = {s.id: s for s in (registry if registry is not None else kernels.all_specs())}
    ids = (["v8_seed"] if "v8_seed" in reg else []) + sorted(i for i in reg if STEP_RE.fullmatch(i))
    if steps in (None, "", "all"):
        return ids
    wanted = [s.strip() for s in (steps.split(",") if isinstance(steps, str) else steps) if s.strip()]
    unknown = [s for s in wanted if s not in ids]
    if unknown:
        raise KeyError(f"unknown v8 step(s) {unknown}; the registry has {ids}")
    return [i for i in ids if i in wanted]


def moving_metric(spec) -> str:
    """The ncu metric a rung's idea should move: a spec tag ``moving=<metric>``, else the chapter's table."""
    for t in spec.tags:
        if isinstance(t, str) and t.startswith("moving="):
            return t.split("=", 1)[1]
    return MOVING.get(spec.id, ("duration_us",))[0]


def ladder_entry(spec) -> dict:
    return dict(id=spec.id, parent=spec.parent, predicted_us=spec.predicted_us, idea=spec.idea, source=spec.source,
                moving=moving_metric(spec), threads=spec.threads)


def rung_contender(spec) -> harness.Contender:
    """A registered rung (compiled now), whose mission row carries its place on the ladder."""
    c = harness.kernel(spec.id)
    fields = dict(source=spec.source, parent=spec.parent, predicted_us=spec.predicted_us, idea=spec.idea)
    return dataclasses.replace(c, fields=lambda shape: dict(fields))


class _Phases:
    """Seconds per phase, and the error of a phase that failed (the record keeps what the others measured)."""

    def __init__(self, run):
        self.run, self.t0, self.seconds, self.errors = run, time.time(), {}, {}

    def __call__(self, name, fn, *args, **kw):
        t = time.time()
        try:
            return fn(*args, **kw)
        except Exception as exc:      # one phase failing (ncu missing, a hang killed) must not lose the record
            self.errors[name] = f"{type(exc).__name__}: {str(exc)[-1500:]}"
            return None
        finally:
            self.seconds[name] = round(time.time() - t, 1)
            self.run.extra["phases_s"] = dict(self.seconds)
            if self.errors:
                self.run.extra["errors"] = dict(self.errors)


def measure(run, params: dict) -> None:
    """The ladder record: checks, timings beside the peers, the scaling sweep, SASS, sanitizers, Nsight Compute."""
    p = dict(DEFAULTS, **params)
    B, H, S, D = (int(p[k]) for k in ("B", "H", "S", "D"))
    samples = int(p["samples"])
    reg = {s.id: s for s in kernels.all_specs()}
    ids = step_ids(p["steps"])
    rung_ids = ids + ([LIBRARY] if LIBRARY in reg and LIBRARY not in ids else [])
    phase = _Phases(run)
    run.extra.update(steps=ids, ladder=[ladder_entry(reg[i]) for i in rung_ids], mission=[B, H, S, D])

    # 0. Compile every rung (a rung that does not compile is recorded, not fatal).
    ours, compile_errors = [], {}
    for i in rung_ids:
        t = time.time()
        try:
            ours.append(rung_contender(reg[i]))
        except Exception as exc:
            compile_errors[i] = f"{type(exc).__name__}: {str(exc)[:2000]}"
            run.add_result(i, B, H, S, D, role="mission", error=compile_errors[i], parent=reg[i].parent,
                           predicted_us=reg[i].predicted_us, idea=reg[i].idea, source=reg[i].source)
        phase.seconds[f"compile {i}"] = round(time.time() - t, 1)
    run.extra["compile_errors"] = compile_errors

    # 1. Check every rung at the mission shape (then time it) and at a tail, a tiny and a long length; the peers
    #    beside them on the same inputs (same seed), the SDPA backends as the yardstick, Triton checked.
    checks = [(B, H, s) for s in dict.fromkeys([int(p["tail_S"])] + [int(x) for x in p["check_S"]]) if s != S]
    phase("check and time", harness.check_then_time, run, ours, B, H, S, D, samples=samples, check_shapes=checks,
          role="mission")
    tri = harness.triton() if p.get("triton", True) else None
    peers = [harness.sdpa(n) for n in SDPA_PEERS] + ([tri] if tri is not None else [])
    phase("peers", harness.check_then_time, run, peers, B, H, S, D, samples=samples, role="mission")

    # 2. The scaling sweep: the library kernel (else the fastest passing rung) against cuDNN, FA2 and Triton.
    mission = {r["kernel"]: r for r in run.results if r.get("role") == "mission" and r.get("median_us")}
    passing = [c for c in ours if mission.get(c.id, {}).get("passed")]
    best = next((c for c in passing if c.id == LIBRARY), None) or (
        min(passing, key=lambda c: mission[c.id]["median_us"]) if passing else None)
    run.extra["best"] = best.id if best else None
    bs, hs = (int(x) for x in p["sweep_BH"])
    big = [int(x) for x in p["big"]]
    run.extra["big"] = big
    points = [(bs, hs, int(s)) for s in p["sweep_S"]] + [tuple(big[:3])]
    sweepers = ([best] if best else []) + [harness.sdpa(n) for n in SWEEP_SDPA] + ([tri] if tri is not None else [])
    rows = phase("scaling sweep", harness.scaling_sweep, sweepers, points, D=D, samples=max(10, samples // 3)) or []
    for r in rows:
        r["big"] = (r["B"], r["H"], r["S"]) == tuple(big[:3])
    run.extra["sweep"] = rows

    # 3. SASS: static instruction counts of each rung's nvcc cubin (nvcc runs in parallel, one process a rung).
    run.extra["sass"] = phase("sass", sass_counts, [reg[i] for i in rung_ids]) or {}

    ok_ids = [c.id for c in ours]
    shape = f"{B},{H},{S},{D}"
    # 4. compute-sanitizer memcheck and racecheck, one process per tool and rung, at small tail shapes.
    if p.get("sanitize", True) and ok_ids:
        summaries = phase("sanitize", sanitize.run_jobs, SANITIZER_TOOLS, ok_ids, p["sanitize_shapes"],
                          timeout=SANITIZER_TIMEOUT_S) or []
        run.extra["sanitizer"] = [{k: v for k, v in s.items() if k != "per_launch"} for s in summaries]
        run.extra["sanitizer_verdicts"] = sanitizer_verdicts(summaries)

    # 5. Nsight Compute: every rung at the mission shape, the book's sections, one report.
    if p.get("ncu", True) and ok_ids:
        phase("ncu", profile_rungs, run, ok_ids, shape)


def sanitizer_verdicts(summaries: Sequence[dict]) -> List[dict]:
    """Per (tool, rung): the one rule's verdict over every process that ran it (a process superseded by per-shape
    reruns after an abort does not count)."""
    live = [s for s in summaries if not s.get("superseded")]
    out: Dict[tuple, dict] = {}
    for v in sanitize.verdicts(live):
        key = (v["tool"], v["kernel"])
        if key in out:
            out[key]["clean"] = sanitize.combine([out[key]["clean"], v["clean"]])
            out[key]["problems"] += v["problems"]
            out[key]["launches"] += v["launches"]
            out[key]["first"] = out[key]["first"] or v["first"]
        else:
            out[key] = dict(v)
    return list(out.values())


def sass_counts(specs: Sequence) -> dict:
    """{kernel id: SASS evidence counts (or the error)} from nvcc cubins, compiled in parallel."""
    def one(spec):
        try:
            return spec.id, dict(sass.evidence(spec), cubin_from="nvcc sm_90")
        except Exception as exc:    # no nvcc / cuobjdump on this host: the view computes it on the book machine
            return spec.id, dict(error=str(exc)[:300])

    with ThreadPoolExecutor(max_workers=8) as ex:
        return dict(ex.map(one, specs))


def profile_rungs(run, ids: Sequence[str], shape: str) -> None:
    """One Nsight Compute report of every rung (``sections=profile.BOOK_SECTIONS``); if that process fails, one
    report per rung, so one rung cannot cost the others their evidence."""
    info: dict = dict(sections=list(profile.BOOK_SECTIONS), shape=shape)
    rows, files = {}, {}
    path = run.dir / "ladder.ncu-rep"
    t = time.time()
    try:
        profile.ncu_profile(path, kernels=list(ids), shapes=shape, sections=profile.BOOK_SECTIONS,
                            timeout=NCU_TIMEOUT_S)
        report = profile.read_report(path)
        for i in ids:
            mine = profile.rows_for(report, i)
            if mine:
                rows[i], files[i] = mine[-1], run.rel(path)
        info["seconds"] = round(time.time() - t, 1)
    except Exception as exc:
        info["combined_error"] = str(exc)[-1500:]
    for i in [i for i in ids if i not in rows]:
        one = run.dir / f"{i}.ncu-rep"
        try:
            profile.ncu_profile(one, kernels=[i], shapes=shape, sections=profile.BOOK_SECTIONS, timeout=120)
            mine = profile.rows_for(profile.read_report(one), i)
            if mine:
                rows[i], files[i] = mine[-1], run.rel(one)
        except Exception as exc:
            info.setdefault("errors", {})[i] = str(exc)[-1500:]
    B, H, S, _ = (int(x) for x in shape.split(","))
    for r in run.results:
        if r["kernel"] in files and r.get("role") == "mission" and (r["B"], r["H"], r["S"]) == (B, H, S):
            r["ncu_report"] = files[r["kernel"]]
    run.extra.update(ncu=rows, ncu_reports=files, ncu_info=info)


# ------------------------------------------------------------------------------------------------ the variants
@dataclasses.dataclass(frozen=True)
class Variant:
    """One point of the variant sweep: a split-KV ladder kernel (``base``) built with ``-D CLUSTER=`` and
    ``-D STAGES=``, launched with the grid and split decision of that cluster size. ``registered`` names the
    registered kernel that is this same point (the chapter times it too, under its own id)."""

    base: str
    cluster: int
    stages: int
    registered: Optional[str] = None

    @property
    def id(self) -> str:
        return f"{self.base}@C{self.cluster}S{self.stages}"

    @property
    def defines(self) -> tuple:
        return (("CLUSTER", str(self.cluster)), ("STAGES", str(self.stages)))

    def row(self) -> dict:
        return dict(id=self.id, base=self.base, cluster=self.cluster, stages=self.stages,
                    registered=self.registered, kind="build")


# The sweep that chose flashcore: v8_07 (64-row tiles, pushed partials) over cluster size × ring depth, and the
# two-m-tile branch (v8_09) at the point chosen for v8_07. Cluster sizes stop at 8, the portable maximum; a 4-stage
# ring is the deepest whose shared memory (with the split landing buffer) still lets two CTAs share an SM.
VARIANTS = tuple(Variant("v8_07_dsmem_push", c, s, registered={(4, 2): "v8_07_dsmem_push",
                                                                (2, 3): "flashcore"}.get((c, s)))
                 for c in (2, 4, 8) for s in (2, 3, 4)) + (Variant("v8_09_two_mtiles", 2, 3),)
# The registered kernels timed beside their builds: (cluster, stages) of each. v8_07's are its source's defaults;
# flashcore's are its spec's (kernels/flashcore.cu).
REGISTERED_POINTS = {"v8_07_dsmem_push": (v8_mma.CLUSTER, 2),
                     "flashcore": (v8_mma.FLASHCORE_CLUSTER, v8_mma.FLASHCORE_STAGES)}


def variant_spec(v: Variant):
    """The registry-free spec of a variant: the base's spec with the variant's cluster size in its split decision
    and grid (the kernel traps if they disagree with its CLUSTER). Build it with ``load_kernel(spec,
    defines=v.defines)``; the kernel reports its own shared memory for its STAGES."""
    base = kernels.get(v.base)
    split = getattr(base, "split", None)
    if not isinstance(split, v8_mma.SplitKV):
        raise ValueError(f"{v.base} is not a split-KV cluster kernel (its spec has no SplitKV), so it has no "
                         f"cluster size to vary")
    if not 2 <= v.cluster <= 8 or split.block_m % v.cluster or v.stages < 2:
        raise ValueError(f"{v.id}: the cluster size must be 2 … 8 and divide the {split.block_m}-row query tile; "
                         f"the ring needs at least 2 stages")
    vsplit = dataclasses.replace(split, cluster=v.cluster)
    return dataclasses.replace(base, id=v.id, split=vsplit, grid=vsplit.grid, parent=v.base, predicted_us=None,
                               idea=f"{v.base} built with CLUSTER={v.cluster}, STAGES={v.stages}",
                               tags=tuple(base.tags) + ("variant",))


def _launch_fields(launcher, extra: dict):
    """Row fields: the variant's knobs and the launch it made at this shape (CTAs, split or not)."""
    def fields(shape):
        B, H, S, S_kv = shape
        out = dict(extra)
        try:
            _, split, grid, _, _ = launcher.plan(B * H, S, S_kv)
            out.update(ctas=int(grid[0] * grid[1] * grid[2]), split=bool(split))
        except Exception as exc:       # an older launcher without plan(): the row says so
            out["plan_error"] = str(exc)[:200]
        return out
    return fields


def variant_contender(v: Variant) -> harness.Contender:
    spec = variant_spec(v)
    launch = load_kernel(spec, defines=v.defines)
    return harness.Contender(v.id, launch=lambda q, k, v_, o: launch(q, k, v_, o),
                             timed=lambda q, k, v_, o: (lambda: launch(q, k, v_, o)),
                             fields=_launch_fields(launch, dict(base=v.base, cluster=v.cluster, stages=v.stages,
                                                                source=spec.source)))


def registered_contender(kid: str, same_code_as: Optional[str]) -> harness.Contender:
    spec = kernels.get(kid)
    launch = load_kernel(spec)
    cluster, stages = REGISTERED_POINTS[kid]
    extra = dict(base=spec.parent if kid == LIBRARY else kid, cluster=cluster, stages=stages, source=spec.source)
    if same_code_as:
        extra["same_code_as"] = same_code_as
    return harness.Contender(kid, launch=lambda q, k, v_, o: launch(q, k, v_, o),
                             timed=lambda q, k, v_, o: (lambda: launch(q, k, v_, o)),
                             fields=_launch_fields(launch, extra))


def measure_variants(run, params: dict) -> None:
    """The variant sweep's record: every variant (and the registered kernels at their points) checked, then timed
    beside cuDNN, at the mission shape and at ``shapes``; checked also at ``check_shapes``."""
    p = dict(VARIANT_DEFAULTS, **params)
    B, H, S, D = (int(p[k]) for k in ("B", "H", "S", "D"))
    samples = int(p["samples"])
    variants = [x if isinstance(x, Variant) else Variant(**x) for x in (p.get("variants") or VARIANTS)]
    shapes = [tuple(int(x) for x in s[:3]) for s in p["shapes"]]
    checks = [tuple(int(x) for x in s) for s in p["check_shapes"]]
    phase = _Phases(run)
    entries, contenders, errors = [], [], {}
    for v in variants:
        t = time.time()
        try:
            contenders.append(variant_contender(v))
            entries.append(v.row())
        except Exception as exc:        # a variant that does not build is recorded, not fatal
            errors[v.id] = f"{type(exc).__name__}: {str(exc)[:2000]}"
            entries.append(dict(v.row(), error=errors[v.id]))
        phase.seconds[f"compile {v.id}"] = round(time.time() - t, 1)
    for kid, (cluster, stages) in REGISTERED_POINTS.items():
        point = next((v for v in variants if v.registered == kid), None)
        same = point.id if point and kernels.get(kid).source == kernels.get(point.base).source else None
        try:
            contenders.append(registered_contender(kid, same))
            entries.append(dict(id=kid, base=point.base if point else kid, cluster=cluster, stages=stages,
                                registered=kid, kind="registered", same_code_as=same))
        except Exception as exc:
            errors[kid] = f"{type(exc).__name__}: {str(exc)[:2000]}"
    run.extra.update(variants=entries, mission=[B, H, S, D], shapes=[list(s) for s in shapes],
                     check_shapes=[list(s) for s in checks], library=LIBRARY, compile_errors=errors)
    cudnn = [harness.sdpa("sdpa_cudnn")]
    phase("mission", harness.check_then_time, run, contenders, B, H, S, D, samples=samples, check_shapes=checks,
          role="variant")
    phase("mission cuDNN", harness.check_then_time, run, cudnn, B, H, S, D, samples=samples, role="peer")
    for (b, h, s) in shapes:
        phase(f"B{b} H{h} S{s}", harness.check_then_time, run, contenders, b, h, s, D, samples=samples,
              role="variant")
        phase(f"B{b} H{h} S{s} cuDNN", harness.check_then_time, run, cudnn, b, h, s, D, samples=samples, role="peer")
