"""Is a kernel right? Fresh seeded inputs, NaN-poisoned output, an fp64 reference, the flash-attn pass rule.

Pass rule (the FlashAttention test suite's): ``max|out − ref64| ≤ 2 · max|sdpa_fp16 − ref64| + 1e-5`` — a kernel
may be at most twice as far from the exact answer as PyTorch's own fp16 attention on the same inputs. The plain max
abs error is reported beside it, and bitwise determinism across ``runs`` launches (each on a re-poisoned output).
"""
from __future__ import annotations

from dataclasses import dataclass, asdict
from typing import Callable, Optional

ABS_SLACK = 1e-5


@dataclass
class CheckResult:
    kernel: str
    B: int
    H: int
    S: int
    S_kv: int
    D: int
    seed: int
    max_abs_err: float     # max |out − ref64|
    sdpa_err: float        # max |sdpa_fp16 − ref64| on the same inputs
    tol: float             # 2 · sdpa_err + 1e-5
    passed: bool
    deterministic: bool    # bit-identical outputs across all runs
    runs: int
    unwritten: int         # output elements still NaN (poison) after the launch although the reference is finite
    nonfinite: int         # non-finite outputs where the reference is finite

    def row(self) -> dict:
        return asdict(self)


def tolerance(sdpa_err: float) -> float:
    return 2.0 * float(sdpa_err) + ABS_SLACK


def passes(max_abs_err: float, sdpa_err: float) -> bool:
    """The pass rule. NaN never passes."""
    err = float(max_abs_err)
    return err == err and err <= tolerance(sdpa_err)


def make_inputs(B: int, H: int, S: int, D: int = 64, seed: int = 0, S_kv: Optional[int] = None,
                device: str = "cuda", dtype=None):
    """Seeded standard-normal q, k, v in ``[B, H, S, D]`` (fresh for every call: a new seed, new data)."""
    import torch

    for name, val in dict(B=B, H=H, S=S, D=D).items():
        if not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    S_kv = S if S_kv is None else S_kv
    dtype = dtype or torch.float16
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    q = torch.randn(B, H, S, D, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    k = torch.randn(B, H, S_kv, D, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    v = torch.randn(B, H, S_kv, D, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    return q, k, v


def compare(out, ref, sdpa_err: float) -> dict:
    """Error statistics of ``out`` against the fp64 reference (torch tensors on any device)."""
    import torch

    diff = (out.double() - ref).abs()
    finite_ref = torch.isfinite(ref)
    unwritten = int((torch.isnan(out) & finite_ref).sum())
    nonfinite = int((~torch.isfinite(out) & finite_ref).sum())
    err = float(diff.max()) if diff.numel() else 0.0
    if nonfinite:
        err = float("nan")
    return dict(max_abs_err=err, passed=passes(err, sdpa_err), tol=tolerance(sdpa_err), unwritten=unwritten,
                nonfinite=nonfinite)


def sdpa_fp16_error(q, k, v, ref, scale=None) -> float:
    import torch.nn.functional as F

    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return float((out.double() - ref).abs().max())


def check_kernel(fn: Callable, B: int, H: int, S: int, D: int = 64, seed: int = 0, runs: int = 3,
                 S_kv: Optional[int] = None, scale: Optional[float] = None, kernel: str = "") -> CheckResult:
    """Launch ``fn(q, k, v, o)`` ``runs`` times on fresh seeded inputs, each time into a NaN-poisoned ``o``."""
    import torch
    from .reference import attention_ref64

    if runs < 1:
        raise ValueError(f"runs must be ≥ 1, got {runs}")
    q, k, v = make_inputs(B, H, S, D, seed=seed, S_kv=S_kv)
    ref = attention_ref64(q, k, v, scale=scale)
    sdpa_err = sdpa_fp16_error(q, k, v, ref, scale=scale)
    outs = []
    for _ in range(runs):
        o = torch.full_like(q, float("nan"))
        fn(q, k, v, o)
        torch.cuda.synchronize()
        outs.append(o)
    per_run = [compare(o, ref, sdpa_err) for o in outs]
    errs = [r["max_abs_err"] for r in per_run]
    err = float("nan") if any(e != e for e in errs) else max(errs)   # the worst run counts
    stats = max(per_run, key=lambda r: r["unwritten"] + r["nonfinite"])
    deterministic = all(torch.equal(outs[0].view(torch.int16), o.view(torch.int16)) for o in outs[1:])
    return CheckResult(kernel=kernel, B=B, H=H, S=S, S_kv=S if S_kv is None else S_kv, D=D, seed=int(seed),
                       max_abs_err=err, sdpa_err=sdpa_err, tol=stats["tol"], passed=passes(err, sdpa_err),
                       deterministic=deterministic, runs=runs, unwritten=stats["unwritten"],
                       nonfinite=stats["nonfinite"])


def check_spec(kernel_id: str, B: int, H: int, S: int, D: int = 64, seed: int = 0, runs: int = 3,
               S_kv: Optional[int] = None) -> CheckResult:
    """:func:`check_kernel` for a registered kernel id (compiled inline)."""
    from .. import kernels
    from ..compile import load_kernel

    launch = load_kernel(kernels.get(kernel_id))
    return check_kernel(lambda q, k, v, o: launch(q, k, v, o), B, H, S, D, seed=seed, runs=runs, S_kv=S_kv,
                        kernel=kernel_id)
