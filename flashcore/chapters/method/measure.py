"""Chapter 0's live work: the GPU's ceilings (tensor GEMM rate, copy bandwidth, ex2 rate, launch), the SDPA backends
checked and timed at the mission shape and at a shape that fills the chip, five ways of timing the same kernel, and
two Nsight Compute reports (base clocks, and clocks left free).

Everything here needs a GPU; torch and CuPy are imported inside the functions that launch (the CPU replay of the
page never imports this module's GPU paths).
"""
from __future__ import annotations

from ...harness import bench
from ...harness import measure as harness
from ...harness.check import make_inputs
from ...tools import profile
from ...tools.driver import EMPTY_KERNEL

SDPA_BACKENDS = bench.SDPA_BACKENDS
CLOCK_FREE_SECTIONS = ("SpeedOfLight", "LaunchStats")   # ncu's duration with the clocks as the driver runs them

# A kernel whose only work is exp2 on the special-function unit (MUFU): the exp ceiling, measured.
EXP2_KERNEL = r'''
extern "C" __global__ void exp2_throughput(float* out, int iters) {
  float a = threadIdx.x * 1e-3f, b = a + 0.5f, c = a + 0.25f, d = a + 0.75f;
  for (int i = 0; i < iters; ++i) {   // four independent chains keep the MUFU pipe busy
    asm volatile("ex2.approx.ftz.f32 %0, %0;" : "+f"(a)); asm volatile("ex2.approx.ftz.f32 %0, %0;" : "+f"(b));
    asm volatile("ex2.approx.ftz.f32 %0, %0;" : "+f"(c)); asm volatile("ex2.approx.ftz.f32 %0, %0;" : "+f"(d));
  }
  if (a + b + c + d == 12345.f) out[0] = a;   // never true; keeps the chains alive
}
'''


def _on_torch_stream(launch):
    """Run a CuPy launch on torch's current stream (so CUDA-graph capture records it)."""
    import cupy
    import torch

    with cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
        launch()


def gemm_ceiling(n: int = 8192) -> dict:
    """fp16 tensor-core rate of cuBLAS on an n³ GEMM (TFLOP/s): the compute roof."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.float16)
    b = torch.randn(n, n, device="cuda", dtype=torch.float16)
    t = bench.time_graph(lambda: torch.matmul(a, b), launches_per_graph=5, samples=10)
    return dict(gemm_fp16_tflops=2 * n ** 3 / (t.median_us * 1e-6) / 1e12,
                gemm_method=f"torch.matmul {n}³ fp16 (cuBLAS), " + t.method)


def copy_ceiling(nbytes: int = 1 << 30) -> dict:
    """Device-to-device copy bandwidth (TB/s, bytes read + bytes written): the memory roof."""
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = bench.time_graph(lambda: dst.copy_(src), launches_per_graph=5, samples=10)
    return dict(copy_tbps=2 * nbytes / (t.median_us * 1e-6) / 1e12,
                copy_method=f"{nbytes / 2 ** 30:.0f} GiB device-to-device copy, bytes read + written, " + t.method)


def exp2_ceiling(iters: int = 4096, ctas_per_sm: int = 8, threads: int = 256) -> dict:
    """ex2.approx throughput of the whole chip (exponentials per second): the softmax's own roof."""
    import cupy
    import torch

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    kernel = cupy.RawKernel(EXP2_KERNEL, "exp2_throughput")
    sink = cupy.zeros(1, dtype=cupy.float32)
    blocks = sms * ctas_per_sm
    t = bench.time_graph(lambda: _on_torch_stream(lambda: kernel((blocks,), (threads,), (sink, cupy.int32(iters)))),
                         launches_per_graph=5, samples=10)
    return dict(exp2_per_s=4.0 * iters * blocks * threads / (t.median_us * 1e-6),
                exp2_method=f"ex2.approx.f32, {blocks}×{threads} threads × {4 * iters} each, " + t.method)


def empty_kernel():
    """A zero-argument launch of an empty kernel (one CTA of 32 threads): the cost of a launch and nothing else."""
    import cupy

    kernel = cupy.RawKernel(EMPTY_KERNEL, "flashcore_empty_kernel")
    return lambda: _on_torch_stream(lambda: kernel((1,), (32,), ()))


def launch_ceilings(samples: int) -> dict:
    """The empty kernel timed three ways: graph replay (the launch floor), per-call events, an eager loop."""
    fn = empty_kernel()
    return dict(empty_graph=bench.time_graph(fn, samples=samples).row(),
                empty_events=bench.time_events(fn, samples=samples * 2).row(),
                empty_loop=bench.time_eager_loop(fn).row())


