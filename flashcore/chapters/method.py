"""Chapter 0 — the method: the problem in numbers, the H100's floors, the SDPA peers, and how we time.

Live work (``measure``) and the charts/tables the notebook shows (``plot_*``, ``*_table``), all drawn from a record.
"""
from __future__ import annotations

from .. import bench, plots, profile
from ..records import Record

NOTEBOOK = "00_method"
DEFAULTS = dict(B=1, H=8, S=512, D=64, big=(4, 16, 4096, 64), samples=50)

# A tiny kernel whose only work is exp2 on the special-function unit: the exp ceiling, measured.
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


def _ceilings(samples: int) -> dict:
    """Measured ceilings: fp16 tensor GEMM TFLOP/s, device-copy TB/s, exp2/s, empty-kernel launch µs."""
    import cupy
    import torch

    out = {}
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    t = bench.time_graph(lambda: torch.matmul(a, b), launches_per_graph=5, samples=10)
    out["gemm_fp16_tflops"] = 2 * 8192 ** 3 / (t.median_us * 1e-6) / 1e12
    out["gemm_method"] = "torch.matmul 8192³ fp16 (cuBLAS), " + t.method
    del a, b
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = bench.time_graph(lambda: dst.copy_(src), launches_per_graph=5, samples=10)
    out["copy_tbps"] = 2 * src.numel() / (t.median_us * 1e-6) / 1e12
    out["copy_method"] = "1 GiB device-to-device copy, bytes read + written, " + t.method
    del src, dst
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    k = cupy.RawKernel(EXP2_KERNEL, "exp2_throughput")
    sink = cupy.zeros(1, dtype=cupy.float32)
    iters, blocks, threads = 4096, sms * 8, 256

    def exp_launch():
        with cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
            k((blocks,), (threads,), (sink, cupy.int32(iters)))

    t = bench.time_graph(exp_launch, launches_per_graph=5, samples=10)
    out["exp2_per_s"] = 4.0 * iters * blocks * threads / (t.median_us * 1e-6)
    out["exp2_method"] = f"ex2.approx.f32, {blocks}×{threads} threads × {4 * iters} each, " + t.method

    def empty():
        from ..driver import EMPTY_KERNEL
        fn = _EMPTY.setdefault("fn", cupy.RawKernel(EMPTY_KERNEL, "flashcore_empty_kernel"))
        with cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
            fn((1,), (32,), ())

    out["empty_graph"] = bench.time_graph(empty, samples=samples).row()
    out["empty_events"] = bench.time_events(empty, samples=samples * 2).row()
    out["empty_loop"] = bench.time_eager_loop(empty).row()
    out["empty_fn"] = empty
    return out


_EMPTY: dict = {}


