"""One kernel launch prepared once, launched many times: the library call's hot path.

:class:`PreparedLaunch` holds everything about a launch that does not change between calls with the same layout —
the CUfunction, grid, block, dynamic shared memory, and the kernel's packed constant arguments (``bh``, ``seq_q``,
``seq_kv``, ``softmax_scale``, ``split``, ...) as C values in one argument block — so a call only writes the four
data pointers into that block and calls ``cuLaunchKernel`` (CuPy's thin binding, ``driver.launchKernel``) on the
caller's stream. Nothing is boxed into NumPy scalars per call, no ``ExternalStream`` object is built, and the
device is switched only if this thread's current CUDA context is not the kernel's (a thread that never touched the
GPU, or a tensor on another device).

Thread safety: the argument block is shared by the threads that launch the same layout; a lock covers writing the
pointers and the launch (``cuLaunchKernel`` copies the arguments before it returns), so two threads never launch
each other's pointers. :func:`prepare` builds one from a :class:`flashcore.compile.Launcher` with the kernel ABI of
``kernels/README.md``.

TMA kernels (``flashcore_hopper`` and the other Hopper kernels whose ``extra_args`` are their three tensor maps,
:meth:`flashcore.specs.hopper.HopperGeometry.tma_args`) get a :class:`PreparedTmaLaunch`: one 64-byte-aligned
block laid out as the kernel's parameter space — the four pointers, the constants, then the maps of q, k and v
(128 bytes each, at 64-byte-aligned offsets), which ``cuLaunchKernel`` copies by value. A map embeds its tensor's
address, so a call re-encodes a map (``cuTensorMapEncodeTiled`` through ctypes, straight into the block:
:class:`flashcore.tma.MapEncoder`) only when that tensor's pointer differs from the one it was last encoded for: a
loop over the same buffers (a benchmark, CUDA-graph capture, a model's static buffers) encodes nothing. The layouts
(dims, strides, boxes) are checked once, when the launch is prepared; the lock covers the encodes and the launch.
Other ``extra_args`` (the watchdog builds' buffer and budget) are not prepared: they keep the Launcher's general call.
"""
from __future__ import annotations

import ctypes
import threading
from typing import Callable, Sequence, Tuple

C_TYPES = {"i32": ctypes.c_int32, "f32": ctypes.c_float, "u64": ctypes.c_uint64}
MAP_BYTES = 128             # sizeof(CUtensorMap)
MAP_ALIGN = 64              # alignof(CUtensorMap): in the kernel's parameter space and in the host block


class PreparedLaunch:
    """``launch(q_ptr, k_ptr, v_ptr, o_ptr, stream)``: one kernel, one layout (see the module docstring)."""

    __slots__ = ("function", "grid", "block", "smem", "device", "context", "consts", "_ptrs", "_vals", "_params",
                 "_params_addr", "_lock", "_launch", "_current", "_switch", "_keep")

    def __init__(self, function_ptr: int, grid: Tuple[int, int, int], block: Tuple[int, int, int], smem: int,
                 consts: Sequence[Tuple[str, float]], device: int, context: int, launch_kernel: Callable,
                 current_context: Callable[[], int], switch_device: Callable, keep=None):
        self.function = int(function_ptr)
        self.grid = tuple(int(g) for g in grid)
        self.block = tuple(int(b) for b in block)
        self.smem = int(smem)
        self.device = int(device)
        self.context = int(context)
        self.consts = tuple(consts)                       # (C type, value) after the four pointers, in ABI order
        self._ptrs = (ctypes.c_uint64 * 4)()
        self._vals = [C_TYPES[t](v) for t, v in self.consts]
        base = ctypes.addressof(self._ptrs)
        addrs = [base + 8 * i for i in range(4)] + [ctypes.addressof(x) for x in self._vals]
        self._params = (ctypes.c_void_p * len(addrs))(*addrs)
        self._params_addr = ctypes.addressof(self._params)
        self._lock = threading.Lock()
        self._launch = launch_kernel                      # cuLaunchKernel (CuPy: driver.launchKernel)
        self._current = current_context                   # cuCtxGetCurrent (CuPy: driver.ctxGetCurrent)
        self._switch = switch_device                      # a context manager that makes `device` current
        self._keep = keep                                 # what must outlive the CUfunction (its module)

    def __call__(self, q_ptr: int, k_ptr: int, v_ptr: int, o_ptr: int, stream: int) -> None:
        if self._current() != self.context:               # another device, or a thread that never used the GPU
            with self._switch(self.device):
                self._locked_launch(q_ptr, k_ptr, v_ptr, o_ptr, stream)
            return
        self._locked_launch(q_ptr, k_ptr, v_ptr, o_ptr, stream)

    def _locked_launch(self, q_ptr, k_ptr, v_ptr, o_ptr, stream):
        g, b = self.grid, self.block
        with self._lock:
            p = self._ptrs
            p[0] = q_ptr
            p[1] = k_ptr
            p[2] = v_ptr
            p[3] = o_ptr
            self._launch(self.function, g[0], g[1], g[2], b[0], b[1], b[2], self.smem, stream, self._params_addr, 0)

    def args(self) -> tuple:
        """The argument block as it stands (the last launch's pointers, then the constants): for tests and docs."""
        return tuple(self._ptrs) + tuple(x.value for x in self._vals)


