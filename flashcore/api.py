"""The library call: ``flashcore.attention(q, k, v, scale=None)`` — a drop-in for the forward of
``torch.nn.functional.scaled_dot_product_attention`` on fp16 ``[B, H, S, 64]`` CUDA tensors (or CuPy arrays).

    import torch, flashcore
    q, k, v = (torch.randn(2, 8, 1000, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    o = flashcore.attention(q, k, v)                 # [2, 8, 1000, 64], same type, device and stream as q
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)

Steps: describe the inputs (:mod:`flashcore.validate`), validate them (clear errors, nothing launched), pick the
kernel for the shape (:mod:`flashcore.dispatch`), compile it once per process (:func:`flashcore.compile.load_kernel`
caches; CuPy also caches the NVRTC output on disk across processes), launch on the caller's current stream.
"""
from __future__ import annotations

import functools
from typing import Optional

from . import dispatch, kernels
from .validate import ArrayDesc, Plan, describe, validate

__all__ = ["attention", "kernel_for", "NoKernelError"]

NoKernelError = dispatch.NoKernelError


def _lib(x) -> str:
    return type(x).__module__.split(".")[0]


def _device_index(plan: Plan) -> int:
    return int(plan.device.split(":")[1]) if ":" in plan.device else 0


@functools.lru_cache(maxsize=None)
def _device_facts(index: int) -> tuple:
    """(SM count, GPU slug) of a CUDA device, asked once."""
    import cupy

    from .provenance import gpu_slug

    props = cupy.cuda.runtime.getDeviceProperties(index)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return int(props["multiProcessorCount"]), gpu_slug(name)


@functools.lru_cache(maxsize=4096)
def _choose(B: int, H: int, S_q: int, S_kv: int, num_sms: int, slug: Optional[str]) -> dispatch.Choice:
    return dispatch.choose(B, H, S_q, S_kv, kernels.all_specs(), dispatch.recorded_evidence(slug),
                           num_sms=num_sms)


def kernel_for(q_shape, k_shape=None, device: int = 0) -> dispatch.Choice:
    """Which kernel :func:`attention` would launch for these shapes (and why). Needs the GPU's SM count."""
    k_shape = q_shape if k_shape is None else k_shape
    B, H, S_q, _ = q_shape
    sms, slug = _device_facts(device)
    return _choose(int(B), int(H), int(S_q), int(k_shape[2]), sms, slug)


_HOME_DEVICE: dict = {}      # kernel id → the device load_kernel compiled it on
_OTHER: dict = {}            # (kernel id, device) → Launcher for any other device
_READY: dict = {}            # (kernel id, device) → Launcher, whichever way it was built (the per-call lookup)


def _launcher(kernel_id: str, device: int):
    """The compiled kernel for ``device``: load_kernel's per-process cache on the first device that asks."""
    import cupy

    from .compile import CompileError, Launcher, device_arch, load_kernel, nvrtc_options

    hit = _READY.get((kernel_id, device))
    if hit is not None:           # no file read, no hashing: the per-call cost of a warm call is the launch
        return hit
    spec = kernels.get(kernel_id)
    with cupy.cuda.Device(device):
        home = _HOME_DEVICE.setdefault(kernel_id, device)
        if home == device:
            _READY[(kernel_id, device)] = load_kernel(spec)
            return _READY[(kernel_id, device)]
        # load_kernel's cache key has no device: a second GPU gets its own module, compiled the same way
        key = (kernel_id, device)
        if key not in _OTHER:
            arch = device_arch()
            try:
                module = cupy.RawModule(code=spec.path.read_text(), options=nvrtc_options(arch, spec.defines),
                                        backend="nvrtc")
                fn = module.get_function(spec.entry)
            except cupy.cuda.compiler.CompileException as exc:
                raise CompileError(spec.path, str(exc), "NVRTC") from None
            _OTHER[key] = Launcher(spec, fn, arch, _device_facts(device)[0])
        _READY[key] = _OTHER[key]
        return _OTHER[key]


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
    sms, slug = _device_facts(dev)
    if kernel is None:
        kernel_id = _choose(plan.B, plan.H, plan.S_q, plan.S_kv, sms, slug).kernel
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


def describe_inputs(q, k, v) -> list:
    """The descriptors :func:`attention` validates (for debugging a rejected call)."""
    return [describe(x, n) for x, n in ((q, "q"), (k, "k"), (v, "v"))]


ArrayDesc = ArrayDesc
