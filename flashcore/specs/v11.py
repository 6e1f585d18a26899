"""Chapter 2 — v11, the pipeline that deadlocked: the as-designed kernel (always built with its watchdog) and the fix.

``v11_pipeline`` is kept to show a failure (``expect_failure=True``) and is only ever built with ``WATCHDOG``: every
wait is bounded, so a launch returns in well under a second and leaves a diagnosis in the buffer that
``flashcore.watchdog`` allocates through ``extra_args`` (then decodes). ``v11_fixed`` is the one-idea fix.
"""
from flashcore.kernels import KernelSpec, LaunchShape

CHAPTER = "02_v11_deadlock"
SMEM = 52992          # Q 4608 + K 2×6912 + V 2×6912 + S 8192 + P 4096 + O 8192 + m, l 256 (bytes)


def _grid(s: LaunchShape):
    return (s.num_sms, 1, 1)            # persistent: one CTA per SM, each loops over (batch·head)


def _watchdog_args(shape, xp):
    from flashcore import watchdog

    return watchdog.extra_args(shape, xp)


SPECS = [
    KernelSpec(id="v11_pipeline", source="v11_pipeline.cu", entry="v11_pipeline", threads=512, grid=_grid,
               smem_bytes=lambda s: SMEM, defines=(("WATCHDOG", "1"),), parent="v12_baseline", chapter=CHAPTER,
               cross=True, idea="2-stage cuda::pipeline K/V ring fed by the 4 load warps (role-less make_pipeline)",
               extra_args=_watchdog_args, expect_failure=True, tags=("watchdog", "deadlock")),
    KernelSpec(id="v11_fixed", source="v11_fixed.cu", entry="v11_fixed", threads=512, grid=_grid,
               smem_bytes=lambda s: SMEM, parent="v11_pipeline", chapter=CHAPTER, cross=True,
               idea="every thread acquires and commits (the role-less pipeline counts all 512); load warps copy"),
    KernelSpec(id="v11_fixed_watchdog", source="v11_fixed.cu", entry="v11_fixed", threads=512, grid=_grid,
               smem_bytes=lambda s: SMEM, defines=(("WATCHDOG", "1"),), parent="v11_fixed", chapter=CHAPTER,
               cross=True, idea="v11_fixed with the watchdog built in (it must finish with no record)",
               extra_args=_watchdog_args, tags=("watchdog",)),
]
