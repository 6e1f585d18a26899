"""The library call: ``flashcore.attention(q, k, v, *, is_causal=False, scale=None, enable_gqa=False)`` — a drop-in
for the forward of ``torch.nn.functional.scaled_dot_product_attention`` on ``[B, H, S, D]`` CUDA tensors (or CuPy
arrays), with SDPA's argument names and semantics for what it supports.

    import torch, flashcore
    q = torch.randn(2, 32, 1000, 64, device="cuda", dtype=torch.float16)
    k, v = (torch.randn(2, 8, 1000, 64, device="cuda", dtype=torch.float16) for _ in range(2))
    o = flashcore.attention(q, k, v, scale=-0.125, enable_gqa=True)       # [2, 32, 1000, 64], on q's stream
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=-0.125, enable_gqa=True)

What runs today is the kernel build every record measured (fp16, D = 64, not causal). Grouped key/value heads
(``enable_gqa``, or one key/value head) and any finite scale (negative, zero, denormal) are done around it, exactly:
k and v repeated over the groups (SDPA's ``repeat_interleave``: a copy of each), q negated for a negative scale
(softmax((q·k)·s) = softmax(((−q)·k)·|s|), and fp16 negation is exact: a copy of q), and a scale below the
smallest normal float raised to it (every unmasked key then gets weight 1, SDPA's answer for scale 0). bf16,
D = 128 and the causal mask are compile-time variants of the same kernel source that compile but have not run on
a GPU yet: the call refuses them with an error that says so (:data:`flashcore.validate.UNVERIFIED`) — the GPU
checks opt in with :func:`unverified_variants` (then the feature builds also map grouped heads and take any scale
themselves).

The first call with a layout — shapes, strides, dtypes, device, pointer alignment, flags — describes the inputs
(:mod:`flashcore.validate`), validates them (clear errors, nothing launched), picks the kernel
(:func:`flashcore.dispatch.choose`, a pure function), compiles its build once per process and device
(:func:`flashcore.compile.load_kernel`, under a lock: many threads, one compile) and prepares the launch
(:mod:`flashcore.launch`: grid, block, shared memory, packed constant arguments; for ``flashcore_hopper``, the
Hopper kernel the rule picks for large fp16 / D = 64 / non-causal problems on sm_90, also the three TMA map layouts,
checked once). It caches all of that under a key
of the tensors' metadata. Every later call with the same key builds the key, allocates the output, and launches:
no validation, no dispatch, no record or file read, no per-call argument boxing (``book/library.md`` shows what a
call costs, from the library record). A changed stride, dtype, alignment, device or flag is another key, so it is
validated afresh. The Hopper kernel's TMA maps embed the tensors' addresses: its prepared launch re-encodes a map
only when that tensor's pointer differs from the last call's (one driver call, no allocation), so a loop over the
same buffers encodes nothing; its requirements (contiguous, 16-byte-aligned bases) are the library's own, checked
with the layout (the key holds each pointer's alignment): a misaligned or strided input is copied, or with
``copy=False`` refused with an error naming the rule — never a map of the wrong memory.

Under ``torch.compile`` the call goes through the PyTorch operator ``torch.ops.flashcore.attention``
(:mod:`flashcore.torch_op`, with a fake implementation for tracing); eager calls do not pay that dispatch.
"""
from __future__ import annotations

import contextlib
import functools
import sys
import threading
from typing import Optional

from . import dispatch, kernels
from .validate import HeadsError, Plan, check_flag, check_scale, describe, validate

__all__ = ["attention", "kernel_for", "NoKernelError", "HeadsError", "clear_cache", "unverified_variants"]

NoKernelError = dispatch.NoKernelError
FLT_MIN = 2.0 ** -126       # the smallest normal fp32: |scale| below it is raised to it (the kernel flushes denormals)
CACHE_LIMIT = 1024          # cached layouts; a process that makes more (say, a growing S_kv) starts over
_PLANS: dict = {}           # key (tensor metadata + flags) → _Call
_READY: dict = {}           # (kernel id, build -D flags, device) → Launcher
_COMPILE_LOCK = threading.Lock()
DEVICE_TYPES = ("cuda",)    # where the inputs may live (the CPU host-cost profile fakes the GPU and adds "cpu")
_UNVERIFIED = False         # unverified_variants(): the GPU checks run the variants no GPU check has passed yet


