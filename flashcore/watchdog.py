"""The GPU watchdog's host side: allocate the diagnosis buffer, launch safely, decode what stuck threads wrote.

A kernel built with ``-DWATCHDOG`` (``kernels/v11/v11_*.cu``) bounds every wait that can block with a budget of
``clock64`` cycles. On timeout each stuck warp writes one record (CTA, warp, lane, role, wait site, stage, phase,
key tile, loop iteration, the arrivals counted on that barrier, the expected count, the raw mbarrier word) into a
small device buffer and returns. :func:`decode` turns the buffer into readable rows; :func:`diagnose` summarises them
(who waits on which barrier, expected vs seen arrivals); :class:`WatchdogTimeout` is the clear error a caller raises.

Buffer layout (int32): ``[HEADER]`` = abort flag, records written, capacity, ints per record, 4 spare; then one
record of ``RECORD_INTS`` per (CTA, warp) slot, slot = cta · 16 + warp.
"""
from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence

HEADER_INTS = 8
RECORD_INTS = 20
WARPS_PER_CTA = 16
DEFAULT_CYCLES = 100_000_000      # ~0.05–0.06 s at the H100's clocks: a stuck launch returns well under a second

ROLES = {0: "compute", 1: "load", 2: "softmax", 3: "producer", 4: "consumer"}   # 3, 4: the Hopper family
SITES = {1: "producer_acquire", 2: "consumer_wait", 3: "__syncthreads after Q load",
         4: "__syncthreads after Q·Kᵀ", 5: "__syncthreads after softmax", 6: "__syncthreads after release",
         7: "__syncthreads after store",
         # the Hopper family's mbarrier waits (kernels/common/mbarrier.cuh)
         8: "full[s] (a consumer waits for K/V to land)", 9: "empty[s] (the producer waits for a release)",
         10: "q_full (a consumer waits for Q)", 11: "q_empty (the producer waits for every consumer to finish Q)"}
REASONS = {1: "timed out", 2: "gave up (another thread timed out)"}
FIELDS = ("reason", "cta", "warp", "lane", "role", "site", "stage", "parity", "key_tile", "query_tile", "head",
          "iteration", "arrivals_seen", "expected", "mbar_lo", "mbar_hi", "cycles_waited", "phase", "spare0",
          "spare1")
assert len(FIELDS) == RECORD_INTS

_BUDGET = {"cycles": DEFAULT_CYCLES}
LAST: dict = {}                   # the buffer of the most recent launch through extra_args (for decode)


class WatchdogTimeout(RuntimeError):
    """A watchdog-built kernel gave up waiting. ``rows`` are the decoded records, ``summary`` the diagnosis."""

    def __init__(self, kernel: str, rows: list, summary: dict):
        self.kernel, self.rows, self.summary = kernel, rows, summary
        super().__init__(f"{kernel}: watchdog fired — " + summary.get("sentence", "") + "\n" + format_rows(rows[:8]))


def set_budget(cycles: int) -> None:
    """The cycle budget the next launches through ``extra_args`` get."""
    if int(cycles) < 1000:
        raise ValueError(f"watchdog budget must be ≥ 1000 cycles, got {cycles}")
    _BUDGET["cycles"] = int(cycles)


def buffer_ints(num_ctas: int) -> int:
    return HEADER_INTS + num_ctas * WARPS_PER_CTA * RECORD_INTS


def allocate(num_ctas: int, xp):
    """A zeroed int32 diagnosis buffer for ``num_ctas`` CTAs (``xp``: cupy on the GPU, numpy in tests)."""
    buf = xp.zeros(buffer_ints(num_ctas), dtype=xp.int32)
    buf[2] = num_ctas * WARPS_PER_CTA
    buf[3] = RECORD_INTS
    return buf


def extra_args(shape, tensors, cycles: Optional[int] = None, ctas: Optional[int] = None) -> tuple:
    """The spec's ``extra_args(shape, tensors)``: (buffer, budget), the buffer allocated with ``tensors.xp`` (a
    :class:`flashcore.kernels.LaunchTensors`; CuPy on the GPU, numpy in tests) and kept in ``LAST`` for decode.
    ``ctas``: the CTAs launched (default one per SM: the persistent v11 kernels); a record slot per warp of each."""
    import numpy as np

    ctas = max(int(ctas if ctas is not None else shape.num_sms), 1)
    buf = allocate(ctas, tensors.xp)
    LAST["buffer"] = buf
    return buf, np.int64(cycles if cycles is not None else _BUDGET["cycles"])


def decode(buf) -> list:
    """Buffer (cupy or numpy int32) → one dict per written record, sorted by CTA and warp."""
    import numpy as np

    a = buf.get() if hasattr(buf, "get") else np.asarray(buf)
    a = a.astype(np.int64)
    recs = a[HEADER_INTS:]
    n = len(recs) // RECORD_INTS
    rows = []
    for i in range(n):
        r = recs[i * RECORD_INTS:(i + 1) * RECORD_INTS]
        if r[0] == 0:
            continue
        d = dict(zip(FIELDS, (int(x) for x in r)))
        for k in ("spare0", "spare1"):
            d.pop(k)
        raw = (d.pop("mbar_hi") & 0xFFFFFFFF) << 32 | (d.pop("mbar_lo") & 0xFFFFFFFF)
        d["mbarrier_raw"] = f"0x{raw:016x}"
        d["reason"] = REASONS.get(d["reason"], str(d["reason"]))
        d["role"] = ROLES.get(d["role"], str(d["role"]))
        d["site"] = SITES.get(d["site"], str(d["site"]))
        d["barrier"] = barrier_name(d)
        if d["site"] == "producer_acquire":   # the k-th acquire of a stage waits for its 'consumed' phase k − 1
            d["phase"] -= 1
        d["needed_arrivals"] = (d["phase"] + 1) * d["expected"]   # cumulative arrivals that complete this phase
        rows.append(d)
    return sorted(rows, key=lambda d: (d["cta"], d["warp"]))


