"""The library's GPU sweep, one command: ``python -m flashcore.sweep [--quick]``.

1. **Fuzz** every library kernel — ``flashcore`` (once the v8 chapter registers it) and the Triton peer
   ``triton_attention`` (if Triton imports) — over :func:`flashcore.fuzz.fuzz_cases` (200 cases each; ``--quick``:
   12), against the fp64 reference with the harness's pass rule, plus the NaN/Inf checks against SDPA, and
   a smoke test of the library call's other paths (default dispatch, CuPy, empty input, side stream, copy=False).
2. **compute-sanitizer** (memcheck, racecheck, synccheck, initcheck; ``--quick``: memcheck only) over every
   registered kernel that is not kept as a failure, at two shapes: a small tail shape and the mission shape.

It writes ONE run record, notebook id ``sweep``: a result row per fuzz case (``stage="fuzz"``) and per sanitized
kernel and shape (``stage="sanitize"``, ``clean`` and the problems per tool); ``extra`` holds the fuzz summary
(``fuzz``), the NaN/Inf checks (``special_values``), the call's paths (``api_smoke``), the sanitizer
verdicts (``sanitizer``) and the overall ``verdict``. :func:`status_rows` turns such a record into the rows the
book's execution-status page shows.
Exit status 0 if every case passed and every tool was clean, 1 otherwise (the record is written either way).
``--budget`` (default 540 s, quick 200 s) caps the sanitizer's timeouts so the command fits one GPU call; a tool
cut off by it is recorded as not clean, never as clean.
"""
from __future__ import annotations

import argparse
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
    """Every registered kernel that is not kept as a failure (``expect_failure``)."""
    from . import kernels

    specs = kernels.all_specs() if specs is None else specs
    return sorted(s.id for s in specs if not s.expect_failure)


def _shape_str(shape) -> str:
    return ",".join(str(int(x)) for x in shape)


def sanitizer_rows(summaries: Sequence[dict], shapes: Sequence[tuple]) -> List[dict]:
    """Per (kernel, shape): launches seen and problems per tool, and ``clean``: True if every tool ran the launch
    to the end and found nothing, False if any tool found a problem in it, None if a tool did not get to it
    (timed out, driver crashed, out of budget) — not run is never shown clean, nor blamed on the kernel."""
    rows = {}
    for s in summaries:
        for kid in s["kernels"]:
            for shape in shapes:
                key = (kid, _shape_str(shape))
                row = rows.setdefault(key, dict(kernel=kid, shape=key[1], tools={}, clean=True))
                launches = [p for p in s["per_launch"] if p["kernel"] == kid and p["shape"] == key[1]]
                problems = sum(p["problems"] for p in launches)
                ran = bool(s["finished"] and not s["timed_out"] and launches)
                verdict = False if problems else (True if ran else None)
                row["tools"][s["tool"]] = dict(launches=len(launches), problems=problems, clean=verdict,
                                               first=next((p["first"] for p in launches if p["first"]), ""))
                if verdict is False or row["clean"] is False:
                    row["clean"] = False
                elif verdict is None:
                    row["clean"] = None
    return list(rows.values())


def _failed_summary(tool, ids, shapes, exc) -> dict:
    return dict(tool=tool, kernels=list(ids), shapes=shapes, clean=False, errors=None, warnings=0, exit_code=None,
                timed_out=False, finished=False, summary=f"{type(exc).__name__}: {exc}", per_launch=[], log_tail="")


