"""Chapter 4's live work: every kernel of the story and every peer, checked and timed in ONE run; the sequence sweep;
a shape that fills the chip; and two Nsight Compute reports (why flashcore wins at the mission shape, and why it
loses at long sequences to FlashAttention-2, which uses the same ``mma.sync`` instruction).

Everything goes through the harness (:mod:`flashcore.harness.measure`: ``check_then_time`` and ``scaling_sweep``)
and :mod:`flashcore.tools.profile`; this module only chooses what to measure and where the results go in the
record. The journey's kernels come from the registry in story order (:func:`journey_ids`), so a kernel registered
later — the Hopper kernel ``flashcore_hopper`` — joins the journey, the sweep, the profiles and the headline
without a change here.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterable, List, Optional

from ... import kernels, triton_peer
from ...harness import measure as harness
from ...paths import KERNELS_DIR
from ...tools import profile

# Each chapter's kernel that the next chapter starts from, in story order; then chapter 3's ladder (its ids sort in
# step order); then the library's kernels in the order they were written. Only registered ids are taken.
MILESTONES = ("v12_baseline", "v11_fixed", "v8_seed")
LADDER = re.compile(r"v8_\d\d_\w+")
LIBRARY = ("flashcore", "flashcore_hopper")
SDPA_PEERS = ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "sdpa_default")
SWEEP_SDPA = ("sdpa_cudnn", "sdpa_flash")          # the sweep and the big shape: the two fused SDPA backends
PROFILE_SDPA = {"mission": ("cudnn",), "long_s": ("flash", "cudnn")}   # beside our kernels in each ncu report
REPORTS = {"mission": "mission_profile.ncu-rep", "long_s": "long_s_profile.ncu-rep"}
LINES_RULE = ("code lines (no blank or comment-only lines) of the kernel's source and of the project headers it "
              "includes, each header once; Triton: the jitted kernel function with its decorators")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def journey_ids(specs: Optional[Iterable] = None) -> List[str]:
    """The kernels of the story that exist in the registry, in story order."""
    reg = {s.id for s in (kernels.all_specs() if specs is None else specs)}
    ladder = sorted(i for i in reg if LADDER.fullmatch(i))
    return [i for i in (*MILESTONES, *ladder, *LIBRARY) if i in reg]


def library_ids(specs: Optional[Iterable] = None) -> List[str]:
    """The library's kernels that are registered (``flashcore``, then ``flashcore_hopper`` once it exists)."""
    reg = {s.id for s in (kernels.all_specs() if specs is None else specs)}
    return [i for i in LIBRARY if i in reg]


def _code(text: str, python: bool) -> List[str]:
    """The lines of ``text`` that hold code: not blank, not only a comment (``//`` and ``/* */`` in CUDA, ``#`` and
    docstrings in Python). A preprocessor line (``#define``, ``#include``) is code in CUDA."""
    text = re.sub(r'""".*?"""', "", text, flags=re.S) if python else re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    comment = ("#",) if python else ("//",)
    return [ln for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(comment)]


def code_lines(path, follow_includes: bool = True) -> int:
    """Lines of code (:func:`_code`). With ``follow_includes`` the project's own headers a kernel includes
    (``#include "common/…"``, searched beside the file, then under ``kernels/``) count too, each once: the lines
    written for the kernel, wherever they live."""
    seen, total, todo = set(), 0, [Path(path)]
    while todo:
        p = todo.pop()
        if p.resolve() in seen:
            continue
        seen.add(p.resolve())
        code = _code(p.read_text(), p.suffix == ".py")
        total += len(code)
        if follow_includes:
            for inc in INCLUDE.findall("\n".join(code)):
                for base in (p.parent, KERNELS_DIR):
                    if (base / inc).is_file():
                        todo.append(base / inc)
                        break
    return total


def _with_lines(c: harness.Contender, lines: int) -> harness.Contender:
    """The contender with its lines of code on every row it writes."""
    return dataclasses.replace(c, fields=lambda shape, f=c.fields: dict(f(shape), lines_of_code=lines))


