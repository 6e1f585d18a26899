"""Which kernel runs a call: a pure function of the problem, its features and the device — no files read, no state.

:func:`choose` looks at the problem (batch, heads, sequence lengths), its features (dtype, head dimension, causal
mask, grouped-query heads) and the device (compute capability, SM count), and at the kernels' own declarations
(each :class:`flashcore.kernels.KernelSpec` says which dtypes, head dimensions, causal masking and GQA it
supports) — nothing else, so the same call always runs the same kernel, whatever is committed under ``runs/``.

The rule: walk :data:`PREFERENCE`, the library's kernels in order, and take the first one that is registered,
declares the problem's dtype, head dimension and causal mask, and can launch its shape (:func:`launch_problem`).
Grouped key/value heads never rule a kernel out: one that does not map them gets k and v repeated over the groups
by the library. A kernel that supports only part of the feature space — say a Hopper kernel for fp16/bf16,
D = 64, not causal — goes in front of ``flashcore`` and is chosen only for those problems; ``flashcore`` serves the
rest. Each entry's place in the order cites the recorded measurement that put it there, as FlashAttention's
``hopper/heuristics.h`` does in its comments.

Declared means verified: a kernel's ``unverified`` features (variants that compile but have no recorded GPU check)
count only when the caller passes ``unverified=True`` — the GPU checks do, through
:func:`flashcore.api.unverified_variants`; the library's calls do not.

The order has three entries. ``flashcore_hopper`` (chapter 5: wgmma, TMA, warp specialisation, a persistent
grid of one CTA per SM, 192-row tiles) and ``hopper_02_tma`` (the chapter's TMA rung: one warpgroup per 64-row tile,
one CTA per tile, same TMA-map ABI) come first, each taken only when

(a) the device is sm_90 — both are built for ``sm_90a`` (``arch_suffix="a"``: wgmma and setmaxnreg exist only on
    that arch-specific target), so any other compute capability skips them (:func:`device_problem`);
(b) it declares the call's features — fp16, D = 64, not causal (their specs' defaults); grouped heads are allowed
    through the library's repeat of k and v, a negative or tiny scale through the library's negation / clamp;
(c) the shape rule :func:`rule_pick` picks it. ``flashcore`` serves the rest — bf16, D = 128, causal masks (which
    it declares: their GPU check is runs/h200/20261201T041412Z-sweep), other GPUs, and the shapes the rule gives it.

The shape rule (thresholds :data:`RULE`, derived by :func:`derive_rule` from the ``stage == "grid"`` rows of the
chapter-5 H200 record runs/h200/20261201T042313Z-05_hopper/run.json, 25 shapes; :func:`rule_misses` is empty there):

* few query rows and long keys — B·H·S_q ≤ ``split_max_q_rows`` and S_kv ≥ ``split_min_kv`` — go to ``flashcore``:
  its split-KV clusters split the key walk over 2 CTAs, where a Hopper kernel gives each of its few CTAs the whole
  key length (decode steps S_q = 1, B1 H1 S4096, S_q = 128 against S_kv = 4096);
* large problems that fill ``flashcore_hopper``'s persistent schedule — :func:`work` ≥ ``hopper_min_flops`` and
  :func:`hopper_fill` ≥ ``hopper_min_fill`` — go to ``flashcore_hopper``: there its warp specialisation and
  overlap win; when its last round of 192-row tiles is part-empty (same work, lower fill) it does not;
* everything between goes to ``hopper_02_tma``, the fastest of the three across the middle of the grid.

Grouped heads follow the same rule, with no separate threshold: ``flashcore`` maps the groups in its kernel, the
Hopper kernels get k and v repeated by the library. The repeat is a copy linear in S_kv while attention is
quadratic: at B4 H16 S4096 with 4 groups it moves ≈ 84 MB, some 20 µs at H200 bandwidth, against ≈ 400 µs the
Hopper kernel saves over ``flashcore`` there (the record's grid row). Where the copy would be a large share — few
query rows against long keys, a decode step — the rule already picks ``flashcore``, which copies nothing.

:func:`launch_problem` says why a kernel cannot take a shape at all, and :func:`unsupported` which feature it lacks
(used when a caller forces ``kernel=``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

from .kernels import KernelSpec, LaunchShape, is_control
from .validate import BASE, Support

LIBRARY_KERNEL = "flashcore"
HOPPER_KERNEL = "flashcore_hopper"
TMA_KERNEL = "hopper_02_tma"
# The library's kernels, most preferred first (see the module docstring: each entry cites why it is where it is).
# The two Hopper kernels take only the shapes the rule (:func:`rule_pick`, thresholds :data:`RULE`) gives them.
PREFERENCE: tuple = (HOPPER_KERNEL, TMA_KERNEL, LIBRARY_KERNEL)
RULE_KERNELS: tuple = (LIBRARY_KERNEL, TMA_KERNEL, HOPPER_KERNEL)     # the three the rule chooses among
ARCH_SPECIFIC_SM = 90       # a spec with arch_suffix "a" is built for sm_90a: it runs on compute capability 9.0 only
GRID_RECORD = "runs/h200/20261201T042313Z-05_hopper/run.json"        # the record RULE is derived from
HOPPER_BLOCK_M = 192        # flashcore_hopper's query rows per work tile (flashcore.specs.hopper.GEOMETRY)
RECORD_SMS = 132            # the H200 of GRID_RECORD


def work(B: int, H: int, S_q: int, S_kv: int, D: int = 64) -> int:
    """The FLOPs of the two GEMMs, 4·B·H·S_q·S_kv·D (monotone in every dimension; D is 64 wherever the rule
    applies)."""
    return 4 * B * H * S_q * S_kv * D


def query_rows(B: int, H: int, S_q: int) -> int:
    """The query rows a launch spreads over the GPU, B·H·S_q (a decode step, S_q = 1, has B·H)."""
    return B * H * S_q


def hopper_fill(B: int, H: int, S_q: int, num_sms: int = RECORD_SMS, block_m: int = HOPPER_BLOCK_M) -> float:
    """How full ``flashcore_hopper``'s persistent schedule is: the query rows over the rows its rounds could hold.
    Its grid is one CTA per SM walking a static list of B·H·⌈S_q/192⌉ tiles of 192 rows, so the launch takes
    ⌈tiles/SMs⌉ rounds of 192-row tiles on every SM: fill = B·H·S_q / (SMs · rounds · 192) — below 1 by the
    part-empty last tile of each head and the part-empty last round (``hopper_02_tma``'s 64-row, one-CTA-per-tile
    grid, several CTAs per SM, loses far less to either)."""
    tiles = B * H * -(-S_q // block_m)
    rounds = -(-tiles // num_sms)
    return B * H * S_q / (num_sms * rounds * block_m)


@dataclass(frozen=True)
class Thresholds:
    """The shape rule's constants (:func:`rule_pick`): ``flashcore`` (split-KV clusters) when there are few query
    rows and long keys — ``query_rows <= split_max_q_rows`` and ``S_kv >= split_min_kv``; else ``flashcore_hopper``
    when ``work >= hopper_min_flops`` and ``hopper_fill >= hopper_min_fill``; else ``hopper_02_tma``. A None
    disables its branch."""

    split_max_q_rows: Optional[int]
    split_min_kv: Optional[int]
    hopper_min_flops: Optional[int]
    hopper_min_fill: Optional[float]


RULE = Thresholds(split_max_q_rows=4096, split_min_kv=4096, hopper_min_flops=137_438_953_472, hopper_min_fill=0.9403)
"""The rule's thresholds: ``derive_rule`` of the ``stage == "grid"`` rows of the chapter-5 H200 record
runs/h200/20261201T042313Z-05_hopper/run.json (25 shapes; ``tests/test_library_hopper.py`` holds the two equal and
checks that the rule picks the fastest of the three, or one tied with it, at every grid shape).

