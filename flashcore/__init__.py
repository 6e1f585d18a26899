"""FlashCore: a fused attention forward kernel written from scratch, and the harness that measures it.

The library: :func:`attention` (``api``: validate → dispatch → launch), :func:`kernel_for` (which kernel a call
would run, and why), ``validate`` (clear errors before anything is launched), ``dispatch`` (a pure function of
shape and device). Kernels: ``kernels`` (the registry) and ``specs/`` (launch geometry per chapter), ``compile``
(NVRTC on a GPU host, nvcc on any machine). Measuring: ``harness/`` (check, bench, reference, the one
check-then-time routine), ``tools/`` (the launch-only driver that ncu and compute-sanitizer wrap, sanitize,
profile, sass), ``records`` and ``provenance`` (write-once run records). The book: ``book`` and ``plots`` (what a
page shows), ``chapters/`` (per chapter: ``measure`` on a GPU, ``view`` from a record), ``watchdog`` and
``modelcheck`` (chapter 2), ``fuzz`` and ``sweep`` (the library's GPU sweep). One command line: ``cli``
(``python -m flashcore``).

Imports are at the top of each module, except where they would touch CUDA (CuPy device calls, Triton, NVIDIA's
``ncu_report``) on a path a CPU machine takes: those are imported inside the function that needs them, so
``import flashcore`` and every replay of the book run on a machine without a GPU.
"""
__version__ = "0.2.0"

__all__ = ["attention", "kernel_for", "__version__"]


def attention(q, k, v, *, scale=None, copy=True, kernel=None):
    """softmax(q·kᵀ·scale)·v on the GPU — see :func:`flashcore.api.attention`."""
    from .api import attention as _attention     # CuPy is imported by api on first use only (see above)

    return _attention(q, k, v, scale=scale, copy=copy, kernel=kernel)


def kernel_for(q_shape, k_shape=None, device: int = 0):
    """Which kernel :func:`attention` would launch for these shapes on CUDA device ``device``, and why — see
    :func:`flashcore.api.kernel_for`."""
    from .api import kernel_for as _kernel_for

    return _kernel_for(q_shape, k_shape, device)
