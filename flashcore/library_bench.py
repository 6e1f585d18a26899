"""The library as a user meets it, one GPU record: ``python -m flashcore library`` (notebook id ``library``).

What a caller of :func:`flashcore.attention` pays and gets, measured in one process beside SDPA:

* **Eager cost** (rows ``api_eager`` and ``sdpa_eager``): per-call time of back-to-back eager calls at the mission
  shape B1 H8 S512 D64 and two others — CUDA events around ``calls`` back-to-back calls (the caller's throughput:
  the host's cost when the host is slower than the kernel), and the host's wall-clock per call over the same
  calls; api and SDPA samples interleaved. Beside it, the kernel alone (CUDA-graph replay of the same call).
* **Where the host time goes** (``extra["breakdown"]``): the call's stages timed one at a time (the cache key, the
  lookup, the output allocation, the stream lookup, the prepared launch) and cProfile's top functions.
* **torch.compile and CUDA graphs** (``extra["compile"]``, ``extra["cuda_graph"]``): a function that calls
  flashcore.attention twice (the base case; GQA with a negative scale) compiled with ``fullgraph=True`` against
  eager, and the eager call (GQA, negative scale: the library's repeat and negation inside the capture) captured in
  a CUDA graph, replayed on new inputs.
* **Concurrency and devices** (``extra["concurrency"]``, ``extra["compile_race"]``, ``extra["device1"]``): calls
  from 8 threads on 2 streams against serial results, bit for bit; the process's first call, made by 16 threads at
  once with an empty compile cache (one compile, equal results); a tensor on device 1 (where two GPUs are visible;
  the record says when none was).
* **Features against cuDNN** (rows ``flashcore`` / ``sdpa_cudnn`` with ``feature``): the base case and GQA (k, v
  repeated by the library), and — under :func:`flashcore.api.unverified_variants`, as their first GPU check — the
  kernel variants the library does not run yet: causal, bf16, D=128 and GQA mapped in the kernel, at the mission
  shape and at B4 H16 S4096 (``awaiting_gpu_check`` on their rows). Each is checked against the fp64 reference first
  (:func:`flashcore.fuzz.check_case`), then timed by CUDA-graph replay (:func:`flashcore.harness.bench.time_graph`),
  and the eager call beside SDPA's.

The CPU side of the host cost can be profiled without a GPU: :func:`fake_gpu` runs the real call with CPU tensors
passing as CUDA ones and the launch replaced by a Python no-op (:func:`host_profile` ``fake=True``; the tests use
it). :func:`page_markdown` writes the library page's numbers from a record.
"""
from __future__ import annotations

import contextlib
import cProfile
import io
import os
import pstats
import statistics
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

NOTEBOOK = "library"
MISSION = (1, 8, 512, 64)
DEFAULTS = dict(
    shapes=[[1, 8, 512, 64], [1, 8, 128, 64], [4, 16, 4096, 64]],     # eager cost: mission + a tiny and a big one
    calls=300, samples=15,                                              # back-to-back calls per sample, samples
    feature_shapes=[[1, 8, 512], [4, 16, 4096]],
    features=["base", "gqa", "causal", "bf16", "d128", "gqa_kernel"],
    graph_samples=20, stage_calls=5000, profile_calls=2000,
    threads=8, streams=2, thread_calls=20, race_threads=16,
)
# The features timed against cuDNN: dtype, head dim, causal, query heads per key/value head, and whether the call
# needs kernel variants that await their GPU check (measured under api.unverified_variants: this is that check).
FEATURES = {
    "base": dict(dtype="float16", D=64, causal=False, group=1, unverified=False),
    "gqa": dict(dtype="float16", D=64, causal=False, group=4, unverified=False),          # k, v repeated first
    "causal": dict(dtype="float16", D=64, causal=True, group=1, unverified=True),
    "bf16": dict(dtype="bfloat16", D=64, causal=False, group=1, unverified=True),
    "d128": dict(dtype="float16", D=128, causal=False, group=1, unverified=True),
    "gqa_kernel": dict(dtype="float16", D=64, causal=False, group=4, unverified=True),    # kv_group in the kernel
}
DEVICE = "cuda"          # where the measurements put their inputs (the CPU tests run the bookkeeping on "cpu")
# The race makes the process's first call (the base build; nothing in the run may call before it).
RACE_FEATURES = dict(dtype="float16", D=64, causal=False, group=1)


def _pct(xs, p):
    from .harness.bench import _percentile

    return _percentile(xs, p)


def _spread(xs) -> dict:
    return dict(median_us=_pct(xs, 50), p10_us=_pct(xs, 10), p90_us=_pct(xs, 90), samples=len(xs))


# ------------------------------------------------------------------------------------- the CPU host profile
class _FakeFunction:
    """Stands in for a CUfunction: a pointer and the shared-memory attribute the launcher sets."""

    ptr = 0x1000
    max_dynamic_shared_size_bytes = 0


def _fake_launch_kernel(f, gx, gy, gz, bx, by, bz, smem, stream, params, extra):
    """Stands in for cuLaunchKernel: a Python call with the same arguments, doing nothing."""
    return None


def _fake_encode_tiled(out, dtype, rank, ptr, dims, strides, box, estr, interleave, swizzle, l2, oob):
    """Stands in for cuTensorMapEncodeTiled (the Hopper kernel's TMA maps): writes nothing, succeeds."""
    return 0