@contextlib.contextmanager
def unverified_variants():
    """Let the library run kernel variants that compile but have no recorded GPU check yet (bf16, D = 128, causal,
    grouped heads and special scales in the kernel) — for the GPU checks that verify them (``python -m flashcore
    sweep --unverified``, ``python -m flashcore library``), not for users. Process-wide while it lasts; the cached
    layouts are dropped on entry and exit, so nothing it validated outlives it."""
    global _UNVERIFIED
    previous = _UNVERIFIED
    _PLANS.clear()
    _UNVERIFIED = True
    try:
        yield
    finally:
        _UNVERIFIED = previous
        _PLANS.clear()


# ------------------------------------------------------------------------------------- torch, bound on first use
_is_compiling = None        # torch.compiler.is_compiling, once torch is imported
_op = None                  # torch.ops.flashcore.attention.default, once registered
_torch = None


def _bind_torch():
    """Bind the torch hooks (and register the custom op) once torch is imported; False if it is not."""
    global _is_compiling, _op, _torch
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    if _op is None:
        from . import torch_op

        _op = torch_op.OP
    _torch = torch
    _is_compiling = torch.compiler.is_compiling
    return True


def _raw_stream_fn():
    """index → the raw ``cudaStream_t`` of torch's current stream on that device (what torch's compiled code
    calls)."""
    import torch

    fast = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    return fast if fast is not None else (lambda index: torch.cuda.current_stream(index).cuda_stream)


# --------------------------------------------------------------------------------------------- device facts
@functools.lru_cache(maxsize=None)
def _device_facts(index: int) -> tuple:
    """(SM count,) of a CUDA device, asked once."""
    import cupy

    return (int(cupy.cuda.runtime.getDeviceProperties(index)["multiProcessorCount"]),)


@functools.lru_cache(maxsize=None)
def _device_rule_input(index: int) -> dispatch.Device:
    import cupy

    return dispatch.Device(sm=int(cupy.cuda.Device(index).compute_capability), num_sms=_device_facts(index)[0])


def _features(plan: Plan) -> dispatch.Features:
    return dispatch.Features(dtype=plan.dtype, head_dim=plan.D, causal=plan.causal, gqa=plan.H_kv != plan.H)


def kernel_for(q_shape, k_shape=None, device: int = 0, *, dtype: str = "float16", is_causal: bool = False
               ) -> dispatch.Choice:
    """Which kernel :func:`attention` would launch for these shapes (``[B, H, S_q, D]``, ``[B, H_kv, S_kv, D]``) and
    features on CUDA device ``device``, and why."""
    k_shape = q_shape if k_shape is None else k_shape
    B, H, S_q, D = (int(x) for x in q_shape)
    H_kv, S_kv = int(k_shape[1]), int(k_shape[2])
    dtype = str(dtype).replace("torch.", "")
    return dispatch.choose(B, H, S_q, S_kv, _device_rule_input(device),
                           dispatch.Features(dtype=dtype, head_dim=D, causal=bool(is_causal), gqa=H_kv != H),
                           unverified=_UNVERIFIED)


# -------------------------------------------------------------------------------------- compile, once per variant
def variant_defines(spec, build: dispatch.Build) -> tuple:
    """The ``-D`` flags of the kernel's build for a launch (its spec's ``variant``; () for the base build)."""
    variant = getattr(spec, "variant", None)
    return tuple(variant(build)) if variant is not None else ()


def _load(spec, defines: tuple, device: int):
    from .compile import load_kernel

    return load_kernel(spec, defines=defines, device=device)


def _launcher(kernel_id: str, device: int, defines: tuple = ()):
    """The compiled kernel build for ``device``: compiled once per process, however many threads ask at once."""
    key = (kernel_id, defines, device)
    hit = _READY.get(key)
    if hit is None:
        with _COMPILE_LOCK:                    # the first call's compile: one thread compiles, the others wait
            hit = _READY.get(key)
            if hit is None:
                hit = _READY[key] = _load(kernels.get(kernel_id), defines, device)
    return hit


def _prepare(launcher, plan: Plan, scale: float, kv_group: int):
    from .launch import prepare

    return prepare(launcher, plan.bh, plan.S_q, plan.S_kv, scale, kv_group)


# ------------------------------------------------------------------------------------------------ the call
class Route:
    """How one validated layout runs: the kernel and its build, and what the library does around it — ``expand``
    (repeat k and v over this many query heads per key/value head), ``negate_q`` (a negative scale, done on q),
    the scale and ``kv_group`` the kernel gets."""

    __slots__ = ("spec", "defines", "expand", "negate_q", "kernel_scale", "kv_group")

    def __init__(self, spec, defines, expand, negate_q, kernel_scale, kv_group):
        self.spec, self.defines, self.expand, self.negate_q = spec, defines, expand, negate_q
        self.kernel_scale, self.kv_group = kernel_scale, kv_group


