"""The library's GPU sweep, one command: ``python -m flashcore sweep [--quick]``.

1. **Fuzz** every library kernel — ``flashcore`` (once the v8 chapter registers it) and the Triton peer
   ``triton_attention`` (if Triton imports) — over :func:`flashcore.fuzz.cases_for` (200 cases each; ``--quick``:
   12; ``--cases 500`` for the feature bar), against the fp64 reference with the harness's pass rule, over the
   features the library runs — GQA ratios and MQA, the scale (negative, 0, tiny, large), S_q ≠ S_kv, S_q = 1 — and,
   with ``FLASHCORE_UNVERIFIED=1``, over the kernel variants that await their GPU check too (bf16, D = 128, causal);
   the record keeps a summary per feature (``extra["fuzz_features"]``) and says which (``params["unverified"]``). Plus the NaN/Inf checks against SDPA, and a smoke test of the library
   call's other paths (default dispatch, CuPy, empty input, side stream, copy=False).
2. **compute-sanitizer** (memcheck, racecheck, synccheck, initcheck; ``--quick``: memcheck only) over every
   registered kernel that is not kept as a failure, at two shapes: a small tail shape and the mission shape.

It writes ONE run record, notebook id ``sweep``: a result row per fuzz case (``stage="fuzz"``) and per sanitized
kernel and shape (``stage="sanitize"``, ``clean`` and the problems per tool); ``extra`` holds the fuzz summary
(``fuzz``), the NaN/Inf checks (``special_values``), the call's paths (``api_smoke``), the sanitizer
verdicts (``sanitizer``) and the overall ``verdict``. :func:`status_rows` turns such a record into the rows the
book's execution-status page shows.
``--kernels id,id`` picks the fuzzed kernels (``fuzz_ids``): a Hopper kernel (``flashcore_hopper``,
``hopper_02_tma``) is fuzzed through the call forced to it (``kernel=<id>``) over the library-level features that
reach it — GQA / MQA (the library repeats k and v), every scale class (the library negates q / clamps the scale),
S_q ≠ S_kv, S_q = 1, tails — never bf16, D = 128 or causal, which it does not declare. ``--sanitize id,id`` picks
the sanitized kernels (``sanitize_ids``; an empty string: none, and the verdict then rests on the fuzz and the
smoke test, with ``sanitizer_run`` false).
Exit status 0 if every case passed and every tool was clean, 1 otherwise (the record is written either way).
``--budget`` (default 540 s, quick 200 s) caps the sanitizer's timeouts so the command fits one GPU call; a tool
cut off by it is recorded as not clean, never as clean.
"""
from __future__ import annotations

import os
import sys
import time
from typing import List, Optional, Sequence

NOTEBOOK = "sweep"
TAIL_SHAPE = (1, 3, 77, 64)
MISSION_SHAPE = (1, 8, 512, 64)
FULL_CASES = 200
QUICK_CASES = 12


def library_kernels() -> List[str]:
    """The kernels the fuzz covers: ``flashcore`` if registered, ``triton_attention`` if Triton imports."""
    from . import kernels, triton_peer
    from .dispatch import LIBRARY_KERNEL

    ids = [s.id for s in kernels.all_specs() if s.id == LIBRARY_KERNEL]
    if triton_peer.available():
        ids.append("triton_attention")
    return ids


def sanitizer_kernels(specs=None) -> List[str]:
    """Every registered attention kernel that is not kept as a failure (``expect_failure``). Control kernels are
    left to the chapter that runs them (chapter 2 runs synccheck on each, one process per kernel)."""
    from . import kernels

    specs = kernels.all_specs() if specs is None else specs
    return sorted(s.id for s in specs if not s.expect_failure and not kernels.is_control(s))