@contextlib.contextmanager
def fake_gpu(sms: int = 132, sm: int = 90):
    """The real library call on the CPU with the GPU faked: CPU tensors pass as the device's, a kernel 'compiles'
    to a :class:`flashcore.compile.Launcher` around a fake CUfunction (counted in ``state["loads"]``), the launch is
    a Python no-op in cuLaunchKernel's place (counted in ``state["launches"]``), the stream is 0, the current CUDA
    context always the kernel's. Everything else — the key, the cache, validation, dispatch, the prepared launch's
    argument block — is the library's own code. Yields the state dict; restores everything on exit."""
    from . import api, dispatch, launch
    from .compile import Launcher

    state = dict(loads=0, launches=0, load_delay=0.0)

    def fake_load(spec, defines, device):
        state["loads"] += 1
        if state["load_delay"]:
            time.sleep(state["load_delay"])             # a slow compile, so racing threads overlap
        return Launcher(spec, _FakeFunction(), "sm_90", device, sms, (48 * 1024, 64 * 1024))

    def counted_launch(*args):
        state["launches"] += 1

    def cuda_calls():
        return (counted_launch if state.get("count") else _fake_launch_kernel), (lambda: 1), \
            (lambda device: contextlib.nullcontext()), _fake_encode_tiled

    def fake_prepare(launcher, plan, scale, kv_group):
        return launch.prepare(launcher, plan.bh, plan.S_q, plan.S_kv, scale, kv_group, cuda_calls=cuda_calls)

    import torch

    saved = {n: getattr(api, n) for n in ("DEVICE_TYPES", "_device_rule_input", "_device_facts", "_load",
                                          "_prepare", "_raw_stream", "_new_output")}
    plans, ready = dict(api._PLANS), dict(api._READY)
    api._PLANS.clear()
    api._READY.clear()
    api._bind_torch()
    api.DEVICE_TYPES = ("cuda", "cpu")
    api._device_rule_input = lambda index: dispatch.Device(sm=sm, num_sms=sms)
    api._device_facts = lambda index: (sms,)
    api._load = fake_load
    api._prepare = fake_prepare
    api._raw_stream = lambda index: 0
    api._new_output = torch.empty
    try:
        yield state
    finally:
        for n, v in saved.items():
            setattr(api, n, v)
        api._PLANS.clear()
        api._PLANS.update(plans)
        api._READY.clear()
        api._READY.update(ready)