def param_offsets(consts: Sequence[Tuple[str, float]], n_maps: int) -> Tuple[list, list, int]:
    """Offsets in the kernel's parameter space (C's rules: each parameter at a multiple of its alignment) of the
    constants after the four 8-byte pointers, and of ``n_maps`` CUtensorMaps (128 bytes, 64-byte aligned) after
    them: (constant offsets, map offsets, total bytes)."""
    off = 32
    const_offs = []
    for t, _ in consts:
        size = ctypes.sizeof(C_TYPES[t])
        off = (off + size - 1) // size * size
        const_offs.append(off)
        off += size
    map_offs = []
    for _ in range(n_maps):
        off = (off + MAP_ALIGN - 1) // MAP_ALIGN * MAP_ALIGN
        map_offs.append(off)
        off += MAP_BYTES
    return const_offs, map_offs, off


class PreparedTmaLaunch(PreparedLaunch):
    """A :class:`PreparedLaunch` of a TMA kernel: the parameter block also holds the maps of q, k and v, re-encoded
    per call only for a pointer that changed (see the module docstring). ``layouts``: the three
    :class:`flashcore.tma.MapLayout`; ``encode_tiled``: the driver's cuTensorMapEncodeTiled (a fake in the CPU
    tests). ``encodes`` counts the maps encoded so far."""

    __slots__ = ("layouts", "map_offsets", "const_offsets", "block_bytes", "encodes", "_block", "_base", "_encoders",
                 "_last")

    def __init__(self, function_ptr, grid, block, smem, consts, device, context, launch_kernel, current_context,
                 switch_device, layouts, encode_tiled=None, keep=None):
        from .tma import MapEncoder

        super().__init__(function_ptr, grid, block, smem, consts, device, context, launch_kernel, current_context,
                         switch_device, keep)
        self.layouts = tuple(layouts)
        self.const_offsets, self.map_offsets, self.block_bytes = param_offsets(self.consts, len(self.layouts))
        self._block = (ctypes.c_char * (self.block_bytes + MAP_ALIGN))()     # zeroed; aligned below
        base = self._base = (ctypes.addressof(self._block) + MAP_ALIGN - 1) // MAP_ALIGN * MAP_ALIGN
        self._ptrs = (ctypes.c_uint64 * 4).from_address(base)
        self._vals = []
        for (t, v), off in zip(self.consts, self.const_offsets):
            x = C_TYPES[t].from_address(base + off)
            x.value = v
            self._vals.append(x)
        addrs = [base + 8 * i for i in range(4)] + [base + o for o in self.const_offsets] + \
            [base + o for o in self.map_offsets]
        self._params = (ctypes.c_void_p * len(addrs))(*addrs)
        self._params_addr = ctypes.addressof(self._params)
        self._encoders = tuple(MapEncoder(base + o, lay, encode_tiled) for o, lay in zip(self.map_offsets,
                                                                                         self.layouts))
        self._last = [None] * len(self.layouts)                      # the pointer each map was last encoded for
        self.encodes = 0

    def _encode(self, i: int, ptr: int) -> None:
        self._last[i] = None                                         # a failed encode leaves no stale pointer
        self._encoders[i](ptr)
        self._last[i] = ptr
        self.encodes += 1

    def _locked_launch(self, q_ptr, k_ptr, v_ptr, o_ptr, stream):
        g, b = self.grid, self.block
        with self._lock:
            last = self._last
            if q_ptr != last[0]:
                self._encode(0, q_ptr)
            if k_ptr != last[1]:
                self._encode(1, k_ptr)
            if v_ptr != last[2]:
                self._encode(2, v_ptr)
            p = self._ptrs
            p[0] = q_ptr
            p[1] = k_ptr
            p[2] = v_ptr
            p[3] = o_ptr
            self._launch(self.function, g[0], g[1], g[2], b[0], b[1], b[2], self.smem, stream, self._params_addr, 0)

    @property
    def base(self) -> int:
        """The block's (64-byte-aligned) address: the kernel parameters are at ``base + offset``."""
        return self._base

    def param_addresses(self) -> tuple:
        """The addresses cuLaunchKernel's ``kernelParams`` points to, in ABI order (for tests)."""
        return tuple(self._params)

    def map_bytes(self, i: int) -> bytes:
        """The 128 bytes of map ``i`` (0: q, 1: k, 2: v) as the next launch passes them."""
        return ctypes.string_at(self._base + self.map_offsets[i], MAP_BYTES)

    def block_bytes_now(self) -> bytes:
        """The whole parameter block as it stands (pointers, constants, padding, maps)."""
        return ctypes.string_at(self._base, self.block_bytes)


