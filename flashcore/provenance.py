"""Where a number came from: GPU, driver, CUDA, library versions, commit, date, command."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import subprocess
import sys

from .paths import ROOT

# Changes under these paths do not make a run "dirty": they are what a live run writes.
OUTPUT_PATHS = ("runs/", "figures/", "book/chapters/", "book/generated/")


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' → 'h100-80gb-hbm3' (the folder under runs/)."""
    if not name:
        raise ValueError("empty GPU name")
    s = re.sub(r"^nvidia\s+", "", name.strip().lower())
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-")
    return s


def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_state() -> tuple:
    """(commit sha, dirty). A GPU host's copy has no .git: the caller passes FLASHCORE_COMMIT / FLASHCORE_DIRTY."""
    commit = os.environ.get("FLASHCORE_COMMIT") or _git("rev-parse", "HEAD")
    if not re.fullmatch(r"[0-9a-f]{40}", commit or ""):
        commit = "unknown"
    env_dirty = os.environ.get("FLASHCORE_DIRTY")
    if env_dirty is not None:
        return commit, env_dirty.strip().lower() in ("1", "true", "yes")
    status = _git("status", "--porcelain")
    changed = [ln[3:] for ln in status.splitlines() if ln.strip()]
    dirty = any(not p.startswith(OUTPUT_PATHS) for p in changed)
    return commit, dirty


def driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
        return out.splitlines()[0] if out else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(mod: str) -> str:
    try:
        m = __import__(mod)
        return str(getattr(m, "__version__", "unknown"))
    except Exception:
        return "not installed"


def collect(notebook: str, command: str = "") -> dict:
    """The provenance block of a live run (needs a GPU)."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("provenance.collect needs a CUDA GPU: a live run cannot be recorded on this machine")
    props = torch.cuda.get_device_properties(0)
    commit, dirty = git_state()
    def _cuda_version(v: int) -> str:
        return f"{v // 1000}.{(v % 1000) // 10}"

    try:
        import cupy
        cuda_driver_api = _cuda_version(cupy.cuda.runtime.driverGetVersion())
        cupy_runtime = _cuda_version(cupy.cuda.runtime.runtimeGetVersion())
    except Exception:
        cuda_driver_api = cupy_runtime = "unknown"
    try:
        nvcc = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, timeout=20).stdout
        nvcc = re.search(r"release ([\d.]+)", nvcc).group(1)
    except Exception:
        nvcc = "unknown"
    return {
        "gpu": props.name,
        "gpu_slug": gpu_slug(props.name),
        "sm": f"sm_{props.major}{props.minor}",
        "num_sms": props.multi_processor_count,
        "l2_bytes": getattr(props, "L2_cache_size", None),
        "driver": driver_version(),
        "cuda": cuda_driver_api,          # the CUDA version the driver supports
        "nvcc": nvcc,
        "cupy_cuda_runtime": cupy_runtime,
        "torch": torch.__version__,
        "torch_cuda": str(torch.version.cuda),
        "cudnn": str(torch.backends.cudnn.version()),
        "cupy": _version("cupy"),
        "triton": _version("triton"),
        "python": platform.python_version(),
        "commit": commit,
        "dirty": dirty,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command or " ".join(sys.argv),
        "notebook": notebook,
        "host": platform.node(),
    }