def _profile(run, which: str, ids: List[str], shape: tuple) -> dict:
    """One ncu report (our kernels beside the SDPA backends of ``PROFILE_SDPA[which]``) and its tidy rows. A
    failure is recorded, not raised: the timings of the run are worth keeping without it."""
    out = dict(shape=list(shape), kernels=list(ids) + [f"sdpa_{b}" for b in PROFILE_SDPA[which]],
               sections=list(profile.BOOK_SECTIONS))
    try:
        rep = profile.ncu_profile(run.dir / REPORTS[which], kernels=ids, sdpa=PROFILE_SDPA[which],
                                  shapes=",".join(str(x) for x in shape), sections=profile.BOOK_SECTIONS)
    except Exception as exc:        # no ncu on this host, or it failed: the page says so
        out["error"] = f"{type(exc).__name__}: {str(exc)[-1500:]}"
        return out
    out["report"] = run.rel(rep)
    try:
        out["rows"] = profile.read_report(rep)
    except Exception as exc:        # the report is kept; a replay reads it with the ncu_report wheel
        out["read_error"] = f"{type(exc).__name__}: {str(exc)[-500:]}"
    return out


def measure(run, params: dict) -> None:
    B, H, S, D = (int(params[k]) for k in ("B", "H", "S", "D"))
    samples = int(params.get("samples", 50))
    tail = int(params.get("tail_S", 1000))
    sweep_S = [int(s) for s in params.get("sweep_S", (128, 256, 512, 1024, 2048, 4096, 8192, 16384))]
    bsz, heads = (int(x) for x in params.get("sweep_BH", (1, 8)))
    big = tuple(int(x) for x in params.get("big", (4, 16, 4096, 64)))
    ids, ours = journey_ids(), library_ids()

    lines = {i: code_lines(kernels.get(i).path) for i in ids}
    journey = [_with_lines(harness.kernel(i), lines[i]) for i in ids]
    sdpa = [harness.sdpa(n) for n in SDPA_PEERS]
    tri, fa4 = harness.triton(), harness.fa4()
    if tri is not None:
        lines[tri.id] = triton_peer.kernel_lines()
        tri = _with_lines(tri, lines[tri.id])
    others = [c for c in (tri, fa4) if c is not None]
    by_id = {c.id: c for c in journey + sdpa + others}

    # 1. Everything at the mission shape: checked there and at a tail length, then timed on one set of inputs.
    harness.check_then_time(run, journey + sdpa + others, B, H, S, D, samples=samples, seed=404, check_seed=41,
                            check_shapes=[(B, H, tail)], progress=True, role="mission")

    # 2. The sweep over S (B·H fixed) and 3. a shape that fills the chip (checked, then timed).
    wide = [by_id[i] for i in ours] + [by_id[n] for n in SWEEP_SDPA] + others
    run.extra["sweep"] = harness.scaling_sweep(wide, [(bsz, heads, s) for s in sweep_S], D=D,
                                               samples=max(10, samples // 3), progress=True)
    harness.check_then_time(run, wide, *big, samples=max(10, samples // 3), lpg=4, seed=99, check_seed=98,
                            check_runs=1, progress=True, role="big")

    # What Triton's autotuner chose at each length (its search space is CONFIGS in kernels/triton_attention.py).
    if tri is not None:
        chosen = {str(s): triton_peer.best_config(s) for s in sorted(set(sweep_S) | {S, big[2]})}
        run.extra["triton"] = dict(lines=triton_peer.line_counts(), configs_searched=len(triton_peer.configs()),
                                   chosen={s: c for s, c in chosen.items() if c})

    run.extra.update(journey=ids, ours=ours, best=ours[0] if ours else None, mission=[B, H, S, D], tail_S=tail,
                     big=list(big), sweep_BH=[bsz, heads], peers=[c.id for c in sdpa + others],
                     lines_of_code=lines, lines_rule=LINES_RULE, fa4=fa4 is not None)

    # 4. Nsight Compute: our kernels beside cuDNN at the mission shape, and beside FlashAttention-2 (and cuDNN) at
    # a long sequence, where flashcore loses although FA2 uses mma.sync too.
    if ours:
        mission = _profile(run, "mission", ours, (B, H, S, D))
        run.extra["mission_profile"] = mission
        if mission.get("report"):
            run.extra["ncu_report"] = mission["report"]
            for row in run.results:
                if row.get("role") == "mission" and row["kernel"] in mission["kernels"]:
                    row["ncu_report"] = mission["report"]
        run.extra["long_s_profile"] = _profile(run, "long_s", ours, big)
