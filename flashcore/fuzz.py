"""Fuzzing the library kernels: random shapes, features and seeds against the fp64 reference, with the harness's
pass rule.

:func:`fuzz_cases` draws the cases (pure, seeded, CPU): first a fixed list of edges — S = 1, B·H = 1, tails that
are not a multiple of any tile (S = 2 … 1023 odd lengths), the longest lengths (S = 8192, 16384), and
``S_q != S_kv`` pairs where the kernel allows them — then random shapes with log-uniform lengths up to
``max_seq``, B in 1…4, H in 1…16, and a work bound so that the fp64 reference stays cheap. Every case has its own
input seed. With ``features`` (a :class:`flashcore.validate.Support`: what the kernel declares), every case also
draws the call's features — dtype, head dim, causal mask, key/value heads (GQA ratios, MQA), and the scale
(default, negative, 0, tiny, large) — after a fixed list of feature edges (:func:`feature_edge_cases`: causal
with S_q = 1 and with S_q ≠ S_kv both ways, every scale class, MQA without ``enable_gqa`` …).

:func:`fuzz_kernel` runs them on the GPU: each case is checked (:func:`check_case`: seeded inputs of the case's
dtype and heads, the fp64 reference with the same mask and grouping, two launches on fresh NaN-poisoned outputs —
the first the raw kernel variant, the second through the library's validated call
(:func:`flashcore.api.attention` with ``kernel=<id>``, a quarter of the time on non-contiguous views so the copy
path runs too) — so "deterministic" also says the library call and the raw kernel agree bit for bit. The pass rule
is the harness's (:func:`flashcore.harness.check.passes`): at most twice SDPA's own error in the same dtype, with the
same options (where SDPA returns non-finite values on finite inputs — PyTorch's CPU kernel does for a causal mask
with scale ≤ 0 — the dtype's math formula stands in for it, and the row says so). The Triton peer runs the base
cases with one config of its autotuner's list each (cycling through all of them).
:func:`feature_summary` counts cases, failures and the worst error per feature.

:func:`special_values` records the NaN/Inf behaviour beside SDPA's and the fp64 formula's on the GPU.
"""
from __future__ import annotations

import math
import random
import time
from typing import Callable, List, Optional

from .harness.progress import bar
from .validate import BASE, Support

HEAD_DIM = 64
TRITON_ID = "triton_attention"
# The fp64 reference materialises B·H·S_q·S_kv scores (in chunks); keep random cases below this many (at D = 64).
DEFAULT_WORK = 1 << 29
# Scales by class: SDPA takes any float; the kernels must too (a negative scale once returned NaN).
SCALES = {"negative": (-0.125, -1.0, -0.05, -3.0), "zero": (0.0,), "tiny": (1e-6, 1e-30, 1e-40),
          "large": (10.0, 100.0)}


def scale_class(scale) -> str:
    """'default' (None), 'negative', 'zero', 'tiny' (0 < |s| ≤ 1e-4), 'large' (≥ 4) or 'positive'."""
    if scale is None:
        return "default"
    if scale < 0:
        return "negative"
    if scale == 0:
        return "zero"
    if scale <= 1e-4:
        return "tiny"
    return "large" if scale >= 4 else "positive"


def _case(B, H, S, S_kv, seed, tag, **features) -> dict:
    case = dict(B=int(B), H=int(H), S=int(S), S_kv=int(S_kv), seed=int(seed), tag=tag)
    case.update(features)
    return case


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