def route(plan: Plan, kernel: Optional[str] = None, unverified: Optional[bool] = None) -> Route:
    """The kernel for a validated plan — the dispatch rule's, or the forced one — and how the call runs around it."""
    unverified = _UNVERIFIED if unverified is None else unverified
    dev = plan.device_index
    features = _features(plan)
    if kernel is None:
        kernel_id = dispatch.choose(plan.B, plan.H, plan.S_q, plan.S_kv, _device_rule_input(dev), features,
                                    unverified=unverified).kernel
        spec = kernels.get(kernel_id)
    else:
        spec = kernels.get(kernel)
        problem = dispatch.unsupported(spec, features, unverified) or \
            dispatch.device_problem(spec, _device_rule_input(dev)) or \
            dispatch.launch_problem(spec, plan.bh, plan.S_q, plan.S_kv, _device_facts(dev)[0])
        if problem:
            raise NoKernelError(f"kernel={kernel!r} cannot run B={plan.B}, H={plan.H}, H_kv={plan.H_kv}, "
                                f"S_q={plan.S_q}, S_kv={plan.S_kv}, {plan.dtype}, D={plan.D}"
                                + (", causal" if plan.causal else "") + f": {problem}")
    can = dispatch.declared(spec, unverified)
    kernel_gqa = plan.H_kv != plan.H and can.gqa
    special = plan.scale < 0 or abs(plan.scale) < FLT_MIN
    kernel_scale = special and can.any_scale
    build = dispatch.Build(plan.dtype, plan.D, plan.causal, kernel_gqa, kernel_scale)
    scale = plan.scale
    negate_q = False
    if special and not kernel_scale:
        negate_q = scale < 0
        scale = max(abs(scale), FLT_MIN)
    expand = plan.kv_group if plan.H_kv != plan.H and not kernel_gqa else 1
    return Route(spec, variant_defines(spec, build), expand, negate_q, scale, plan.kv_group if kernel_gqa else 1)


class _Call:
    """What one validated layout needs per call; calling it allocates the output and launches."""

    __slots__ = ("plan", "route", "launch", "prepared", "kernel", "out_shape", "dtype", "device", "index", "copies",
                 "empty", "around")

    def __init__(self, plan: Plan, route_: Optional[Route], launch, dtype, device, prepared: bool = False):
        self.plan = plan
        self.route = route_
        self.launch = launch
        self.prepared = prepared
        self.kernel = route_.spec.id if route_ is not None else None
        self.out_shape = plan.out_shape
        self.dtype = dtype
        self.device = device
        self.index = plan.device_index
        self.copies = tuple(plan.copies)
        self.empty = plan.empty
        self.around = bool(self.copies) or (route_ is not None and (route_.negate_q or route_.expand > 1))

    def __call__(self, q, k, v):
        if self.empty:
            return _new_output(self.out_shape, dtype=self.dtype, device=self.device)
        if self.around:                         # copies, a negated q, repeated k and v: fresh contiguous tensors
            q, k, v = self.inputs(q, k, v)
        o = _new_output(self.out_shape, dtype=self.dtype, device=self.device)
        if self.prepared:
            self.launch(q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), _raw_stream(self.index))
        else:                                   # a kernel with per-launch arguments: its Launcher's general call
            self.launch(q, k, v, o, scale=self.route.kernel_scale, stream=_raw_stream(self.index))
        return o

    def inputs(self, q, k, v):
        """q, k, v as the kernel takes them: contiguous and aligned, q negated for a negative scale the kernel does
        not take itself, k and v repeated over the groups for a kernel that does not map them."""
        r = self.route
        if r.negate_q:
            q = _torch.neg(q, out=_new_output(q.shape, dtype=q.dtype, device=q.device))
        elif "q" in self.copies:
            q = _copy_torch(q)
        if r.expand > 1:
            k, v = (x.repeat_interleave(r.expand, dim=1) for x in (k, v))   # fresh and contiguous
        else:
            k, v = (_copy_torch(x) if n in self.copies else x for x, n in ((k, "k"), (v, "v")))
        return q, k, v


def _plan(q, k, v, is_causal, scale, enable_gqa, copy, grad_enabled, fake=False) -> Plan:
    descs = [describe(x, n, fake=fake) for x, n in ((q, "q"), (k, "k"), (v, "v"))]
    return validate(*descs, scale=scale, copy=copy, grad_enabled=grad_enabled, is_causal=is_causal,
                    enable_gqa=enable_gqa, support=dispatch.library_support(unverified=_UNVERIFIED),
                    devices=DEVICE_TYPES)