* flashcore where it alone was fastest: B1 H1 S4096 (4096 query rows, 26.6 vs 32.9 µs for hopper_02_tma),
  B1 H8 S_q=128 S_kv=4096 (1024 rows), and the decode steps B4 H16 / B16 H32 S_q=1 (64 / 512 rows, S_kv 8192 /
  4096): the largest query-row count and the shortest key length among them are the box. Every other grid shape
  with S_kv >= 4096 has >= 16384 query rows; every shape with <= 4096 rows has S_kv <= 1024 except those four.
* flashcore_hopper where it alone was fastest: B8 H16 S2048, B4 H16 S4096, B1 H32 S16384 — the smallest work
  (137 GFLOP) and fill (0.9403, B8 H16 S2048 and B4 H16 S4096: 1408 tiles in 11 rounds) among them. The work bound
  alone cannot separate it: B1 H8 S8192 and B32 H16 S1024 have the same 137 GFLOP and went to hopper_02_tma — both
  fill 0.862 (3 and 24 rounds with the last part-empty, or 1024-row heads in 6 tiles of 192).
* hopper_02_tma everywhere else (B1 H8 S128 … B32 H16 S1024); B1 H8 S16384 (fill 0.862) is a tie of the two
  Hopper kernels (p10–p90 ranges overlap), so hopper_02_tma there is fastest-or-tied."""

HOPPER_MIN_FLOPS: Optional[int] = RULE.hopper_min_flops     # the old single-threshold name (the work bound)


def _grid_times(rows: Iterable[Mapping], kernels: Sequence[str]) -> dict:
    """{(B, H, S_q, S_kv, D): {kernel: (median, p10, p90)}} of a record's ``stage == "grid"`` rows of ``kernels``
    (rows without a time are left out; a shape measured twice for one kernel is an error)."""
    times: dict = {}
    for r in rows:
        if r.get("stage") != "grid" or r.get("kernel") not in kernels or r.get("median_us") is None:
            continue
        S = int(r["S"])
        shape = (int(r["B"]), int(r["H"]), S, int(r.get("S_kv") or S), int(r.get("D") or 64))
        slot = times.setdefault(shape, {})
        if r["kernel"] in slot:
            raise ValueError(f"{r['kernel']} has two grid rows at B,H,S,S_kv,D = {shape}")
        med = float(r["median_us"])
        p10, p90 = r.get("p10_us"), r.get("p90_us")
        slot[r["kernel"]] = (med, med if p10 is None else float(p10), med if p90 is None else float(p90))
    return times


def best_of(slot: Mapping[str, tuple]) -> set:
    """The kernels fastest or tied with the fastest (by median) at one shape: their p10–p90 range overlaps the
    fastest's."""
    fastest = min(slot, key=lambda k: slot[k][0])
    lo, hi = slot[fastest][1], slot[fastest][2]
    return {k for k, (_, p10, p90) in slot.items() if p10 <= hi and p90 >= lo}


