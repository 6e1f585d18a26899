"""Write the kernel variants that share a parent's body: each is its own header + switch lines + the body.

Two families: the v12 ablation ladder and failed shortcut (parent kernels/v12_baseline.cu) and the v11 fixes
(parent kernels/v11_pipeline.cu). A variant differs from its parent only in the switch lines its header describes;
the body below the family's marker line is the parent's, byte for byte. Run after editing a parent's body:
``python scripts/gen_variants.py``. tests/test_v12_chapter.py and tests/test_modelcheck.py check the bodies.
"""
from pathlib import Path

KERNELS = Path(__file__).resolve().parent.parent / "kernels"

V12_VARIANTS = {
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


V11_VARIANTS = {
    "v11_fixed": ("""\
// v11_fixed — v11_pipeline with the smallest fix of its deadlock: every thread of the block takes part in the
// pipeline's producer side (producer_acquire / producer_commit); only the 4 load warps issue the copies.
//
// The cause (found by the GPU watchdog and proved by flashcore/modelcheck.py, see the chapter): the role-less
//   `cuda::make_pipeline(block, &state)` initialises each stage's "produced" barrier with group.size() = 512 expected
//   arrivals (every thread is a producer AND a consumer), but v11 lets only the 128 load-warp threads call
//   producer_commit(). Each phase of "produced" therefore collects 128 of 512 arrivals and never completes, and
//   consumer_wait() — called by all 16 warps — waits on it forever: the whole block stops at the first wait.
// What changed from its parent (v11_pipeline): the producer_acquire()/producer_commit() pair moved out of the
//   load-warp branch (the V11_FIXED switch below; the body is byte-identical to v11_pipeline.cu, so a diff shows
//   the one idea). 384 threads now commit without copying: an arrival with nothing in flight. Alternatives that
//   also work (said so in the chapter): `make_pipeline(block, &state, role)` with producer = the load warps —
//   which then also needs the load warps to stop calling consumer_release(), else "consumed" over-arrives.
// Predicted effect: it finishes, with v12's numerics; at B1 H8 S512 only 8 of 132 CTAs have work and one softmax
//   warp still serialises every tile, so the double buffer hides little: about v12 with vector loads (~hundreds of
//   µs on H100), far from cuDNN. The ncu metric to watch: stall "barrier" and "long scoreboard" per issue.
// Like v11_pipeline it takes the WATCHDOG build option (v11_fixed_watchdog): it must then finish with no record.
// compute-sanitizer: racecheck is clean; synccheck reports "Missing wait" at pipeline::producer_commit() →
//   barrier::arrive(). It reports the Programming Guide's own cuda::pipeline pattern the same way: the chapter's
//   control matrix (kernels/v11_sync_controls.cu) ties the report to libcu++'s commit (cp.async.mbarrier.arrive,
//   then mbarrier.arrive), and kernels/v11_fixed_mbarrier.cu — this protocol with one .noinc arrival per commit —
//   is the synccheck-clean build.
""", dict(V11_FIXED=1)),
    "v11_fixed_roles": ("""\
// v11_fixed_roles — v11_pipeline fixed the other way: keep the design's division of labour (only the 4 load warps
// acquire, copy and commit) and tell the pipeline so, with a role: `make_pipeline(block, &state, role)`, producer =
// the load warps. The "produced" barrier then expects 128 arrivals (the load threads' commits) and "consumed" 384
// (everyone else's releases). The load warps stop calling consumer_wait()/consumer_release(): a producer thread's
// release would over-arrive on "consumed" (the model checker's v11_role_overrelease trace) and its wait would use a
// parity that only its own releases advance.
// What changed from its parent (v11_pipeline): the make_pipeline call takes the role, and `consumes` keeps the load
//   warps out of the consumer calls (V11_FIXED == 2; the body is byte-identical to v11_pipeline.cu).
// Predicted effect: same time as v11_fixed (the same copies and barriers; 384 fewer arrivals per tile, a few ns).
//   Proved deadlock-free by flashcore/modelcheck.py (model v11_roles). Its purpose in the chapter is the synccheck
//   matrix: is the "Missing wait" synccheck reports on v11_fixed about who commits, or about how libcu++ commits?
""", dict(V11_FIXED=2)),
    "v11_fixed_mbarrier": ("""\
// v11_fixed_mbarrier — v11_fixed_roles's protocol without libcu++: the same four pipeline calls, the same barrier
// layout and counts ("produced" expects the 128 load threads, "consumed" the 384 others), on hand-written mbarriers.
// What changed from its parent (v11_fixed_roles): a producer's commit is ONE arrival, cp.async.mbarrier.arrive.noinc,
//   which lands when that thread's copies have landed. libcu++'s producer_commit() issues cp.async.mbarrier.arrive
//   (without .noinc: pending count +1, then an asynchronous arrival that cancels it) and then a plain
//   mbarrier.arrive. Rows past the end are zero-filled by cp.async itself (src-size 0), so every write to a stage
//   is tracked by the barrier, and the load warps never block on their own copies.
// Predicted effect: the same time as v11_fixed_roles (the same barrier traffic, one fewer instruction per commit),
//   and — the reason it exists — synccheck clean if, as the control kernels (v11_sync_controls.cu) suggest, the
//   tool flags libcu++'s arrive pair rather than the protocol. (V11_FIXED == 3; the body is byte-identical to
//   v11_pipeline.cu.)
""", dict(V11_FIXED=3)),
}

FAMILIES = {   # family → (parent file, body marker, entry-point macro, variants)
    "v12": ("v12_baseline.cu", "// ---- v12 body:", "V12_ENTRY", V12_VARIANTS),
    "v11": ("v11_pipeline.cu", "// ---- v11 body:", "V11_ENTRY", V11_VARIANTS),
}
MARKER = FAMILIES["v12"][1]


def body(family: str = "v12") -> str:
    parent, marker, _, _ = FAMILIES[family]
    text = (KERNELS / parent).read_text()
    return text[text.index(marker):]


def render(name: str) -> str:
    family = next(f for f, (_, _, _, variants) in FAMILIES.items() if name in variants)
    _, _, entry, variants = FAMILIES[family]
    header, switches = variants[name]
    lines = [f"#define {k} {v}" for k, v in switches.items()] + [f"#define {entry} {name}"]
    return header + "\n".join(lines) + "\n" + body(family)


def main() -> None:
    for family in FAMILIES.values():
        for name in family[3]:
            (KERNELS / f"{name}.cu").write_text(render(name))
            print("wrote", KERNELS / f"{name}.cu")


if __name__ == "__main__":
    main()