def _new_call(plan: Plan, kernel: Optional[str], dtype, device) -> _Call:
    if plan.empty:
        return _Call(plan, None, None, dtype, device)
    from .launch import preparable

    r = route(plan, kernel)
    launcher = _launcher(r.spec.id, plan.device_index, r.defines)
    if preparable(r.spec):                   # no extra args, or only TMA maps (flashcore_hopper): packed once
        return _Call(plan, r, _prepare(launcher, plan, r.kernel_scale, r.kv_group), dtype, device, prepared=True)
    return _Call(plan, r, launcher, dtype, device)


def clear_cache() -> None:
    """Forget every cached layout (the compiled kernels stay)."""
    _PLANS.clear()


def _remember(key, call: _Call) -> _Call:
    if len(_PLANS) >= CACHE_LIMIT:
        _PLANS.clear()
    _PLANS[key] = call
    return call


def attention(q, k, v, *, is_causal: bool = False, scale: Optional[float] = None, enable_gqa: bool = False,
              copy: bool = True, kernel: Optional[str] = None):
    """softmax(q·kᵀ·scale + causal mask)·v for ``[B, H, S_q, D]`` queries and ``[B, H_kv, S_kv, D]`` keys and
    values on one CUDA device (torch tensors or CuPy arrays). Returns a new array of q's type, dtype and device,
    ``[B, H, S_q, D]``, computed on the current stream. Runs today: float16, D = 64, not causal (bf16, D = 128 and
    ``is_causal=True`` are built but wait for a GPU check: a clear ``NotImplementedError`` says so).

    ``is_causal``: query i attends to keys j ≤ i — SDPA's top-left alignment, also when S_q ≠ S_kv.
    ``scale``: any finite float (default 1/sqrt(D)); negative and zero as in SDPA.
    ``enable_gqa``: k and v may have H_kv heads dividing H (query head h reads head h // (H / H_kv)); without it,
    H_kv must equal H, or be 1 (SDPA broadcasts one key/value head).
    ``copy=False`` refuses non-contiguous or unaligned inputs instead of copying them. ``kernel`` forces a
    registered kernel id (default: the dispatch rule's choice).

    Raises ``TypeError`` / ``ValueError`` / ``NotImplementedError`` naming the bad argument before anything is
    launched, and :class:`NoKernelError` if no registered kernel can run the problem."""
    if _is_compiling is None:
        _bind_torch()                                        # torch imported after flashcore: bind it now
    if _is_compiling is not None and _is_compiling():
        return _op(q, k, v, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa, copy=copy, kernel_id=kernel)
    if scale is not None and scale.__class__ is not float:
        scale = check_scale(scale)                          # ints, numpy and torch scalars: one float in the key
    if is_causal.__class__ is not bool or enable_gqa.__class__ is not bool or copy.__class__ is not bool:
        check_flag(is_causal, "is_causal"), check_flag(enable_gqa, "enable_gqa"), check_flag(copy, "copy")
    try:
        key = _key(q, k, v, is_causal, scale, enable_gqa, copy, kernel)
    except (AttributeError, TypeError):                     # not torch tensors: CuPy, or an error to report
        return _attention_general(q, k, v, is_causal, scale, enable_gqa, copy, kernel)
    call = _PLANS.get(key)
    if call is None:
        call = _first_call(key, q, k, v, is_causal, scale, enable_gqa, copy, kernel)
    return call(q, k, v)


def _key(q, k, v, is_causal, scale, enable_gqa, copy, kernel) -> tuple:
    """The cache key of a torch call: everything validation and the prepared launch depend on — shapes, strides,
    dtypes, devices, each pointer's 16-byte alignment, whether autograd would need the inputs, and the flags."""
    return (q.shape, k.shape, v.shape, q.stride(), k.stride(), v.stride(), q.dtype, k.dtype, v.dtype,
            q.device, k.device, v.device, q.data_ptr() & 15, k.data_ptr() & 15, v.data_ptr() & 15,
            (q.requires_grad or k.requires_grad or v.requires_grad) and _torch.is_grad_enabled(),
            is_causal, scale, enable_gqa, copy, kernel)


def _first_call(key, q, k, v, is_causal, scale, enable_gqa, copy, kernel) -> _Call:
    """A layout seen for the first time: validate, choose, compile (once), prepare; remember it under ``key``."""
    _bind_runtime()
    plan = _plan(q, k, v, is_causal, scale, enable_gqa, copy, _torch.is_grad_enabled())
    return _remember(key, _new_call(plan, kernel, q.dtype, q.device))


