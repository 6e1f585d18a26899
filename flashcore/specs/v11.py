"""Chapter 2 — v11, the pipeline that deadlocked: the as-designed kernel (always built with its watchdog) and the fix.

``v11_pipeline`` is kept to show a failure (``expect_failure=True``) and is only ever built with ``WATCHDOG``: every
wait is bounded, so a launch returns in well under a second and leaves a diagnosis in the buffer that
``flashcore.watchdog`` allocates through ``extra_args`` (then decodes). ``v11_fixed`` is the one-idea fix.
"""
from flashcore.kernels import KernelSpec, KnownFinding, LaunchShape

CHAPTER = "02_v11_deadlock"
SMEM = 52992          # Q 4608 + K 2×6912 + V 2×6912 + S 8192 + P 4096 + O 8192 + m, l 256 (bytes)


def _grid(s: LaunchShape):
    return (s.num_sms, 1, 1)            # persistent: one CTA per SM, each loops over (batch·head)


def _watchdog_args(shape, xp):
    from flashcore import watchdog

    return watchdog.extra_args(shape, xp)


# synccheck flags libcu++'s producer_commit() (cp.async.mbarrier.arrive, then mbarrier.arrive, into one phase) in
# every kernel that uses it — the Programming Guide's own pattern included; the chapter's control matrix shows it.
LIBCUXX_COMMIT = (KnownFinding(
    tool="synccheck", kind="Missing wait", frame="producer_commit",
    why="synccheck flags libcu++'s cuda::pipeline producer_commit() itself: the textbook control v11_ctl_guide is "
        "flagged identically, hand-written mbarriers with one arrival per commit are clean (chapter 2, section 6)"),)

SPECS = [
    KernelSpec(id="v11_pipeline", source="v11_pipeline.cu", entry="v11_pipeline", threads=512, grid=_grid,
               smem_bytes=lambda s: SMEM, defines=(("WATCHDOG", "1"),), parent="v12_baseline", chapter=CHAPTER,
               cross=True, idea="2-stage cuda::pipeline K/V ring fed by the 4 load warps (role-less make_pipeline)",
               extra_args=_watchdog_args, expect_failure=True, tags=("watchdog", "deadlock")),
    KernelSpec(id="v11_fixed", source="v11_fixed.cu", entry="v11_fixed", threads=512, grid=_grid,
               smem_bytes=lambda s: SMEM, parent="v11_pipeline", chapter=CHAPTER, cross=True,
               idea="every thread acquires and commits (the role-less pipeline counts all 512); load warps copy",
               known_findings=LIBCUXX_COMMIT),
    KernelSpec(id="v11_fixed_roles", source="v11_fixed_roles.cu", entry="v11_fixed_roles", threads=512, grid=_grid,
               smem_bytes=lambda s: SMEM, parent="v11_pipeline", chapter=CHAPTER, cross=True,
               idea="make_pipeline(block, &state, role): producers = the load warps, who no longer consume",
               known_findings=LIBCUXX_COMMIT),
    KernelSpec(id="v11_fixed_mbarrier", source="v11_fixed_mbarrier.cu", entry="v11_fixed_mbarrier", threads=512,
               grid=_grid, smem_bytes=lambda s: SMEM, parent="v11_fixed_roles", chapter=CHAPTER, cross=True,
               idea="v11_fixed_roles's protocol on hand-written mbarriers: one cp.async.mbarrier.arrive.noinc per "
                    "commit"),
    KernelSpec(id="v11_fixed_watchdog", source="v11_fixed.cu", entry="v11_fixed", threads=512, grid=_grid,
               smem_bytes=lambda s: SMEM, defines=(("WATCHDOG", "1"),), parent="v11_fixed", chapter=CHAPTER,
               cross=True, idea="v11_fixed with the watchdog built in (it must finish with no record)",
               extra_args=_watchdog_args, tags=("watchdog",), known_findings=LIBCUXX_COMMIT),
    KernelSpec(id="v11_fixed_roles_watchdog", source="v11_fixed_roles.cu", entry="v11_fixed_roles", threads=512,
               grid=_grid, smem_bytes=lambda s: SMEM, defines=(("WATCHDOG", "1"),), parent="v11_fixed_roles",
               chapter=CHAPTER, cross=True, idea="v11_fixed_roles with the watchdog built in",
               extra_args=_watchdog_args, tags=("watchdog",), known_findings=LIBCUXX_COMMIT),
    KernelSpec(id="v11_fixed_mbarrier_watchdog", source="v11_fixed_mbarrier.cu", entry="v11_fixed_mbarrier",
               threads=512, grid=_grid, smem_bytes=lambda s: SMEM, defines=(("WATCHDOG", "1"),),
               parent="v11_fixed_mbarrier", chapter=CHAPTER, cross=True,
               idea="v11_fixed_mbarrier with the watchdog built in", extra_args=_watchdog_args, tags=("watchdog",)),
]


# The synccheck controls (kernels/v11_sync_controls.cu): not attention — each CTA writes the column sums of V into
# every output row — so they carry the "control" tag, which keeps them out of dispatch, the fuzz and the sweep.
CONTROLS = {
    "v11_ctl_guide": (1, "Programming Guide pattern: role-less pipeline, every thread copies, commits, waits, releases"),
    "v11_ctl_guide_idle": (2, "the same, half the threads commit without copying (what v11_fixed does)"),
    "v11_ctl_roles": (3, "make_pipeline(..., role): warps 0-3 produce, warps 4-7 consume"),
    "v11_ctl_raw_inc": (4, "hand-written: cp.async.mbarrier.arrive + mbarrier.arrive (what producer_commit does)"),
    "v11_ctl_raw_noinc": (5, "hand-written: cp.async.mbarrier.arrive.noinc is the producer's one arrival"),
    "v11_ctl_raw_waitall": (6, "hand-written: cp.async.wait_all, then one plain mbarrier.arrive"),
}
SPECS += [
    KernelSpec(id=kid, source="v11_sync_controls.cu", entry="v11_sync_control", threads=256,
               grid=lambda s: (s.bh, 1, 1), defines=(("CONTROL", str(n)),), chapter=CHAPTER, cross=True,
               idea=idea, tags=("control",))
    for kid, (n, idea) in CONTROLS.items()
]