def crossover_threshold(rows: Iterable[Mapping], kernel: str = HOPPER_KERNEL, baseline: str = LIBRARY_KERNEL
                        ) -> Optional[int]:
    """The smallest :func:`work` ``m`` of a measured shape such that ``kernel`` is strictly faster than
    ``baseline`` (its p90 below the other's p10; a tie is not faster) at every measured shape with work ≥ ``m``;
    None if it is not faster at the largest. (The one-measure rule of two kernels; :func:`derive_rule` generalises
    it to three.)"""
    by_work: dict = {}
    for shape, slot in _grid_times(rows, (kernel, baseline)).items():
        if kernel in slot and baseline in slot:
            by_work.setdefault(work(*shape), []).append(slot[kernel][2] < slot[baseline][1])
    threshold = None
    for m in sorted(by_work, reverse=True):          # from the largest down, while every shape is a win
        if not all(by_work[m]):
            break
        threshold = m
    return threshold


def derive_rule(rows: Iterable[Mapping], num_sms: int = RECORD_SMS) -> Thresholds:
    """The thresholds a grid record implies, over the shapes where all three of :data:`RULE_KERNELS` have a time:

    * ``flashcore``'s box: the largest :func:`query_rows` and the smallest S_kv among the shapes where flashcore
      alone is fastest (:func:`best_of` is just it);
    * ``flashcore_hopper``'s bounds: the smallest :func:`work` and :func:`hopper_fill` (floored to 4 decimals)
      among the shapes outside that box where it alone is fastest;
    * ``hopper_02_tma`` the rest. Whether the result picks the fastest-or-tied everywhere is
      :func:`rule_misses`' question, not this function's."""
    times = {s: t for s, t in _grid_times(rows, RULE_KERNELS).items() if len(t) == len(RULE_KERNELS)}
    only = {s: next(iter(b)) for s, t in times.items() for b in [best_of(t)] if len(b) == 1}
    split = [s for s, k in only.items() if k == LIBRARY_KERNEL]
    max_rows = max((query_rows(B, H, Sq) for B, H, Sq, _, _ in split), default=None)
    min_kv = min((Skv for *_, Skv, _ in split), default=None)
    t = Thresholds(max_rows, min_kv, None, None)
    hop = [s for s, k in only.items() if k == HOPPER_KERNEL and _in_split_box(s[0], s[1], s[2], s[3], t) is False]
    if hop:
        fill = min(hopper_fill(B, H, Sq, num_sms) for B, H, Sq, _, _ in hop)
        t = Thresholds(max_rows, min_kv, min(work(*s) for s in hop), math.floor(fill * 1e4) / 1e4)
    return t