def sanitize_tool(tool: str, ids: Sequence[str], shapes: str, timeout: int = 600, progress: bool = False,
                  one_by_one: bool = True, deadline: Optional[float] = None) -> list:
    """One sanitizer process over every kernel; if it did not finish (a kernel that fails to compile or crashes
    the driver), that summary is marked ``superseded`` and each kernel is rerun in its own process, so one bad
    kernel cannot hide the verdict of the others. ``deadline`` (a ``time.time()``) caps every timeout; a kernel
    left when it has passed is recorded as not run (not clean)."""
    from . import sanitize

    def left(cap):
        return int(cap if deadline is None else max(1, min(cap, deadline - time.time())))

    try:
        first = sanitize.run_sanitizer(tool, ids, shapes, timeout=left(timeout))
    except Exception as exc:       # no compute-sanitizer on this machine: say so in the record
        return [_failed_summary(tool, ids, shapes, exc)]
    if first["finished"] and not first["timed_out"] or len(ids) == 1 or not one_by_one:
        return [first]
    first["superseded"] = True
    out = [first]
    for kid in _bar(ids, f"{tool} one by one", progress, unit="kernel"):
        if deadline is not None and deadline - time.time() < 10:
            out.append(_failed_summary(tool, [kid], shapes, TimeoutError("not run: the sweep's time budget ran out")))
            continue
        try:
            out.append(sanitize.run_sanitizer(tool, [kid], shapes, timeout=left(max(60, timeout // 2))))
        except Exception as exc:
            out.append(_failed_summary(tool, [kid], shapes, exc))
    return out


def run_sweep(quick: bool = False, cases: Optional[int] = None, tools: Optional[Sequence[str]] = None,
              seed: int = 0, progress: bool = True, runs_dir=None, sanitize_timeout: Optional[int] = None,
              fuzz_ids: Optional[Sequence[str]] = None, sanitize_ids: Optional[Sequence[str]] = None,
              provenance: Optional[dict] = None, smoke_kernel: Optional[str] = None,
              budget: Optional[float] = None):
    """Everything above into one record; returns (record path, summary dict)."""
    from . import fuzz, records, sanitize

    n = cases or (QUICK_CASES if quick else FULL_CASES)
    tools = list(tools or (("memcheck",) if quick else sanitize.TOOLS))
    fuzz_ids = list(library_kernels() if fuzz_ids is None else fuzz_ids)
    sanitize_ids = list(sanitizer_kernels() if sanitize_ids is None else sanitize_ids)
    shapes = [TAIL_SHAPE, MISSION_SHAPE]
    params = dict(quick=quick, cases=n, tools=tools, seed=seed, fuzz_kernels=fuzz_ids,
                  sanitize_kernels=sanitize_ids, shapes=[list(s) for s in shapes])
    kw = dict(runs_dir=runs_dir) if runs_dir else {}
    run = records.Run(NOTEBOOK, params=params, command=os.environ.get("FLASHCORE_COMMAND", " ".join(sys.argv)),
                      provenance=provenance, **kw)
    t0 = time.time()
    deadline = t0 + budget if budget else None     # caps the sanitizer's timeouts (the fuzz is bounded by n)

    fuzz_summary, specials = {}, {}
    for kid in fuzz_ids:
        rows = fuzz.fuzz_kernel(kid, n=n, seed=seed, progress=progress)
        for r in rows:
            fields = {k: v for k, v in r.items() if k not in ("kernel", "B", "H", "S", "S_kv", "D")}
            run.add_result(kid, r["B"], r["H"], r["S"], 64, S_kv=r["S_kv"], stage="fuzz",
                           **{**dict(max_abs_err=None, deterministic=None), **fields})
        fuzz_summary[kid] = fuzz.summarize(kid, rows)
        specials[kid] = fuzz.special_values(_library_fn(kid))
    run.extra["fuzz"] = fuzz_summary
    run.extra["special_values"] = specials
    if smoke_kernel is None and "flashcore" in fuzz_ids:
        smoke_kernel = "flashcore"
    run.extra["api_smoke"] = fuzz.api_smoke(kernel=smoke_kernel)
    t_fuzz = time.time() - t0

    sanitizer = dict(tools=tools, shapes=[_shape_str(s) for s in shapes], kernels=sanitize_ids, summaries=[],
                     verdicts=[])
    if sanitize_ids:
        shape_arg = ";".join(_shape_str(s) for s in shapes)
        raw = []
        for tool in _bar(tools, "compute-sanitizer", progress, unit="tool"):
            raw += sanitize_tool(tool, sanitize_ids, shape_arg, timeout=sanitize_timeout or (100 if quick else 300),
                                 progress=progress, one_by_one=not quick, deadline=deadline)
        for s in raw:
            sanitizer["summaries"].append({k: v for k, v in s.items() if k != "per_launch"})
            if not s.get("superseded"):
                sanitizer["verdicts"] += sanitize.verdicts([s])
        for row in sanitizer_rows([s for s in raw if not s.get("superseded")], shapes):
            B, H, S, D = (int(x) for x in row["shape"].split(","))
            run.add_result(row["kernel"], B, H, S, D, stage="sanitize", clean=row["clean"], tools=row["tools"])
    run.extra["sanitizer"] = sanitizer
    fuzz_ok = all(s["passed"] for s in fuzz_summary.values())
    san_ok = all(s.get("clean") for s in sanitizer["summaries"] if not s.get("superseded")) and all(
        r.get("clean") is True for r in run.results if r.get("stage") == "sanitize")
    smoke_ok = all(r["ok"] for r in run.extra["api_smoke"])
    run.extra["verdict"] = dict(fuzz_passed=fuzz_ok, sanitizer_clean=san_ok, api_smoke_passed=smoke_ok,
                                passed=fuzz_ok and san_ok and smoke_ok,
                                fuzz_kernels=fuzz_ids, sanitized_kernels=len(sanitize_ids),
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


def _bar(items, desc, progress, unit="item"):
    from .fuzz import _bar as bar

    return bar(list(items), desc, progress, unit=unit)


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
    live = [s for s in san.get("summaries", []) if not s.get("superseded")]
    for tool in dict.fromkeys(s["tool"] for s in live):
        mine = [s for s in live if s["tool"] == tool]
        kernels_ = sorted({k for s in mine for k in s.get("kernels", [])})
        bad = sorted({v["kernel"] for v in san.get("verdicts", []) if v["tool"] == tool and not v["clean"]})
        ok = all(s.get("clean") for s in mine) and not bad
        summary = "; ".join(dict.fromkeys(s.get("summary") or "" for s in mine if s.get("summary")))
        not_run = all("not run" in (s.get("summary") or "") for s in mine)
        out.append(dict(check=f"compute-sanitizer {tool}",
                        subject=f"{len(kernels_)} kernels × {len(san.get('shapes', []))} shapes",
                        result="clean" if ok else ("not run (time budget)" if not_run else "problems"),
                        detail=summary[:300] + (f"; not clean: {', '.join(bad)}" if bad and not not_run else ""),
                        passed=ok))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flashcore.sweep", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_CASES} fuzz cases per kernel, memcheck only, no per-kernel sanitizer "
                         "reruns (a smoke test of the command)")
    ap.add_argument("--cases", type=int, default=None, help=f"fuzz cases per kernel (default {FULL_CASES})")
    ap.add_argument("--tools", default=None, help="comma-separated sanitizer tools (default: all four)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds the whole sweep may take (default 540, quick 200): caps the sanitizer timeouts")
    ap.add_argument("--smoke-kernel", default=None,
                    help="kernel for the library-call smoke test (default: flashcore if registered, else dispatch)")
    args = ap.parse_args(argv)
    if args.cases is not None and args.cases < 1:
        ap.error(f"--cases must be ≥ 1, got {args.cases}")
    tools = [t for t in args.tools.split(",") if t] if args.tools else None
    from .sanitize import TOOLS

    for t in tools or ():
        if t not in TOOLS:
            ap.error(f"--tools: {t!r} is not one of {', '.join(TOOLS)}")
    path, verdict = run_sweep(quick=args.quick, cases=args.cases, tools=tools, seed=args.seed,
                              progress=not args.no_progress, smoke_kernel=args.smoke_kernel,
                              budget=args.budget or (200 if args.quick else 540))
    from . import records

    rec = records.load(path)
    print(f"recorded {path}")
    for r in status_rows(rec):
        print(f"  {'ok ' if r['passed'] else 'BAD'} {r['check']:<30} {r['subject']:<24} {r['result']:<16} "
              f"{r['detail']}")
    return 0 if verdict["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
