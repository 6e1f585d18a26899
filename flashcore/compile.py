"""Compile a kernel file: through NVRTC for a GPU of this process, or with nvcc to a cubin on any machine.

Two paths from one source, with the same include paths and defines:

* :func:`load_kernel` — NVRTC (CuPy's binding to it) for one GPU: ``-arch`` from that device, plus the spec's
  ``arch_suffix`` (``sm_90a``); cached per process by (kernel, source digest, arch, device, defines) and on disk
  (``CACHE_DIR``) by source digest and options. Returns a :class:`Launcher`. This is the only NVRTC path.
* :func:`nvcc_compile` — ``nvcc -cubin -arch=sm_90 -Xptxas -v``, which needs no GPU: the tests use it to fail on
  any spill, and the chapters use its cubin for SASS evidence.

Both pass :func:`include_flags`: ``-I<repo>/kernels`` (a kernel includes ``"common/mma_sync.cuh"`` or its family
header ``"v12/v12_tile.cuh"``), then CUDA's include folder and, in CUDA 13, its ``cccl`` folder (libcu++). A
kernel's *source digest* covers the file and every local header it includes, so editing a header rebuilds every
kernel that uses it. NVRTC builds get ``-ftz=true``, as CuPy's ``RawModule`` gave every kernel the records measured.

The kernel is the one source of its dynamic shared-memory size: ``extern "C" __device__ int
<entry>_smem_bytes[2]`` = {bytes without the split-KV landing buffer, bytes with it} (always two ints: the driver does
not tell a symbol's size). The launcher reads it from the
loaded module once; :func:`smem_bytes_from_cubin` reads the same two numbers from an nvcc cubin (CPU tests).

Compile errors raise :class:`CompileError` carrying the compiler's log and the offending source line.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, asdict
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple, Union

from .kernels import HEAD_DIM, KernelSpec, LaunchShape, LaunchTensors, source_files
from .paths import KERNELS_DIR

CUDA_HOME = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
CACHE_DIR = Path(os.environ.get("FLASHCORE_CACHE", Path(tempfile.gettempdir()) / "flashcore-cubins"))
SMEM_SYMBOL = "{entry}_smem_bytes"       # extern "C" __device__ int <entry>_smem_bytes[2] in the kernel


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


_BLAME = re.compile(r"([\w./+-]*\.cuh?)\((\d+)\)|([\w./+-]*\.cuh?):(\d+)")


def _blamed_lines(source: Path, log: str) -> str:
    """The source lines the compiler's log points at (``file(123): error`` or ``file:123:``): in the kernel file, or
    in a local header it includes (named as the log names it, found next to the kernel or under kernels/)."""
    out = []
    for m in _BLAME.finditer(log):
        name, n = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        # nvcc names the file; NVRTC names the program (the kernel's path under kernels/)
        if name.endswith(".cu"):
            path = source
        else:
            cands = [Path(name), source.parent / name, KERNELS_DIR / name]
            path = next((c for c in cands if c.is_file()), None)
        if path is None:
            continue
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        n = int(n)
        if 1 <= n <= len(lines):
            out.append(f"{path.name}:{n}: {lines[n - 1].strip()}")
        if len(out) >= 3:
            break
    return "\n".join(dict.fromkeys(out))


def _define_flags(spec_defines: Iterable[Tuple[str, str]], extra: Iterable[Tuple[str, str]] = ()) -> list:
    """``-D`` flags: HEAD_DIM (the base 64 unless the defines set it: a feature variant's head dim), then the
    defines in order."""
    defines = list(spec_defines) + list(extra)
    flags = [] if any(name == "HEAD_DIM" for name, _ in defines) else [f"-DHEAD_DIM={HEAD_DIM}"]
    for name, value in defines:
        flags.append(f"-D{name}={value}" if value != "" else f"-D{name}")
    return flags


def include_flags() -> list:
    """``-I`` flags for both compilers: the kernels folder (common/ and family headers), CUDA's include, cccl."""
    inc = CUDA_HOME / "include"
    flags = [f"-I{KERNELS_DIR}", f"-I{inc}"]
    if (inc / "cccl").is_dir():  # CUDA 13 keeps libcu++ (<cuda/pipeline>) under include/cccl
        flags.append(f"-I{inc / 'cccl'}")
    return flags


def source_digest(path: Path) -> str:
    """sha1 over a kernel file and every local header it includes (names and text): the build's source identity."""
    h = hashlib.sha1()
    for f in source_files(Path(path)):
        h.update(str(f.relative_to(KERNELS_DIR) if f.is_relative_to(KERNELS_DIR) else f.name).encode())
        h.update(b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def target_arch(arch: str, spec: Optional[KernelSpec] = None) -> str:
    """``arch`` with the spec's arch suffix: ``sm_90`` → ``sm_90a`` for a kernel that needs wgmma or setmaxnreg."""
    if not re.fullmatch(r"sm_\d+[a-z]?", arch):
        raise ValueError(f"arch must look like 'sm_90' or 'sm_89', got {arch!r}")
    suffix = spec.arch_suffix if spec is not None else ""
    if suffix and not arch.endswith(suffix):
        arch = re.sub(r"[a-z]$", "", arch) + suffix
    return arch


# --------------------------------------------------------------------------------------------- nvcc (CPU path)
@dataclass
class CompileReport:
    """What ``ptxas -v`` says about one entry point, plus where the cubin went."""

    kernel: str
    arch: str
    registers: int
    smem_bytes: int          # static shared memory (ptxas)
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    cubin: str
    log: str
    smem_dynamic: Tuple[int, int] = (0, 0)   # the kernel's <entry>_smem_bytes: (without, with the split landing)

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
    """Compile one kernel to a cubin with nvcc (no GPU needed) and parse ``-Xptxas -v``. A spec with
    ``arch_suffix`` builds for the suffixed target (``sm_90`` → ``sm_90a``)."""
    if isinstance(spec, KernelSpec):
        source, entry, spec_defines = spec.path, spec.entry, spec.defines
        arch = target_arch(arch, spec)
    else:
        source, entry, spec_defines = Path(spec), None, ()
        arch = target_arch(arch)
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"kernel source {source} does not exist")
    flags = _define_flags(spec_defines, defines)
    key = hashlib.sha1((source_digest(source) + arch + " ".join(flags) + " ".join(extra_flags)).encode()
                       ).hexdigest()[:12]
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
                         stack_bytes=r["stack_bytes"], cubin=str(cubin), log=log,
                         smem_dynamic=smem_bytes_from_cubin(cubin, entry) or (0, 0))