def _in_split_box(B: int, H: int, S_q: int, S_kv: int, t: Thresholds) -> bool:
    return t.split_max_q_rows is not None and t.split_min_kv is not None and \
        query_rows(B, H, S_q) <= t.split_max_q_rows and S_kv >= t.split_min_kv


def rule_pick(B: int, H: int, S_q: int, S_kv: int, num_sms: int = RECORD_SMS, D: int = 64,
              t: Optional[Thresholds] = None) -> str:
    """The shape rule (pure): which of the three kernels a base-feature problem (fp16, D = 64, not causal) on sm_90
    runs — ``flashcore`` for few query rows with long keys (its split-KV clusters split the key walk),
    ``flashcore_hopper`` for large work that fills its persistent schedule, ``hopper_02_tma`` in between."""
    t = RULE if t is None else t
    if _in_split_box(B, H, S_q, S_kv, t):
        return LIBRARY_KERNEL
    if t.hopper_min_flops is not None and t.hopper_min_fill is not None and \
            work(B, H, S_q, S_kv, D) >= t.hopper_min_flops and hopper_fill(B, H, S_q, num_sms) >= t.hopper_min_fill:
        return HOPPER_KERNEL
    return TMA_KERNEL


def _why(kid: str, B: int, H: int, S_q: int, S_kv: int, D: int, num_sms: int) -> str:
    t = RULE
    if kid == LIBRARY_KERNEL:
        return f"{query_rows(B, H, S_q)} query rows <= {t.split_max_q_rows} and S_kv={S_kv} >= {t.split_min_kv}"
    if kid == HOPPER_KERNEL:
        return (f"{work(B, H, S_q, S_kv, D) / 1e9:.3g} GFLOP >= {t.hopper_min_flops / 1e9:.3g} and fill "
                f"{hopper_fill(B, H, S_q, num_sms):.3f} >= {t.hopper_min_fill}")
    return "neither few query rows with long keys nor large work filling flashcore_hopper's schedule"


def rule_misses(rows: Iterable[Mapping], t: Optional[Thresholds] = None, num_sms: int = RECORD_SMS) -> list:
    """The grid shapes where :func:`rule_pick` is not fastest-or-tied among the three: dicts with the shape, the
    pick and its median, the fastest and its median (empty: the rule is right everywhere it was measured)."""
    out = []
    for (B, H, Sq, Skv, D), slot in sorted(_grid_times(rows, RULE_KERNELS).items()):
        if len(slot) != len(RULE_KERNELS):
            continue
        pick = rule_pick(B, H, Sq, Skv, num_sms, D, t)
        if pick not in best_of(slot):
            fastest = min(slot, key=lambda k: slot[k][0])
            out.append(dict(B=B, H=H, S_q=Sq, S_kv=Skv, D=D, pick=pick, pick_us=slot[pick][0], fastest=fastest,
                            fastest_us=slot[fastest][0]))
    return out


