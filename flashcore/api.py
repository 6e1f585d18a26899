"""The library call: ``flashcore.attention(q, k, v, scale=None)`` — a drop-in for the forward of
``torch.nn.functional.scaled_dot_product_attention`` on fp16 ``[B, H, S, 64]`` CUDA tensors (or CuPy arrays).

    import torch, flashcore
    q, k, v = (torch.randn(2, 8, 1000, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    o = flashcore.attention(q, k, v)                 # [2, 8, 1000, 64], same type, device and stream as q
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)

Steps: describe the inputs (:mod:`flashcore.validate`), validate them (clear errors, nothing launched), pick the
kernel for the shape and device (:func:`flashcore.dispatch.choose`, a pure function), compile it once per process
and device (:func:`flashcore.compile.load_kernel`; CuPy also caches the NVRTC output on disk across processes),
launch on the caller's current stream.
"""
from __future__ import annotations

import functools
from typing import Optional

from . import dispatch, kernels
from .validate import Plan, describe, validate

__all__ = ["attention", "kernel_for", "NoKernelError"]

NoKernelError = dispatch.NoKernelError


def _lib(x) -> str:
    return type(x).__module__.split(".")[0]


def _device_index(plan: Plan) -> int:
    return int(plan.device.split(":")[1]) if ":" in plan.device else 0


@functools.lru_cache(maxsize=None)
def _device_facts(index: int) -> tuple:
    """(SM count,) of a CUDA device, asked once."""
    import cupy

    return (int(cupy.cuda.runtime.getDeviceProperties(index)["multiProcessorCount"]),)


@functools.lru_cache(maxsize=None)
def _device_rule_input(index: int) -> dispatch.Device:
    import cupy

    return dispatch.Device(sm=int(cupy.cuda.Device(index).compute_capability), num_sms=_device_facts(index)[0])


def kernel_for(q_shape, k_shape=None, device: int = 0) -> dispatch.Choice:
    """Which kernel :func:`attention` would launch for these shapes on CUDA device ``device``, and why."""
    k_shape = q_shape if k_shape is None else k_shape
    B, H, S_q, _ = q_shape
    return dispatch.choose(int(B), int(H), int(S_q), int(k_shape[2]), _device_rule_input(device))


_READY: dict = {}            # (kernel id, device) → Launcher (the per-call lookup: no file read, no hashing)


def _launcher(kernel_id: str, device: int):
    """The compiled kernel for ``device`` (compiled once per process and device by compile.load_kernel)."""
    hit = _READY.get((kernel_id, device))
    if hit is None:
        from .compile import load_kernel

        hit = _READY[(kernel_id, device)] = load_kernel(kernels.get(kernel_id), device=device)
    return hit


def _prepare_torch(x, why: Optional[str]):
    if why is None:
        return x
    return x.contiguous() if not x.is_contiguous() else x.clone()   # clone: a fresh, aligned allocation


def _prepare_cupy(x, why: Optional[str]):
    import cupy

    if why is None:
        return x
    return cupy.ascontiguousarray(x) if not x.flags.c_contiguous else x.copy()


def attention(q, k, v, *, scale: Optional[float] = None, copy: bool = True, kernel: Optional[str] = None):
    """softmax(q·kᵀ·scale)·v for fp16 ``[B, H, S, 64]`` CUDA tensors (torch or CuPy); ``S_kv`` may differ from
    ``S_q`` where the kernel allows it. Returns a new array of q's type on q's device, computed on the current
    stream. ``scale`` defaults to 1/sqrt(64). ``copy=False`` refuses non-contiguous or unaligned inputs instead
    of copying them. ``kernel`` forces a registered kernel id (default: the dispatch table's choice).

    Raises ``TypeError`` / ``ValueError`` / ``NotImplementedError`` naming the bad argument before anything is
    launched, and :class:`NoKernelError` if no registered kernel can run the shape."""
    lib = _lib(q)
    if lib not in ("torch", "cupy"):
        raise TypeError(f"q must be a torch.Tensor or a cupy.ndarray, got {type(q).__module__}.{type(q).__name__}")
    descs = [describe(x, n) for x, n in ((q, "q"), (k, "k"), (v, "v"))]
    grad = False
    if lib == "torch":
        import torch

        grad = torch.is_grad_enabled()
    plan = validate(*descs, scale=scale, copy=copy, grad_enabled=grad)
    dev = _device_index(plan)
    if plan.empty:
        return _empty_like(q, plan)
    sms = _device_facts(dev)[0]
    if kernel is None:
        kernel_id = dispatch.choose(plan.B, plan.H, plan.S_q, plan.S_kv, _device_rule_input(dev)).kernel
    else:
        spec = kernels.get(kernel)
        problem = dispatch.launch_problem(spec, plan.bh, plan.S_q, plan.S_kv, sms)
        if problem:
            raise NoKernelError(f"kernel={kernel!r} cannot run B={plan.B}, H={plan.H}, S_q={plan.S_q}, "
                                f"S_kv={plan.S_kv}: {problem}")
        kernel_id = kernel
    launch = _launcher(kernel_id, dev)
    if lib == "torch":
        import torch

        with torch.cuda.device(dev):
            q, k, v = (_prepare_torch(x, plan.copies.get(n)) for x, n in ((q, "q"), (k, "k"), (v, "v")))
            o = torch.empty(plan.out_shape, dtype=q.dtype, device=q.device)
            launch(q, k, v, o, scale=plan.scale, stream=torch.cuda.current_stream(dev).cuda_stream)
        return o
    import cupy

    with cupy.cuda.Device(dev):
        q, k, v = (_prepare_cupy(x, plan.copies.get(n)) for x, n in ((q, "q"), (k, "k"), (v, "v")))
        o = cupy.empty(plan.out_shape, dtype=cupy.float16)
        launch(q, k, v, o, scale=plan.scale, stream=cupy.cuda.get_current_stream().ptr)
    return o


def _empty_like(q, plan: Plan):
    if _lib(q) == "torch":
        import torch

        return torch.empty(plan.out_shape, dtype=q.dtype, device=q.device)
    import cupy

    with cupy.cuda.Device(_device_index(plan)):
        return cupy.empty(plan.out_shape, dtype=cupy.float16)
