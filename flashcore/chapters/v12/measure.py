"""Chapter 1's live work: v12, its failed shortcut and its ablation ladders, checked and timed beside the SDPA
peers in one process; v12's correctness over S × B·H; the schedule over B·H; compute-sanitizer; one Nsight Compute
report of the ladder (the book's sections); ptxas resources and SASS counts.

Every check and timing goes through :func:`flashcore.harness.measure.check_then_time`; the GPU is touched only
inside the functions that launch.
"""
from __future__ import annotations

from ... import kernels
from ...harness import bench
from ...harness import measure as harness
from ...specs.v12 import ALONE, BM, BN, LADDER, LADDER_B
from ...tools import profile, sanitize

SDPA = bench.SDPA_BACKENDS
SHORTCUT = "v12_no_4th_barrier"
SANITIZE_TIMEOUT_S = 240


def kernel_ids() -> list:
    """Every kernel of the chapter: v12, the shortcut, the ladder's steps, the fixes alone, the second ladder."""
    ids = ["v12_baseline", SHORTCUT] + LADDER[1:] + ALONE + LADDER_B
    return list(dict.fromkeys(ids))


def bh_pairs(bhs) -> list:
    """B·H → (B, H): 1 → (1, 1), 8 → (1, 8), 64 → (4, 16); any other value n → (1, n)."""
    return [{1: (1, 1), 8: (1, 8), 64: (4, 16)}.get(int(n), (1, int(n))) for n in bhs]


def sweep_shapes(bhs, seqs) -> list:
    """(B, H, S) of v12's correctness sweep."""
    return [(b, h, int(s)) for b, h in bh_pairs(bhs) for s in seqs]


def resources(ids) -> dict:
    """ptxas's view of every kernel (registers, static smem, spills), compiled with nvcc on the host."""
    from ...compile import nvcc_compile

    out = {}
    for kid in ids:
        row = nvcc_compile(kernels.get(kid)).row()
        row.pop("cubin", None)
        out[kid] = row
    return out


def geometry(ids, bh: int, seq: int):
    """(SM count, {id: {grid, block, smem}}) as each kernel is launched at the mission shape on this GPU."""
    from ...compile import load_kernel

    grids, sms = {}, None
    for kid in ids:
        launcher = load_kernel(kernels.get(kid))
        sms = launcher.num_sms
        _, grid, block, smem = launcher.geometry(bh, seq, seq)
        grids[kid] = dict(grid=list(grid), block=list(block), smem=int(smem))
    return sms, grids


def sanitizer(shape: str) -> list:
    """All four compute-sanitizer tools on v12, racecheck on the shortcut (it must see the race): one process per
    tool and kernel, the one verdict rule of :mod:`flashcore.tools.sanitize` applied by the page."""
    return (sanitize.run_jobs(sanitize.TOOLS, ["v12_baseline"], shape, timeout=SANITIZE_TIMEOUT_S)
            + sanitize.run_jobs(["racecheck"], [SHORTCUT], shape, timeout=SANITIZE_TIMEOUT_S))


def ncu_ladder(run, shape: str) -> str:
    """One Nsight Compute report, the book's sections, of v12 and every ladder step at the mission shape."""
    rep = profile.ncu_profile(run.dir / "v12_ladder.ncu-rep", kernels=LADDER, shapes=shape,
                              sections=profile.BOOK_SECTIONS)
    return run.rel(rep)


def sass_counts(ids) -> dict:
    """Static SASS instruction counts (cuobjdump) of each kernel: the evidence that a fix reached the machine."""
    from ...tools import sass

    return {kid: sass.evidence(kernels.get(kid)) for kid in ids}


def measure(run, params: dict) -> None:
    """Fill ``run`` with chapter 1's measurements (the parameters are the notebook's)."""
    import torch

    B, H, S, D = (int(params[k]) for k in ("B", "H", "S", "D"))
    runs, samples = int(params.get("runs", 3)), int(params.get("samples", 20))
    bhs, seqs = params.get("bhs", [1, 8, 64]), params.get("seqs", [128, 384, 512, 1000, 2048])
    ids = kernel_ids()
    run.extra.update(shapes=dict(mission=[B, H, S, D]), ladder=list(LADDER), alone=list(ALONE),
                     ladder_b=list(LADDER_B), tile=[BM, BN])
    try:
        run.extra["resources"] = resources(ids)
    except Exception as exc:                      # no nvcc on this host: the page says so
        run.extra["resources_error"] = str(exc)[:300]
    run.extra["num_sms"], run.extra["grids"] = geometry(ids, B * H, S)
    timing = dict(samples=samples, seed=2026, check_seed=7, check_runs=runs)
    contenders = {kid: harness.kernel(kid) for kid in ids}
    peers = [harness.sdpa(n) for n in SDPA]

    # 1. At the mission shape, one process: the peers; v12 (checked here and over the sweep of S × B·H); every
    #    variant (the shortcut is timed although it fails: it is kept to show the failure); the peers again, as a
    #    drift check between two measurements of the same thing.
    harness.check_then_time(run, peers, B, H, S, D, role="mission", **timing)
    harness.check_then_time(run, [contenders["v12_baseline"]], B, H, S, D, role="mission",
                            check_shapes=sweep_shapes(bhs, seqs), **timing)
    harness.check_then_time(run, [contenders[k] for k in ids if k != "v12_baseline"], B, H, S, D, role="mission",
                            **timing)
    harness.check_then_time(run, peers, B, H, S, D, role="drift", **timing)

    # 2. The schedule in numbers: v12 and the per-tile grid beside cuDNN at S for every other B·H of the sweep.
    for b, h in bh_pairs(bhs):
        if b * h != B * H:
            harness.check_then_time(run, [contenders["v12_baseline"], contenders["v12_abl_1_grid"],
                                          harness.sdpa("sdpa_cudnn")], b, h, S, D, role="schedule", **timing)
    torch.cuda.empty_cache()

    # 3. compute-sanitizer at a small shape (racecheck instruments every shared-memory access).
    if params.get("sanitize", True):
        run.extra["sanitizer"] = sanitizer(params.get("sanitize_shape", "1,2,128,64"))

    # 4. Nsight Compute, the ladder at the mission shape; a failure is recorded, never fatal.
    if params.get("ncu", True):
        try:
            rep = ncu_ladder(run, f"{B},{H},{S},{D}")
            run.extra["ncu_report"] = rep
            for row in run.results:
                if row["kernel"] in LADDER and row.get("role") == "mission":
                    row["ncu_report"] = rep
        except Exception as exc:
            run.extra["ncu_error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
    try:
        run.extra["sass"] = sass_counts(LADDER)
    except Exception as exc:                      # no cuobjdump/nvdisasm on this host
        run.extra["sass_error"] = str(exc)[:300]