def library_pick_rows(rows: Iterable[Mapping], baseline: str = "sdpa_cudnn", num_sms: int = RECORD_SMS) -> list:
    """Per grid shape (ordered by work): the library's pick (:func:`rule_pick`), its median time, ``baseline``'s
    (cuDNN's), and ``ratio`` = pick / baseline (below 1: the library is faster) — the chapter's plot."""
    rows = list(rows)
    times = _grid_times(rows, RULE_KERNELS + (baseline,))
    out = []
    for (B, H, Sq, Skv, D), slot in sorted(times.items(), key=lambda kv: (work(*kv[0]), kv[0])):
        pick = rule_pick(B, H, Sq, Skv, num_sms, D)
        if pick not in slot:
            continue
        base = slot.get(baseline)
        out.append(dict(B=B, H=H, S_q=Sq, S_kv=Skv, D=D, kernel=pick, pick_us=slot[pick][0],
                        baseline=baseline, baseline_us=None if base is None else base[0],
                        ratio=None if base is None else slot[pick][0] / base[0]))
    return out


def worst_ratio(rows: Iterable[Mapping], baseline: str = "sdpa_cudnn") -> Optional[dict]:
    """The :func:`library_pick_rows` row with the largest pick / baseline ratio (None without any)."""
    rs = [r for r in library_pick_rows(rows, baseline) if r["ratio"] is not None]
    return max(rs, key=lambda r: r["ratio"]) if rs else None


def _gate(kid: str, B: int, H: int, S_q: int, S_kv: int, D: int, num_sms: int = RECORD_SMS) -> Optional[str]:
    """Why a shape-ruled Hopper kernel does not take this problem (None: it may): the rule picks another."""
    if kid not in (HOPPER_KERNEL, TMA_KERNEL):
        return None
    pick = rule_pick(B, H, S_q, S_kv, num_sms, D)
    if pick != kid:
        return f"the shape rule picks {pick} ({_why(pick, B, H, S_q, S_kv, D, num_sms)})"
    return None


def device_problem(spec: KernelSpec, device: "Device") -> Optional[str]:
    """Why ``spec``'s build cannot run on ``device`` (an arch-specific ``sm_90a`` build elsewhere), or None."""
    if getattr(spec, "arch_suffix", "") == "a" and device.sm != ARCH_SPECIFIC_SM:
        return (f"built for sm_{ARCH_SPECIFIC_SM}a (wgmma, setmaxnreg: arch-specific code runs on compute capability "
                f"{ARCH_SPECIFIC_SM // 10}.{ARCH_SPECIFIC_SM % 10} only), this device is sm_{device.sm}")
    return None
MAX_GRID_X = (1 << 31) - 1
MAX_GRID_YZ = 65535
MAX_THREADS = 1024


@dataclass(frozen=True)
class Device:
    """What the rule may know about a GPU."""

    sm: int = 90             # compute capability × 10 (the H100 and H200: 90)
    num_sms: int = 132


@dataclass(frozen=True)
class Features:
    """What a call asks of a kernel beyond its shape."""

    dtype: str = "float16"
    head_dim: int = 64
    causal: bool = False
    gqa: bool = False        # k/v have fewer heads than q (grouped-query or multi-query attention)


@dataclass(frozen=True)
class Declared:
    """What a kernel's builds compute: dtypes, head dims, causal mask, grouped heads mapped in the kernel, any scale
    taken by the kernel (negative, zero, denormal)."""

    dtypes: tuple = ("float16",)
    head_dims: tuple = (64,)
    causal: bool = False
    gqa: bool = False
    any_scale: bool = False


@dataclass(frozen=True)
class Build:
    """The features one launch needs from the kernel's build (its spec's ``variant`` maps them to -D flags)."""

    dtype: str = "float16"
    head_dim: int = 64
    causal: bool = False
    kernel_gqa: bool = False      # the kernel maps query heads to key/value heads (else the library repeats k, v)
    kernel_scale: bool = False    # the kernel takes the special scale itself (else the library negates q / clamps)


