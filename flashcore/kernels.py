"""The kernel registry: every kernel version's id, source file and launch geometry.

A chapter declares its kernels in ``flashcore/specs/<chapter>.py`` as a list ``SPECS`` of :class:`KernelSpec`;
this module collects them. Kernel ids are the ids used in run records (``v12_baseline``, ``v8_03_swizzle`` ...) and
never change; ``source`` is the file's path under ``kernels/`` (``v8/v8_07_dsmem_push.cu``), which may.

What a spec does not hold: the kernel's dynamic shared memory. The kernel is the one source of it (the
``<entry>_smem_bytes`` symbol, see kernels/README.md); :class:`flashcore.compile.Launcher` reads it from the module.
"""
from __future__ import annotations

import importlib
import pkgutil
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Tuple

from .paths import KERNELS_DIR

HEAD_DIM = 64


@dataclass(frozen=True)
class LaunchShape:
    """What a grid function may look at: the problem and the device."""

    bh: int            # batch * heads
    seq_q: int
    seq_kv: int
    num_sms: int = 132  # the H100 SXM's count; the launcher passes the real one


Grid = Tuple[int, int, int]


@dataclass(frozen=True)
class LaunchTensors:
    """What ``extra_args`` may look at besides the shape: the launch's tensors and the array module (CuPy) for any
    buffer it allocates. The Hopper kernels build their TMA descriptors from q, k, v, o."""

    q: Any
    k: Any
    v: Any
    o: Any
    xp: Any


@dataclass(frozen=True)
class KnownFinding:
    """A sanitizer report on a kernel that a controlled experiment has explained. A sweep shows it as *known*, not
    clean: it matches only if every problem kind of the launch contains ``kind`` and some device frame of it
    contains ``frame``; anything else the tool reports about the launch is still a failure."""

    tool: str                                 # "synccheck"
    kind: str                                 # substring of the report's headline, e.g. "Missing wait"
    frame: str                                # substring of a device frame, e.g. "producer_commit"
    why: str                                  # one line, with where the evidence is


@dataclass(frozen=True)
class KernelSpec:
    id: str                                   # record id, e.g. "v12_baseline" (never changes)
    source: str                               # path under kernels/, e.g. "v12/v12_baseline.cu"
    entry: str                                # extern "C" entry point
    threads: int                              # threads per block
    grid: Callable[[LaunchShape], Grid]       # grid from the shape
    defines: Tuple[Tuple[str, str], ...] = ()  # build modes (-D NAME=VALUE), e.g. WATCHDOG; never a variant
    parent: Optional[str] = None              # the kernel this one changes one idea of
    chapter: str = ""                         # notebook stem, e.g. "01_v12_baseline"
    cross: bool = False                       # True if seq_q != seq_kv is supported
    predicted_us: Optional[float] = None      # prediction at the mission shape (ladder steps)
    idea: str = ""                            # one line: what changed from the parent
    # The call's features its builds compute (flashcore.dispatch routes by them; flashcore.validate accepts their
    # union over the library's kernels): dtypes, head dims, SDPA's causal mask; `gqa`: it maps query heads to
    # key/value heads itself (otherwise the library repeats k and v over the groups before launching); `any_scale`:
    # it takes a negative, zero or denormal softmax_scale itself (otherwise the library negates q and clamps).
    # `variant` gives the -D flags of the build for a call's features (one source, a compiled variant per
    # combination). `unverified` names features its variants add that compile (tests) but have no recorded GPU
    # check yet: neither dispatch nor validation offers them unless a GPU check opts in
    # (flashcore.api.unverified_variants).
    dtypes: Tuple[str, ...] = ("float16",)
    head_dims: Tuple[int, ...] = (HEAD_DIM,)
    causal: bool = False
    gqa: bool = False
    any_scale: bool = False
    variant: Optional[Callable[[Any], Tuple[Tuple[str, str], ...]]] = None
    unverified: Optional[dict] = None
    kv_group_arg: bool = False                # takes `int kv_group` after `split` (every build; GQA builds read it)
    split: Optional[Callable[[LaunchShape], bool]] = None   # split-KV decision: the kernel takes it as `int split`
    #                                           right after softmax_scale; the grid function and the shared-memory
    #                                           entry (kernel's <entry>_smem_bytes[split]) follow the same call
    extra_args: Optional[Callable[[LaunchShape, LaunchTensors], tuple]] = None   # kernel args after those
    arch_suffix: str = ""                     # "a": build for the arch-specific target (sm_90a: wgmma, setmaxnreg)
    expect_failure: bool = False              # a kernel kept to show a failure (e.g. the missing barrier)
    known_findings: Tuple["KnownFinding", ...] = ()   # sanitizer reports explained elsewhere (never silently clean)
    tags: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def path(self) -> Path:
        return KERNELS_DIR / self.source

    @property
    def files(self) -> Tuple[Path, ...]:
        """The source file and every local header it includes (transitively): what its build depends on."""
        return source_files(self.path)