def function_pointer(function) -> int:
    """The CUfunction handle of a loaded kernel: a ``cupy.cuda.function.Function`` has ``.ptr``; the
    ``cupy.RawKernel`` that ``RawModule.get_function`` returns (CuPy 14) holds that Function as ``.kernel``."""
    ptr = getattr(function, "ptr", None)
    return int(ptr if ptr is not None else function.kernel.ptr)


def _cuda_calls():
    """(cuLaunchKernel, cuCtxGetCurrent, device switch) through CuPy, and cuTensorMapEncodeTiled (ctypes on libcuda,
    loaded on first use). A caller's ``cuda_calls`` may return the first three only: TMA launches then use the
    driver's encoder."""
    import cupy
    from cupy_backends.cuda.api import driver

    return driver.launchKernel, driver.ctxGetCurrent, cupy.cuda.Device, None


def tma_geometry(spec):
    """The :class:`flashcore.specs.hopper.HopperGeometry` of a kernel whose ``extra_args`` are exactly its three TMA
    maps (:meth:`HopperGeometry.tma_args`), else None (no extra args, or others: the watchdog's buffer)."""
    extra = spec.extra_args
    if extra is None:
        return None
    from .specs.hopper import HopperGeometry

    if getattr(extra, "__func__", None) is not HopperGeometry.tma_args:
        return None
    return extra.__self__


def preparable(spec) -> bool:
    """Whether :func:`prepare` can pack ``spec``'s arguments once: no extra args, or only its TMA maps."""
    return spec.extra_args is None or tma_geometry(spec) is not None


def prepare(launcher, bh: int, seq_q: int, seq_kv: int, scale: float, kv_group: int = 1,
            cuda_calls: Callable = _cuda_calls) -> PreparedLaunch:
    """A :class:`PreparedLaunch` of ``launcher`` (a :class:`flashcore.compile.Launcher`) for one problem: the
    launcher's own plan (grid, block, the kernel's shared-memory entry for its split decision) and the ABI's
    constants — ``bh, seq_q, seq_kv, softmax_scale``, then ``split`` if the spec decides one, then ``kv_group`` if the
    kernel takes it (its spec's ``kv_group_arg``). A TMA kernel (:func:`tma_geometry`) gets a
    :class:`PreparedTmaLaunch` whose map layouts — q ``[bh, seq_q, 64]`` in boxes of the geometry's Q rows, k and v
    ``[bh, seq_kv, 64]`` in boxes of its K/V rows — are checked here, once (:func:`flashcore.tma.check_addressable`:
    a :class:`flashcore.tma.TmaError` naming the rule)."""
    spec = launcher.spec
    geometry = tma_geometry(spec)
    if spec.extra_args is not None and geometry is None:
        raise ValueError(f"{spec.id} takes per-launch extra_args other than TMA maps: it cannot be prepared once "
                         "(use its Launcher)")
    _, split, grid, block, smem = launcher.plan(bh, seq_q, seq_kv)
    consts = [("i32", bh), ("i32", seq_q), ("i32", seq_kv), ("f32", scale)]
    if spec.split is not None:
        consts.append(("i32", int(split)))
    if spec.kv_group_arg:
        consts.append(("i32", kv_group))
    elif kv_group != 1:
        raise ValueError(f"{spec.id} does not take grouped key/value heads (kv_group={kv_group})")
    calls = tuple(cuda_calls())
    launch_kernel, current_context, switch = calls[:3]
    encode_tiled = calls[3] if len(calls) > 3 else None
    layouts = None
    if geometry is not None:
        from . import tma

        layouts = (tma.check_addressable(0, bh, seq_q, geometry.q_box_rows),
                   tma.check_addressable(0, bh, seq_kv, geometry.kv_box_rows),
                   tma.check_addressable(0, bh, seq_kv, geometry.kv_box_rows))
    with switch(launcher.device):
        if smem > 48 * 1024 and smem > getattr(launcher, "_smem_set", 0):
            launcher.function.max_dynamic_shared_size_bytes = smem
            launcher._smem_set = smem
        context = current_context()
    if layouts is not None:
        return PreparedTmaLaunch(function_pointer(launcher.function), grid, block, smem, consts, launcher.device,
                                 context, launch_kernel, current_context, switch, layouts, encode_tiled,
                                 keep=(launcher, getattr(launcher, "module", None)))
    return PreparedLaunch(function_pointer(launcher.function), grid, block, smem, consts, launcher.device, context, launch_kernel,
                          current_context, switch, keep=(launcher, getattr(launcher, "module", None)))
