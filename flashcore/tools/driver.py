"""Launch kernels and nothing else: the program that ncu and compute-sanitizer run.

``python -m flashcore.tools.driver --kernels v12_baseline,v8_seed --shapes "1,8,512,64;1,1,128,64" [--sdpa cudnn,flash]
[--empty] [--launches 1] [--warmup 0]``

Inputs are random fp16 (CuPy, no torch import unless SDPA is asked for), the output is NaN-poisoned, and before
each launch a marker line ``FLASHCORE-LAUNCH kernel=<id> shape=<B,H,S,D>`` is printed and flushed, and the device
is synchronized after it, so a sanitizer's messages can be attributed to the launch that caused them.
"""
from __future__ import annotations

import argparse
import sys

EMPTY_KERNEL = 'extern "C" __global__ void flashcore_empty_kernel() {}'
MARKER = "FLASHCORE-LAUNCH"


def parse_shapes(text: str) -> list:
    """'1,8,512,64;1,1,128,64' → [(1, 8, 512, 64), (1, 1, 128, 64)] (a 5th number is S_kv)."""
    shapes = []
    for part in filter(None, (p.strip() for p in text.replace(" ", "").split(";"))):
        nums = part.split(",")
        if len(nums) not in (4, 5) or not all(n.isdigit() and int(n) > 0 for n in nums):
            raise ValueError(f"a shape is B,H,S,D[,S_kv] of positive ints, got {part!r}")
        shapes.append(tuple(int(n) for n in nums))
    if not shapes:
        raise ValueError("no shapes given")
    return shapes


def _marker(kernel: str, shape) -> None:
    print(f"{MARKER} kernel={kernel} shape={','.join(map(str, shape))}", flush=True)


class _profiled:
    """cudaProfilerStart/Stop around the measured launches only: ncu runs with --profile-from-start off, so input
    generation, warm-up and library set-up kernels stay out of the report. An NVTX range names the launch
    (``<kernel id> <shape>``) so a report row can be traced back to what the driver launched."""

    def __init__(self, label: str):
        self.label = label

    def __enter__(self):
        import cupy

        cupy.cuda.runtime.deviceSynchronize()
        cupy.cuda.nvtx.RangePush(self.label)
        cupy.cuda.profiler.start()

    def __exit__(self, *exc):
        import cupy

        cupy.cuda.runtime.deviceSynchronize()
        cupy.cuda.profiler.stop()
        cupy.cuda.nvtx.RangePop()


def launch_kernels(kernel_ids, shapes, launches: int = 1, warmup: int = 0, seed: int = 0) -> None:
    import cupy

    from .. import kernels
    from ..compile import load_kernel

    rng = cupy.random.default_rng(seed)
    for kid in kernel_ids:
        spec = kernels.get(kid)
        launch = load_kernel(spec)
        for shape in shapes:
            B, H, S, D = shape[:4]
            S_kv = shape[4] if len(shape) > 4 else S
            if S_kv != S and not spec.cross:
                continue
            q = rng.standard_normal((B, H, S, D), dtype=cupy.float32).astype(cupy.float16)
            k = rng.standard_normal((B, H, S_kv, D), dtype=cupy.float32).astype(cupy.float16)
            v = rng.standard_normal((B, H, S_kv, D), dtype=cupy.float32).astype(cupy.float16)
            o = cupy.full((B, H, S, D), cupy.nan, dtype=cupy.float16)
            for _ in range(warmup):
                launch(q, k, v, o)
            cupy.cuda.Device().synchronize()
            _marker(kid, shape)
            with _profiled(f"{kid} {','.join(map(str, shape))}"):
                for _ in range(launches):
                    launch(q, k, v, o)


def launch_sdpa(backends, shapes, launches: int = 1) -> None:
    import torch

    from ..harness.bench import sdpa_callables

    for shape in shapes:
        B, H, S, D = shape[:4]
        q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.float16) for _ in range(3))
        fns = sdpa_callables(q, k, v)
        for b in backends:
            name = b if b.startswith("sdpa_") else f"sdpa_{b}"
            fns[name]()                         # warm-up (cuDNN builds its plan here)
            torch.cuda.synchronize()
            _marker(name, shape)
            with _profiled(f"{name} {','.join(map(str, shape))}"):
                for _ in range(launches):
                    fns[name]()


def launch_empty(launches: int = 1) -> None:
    import cupy

    fn = cupy.RawKernel(EMPTY_KERNEL, "flashcore_empty_kernel")
    fn((1,), (32,), ())
    cupy.cuda.Device().synchronize()
    _marker("empty_kernel", (1, 1, 1, 1))
    with _profiled("empty_kernel 1,1,1,1"):
        for _ in range(launches):
            fn((1,), (32,), ())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flashcore.tools.driver", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernels", default="", help="comma-separated kernel ids")
    ap.add_argument("--shapes", default="1,8,512,64")
    ap.add_argument("--sdpa", default="", help="comma-separated SDPA backends: cudnn,flash,efficient,default")
    ap.add_argument("--empty", action="store_true", help="also launch an empty kernel")
    ap.add_argument("--launches", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=0)
    args = ap.parse_args(argv)
    shapes = parse_shapes(args.shapes)
    ids = [k for k in args.kernels.split(",") if k]
    if ids:
        launch_kernels(ids, shapes, args.launches, args.warmup)
    if args.sdpa:
        launch_sdpa([b for b in args.sdpa.split(",") if b], shapes, args.launches)
    if args.empty:
        launch_empty(args.launches)
    print("FLASHCORE-DRIVER done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
