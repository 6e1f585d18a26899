"""Input validation for :func:`flashcore.attention`, on descriptors, so every rule is testable without a GPU.

A :class:`ArrayDesc` says what the validator needs to know about one argument — library, dtype, shape, strides
(in elements), device, data pointer — and nothing else. :func:`describe` builds one from a torch tensor or a CuPy
array (the tests also build them by hand, with a CUDA device that does not exist). :func:`validate` checks q, k, v
and the flags together and returns a :class:`Plan` (the problem sizes, the features, and which inputs must be
copied before the launch), or raises an error that names the argument, the expected value and what it got.
Nothing is launched here. What is supported is a :class:`Support` — the library passes the features of the kernels
it can dispatch to (:func:`flashcore.dispatch.library_support`); the default is the base set (fp16, D = 64, not
causal, no GQA), which the Triton peer uses.

The rules (the library page, ``book/library.md``, has the same table):

* ``is_causal`` and ``enable_gqa`` must be ``bool`` (``TypeError``, as SDPA's own argument parser says).
* dtype float16 or bfloat16 (``TypeError``), the same for q, k and v (``TypeError``: SDPA refuses mixed dtypes);
  CUDA device only, all three on one device and from one library (``ValueError``); rank 4, ``[B, H, S, D]``
  (``ValueError``); q, k, v agree on B and D, k and v on everything.
* Heads: k and v have ``H_kv`` heads. ``H_kv == H`` always works; with ``enable_gqa=True``, ``H_kv`` must divide
  ``H`` (query head h reads key/value head ``h // (H / H_kv)``: SDPA's ``repeat_interleave``); without it,
  ``H_kv == 1`` is accepted (SDPA broadcasts one key/value head over every query head) and any other ``H_kv``
  raises :class:`HeadsError` — a ``ValueError`` that is also a ``RuntimeError``, the class SDPA raises there.
* D in the supported set ({64, 128} for the library): any other head dimension raises ``NotImplementedError``
  naming the set.
* Non-contiguous or not 16-byte aligned storage is **copied** into a fresh contiguous buffer (the kernels read
  16-byte vectors from a dense ``[BH, S, D]`` array); ``copy=False`` refuses instead (``ValueError``).
* Empty inputs (B, H or S_q = 0) return an empty output without a launch; S_kv = 0 with a non-empty q is an error
  (attention over no keys has no value).
* Any tensor with 2**31 elements or more is refused (``ValueError``): the kernels index with 32-bit ints.
* ``scale`` must be a finite real number (negative and zero included, as in SDPA); forward only: inputs that
  require grad under autograd are refused.
* NaN / Inf in the inputs are not checked (no device sync, no extra pass): they propagate to the outputs they
  reach, as with ``torch.nn.functional.scaled_dot_product_attention`` (a NaN in a query row: that row; in a key or
  value row: every row of that head). One difference: a row whose scores are all -inf is NaN (the softmax
  formula's 0/0) where SDPA returns a finite row; the sweep records this per kernel (``special_values``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Tuple

HEAD_DIM = 64                  # the base head dimension (every kernel has it)
ALIGN_BYTES = 16
INT32_LIMIT = 1 << 31
DTYPE = "float16"              # the base dtype


class HeadsError(ValueError, RuntimeError):
    """k/v's head count does not fit q's: a ``ValueError`` like every shape error here, and a ``RuntimeError`` like
    the one ``torch.nn.functional.scaled_dot_product_attention`` raises for the same input (so code written for
    SDPA's error catches ours)."""


@dataclass(frozen=True)
class Support:
    """What a set of kernels can run: dtypes, head dimensions, causal masking, GQA (k/v with fewer heads).
    ``pending``: what is built but not yet verified on a GPU — refused like the rest, with an error that says so."""

    dtypes: Tuple[str, ...] = (DTYPE,)
    head_dims: Tuple[int, ...] = (HEAD_DIM,)
    causal: bool = False
    gqa: bool = False
    pending: Optional["Support"] = None

    def union(self, other: "Support") -> "Support":
        pending = self.pending if other.pending is None else (
            other.pending if self.pending is None else self.pending.union(other.pending))
        return Support(tuple(dict.fromkeys(self.dtypes + other.dtypes)),
                       tuple(sorted(set(self.head_dims) | set(other.head_dims))),
                       self.causal or other.causal, self.gqa or other.gqa, pending)


UNVERIFIED = "is built but not yet verified on a GPU, so the library does not run it yet"


BASE = Support()


@dataclass(frozen=True)
class ArrayDesc:
    """What validation needs to know about one array. ``strides`` are in elements, ``device`` is 'cpu' or
    'cuda:N'. ``lib`` is 'torch' or 'cupy' (it names dtypes in errors: ``torch.float16``)."""

    dtype: str                      # "float16", "float32", ... (no library prefix)
    shape: Tuple[int, ...]
    strides: Tuple[int, ...]
    device: str = "cuda:0"
    data_ptr: int = 0
    lib: str = "torch"
    itemsize: int = 2
    requires_grad: bool = False

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= int(s)
        return n

    @property
    def contiguous(self) -> bool:
        """Row-major dense (size-1 dims may have any stride, as torch and CuPy agree)."""
        expected = 1
        for size, stride in zip(reversed(self.shape), reversed(self.strides)):
            if size != 1 and stride != expected:
                return False
            expected *= size
        return True

    @property
    def aligned(self) -> bool:
        return self.data_ptr % ALIGN_BYTES == 0

    def dtype_name(self, dtype: Optional[str] = None) -> str:
        return f"{self.lib}.{dtype or self.dtype}"


@dataclass
class Plan:
    """What :func:`validate` decided: the sizes, the features, the device, the inputs to copy first, whether to
    launch at all."""

    B: int
    H: int
    S_q: int
    S_kv: int
    D: int
    device: str
    lib: str
    scale: float
    empty: bool = False                                   # return an empty output, launch nothing
    copies: dict = field(default_factory=dict)            # name → why it must be copied ("not contiguous", ...)
    dtype: str = DTYPE
    H_kv: int = 0                                         # key/value heads (0: as many as H)
    causal: bool = False

    def __post_init__(self):
        if not self.H_kv:
            self.H_kv = self.H

    @property
    def bh(self) -> int:
        return self.B * self.H

    @property
    def kv_group(self) -> int:
        """Query heads per key/value head (1 without GQA)."""
        return self.H // self.H_kv if self.H_kv else 1

    @property
    def out_shape(self) -> Tuple[int, int, int, int]:
        return (self.B, self.H, self.S_q, self.D)

    @property
    def device_index(self) -> int:
        return int(self.device.split(":")[1]) if ":" in self.device else 0


def _dtype_of(x) -> Tuple[str, str]:
    """(dtype name, library) of a torch tensor or a CuPy/NumPy array."""
    mod = type(x).__module__.split(".")[0]
    if mod == "torch":
        return str(x.dtype).replace("torch.", ""), "torch"
    name = getattr(getattr(x, "dtype", None), "name", None)
    if name is None:
        raise TypeError(f"expected a torch tensor or a CuPy array, got {type(x).__name__}")
    return name, ("cupy" if mod == "cupy" else mod)


def describe(x, name: str = "x", fake: bool = False) -> ArrayDesc:
    """An :class:`ArrayDesc` of a torch tensor or a CuPy (or NumPy, for the error) array. ``fake=True`` (torch's
    fake tensors, under ``torch.compile``) has no storage: its pointer is taken as aligned."""
    if x is None:
        raise TypeError(f"{name} must be a torch tensor or a CuPy array, got None")
    dtype, lib = _dtype_of(x)
    if lib == "torch":
        dev = x.device
        device = "cpu" if dev.type == "cpu" else f"{dev.type}:{dev.index if dev.index is not None else 0}"
        return ArrayDesc(dtype=dtype, shape=tuple(int(s) for s in x.shape), strides=tuple(int(s) for s in x.stride()),
                         device=device, data_ptr=0 if fake else int(x.data_ptr()), lib="torch",
                         itemsize=int(x.element_size()), requires_grad=bool(x.requires_grad))
    itemsize = int(x.dtype.itemsize)
    strides = tuple(int(s) // itemsize for s in x.strides)
    if lib == "cupy":
        device, ptr = f"cuda:{x.device.id}", int(x.data.ptr)
    else:  # NumPy and friends live on the host
        device, ptr = "cpu", int(x.__array_interface__["data"][0]) if hasattr(x, "__array_interface__") else 0
    return ArrayDesc(dtype=dtype, shape=tuple(int(s) for s in x.shape), strides=strides, device=device,
                     data_ptr=ptr, lib=lib, itemsize=itemsize)


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _one_of(names, lib: Optional[str] = None) -> str:
    names = [f"{lib}.{n}" if lib else str(n) for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def check_scale(scale, D: int = HEAD_DIM) -> float:
    if scale is None:
        return 1.0 / math.sqrt(D)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) and not hasattr(scale, "__float__"):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    value = float(scale)
    if not math.isfinite(value):
        raise ValueError(f"scale must be a finite float, got {value}")
    return value


def check_flag(value, name: str) -> bool:
    """A bool argument (``is_causal``, ``enable_gqa``, ``copy``): Python's bool only, as SDPA's parser demands."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} ({value!r})")
    return value


def validate(q: ArrayDesc, k: ArrayDesc, v: ArrayDesc, scale=None, copy: bool = True,
             grad_enabled: bool = False, *, is_causal: bool = False, enable_gqa: bool = False,
             support: Support = BASE, devices: Tuple[str, ...] = ("cuda",)) -> Plan:
    """Check q, k, v (descriptors) and the flags against the kernels' ABI and ``support``; return a :class:`Plan`
    or raise a clear error. ``devices`` are the device types accepted (the library: CUDA only)."""
    check_flag(is_causal, "is_causal")
    check_flag(enable_gqa, "enable_gqa")
    check_flag(copy, "copy")
    args = dict(q=q, k=k, v=v)
    for name, d in args.items():
        if not isinstance(d, ArrayDesc):
            raise TypeError(f"{name} must be an ArrayDesc (use flashcore.validate.describe), got {type(d).__name__}")
    # library: one library for all three (the output has the input's type)
    libs = {d.lib for d in args.values()}
    if len(libs) > 1:
        raise TypeError("q, k and v must come from one library, got " +
                        ", ".join(f"{n}: {d.lib}" for n, d in args.items()))
    # rank
    for name, d in args.items():
        if len(d.shape) != 4:
            raise ValueError(f"{name} must have 4 dims [B, H, S, D], got {len(d.shape)} dims "
                             f"(shape {_fmt_shape(d.shape)})")
    # dtype: a supported one, the same for all three
    pending = support.pending or Support((), (), False, False)
    for name, d in args.items():
        if d.dtype not in support.dtypes:
            if d.dtype in pending.dtypes:
                raise NotImplementedError(f"{name}.dtype {d.dtype_name()}: FlashCore's {d.dtype} kernel variant "
                                          f"{UNVERIFIED}; {name}.dtype must be {_one_of(support.dtypes, d.lib)} "
                                          f"for now")
            raise TypeError(f"{name}.dtype must be {_one_of(support.dtypes, d.lib)}, got {d.dtype_name()}")
    for name in ("k", "v"):
        if args[name].dtype != q.dtype:
            raise TypeError(f"{name}.dtype must equal q.dtype ({q.dtype_name()}), got {args[name].dtype_name()}")
    # device
    for name, d in args.items():
        if d.device.split(":")[0] not in devices:
            raise ValueError(f"{name}.device must be a CUDA device, got {d.device} "
                             f"(move it with .cuda() / .to('cuda'))")
    if len({d.device for d in args.values()}) > 1:
        raise ValueError("q, k and v must be on one device, got " +
                         ", ".join(f"{n}.device={d.device}" for n, d in args.items()))
    # shapes agree
    (B, H, S_q, D), (_, H_kv, S_kv, Dk) = q.shape, k.shape
    if k.shape != v.shape:
        raise ValueError(f"v.shape must equal k.shape {_fmt_shape(k.shape)}, got {_fmt_shape(v.shape)}")
    if k.shape[0] != B:
        raise ValueError(f"k.shape[0] (B) must equal q.shape[0] = {B}, got {k.shape[0]}")
    if Dk != D:
        raise ValueError(f"k.shape[3] (D) must equal q.shape[3] = {D}, got {Dk}")
    # heads: equal; or grouped (enable_gqa, H_kv divides H); or one key/value head broadcast (SDPA's broadcasting)
    if H_kv != H:
        if enable_gqa:
            if H_kv == 0 or H % H_kv:
                raise HeadsError(f"k.shape[1] (H_kv = {H_kv}) must divide q.shape[1] (H = {H}) with enable_gqa=True "
                                 f"(SDPA: 'Number of heads in key and value must divide the number of heads in "
                                 f"query')")
        elif H_kv != 1:
            raise HeadsError(f"k.shape[1] (H_kv = {H_kv}) must equal q.shape[1] (H = {H}) without enable_gqa "
                             f"(SDPA: 'The size of tensor a ({H}) must match the size of tensor b ({H_kv}) at "
                             f"non-singleton dimension 1'); pass enable_gqa=True for grouped-query attention")
        if not support.gqa:
            raise NotImplementedError(f"k.shape[1] (H_kv = {H_kv}) must equal q.shape[1] (H = {H}): grouped-query "
                                      f"attention is not supported here")
    # head dimension
    if D not in support.head_dims:
        later = sorted(set(pending.head_dims) - set(support.head_dims))
        note = (f"; D={D}: FlashCore's D={D} kernel variant {UNVERIFIED}" if D in later else
                (f" (built, awaiting a GPU check: {{{', '.join(map(str, later))}}})" if later else ""))
        raise NotImplementedError(f"head dimension D={D} is not supported: q.shape[3] must be one of "
                                  f"{{{', '.join(map(str, support.head_dims))}}}{note}")
    if is_causal and not support.causal:
        if pending.causal:
            raise NotImplementedError(f"is_causal=True: FlashCore's causal kernel variant {UNVERIFIED} "
                                      f"(is_causal must be False for now)")
        raise NotImplementedError("is_causal=True is not supported here (is_causal must be False)")
    # autograd: the kernels are forward only
    if grad_enabled:
        for name, d in args.items():
            if d.requires_grad:
                raise NotImplementedError(f"{name}.requires_grad must be False (FlashCore is forward-only), got "
                                          f"True: call it under torch.no_grad() or pass {name}.detach()")
    value = check_scale(scale, D)
    plan = Plan(B=B, H=H, S_q=S_q, S_kv=S_kv, D=D, device=q.device, lib=q.lib, scale=value, dtype=q.dtype,
                H_kv=H_kv if H else 0, causal=is_causal)
    # empty
    if q.numel == 0:
        plan.empty = True
        return plan
    if S_kv == 0:
        raise ValueError(f"k.shape[2] (S_kv) must be ≥ 1 when q is not empty (q.shape {_fmt_shape(q.shape)}), "
                         f"got 0: attention over no keys is undefined")
    # 32-bit indexing
    for name, d in args.items():
        if d.numel >= INT32_LIMIT:
            raise ValueError(f"{name} must have fewer than 2**31 elements (the kernels index with int32), got "
                             f"{d.numel} (shape {_fmt_shape(d.shape)}); split the batch")
    # layout: copy or refuse
    for name, d in args.items():
        why = []
        if not d.contiguous:
            why.append(f"not contiguous (strides {d.strides}, expected {contiguous_strides(d.shape)})")
        if not d.aligned:
            why.append(f"data_ptr {d.data_ptr:#x} not {ALIGN_BYTES}-byte aligned")
        if why:
            if not copy:
                raise ValueError(f"{name} must be contiguous and {ALIGN_BYTES}-byte aligned, got " + "; ".join(why)
                                 + f" (call {name}.contiguous() / clone(), or use copy=True)")
            plan.copies[name] = "; ".join(why)
    return plan


def contiguous_strides(shape) -> Tuple[int, ...]:
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc)
        acc *= int(s)
    return tuple(reversed(out))