def barrier_name(row: dict) -> str:
    if row["site"] == "producer_acquire":
        return f"stage {row['stage']} 'consumed' mbarrier (pipeline)"
    if row["site"] == "consumer_wait":
        return f"stage {row['stage']} 'produced' mbarrier (pipeline)"
    if row["site"].startswith(("full[s]", "empty[s]")):
        return f"{row['site'].split(' ')[0].replace('s', str(row['stage']))} mbarrier, parity {row['parity']}"
    if row["site"].startswith("q_"):
        return f"{row['site'].split(' ')[0]} mbarrier, parity {row['parity']}"
    return "block barrier (__syncthreads stand-in)"


def header(buf) -> dict:
    import numpy as np

    a = buf.get() if hasattr(buf, "get") else np.asarray(buf)
    return dict(abort=int(a[0]), records=int(a[1]), capacity=int(a[2]), record_ints=int(a[3]))


def diagnose(rows: Sequence[dict]) -> dict:
    """Who waits on what: the barriers warps are stuck at, expected vs seen arrivals, roles per site."""
    if not rows:
        return dict(stuck=False, sentence="no thread gave up: the kernel finished within its budget")
    by_site = Counter((r["site"], r["stage"], r["phase"]) for r in rows)
    timed = [r for r in rows if r["reason"] == "timed out"]
    first = min(timed or rows, key=lambda r: (r["cta"], r["warp"]))
    roles = Counter(r["role"] for r in rows)
    ctas = sorted({r["cta"] for r in rows})
    key = (first["site"], first["stage"], first["phase"])
    same = [r for r in rows if (r["site"], r["stage"], r["phase"]) == key and r["cta"] == first["cta"]]
    sentence = (f"{len(rows)} warps in {len(ctas)} CTA(s) gave up; in CTA {first['cta']}, "
                f"{len(same)} of {WARPS_PER_CTA} warps ({', '.join(sorted({r['role'] for r in same}))}) wait in "
                f"{first['site']} on the {first['barrier']}, phase {first['phase']} (key tile {first['key_tile']}, "
                f"query tile {first['query_tile']}): {first['arrivals_seen']} arrivals seen of "
                f"{first['needed_arrivals']} needed (expected count {first['expected']} per phase)")
    return dict(stuck=True, sentence=sentence, warps=len(rows), ctas=ctas, roles=dict(roles),
                sites=[dict(site=s, stage=st, phase=ph, warps=n) for (s, st, ph), n in by_site.most_common()],
                first=first, arrivals_seen=first["arrivals_seen"], expected=first["expected"],
                needed=first["needed_arrivals"], timed_out=len(timed))


def format_rows(rows: Sequence[dict]) -> str:
    cols = ("cta", "warp", "role", "site", "stage", "phase", "key_tile", "iteration", "arrivals_seen", "expected",
            "reason")
    lines = ["  ".join(f"{c:>10}" if c not in ("site", "reason", "role") else f"{c:<26}"[:26] for c in cols)]
    for r in rows:
        lines.append("  ".join(f"{str(r[c]):>10}" if c not in ("site", "reason", "role") else f"{str(r[c]):<26}"[:26]
                               for c in cols))
    return "\n".join(lines)


def raise_if_stuck(kernel: str, buf) -> None:
    rows = decode(buf)
    if rows:
        raise WatchdogTimeout(kernel, rows, diagnose(rows))


def launch_guarded(kernel_id: str, B: int, H: int, S: int, D: int = 64, cycles: int = DEFAULT_CYCLES,
                   seed: int = 0) -> dict:
    """Launch a watchdog-built kernel once (GPU): {finished, seconds, header, rows, diagnosis, output_nan}.

    Never raises for a timeout (the caller decides); a stuck kernel returns within about ``cycles`` per wait.
    """
    import time

    import torch

    from . import kernels
    from .harness.check import make_inputs
    from .compile import load_kernel

    spec = kernels.get(kernel_id)
    if "watchdog" not in spec.tags:
        raise ValueError(f"{kernel_id} is not built with the watchdog; refusing to launch it guarded")
    launch = load_kernel(spec)
    q, k, v = make_inputs(B, H, S, D, seed=seed)
    o = torch.full_like(q, float("nan"))
    import cupy

    buf = allocate(launch.num_sms, cupy)
    import numpy as np

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    launch(q, k, v, o, extra=(buf, np.int64(cycles)))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    rows = decode(buf)
    return dict(kernel=kernel_id, shape=[B, H, S, D], cycles=int(cycles), seconds=seconds, header=header(buf),
                finished=not rows, rows=rows, diagnosis=diagnose(rows),
                output_unwritten=int(torch.isnan(o).sum()), output_elements=int(o.numel()))
