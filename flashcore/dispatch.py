"""Which kernel runs a call: a pure function of the problem, its features and the device — no files read, no state.

:func:`choose` looks at the problem (batch, heads, sequence lengths), its features (dtype, head dimension, causal
mask, grouped-query heads) and the device (compute capability, SM count), and at the kernels' own declarations
(each :class:`flashcore.kernels.KernelSpec` says which dtypes, head dimensions, causal masking and GQA it
supports) — nothing else, so the same call always runs the same kernel, whatever is committed under ``runs/``.

The rule: walk :data:`PREFERENCE`, the library's kernels in order, and take the first one that is registered,
declares the problem's dtype, head dimension and causal mask, and can launch its shape (:func:`launch_problem`).
Grouped key/value heads never rule a kernel out: a kernel that maps them itself is preferred (a first pass), and
one that does not gets k and v repeated over the groups by the library (the second). A kernel that supports only part of the feature space — say a Hopper kernel for fp16/bf16,
D = 64, not causal — goes in front of ``flashcore`` and is chosen only for those problems; ``flashcore`` serves the
rest. Each entry's place in the order cites the recorded measurement that put it there, as FlashAttention's
``hopper/heuristics.h`` does in its comments.

Declared means verified: a kernel's ``unverified`` features (variants that compile but have no recorded GPU check)
count only when the caller passes ``unverified=True`` — the GPU checks do, through
:func:`flashcore.api.unverified_variants`; the library's calls do not.

Today the order has one entry: every problem runs ``flashcore`` (the v8 chapter's library kernel). The candidate
second kernel of that family — two m16 tiles per warp (v8_09) — was first measured against it at 12 shapes on an
H100 (``scripts/explore/v8_crossover.py``, an exploration that wrote no record): it won only at the two largest
shapes, by 3–4 %. The H200 record of chapter 3's variant sweep (``runs/h200/20261201T023120Z-03_v8_variants``)
says more: v8_09 with 2-CTA clusters and a 3-stage ring loses at B1 H8 S512 (8.26 vs 6.24 µs) and wins at
B1 H8 S2048 (32.3 vs 45.8 µs) and B4 H16 S4096 (885 vs 1034 µs). Three points do not place a threshold, and that
build is not a registered, fuzzed and sanitized kernel, so no entry is added yet: the next GPU session measures the
crossover over a grid of lengths (a record), registers the build, and adds it here with that record cited.

:func:`launch_problem` says why a kernel cannot take a shape at all, and :func:`unsupported` which feature it lacks
(used when a caller forces ``kernel=``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

from .kernels import KernelSpec, LaunchShape, is_control
from .validate import BASE, Support

LIBRARY_KERNEL = "flashcore"
# The library's kernels, most preferred first (see the module docstring: each entry cites why it is where it is).
PREFERENCE: tuple = (LIBRARY_KERNEL,)
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
    # grouped heads: first a kernel that maps them itself, else the first that runs the rest (k, v repeated)
    passes = (True, False) if features.gqa else (False,)
    for needs_gqa in passes:
        for kid in preference:
            spec = reg.get(kid)
            if spec is None:
                why_not.append(f"{kid}: not registered")
                continue
            problem = unsupported(spec, features, unverified) or \
                (needs_gqa and not declared(spec, unverified).gqa and "grouped heads mapped by the library") or \
                launch_problem(spec, B * H, S_q, S_kv, device.num_sms)
            if problem:
                why_not.append(f"{kid}: {problem}")
                continue
            if kid == LIBRARY_KERNEL:
                reason = "the mma.sync library kernel: every shape and declared feature (no measured crossover " \
                         "favours another)"
            else:
                reason = f"first in the preference order that declares {_fmt(features)}"
            if features.gqa and not needs_gqa:
                reason += "; k and v repeated over the head groups by the library"
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
                device: Device = Device(), cross: Iterable[tuple] = ((1, 512), (512, 1000)),
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
