"""Check, then time beside the peers: the one measuring routine of the chapters, the command line and the sweeps.

A :class:`Contender` is anything that computes attention into an output buffer: a registered kernel
(:func:`kernel`), one of PyTorch SDPA's backends (:func:`sdpa`), our Triton kernel (:func:`triton`) or
FlashAttention-4's Hopper path (:func:`fa4`, where it is installed). :func:`check_then_time` checks every contender
at a shape (fp64 reference, fresh seeded inputs, NaN-poisoned output, the harness's pass rule), then times the ones
that passed — or that are kept to show a failure, or that are peers taken as they are — by CUDA-graph replay on ONE
shared set of inputs, in this process, and adds one result row per contender to the run record. Nothing is timed
that failed its check. :func:`scaling_sweep` is the timing half over many shapes (the chapters' scaling charts and
the dispatch crossover).

Rows keep the record schema (``runs/schema.json``); a contender's ``fields`` add its own (source file, Triton's
chosen config, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from . import bench
from .check import check_kernel, make_inputs
from .progress import bar

SDPA_BACKENDS = bench.SDPA_BACKENDS
TRITON_ID = "triton_attention"
FA4_ID = "fa4_hopper"


@dataclass
class Contender:
    """Something to check and time. ``launch(q, k, v, o)`` writes ``o`` (the check uses it); ``timed(q, k, v, o)``
    returns the zero-argument callable that is timed — for the peers it discards the output, exactly as a caller
    of SDPA would. ``check=False`` times without checking (the SDPA peers: they are the yardstick);
    ``expect_failure`` times a kernel even though it fails (kept to show the failure)."""

    id: str
    launch: Callable
    timed: Callable
    check: bool = True
    expect_failure: bool = False
    fields: Callable[[tuple], dict] = field(default=lambda shape: {})   # extra row fields for a (B, H, S, S_kv)


def kernel(kernel_id: str, defines: Sequence = ()) -> Contender:
    """A registered kernel, compiled inline for this GPU (once per process)."""
    from .. import kernels
    from ..compile import load_kernel

    spec = kernels.get(kernel_id)
    launch = load_kernel(spec, defines=tuple(defines))
    return Contender(kernel_id, launch=lambda q, k, v, o: launch(q, k, v, o),
                     timed=lambda q, k, v, o: (lambda: launch(q, k, v, o)), expect_failure=spec.expect_failure,
                     fields=lambda shape, _s=spec: dict(source=_s.source))


def sdpa(name: str, check: bool = False) -> Contender:
    """One SDPA backend (``sdpa_cudnn``, ``sdpa_flash``, ``sdpa_efficient``, ``sdpa_default``)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"sdpa_cudnn": SDPBackend.CUDNN_ATTENTION, "sdpa_flash": SDPBackend.FLASH_ATTENTION,
                "sdpa_efficient": SDPBackend.EFFICIENT_ATTENTION}
    if name not in SDPA_BACKENDS:
        raise KeyError(f"unknown SDPA backend {name!r}; known: {', '.join(SDPA_BACKENDS)}")

    def call(q, k, v):
        if name in backends:
            with sdpa_kernel([backends[name]]):
                return F.scaled_dot_product_attention(q, k, v)
        return F.scaled_dot_product_attention(q, k, v)

    return Contender(name, launch=lambda q, k, v, o: o.copy_(call(q, k, v)),
                     timed=lambda q, k, v, o: (lambda: call(q, k, v)), check=check)


def triton(check: bool = True) -> Optional[Contender]:
    """Our Triton kernel (``kernels/triton_attention.py``), or None where Triton does not import."""
    from .. import triton_peer

    if not triton_peer.available():
        return None
    return Contender(TRITON_ID, launch=lambda q, k, v, o: o.copy_(triton_peer.triton_attention(q, k, v)),
                     timed=lambda q, k, v, o: (lambda: triton_peer.triton_attention(q, k, v)), check=check,
                     fields=lambda shape: dict(config=triton_peer.best_config(shape[2], shape[3]),
                                               source="triton_attention.py"))


def fa4(check: bool = True) -> Optional[Contender]:
    """FlashAttention-4's Hopper path (``flash_attn.cute.flash_attn_func``, [B, S, H, D] layout), or None where the
    flash-attn-4 package is not installed. Its inputs are transposed views made once per shape (outside timing)."""
    try:
        from flash_attn.cute import flash_attn_func
    except Exception:          # not installed (or its CUTLASS DSL is missing): the chapter says so
        return None
    cache: dict = {}

    def bshd(q, k, v):
        key = (q.data_ptr(), k.data_ptr(), v.data_ptr(), tuple(q.shape))
        if key not in cache:
            cache.clear()
            cache[key] = tuple(x.transpose(1, 2).contiguous() for x in (q, k, v))
        return cache[key]

    def call(q, k, v):
        out = flash_attn_func(*bshd(q, k, v))
        return out[0] if isinstance(out, tuple) else out

    return Contender(FA4_ID, launch=lambda q, k, v, o: o.copy_(call(q, k, v).transpose(1, 2)),
                     timed=lambda q, k, v, o: (bshd(q, k, v), lambda: call(q, k, v))[1], check=check)


def peers(sdpa_names: Iterable[str] = ("sdpa_cudnn", "sdpa_flash"), with_triton: bool = True,
          with_fa4: bool = False) -> List[Contender]:
    """The yardsticks: SDPA backends (timed, not checked), then Triton and FA4 where they run (checked)."""
    out = [sdpa(n) for n in sdpa_names]
    for extra in ((triton() if with_triton else None), (fa4() if with_fa4 else None)):
        if extra is not None:
            out.append(extra)
    return out


