"""FlashCore: a fused attention forward kernel written from scratch, and the harness that measures it.

The library: :func:`attention` (``api``: validate → dispatch → compile once → launch; SDPA's forward with its
``is_causal``, ``scale`` and ``enable_gqa`` — fp16 at D = 64 today, any scale and grouped heads; bf16, D = 128 and
the causal mask are built and await their GPU check), :func:`kernel_for` (which kernel a call would run, and why), ``validate`` (clear errors before anything is launched), ``dispatch`` (a pure function of
shape, features and device), ``launch`` (the prepared launch of the hot path), ``torch_op`` (the PyTorch operator
``torch.ops.flashcore.attention`` that ``torch.compile`` traces). Kernels: ``kernels`` (the registry) and
``specs/`` (launch geometry per chapter), ``compile`` (NVRTC on a GPU host, nvcc on any machine). Measuring:
``harness/`` (check, bench, reference, the one check-then-time routine), ``tools/`` (the launch-only driver that ncu
and compute-sanitizer wrap, sanitize, profile, sass), ``records`` and ``provenance`` (write-once run records). The
book: ``book`` and ``plots`` (what a page shows), ``chapters/`` (per chapter: ``measure`` on a GPU, ``view`` from a
record), ``watchdog`` and ``modelcheck`` (chapter 2), ``fuzz``, ``sweep`` and ``library_bench`` (the library's GPU
sweep and its eager-cost record). One command line: ``cli`` (``python -m flashcore``).

Imports are at the top of each module, except where they would touch CUDA (CuPy device calls, Triton, NVIDIA's
``ncu_report``) on a path a CPU machine takes: those are imported inside the function that needs them, so
``import flashcore`` and every replay of the book run on a machine without a GPU. ``import flashcore`` does not
import torch; if torch is already imported, the PyTorch operator is registered at once (otherwise on the first call).
"""
import sys as _sys

__version__ = "0.3.0"

from .api import HeadsError, NoKernelError, attention, kernel_for  # noqa: E402

__all__ = ["attention", "kernel_for", "NoKernelError", "HeadsError", "__version__"]

if "torch" in _sys.modules:          # register torch.ops.flashcore.attention now, so torch.compile finds it
    from . import api as _api

    _api._bind_torch()