@dataclass(frozen=True)
class Choice:
    kernel: str
    reason: str              # the rule that fired, in words


class NoKernelError(RuntimeError):
    """No FlashCore kernel can run the problem; the message says why."""


def declared(spec: KernelSpec, unverified: bool = False) -> Declared:
    """What a kernel declares (a spec without the fields: the base set, fp16, D = 64); with ``unverified``, plus
    what its unverified variants add."""
    d = Declared(tuple(getattr(spec, "dtypes", BASE.dtypes)), tuple(getattr(spec, "head_dims", BASE.head_dims)),
                 bool(getattr(spec, "causal", False)), bool(getattr(spec, "gqa", False)),
                 bool(getattr(spec, "any_scale", False)))
    extra = getattr(spec, "unverified", None) if unverified else None
    if extra:
        d = Declared(tuple(dict.fromkeys(d.dtypes + tuple(extra.get("dtypes", ())))),
                     tuple(sorted(set(d.head_dims) | set(extra.get("head_dims", ())))),
                     d.causal or bool(extra.get("causal")), d.gqa or bool(extra.get("gqa")),
                     d.any_scale or bool(extra.get("any_scale")))
    return d


def support_of(spec: KernelSpec, unverified: bool = False) -> Support:
    """What validation accepts for a kernel: its declared dtypes, head dims and causal mask, and grouped heads
    always (mapped by the kernel, or repeated by the library); ``pending``: what its unverified variants add."""
    d = declared(spec, unverified)
    full = declared(spec, True)
    pending = None if unverified or full == d else Support(full.dtypes, full.head_dims, full.causal, True)
    return Support(d.dtypes, d.head_dims, d.causal, True, pending)


def unsupported(spec: KernelSpec, features: Features, unverified: bool = False) -> Optional[str]:
    """Which of ``features`` the kernel does not declare, in words, or None (grouped heads never: the library
    repeats k and v for a kernel that does not map them)."""
    s = declared(spec, unverified)
    missing = []
    if features.dtype not in s.dtypes:
        missing.append(f"dtype {features.dtype} (has {', '.join(s.dtypes)})")
    if features.head_dim not in s.head_dims:
        missing.append(f"head dim {features.head_dim} (has {', '.join(map(str, s.head_dims))})")
    if features.causal and not s.causal:
        missing.append("causal masking")
    return "; ".join(missing) or None


def _registry(specs: Optional[Mapping[str, KernelSpec]]) -> Mapping[str, KernelSpec]:
    if specs is not None:
        return specs
    from . import kernels

    return {s.id: s for s in kernels.all_specs()}


def library_support(specs: Optional[Mapping[str, KernelSpec]] = None,
                    preference: Sequence[str] = PREFERENCE, unverified: bool = False) -> Support:
    """Every feature some kernel of the preference order declares: what :func:`flashcore.attention` accepts (with
    ``unverified``, also what their unverified variants add; otherwise that is ``pending``)."""
    reg = _registry(specs)
    out = None
    for kid in preference:
        if kid in reg:
            s = support_of(reg[kid], unverified)
            out = s if out is None else out.union(s)
    return out or BASE


