"""Chapter 2 — v11, the pipeline that deadlocked: the as-designed kernel (always built with its watchdog) and the fix.

``v11_pipeline`` is kept to show a failure (``expect_failure=True``) and is only ever built with ``WATCHDOG``: every
wait is bounded, so a launch returns in well under a second and leaves a diagnosis in the buffer that
``flashcore.watchdog`` allocates through ``extra_args`` (then decodes). ``v11_fixed`` is the one-idea fix.
One file per kernel in kernels/v11/; ``WATCHDOG`` (and ``V11_DRAIN`` for v11_fixed) are build modes, not variants.
"""
from flashcore.kernels import KernelSpec, KnownFinding, LaunchShape, LaunchTensors

CHAPTER = "02_v11_deadlock"


def _grid(s: LaunchShape):
    return (s.num_sms, 1, 1)            # persistent: one CTA per SM, each loops over (batch·head)


def _watchdog_args(shape: LaunchShape, tensors: LaunchTensors):
    from flashcore import watchdog

    return watchdog.extra_args(shape, tensors)


# synccheck flags libcu++'s producer_commit() (cp.async.mbarrier.arrive, then mbarrier.arrive, into one phase) in
# every kernel that uses it — the Programming Guide's own pattern included; the chapter's control matrix shows it.
LIBCUXX_COMMIT = (KnownFinding(
    tool="synccheck", kind="Missing wait", frame="producer_commit",
    why="synccheck flags libcu++'s cuda::pipeline producer_commit() itself: the textbook control v11_ctl_guide is "
        "flagged identically, hand-written mbarriers with one arrival per commit are clean (chapter 2, section 6)"),)

SPECS = [
    KernelSpec(id="v11_pipeline", source="v11/v11_pipeline.cu", entry="v11_pipeline", threads=512, grid=_grid,
               defines=(("WATCHDOG", "1"),), parent="v12_baseline", chapter=CHAPTER,
               cross=True, idea="2-stage cuda::pipeline K/V ring fed by the 4 load warps (role-less make_pipeline)",
               extra_args=_watchdog_args, expect_failure=True, tags=("watchdog", "deadlock")),
    KernelSpec(id="v11_fixed", source="v11/v11_fixed.cu", entry="v11_fixed", threads=512, grid=_grid,
               parent="v11_pipeline", chapter=CHAPTER, cross=True,
               idea="every thread acquires and commits (the role-less pipeline counts all 512); load warps copy",
               known_findings=LIBCUXX_COMMIT),
    KernelSpec(id="v11_fixed_roles", source="v11/v11_fixed_roles.cu", entry="v11_fixed_roles", threads=512, grid=_grid,
               parent="v11_pipeline", chapter=CHAPTER, cross=True,
               idea="make_pipeline(block, &state, role): producers = the load warps, who no longer consume",
               known_findings=LIBCUXX_COMMIT),
    KernelSpec(id="v11_fixed_mbarrier", source="v11/v11_fixed_mbarrier.cu", entry="v11_fixed_mbarrier", threads=512,
               grid=_grid, parent="v11_fixed_roles", chapter=CHAPTER, cross=True,
               idea="v11_fixed_roles's protocol on hand-written mbarriers: one cp.async.mbarrier.arrive.noinc per "
                    "commit"),
    KernelSpec(id="v11_fixed_watchdog", source="v11/v11_fixed.cu", entry="v11_fixed", threads=512, grid=_grid,
               defines=(("WATCHDOG", "1"),), parent="v11_fixed", chapter=CHAPTER,
               cross=True, idea="v11_fixed with the watchdog built in (it must finish with no record)",
               extra_args=_watchdog_args, tags=("watchdog",), known_findings=LIBCUXX_COMMIT),
    KernelSpec(id="v11_fixed_roles_watchdog", source="v11/v11_fixed_roles.cu", entry="v11_fixed_roles", threads=512,
               grid=_grid, defines=(("WATCHDOG", "1"),), parent="v11_fixed_roles",
               chapter=CHAPTER, cross=True, idea="v11_fixed_roles with the watchdog built in",
               extra_args=_watchdog_args, tags=("watchdog",), known_findings=LIBCUXX_COMMIT),
    KernelSpec(id="v11_fixed_mbarrier_watchdog", source="v11/v11_fixed_mbarrier.cu", entry="v11_fixed_mbarrier",
               threads=512, grid=_grid, defines=(("WATCHDOG", "1"),),
               parent="v11_fixed_mbarrier", chapter=CHAPTER, cross=True,
               idea="v11_fixed_mbarrier with the watchdog built in", extra_args=_watchdog_args, tags=("watchdog",)),
]


# The synccheck controls (kernels/v11/v11_ctl_*.cu, one file each over kernels/v11/v11_controls.cuh): not attention —
# each CTA writes the column sums of V into every output row — so they carry the "control" tag, which keeps them out
# of dispatch, the fuzz and the sweep. They are a matrix, not a ladder (no parent): each file's header names the
# control it differs from in one thing.
CONTROLS = {   # id → (the control it differs from in one thing, what it is)
    "v11_ctl_guide": (None, "Programming Guide pattern: role-less pipeline, every thread copies, commits, waits, "
                            "releases"),
    "v11_ctl_guide_idle": ("v11_ctl_guide", "the same, half the threads commit without copying (what v11_fixed does)"),
    "v11_ctl_roles": ("v11_ctl_guide", "make_pipeline(..., role): warps 0-3 produce, warps 4-7 consume"),
    "v11_ctl_raw_inc": ("v11_ctl_guide", "hand-written: cp.async.mbarrier.arrive + mbarrier.arrive (what "
                                         "producer_commit does)"),
    "v11_ctl_raw_noinc": ("v11_ctl_raw_inc", "hand-written: cp.async.mbarrier.arrive.noinc is the producer's one "
                                             "arrival"),
    "v11_ctl_raw_waitall": ("v11_ctl_raw_inc", "hand-written: cp.async.wait_all, then one plain mbarrier.arrive"),
}
SPECS += [
    KernelSpec(id=kid, source=f"v11/{kid}.cu", entry=kid, threads=256, grid=lambda s: (s.bh, 1, 1),
               chapter=CHAPTER, cross=True, idea=idea, tags=("control",))
    for kid, (_, idea) in CONTROLS.items()
]
