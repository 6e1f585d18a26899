"""The kernel registry: every kernel version's id, source file and launch geometry.

A chapter declares its kernels in ``flashcore/specs/<chapter>.py`` as a list ``SPECS`` of :class:`KernelSpec`;
this module collects them. Kernel ids are the ids used in run records (``v12_baseline``, ``v8_03_swizzle`` ...).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Tuple

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
    id: str                                   # record id, e.g. "v12_baseline"
    source: str                               # file name under kernels/
    entry: str                                # extern "C" entry point
    threads: int                              # threads per block
    grid: Callable[[LaunchShape], Grid]       # grid from the shape
    smem_bytes: Callable[[LaunchShape], int] = lambda s: 0   # dynamic shared memory
    defines: Tuple[Tuple[str, str], ...] = ()  # extra -D NAME=VALUE
    parent: Optional[str] = None              # the kernel this one changes one idea of
    chapter: str = ""                         # notebook stem, e.g. "01_v12_baseline"
    cross: bool = False                       # True if seq_q != seq_kv is supported
    max_seq: int = 1 << 30                    # longest sequence the kernel handles
    predicted_us: Optional[float] = None      # prediction at the mission shape (ladder steps)
    idea: str = ""                            # one line: what changed from the parent
    extra_args: Optional[Callable] = None     # (LaunchShape, array_module) -> tuple of extra kernel args
    expect_failure: bool = False              # a kernel kept to show a failure (e.g. the missing barrier)
    known_findings: Tuple["KnownFinding", ...] = ()   # sanitizer reports explained elsewhere (never silently clean)
    tags: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def path(self) -> Path:
        return KERNELS_DIR / self.source


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


_REGISTRY: dict = {}


def _collect() -> dict:
    if _REGISTRY:
        return _REGISTRY
    from . import specs

    for mod in sorted(pkgutil.iter_modules(specs.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{specs.__name__}.{mod.name}")
        for spec in getattr(module, "SPECS", []):
            if spec.id in _REGISTRY:
                raise ValueError(f"kernel id {spec.id!r} is declared twice (second time in {module.__name__})")
            _REGISTRY[spec.id] = spec
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