def _copy_torch(x):
    return x.contiguous() if not x.is_contiguous() else x.clone()   # clone: a fresh, aligned allocation


def raw_launch(q, k, v, o, *, is_causal: bool = False, scale=None, enable_gqa: bool = False,
               kernel: Optional[str] = None) -> None:
    """The same computation as :func:`attention` into ``o`` through the kernel's general Launcher (NumPy-boxed
    arguments, CuPy's launch) instead of the prepared launch: the fuzz's second path, which must agree bit for bit.
    Validates every time; caches nothing."""
    _bind_torch()
    _bind_runtime()
    plan = _plan(q, k, v, is_causal, scale, enable_gqa, True, _torch.is_grad_enabled())
    if plan.empty:
        return
    r = route(plan, kernel)
    call = _Call(plan, r, None, q.dtype, q.device)
    if call.around:
        q, k, v = call.inputs(q, k, v)
    launcher = _launcher(r.spec.id, plan.device_index, r.defines)
    launcher(q, k, v, o, scale=r.kernel_scale, stream=_raw_stream(plan.device_index))


# the per-call seams, bound once (the CPU host-cost profile replaces them with fakes: flashcore.library_bench)
_raw_stream = None
_new_output = None


def _bind_runtime():
    global _raw_stream, _new_output
    if _raw_stream is None:
        _raw_stream = _raw_stream_fn()
    if _new_output is None:
        _new_output = _torch.empty


# ---------------------------------------------------------------------------------------------------- CuPy
def _lib(x) -> str:
    return type(x).__module__.split(".")[0]


def _attention_general(q, k, v, is_causal, scale, enable_gqa, copy, kernel):
    """CuPy arrays (cached by their own metadata); torch calls whose key cannot be built (validated every time);
    and the errors for anything that is not an array."""
    lib = _lib(q)
    if lib not in ("torch", "cupy"):
        raise TypeError(f"q must be a torch.Tensor or a cupy.ndarray, got {type(q).__module__}.{type(q).__name__}")
    if lib == "torch":                                       # e.g. k is not a tensor: validation names it
        _bind_runtime()
        plan = _plan(q, k, v, is_causal, scale, enable_gqa, copy, _torch.is_grad_enabled())
        return _new_call(plan, kernel, q.dtype, q.device)(q, k, v)
    import cupy

    try:
        ptrs = (q.data.ptr, k.data.ptr, v.data.ptr)
        key = ("cupy", q.shape, k.shape, v.shape, q.strides, k.strides, v.strides, q.dtype, k.dtype, v.dtype,
               q.device.id, k.device.id, v.device.id, ptrs[0] & 15, ptrs[1] & 15, ptrs[2] & 15,
               is_causal, scale, enable_gqa, copy, kernel)
        hash(key)
    except (AttributeError, TypeError):
        key = None
    call = _PLANS.get(key) if key is not None else None
    if call is None:
        descs = [describe(x, n) for x, n in ((q, "q"), (k, "k"), (v, "v"))]
        plan = validate(*descs, scale=scale, copy=copy, is_causal=is_causal, enable_gqa=enable_gqa,
                        support=dispatch.library_support(unverified=_UNVERIFIED), devices=DEVICE_TYPES)
        call = _new_call(plan, kernel, q.dtype, plan.device_index)
        if key is not None:
            _remember(key, call)
    with cupy.cuda.Device(call.index):
        if call.empty:
            return cupy.empty(call.out_shape, dtype=call.dtype)
        r = call.route
        if r.negate_q:
            q = cupy.ascontiguousarray(cupy.negative(q))
        elif "q" in call.copies:
            q = _copy_cupy(q)
        if r.expand > 1:
            k, v = (cupy.ascontiguousarray(cupy.repeat(x, r.expand, axis=1)) for x in (k, v))
        else:
            k, v = (_copy_cupy(x) if n in call.copies else x for x, n in ((k, "k"), (v, "v")))
        o = cupy.empty(call.out_shape, dtype=call.dtype)
        stream = cupy.cuda.get_current_stream().ptr
        if call.prepared:
            call.launch(q.data.ptr, k.data.ptr, v.data.ptr, o.data.ptr, stream)
        else:
            call.launch(q, k, v, o, scale=r.kernel_scale, stream=stream)
    return o


def _copy_cupy(x):
    import cupy

    return cupy.ascontiguousarray(x) if not x.flags.c_contiguous else x.copy()
