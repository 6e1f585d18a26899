"""SASS evidence from an nvcc cubin: ``cuobjdump -sass`` and instruction counts, on a machine with no GPU.

``cuobjdump`` comes from the PyPI wheel ``nvidia-cuda-cuobjdump`` (or the CUDA toolkit); it needs ``nvdisasm``
(wheel ``nvidia-cuda-nvdisasm``) on its PATH.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# What a reader looks for in a kernel's SASS, and the regular expression that finds it.
EVIDENCE = {
    "HMMA": r"\bHMMA\.",                 # tensor-core mma (mma.sync / WMMA)
    "HGMMA": r"\bHGMMA\.",               # Hopper warpgroup mma
    "LDSM": r"\bLDSM\.",                 # ldmatrix
    "LDGSTS": r"\bLDGSTS\.",             # cp.async global→shared
    "LDG.128": r"\bLDG\.E\.128\b|\bLDG\.E\.128\.",  # 16-byte global loads
    "LDG": r"\bLDG\.",
    "STG": r"\bSTG\.",
    "LDS": r"\bLDS(\.|\b)",
    "STS": r"\bSTS(\.|\b)",
    "BAR": r"\bBAR\.",                   # block barriers
    "MUFU.EX2": r"\bMUFU\.EX2\b",        # exp2 on the special function unit
    "SYNCS": r"\bSYNCS\.",               # mbarrier operations (Hopper)
    "UTMALDG": r"\bUTMALDG\.",           # TMA tensor loads (Hopper)
    "USETMAXREG": r"\bUSETMAXREG\.",     # setmaxnreg: a warpgroup gives registers back or takes them
    "LDL": r"\bLDL(\.|\b)",              # local memory (spills or indexed arrays)
    "STL": r"\bSTL(\.|\b)",
}


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    # the PyPI wheels install under site-packages/nvidia/cuda_*/bin (layout varies by version)
    for base in map(Path, sys.path):
        for cand in base.glob(f"nvidia/**/bin/{name}"):
            return str(cand)
    cand = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / name
    if cand.exists():
        return str(cand)
    raise FileNotFoundError(f"{name} not found: pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm")


def sass_of(cubin) -> str:
    """The SASS text of a cubin."""
    cubin = Path(cubin)
    if not cubin.is_file():
        raise FileNotFoundError(f"cubin {cubin} does not exist")
    cuobjdump = _tool("cuobjdump")
    env = dict(os.environ)
    try:
        env["PATH"] = str(Path(_tool("nvdisasm")).parent) + os.pathsep + env.get("PATH", "")
    except FileNotFoundError:
        pass
    proc = subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"cuobjdump -sass {cubin.name} failed:\n{proc.stderr.strip()}")
    return proc.stdout


def instruction_counts(sass: str) -> dict:
    """Static counts of the instruction classes in :data:`EVIDENCE` (instructions in the code, not executed)."""
    counts = Counter()
    for line in sass.splitlines():
        if "/*" not in line:
            continue
        for name, pattern in EVIDENCE.items():
            if re.search(pattern, line):
                counts[name] += 1
    return {name: counts.get(name, 0) for name in EVIDENCE}


def evidence(spec, arch: str = "sm_90") -> dict:
    """Compile ``spec`` with nvcc and count its SASS evidence."""
    from ..compile import nvcc_compile

    rep = nvcc_compile(spec, arch=arch)
    return instruction_counts(sass_of(rep.cubin))
