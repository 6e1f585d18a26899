"""Fuzzing the library kernels: random shapes and seeds against the fp64 reference, with the harness's pass rule.

:func:`fuzz_cases` draws the cases (pure, seeded, CPU): first a fixed list of edges — S = 1, B·H = 1, tails that
are not a multiple of any tile (S = 2 … 1023 odd lengths), the longest lengths (S = 8192, 16384), and
``S_q != S_kv`` pairs where the kernel allows them — then random shapes with log-uniform lengths up to
``max_seq``, B in 1…4, H in 1…16, and a work bound so that the fp64 reference stays cheap. Every case has its own
input seed.

:func:`fuzz_kernel` runs them on the GPU: each case is :func:`flashcore.harness.check.check_kernel` with two launches on
fresh NaN-poisoned outputs — the first the raw kernel, the second through the library's validated call
(:func:`flashcore.api.attention` with ``kernel=<id>``, a quarter of the time on non-contiguous views so the copy
path runs too) — so "deterministic" also says the library call and the raw kernel agree bit for bit. The Triton
peer runs each case with one config of its autotuner's list (cycling through all of them), so every config is
checked, not only the one the autotuner happens to pick.

:func:`special_values` records the NaN/Inf behaviour beside SDPA's and the fp64 formula's on the GPU.
"""
from __future__ import annotations

import math
import random
import time
from typing import Callable, List, Optional

from .harness.progress import bar

HEAD_DIM = 64
TRITON_ID = "triton_attention"
# The fp64 reference materialises B·H·S_q·S_kv scores (in chunks); keep random cases below this many.
DEFAULT_WORK = 1 << 29


def _case(B, H, S, S_kv, seed, tag) -> dict:
    return dict(B=int(B), H=int(H), S=int(S), S_kv=int(S_kv), seed=int(seed), tag=tag)


def edge_cases(cross: bool = True, max_seq: int = 16384) -> List[tuple]:
    """(B, H, S_q, S_kv, tag) edges every fuzz run starts with (lengths above ``max_seq`` dropped)."""
    # the most telling first: a quick run (few cases) still meets S=1, the longest length, a tail and S_q != S_kv
    edges = [(1, 1, 1, 1, "S=1, BH=1"), (1, 1, 16384, 16384, "large, BH=1"), (3, 5, 77, 77, "tail"),
             (1, 8, 1, 512, "cross, S_q=1"), (2, 4, 100, 1000, "cross, tail"), (1, 8, 512, 512, "mission"),
             (2, 3, 1, 1, "S=1"), (1, 1, 65, 65, "tail, BH=1"), (1, 8, 512, 1, "cross, S_kv=1"),
             (1, 2, 8191, 8191, "large, tail"), (1, 1, 2, 2, "BH=1"), (1, 1, 63, 63, "tail, BH=1"),
             (1, 1, 64, 64, "BH=1"), (1, 8, 127, 127, "tail"), (1, 8, 129, 129, "tail"), (2, 4, 1000, 1000, "tail"),
             (1, 1, 1023, 1023, "tail, BH=1"), (1, 1, 4097, 4097, "tail, BH=1"), (1, 1, 8192, 8192, "large, BH=1"),
             (1, 1, 16383, 16383, "large, tail, BH=1"), (1, 1, 1000, 77, "cross, tail, BH=1"),
             (1, 2, 1, 16384, "cross, large")]
    if not cross:
        edges = [e for e in edges if e[2] == e[3]]
    return [e for e in edges if max(e[2], e[3]) <= max_seq]