def run_sweep(quick: bool = False, cases: Optional[int] = None, tools: Optional[Sequence[str]] = None,
              seed: int = 0, progress: bool = True, runs_dir=None, sanitize_timeout: Optional[int] = None,
              fuzz_ids: Optional[Sequence[str]] = None, sanitize_ids: Optional[Sequence[str]] = None,
              provenance: Optional[dict] = None, smoke_kernel: Optional[str] = None,
              budget: Optional[float] = None, workers: int = 8, unverified: Optional[bool] = None):
    """Everything above into one record; returns (record path, summary dict). ``unverified`` (default: the
    environment's ``FLASHCORE_UNVERIFIED=1``) also fuzzes the library kernel's variants that await their GPU check
    (bf16, D = 128, causal, grouped heads and special scales in the kernel)."""
    from . import fuzz, records
    from .tools import sanitize

    n = cases or (QUICK_CASES if quick else FULL_CASES)
    if unverified is None:
        unverified = os.environ.get("FLASHCORE_UNVERIFIED") == "1"
    tools = list(tools or (("memcheck",) if quick else sanitize.TOOLS))
    fuzz_ids = list(library_kernels() if fuzz_ids is None else fuzz_ids)
    sanitize_ids = list(sanitizer_kernels() if sanitize_ids is None else sanitize_ids)
    shapes = [TAIL_SHAPE, MISSION_SHAPE]
    params = dict(quick=quick, cases=n, tools=tools, seed=seed, fuzz_kernels=fuzz_ids,
                  sanitize_kernels=sanitize_ids, shapes=[list(s) for s in shapes], unverified=bool(unverified))
    kw = dict(runs_dir=runs_dir) if runs_dir else {}
    run = records.Run(NOTEBOOK, params=params, command=os.environ.get("FLASHCORE_COMMAND", " ".join(sys.argv)),
                      provenance=provenance, **kw)
    t0 = time.time()
    deadline = t0 + budget if budget else None     # caps the sanitizer's timeouts (the fuzz is bounded by n)

    fuzz_summary, feature_summary, specials = {}, {}, {}
    for kid in fuzz_ids:
        rows = fuzz.fuzz_kernel(kid, n=n, seed=seed, progress=progress, unverified=bool(unverified))
        for r in rows:
            fields = {k: v for k, v in r.items() if k not in ("kernel", "B", "H", "S", "S_kv", "D", "dtype",
                                                              "causal")}
            run.add_result(kid, r["B"], r["H"], r["S"], r.get("D", 64), S_kv=r["S_kv"], stage="fuzz",
                           dtype=r.get("dtype", "float16"), causal=bool(r.get("causal")),
                           **{**dict(max_abs_err=None, deterministic=None), **fields})
        fuzz_summary[kid] = fuzz.summarize(kid, rows)
        feature_summary[kid] = fuzz.feature_summary(rows)
        specials[kid] = fuzz.special_values(_library_fn(kid))
    run.extra["fuzz"] = fuzz_summary
    run.extra["fuzz_features"] = feature_summary
    run.extra["special_values"] = specials
    if smoke_kernel is None:
        cuda_ids = [k for k in fuzz_ids if k != "triton_attention"]
        smoke_kernel = "flashcore" if "flashcore" in cuda_ids else (cuda_ids[0] if cuda_ids else None)
    run.extra["api_smoke"] = fuzz.api_smoke(kernel=smoke_kernel)
    t_fuzz = time.time() - t0

    sanitizer = dict(tools=tools, shapes=[sanitize.shape_str(s) for s in shapes], kernels=sanitize_ids, summaries=[],
                     verdicts=[], workers=workers)
    if sanitize_ids:
        from . import kernels as _kernels

        known = {s_.id: s_.known_findings for s_ in _kernels.all_specs() if s_.id in sanitize_ids}
        shape_arg = ";".join(sanitize.shape_str(s) for s in shapes)
        t_san = time.time()
        raw = sanitize.run_jobs(tools, sanitize_ids, shape_arg, timeout=sanitize_timeout or (100 if quick else 300),
                            workers=workers, deadline=deadline, progress=progress)
        sanitizer["seconds"] = round(time.time() - t_san, 1)
        for s in raw:
            sanitizer["summaries"].append({k: v for k, v in s.items() if k != "per_launch"})
            if not s.get("superseded"):
                sanitizer["verdicts"] += sanitize.verdicts([s], known)
        for row in sanitize.rows([s for s in raw if not s.get("superseded")], shapes, known=known):
            B, H, S, D = (int(x) for x in row["shape"].split(","))
            run.add_result(row["kernel"], B, H, S, D, stage="sanitize", clean=row["clean"], tools=row["tools"],
                           known=row["known"])
    run.extra["sanitizer"] = sanitizer
    fuzz_ok = all(s["passed"] for s in fuzz_summary.values())
    san_rows = [r for r in run.results if r.get("stage") == "sanitize"]
    san_ok = bool(san_rows) and all(r.get("clean") in (True, "known") for r in san_rows)   # known: explained, listed
    if not sanitize_ids:
        san_ok = None                                      # not asked for (--sanitize ""): neither clean nor not
    smoke_ok = all(r["ok"] for r in run.extra["api_smoke"])
    run.extra["verdict"] = dict(fuzz_passed=fuzz_ok, sanitizer_clean=san_ok, api_smoke_passed=smoke_ok,
                                sanitizer_run=bool(sanitize_ids),
                                passed=fuzz_ok and san_ok is not False and smoke_ok,
                                fuzz_kernels=fuzz_ids, sanitized_kernels=len(sanitize_ids),
                                known_findings=sorted({k for r in san_rows for k in r.get("known", [])}),
                                special_values_match_sdpa=all(c.get("matches") for k in specials.values()
                                                              for c in k.values()),
                                special_values_match_sdpa_or_formula=all(
                                    c.get("matches") or c.get("matches_ref64") for k in specials.values()
                                    for c in k.values()),
                                fuzz_seconds=round(t_fuzz, 1), seconds=round(time.time() - t0, 1))
    path = run.save()
    return path, run.extra["verdict"]