def choose(B: int, H: int, S_q: int, S_kv: int, device: Device = Device(), features: Features = Features(), *,
           specs: Optional[Mapping[str, KernelSpec]] = None, preference: Sequence[str] = PREFERENCE,
           unverified: bool = False) -> Choice:
    """The kernel for one problem on one device (pure: the same arguments give the same kernel)."""
    for name, value in dict(B=B, H=H, S_q=S_q, S_kv=S_kv).items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if device.sm < 90:
        # flashcore uses thread-block clusters and distributed shared memory (sm_90); nothing older is supported.
        raise NoKernelError(f"FlashCore's kernels need compute capability 9.0 (Hopper); this device is "
                            f"sm_{device.sm}")
    reg = _registry(specs)
    why_not = []
    # grouped heads follow the same shape rule (module docstring): a kernel that maps them (flashcore) does so, the
    # Hopper kernels get k and v repeated over the groups by the library
    for kid in preference:
        spec = reg.get(kid)
        if spec is None:
            why_not.append(f"{kid}: not registered")
            continue
        problem = unsupported(spec, features, unverified) or device_problem(spec, device) or \
            launch_problem(spec, B * H, S_q, S_kv, device.num_sms) or \
            _gate(kid, B, H, S_q, S_kv, features.head_dim, device.num_sms)
        if problem:
            why_not.append(f"{kid}: {problem}")
            continue
        if kid == LIBRARY_KERNEL:
            reason = "the mma.sync library kernel: every shape and declared feature a kernel ahead of it " \
                     "does not take"
        elif kid in (HOPPER_KERNEL, TMA_KERNEL):
            reason = f"the shape rule's pick on sm_90 for {_fmt(features)}: " \
                     f"{_why(kid, B, H, S_q, S_kv, features.head_dim, device.num_sms)}"
        else:
            reason = f"first in the preference order that declares {_fmt(features)}"
        if features.gqa:
            reason += "; grouped heads mapped in the kernel" if declared(spec, unverified).gqa else \
                "; k and v repeated over the head groups by the library"
        if why_not:
            reason += " — passed over: " + "; ".join(dict.fromkeys(why_not))
        return Choice(kid, reason)
    raise NoKernelError(f"no FlashCore kernel runs B={B}, H={H}, S_q={S_q}, S_kv={S_kv} with {_fmt(features)}: "
                        + "; ".join(dict.fromkeys(why_not)))


def _fmt(f: Features) -> str:
    return f"{f.dtype}, D={f.head_dim}" + (", causal" if f.causal else "") + (", GQA" if f.gqa else "")


def launch_problem(spec: KernelSpec, bh: int, S_q: int, S_kv: int, num_sms: int = 132) -> Optional[str]:
    """Why ``spec`` cannot run this shape, or None if it can."""
    if is_control(spec):
        return "a control kernel (an experiment, not attention)"
    if spec.expect_failure:
        return "kept as a failure (expect_failure)"
    if S_q != S_kv and not spec.cross:
        return f"needs S_q == S_kv (cross=False), got S_q={S_q}, S_kv={S_kv}"
    shape = LaunchShape(bh=bh, seq_q=S_q, seq_kv=S_kv, num_sms=num_sms)
    try:
        grid = tuple(int(g) for g in spec.grid(shape))
    except Exception as exc:  # a grid function that cannot describe this shape
        return f"grid function failed: {exc}"
    if len(grid) != 3 or min(grid) < 1:
        return f"grid {grid} is empty"
    if grid[0] > MAX_GRID_X or grid[1] > MAX_GRID_YZ or grid[2] > MAX_GRID_YZ:
        return f"grid {grid} exceeds CUDA's limits ({MAX_GRID_X}, {MAX_GRID_YZ}, {MAX_GRID_YZ})"
    if spec.threads > MAX_THREADS:
        return f"{spec.threads} threads per block > {MAX_THREADS}"
    return None


def route_table(lengths: Sequence[int] = (1, 64, 100, 512, 1000, 4096, 16384), B: int = 1, H: int = 8,
                device: Device = Device(), cross: Iterable[tuple] = ((1, 512), (512, 1000), (1, 8192), (128, 4096)),
                features: Iterable[Features] = (Features(),), specs=None) -> list:
    """Rows (B, H, S_q, S_kv, features, kernel, reason) of :func:`choose` for the docs and
    ``python -m flashcore list``."""
    rows = []
    for f in features:
        for S_q, S_kv in [(s, s) for s in lengths] + list(cross):
            try:
                c = choose(B, H, S_q, S_kv, device, f, specs=specs)
                rows.append(dict(B=B, H=H, S_q=S_q, S_kv=S_kv, features=_fmt(f), kernel=c.kernel, reason=c.reason))
            except NoKernelError as exc:
                rows.append(dict(B=B, H=H, S_q=S_q, S_kv=S_kv, features=_fmt(f), kernel=None, reason=str(exc)))
    return rows
