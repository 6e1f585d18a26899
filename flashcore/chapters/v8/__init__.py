"""Chapter 3 — the v8 ladder: from the original project's best kernel to the library kernel ``flashcore``.

Two records per GPU. ``03_v8_optimization`` (:func:`measure`): every rung — ``v8_seed``, each registered
``v8_<nn>_<idea>`` step and ``flashcore`` — checked at the mission shape, a tail, a tiny and a long length, then
timed beside the SDPA backends and our Triton kernel (the harness's one check-then-time routine); the scaling sweep
of the library kernel against the peers; SASS counts; compute-sanitizer memcheck and racecheck (one verdict rule);
one Nsight Compute report of every rung (the book's sections). ``03_v8_variants`` (:func:`measure_variants`): the
variant sweep that chose ``flashcore`` — v8_07's cluster size × ring depth (and the two-m-tile branch at the chosen
point) as data, each compiled with its ``-D`` defines, checked, then timed beside cuDNN at a few shapes.

``view`` draws the page from the records alone: the ladder as a tree, the waterfall, the worklog (one paragraph
per rung: prediction, measurement, and the step's Nsight Compute evidence), why the steps after 05 do not beat it,
the variant table, the checks, the scaling sweep and the conclusion. Every comparison it prints goes through one
rule (:func:`view.compare`): a gap inside the run-to-run spread is a tie.
"""
NOTEBOOK = "03_v8_optimization"
VARIANTS_NOTEBOOK = "03_v8_variants"      # the chapter's second record: the variant sweep (no page of its own)
LIBRARY = "flashcore"                     # the kernel the ladder ends on

DEFAULTS = dict(B=1, H=8, S=512, D=64, steps="all", tail_S=1000, check_S=[128, 2048],
                sweep_S=[128, 256, 512, 1024, 2048, 4096, 8192, 16384], sweep_BH=[1, 8], big=[4, 16, 4096, 64],
                samples=50, sanitize_shapes="1,2,200,64;1,2,100,64,300", ncu=True, sanitize=True, triton=True)
# The variant sweep: timed at the mission shape (B, H, S, D) and at `shapes` (B, H, S); checked there and at
# `check_shapes` (B, H, S[, S_kv]). The variants themselves are data: measure.VARIANTS.
VARIANT_DEFAULTS = dict(B=1, H=8, S=512, D=64, shapes=[[1, 8, 2048], [4, 16, 4096]],
                        check_shapes=[[1, 8, 1000], [2, 3, 77], [1, 2, 100, 300]], samples=30)

# The charts the page shows, in page order (the browser tests look for each one).
FIGURES = ["03_v8_waterfall", "03_v8_moving_metrics", "03_v8_stalls", "03_v8_scaling"]

# The Nsight Compute metrics each rung's header says its idea should move, the main one first (its chart panel).
MOVING = {
    "v8_seed": ("duration_us",),
    "v8_01_vec_async": ("stall_long_scoreboard",),
    "v8_02_swizzle": ("smem_bank_conflicts",),
    "v8_03_exp2_fewer_barriers": ("stall_barrier", "issue_active_pct"),
    "v8_04_grid_132sm": ("grid_size",),
    "v8_05_mma_registers": ("tensor_pipe_pct", "smem_bank_conflicts"),
    "v8_06_cluster_splitkv": ("sm_throughput_pct", "stall_long_scoreboard"),
    "v8_07_dsmem_push": ("stall_long_scoreboard", "stall_membar"),
    "v8_08_kv_wait_split": ("stall_long_scoreboard", "stall_barrier"),
    "v8_09_two_mtiles": ("issue_active_pct",),
    "v8_10_mbarrier_combine": ("stall_membar",),
    "flashcore": ("duration_us",),
}

from .measure import VARIANTS, Variant, measure, measure_variants, step_ids  # noqa: E402,F401
from .view import *  # noqa: E402,F401,F403

# Each record this chapter writes: notebook id → (measure, its default parameters). `book.chapter` writes the first;
# the notebook (and `python -m flashcore live`, where it reads this) writes both.
RECORDS = {NOTEBOOK: (measure, DEFAULTS), VARIANTS_NOTEBOOK: (measure_variants, VARIANT_DEFAULTS)}


def variants_record(rec, mode: str = "auto", params=None):
    """The variants record beside ``rec``: live — measure it now and save it; replay — the newest variants record of
    ``rec``'s GPU, or None if that GPU has none yet (the page says so)."""
    from ... import book, records

    if book.resolve_mode(mode) == "live":
        return book.chapter(VARIANTS_NOTEBOOK, mode="live", measure=measure_variants,
                            params=dict(VARIANT_DEFAULTS, **(params or {})), show=False, status=False)
    try:
        return records.newest(VARIANTS_NOTEBOOK, device=rec.dir.parent.name, runs_dir=rec.dir.parent.parent)
    except records.RecordError:
        return None
