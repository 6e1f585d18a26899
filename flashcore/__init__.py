"""FlashCore: a fused attention forward kernel written from scratch, and the harness that measures it.

Modules, one concern each: ``kernels`` (registry), ``compile`` (NVRTC / nvcc), ``check`` (correctness),
``bench`` (timing), ``profile`` (Nsight Compute), ``sanitize`` (compute-sanitizer), ``records`` (run records),
``book`` (live/replay for the chapters), ``sass`` (disassembly evidence); the library call ``attention``
(``api``, ``validate``, ``dispatch``), ``fuzz`` and ``sweep``; ``watchdog`` and ``modelcheck`` (chapter 2).
"""
__version__ = "0.1.0"


def attention(q, k, v, *, scale=None, copy=True, kernel=None):
    """softmax(q·kᵀ·scale)·v on the GPU — see :func:`flashcore.api.attention` (imported on first use, so
    ``import flashcore`` stays light on machines without a GPU)."""
    from .api import attention as _attention

    return _attention(q, k, v, scale=scale, copy=copy, kernel=kernel)
