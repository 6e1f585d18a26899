"""Compile a kernel file: inline through NVRTC (CuPy) on a GPU host, or with nvcc to a cubin on any machine.

Two paths from one source:

* :func:`load_kernel` — NVRTC via ``cupy.RawModule``, for the GPU the process runs on (``-arch`` read from the
  device), cached per process (and on disk by CuPy across processes). Returns a :class:`Launcher`.
* :func:`nvcc_compile` — ``nvcc -cubin -arch=sm_90 -Xptxas -v``, which needs no GPU: the tests use it to fail on
  any spill, and the chapters use its cubin for SASS evidence.

Compile errors raise :class:`CompileError` carrying the compiler's log and the offending source line.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, asdict
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple, Union

from .kernels import HEAD_DIM, KernelSpec, LaunchShape

CUDA_HOME = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
CACHE_DIR = Path(os.environ.get("FLASHCORE_CACHE", Path(tempfile.gettempdir()) / "flashcore-cubins"))


class CompileError(RuntimeError):
    """A kernel failed to compile. ``log`` is the compiler's output; ``excerpt`` the source line it blames."""

    def __init__(self, source: Path, log: str, backend: str):
        self.source = Path(source)
        self.log = log
        self.backend = backend
        self.excerpt = _blamed_lines(self.source, log)
        msg = f"{backend} could not compile {self.source.name}:\n{log.strip()}"
        if self.excerpt:
            msg += "\n\n" + self.excerpt
        super().__init__(msg)


def _blamed_lines(source: Path, log: str) -> str:
    """The source lines the compiler's log points at (``file(123): error`` or ``file:123:``)."""
    # nvcc names the file; NVRTC names a temporary copy of it: take any "<x>.cu(123)" / "<x>.cu:123"
    hits = re.findall(r"\.cu\((\d+)\)|\.cu:(\d+)", log)
    try:
        lines = source.read_text().splitlines()
    except OSError:
        return ""
    out = []
    for a, b in hits[:3]:
        n = int(a or b)
        if 1 <= n <= len(lines):
            out.append(f"{source.name}:{n}: {lines[n - 1].strip()}")
    return "\n".join(dict.fromkeys(out))


def _define_flags(spec_defines: Iterable[Tuple[str, str]], extra: Iterable[Tuple[str, str]] = ()) -> list:
    flags = [f"-DHEAD_DIM={HEAD_DIM}"]
    for name, value in list(spec_defines) + list(extra):
        flags.append(f"-D{name}={value}" if value != "" else f"-D{name}")
    return flags


def include_flags() -> list:
    inc = CUDA_HOME / "include"
    flags = [f"-I{inc}"]
    if (inc / "cccl").is_dir():  # CUDA 13 keeps libcu++ (<cuda/pipeline>) under include/cccl
        flags.append(f"-I{inc / 'cccl'}")
    return flags


# --------------------------------------------------------------------------------------------- nvcc (CPU path)
@dataclass
class CompileReport:
    """What ``ptxas -v`` says about one entry point, plus where the cubin went."""

    kernel: str
    arch: str
    registers: int
    smem_bytes: int          # static shared memory (dynamic smem is a launch parameter, see the spec)
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    cubin: str
    log: str

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0

    def row(self) -> dict:
        d = asdict(self)
        d.pop("log")
        return d


_PTXAS_FN = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_SMEM = re.compile(r"(\d+) bytes smem")
_PTXAS_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas(log: str) -> dict:
    """``-Xptxas -v`` output → {entry: {registers, smem_bytes, stack_bytes, spill_stores, spill_loads, arch}}."""
    out: dict = {}
    current = None
    for line in log.splitlines():
        m = _PTXAS_FN.search(line)
        if m:
            current = m.group(1)
            out[current] = dict(arch=m.group(2), registers=0, smem_bytes=0, stack_bytes=0,
                                spill_stores=0, spill_loads=0)
            continue
        if current is None:
            continue
        m = _PTXAS_STACK.search(line)
        if m:
            out[current].update(stack_bytes=int(m.group(1)), spill_stores=int(m.group(2)),
                                spill_loads=int(m.group(3)))
        m = _PTXAS_REGS.search(line)
        if m:
            out[current]["registers"] = int(m.group(1))
            s = _PTXAS_SMEM.search(line)
            out[current]["smem_bytes"] = int(s.group(1)) if s else 0
    return out


