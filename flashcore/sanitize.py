"""compute-sanitizer over the launch-only driver: one process per tool, every kernel and shape inside it.

Each process start costs seconds (CUDA context, module loads under instrumentation), so a sweep runs one process
per tool and attributes the sanitizer's messages to launches by the driver's ``FLASHCORE-LAUNCH`` marker lines.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

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
           sys.executable, "-m", "flashcore.driver", "--kernels", ",".join(kernels), "--shapes", shapes]
    if tool == "racecheck":
        cmd[3:3] = ["--racecheck-report", "all"]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
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
                log_tail="\n".join(log.splitlines()[-15:]))


def sweep(kernels: Sequence[str], shapes: str, tools: Sequence[str] = TOOLS, timeout: int = 600) -> list:
    return [run_sanitizer(t, kernels, shapes, timeout=timeout) for t in tools]


def verdicts(summaries: Sequence[dict]) -> list:
    """Per (tool, kernel) rows: clean or not, problems attributed to that kernel's launches."""
    rows = []
    for s in summaries:
        for kid in s["kernels"]:
            launches = [p for p in s["per_launch"] if p["kernel"] == kid]
            problems = sum(p["problems"] for p in launches)
            rows.append(dict(tool=s["tool"], kernel=kid, launches=len(launches), problems=problems,
                             clean=bool(s["finished"] and not s["timed_out"] and problems == 0
                                        and (s["errors"] == 0 or problems == 0)),
                             first=next((p["first"] for p in launches if p["first"]), ""),
                             summary=s["summary"]))
    return rows
