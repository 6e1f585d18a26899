"""Write the v12 variant kernels: each is its own header + switch lines + the body of kernels/v12_baseline.cu.

Run after editing the v12 body: ``python scripts/gen_v12_variants.py``. tests/test_v12_chapter.py checks the bodies
stay identical, so a variant differs from its parent only in the switch lines its header describes.
"""
from pathlib import Path

KERNELS = Path(__file__).resolve().parent.parent / "kernels"
MARKER = "// ---- v12 body:"

VARIANTS = {
    "v12_no_4th_barrier": ("""\
// v12_no_4th_barrier — the original's failed shortcut, kept to show the failure (expect_failure=True).
//
// What changed from its parent (v12_baseline): the 4th __syncthreads of each key tile is gone. Warps 8–15 finish
//   their (empty) P·V step at once and start loading the next K/V tile while warps 0–7 still read V and
//   read-modify-write the fp32 accumulator; after the last key tile the finalize reads the accumulator while P·V
//   may still be writing it. The original measured max error 0.173 on an L4 ("race on the output accumulator").
// Predicted effect: a little faster than v12 (one barrier of four per tile) and WRONG: the checker's max error far
//   above tolerance (run to run different, so not deterministic either), and compute-sanitizer racecheck reports
//   shared-memory hazards on V / the accumulator.
""", dict(V12_SKIP_4TH_BARRIER=1)),
    "v12_abl_1_grid": ("""\
// v12_abl_1_grid — ablation ladder step 1: v12 with a grid over (query tile, head) instead of persistent CTAs.
//
// What changed from its parent (v12_baseline): the launch is (ceil(S/32), B·H) CTAs and each CTA computes one
//   32-row query tile of one head; everything inside the tile (scalar loads, one softmax warp, smem accumulator,
//   4 barriers per key tile) is unchanged. At B1 H8 S512 that is 16 × 8 = 128 CTAs on 132 SMs instead of 8 busy
//   CTAs that each walk 16 query tiles in turn.
// Predicted effect: ~16× faster at the mission shape (the same per-tile latency, 16× more tiles in flight);
//   ncu: sm__cycles_active.avg and achieved occupancy up ~16×, per-CTA stall profile unchanged.
""", dict(V12_GRID_QTILE=1)),
    "v12_abl_2_vec": ("""\
// v12_abl_2_vec — ablation ladder step 2: + 16-byte (uint4) global loads and stores.
//
// What changed from its parent (v12_abl_1_grid): Q, K, V tiles are copied 8 halves at a time (one uint4 per thread
//   per 8 elements instead of eight 2-byte loads), and O is written 8 halves at a time.
// Predicted effect: the load phase of each key tile shrinks (fewer load instructions in flight per thread, one
//   round of L2 latency instead of several); ncu: stall_long_scoreboard per issue down, instructions down;
//   maybe 10–30% of step 1's time.
""", dict(V12_GRID_QTILE=1, V12_VEC_LOADS=1)),
    "v12_abl_3_softmax": ("""\
// v12_abl_3_softmax — ablation ladder step 3: + the softmax done by all 16 warps instead of one serial warp.
//
// What changed from its parent (v12_abl_2_vec): each warp owns 2 of the 32 rows; lanes split a row's 48 scores
//   (and its 64 accumulator values), max and sum by warp shuffles. The one-warp version has every lane walk its own
//   row serially with a row stride of 64 floats: all 32 lanes hit the same bank (32-way conflicts), 48 + 48 + 64
//   dependent smem round trips per tile on one warp while 15 warps wait at barrier 3.
// Predicted effect: the largest per-tile saving after the grid; ncu: smem bank conflicts and stall_barrier down.
""", dict(V12_GRID_QTILE=1, V12_VEC_LOADS=1, V12_PAR_SOFTMAX=1)),
    "v12_abl_4_prefetch": ("""\
// v12_abl_4_prefetch — ablation ladder step 4: + cp.async double buffer for K/V (load of tile i+1 overlaps tile i).
//
// What changed from its parent (v12_abl_3_softmax): K and V get two smem stages; tile i+1 is issued with 16-byte
//   cp.async right after barrier 1 of tile i and waited for (cp.async.wait_group 0) just before barrier 1 of tile
//   i+1, so its global-memory latency hides behind Q·Kᵀ, softmax and P·V. Still four barriers per tile, still WMMA
//   with the smem accumulator. This is the end of the ladder: what remains is the cost of the v12 design itself
//   (barrier-separated phases, WMMA through smem) plus the launch.
// Predicted effect: a further cut of the load phase; ncu: stall_long_scoreboard per issue near zero. Dynamic smem
//   grows by one K and one V stage (13.5 KiB).
""", dict(V12_GRID_QTILE=1, V12_VEC_LOADS=1, V12_PAR_SOFTMAX=1, V12_PREFETCH=1)),
}


def body() -> str:
    text = (KERNELS / "v12_baseline.cu").read_text()
    return text[text.index(MARKER):]


def render(name: str) -> str:
    header, switches = VARIANTS[name]
    lines = [f"#define {k} {v}" for k, v in switches.items()] + [f"#define V12_ENTRY {name}"]
    return header + "\n".join(lines) + "\n" + body()


def main() -> None:
    for name in VARIANTS:
        (KERNELS / f"{name}.cu").write_text(render(name))
        print("wrote", KERNELS / f"{name}.cu")


if __name__ == "__main__":
    main()