def launches_per_graph(fn: Callable[[], object], target_us: float = 10_000.0, most: int = 20) -> int:
    """Launches to capture per graph so one replay does about ``target_us`` of work (1 … ``most``)."""
    probe = bench.time_graph(fn, launches_per_graph=1, samples=3, warmup=1)
    return max(1, min(most, int(target_us / max(probe.median_us, 1.0))))


def check_then_time(run, contenders: Sequence[Contender], B: int, H: int, S: int, D: int = 64,
                    S_kv: Optional[int] = None, *, samples: int = 50, lpg="auto", seed: int = 404,
                    check_seed: int = 41, check_runs: int = 3, check_shapes: Sequence[tuple] = (),
                    progress: bool = False, **row_fields) -> Dict[str, dict]:
    """Check every contender at (B, H, S, D, S_kv), then time what may be timed on one shared set of inputs; one
    row per contender in ``run`` (``row_fields`` go on every row, e.g. ``role="mission"``). ``check_shapes`` —
    (B, H, S[, S_kv]) tuples — are checked too (rows with ``role="check"``, not timed). ``lpg`` is the launches per
    graph, or "auto" (about 10 ms of work per replay). A contender that raises is recorded with its ``error``.
    Returns {contender id: its row at this shape}."""
    import torch

    S_kv = S if S_kv is None else S_kv
    q, k, v = make_inputs(B, H, S, D, seed=seed, S_kv=S_kv)
    o = torch.empty_like(q)
    rows: Dict[str, dict] = {}
    for c in bar(contenders, f"B{B} H{H} S{S}", progress, unit="kernel"):
        chk, timing, error = None, None, None
        try:
            if c.check:
                chk = check_kernel(c.launch, B, H, S, D, seed=check_seed, runs=check_runs, S_kv=S_kv, kernel=c.id)
            if chk is None or chk.passed or c.expect_failure:
                fn = c.timed(q, k, v, o)
                n = launches_per_graph(fn) if lpg == "auto" else int(lpg)
                timing = bench.time_graph(fn, launches_per_graph=n, samples=samples)
        except Exception as exc:       # a contender that cannot run the shape is a row that says why
            error = f"{type(exc).__name__}: {str(exc)[:1000]}"
            torch.cuda.synchronize()
        fields = dict(row_fields)
        try:
            fields.update(c.fields((B, H, S, S_kv)))
        except Exception as exc:
            fields["fields_error"] = str(exc)[:200]
        if error:
            fields["error"] = error
        rows[c.id] = run.add_result(c.id, B, H, S, D, S_kv=S_kv, check=chk, timing=timing,
                                    tflops=bench.tflops(B, H, S, D, timing.median_us, S_kv) if timing else None,
                                    **fields)
        for n_, shape in enumerate(check_shapes):
            b, h, s = (int(x) for x in shape[:3])
            s_kv = int(shape[3]) if len(shape) > 3 else s
            try:
                c2 = check_kernel(c.launch, b, h, s, D, seed=check_seed + 1 + n_, runs=check_runs, S_kv=s_kv,
                                  kernel=c.id) if c.check else None
                run.add_result(c.id, b, h, s, D, S_kv=s_kv, check=c2, **dict(row_fields, role="check"))
            except Exception as exc:
                run.add_result(c.id, b, h, s, D, S_kv=s_kv, passed=False, error=str(exc)[:1000],
                               **dict(row_fields, role="check"))
                torch.cuda.synchronize()
    del q, k, v, o
    return rows


def scaling_sweep(contenders: Sequence[Contender], points: Sequence[tuple], D: int = 64, samples: int = 16,
                  lpg: Optional[Callable[[tuple], int]] = None, seed: Optional[int] = None,
                  progress: bool = False) -> List[dict]:
    """Time every contender at every point (B, H, S[, S_kv]) on shared inputs per point (seeded by S unless
    ``seed``): rows {kernel, B, H, S, S_kv, D, median_us, p10_us, p90_us, tflops} — or {…, error}. ``lpg(point)``
    gives the launches per graph (default: 20 up to S = 2048 at B·H ≤ 8, else 4). No check here: check the
    contenders first (:func:`check_then_time`), at the shapes that matter."""
    import torch

    rows: List[dict] = []
    for point in bar(points, "scaling sweep", progress, unit="shape"):
        b, h, s = (int(x) for x in point[:3])
        s_kv = int(point[3]) if len(point) > 3 else s
        q, k, v = make_inputs(b, h, s, D, seed=s if seed is None else seed, S_kv=s_kv)
        o = torch.empty_like(q)
        n = lpg(point) if lpg else (20 if max(s, s_kv) <= 2048 and b * h <= 8 else 4)
        for c in contenders:
            base = dict(kernel=c.id, B=b, H=h, S=s, S_kv=s_kv, D=D)
            try:
                fn = c.timed(q, k, v, o)
                fn()
                torch.cuda.synchronize()
                t = bench.time_graph(fn, launches_per_graph=n, samples=samples)
                rows.append(dict(base, median_us=t.median_us, p10_us=t.p10_us, p90_us=t.p90_us,
                                 tflops=bench.tflops(b, h, s, D, t.median_us, s_kv)))
            except Exception as exc:
                rows.append(dict(base, error=f"{type(exc).__name__}: {str(exc)[:500]}"))
                torch.cuda.synchronize()
        del q, k, v, o
        torch.cuda.empty_cache()
    return rows