def fuzz_cases(n: int = 200, seed: int = 0, cross: bool = True, max_seq: int = 16384,
               max_work: int = DEFAULT_WORK, edges: bool = True) -> List[dict]:
    """``n`` cases (dicts B, H, S, S_kv, seed, tag): the edges first (as many as fit in ``n``), then random ones."""
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    if max_seq < 1:
        raise ValueError(f"max_seq must be ≥ 1, got {max_seq}")
    rng = random.Random(seed)
    cases = []
    if edges:
        for B, H, S, S_kv, tag in edge_cases(cross, max_seq):
            if len(cases) < n:
                cases.append(_case(B, H, S, S_kv, rng.randrange(1 << 31), tag))
    top = math.log(max_seq)
    while len(cases) < n:
        S = max(1, min(max_seq, int(round(math.exp(rng.uniform(0.0, top))))))
        if cross and rng.random() < 0.3:
            S_kv = max(1, min(max_seq, int(round(math.exp(rng.uniform(0.0, top))))))
        else:
            S_kv = S
        B, H = rng.randint(1, 4), rng.randint(1, 16)
        while B * H > 1 and B * H * S * S_kv > max_work:   # shrink the batch before the lengths
            if H > 1:
                H = max(1, H // 2)
            else:
                B = max(1, B // 2)
        if B * H * S * S_kv > max_work:
            continue
        tags = [t for t, on in (("S=1", S == 1 or S_kv == 1), ("BH=1", B * H == 1), ("tail", S % 64 or S_kv % 64),
                                ("cross", S != S_kv), ("large", max(S, S_kv) >= 4096)) if on]
        cases.append(_case(B, H, S, S_kv, rng.randrange(1 << 31), "random" + (", " + ", ".join(tags) if tags else "")))
    return cases


def cases_for(kernel_id: str, n: int, seed: int = 0) -> List[dict]:
    """The cases of one library kernel: ``S_q != S_kv`` and lengths only where its spec allows."""
    if kernel_id == TRITON_ID:
        return fuzz_cases(n, seed=seed, cross=True)
    from . import kernels

    spec = kernels.get(kernel_id)
    return fuzz_cases(n, seed=seed, cross=spec.cross)


# ------------------------------------------------------------------------------------------------ on the GPU
def _noncontiguous(x):
    """The same values in a non-contiguous [B, H, S, D] view (a transposed copy transposed back)."""
    return x.transpose(1, 2).contiguous().transpose(1, 2)


class _RawThenLibrary:
    """A ``fn(q, k, v, o)`` for check_kernel: even calls launch the raw kernel, odd calls the validated call."""

    def __init__(self, raw: Callable, library: Callable, views: bool):
        self.raw, self.library, self.views, self.calls = raw, library, views, 0

    def __call__(self, q, k, v, o):
        if self.calls % 2 == 0:
            self.raw(q, k, v, o)
        else:
            if self.views:
                q, k, v = _noncontiguous(q), _noncontiguous(k), _noncontiguous(v)
            o.copy_(self.library(q, k, v))
        self.calls += 1


def _callables(kernel_id: str, index: int):
    """(raw fn(q, k, v, o), library fn(q, k, v) → o, config or None) for one case."""
    if kernel_id == TRITON_ID:
        from . import triton_peer

        mod = triton_peer.module()
        cfg = triton_peer.configs()[index % len(triton_peer.configs())]

        def raw(q, k, v, o, cfg=cfg):
            B, H, S, D = q.shape
            mod.attention(q.view(B * H, S, D), k.view(B * H, k.shape[2], D), v.view(B * H, v.shape[2], D),
                          o.view(B * H, S, D), 1.0 / math.sqrt(D), config=cfg)

        return raw, (lambda q, k, v, cfg=cfg: triton_peer.triton_attention(q, k, v, config=cfg)), cfg
    from . import api, kernels
    from .compile import load_kernel

    launch = load_kernel(kernels.get(kernel_id))
    return ((lambda q, k, v, o: launch(q, k, v, o)),
            (lambda q, k, v: api.attention(q, k, v, kernel=kernel_id)), None)


def run_case(kernel_id: str, case: dict, index: int = 0, runs: int = 2) -> dict:
    """One fuzz case on the GPU → a row (check fields, the case, the config, any error)."""
    import torch

    from .harness.check import check_kernel

    row = dict(case)
    try:
        raw, lib, cfg = _callables(kernel_id, index)
        views = index % 4 == 3
        fn = _RawThenLibrary(raw, lib, views)
        chk = check_kernel(fn, case["B"], case["H"], case["S"], HEAD_DIM, seed=case["seed"], runs=runs,
                           S_kv=case["S_kv"], kernel=kernel_id)
        row.update(chk.row(), views=views, error=None)
        if cfg:
            row["config"] = cfg
    except Exception as exc:   # a crash is a failure of this case, recorded, and the fuzz goes on
        row.update(passed=False, error=f"{type(exc).__name__}: {str(exc)[:500]}")
        try:
            torch.cuda.synchronize()
        except Exception:
            pass
    return row


def fuzz_kernel(kernel_id: str, n: int = 200, seed: int = 0, progress: bool = True, runs: int = 2) -> List[dict]:
    """Every case of :func:`cases_for` through :func:`run_case`, with a progress bar."""
    cases = cases_for(kernel_id, n, seed=seed)
    rows = []
    cases_bar = bar(cases, f"fuzz {kernel_id}", progress, unit="case")
    for i, case in enumerate(cases_bar):
        t0 = time.time()
        row = run_case(kernel_id, case, index=i, runs=runs)
        row["seconds"] = round(time.time() - t0, 3)
        rows.append(row)
        if hasattr(cases_bar, "set_postfix"):
            cases_bar.set_postfix(failed=sum(1 for r in rows if not r.get("passed")))
    return rows


def summarize(kernel_id: str, rows: List[dict]) -> dict:
    """Counts of one kernel's fuzz rows: cases, failures, non-determinism, the worst error/tolerance."""
    failed = [r for r in rows if not r.get("passed")]
    ratios = [r["max_abs_err"] / r["tol"] for r in rows
              if isinstance(r.get("max_abs_err"), float) and r.get("tol") and r["max_abs_err"] == r["max_abs_err"]]
    lengths = [max(r["S"], r["S_kv"]) for r in rows]
    return dict(kernel=kernel_id, cases=len(rows), failures=len(failed),
                nondeterministic=sum(1 for r in rows if r.get("deterministic") is False),
                unwritten=sum(int(r.get("unwritten") or 0) for r in rows),
                errors=[dict(B=r["B"], H=r["H"], S=r["S"], S_kv=r["S_kv"], seed=r["seed"], error=r.get("error"),
                             max_abs_err=r.get("max_abs_err"), tol=r.get("tol")) for r in failed][:20],
                worst_err_over_tol=max(ratios) if ratios else None,
                s_min=min(lengths) if lengths else None, s_max=max(lengths) if lengths else None,
                cross_cases=sum(1 for r in rows if r["S"] != r["S_kv"]),
                bh1_cases=sum(1 for r in rows if r["B"] * r["H"] == 1),
                s1_cases=sum(1 for r in rows if r["S"] == 1 or r["S_kv"] == 1),
                tail_cases=sum(1 for r in rows if r["S"] % 64 or r["S_kv"] % 64),
                passed=not failed and bool(rows))


# ------------------------------------------------------------------------------------------- NaN / Inf (GPU)
def special_inputs(B: int = 1, H: int = 2, S: int = 100, seed: int = 7, device: str = "cuda"):
    """Inputs with special values and where they should show: {name: (q, k, v)}.

    * ``nan_q``: one NaN in q[0, 0, 3] → that query row's output is NaN (only that row).
    * ``nan_k``: one NaN in k[0, 1, 5] → every query row of head 1 is NaN (each row scores key 5).
    * ``neg_inf_row``: q[0, 1, 7, 0] = -inf and k[0, 1, :, 0] = 1 → every score of row 7 is -inf: the softmax
      formula gives NaN (0/0); SDPA (torch ≥ 2.5's "safe" softmax) gives 0 for such a row.
    """
    from .harness.check import make_inputs

    q, k, v = make_inputs(B, H, S, HEAD_DIM, seed=seed, device=device)
    out = {}
    a = q.clone()
    a[0, 0, 3, 5] = float("nan")
    out["nan_q"] = (a, k, v)
    b = k.clone()
    b[0, 1 % H, 5, 0] = float("nan")
    out["nan_k"] = (q, b, v)
    c, d = q.clone(), k.clone()
    c[0, 1 % H, 7, 0] = float("-inf")
    d[0, 1 % H, :, 0] = 1.0
    out["neg_inf_row"] = (c, d, v)
    return out


def nonfinite_rows(o) -> list:
    """[(b, h, s)] of the output rows that hold a non-finite value."""
    import torch

    bad = (~torch.isfinite(o.float())).any(dim=-1)
    return [tuple(int(i) for i in idx) for idx in bad.nonzero().tolist()]


def special_values(fn: Callable, sdpa: Optional[Callable] = None, device: str = "cuda") -> dict:
    """For each special input: the non-finite output rows of ``fn(q, k, v) → o``, of SDPA (default backend) and
    of the fp64 softmax formula (:func:`flashcore.harness.reference.attention_ref64`), and whether ``fn`` matches each.
    (They can differ from each other: SDPA returns 0 for a row whose scores are all -inf, the formula NaN.)"""
    import torch.nn.functional as F

    from .harness.reference import attention_ref64

    sdpa = sdpa or (lambda q, k, v: F.scaled_dot_product_attention(q, k, v))
    out = {}
    for name, (q, k, v) in special_inputs(device=device).items():
        try:
            mine = nonfinite_rows(fn(q, k, v))
            ref = nonfinite_rows(sdpa(q, k, v))
            formula = nonfinite_rows(attention_ref64(q, k, v))
            out[name] = dict(rows=mine[:20], n_rows=len(mine), sdpa_rows=ref[:20], sdpa_n_rows=len(ref),
                             ref64_n_rows=len(formula), matches=mine == ref, matches_ref64=mine == formula)
        except Exception as exc:
            out[name] = dict(error=f"{type(exc).__name__}: {str(exc)[:300]}", matches=False, matches_ref64=False)
    return out


# -------------------------------------------------------------------------------------- library smoke (GPU)
def api_smoke(shape=(1, 8, 512, 64), seed: int = 11, kernel: Optional[str] = None) -> list:
    """The library call's paths beyond the kernel: the dispatch table's default choice (checked with the harness's
    rule), then with ``kernel`` (default: the dispatch choice) CuPy in and out, an empty input, a side stream, and
    ``copy=False`` refusing a transposed view. Returns [{name, ok, detail}]."""
    import torch

    from . import api
    from .harness.check import check_kernel, make_inputs

    B, H, S, D = shape
    out = []

    def step(name, fn):
        try:
            ok, detail = fn()
        except Exception as exc:
            ok, detail = False, f"{type(exc).__name__}: {str(exc)[:300]}"
        out.append(dict(name=name, ok=bool(ok), detail=detail))

    def default_choice():
        choice = api.kernel_for((B, H, S, D))
        chk = check_kernel(lambda q, k, v, o: o.copy_(api.attention(q, k, v)), B, H, S, D, seed=seed, runs=2)
        return chk.passed, f"kernel={choice.kernel} ({choice.reason}); passed={chk.passed}, " \
                           f"max_abs_err={chk.max_abs_err:.3g}, tol={chk.tol:.3g}"

    def cupy_io():
        import cupy

        q, k, v = make_inputs(B, H, S, D, seed=seed)
        o_t = api.attention(q, k, v, kernel=kernel)
        o_c = api.attention(*(cupy.from_dlpack(x) for x in (q, k, v)), kernel=kernel)
        same = torch.equal(torch.from_dlpack(o_c), o_t)
        return isinstance(o_c, cupy.ndarray) and same, f"type={type(o_c).__name__}, bitwise equal to torch: {same}"

    def empty():
        q = torch.empty(0, H, S, D, device="cuda", dtype=torch.float16)
        o = api.attention(q, q, q, kernel=kernel)
        return tuple(o.shape) == (0, H, S, D), f"shape {tuple(o.shape)}"

    def side_stream():
        q, k, v = make_inputs(B, H, S, D, seed=seed)
        ref = api.attention(q, k, v, kernel=kernel)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            o = api.attention(q, k, v, kernel=kernel)
        torch.cuda.current_stream().wait_stream(s)
        same = torch.equal(o, ref)
        return same, f"bitwise equal on a side stream: {same}"

    def refuse():
        q, k, v = make_inputs(B, H, S, D, seed=seed)
        try:
            api.attention(_noncontiguous(q), k, v, copy=False, kernel=kernel)
        except ValueError as exc:
            return True, f"ValueError: {str(exc)[:120]}"
        return False, "no error"

    for name, fn in (("default dispatch", default_choice), ("cupy in/out", cupy_io), ("empty input", empty),
                     ("side stream", side_stream), ("copy=False refuses a view", refuse)):
        step(name, fn)
    return out
