"""FlashCore: a fused attention forward kernel written from scratch, and the harness that measures it.

Modules, one concern each: ``kernels`` (registry), ``compile`` (NVRTC / nvcc), ``check`` (correctness),
``bench`` (timing), ``profile`` (Nsight Compute), ``sanitize`` (compute-sanitizer), ``records`` (run records),
``book`` (live/replay for the chapters), ``sass`` (disassembly evidence).
"""
__version__ = "0.1.0"