def find_nvcc() -> str:
    nvcc = shutil.which("nvcc") or str(CUDA_HOME / "bin" / "nvcc")
    if not Path(nvcc).exists():
        raise FileNotFoundError("nvcc not found: install the CUDA toolkit or set CUDA_HOME")
    return nvcc


def nvcc_compile(spec: Union[KernelSpec, str, Path], arch: str = "sm_90",
                 defines: Sequence[Tuple[str, str]] = (), extra_flags: Sequence[str] = (),
                 out_dir: Optional[Path] = None) -> CompileReport:
    """Compile one kernel to a cubin with nvcc (no GPU needed) and parse ``-Xptxas -v``."""
    if not re.fullmatch(r"sm_\d+a?", arch):
        raise ValueError(f"arch must look like 'sm_90' or 'sm_89', got {arch!r}")
    if isinstance(spec, KernelSpec):
        source, entry, spec_defines = spec.path, spec.entry, spec.defines
    else:
        source, entry, spec_defines = Path(spec), None, ()
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"kernel source {source} does not exist")
    flags = _define_flags(spec_defines, defines)
    key = hashlib.sha1((source.read_text() + arch + " ".join(flags) + " ".join(extra_flags)).encode()).hexdigest()[:12]
    out_dir = Path(out_dir or CACHE_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    cubin = out_dir / f"{source.stem}-{arch}-{key}.cubin"
    cmd = [find_nvcc(), "-cubin", f"-arch={arch}", "-O3", "-std=c++17", "-lineinfo", "-Xptxas", "-v",
           *include_flags(), *flags, *extra_flags, str(source), "-o", str(cubin)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise CompileError(source, log, "nvcc")
    table = parse_ptxas(log)
    if not table:
        raise CompileError(source, log + "\n(no entry function found in the ptxas report)", "nvcc")
    if entry is None:
        entry = next(iter(table))
    if entry not in table:
        raise CompileError(source, log + f"\n(entry {entry!r} not found; entries: {', '.join(table)})", "nvcc")
    r = table[entry]
    return CompileReport(kernel=entry, arch=r["arch"], registers=r["registers"], smem_bytes=r["smem_bytes"],
                         spill_stores=r["spill_stores"], spill_loads=r["spill_loads"],
                         stack_bytes=r["stack_bytes"], cubin=str(cubin), log=log)


def resource_table(specs: Sequence[KernelSpec], arch: str = "sm_90") -> list:
    """One row per kernel: id, registers, static smem, spills, stack (what ptxas says)."""
    rows = []
    for spec in specs:
        rep = nvcc_compile(spec, arch=arch)
        rows.append(dict(id=spec.id, **{k: v for k, v in rep.row().items() if k != "cubin"}))
    return rows


# ------------------------------------------------------------------------------------------ NVRTC (GPU path)
def device_arch() -> str:
    import cupy

    dev = cupy.cuda.Device()
    major, minor = dev.compute_capability[0], dev.compute_capability[1:]
    return f"sm_{major}{minor}"


def num_sms() -> int:
    import cupy

    return cupy.cuda.Device().attributes["MultiProcessorCount"]


def _ptr(x) -> int:
    """A device pointer from a torch tensor or a CuPy array."""
    if hasattr(x, "data_ptr"):
        return x.data_ptr()
    if hasattr(x, "data") and hasattr(x.data, "ptr"):
        return x.data.ptr
    raise TypeError(f"expected a torch CUDA tensor or a CuPy array, got {type(x).__name__}")


class Launcher:
    """A compiled kernel plus its launch geometry: ``launch(q, k, v, o, scale=None, stream=None)``.

    q/o are ``[B, H, S, 64]`` or ``[BH, S, 64]`` fp16, contiguous (the library validates; this is the raw launch).
    """

    def __init__(self, spec: KernelSpec, function, arch: str, sms: int):
        self.spec = spec
        self.function = function
        self.arch = arch
        self.num_sms = sms
        self._smem_set = 0

    def geometry(self, bh: int, seq_q: int, seq_kv: int):
        shape = LaunchShape(bh=bh, seq_q=seq_q, seq_kv=seq_kv, num_sms=self.num_sms)
        return shape, tuple(self.spec.grid(shape)), (self.spec.threads, 1, 1), int(self.spec.smem_bytes(shape))

    def __call__(self, q, k, v, o, scale: Optional[float] = None, stream=None, extra=None):
        import numpy as np

        seq_q, seq_kv = int(q.shape[-2]), int(k.shape[-2])
        bh = 1
        for n in q.shape[:-2]:
            bh *= int(n)
        shape, grid, block, smem = self.geometry(bh, seq_q, seq_kv)
        if smem > self._smem_set:
            if smem > 48 * 1024:
                self.function.max_dynamic_shared_size_bytes = smem
            self._smem_set = smem
        if scale is None:
            scale = 1.0 / HEAD_DIM ** 0.5
        args = [np.uint64(_ptr(q)), np.uint64(_ptr(k)), np.uint64(_ptr(v)), np.uint64(_ptr(o)),
                np.int32(bh), np.int32(seq_q), np.int32(seq_kv), np.float32(scale)]
        if extra is not None:
            args.extend(extra)
        elif self.spec.extra_args is not None:
            import cupy

            args.extend(self.spec.extra_args(shape, cupy))
        self._launch(grid, block, tuple(args), smem, stream)

    def _launch(self, grid, block, args, smem, stream):
        import cupy

        if stream is None:
            import sys

            if "torch" in sys.modules:   # launch on torch's current stream (also inside graph capture)
                stream = sys.modules["torch"].cuda.current_stream().cuda_stream
            else:                        # a CuPy-only process (the ncu / sanitizer driver)
                stream = cupy.cuda.get_current_stream().ptr
        with cupy.cuda.ExternalStream(int(stream)):
            self.function(grid, block, args, shared_mem=smem)


_LOADED: dict = {}


def nvrtc_options(arch: str, defines: Sequence[Tuple[str, str]] = ()) -> tuple:
    return (f"-arch={arch}", "-std=c++17", "-lineinfo", *include_flags(),
            *_define_flags(defines))


def load_kernel(spec: KernelSpec, defines: Sequence[Tuple[str, str]] = ()) -> Launcher:
    """Compile ``spec`` with NVRTC for this process's GPU (cached) and return its :class:`Launcher`."""
    if not isinstance(spec, KernelSpec):
        raise TypeError(f"load_kernel takes a KernelSpec (flashcore.kernels.get(id)), got {type(spec).__name__}")
    import cupy

    source = spec.path.read_text()
    arch = device_arch()
    all_defines = tuple(spec.defines) + tuple(defines)
    key = (spec.id, hashlib.sha1(source.encode()).hexdigest(), arch, all_defines)
    if key in _LOADED:
        return _LOADED[key]
    options = nvrtc_options(arch, all_defines)
    try:
        module = cupy.RawModule(code=source, options=options, backend="nvrtc", name_expressions=None)
        function = module.get_function(spec.entry)
    except cupy.cuda.compiler.CompileException as exc:
        raise CompileError(spec.path, str(exc), "NVRTC") from None
    launcher = Launcher(spec, function, arch, num_sms())
    _LOADED[key] = launcher
    return launcher