def measure(run, params: dict) -> None:
    import torch

    from ..check import check_kernel, make_inputs

    B, H, S, D = (int(params[k]) for k in ("B", "H", "S", "D"))
    samples = int(params.get("samples", 50))
    big = tuple(int(x) for x in params.get("big", DEFAULTS["big"]))
    ceil = _ceilings(samples)
    empty_fn = ceil.pop("empty_fn")
    run.extra["ceilings"] = ceil

    # 1. The SDPA backends at the mission shape: checked against fp64, then timed, all in this process.
    q, k, v = make_inputs(B, H, S, D, seed=run.params.get("seed", 2026))
    fns = bench.sdpa_callables(q, k, v)
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel

    def as_kernel(name):
        def launch(q_, k_, v_, o_):
            backends = {"sdpa_cudnn": "CUDNN_ATTENTION", "sdpa_flash": "FLASH_ATTENTION",
                        "sdpa_efficient": "EFFICIENT_ATTENTION"}
            if name in backends:
                from torch.nn.attention import SDPBackend
                with sdpa_kernel([getattr(SDPBackend, backends[name])]):
                    o_.copy_(F.scaled_dot_product_attention(q_, k_, v_))
            else:
                o_.copy_(F.scaled_dot_product_attention(q_, k_, v_))
        return launch

    methods = {}
    for name, fn in fns.items():
        chk = check_kernel(as_kernel(name), B, H, S, D, seed=7, kernel=name)
        t = bench.time_graph(fn, samples=samples)
        run.add_result(name, B, H, S, D, check=chk, timing=t, tflops=bench.tflops(B, H, S, D, t.median_us))
        if name in ("sdpa_cudnn", "sdpa_flash"):
            methods[name] = dict(graph=t.row(), events=bench.time_events(fn, samples=samples * 2).row(),
                                 loop=bench.time_eager_loop(fn).row(),
                                 graph_l2_flushed=bench.time_graph(fn, samples=samples, flush=True).row())
    methods["empty_kernel"] = dict(graph=ceil["empty_graph"], events=ceil["empty_events"], loop=ceil["empty_loop"])

    # 2. The same backends at a shape that fills the chip.
    Bb, Hb, Sb, Db = big
    qb, kb, vb = make_inputs(Bb, Hb, Sb, Db, seed=11)
    for name, fn in bench.sdpa_callables(qb, kb, vb).items():
        t = bench.time_graph(fn, launches_per_graph=5, samples=max(10, samples // 3))
        run.add_result(name, Bb, Hb, Sb, Db, timing=t, tflops=bench.tflops(Bb, Hb, Sb, Db, t.median_us))
    del qb, kb, vb
    torch.cuda.empty_cache()

    # 3. Nsight Compute: which kernel each backend launches (full set), and ncu's own duration with the clocks
    #    as the driver runs them (clock control off) beside the default (locked to base).
    shape = f"{B},{H},{S},{D}"
    rep_full = profile.ncu_profile(run.dir / "sdpa_backends_full.ncu-rep", shapes=shape,
                                   sdpa=["cudnn", "flash", "efficient", "default"], empty=True)
    rep_free = profile.ncu_profile(run.dir / "sdpa_backends_clock_free.ncu-rep", shapes=shape,
                                   sdpa=["cudnn", "flash", "efficient", "default"], empty=True,
                                   sections=["SpeedOfLight", "LaunchStats"], clock_control="none")
    for row in run.results:
        if row["S"] == S and row["kernel"].startswith("sdpa_"):
            row["ncu_report"] = run.rel(rep_full)
    run.extra["ncu_reports"] = dict(full=run.rel(rep_full), clock_free=run.rel(rep_free))
    run.extra["timing_methods"] = methods
    run.extra["shapes"] = dict(mission=[B, H, S, D], big=list(big))


# ------------------------------------------------------------------------------------------------ from a record
def problem_numbers(B=1, H=8, S=512, D=64) -> dict:
    """The mission shape in numbers (no measurement involved)."""
    return dict(flops=bench.attention_flops(B, H, S, D), bytes=bench.attention_bytes(B, H, S, D),
                scores=B * H * S * S, exps=B * H * S * S, intensity=bench.attention_flops(B, H, S, D) /
                bench.attention_bytes(B, H, S, D))


def floors(rec: Record) -> dict:
    """Lower bounds on the mission shape's time from the measured ceilings (µs)."""
    B, H, S, D = rec.ext("shapes")["mission"]
    c = rec.ext("ceilings")
    n = problem_numbers(B, H, S, D)
    return {"tensor (GEMM rate)": n["flops"] / (c["gemm_fp16_tflops"] * 1e12) * 1e6,
            "exp (ex2 rate)": n["exps"] / c["exp2_per_s"] * 1e6,
            "HBM (copy rate)": n["bytes"] / (c["copy_tbps"] * 1e12) * 1e6,
            "launch (empty kernel, graph)": c["empty_graph"]["median_us"]}


def backend_table(rec: Record):
    """SDPA backends: µs at the mission shape, TFLOP/s at both shapes, error, and the kernel ncu saw."""
    import pandas as pd

    B, H, S, D = rec.ext("shapes")["mission"]
    Bb, Hb, Sb, Db = rec.ext("shapes")["big"]
    launched = kernels_launched(rec)
    rows = []
    for name in bench.SDPA_BACKENDS:
        m = rec.row(kernel=name, S=S)
        bg = rec.row(kernel=name, S=Sb)
        rows.append({"backend": name, f"µs (B{B} H{H} S{S})": m["median_us"], "p10–p90 µs":
                     f"{m['p10_us']:.2f}–{m['p90_us']:.2f}", "TFLOP/s": m["tflops"],
                     f"TFLOP/s (B{Bb} H{Hb} S{Sb})": bg["tflops"], "max |err| vs fp64": f"{m['max_abs_err']:.2e}",
                     "kernel(s) launched (ncu)": ", ".join(launched.get(name, ["?"]))})
    return pd.DataFrame(rows).set_index("backend")


def kernels_launched(rec: Record) -> dict:
    """{backend: [kernel names]} read from the committed full ncu report."""
    rows = profile.read_report(rec.file(rec.ext("ncu_reports")["full"]))
    out: dict = {}
    for r in rows:
        key = r["launch_label"].split(" ")[0] if r["launch_label"] else "?"
        short = r["kernel_name"] if len(r["kernel_name"]) < 70 else r["kernel_name"][:67] + "…"
        out.setdefault(key, []).append(short)
    return out


def timing_table(rec: Record):
    """The timing-method validation: the same kernel by graph replay, per-call events, eager loop, and ncu."""
    import pandas as pd

    m = rec.ext("timing_methods")
    def per_label(report):   # a backend may launch several kernels per call (flash: split-KV + combine)
        out: dict = {}
        for r in profile.read_report(rec.file(rec.ext("ncu_reports")[report])):
            key = r["launch_label"].split(" ")[0]
            out[key] = out.get(key, 0.0) + (r["duration_us"] or 0.0)
        return out

    ncu_base, ncu_free = per_label("full"), per_label("clock_free")
    rows = []
    for name, t in m.items():
        rows.append({"kernel": name, "CUDA-graph replay (median µs)": t["graph"]["median_us"],
                     "graph, L2 flushed": t.get("graph_l2_flushed", {}).get("median_us"),
                     "eager back-to-back loop": t["loop"]["median_us"],
                     "per-call events": t["events"]["median_us"],
                     "ncu gpu__time_duration (clocks free)": ncu_free.get(name),
                     "ncu gpu__time_duration (base clocks)": ncu_base.get(name)})
    return pd.DataFrame(rows).set_index("kernel")


def plot_timing_methods(rec: Record):
    plt = plots.plt()
    df = timing_table(rec)
    fig, ax = plt.subplots(figsize=(8, 3.4))
    df.plot.bar(ax=ax, width=0.8)
    ax.set_ylabel("µs per launch")
    ax.set_title("One kernel, five clocks: what each timing method measures")
    ax.legend(fontsize=7, ncol=2)
    ax.tick_params(axis="x", rotation=0)
    plots.save(fig, "00_method_timing_methods", rec)
    return fig


def plot_backends(rec: Record):
    plt = plots.plt()
    B, H, S, D = rec.ext("shapes")["mission"]
    Bb, Hb, Sb, Db = rec.ext("shapes")["big"]
    names = list(bench.SDPA_BACKENDS)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    us = [rec.row(kernel=n, S=S)["median_us"] for n in names]
    a1.bar(names, us, color=[plots.COLORS.get(n, "gray") for n in names])
    a1.axhline(rec.ext("ceilings")["empty_graph"]["median_us"], color="k", ls=":", lw=1, label="empty kernel")
    a1.set_ylabel("µs (median of graph replays)")
    a1.set_title(f"B{B} H{H} S{S} D{D}")
    a1.legend(fontsize=7)
    tf = [rec.row(kernel=n, S=Sb)["tflops"] for n in names]
    a2.bar(names, tf, color=[plots.COLORS.get(n, "gray") for n in names])
    a2.set_ylabel("TFLOP/s")
    a2.set_title(f"B{Bb} H{Hb} S{Sb} D{Db}")
    for a in (a1, a2):
        a.tick_params(axis="x", rotation=20, labelsize=7)
    plots.save(fig, "00_method_sdpa_backends", rec)
    return fig


def plot_roofline(rec: Record):
    """Measured ceilings (GEMM rate, copy bandwidth) and where each backend lands at both shapes."""
    import numpy as np

    plt = plots.plt()
    c = rec.ext("ceilings")
    peak, bw = c["gemm_fp16_tflops"], c["copy_tbps"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = np.logspace(0, 4, 200)
    ax.loglog(x, np.minimum(peak, bw * x), "k-", lw=1.5, label=f"measured ceilings")
    for shape_key, marker in (("mission", "o"), ("big", "s")):
        B, H, S, D = rec.ext("shapes")[shape_key]
        ai = bench.attention_flops(B, H, S, D) / bench.attention_bytes(B, H, S, D)
        for n in bench.SDPA_BACKENDS:
            r = rec.row(kernel=n, S=S)
            ax.loglog([ai], [r["tflops"]], marker, color=plots.COLORS.get(n, "gray"),
                      label=f"{n} B{B}H{H}S{S}")
    launch_us = c["empty_graph"]["median_us"]
    B, H, S, D = rec.ext("shapes")["mission"]
    ax.axhline(bench.attention_flops(B, H, S, D) / (launch_us * 1e-6) / 1e12, color="gray", ls=":", lw=1,
               label="mission shape if it took one empty launch")
    ax.set_xlabel("arithmetic intensity (FLOP / minimum byte)")
    ax.set_ylabel("TFLOP/s")
    ax.set_title("Roofline with measured ceilings")
    ax.legend(fontsize=6, loc="lower right")
    plots.save(fig, "00_method_roofline", rec)
    return fig