def feature_edge_cases(support: Support, cross: bool = True, max_seq: int = 16384) -> List[tuple]:
    """(B, H, H_kv, S_q, S_kv, dtype, D, causal, scale, enable_gqa, tag): the feature edges, for what ``support``
    declares (the rest dropped)."""
    bf16 = "bfloat16" if "bfloat16" in support.dtypes else "float16"
    d2 = max(support.head_dims)
    e = [
        (1, 8, 8, 1, 1, "float16", 64, True, None, False, "causal, S=1"),
        (1, 8, 8, 1, 512, "float16", 64, True, None, False, "causal, S_q=1 < S_kv (one key: key 0)"),
        (2, 4, 4, 100, 1000, "float16", 64, True, None, False, "causal, S_q < S_kv, tail"),
        (2, 4, 4, 1000, 100, "float16", 64, True, None, False, "causal, S_q > S_kv, tail"),
        (1, 8, 8, 512, 512, "float16", 64, True, None, False, "causal, mission"),
        (1, 2, 2, 4097, 4097, "float16", 64, True, None, False, "causal, large, tail"),
        (1, 8, 8, 512, 512, "float16", 64, False, -1.0, False, "scale=-1 (was NaN)"),
        (1, 8, 8, 77, 300, "float16", 64, True, -0.125, False, "negative scale, causal, cross"),
        (1, 8, 8, 100, 100, "float16", 64, False, 0.0, False, "scale=0, tail"),
        (1, 8, 8, 100, 130, "float16", 64, True, 0.0, False, "scale=0, causal"),
        (1, 4, 4, 200, 200, "float16", 64, False, 1e-40, False, "denormal scale"),
        (1, 4, 4, 200, 200, "float16", 64, False, 100.0, False, "large scale"),
        (1, 8, 8, 512, 512, bf16, 64, False, None, False, "bf16, mission"),
        (1, 8, 8, 512, 512, "float16", d2, False, None, False, "D=128, mission"),
        (3, 5, 5, 77, 77, bf16, d2, True, None, False, "bf16, D=128, causal, tail"),
        (1, 8, 2, 512, 512, "float16", 64, False, None, True, "GQA 8/2"),
        (2, 32, 4, 130, 257, bf16, d2, True, None, True, "GQA 32/4, bf16, D=128, causal, cross"),
        (1, 8, 1, 300, 300, "float16", 64, False, None, False, "MQA, no enable_gqa (SDPA broadcasts)"),
        (1, 16, 1, 1, 4096, bf16, 64, False, None, True, "MQA decode, S_q=1"),
        (1, 6, 3, 64, 64, "float16", d2, True, -2.0, True, "GQA 6/3, D=128, causal, negative scale"),
    ]
    out = []
    for c in e:
        B, H, H_kv, S, S_kv, dtype, D, causal, scale, gqa, tag = c
        if dtype not in support.dtypes or D not in support.head_dims or (causal and not support.causal) \
                or (H_kv != H and not support.gqa) or (S != S_kv and not cross) or max(S, S_kv) > max_seq:
            continue
        out.append(c)
    return out


def _draw_features(rng: random.Random, H: int, support: Support, D: int) -> dict:
    """Random features of one case (head dim ``D`` drawn before): dtype, causal, key/value heads, scale,
    enable_gqa (all within ``support``)."""
    dtype = rng.choice(support.dtypes)
    causal = support.causal and rng.random() < 0.4
    H_kv, gqa = H, False
    if support.gqa and H > 1 and rng.random() < 0.35:
        H_kv = rng.choice([d for d in range(1, H) if H % d == 0])
        gqa = True if H_kv != 1 else rng.random() < 0.5         # MQA also without enable_gqa (SDPA broadcasts)
    r = rng.random()
    if r < 0.45:
        scale = None
    elif r < 0.6:
        scale = rng.choice(SCALES["negative"])
    elif r < 0.68:
        scale = 0.0
    elif r < 0.78:
        scale = rng.choice(SCALES["tiny"])
    elif r < 0.88:
        scale = rng.choice(SCALES["large"])
    else:
        scale = round(rng.uniform(0.01, 1.0), 4)
    return dict(dtype=dtype, D=D, causal=causal, H_kv=H_kv, enable_gqa=gqa, scale=scale)


def feature_tags(case: dict) -> list:
    """The features a case exercises, as the labels :func:`feature_summary` counts by."""
    tags = [case.get("dtype", "float16"), f"D={case.get('D', HEAD_DIM)}"]
    if case.get("causal"):
        tags.append("causal")
    H_kv = case.get("H_kv", case["H"])
    if H_kv != case["H"]:
        tags.append("MQA" if H_kv == 1 else "GQA")
    tags.append(f"scale {scale_class(case.get('scale'))}")
    if case["S"] != case["S_kv"]:
        tags.append("S_q≠S_kv")
    if case["S"] == 1:
        tags.append("S_q=1")
    return tags


