"""Chapter 5 — the Hopper kernel: wgmma, TMA, a warp-specialised pipeline proven before it ran, and a persistent
scheduler: the kernel v11 wanted to be.

One record per GPU, ``05_hopper`` (:func:`measure`): every rung (``hopper_01_wgmma`` … ``flashcore_hopper``)
checked against fp64 at shapes with tails and S_q ≠ S_kv, then timed beside cuDNN, FA2, the Triton kernel and the
v8 library kernel at the chapter's shapes; ``flashcore_hopper``'s knobs (2 consumer warpgroups, exp2 on the FMA pipe,
a 2-stage ring) at the same shapes; the crossover grid of the two library kernels against cuDNN (the dispatch
threshold's evidence); the WATCHDOG builds (each must finish with no record) and a fault-injected build (it must
give up with a diagnosis); ptxas and SASS evidence; the four compute-sanitizer tools on the final kernel; one Nsight
Compute report of every rung and cuDNN at the compute-bound shape.

``view`` draws the page from the record alone, plus two computations that need no GPU: the model checker's verdicts
on the pipeline protocol (:mod:`flashcore.modelcheck`) and the floors of chapter 0's record.
"""
NOTEBOOK = "05_hopper"
LIBRARY = "flashcore_hopper"              # the kernel the ladder ends on
V8_LIBRARY = "flashcore"                  # the mma.sync library kernel (chapter 3)
RUNGS = ("hopper_01_wgmma", "hopper_02_tma", "hopper_03_warpspec", "hopper_04_overlap", "flashcore_hopper")

DEFAULTS = dict(
    big=[4, 16, 4096, 64],                 # the compute-bound shape the chapter is about (ncu runs here)
    mission=[1, 8, 512, 64],               # the book's mission shape
    time_shapes=[[4, 16, 4096], [8, 16, 2048], [1, 32, 16384], [1, 8, 512], [2, 12, 384]],
    check_shapes=[[1, 1, 1], [1, 1, 77], [2, 3, 1000], [1, 4, 4000], [1, 1, 64, 300], [2, 2, 300, 64],
                  [3, 5, 333, 1025], [2, 256, 128], [1, 2, 193, 4096], [1, 1, 4096, 129]],
    # the crossover grid: B·H from 1 to 512, S from 128 to 16384, S_q ≠ S_kv, decode (S_q = 1)
    grid=[[1, 1, 4096], [1, 1, 16384], [1, 8, 128], [1, 8, 512], [1, 8, 1024], [1, 8, 2048], [1, 8, 4096],
          [1, 8, 8192], [1, 8, 16384], [2, 12, 384], [4, 16, 512], [4, 16, 1024], [4, 16, 2048], [4, 16, 4096],
          [8, 16, 2048], [1, 32, 16384], [16, 32, 128], [16, 32, 512], [32, 16, 1024], [8, 64, 256],
          [1, 8, 128, 4096], [1, 8, 4096, 128], [2, 16, 1000, 3000], [16, 32, 1, 4096], [4, 16, 1, 8192]],
    knobs=["flashcore_hopper@c2", "flashcore_hopper@exp4", "flashcore_hopper@s2"],
    samples=30, grid_samples=12,
    watchdog_shapes=[[1, 2, 300, 300], [2, 3, 1000, 777], [1, 1, 77, 4000]], watchdog_cycles=200_000_000,
    fault_shape=[1, 2, 300, 1000],         # > STAGES key tiles per CTA: the skipped release must be needed
    budget_s=None, sanitize_shapes="1,2,200,64;1,2,100,64,300", ncu=True, sanitize=True, triton=True)

# What each rung's header predicted before it ran (kernels/hopper/*.cu): TFLOP/s at the compute-bound shape, µs at
# the mission shape, and the Nsight Compute metrics its idea should move (the main one first).
PREDICTED = {
    "hopper_01_wgmma": dict(big_tflops=320, mission_us=9.0, moving=("tensor_pipe_pct", "stall_gmma")),
    "hopper_02_tma": dict(big_tflops=340, mission_us=9.0, moving=("instructions", "stall_long_scoreboard")),
    "hopper_03_warpspec": dict(big_tflops=390, mission_us=10.0, moving=("tensor_pipe_pct", "stall_barrier")),
    "hopper_04_overlap": dict(big_tflops=440, mission_us=10.0, moving=("tensor_pipe_pct", "xu_pipe_pct")),
    "flashcore_hopper": dict(big_tflops=455, mission_us=10.0, moving=("sms_active_pct", "tensor_pipe_pct")),
}

# The charts the page shows, in page order (the browser tests look for each one).
FIGURES = ["05_hopper_ladder", "05_hopper_pipes", "05_hopper_grid"]

from .measure import measure  # noqa: E402,F401
from .view import *  # noqa: E402,F401,F403