def smem_bytes_from_cubin(cubin: Union[str, Path], entry: str) -> Optional[Tuple[int, int]]:
    """The kernel's ``<entry>_smem_bytes[2]`` read from a cubin's symbol table (its initial value in the constant
    bank section), or None if the cubin has no such symbol. Plain ELF64 reading: no GPU, no CUDA tools."""
    data = Path(cubin).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError(f"{cubin} is not an ELF64 cubin")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    want = SMEM_SYMBOL.format(entry=entry).encode()
    for sh_name, sh_type, _, _, offset, size, link, _, _, entsize in sections:
        if sh_type != 2:                                   # SHT_SYMTAB
            continue
        strtab = sections[link][4]
        for i in range(size // (entsize or 24)):
            st_name, _, _, st_shndx, st_value, st_size = struct.unpack_from("<IBBHQQ", data, offset + i * 24)
            name = data[strtab + st_name:data.index(b"\0", strtab + st_name)]
            if name == want and st_size == 8 and 0 < st_shndx < len(sections):
                return struct.unpack_from("<ii", data, sections[st_shndx][4] + st_value)
    return None


# ------------------------------------------------------------------------------------------ NVRTC (GPU path)
def _device(device: Optional[int] = None):
    import cupy

    return cupy.cuda.Device(device) if device is not None else cupy.cuda.Device()


def device_arch(device: Optional[int] = None) -> str:
    """``sm_<major><minor>`` of a GPU (the current one by default)."""
    cc = _device(device).compute_capability
    return f"sm_{cc[0]}{cc[1:]}"


def num_sms(device: Optional[int] = None) -> int:
    return _device(device).attributes["MultiProcessorCount"]


def nvrtc_options(arch: str, defines: Sequence[Tuple[str, str]] = ()) -> tuple:
    """NVRTC's options for one build: the target, C++17, line info, :func:`include_flags`, the defines, and
    ``-ftz=true`` (what CuPy's RawModule added to every NVRTC build the records measured)."""
    return (f"-arch={arch}", "-std=c++17", "-lineinfo", *include_flags(), *_define_flags(defines), "-ftz=true")


def nvrtc_compile(spec: KernelSpec, arch: str, defines: Sequence[Tuple[str, str]] = ()) -> Path:
    """NVRTC ``spec`` (its defines, then ``defines``) for ``arch`` (+ the spec's suffix) to a cubin file, cached on
    disk by source digest, options and NVRTC version. Needs libnvrtc, not a GPU."""
    from cupy_backends.cuda.libs import nvrtc

    arch = target_arch(arch, spec)
    options = nvrtc_options(arch, tuple(spec.defines) + tuple(defines))
    key = hashlib.sha1(repr((source_digest(spec.path), options, nvrtc.getVersion(), "whole-cubin")).encode()
                       ).hexdigest()[:16]
    cubin = CACHE_DIR / f"{spec.path.stem}-{arch}-{key}.nvrtc.cubin"
    if cubin.is_file():
        return cubin
    name = spec.path.relative_to(KERNELS_DIR).as_posix() if spec.path.is_relative_to(KERNELS_DIR) else spec.path.name
    prog = nvrtc.createProgram(spec.path.read_text(), name, (), ())
    try:
        try:
            nvrtc.compileProgram(prog, list(options))
        except nvrtc.NVRTCError as exc:
            raise CompileError(spec.path, nvrtc.getProgramLog(prog) or str(exc), "NVRTC") from None
        blob = _whole_cubin(prog) or nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = cubin.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, cubin)                                # atomic: a concurrent process sees all or nothing
    return cubin