def fuzz_cases(n: int = 200, seed: int = 0, cross: bool = True, max_seq: int = 16384,
               max_work: int = DEFAULT_WORK, edges: bool = True, features: Optional[Support] = None) -> List[dict]:
    """``n`` cases (dicts B, H, S, S_kv, seed, tag): the edges first (as many as fit in ``n``), then random ones.
    With ``features`` (what the kernel supports), cases also carry dtype, D, causal, H_kv, enable_gqa and scale,
    and the feature edges come first."""
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    if max_seq < 1:
        raise ValueError(f"max_seq must be ≥ 1, got {max_seq}")
    rng = random.Random(seed)
    cases = []
    base = dict(dtype="float16", D=HEAD_DIM, causal=False, enable_gqa=False, scale=None)
    if edges and features is not None:
        for B, H, H_kv, S, S_kv, dtype, D, causal, scale, gqa, tag in feature_edge_cases(features, cross, max_seq):
            if len(cases) < n:
                cases.append(_case(B, H, S, S_kv, rng.randrange(1 << 31), tag, dtype=dtype, D=D, causal=causal,
                                   H_kv=H_kv, enable_gqa=gqa, scale=scale))
    if edges:
        for B, H, S, S_kv, tag in edge_cases(cross, max_seq):
            if len(cases) < n:
                extra = dict(base, H_kv=H) if features is not None else {}
                cases.append(_case(B, H, S, S_kv, rng.randrange(1 << 31), tag, **extra))
    top = math.log(max_seq)
    while len(cases) < n:
        S = max(1, min(max_seq, int(round(math.exp(rng.uniform(0.0, top))))))
        if cross and rng.random() < 0.3:
            S_kv = max(1, min(max_seq, int(round(math.exp(rng.uniform(0.0, top))))))
        else:
            S_kv = S
        B, H = rng.randint(1, 4), rng.randint(1, 16)
        D = rng.choice(features.head_dims) if features is not None else HEAD_DIM
        work = max_work * HEAD_DIM // D                  # the reference's cost grows with D
        while B * H > 1 and B * H * S * S_kv > work:   # shrink the batch before the lengths
            if H > 1:
                H = max(1, H // 2)
            else:
                B = max(1, B // 2)
        if B * H * S * S_kv > work:
            continue
        tags = [t for t, on in (("S=1", S == 1 or S_kv == 1), ("BH=1", B * H == 1), ("tail", S % 64 or S_kv % 64),
                                ("cross", S != S_kv), ("large", max(S, S_kv) >= 4096)) if on]
        feats = _draw_features(rng, H, features, D) if features is not None else {}
        case = _case(B, H, S, S_kv, rng.randrange(1 << 31), "random" + (", " + ", ".join(tags) if tags else ""),
                     **feats)
        if feats:
            case["tag"] += " | " + ", ".join(feature_tags(case))
        cases.append(case)
    return cases


def cases_for(kernel_id: str, n: int, seed: int = 0, features: bool = True, unverified: bool = False
              ) -> List[dict]:
    """The cases of one library kernel: ``S_q != S_kv``, lengths and features only where its spec allows — its
    declared features, or with ``unverified`` also those of its variants awaiting a GPU check (the Triton peer: the
    base features)."""
    if kernel_id == TRITON_ID:
        return fuzz_cases(n, seed=seed, cross=True)
    from . import dispatch, kernels

    spec = kernels.get(kernel_id)
    support = dispatch.support_of(spec, unverified)
    return fuzz_cases(n, seed=seed, cross=spec.cross, max_seq=16384,
                      features=support if features and support != BASE else None)


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


def case_features(case: dict) -> dict:
    """The call options of a case (defaults for a base case): dtype, D, causal, H_kv, enable_gqa, scale."""
    return dict(dtype=case.get("dtype", "float16"), D=int(case.get("D", HEAD_DIM)), causal=bool(case.get("causal")),
                H_kv=int(case.get("H_kv", case["H"])), enable_gqa=bool(case.get("enable_gqa")),
                scale=case.get("scale"))


def _callables(kernel_id: str, index: int, case: Optional[dict] = None):
    """(raw fn(q, k, v, o), library fn(q, k, v) → o, config or None) for one case."""
    f = case_features(case or dict(H=1))
    if kernel_id == TRITON_ID:
        from . import triton_peer

        mod = triton_peer.module()
        cfg = triton_peer.configs()[index % len(triton_peer.configs())]

        def raw(q, k, v, o, cfg=cfg):
            B, H, S, D = q.shape
            mod.attention(q.view(B * H, S, D), k.view(B * H, k.shape[2], D), v.view(B * H, v.shape[2], D),
                          o.view(B * H, S, D), 1.0 / math.sqrt(D) if f["scale"] is None else f["scale"], config=cfg)

        return raw, (lambda q, k, v, cfg=cfg: triton_peer.triton_attention(q, k, v, f["scale"], config=cfg)), cfg
    from . import api

    opts = dict(is_causal=f["causal"], scale=f["scale"], enable_gqa=f["enable_gqa"], kernel=kernel_id)
    return ((lambda q, k, v, o: api.raw_launch(q, k, v, o, **opts)),        # the Launcher's general path
            (lambda q, k, v: api.attention(q, k, v, **opts)), None)         # the cached, prepared path


def case_inputs(case: dict, device: str = "cuda"):
    """Seeded standard-normal q ``[B, H, S, D]``, k and v ``[B, H_kv, S_kv, D]`` in the case's dtype (for a base case
    the same values as :func:`flashcore.harness.check.make_inputs`)."""
    import torch

    f = case_features(case)
    dtype = getattr(torch, f["dtype"])
    gen = torch.Generator(device="cpu").manual_seed(int(case["seed"]))
    B, H, S, S_kv, D, H_kv = case["B"], case["H"], case["S"], case["S_kv"], f["D"], f["H_kv"]
    q = torch.randn(B, H, S, D, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    k = torch.randn(B, H_kv, S_kv, D, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    v = torch.randn(B, H_kv, S_kv, D, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    return q, k, v


def formula_lowp(q, k, v, scale=None, causal: bool = False):
    """The softmax formula in the inputs' dtype (scores and P rounded to it, softmax in fp32): FlashAttention's test
    baseline (``attention_ref(upcast=False)``), used where SDPA fails on finite inputs."""
    import torch

    H, H_kv = q.shape[-3], k.shape[-3]
    if H_kv != H:
        k, v = k.repeat_interleave(H // H_kv, dim=-3), v.repeat_interleave(H // H_kv, dim=-3)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    s = torch.matmul(q, k.transpose(-1, -2)).float() * scale
    if causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril(0).logical_not()
        s = s.masked_fill(mask, float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1).to(q.dtype), v)


def baseline_error(q, k, v, ref, scale=None, causal: bool = False):
    """(max |baseline − ref64|, baseline name): SDPA in the inputs' dtype with the same options, or — where SDPA's
    output is non-finite although the reference is finite — :func:`formula_lowp`."""
    import torch
    import torch.nn.functional as F

    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=k.shape[-3] != q.shape[-3])
    name = "sdpa"
    if bool((~torch.isfinite(out) & torch.isfinite(ref)).any()):
        out, name = formula_lowp(q, k, v, scale, causal), f"formula_{str(q.dtype).replace('torch.', '')}"
    return float((out.double() - ref).abs().max()) if out.numel() else 0.0, name


def check_case(fn: Callable, case: dict, runs: int = 2, kernel: str = "", device: str = "cuda") -> dict:
    """Launch ``fn(q, k, v, o)`` ``runs`` times on the case's seeded inputs, each into a NaN-poisoned ``o``; compare
    with the fp64 reference by the harness's pass rule. Returns a row (the check's fields)."""
    import torch

    from .harness.check import compare
    from .harness.reference import attention_ref64

    f = case_features(case)
    q, k, v = case_inputs(case, device)
    ref = attention_ref64(q, k, v, scale=f["scale"], causal=f["causal"])
    base_err, baseline = baseline_error(q, k, v, ref, f["scale"], f["causal"])
    outs = []
    for _ in range(runs):
        o = torch.full_like(q, float("nan"))
        fn(q, k, v, o)
        if device != "cpu":
            torch.cuda.synchronize()
        outs.append(o)
    per_run = [compare(o, ref, base_err) for o in outs]
    errs = [r["max_abs_err"] for r in per_run]
    err = float("nan") if any(e != e for e in errs) else max(errs)
    worst = max(per_run, key=lambda r: (r["unwritten"] + r["nonfinite"], -r["passed"]))
    deterministic = all(torch.equal(outs[0].view(torch.int16), o.view(torch.int16)) for o in outs[1:])
    return dict(kernel=kernel, max_abs_err=err, sdpa_err=base_err, baseline=baseline, tol=worst["tol"],
                passed=all(r["passed"] for r in per_run), deterministic=deterministic, runs=runs,
                unwritten=worst["unwritten"], nonfinite=worst["nonfinite"])


def run_case(kernel_id: str, case: dict, index: int = 0, runs: int = 2) -> dict:
    """One fuzz case on the GPU → a row (check fields, the case, the config, any error)."""
    import torch

    row = dict(case)
    row.update({k: v for k, v in case_features(case).items() if k not in row})
    try:
        raw, lib, cfg = _callables(kernel_id, index, case)
        views = index % 4 == 3
        fn = _RawThenLibrary(raw, lib, views)
        row.update(check_case(fn, case, runs=runs, kernel=kernel_id), views=views, error=None)
        if cfg:
            row["config"] = cfg
    except Exception as exc:   # a crash is a failure of this case, recorded, and the fuzz goes on
        row.update(passed=False, error=f"{type(exc).__name__}: {str(exc)[:500]}")
        try:
            torch.cuda.synchronize()
        except Exception:
            pass
    return row


def fuzz_kernel(kernel_id: str, n: int = 200, seed: int = 0, progress: bool = True, runs: int = 2,
                unverified: bool = False) -> List[dict]:
    """Every case of :func:`cases_for` through :func:`run_case`, with a progress bar (``unverified``: the kernel's
    variants awaiting a GPU check too, run under :func:`flashcore.api.unverified_variants`)."""
    cases = cases_for(kernel_id, n, seed=seed, unverified=unverified)
    if unverified and kernel_id != TRITON_ID:
        from . import api

        with api.unverified_variants():
            return _fuzz_cases(kernel_id, cases, progress, runs)
    return _fuzz_cases(kernel_id, cases, progress, runs)


def _fuzz_cases(kernel_id: str, cases: List[dict], progress: bool, runs: int) -> List[dict]:
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


def feature_summary(rows: List[dict]) -> dict:
    """{feature label: cases, failures, nondeterministic, worst error/tolerance, baselines other than SDPA} over
    the rows that exercise it (:func:`feature_tags`), plus "all"."""
    out: dict = {}
    for r in rows:
        for tag in ["all"] + feature_tags(r):
            s = out.setdefault(tag, dict(cases=0, failures=0, nondeterministic=0, worst_err_over_tol=None,
                                         formula_baseline=0))
            s["cases"] += 1
            s["failures"] += 0 if r.get("passed") else 1
            s["nondeterministic"] += 1 if r.get("deterministic") is False else 0
            s["formula_baseline"] += 1 if str(r.get("baseline", "sdpa")).startswith("formula") else 0
            err, tol = r.get("max_abs_err"), r.get("tol")
            if isinstance(err, float) and err == err and tol:
                ratio = err / tol
                s["worst_err_over_tol"] = ratio if s["worst_err_over_tol"] is None else max(s["worst_err_over_tol"],
                                                                                            ratio)
    return out


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