def stage_costs(q, k, v, n: int = 5000, sync: Optional[Callable] = None, **flags) -> dict:
    """µs per call of each stage of a cached call, each timed alone (median of loops of at most 500 calls, ``n``
    calls in all, the GPU synchronized between loops but not inside them — host time only), and of the whole call:
    ``key`` (api._key), ``lookup`` (the cache dict), ``alloc`` (the output tensor), ``stream`` (the current raw
    stream), ``launch`` (the prepared launch: argument block + cuLaunchKernel), ``total`` (flashcore.attention) and
    ``rest`` (total minus the stages: the call's own Python)."""
    from . import api

    opts = dict(is_causal=False, scale=None, enable_gqa=False, copy=True, kernel=None)
    opts.update(flags)
    api.attention(q, k, v, **opts)
    key = api._key(q, k, v, opts["is_causal"], opts["scale"], opts["enable_gqa"], opts["copy"], opts["kernel"])
    call = api._PLANS[key]
    o = api._new_output(call.out_shape, dtype=call.dtype, device=call.device)
    qp, kp, vp, op = q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr()
    stream = api._raw_stream(call.index)
    sync = sync or (lambda: None)
    plans, new, raw_stream, launch = api._PLANS, api._new_output, api._raw_stream, call.launch
    shape, dtype, device, index = call.out_shape, call.dtype, call.device, call.index
    attention = api.attention

    inner = min(n, 500)            # launches per timed loop: few enough that the launch queue never fills, so
    reps = max(1, n // inner)      # the loop's time is the host's, not the GPU's (no sync inside the timing)

    def timed(body) -> float:
        xs = []
        for _ in range(reps):
            sync()
            t0 = time.perf_counter()
            body()
            xs.append((time.perf_counter() - t0) * 1e6 / inner)
        sync()
        return statistics.median(xs)

    flag_args = (opts["is_causal"], opts["scale"], opts["enable_gqa"], opts["copy"], opts["kernel"])

    def k_():
        for _ in range(inner):
            api._key(q, k, v, *flag_args)

    def l_():
        for _ in range(inner):
            plans.get(key)

    def a_():
        for _ in range(inner):
            new(shape, dtype=dtype, device=device)

    def s_():
        for _ in range(inner):
            raw_stream(index)

    def g_():
        for _ in range(inner):
            launch(qp, kp, vp, op, stream)

    def t_():
        for _ in range(inner):
            attention(q, k, v, **opts)

    def e_():
        for _ in range(inner):
            pass

    out = dict(loop=timed(e_), key=timed(k_), lookup=timed(l_), alloc=timed(a_), stream=timed(s_),
               launch=timed(g_), total=timed(t_))
    out = {name: (us - out["loop"] if name != "loop" else us) for name, us in out.items()}
    out["rest"] = out["total"] - sum(out[s] for s in ("key", "lookup", "alloc", "stream", "launch"))
    out["prepared"] = bool(call.prepared)
    return out


def profile_top(fn: Callable[[], object], calls: int = 2000, top: int = 12) -> List[dict]:
    """cProfile of ``calls`` calls of ``fn``: the ``top`` functions by own time, per call (µs; cProfile's own
    overhead included, so the sum exceeds the unprofiled call)."""
    fn()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (path, line, name), (cc, nc, tt, ct, _) in stats.stats.items():
        where = f"{os.path.basename(path)}:{line}({name})" if path != "~" else name
        rows.append(dict(function=where, calls_per_call=round(nc / calls, 2), own_us=tt * 1e6 / calls,
                         cumulative_us=ct * 1e6 / calls))
    rows.sort(key=lambda r: -r["own_us"])
    return rows[:top]


def host_profile(shape: Sequence[int] = MISSION, calls: int = 10000, fake: bool = True, top: int = 12,
                 dtype: str = "float16") -> dict:
    """The call's host cost: µs per call (perf_counter, median of loops of at most 500 calls), the stages
    (:func:`stage_costs`) and cProfile's top functions. ``fake=True``: on the CPU under :func:`fake_gpu` (the launch
    a no-op)."""
    import torch

    B, H, S, D = shape
    ctx = fake_gpu() if fake else contextlib.nullcontext()
    with ctx:
        from . import api

        device = "cpu" if fake else "cuda"
        q, k, v = (torch.randn(B, H, S, D, device=device).to(getattr(torch, dtype)) for _ in range(3))
        sync = None if fake else torch.cuda.synchronize
        api.attention(q, k, v)
        samples = []
        inner = min(calls, 500)                    # as in stage_costs: host time only, the queue never full
        for _ in range(max(1, calls // inner)):
            if sync:
                sync()
            t0 = time.perf_counter()
            for _ in range(inner):
                api.attention(q, k, v)
            samples.append((time.perf_counter() - t0) * 1e6 / inner)
        if sync:
            sync()
        stages = stage_costs(q, k, v, n=min(calls, 5000), sync=sync)
        top_fns = profile_top(lambda: api.attention(q, k, v), calls=min(calls, 2000), top=top)
    return dict(shape=list(shape), fake=fake, per_call_us=statistics.median(samples), samples_us=samples,
                stages=stages, top=top_fns, calls=calls)


# ------------------------------------------------------------------------------------------- on the GPU
def inputs(B: int, H: int, S: int, D: int = 64, dtype: str = "float16", H_kv: Optional[int] = None,
           S_kv: Optional[int] = None, seed: int = 0, device=None):
    """Seeded q ``[B, H, S, D]``, k and v ``[B, H_kv, S_kv, D]`` (:func:`flashcore.fuzz.case_inputs`)."""
    from .fuzz import case_inputs

    return case_inputs(dict(B=B, H=H, S=S, S_kv=S_kv or S, seed=seed, dtype=dtype, D=D, H_kv=H_kv or H),
                       device or DEVICE)


def eager_cost(fns: Dict[str, Callable[[], object]], calls: int = 300, samples: int = 15, warmup: int = 20,
               target_us: float = 30_000.0) -> Dict[str, dict]:
    """Per-call cost of back-to-back eager calls, for each ``fn`` (samples interleaved across the fns): CUDA events
    around the calls (µs per call: what the caller's stream sees) and the host's wall-clock over the same calls.
    ``calls`` is lowered for slow calls so a sample takes about ``target_us``."""
    import torch

    n = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
        est = (time.perf_counter() - t0) * 1e6 / 10
        n[name] = max(20, min(calls, int(target_us / max(est, 1e-3))))
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    gpu: Dict[str, list] = {k: [] for k in fns}
    host: Dict[str, list] = {k: [] for k in fns}
    for _ in range(samples):
        for name, fn in fns.items():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            start.record()
            for _ in range(n[name]):
                fn()
            end.record()
            t1 = time.perf_counter()
            end.synchronize()
            gpu[name].append(start.elapsed_time(end) * 1e3 / n[name])
            host[name].append((t1 - t0) * 1e6 / n[name])
    from .harness.bench import summarize

    out = {}
    for name in fns:
        h = _spread(host[name])
        method = (f"eager: CUDA events around {n[name]} back-to-back calls after {warmup} warm-up calls, {samples} "
                  f"samples interleaved with the other calls; host_us: wall-clock (perf_counter) per call over the "
                  f"same calls")
        out[name] = dict(_spread(gpu[name]), calls=n[name], host_us=h["median_us"], host_p10_us=h["p10_us"],
                         host_p90_us=h["p90_us"], timing=method, result=summarize(gpu[name], n[name], method))
    return out


def kernel_time(fn: Callable[[], object], samples: int = 20):
    """The call with the host removed: CUDA-graph replay (:func:`flashcore.harness.bench.time_graph`)."""
    from .harness import bench, measure

    return bench.time_graph(fn, launches_per_graph=measure.launches_per_graph(fn), samples=samples)


def _sdpa(q, k, v, causal=False, backend: Optional[str] = None):
    import torch.nn.functional as F

    gqa = k.shape[1] != q.shape[1]
    if backend is None:
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    b = {"sdpa_cudnn": SDPBackend.CUDNN_ATTENTION, "sdpa_flash": SDPBackend.FLASH_ATTENTION}[backend]

    def call():
        with sdpa_kernel([b]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)

    return call


def measure_eager(run, shapes, calls: int, samples: int, graph_samples: int) -> List[dict]:
    """Rows ``api_eager`` and ``sdpa_eager`` per shape (fp16, not causal): eager per-call cost; the kernel alone."""
    import torch

    import flashcore

    rows = []
    for B, H, S, D in shapes:
        q, k, v = inputs(B, H, S, D, seed=S)
        fns = {"api_eager": lambda: flashcore.attention(q, k, v), "sdpa_eager": _sdpa(q, k, v)}
        cost = eager_cost(fns, calls=calls, samples=samples)
        kern = {name: kernel_time(fn, graph_samples) for name, fn in fns.items()}
        for name in fns:
            c = cost[name]
            rows.append(run.add_result(
                name, B, H, S, D, timing=c["result"], calls=c["calls"], host_us=c["host_us"],
                host_p10_us=c["host_p10_us"], host_p90_us=c["host_p90_us"], kernel_us=kern[name].median_us,
                kernel_timing=kern[name].method, stage="eager",
                ratio_to_sdpa=(c["median_us"] / cost["sdpa_eager"]["median_us"]) if name == "api_eager" else None))
        fns.clear()                            # the inputs go with the closures (the next shape allocates anew)
        torch.cuda.empty_cache()
    return rows


def compile_check() -> dict:
    """torch.compile(fullgraph=True) of a function calling flashcore.attention twice (the base case; GQA 8/2 with a
    negative scale), against eager: compiles, graph nodes, max |difference|, bitwise equality, compile seconds."""
    import torch

    import flashcore

    q, k, v = inputs(2, 8, 300, 64, seed=1)
    qb, kb, vb = inputs(1, 8, 200, 64, H_kv=2, S_kv=260, seed=2)

    def block(q, k, v, qb, kb, vb):             # the pointwise ops around the calls are exact (× 2): bitwise equal
        a = flashcore.attention(q, k, v)
        b = flashcore.attention(qb, kb, vb, scale=-0.2, enable_gqa=True)
        return a * 2, b * 2

    eager = block(q, k, v, qb, kb, vb)
    out = dict(fullgraph=True, backend="inductor")
    try:
        torch._dynamo.reset()
        t0 = time.time()
        compiled = torch.compile(block, fullgraph=True)
        got = compiled(q, k, v, qb, kb, vb)
        torch.cuda.synchronize()
        out["compile_seconds"] = round(time.time() - t0, 2)
        again = compiled(q, k, v, qb, kb, vb)
        diffs = [float((g.float() - e.float()).abs().max()) for g, e in zip(got, eager)]
        out.update(compiled=True, max_abs_diff=max(diffs),
                   bitwise_equal=all(torch.equal(g, e) for g, e in zip(got, eager)),
                   repeat_bitwise_equal=all(torch.equal(g, a) for g, a in zip(got, again)))
        try:
            gm = torch._dynamo.explain(block)(q, k, v, qb, kb, vb)
            out.update(graphs=gm.graph_count, graph_breaks=gm.graph_break_count,
                       ops=sorted({str(n.target) for g in gm.graphs for n in g.graph.nodes
                                   if n.op == "call_function" and "flashcore" in str(n.target)}))
        except Exception as exc:          # explain is a diagnostic: its failure does not fail the check
            out["explain_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    except Exception as exc:
        out.update(compiled=False, error=f"{type(exc).__name__}: {str(exc)[:1000]}")
    out["passed"] = bool(out.get("compiled") and out.get("bitwise_equal"))
    return out


def graph_check() -> dict:
    """The eager call captured in a CUDA graph (after a warm-up call) — with GQA and a negative scale, so the
    library's repeat of k, v and negation of q are captured too: replays equal eager bit for bit, also after new
    values are copied into the captured inputs."""
    import torch

    import flashcore

    q, k, v = inputs(1, 8, 512, 64, H_kv=2, seed=3)
    opts = dict(scale=-0.125, enable_gqa=True)
    out = dict(call="B1 H8 H_kv2 S512 D64, scale=-0.125, enable_gqa=True")
    try:
        flashcore.attention(q, k, v, **opts)                     # warm-up: compile and validate before capture
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            o = flashcore.attention(q, k, v, **opts)
        g.replay()
        torch.cuda.synchronize()
        first = torch.equal(o, flashcore.attention(q, k, v, **opts))
        q2, k2, v2 = inputs(1, 8, 512, 64, H_kv=2, seed=4)
        q.copy_(q2), k.copy_(k2), v.copy_(v2)
        g.replay()
        torch.cuda.synchronize()
        second = torch.equal(o, flashcore.attention(q2, k2, v2, **opts))
        out.update(captured=True, replay_bitwise_equal=first, new_inputs_bitwise_equal=second)
    except Exception as exc:
        out.update(captured=False, error=f"{type(exc).__name__}: {str(exc)[:1000]}")
    out["passed"] = bool(out.get("captured") and out.get("replay_bitwise_equal")
                         and out.get("new_inputs_bitwise_equal"))
    return out


def _thread_cases(n: int) -> List[dict]:
    """Per-thread problems: four mixes of what the library runs, in turn (the base case, GQA 8/2, a negative scale,
    MQA without enable_gqa), each thread its own inputs."""
    mixes = [dict(H_kv=8, scale=None, gqa=False), dict(H_kv=2, scale=None, gqa=True),
             dict(H_kv=8, scale=-0.3, gqa=False), dict(H_kv=1, scale=0.2, gqa=False)]
    return [dict(mixes[t % len(mixes)], dtype="float16", D=64, causal=False, B=1, H=8, S=256 + 64 * (t % 3),
                 S_kv=256 + 64 * (t % 3), seed=100 + t) for t in range(n)]


def concurrency_check(threads: int = 8, streams: int = 2, calls: int = 20) -> dict:
    """``threads`` threads, each on stream t % ``streams``, each making ``calls`` calls on its own problem (four
    feature mixes in turn) at once; every output bitwise equal to the serial call's."""
    import torch

    import flashcore

    cases = _thread_cases(threads)
    data = [inputs(c["B"], c["H"], c["S"], c["D"], c["dtype"], c["H_kv"], c["S_kv"], c["seed"]) for c in cases]
    call = [lambda d=d, c=c: flashcore.attention(*d, scale=c["scale"], enable_gqa=c["gqa"])
            for d, c in zip(data, cases)]
    serial = [f() for f in call]
    torch.cuda.synchronize()
    pool = [torch.cuda.Stream() for _ in range(streams)]
    for s in pool:
        s.wait_stream(torch.cuda.current_stream())
    results: List[list] = [[] for _ in range(threads)]
    errors: List[str] = []
    barrier = threading.Barrier(threads)

    def work(t):
        try:
            barrier.wait()
            with torch.cuda.stream(pool[t % streams]):
                for _ in range(calls):
                    results[t].append(call[t]())
        except Exception as exc:
            errors.append(f"thread {t}: {type(exc).__name__}: {str(exc)[:300]}")

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    torch.cuda.synchronize()
    equal = sum(1 for t in range(threads) for o in results[t] if torch.equal(o, serial[t]))
    total = sum(len(r) for r in results)
    return dict(threads=threads, streams=streams, calls_per_thread=calls, outputs=total, bitwise_equal=equal,
                errors=errors, features=[{k: c[k] for k in ("dtype", "D", "H_kv", "scale", "gqa")} for c in cases],
                passed=not errors and total == threads * calls and equal == total)


def compile_race_check(threads: int = 16) -> dict:
    """The process's first call (the base build, not compiled yet in this process), made by ``threads`` threads at
    once (a barrier releases them together), with an empty compile cache directory so NVRTC really runs: compiles
    counted (must be 1), every thread's output bitwise equal."""
    import tempfile

    import torch

    import flashcore

    from . import api
    from . import compile as compile_mod

    f = RACE_FEATURES
    q, k, v = inputs(1, 8, 333, f["D"], f["dtype"], 8 // f["group"], seed=7)
    loads, nvrtc = [], []
    real_load, real_nvrtc, real_dir = api._load, compile_mod.nvrtc_compile, compile_mod.CACHE_DIR

    def counted_load(*a, **kw):
        loads.append(threading.get_ident())
        return real_load(*a, **kw)

    def counted_nvrtc(*a, **kw):
        nvrtc.append(1)
        return real_nvrtc(*a, **kw)

    outs: List = [None] * threads
    errors: List[str] = []
    barrier = threading.Barrier(threads)

    def work(t):
        try:
            barrier.wait()
            outs[t] = flashcore.attention(q, k, v, is_causal=f["causal"], enable_gqa=f["group"] > 1)
        except Exception as exc:
            errors.append(f"thread {t}: {type(exc).__name__}: {str(exc)[:300]}")

    with tempfile.TemporaryDirectory(prefix="flashcore-race-") as tmp:
        api._load, compile_mod.nvrtc_compile, compile_mod.CACHE_DIR = counted_load, counted_nvrtc, type(real_dir)(tmp)
        t0 = time.time()
        try:
            ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            torch.cuda.synchronize()
        finally:
            api._load, compile_mod.nvrtc_compile, compile_mod.CACHE_DIR = real_load, real_nvrtc, real_dir
    ok = [o for o in outs if o is not None]
    equal = sum(1 for o in ok if torch.equal(o, ok[0])) if ok else 0
    return dict(threads=threads, features=dict(f), loads=len(loads), nvrtc_compiles=len(nvrtc),
                seconds=round(time.time() - t0, 2), outputs=len(ok), bitwise_equal=equal, errors=errors,
                passed=not errors and len(loads) == 1 and len(ok) == threads and equal == threads)


def device1_check() -> dict:
    """A call with tensors on device 1 while device 0 is current (and from a thread that never used the GPU):
    checked against the fp64 reference by the pass rule. Not tested where fewer than two GPUs are visible."""
    import torch

    import flashcore

    n = torch.cuda.device_count()
    if n < 2:
        return dict(tested=False, visible_gpus=n, note=f"not tested: {n} GPU visible", passed=None)
    from .fuzz import check_case

    case = dict(B=1, H=8, S=300, S_kv=300, seed=9, dtype="float16", D=64, causal=False, H_kv=4, enable_gqa=True)
    out = dict(tested=True, visible_gpus=n, device=torch.cuda.get_device_name(1))
    try:
        with torch.cuda.device(0):
            chk = check_case(lambda q, k, v, o: o.copy_(flashcore.attention(q, k, v, enable_gqa=True)), case,
                             device="cuda:1", kernel="flashcore")
        q, k, v = inputs(1, 8, 300, 64, H_kv=4, seed=9, device="cuda:1")
        ref = flashcore.attention(q, k, v, enable_gqa=True)
        box: list = []
        th = threading.Thread(target=lambda: box.append(flashcore.attention(q, k, v, enable_gqa=True)))
        th.start()
        th.join()
        torch.cuda.synchronize(1)
        out.update(check=chk, fresh_thread_bitwise_equal=bool(box and torch.equal(box[0], ref)),
                   output_device=str(ref.device))
        out["passed"] = bool(chk["passed"] and out["fresh_thread_bitwise_equal"] and ref.device.index == 1)
    except Exception as exc:
        out.update(error=f"{type(exc).__name__}: {str(exc)[:1000]}", passed=False)
    return out


def causal_flops(B: int, H: int, S: int, S_kv: int, D: int, causal: bool) -> float:
    """FLOPs of the forward (4·D per query-key pair; causal: only the pairs j ≤ i, top-left aligned)."""
    pairs = sum(min(i + 1, S_kv) for i in range(S)) if causal else S * S_kv
    return 4.0 * B * H * pairs * D


def measure_features(run, shapes, features, graph_samples: int = 20, calls: int = 100, samples: int = 5
                     ) -> List[dict]:
    """Per feature and shape: check flashcore against the fp64 reference (:func:`flashcore.fuzz.check_case`), then
    time it beside SDPA's cuDNN backend by CUDA-graph replay (SDPA's default backend where cuDNN refuses the
    feature: the row of cuDNN's refusal says why), and the eager call beside SDPA's eager call (default backend,
    what a user calls: ``eager_us`` on both rows). A kernel that fails its check is not timed. The features that need
    kernel variants awaiting their GPU check run under :func:`flashcore.api.unverified_variants` (this is that check;
    their rows say ``awaiting_gpu_check``)."""
    from . import api

    rows = []
    for B, H, S in shapes:
        for name in features:
            f = FEATURES[name]
            with (api.unverified_variants() if f["unverified"] else contextlib.nullcontext()):
                rows += _measure_feature(run, B, H, S, name, graph_samples, calls, samples)
    return rows


def _measure_feature(run, B: int, H: int, S: int, name: str, graph_samples: int, calls: int, samples: int
                     ) -> List[dict]:
    """One feature at one shape (:func:`measure_features`): its rows."""
    import torch

    import flashcore

    from .fuzz import check_case

    rows: List[dict] = []
    f = FEATURES[name]
    D, dtype, causal, H_kv = f["D"], f["dtype"], f["causal"], H // f["group"]
    gqa = H_kv != H
    case = dict(B=B, H=H, S=S, S_kv=S, seed=S + D, dtype=dtype, D=D, causal=causal, H_kv=H_kv, enable_gqa=gqa)
    common = dict(feature=name, H_kv=H_kv, stage="feature", awaiting_gpu_check=f["unverified"])

    def ours(q, k, v, causal=causal, gqa=gqa):
        return flashcore.attention(q, k, v, is_causal=causal, enable_gqa=gqa)

    kid = "flashcore"
    try:
        kid = flashcore.kernel_for((B, H, S, D), (B, H_kv, S, D), dtype=dtype, is_causal=causal).kernel
        chk = check_case(lambda q, k, v, o: o.copy_(ours(q, k, v)), case, runs=2, kernel=kid)
    except Exception as exc:
        chk = dict(passed=False, error=f"{type(exc).__name__}: {str(exc)[:500]}")
        torch.cuda.synchronize()
    verdict = {k_: chk.get(k_) for k_ in ("max_abs_err", "passed", "deterministic", "tol", "sdpa_err",
                                          "baseline", "error") if chk.get(k_) is not None}
    if not chk.get("passed"):                     # not timed: the row says why
        rows.append(run.add_result(kid, B, H, S, D, dtype=dtype, causal=causal, **common, **verdict))
        return rows
    q, k, v = inputs(B, H, S, D, dtype, H_kv, seed=404)
    flops = causal_flops(B, H, S, S, D, causal)
    timed = [(kid, lambda: ours(q, k, v))]
    for pname, fn in (("sdpa_cudnn", _sdpa(q, k, v, causal, "sdpa_cudnn")),
                      ("sdpa_default", _sdpa(q, k, v, causal))):
        try:
            fn()
            torch.cuda.synchronize()
            timed.append((pname, fn))
            break                                 # cuDNN if it runs the feature, else SDPA's default
        except Exception as exc:
            rows.append(run.add_result(pname, B, H, S, D, dtype=dtype, causal=causal, **common,
                                       error=f"{type(exc).__name__}: {str(exc)[:300]}"))
            torch.cuda.synchronize()
    eager, eager_error = {}, None
    try:
        eager = eager_cost({kid: timed[0][1], "sdpa_eager": _sdpa(q, k, v, causal)}, calls=calls,
                           samples=samples)
    except Exception as exc:
        eager_error = f"{type(exc).__name__}: {str(exc)[:300]}"
        torch.cuda.synchronize()
    for cid, fn in timed:
        t, err = None, None
        try:
            t = kernel_time(fn, graph_samples)
        except Exception as exc:
            err = f"{type(exc).__name__}: {str(exc)[:300]}"
            torch.cuda.synchronize()
        e = eager.get(kid if cid == kid else "sdpa_eager", {})
        fields = dict(common, eager_us=e.get("median_us"), eager_p10_us=e.get("p10_us"),
                      eager_p90_us=e.get("p90_us"), eager_timing=e.get("timing"),
                      eager_of=cid if cid == kid else "sdpa_default",
                      tflops=(flops / (t.median_us * 1e-6) / 1e12) if t else None)
        if err or eager_error:
            fields["error"] = err or eager_error
        if cid == kid:
            fields.update(verdict)
        rows.append(run.add_result(cid, B, H, S, D, dtype=dtype, causal=causal, timing=t, **fields))
    timed.clear()
    torch.cuda.empty_cache()
    return rows


def measure(run, params: dict) -> None:
    """Everything above into ``run`` (rows and extra); the race first, while its variant is still uncompiled."""
    p = dict(DEFAULTS)
    p.update(params or {})
    t0 = time.time()
    seconds = {}

    def step(name, fn):
        t = time.time()
        try:
            return fn()
        finally:
            seconds[name] = round(time.time() - t, 2)

    run.extra["compile_race"] = step("compile_race", lambda: compile_race_check(p["race_threads"]))
    step("eager", lambda: measure_eager(run, [tuple(s) for s in p["shapes"]], p["calls"], p["samples"],
                                        p["graph_samples"]))
    run.extra["breakdown"] = step("breakdown", lambda: host_profile(MISSION, calls=p["stage_calls"], fake=False))
    run.extra["compile"] = step("compile", compile_check)
    run.extra["cuda_graph"] = step("cuda_graph", graph_check)
    run.extra["concurrency"] = step("concurrency", lambda: concurrency_check(p["threads"], p["streams"],
                                                                           p["thread_calls"]))
    run.extra["device1"] = step("device1", device1_check)
    step("features", lambda: measure_features(run, [tuple(s) for s in p["feature_shapes"]], p["features"],
                                              p["graph_samples"]))
    run.extra["summary"] = summary(run.results, run.extra)
    run.extra["seconds"] = dict(seconds, total=round(time.time() - t0, 1))


# ------------------------------------------------------------------------------------------- from a record
def summary(results: List[dict], extra: dict) -> dict:
    """The verdicts a reader wants first, computed from the rows and checks (stored in the record, recomputed by
    the page from the same data)."""
    eager = {}
    for r in results:
        if r.get("stage") == "eager" and r["kernel"] == "api_eager":
            sd = next((x for x in results if x.get("stage") == "eager" and x["kernel"] == "sdpa_eager"
                       and (x["B"], x["H"], x["S"], x["D"]) == (r["B"], r["H"], r["S"], r["D"])), None)
            if sd:
                eager[f"{r['B']},{r['H']},{r['S']},{r['D']}"] = dict(
                    api_us=r["median_us"], sdpa_us=sd["median_us"], ratio=r["median_us"] / sd["median_us"],
                    goal_met=r["median_us"] <= sd["median_us"], moonshot_met=r["median_us"] <= 0.5 * sd["median_us"],
                    tie=_overlap(r, sd))
    feats = [r for r in results if r.get("stage") == "feature" and r.get("feature")]
    feature_pass = {f"{r['feature']}@{r['B']},{r['H']},{r['S']}": r.get("passed") for r in feats
                    if r["kernel"] not in ("sdpa_cudnn", "sdpa_default")}
    checks = {name: (extra.get(name) or {}).get("passed") for name in
              ("compile", "cuda_graph", "concurrency", "compile_race", "device1")}
    return dict(eager=eager, features_passed=feature_pass, checks=checks)


def _overlap(a: dict, b: dict) -> bool:
    """Two timings tie when their p10–p90 ranges overlap."""
    return not (a["p90_us"] < b["p10_us"] or b["p90_us"] < a["p10_us"])


def _fmt_us(x) -> str:
    return "—" if x is None else (f"{x:.3g}" if x < 100 else f"{x:.0f}")


def page_markdown(rec) -> str:
    """The library page's measured part, from a library record: eager cost vs SDPA, where the host time goes,
    torch.compile / CUDA graph / concurrency / device checks, features against cuDNN. Every number is the
    record's; every comparison is computed here."""
    res = rec["results"]
    ext = rec.get("extra", {})
    prov = rec["provenance"]
    rel = f"runs/{rec.dir.parent.name}/{rec['run_id']}/run.json" if getattr(rec, "path", None) else rec["run_id"]
    out = [f"Measured on {prov.get('gpu')} ({prov.get('date', '')[:10]}, commit `{str(prov.get('commit'))[:7]}`, "
           f"torch {prov.get('torch')}); record `{rel}`.", ""]
    eager = [r for r in res if r.get("stage") == "eager"]
    out += ["**What a call costs the caller (eager, back-to-back).**", "",
            "| shape | flashcore µs | SDPA µs | ratio | verdict | host µs | kernel µs |",
            "|---|---|---|---|---|---|---|"]
    for r in eager:
        if r["kernel"] != "api_eager":
            continue
        sd = next((x for x in eager if x["kernel"] == "sdpa_eager" and (x["B"], x["H"], x["S"]) ==
                   (r["B"], r["H"], r["S"])), None)
        if sd is None:
            continue
        ratio = r["median_us"] / sd["median_us"]
        verdict = ("tie (p10–p90 overlap)" if _overlap(r, sd) else
                   ("moonshot met (≤ 0.5×)" if ratio <= 0.5 else "goal met (≤ 1.0×)" if ratio <= 1 else
                    "slower than SDPA"))
        out.append(f"| {_shape(r)} | {_fmt_us(r['median_us'])} "
                   f"({_fmt_us(r['p10_us'])}–{_fmt_us(r['p90_us'])}) | {_fmt_us(sd['median_us'])} "
                   f"({_fmt_us(sd['p10_us'])}–{_fmt_us(sd['p90_us'])}) | {ratio:.2f} | {verdict} | "
                   f"{_fmt_us(r.get('host_us'))} / {_fmt_us(sd.get('host_us'))} | "
                   f"{_fmt_us(r.get('kernel_us'))} / {_fmt_us(sd.get('kernel_us'))} |")
    if eager:
        out += ["", "µs per call, median (p10–p90). *flashcore / SDPA:* " + str(eager[0].get("timing")) +
                ". *host µs* (ours / SDPA): the host's wall-clock per call. *kernel µs* (ours / SDPA): the same call "
                "with the host removed — " + str(eager[0].get("kernel_timing")) + ".", ""]
    bd = ext.get("breakdown")
    if bd:
        st = bd["stages"]
        names = [("key", "cache key (shapes, strides, dtypes, devices, alignment, flags)"), ("lookup", "cache lookup"),
                 ("alloc", "output allocation (torch.empty)"), ("stream", "current raw stream"),
                 ("launch", "prepared launch (argument block + cuLaunchKernel)"), ("rest", "the call's own Python")]
        out += [f"**Where the host time goes** (B1 H8 S512 D64; each stage timed alone, median of loops of ≤ 500 "
                f"calls{', the launch faked on a CPU' if bd.get('fake') else ''}):", "",
                "| stage | µs per call | share |", "|---|---|---|"]
        for n_, what in names:
            out.append(f"| {what} | {st[n_]:.2f} | {100 * st[n_] / st['total']:.0f} % |")
        out.append(f"| **the whole call** | **{st['total']:.2f}** | |")
        top = [t for t in bd.get("top", []) if "library_bench" not in t["function"]][:6]
        if top:
            out += ["", "cProfile, own time per call (profiler overhead included): " +
                    "; ".join(f"`{t['function']}` {t['own_us']:.2f} µs" for t in top) + "."]
        out.append("")
    checks = [("torch.compile, fullgraph", ext.get("compile")), ("CUDA-graph capture", ext.get("cuda_graph")),
              ("8 threads on 2 streams vs serial", ext.get("concurrency")),
              ("first call from 16 threads (one compile)", ext.get("compile_race")),
              ("a tensor on device 1", ext.get("device1"))]
    out += ["**Checks.**", "", "| check | result | detail |", "|---|---|---|"]
    for name, c in checks:
        if c is None:
            out.append(f"| {name} | — | this record predates the check |")
            continue
        result = "not tested" if c.get("passed") is None else ("passed" if c["passed"] else "**FAILED**")
        out.append(f"| {name} | {result} | {_check_detail(name, c)} |")
    feats = [r for r in res if r.get("stage") == "feature"]
    if feats:
        out += ["", "**Features against cuDNN** (µs by CUDA-graph replay — SDPA's cuDNN backend, or its default "
                "backend where cuDNN refuses the feature (*default*); in brackets the eager µs per call, SDPA's "
                "with its default backend as a user calls it; TFLOP/s ours / SDPA, counting only the unmasked "
                "pairs):", "",
                "| feature | shape | flashcore µs | SDPA µs | ratio | check | TFLOP/s |",
                "|---|---|---|---|---|---|---|"]
        for r in feats:
            if r["kernel"].startswith("sdpa_"):
                continue
            peer = next((x for x in feats if x["kernel"].startswith("sdpa_") and x.get("feature") == r.get("feature")
                         and (x["B"], x["H"], x["S"]) == (r["B"], r["H"], r["S"]) and x.get("median_us")), None)
            ratio = (r["median_us"] / peer["median_us"]) if peer and r.get("median_us") else None
            tie = peer is not None and r.get("median_us") is not None and _overlap(r, peer)
            gqa = r.get("H_kv") not in (None, r["H"])
            what = " · ".join([{"float16": "fp16", "bfloat16": "bf16"}.get(r["dtype"], r["dtype"]), f"D{r['D']}"]
                              + (["causal"] if r.get("causal") else [])
                              + ([f"H_kv {r['H_kv']}" + (" in kernel" if r.get("awaiting_gpu_check") else
                                                         " repeated")] if gqa else [])) \
                + (" †" if r.get("awaiting_gpu_check") else "")
            mine = f"{_fmt_us(r.get('median_us'))} [{_fmt_us(r.get('eager_us'))}]"
            theirs = (("" if peer["kernel"] == "sdpa_cudnn" else "default ") + f"{_fmt_us(peer['median_us'])} "
                      f"[{_fmt_us(peer.get('eager_us'))}]") if peer else "—"
            ratio_s = "—" if ratio is None else f"{ratio:.2f}" + (" (tie)" if tie else "")
            check = "ok" if r.get("passed") else "**FAILED** " + str(r.get("error") or "")[:80]
            out.append(f"| {what} | {_shape(r)} | {mine} | {theirs} | {ratio_s} | {check} | "
                       f"{_fmt_num(r.get('tflops'))} / {_fmt_num(peer.get('tflops') if peer else None)} |")
        if any(r.get("awaiting_gpu_check") for r in feats):
            out += ["", "† A kernel variant the library does not run yet (it refuses the feature with an error that "
                    "says so): these rows, run under `flashcore.api.unverified_variants()`, are its GPU check. "
                    "*repeated*: the library repeats k and v over the groups before the launch (what it does today); "
                    "*in kernel*: the variant that maps the groups itself."]
    return "\n".join(out) + "\n"


def _shape(r: dict) -> str:
    return f"B{r['B']} H{r['H']} S{r['S']}" + (f" D{r['D']}" if r.get("stage") == "eager" else "")


def _fmt_num(x) -> str:
    return "—" if x is None else f"{x:.0f}" if x >= 10 else f"{x:.2g}"


def _check_detail(name: str, c: dict) -> str:
    if c.get("error"):
        return str(c["error"])[:160]
    if "fullgraph" in c:
        return (f"compiled in {c.get('compile_seconds')} s; {c.get('graphs', '?')} graph, "
                f"{c.get('graph_breaks', '?')} breaks; max |compiled − eager| = {c.get('max_abs_diff')}; "
                f"bitwise equal: {c.get('bitwise_equal')}")
    if "captured" in c:
        return (f"replay equals eager: {c.get('replay_bitwise_equal')}; after new inputs: "
                f"{c.get('new_inputs_bitwise_equal')}")
    if "streams" in c:
        return f"{c['bitwise_equal']}/{c['outputs']} outputs bitwise equal to the serial call's"
    if "loads" in c:
        return (f"{c['threads']} threads: {c['loads']} compile(s) (NVRTC ran {c['nvrtc_compiles']}×), "
                f"{c['bitwise_equal']}/{c['outputs']} outputs equal, {c['seconds']} s")
    if "visible_gpus" in c:
        return c.get("note") or (f"{c.get('device')}: check passed {c.get('check', {}).get('passed')}, fresh "
                                 f"thread bitwise equal {c.get('fresh_thread_bitwise_equal')}")
    return ""


def newest(gpu: Optional[str] = None, runs_dir=None):
    """The newest library record (of ``gpu``, a runs/ folder name, if given), or None."""
    from . import records

    kw = dict(runs_dir=runs_dir) if runs_dir else {}
    try:
        return records.newest(NOTEBOOK, device=gpu, **kw)
    except records.RecordError:
        return None


def write_page(path, gpu: Optional[str] = None, runs_dir=None):
    """Write the library page's measured part (``book/generated/library_record.md``, included by
    ``book/library.md``): from the newest library record of ``gpu``, or a line saying there is none."""
    from pathlib import Path

    rec = newest(gpu, runs_dir)
    text = page_markdown(rec) if rec is not None else (
        "*No library record" + (f" on `{gpu}`" if gpu else "") + " yet: `python -m flashcore library` on a GPU "
        "writes one.*\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------------------------- CLI
def run_library(params: Optional[dict] = None, runs_dir=None, provenance: Optional[dict] = None):
    """Measure into one record; returns its path."""
    from . import records

    p = dict(DEFAULTS)
    p.update(params or {})
    kw = dict(runs_dir=runs_dir) if runs_dir else {}
    run = records.Run(NOTEBOOK, params=p, command=os.environ.get("FLASHCORE_COMMAND", " ".join(sys.argv)),
                      provenance=provenance, **kw)
    measure(run, p)
    return run.save()