def device_facts() -> dict:
    """What the driver says about the GPU: the numbers a later page compares two GPUs by (the theoretical DRAM
    bandwidth beside the measured copy rate, SM count and clock beside the measured GEMM rate)."""
    import cupy

    attrs = cupy.cuda.Device().attributes
    out = {key: attrs.get(name) for key, name in (
        ("sm_count", "MultiProcessorCount"), ("sm_clock_khz", "ClockRate"), ("memory_clock_khz", "MemoryClockRate"),
        ("memory_bus_bits", "GlobalMemoryBusWidth"), ("l2_bytes", "L2CacheSize"),
        ("smem_per_sm_bytes", "MaxSharedMemoryPerMultiprocessor"))}
    if out.get("memory_clock_khz") and out.get("memory_bus_bits"):   # DDR: two transfers per clock
        out["dram_theoretical_tbps"] = 2 * out["memory_clock_khz"] * 1e3 * out["memory_bus_bits"] / 8 / 1e12
    return out


def ceilings(samples: int) -> dict:
    """Every measured ceiling, in the record's ``extra["ceilings"]`` layout."""
    out = {}
    for part in (gemm_ceiling(), copy_ceiling(), exp2_ceiling(), launch_ceilings(samples)):
        out.update(part)
    return out


def timing_methods(q, k, v, o, samples: int, ceil: dict) -> dict:
    """cuDNN and FlashAttention-2 (SDPA) timed four ways each, on one set of inputs; the empty kernel beside them."""
    out = {}
    for name in ("sdpa_cudnn", "sdpa_flash"):
        fn = harness.sdpa(name).timed(q, k, v, o)
        out[name] = dict(graph=bench.time_graph(fn, samples=samples).row(),
                         events=bench.time_events(fn, samples=samples * 2).row(),
                         loop=bench.time_eager_loop(fn).row(),
                         graph_l2_flushed=bench.time_graph(fn, samples=samples, flush=True).row())
    out["empty_kernel"] = dict(graph=ceil["empty_graph"], events=ceil["empty_events"], loop=ceil["empty_loop"])
    return out


def ncu_reports(run, shape: str) -> dict:
    """Which kernel each backend launches and why it takes what it takes (the book's sections, base clocks), and
    ncu's own duration with the clocks left free. A failure is recorded, never fatal: the page says so."""
    backends = [n[len("sdpa_"):] for n in SDPA_BACKENDS]
    out = {}
    for key, name, kw in (("base_clocks", "sdpa_backends.ncu-rep", dict(sections=profile.BOOK_SECTIONS)),
                          ("clock_free", "sdpa_backends_clock_free.ncu-rep",
                           dict(sections=CLOCK_FREE_SECTIONS, clock_control="none"))):
        try:
            out[key] = run.rel(profile.ncu_profile(run.dir / name, shapes=shape, sdpa=backends, empty=True, **kw))
        except Exception as exc:      # no ncu, or no permission for the counters: the record says which
            out[f"{key}_error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
    return out


def measure(run, params: dict) -> None:
    """Fill ``run`` with chapter 0's measurements (the parameters are the notebook's)."""
    import torch

    B, H, S, D = (int(params[k]) for k in ("B", "H", "S", "D"))
    samples = int(params.get("samples", 50))
    big = tuple(int(x) for x in params.get("big", (4, 16, 4096, 64)))
    ceil = ceilings(samples)
    run.extra["ceilings"] = ceil
    try:
        run.extra["device"] = device_facts()
    except Exception as exc:          # a driver without one of the attributes: the ceilings still stand
        run.extra["device_error"] = str(exc)[:300]

    # 1. The SDPA backends at the mission shape: each checked against fp64, then timed, all in this process.
    harness.check_then_time(run, [harness.sdpa(n, check=True) for n in SDPA_BACKENDS], B, H, S, D,
                            samples=samples, seed=2026, check_seed=7, role="mission")

    # 2. The same timings four ways (graph, graph with L2 flushed, eager loop, per-call events), same inputs.
    q, k, v = make_inputs(B, H, S, D, seed=2026)
    run.extra["timing_methods"] = timing_methods(q, k, v, torch.empty_like(q), samples, ceil)
    del q, k, v

    # 3. The backends at a shape that fills the chip (timed; the check at the mission shape covers their answers).
    harness.check_then_time(run, [harness.sdpa(n) for n in SDPA_BACKENDS], *big, samples=max(10, samples // 3),
                            seed=11, role="big")
    torch.cuda.empty_cache()
    run.extra["shapes"] = dict(mission=[B, H, S, D], big=list(big))

    # 4. Nsight Compute at the mission shape.
    reports = ncu_reports(run, f"{B},{H},{S},{D}")
    run.extra["ncu_reports"] = reports
    if "base_clocks" in reports:
        for row in run.results:
            if row.get("role") == "mission":
                row["ncu_report"] = reports["base_clocks"]