def _library_fn(kernel_id: str):
    if kernel_id == "triton_attention":
        from . import triton_peer

        return lambda q, k, v: triton_peer.triton_attention(q, k, v, config=triton_peer.configs()[0])
    from . import api

    return lambda q, k, v: api.attention(q, k, v, kernel=kernel_id)


# ------------------------------------------------------------------------------------------- from a record
def status_rows(record) -> List[dict]:
    """Rows for the execution-status page: one per fuzzed kernel, one per NaN/Inf check set, one per sanitizer
    tool. Keys: check, subject, result, detail, passed. Reads only the record."""
    out = []
    extra = record.get("extra", {})
    for kid, s in extra.get("fuzz", {}).items():
        out.append(dict(check="fuzz vs fp64 reference", subject=kid,
                        result=f"{s['cases'] - s['failures']}/{s['cases']} passed",
                        detail=(f"S {s['s_min']}…{s['s_max']}; {s['tail_cases']} tails, {s['s1_cases']} with S=1, "
                                f"{s['bh1_cases']} with B·H=1, {s['cross_cases']} with S_q≠S_kv; "
                                f"{s['nondeterministic']} non-deterministic"),
                        passed=bool(s["passed"])))
    for kid, feats in extra.get("fuzz_features", {}).items():
        named = {t: f for t, f in feats.items() if t != "all" and t not in ("float16", "D=64", "scale default")}
        if not named:
            continue
        bad = [t for t, f in named.items() if f["failures"]]
        out.append(dict(check="fuzz per feature", subject=kid,
                        result=f"{len(named) - len(bad)}/{len(named)} features without failures",
                        detail="; ".join(f"{t}: {f['cases'] - f['failures']}/{f['cases']}" for t, f in named.items()),
                        passed=not bad))
    for kid, checks in extra.get("special_values", {}).items():
        ok = [n for n, c in checks.items() if c.get("matches")]
        out.append(dict(check="NaN/Inf propagation", subject=kid, result=f"{len(ok)}/{len(checks)} as SDPA",
                        detail=", ".join(f"{n}: " + ("error" if c.get("error") else
                                                     f"{c['n_rows']} rows non-finite (SDPA {c['sdpa_n_rows']}, "
                                                     f"fp64 formula {c['ref64_n_rows']})")
                                         for n, c in checks.items()),
                        passed=all(c.get("matches") or c.get("matches_ref64") for c in checks.values())))
    smoke = extra.get("api_smoke", [])
    if smoke:
        good = [r for r in smoke if r["ok"]]
        out.append(dict(check="library call paths", subject="flashcore.api.attention",
                        result=f"{len(good)}/{len(smoke)} ok",
                        detail="; ".join(f"{r['name']}: {r['detail']}" for r in smoke)[:400],
                        passed=len(good) == len(smoke)))
    san = extra.get("sanitizer", {})
    rows = [r for r in record.get("results", []) if r.get("stage") == "sanitize"]
    for tool in san.get("tools", []):
        per = {(r["kernel"], (r.get("B"), r.get("H"), r.get("S"), r.get("D"))): r.get("tools", {}).get(tool)
               for r in rows}
        verdicts = {key: (t or {}).get("clean") for key, t in per.items()}
        bad = sorted({k for (k, _), v in verdicts.items() if v is False})
        known = sorted({k for (k, _), v in verdicts.items() if v == "known"})
        not_run = sorted({k for (k, _), v in verdicts.items() if v is None})
        clean = [key for key, v in verdicts.items() if v is True]
        whys = sorted({t["known"] for t in per.values() if t and t.get("known")})
        if not verdicts:
            result = "not run"
        elif len(not_run) == len({k for k, _ in verdicts}):
            result = "not run (time budget)"
        elif bad:
            result = "problems"
        elif not_run:
            result = "partly not run"
        elif known:
            result = "clean + known findings"
        else:
            result = "clean"
        detail = f"{len(clean)}/{len(verdicts)} kernel×shape clean"
        if known:
            detail += f"; known finding on {', '.join(known)} — " + " / ".join(whys)
        if bad:
            detail += f"; problems: {', '.join(bad)}"
        if not_run:
            detail += f"; not run: {', '.join(not_run)}"
        out.append(dict(check=f"compute-sanitizer {tool}",
                        subject=f"{len({k for k, _ in verdicts})} kernels × {len(san.get('shapes', []))} shapes",
                        result=result, detail=detail[:600], passed=bool(verdicts) and not bad and not not_run))
    return out
