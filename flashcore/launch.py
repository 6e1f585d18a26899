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
``kernels/README.md``; a kernel with per-launch ``extra_args`` (the Hopper kernels' TMA descriptors) cannot be
prepared this way and keeps the Launcher's general call.
"""
from __future__ import annotations

import ctypes
import threading
from typing import Callable, Sequence, Tuple

C_TYPES = {"i32": ctypes.c_int32, "f32": ctypes.c_float, "u64": ctypes.c_uint64}


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


def function_pointer(function) -> int:
    """The CUfunction handle of a loaded kernel: a ``cupy.cuda.function.Function`` has ``.ptr``; the
    ``cupy.RawKernel`` that ``RawModule.get_function`` returns (CuPy 14) holds that Function as ``.kernel``."""
    ptr = getattr(function, "ptr", None)
    return int(ptr if ptr is not None else function.kernel.ptr)


def _cuda_calls():
    """(cuLaunchKernel, cuCtxGetCurrent, device switch) through CuPy."""
    import cupy
    from cupy_backends.cuda.api import driver

    return driver.launchKernel, driver.ctxGetCurrent, cupy.cuda.Device


def prepare(launcher, bh: int, seq_q: int, seq_kv: int, scale: float, kv_group: int = 1,
            cuda_calls: Callable = _cuda_calls) -> PreparedLaunch:
    """A :class:`PreparedLaunch` of ``launcher`` (a :class:`flashcore.compile.Launcher`) for one problem: the
    launcher's own plan (grid, block, the kernel's shared-memory entry for its split decision) and the ABI's
    constants — ``bh, seq_q, seq_kv, softmax_scale``, then ``split`` if the spec decides one, then ``kv_group`` if the
    kernel takes it (its spec's ``kv_group_arg``)."""
    spec = launcher.spec
    if spec.extra_args is not None:
        raise ValueError(f"{spec.id} takes per-launch extra_args: it cannot be prepared once (use its Launcher)")
    _, split, grid, block, smem = launcher.plan(bh, seq_q, seq_kv)
    consts = [("i32", bh), ("i32", seq_q), ("i32", seq_kv), ("f32", scale)]
    if spec.split is not None:
        consts.append(("i32", int(split)))
    if spec.kv_group_arg:
        consts.append(("i32", kv_group))
    elif kv_group != 1:
        raise ValueError(f"{spec.id} does not take grouped key/value heads (kv_group={kv_group})")
    launch_kernel, current_context, switch = cuda_calls()
    with switch(launcher.device):
        if smem > 48 * 1024 and smem > getattr(launcher, "_smem_set", 0):
            launcher.function.max_dynamic_shared_size_bytes = smem
            launcher._smem_set = smem
        context = current_context()
    return PreparedLaunch(function_pointer(launcher.function), grid, block, smem, consts, launcher.device, context, launch_kernel,
                          current_context, switch, keep=(launcher, getattr(launcher, "module", None)))
