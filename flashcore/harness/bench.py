"""How fast? Median and p10/p90 of CUDA-graph replays, with the SDPA backends timed in the same process.

Why graphs: at this problem size a kernel runs for a few microseconds, and launching it from Python costs more
than that. Timing each call with a pair of events measures the launch path, not the kernel. Capturing
``launches_per_graph`` launches in one CUDA graph and timing the replay removes the host from the measurement; the
per-launch time is the replay time divided by the launches. ``flush_l2=True`` writes a buffer larger than L2
before each sample (the first launch of the graph then starts cold; the rest see what it left in L2).
"""
from __future__ import annotations

from dataclasses import dataclass, asdict
from typing import Callable, Dict, Optional

SDPA_BACKENDS = ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "sdpa_default")


@dataclass
class Timing:
    median_us: float
    p10_us: float
    p90_us: float
    mean_us: float
    samples: int
    launches_per_graph: int
    method: str

    def row(self) -> dict:
        return asdict(self)


def _percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        raise ValueError("no samples")
    k = (len(xs) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarize(per_launch_us, launches_per_graph: int, method: str) -> Timing:
    xs = list(per_launch_us)
    return Timing(median_us=_percentile(xs, 50), p10_us=_percentile(xs, 10), p90_us=_percentile(xs, 90),
                  mean_us=sum(xs) / len(xs), samples=len(xs), launches_per_graph=launches_per_graph,
                  method=method)


_FLUSH = {}


def flush_l2():
    """Write a buffer twice the L2 size so the next kernel starts with cold caches."""
    import torch

    dev = torch.cuda.current_device()
    if dev not in _FLUSH:
        l2 = getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 64 << 20) or (64 << 20)
        _FLUSH[dev] = torch.empty(2 * l2, dtype=torch.uint8, device="cuda")
    _FLUSH[dev].fill_(1)


def time_graph(fn: Callable[[], None], launches_per_graph: int = 20, samples: int = 50, warmup: int = 3,
               flush: bool = False) -> Timing:
    """Per-launch time of ``fn`` from CUDA-graph replays: ``samples`` replays of ``launches_per_graph`` launches."""
    import torch

    if launches_per_graph < 1 or samples < 3:
        raise ValueError(f"need launches_per_graph ≥ 1 and samples ≥ 3, got {launches_per_graph}, {samples}")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):      # warm-up outside capture: compilation, autotuning, workspace allocation
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(launches_per_graph):
            fn()
    torch.cuda.synchronize()
    graph.replay()                     # one untimed replay: the graph's own first-launch costs
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    per_launch = []
    for _ in range(samples):
        if flush:
            flush_l2()
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        per_launch.append(start.elapsed_time(end) * 1e3 / launches_per_graph)
    method = (f"cuda-graph replay: {launches_per_graph} launches/graph, {samples} samples, "
              f"{'L2 flushed before each sample' if flush else 'L2 warm'}")
    del graph
    return summarize(per_launch, launches_per_graph, method)


def time_events(fn: Callable[[], None], samples: int = 100, warmup: int = 3) -> Timing:
    """The trap: one pair of events around each eager call. Measures the launch path as much as the kernel."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    xs = []
    for _ in range(samples):
        start.record()
        fn()
        end.record()
        end.synchronize()
        xs.append(start.elapsed_time(end) * 1e3)
    return summarize(xs, 1, f"per-call events around one eager launch, {samples} samples")


def time_eager_loop(fn: Callable[[], None], launches: int = 200, samples: int = 20, warmup: int = 3) -> Timing:
    """Events around ``launches`` back-to-back eager launches: throughput when the host keeps ahead of the GPU."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    xs = []
    for _ in range(samples):
        start.record()
        for _ in range(launches):
            fn()
        end.record()
        end.synchronize()
        xs.append(start.elapsed_time(end) * 1e3 / launches)
    return summarize(xs, launches, f"events around {launches} back-to-back eager launches, {samples} samples")


def sdpa_callables(q, k, v, scale: Optional[float] = None) -> Dict[str, Callable[[], None]]:
    """One zero-argument callable per SDPA backend (output discarded), for timing beside our kernels."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def backend(b):
        def run():
            with sdpa_kernel([b]):
                F.scaled_dot_product_attention(q, k, v, scale=scale)
        return run

    def default():
        F.scaled_dot_product_attention(q, k, v, scale=scale)

    return {"sdpa_cudnn": backend(SDPBackend.CUDNN_ATTENTION), "sdpa_flash": backend(SDPBackend.FLASH_ATTENTION),
            "sdpa_efficient": backend(SDPBackend.EFFICIENT_ATTENTION), "sdpa_default": default}


def attention_flops(B: int, H: int, S: int, D: int = 64, S_kv: Optional[int] = None) -> float:
    """Matrix FLOPs of the forward pass: two GEMMs of 2·S·S_kv·D each per head."""
    S_kv = S if S_kv is None else S_kv
    return 4.0 * B * H * S * S_kv * D


def attention_bytes(B: int, H: int, S: int, D: int = 64, S_kv: Optional[int] = None, elem: int = 2) -> float:
    """The fewest bytes: read Q, K, V once and write O once."""
    S_kv = S if S_kv is None else S_kv
    return float(elem * B * H * D * (2 * S + 2 * S_kv))


def floors_us(B: int, H: int, S: int, D: int, *, gemm_tflops: float, copy_tbps: float, exp2_per_s: float,
              launch_us: float) -> dict:
    """The four floors of one shape (µs): the time it would take if one resource alone limited it — the matrix
    FLOPs at the GEMM rate, the fewest bytes at the copy bandwidth, one exponential per score at the ex2 rate, and
    one launch. Chapter 0 draws them; the H100-vs-H200 page predicts from them."""
    return {"tensor": attention_flops(B, H, S, D) / (gemm_tflops * 1e12) * 1e6,
            "exp": B * H * S * S / exp2_per_s * 1e6,
            "memory": attention_bytes(B, H, S, D) / (copy_tbps * 1e12) * 1e6,
            "launch": float(launch_us)}


def tflops(B, H, S, D, us, S_kv=None) -> float:
    return attention_flops(B, H, S, D, S_kv) / (us * 1e-6) / 1e12