_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)


def source_files(path: Path) -> Tuple[Path, ...]:
    """``path`` and the local headers it includes, transitively, in first-seen order. A quoted include is looked up
    next to the including file, then under kernels/ (the ``-I`` both compilers get); one found nowhere is skipped
    (the compiler will say so)."""
    seen: dict = {}
    todo = [Path(path).resolve()]
    while todo:
        f = todo.pop(0)
        if f in seen or not f.is_file():
            continue
        seen[f] = None
        for name in _INCLUDE.findall(f.read_text()):
            for cand in (f.parent / name, KERNELS_DIR / name):
                if cand.is_file():
                    todo.append(cand.resolve())
                    break
    return tuple(seen)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


_REGISTRY: dict = {}
_REGISTRY_LOCK = threading.Lock()


def _collect() -> dict:
    if _REGISTRY:
        return _REGISTRY
    from . import specs

    with _REGISTRY_LOCK:           # threads may ask at once (a pool of compiles): build the registry once
        if _REGISTRY:
            return _REGISTRY
        found: dict = {}
        for mod in sorted(pkgutil.iter_modules(specs.__path__), key=lambda m: m.name):
            module = importlib.import_module(f"{specs.__name__}.{mod.name}")
            for spec in getattr(module, "SPECS", []):
                if spec.id in found:
                    raise ValueError(f"kernel id {spec.id!r} is declared twice (second time in {module.__name__})")
                found[spec.id] = spec
        _REGISTRY.update(found)
    return _REGISTRY


def is_control(spec: KernelSpec) -> bool:
    """Control kernels (tag "control") are experiments, not attention: no dispatch, fuzz or sweep takes them."""
    return "control" in spec.tags


def get(kernel_id: str) -> KernelSpec:
    """The spec of one kernel id; a clear error listing the known ids otherwise."""
    reg = _collect()
    if not isinstance(kernel_id, str):
        raise TypeError(f"kernel_id must be a str, got {type(kernel_id).__name__}")
    try:
        return reg[kernel_id]
    except KeyError:
        raise KeyError(f"unknown kernel id {kernel_id!r}; known: {', '.join(sorted(reg))}") from None


def all_specs(chapter: Optional[str] = None) -> list:
    reg = _collect()
    return [s for s in reg.values() if chapter is None or s.chapter == chapter]


def tree() -> str:
    """The kernel ladders as trees, drawn from the specs' ``parent`` fields: one line per kernel with its one-line
    idea, children under their parent (a step that branches shows as two children, a dead end as a leaf; children of
    the parent's own chapter first). An id that is a build mode of its parent (the same file, other ``-D``) is named on
    its parent's line. Controls (no parent, tag "control") come last. kernels/README.md shows this text (a test keeps
    the two equal)."""
    reg = _collect()
    modes: dict = {}
    children: dict = {}
    roots = []
    for spec in reg.values():
        parent = reg.get(spec.parent) if spec.parent else None
        if parent is not None and parent.source == spec.source:
            modes.setdefault(parent.id, []).append(spec)
        elif parent is not None:
            children.setdefault(parent.id, []).append(spec)
        else:
            roots.append(spec)
    lines: list = []

    def add(spec: KernelSpec, prefix: str, tail: str) -> None:
        built = "".join(f" [+ {m.id}: " + " ".join(f"-D{k}" for k, _ in m.defines) + "]"
                        for m in modes.get(spec.id, []))
        lines.append(f"{prefix}{tail}{spec.id}{built} — {spec.idea}")
        kids = sorted(children.get(spec.id, []), key=lambda k: k.chapter != spec.chapter)
        below = prefix + ("" if not tail else ("    " if tail.startswith("└") else "│   "))
        for i, kid in enumerate(kids):
            add(kid, below, "└── " if i == len(kids) - 1 else "├── ")

    for root in sorted(roots, key=is_control):
        add(root, "", "")
    return "\n".join(lines)