def _whole_cubin(prog: int) -> Optional[bytes]:
    """nvrtcGetCUBIN through ctypes: CuPy's binding returns the ELF one byte short (it treats it like a C string). The
    driver loads that anyway, but cuobjdump does not, and a cached cubin should be the compiler's. None if the library
    cannot be reached this way (then CuPy's bytes are used)."""
    import ctypes

    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        lib = ctypes.CDLL(load_nvidia_dynamic_lib("nvrtc").abs_path)
        size = ctypes.c_size_t()
        if lib.nvrtcGetCUBINSize(ctypes.c_void_p(prog), ctypes.byref(size)) != 0:
            return None
        buf = ctypes.create_string_buffer(size.value)
        if lib.nvrtcGetCUBIN(ctypes.c_void_p(prog), buf) != 0:
            return None
        return buf.raw
    except (ImportError, OSError, AttributeError):
        return None


def _ptr(x) -> int:
    """A device pointer from a torch tensor or a CuPy array."""
    if hasattr(x, "data_ptr"):
        return x.data_ptr()
    if hasattr(x, "data") and hasattr(x.data, "ptr"):
        return x.data.ptr
    raise TypeError(f"expected a torch CUDA tensor or a CuPy array, got {type(x).__name__}")


class Launcher:
    """A kernel compiled for one GPU plus its launch geometry: ``launch(q, k, v, o, scale=None, stream=None)``.

    q/o are ``[B, H, S, D]`` or ``[BH, S, D]`` in the build's dtype and head dim, contiguous (the library validates;
    this is the raw launch).
    The arguments are the ABI of kernels/README.md: q, k, v, o, bh, seq_q, seq_kv, softmax_scale, then ``int split``
    if the spec has a split decision, then ``int kv_group`` if the spec says so (``kv_group_arg``: q's heads per k's,
    from ``[B, H, S, D]`` shapes, else 1), then the spec's ``extra_args(shape, LaunchTensors)`` (or ``extra=``).
    The library's hot path packs the same arguments once (:func:`flashcore.launch.prepare`).
    """

    def __init__(self, spec: KernelSpec, function, arch: str, device: int, sms: int,
                 smem_bytes: Tuple[int, int] = (0, 0)):
        self.spec = spec
        self.function = function
        self.arch = arch
        self.device = device
        self.num_sms = sms
        self.smem_bytes = tuple(smem_bytes)   # the kernel's <entry>_smem_bytes: (without, with the split landing)
        self._smem_set = 0

    def plan(self, bh: int, seq_q: int, seq_kv: int):
        """(shape, split, grid, block, dynamic smem) of one launch: the spec's split decision picks the smem entry."""
        shape = LaunchShape(bh=bh, seq_q=seq_q, seq_kv=seq_kv, num_sms=self.num_sms)
        split = bool(self.spec.split(shape)) if self.spec.split is not None else False
        return shape, split, tuple(self.spec.grid(shape)), (self.spec.threads, 1, 1), self.smem_bytes[int(split)]

    def geometry(self, bh: int, seq_q: int, seq_kv: int):
        """(shape, grid, block, dynamic smem) of one launch."""
        shape, _, grid, block, smem = self.plan(bh, seq_q, seq_kv)
        return shape, grid, block, smem

    def __call__(self, q, k, v, o, scale: Optional[float] = None, stream=None, extra=None):
        import numpy as np

        seq_q, seq_kv = int(q.shape[-2]), int(k.shape[-2])
        bh = 1
        for n in q.shape[:-2]:
            bh *= int(n)
        shape, split, grid, block, smem = self.plan(bh, seq_q, seq_kv)
        if smem > self._smem_set:
            if smem > 48 * 1024:
                self.function.max_dynamic_shared_size_bytes = smem
            self._smem_set = smem
        if scale is None:
            scale = 1.0 / int(q.shape[-1]) ** 0.5
        args = [np.uint64(_ptr(q)), np.uint64(_ptr(k)), np.uint64(_ptr(v)), np.uint64(_ptr(o)),
                np.int32(bh), np.int32(seq_q), np.int32(seq_kv), np.float32(scale)]
        if self.spec.split is not None:
            args.append(np.int32(split))
        if self.spec.kv_group_arg:
            args.append(np.int32(int(q.shape[-3]) // int(k.shape[-3]) if len(q.shape) == 4 else 1))
        if extra is not None:
            args.extend(extra)
        elif self.spec.extra_args is not None:
            import cupy

            args.extend(self.spec.extra_args(shape, LaunchTensors(q, k, v, o, cupy)))
        self._launch(grid, block, tuple(args), smem, stream)

    def _launch(self, grid, block, args, smem, stream):
        import cupy

        with cupy.cuda.Device(self.device):
            if stream is None:
                import sys

                if "torch" in sys.modules:   # launch on torch's current stream (also inside graph capture)
                    stream = sys.modules["torch"].cuda.current_stream(self.device).cuda_stream
                else:                        # a CuPy-only process (the ncu / sanitizer driver)
                    stream = cupy.cuda.get_current_stream().ptr
            with cupy.cuda.ExternalStream(int(stream)):
                self.function(grid, block, args, shared_mem=smem)


def _smem_symbol(module, spec: KernelSpec) -> Tuple[int, int]:
    """The module's ``<entry>_smem_bytes`` (two ints), or (0, 0) for a kernel with static shared memory only. A
    kernel whose source defines the symbol but whose module lacks it is an error, never a zero-smem launch."""
    import cupy

    name = SMEM_SYMBOL.format(entry=spec.entry)
    try:
        ptr = module.get_global(name)
    except cupy.cuda.driver.CUDADriverError as exc:
        if any(name in f.read_text() for f in spec.files):
            raise RuntimeError(f"{spec.id}: {name} is in the source but not in the loaded module ({exc})") from None
        return (0, 0)
    host = cupy.ndarray((2,), cupy.int32, ptr).get()          # the driver does not say a symbol's size: [2] always
    return int(host[0]), int(host[1])


_LOADED: dict = {}


def load_kernel(spec: KernelSpec, defines: Sequence[Tuple[str, str]] = (), device: Optional[int] = None
                ) -> Launcher:
    """Compile ``spec`` with NVRTC for one GPU (``device``: its index; None = the current device) and return its
    :class:`Launcher`; cached per process by (kernel, source digest, arch, device, defines) and on disk."""
    if not isinstance(spec, KernelSpec):
        raise TypeError(f"load_kernel takes a KernelSpec (flashcore.kernels.get(id)), got {type(spec).__name__}")
    import cupy

    dev = _device(device)
    index = dev.id
    arch = target_arch(device_arch(index), spec)
    all_defines = tuple(spec.defines) + tuple(defines)
    key = (spec.id, source_digest(spec.path), arch, index, all_defines)
    if key in _LOADED:
        return _LOADED[key]
    cubin = nvrtc_compile(spec, arch, defines)
    with dev:
        module = cupy.RawModule(path=str(cubin))
        function = module.get_function(spec.entry)
        smem = _smem_symbol(module, spec)
        launcher = Launcher(spec, function, arch, index, num_sms(index), smem)
    launcher.module = module               # keeps the module (and its function) alive with the launcher
    launcher.defines = all_defines         # the build it is (a feature variant's -D flags)
    _LOADED[key] = launcher
    return launcher
