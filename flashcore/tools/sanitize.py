"""compute-sanitizer over the launch-only driver, and the ONE rule that turns its reports into verdicts.

:func:`run_sanitizer` runs one tool over some kernels and shapes in one process (``python -m
flashcore.tools.driver``) and attributes the tool's messages to launches by the driver's ``FLASHCORE-LAUNCH``
marker lines; it keeps the head of the log (reports with their backtraces) of that same invocation, so a page that
shows a count and a log shows one run. :func:`run_jobs` runs one process per (tool, kernel), several at a time, and
reruns one shape per process after a finding aborted a launch (a synccheck or memcheck error aborts the launch it
is in, which would hide the kernel's other shapes).

The verdict rule (:func:`launch_verdict`), used by every chapter and the library sweep: for one tool, one kernel
and one shape — ``True`` (clean) if the tool ran the launch to the end and reported nothing; ``"known"`` if every
report of the launch is a :class:`~flashcore.kernels.KnownFinding` of that kernel (same tool, headline and device
frame: explained elsewhere, never shown as clean); ``False`` if it reported anything else; ``None`` if the tool
never got to the launch (timed out, out of budget, an earlier launch in its process aborted) — not run is never
shown as clean, nor blamed on the kernel.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .driver import MARKER

TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")
_SUMMARY = re.compile(r"=+ (ERROR|RACECHECK) SUMMARY: (\d+) (errors|hazards)")
_RACE_SUMMARY = re.compile(r"RACECHECK SUMMARY: (\d+) hazards displayed \((\d+) errors?, (\d+) warnings?\)")
_PROBLEM = re.compile(r"^=+ (Invalid|Race|Error|Uninitialized|Barrier|Warning|Program hit|Misaligned|"
                      r"Out-of-range|Divergent|Leaked|Host API|Cuda API|.*[Hh]azard)", re.I)


_DETAIL = re.compile(r"^(Barrier is located|Warning)")      # lines that qualify a report rather than start one
_FRAME = re.compile(r"Device Frame:\s*(.+?)(?:\+0x[0-9a-f]+)? in ")


def find_sanitizer() -> str:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for cand in ("/usr/local/cuda/bin/compute-sanitizer", "/usr/local/cuda/compute-sanitizer/compute-sanitizer"):
        if os.path.exists(cand):
            return cand
    raise FileNotFoundError("compute-sanitizer not found on this machine")


def parse_log(tool: str, log: str) -> dict:
    """Split a sanitizer log by launch marker: {"per_launch": [{kernel, shape, problems, first}], "total": N}."""
    per = []
    current = None
    for line in log.splitlines():
        if line.startswith(MARKER):
            kv = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
            current = dict(kernel=kv.get("kernel"), shape=kv.get("shape"), problems=0, first="", kinds=[],
                           frames=[])
            per.append(current)
            continue
        if current is None:
            continue
        if _PROBLEM.match(line) and "SUMMARY" not in line:
            current["problems"] += 1
            text = line.strip("= ").strip()[:300]
            if not current["first"]:
                current["first"] = text
            if not _DETAIL.match(text) and text not in current["kinds"] and len(current["kinds"]) < 10:
                current["kinds"].append(text)       # the headline of each distinct report
        m = _FRAME.search(line)
        if m and m.group(1) not in current["frames"] and len(current["frames"]) < 30:
            current["frames"].append(m.group(1))
    total = None
    m = _RACE_SUMMARY.search(log)
    if m:
        total = int(m.group(2))            # racecheck: errors (warnings are listed but do not fail)
        warnings = int(m.group(3))
    else:
        warnings = 0
        m = _SUMMARY.search(log)
        if m:
            total = int(m.group(2))
    return dict(per_launch=per, total=total, warnings=warnings)


def run_sanitizer(tool: str, kernels: Sequence[str], shapes: str, timeout: int = 600,
                  extra: Sequence[str] = ()) -> dict:
    """Run one compute-sanitizer tool over every (kernel, shape); return a summary dict (JSON-ready)."""
    if tool not in TOOLS:
        raise ValueError(f"tool must be one of {', '.join(TOOLS)}, got {tool!r}")
    if not kernels:
        raise ValueError("no kernels to sanitize")
    cmd = [find_sanitizer(), "--tool", tool, "--print-limit", "20", "--show-backtrace", "device", *extra,
           sys.executable, "-m", "flashcore.tools.driver", "--kernels", ",".join(kernels), "--shapes", shapes]
    if tool == "racecheck":
        cmd[3:3] = ["--racecheck-report", "all"]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        log, code, timed_out = proc.stdout + proc.stderr, proc.returncode, False
    except subprocess.TimeoutExpired as exc:
        log = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        code, timed_out = None, True
    parsed = parse_log(tool, log)
    finished = "FLASHCORE-DRIVER done" in log
    clean = (not timed_out) and finished and parsed["total"] == 0
    summary_line = next((ln.strip("= ").strip() for ln in log.splitlines() if "SUMMARY" in ln), "")
    return dict(tool=tool, kernels=list(kernels), shapes=shapes, clean=clean, errors=parsed["total"],
                warnings=parsed["warnings"], exit_code=code, timed_out=timed_out, finished=finished,
                summary=summary_line, per_launch=parsed["per_launch"],
                log_tail="\n".join(log.splitlines()[-15:]), log_head=log_head(log))


def log_head(log: str, lines: int = 70) -> str:
    """The first reports of a log (the tool's ``=``-prefixed lines, backtraces included): what a page shows."""
    return "\n".join([ln for ln in log.splitlines() if ln.startswith("=")][:lines])


def known_finding(findings: Sequence, tool: str, launches: Sequence[dict]) -> Optional[str]:
    """The ``why`` of the :class:`~flashcore.kernels.KnownFinding` that explains every report of these launches, or
    None. Explained means: same tool, every report headline contains its ``kind``, and a device frame of the launch
    contains its ``frame``."""
    flagged = [p for p in launches if p.get("problems")]
    if not flagged:
        return None
    for f in findings:
        if f.tool != tool:
            continue
        if all(p.get("kinds") and all(f.kind in k for k in p["kinds"]) and any(f.frame in fr for fr in p.get("frames", []))
               for p in flagged):
            return f.why
    return None


def launch_verdict(summary: dict, launches: Sequence[dict], findings: Sequence = ()):
    """THE rule (module docstring): True, "known", False or None for these launches of one kernel in one summary."""
    problems = sum(p["problems"] for p in launches)
    if problems:
        return "known" if known_finding(findings, summary["tool"], launches) else False
    ran = bool(launches) and bool(summary["finished"] and not summary["timed_out"])
    return True if ran else None


def combine(verdicts_: Sequence):
    """Several verdicts into one: False if any, else None if any is None (or there are none), else "known" if any,
    else True."""
    vs = list(verdicts_)
    if False in vs:
        return False
    if not vs or None in vs:
        return None
    return "known" if "known" in vs else True


def shape_str(shape) -> str:
    return ",".join(str(int(x)) for x in shape)


def rows(summaries: Sequence[dict], shapes: Sequence[tuple], known: Optional[dict] = None) -> List[dict]:
    """Per (kernel, shape): each tool's launches, problems and verdict (:func:`launch_verdict`), and the row's
    verdict over tools (:func:`combine`) in ``clean``; ``known`` lists the explanations used. ``known``: kernel id →
    its KnownFindings. A later process that did not get to a launch does not erase an earlier verdict."""
    known = known or {}
    out: Dict[tuple, dict] = {}
    for kid, shape in ((k, shape_str(sh)) for s in summaries for k in s["kernels"] for sh in shapes):
        out.setdefault((kid, shape), dict(kernel=kid, shape=shape, tools={}, clean=True, known=[]))
    for s in summaries:
        covered = set(str(s.get("shapes", "")).replace(" ", "").split(";"))
        for kid in s["kernels"]:
            for shape in (sh for sh in (shape_str(x) for x in shapes) if sh in covered):
                row = out[(kid, shape)]
                launches = [p for p in s["per_launch"] if p["kernel"] == kid and p["shape"] == shape]
                verdict = launch_verdict(s, launches, known.get(kid, ()))
                prev = row["tools"].get(s["tool"])
                if prev is not None and prev["clean"] is not None and verdict is None:
                    continue
                why = known_finding(known.get(kid, ()), s["tool"], launches) if verdict == "known" else None
                row["tools"][s["tool"]] = dict(launches=len(launches), problems=sum(p["problems"] for p in launches),
                                               clean=verdict, first=next((p["first"] for p in launches if p["first"]),
                                                                         ""), **({"known": why} if why else {}))
    for row in out.values():
        row["clean"] = combine(t["clean"] for t in row["tools"].values())
        row["known"] = sorted({f"{tool}: {t['known']}" for tool, t in row["tools"].items() if t.get("known")})
    return list(out.values())


def verdicts(summaries: Sequence[dict], known: Optional[dict] = None) -> list:
    """Per (tool, kernel), over every shape of its launches: {tool, kernel, launches, problems, clean, first,
    summary} with ``clean`` by :func:`launch_verdict`."""
    known = known or {}
    out = []
    for s in summaries:
        for kid in s["kernels"]:
            launches = [p for p in s["per_launch"] if p["kernel"] == kid]
            out.append(dict(tool=s["tool"], kernel=kid, launches=len(launches),
                            problems=sum(p["problems"] for p in launches),
                            clean=launch_verdict(s, launches, known.get(kid, ())),
                            first=next((p["first"] for p in launches if p["first"]), ""), summary=s["summary"]))
    return out


def _not_run(tool, ids, shapes, exc) -> dict:
    return dict(tool=tool, kernels=list(ids), shapes=shapes, clean=False, errors=None, warnings=0, exit_code=None,
                timed_out=False, finished=False, summary=f"{type(exc).__name__}: {exc}", per_launch=[], log_tail="",
                log_head="")


def run_jobs(tools: Sequence[str], ids: Sequence[str], shapes: str, timeout: int = 300, workers: int = 8,
             deadline: Optional[float] = None, progress: bool = False) -> list:
    """One compute-sanitizer process per (tool, kernel), ``workers`` at a time (each is mostly host-side work). A
    process that did not finish although the tool ran (a finding aborted its launch) is marked ``superseded`` and
    rerun one shape per process. ``deadline`` (a ``time.time()``) caps every timeout; a job left when it has passed
    is recorded as not run."""
    from ..harness.progress import bar

    def left(cap):
        return int(cap if deadline is None else max(1, min(cap, deadline - time.time())))

    def one(tool, kid, shape_arg):
        if deadline is not None and deadline - time.time() < 5:
            return _not_run(tool, [kid], shape_arg, TimeoutError("not run: the time budget ran out"))
        try:
            return run_sanitizer(tool, [kid], shape_arg, timeout=left(timeout))
        except Exception as exc:       # no compute-sanitizer on this machine: the record says so
            return _not_run(tool, [kid], shape_arg, exc)

    def job(tool, kid):
        t0 = time.time()
        first = one(tool, kid, shapes)
        first["seconds"] = round(time.time() - t0, 1)
        out = [first]
        parts = [p for p in shapes.split(";") if p]
        if not first["finished"] and not first["timed_out"] and len(parts) > 1 and first.get("exit_code") is not None:
            first["superseded"] = True
            for part in parts:
                t1 = time.time()
                out.append(one(tool, kid, part))
                out[-1]["seconds"] = round(time.time() - t1, 1)
        return out

    results = []
    pairs = [(t, k) for t in tools for k in ids]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        futures = [ex.submit(job, t, k) for t, k in pairs]
        for fut in bar(as_completed(futures), "compute-sanitizer", progress, unit="job", total=len(futures)):
            results += fut.result()
    order = {p: i for i, p in enumerate(pairs)}
    results.sort(key=lambda s: (order.get((s["tool"], s["kernels"][0]), 0), s.get("superseded") is not True))
    return results
