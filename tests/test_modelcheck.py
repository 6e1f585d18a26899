"""The model checker on known cases, v11 as designed (deadlock) and fixed (proved free); watchdog decoding (CPU)."""
import numpy as np
import pytest

from flashcore import modelcheck as mc
from flashcore import watchdog as wd


def test_textbook_pipeline_is_deadlock_free():
    r = mc.check(mc.textbook(items=5))
    assert not r.deadlock and not r.truncated and r.over_arrival is None
    assert r.terminal_states >= 1 and r.states > 10


def test_missing_arrival_deadlocks_with_shortest_trace():
    r = mc.check(mc.missing_arrival(items=4, skip=0))
    assert r.deadlock
    ops = {(s["process"], s["op"]) for s in r.stuck}
    assert ("producer", "acquire") in ops            # the producer waits for a release that never comes
    stuck_bars = {s["barrier"] for s in r.stuck}
    assert "consumed[0]" in stuck_bars
    # shortest: a BFS trace cannot be shortened by dropping its last step and still be stuck
    assert len(r.trace) <= 14


def test_barrier_in_branch_deadlocks():
    r = mc.check(mc.branch_barrier())
    assert r.deadlock
    w0 = next(s for s in r.stuck if s["process"] == "warp 0")
    assert w0["barrier"] == "block" and w0["arrived"] == 32 and w0["expected"] == 64


def test_v11_as_designed_deadlocks_on_produced_stage0():
    r = mc.check(mc.v11(tiles=3))
    assert r.deadlock
    assert {s["role"] for s in r.stuck} == {"load", "compute", "softmax"}    # the whole block is stuck
    for s in r.stuck:
        assert s["op"] == "wait" and s["barrier"] == "produced[0]"
        assert s["arrived"] == 128 and s["expected"] == 512                 # 4 load warps of 16 commit


@pytest.mark.parametrize("query_tiles", [1, 2])
@pytest.mark.parametrize("tiles", [1, 2, 3])
def test_v11_fixed_is_deadlock_free(tiles, query_tiles):
    r = mc.check(mc.v11(tiles=tiles, query_tiles=query_tiles, fixed=True))
    assert not r.deadlock and not r.truncated and r.over_arrival is None
    assert r.terminal_states >= 1


def test_v11_with_two_warps_per_role_agrees():
    assert mc.check(mc.v11(tiles=2, split=2)).deadlock
    assert not mc.check(mc.v11(tiles=2, split=2, fixed=True)).deadlock


def test_role_pipeline_needs_load_warps_to_stop_releasing():
    over = mc.check(mc.v11(tiles=3, flavour="role"))
    assert not over.deadlock and over.over_arrival is not None              # consumed over-arrives: a race
    ok = mc.check(mc.v11(tiles=3, flavour="role", load_releases=False))
    assert not ok.deadlock and ok.over_arrival is None


def test_pipeline_counts_follow_libcudacxx():
    assert mc.pipeline_counts("roleless", 512, 128) == (512, 512)
    assert mc.pipeline_counts("role", 512, 128) == (128, 384)


def test_run_all_is_json_ready():
    import json

    out = mc.run_all(tiles=2)
    json.dumps(out)
    assert out["v11"]["deadlock"] and not out["v11_fixed"]["deadlock"]


def _synthetic_buffer():
    buf = wd.allocate(2, np)
    for warp, role, site in ((0, 0, 2), (11, 1, 2), (15, 2, 2)):
        off = wd.HEADER_INTS + (1 * wd.WARPS_PER_CTA + warp) * wd.RECORD_INTS
        buf[off:off + wd.RECORD_INTS] = [1, 1, warp, 0, role, site, 0, 0, 0, 0, 1, 0, 128, 512, 0x10, 0x20,
                                         123456, 0, 0, 0]
    buf[0], buf[1] = 1, 3
    return buf


def test_watchdog_decode_synthetic_buffer():
    buf = _synthetic_buffer()
    rows = wd.decode(buf)
    assert [r["warp"] for r in rows] == [0, 11, 15]
    assert {r["role"] for r in rows} == {"compute", "load", "softmax"}
    r = rows[1]
    assert r["site"] == "consumer_wait" and r["barrier"].startswith("stage 0 'produced'")
    assert r["arrivals_seen"] == 128 and r["expected"] == 512 and r["needed_arrivals"] == 512
    assert r["mbarrier_raw"] == "0x0000002000000010" and r["cta"] == 1 and r["head"] == 1
    h = wd.header(buf)
    assert h["records"] == 3 and h["capacity"] == 32 and h["record_ints"] == wd.RECORD_INTS
    d = wd.diagnose(rows)
    assert d["stuck"] and d["arrivals_seen"] == 128 and d["needed"] == 512
    assert "128 arrivals seen of 512" in d["sentence"]


def test_watchdog_raises_with_readable_message():
    with pytest.raises(wd.WatchdogTimeout) as exc:
        wd.raise_if_stuck("v11_pipeline", _synthetic_buffer())
    assert "consumer_wait" in str(exc.value) and exc.value.summary["warps"] == 3


def test_watchdog_quiet_buffer_is_not_stuck():
    buf = wd.allocate(4, np)
    assert wd.decode(buf) == [] and not wd.diagnose([])["stuck"]
    wd.raise_if_stuck("v11_fixed_watchdog", buf)


def test_producer_acquire_phase_is_the_previous_one():
    buf = wd.allocate(1, np)
    off = wd.HEADER_INTS
    buf[off:off + wd.RECORD_INTS] = [1, 0, 11, 0, 1, 1, 1, 1, 2, 0, 0, 2, 384, 512, 0, 0, 5, 1, 0, 0]
    r = wd.decode(buf)[0]
    assert r["site"] == "producer_acquire" and r["phase"] == 0 and r["needed_arrivals"] == 512


def test_extra_args_budget():
    from flashcore.kernels import LaunchShape, LaunchTensors

    buf, cycles = wd.extra_args(LaunchShape(8, 512, 512, num_sms=3), LaunchTensors(None, None, None, None, np),
                                cycles=5000)
    assert len(buf) == wd.buffer_ints(3) and int(cycles) == 5000 and wd.LAST["buffer"] is buf
    with pytest.raises(ValueError):
        wd.set_budget(10)


@pytest.mark.parametrize("query_tiles", [1, 2])
def test_v11_roles_fix_is_deadlock_free_and_never_over_arrives(query_tiles):
    """v11_fixed_roles / v11_fixed_mbarrier: role counts (128 produce, 384 consume), load warps never consume."""
    r = mc.check(mc.v11(tiles=3, query_tiles=query_tiles, flavour="role", load_releases=False, load_consumes=False))
    assert not r.deadlock and r.over_arrival is None and not r.truncated


def test_v11_fixes_are_files_that_differ_from_the_pipeline_in_one_idea():
    """v11_pipeline.cu is the deadlocking kernel only (no fix behind a switch); each fix is its own file over
    kernels/v11/v11_tile.cuh whose one idea is in the lines that differ from its parent."""
    import difflib

    from flashcore import kernels

    def code(spec):
        return [l.strip() for l in spec.path.read_text().splitlines() if l.strip() and not l.startswith("//")]

    def changed(parent, spec):
        return "\n".join(l[1:] for l in difflib.unified_diff(code(parent), code(spec), lineterm="", n=0)
                         if l[:1] in "+-" and l[:3] not in ("+++", "---"))

    pipeline = kernels.get("v11_pipeline")
    text = pipeline.path.read_text()
    assert pipeline.source == "v11/v11_pipeline.cu" and "#if" not in text and "V11_FIXED" not in text
    assert "cuda::make_pipeline(block, &pipe_state);" in text and "#define LOAD_KV_TILE" not in text
    for kid in ("v11_fixed", "v11_fixed_roles", "v11_fixed_mbarrier"):
        spec = kernels.get(kid)
        assert spec.source == f"v11/{kid}.cu" and spec.entry == kid, kid
        assert '#include "v11/v11_tile.cuh"' in spec.path.read_text() and "V11_FIXED" not in spec.path.read_text()
    # the one idea of each, as the lines that differ from the parent
    fixed = changed(pipeline, kernels.get("v11_fixed"))
    assert "#define LOAD_KV_TILE" in fixed and "PRODUCER_ACQUIRE();" in fixed   # every thread acquires and commits
    roles = changed(pipeline, kernels.get("v11_fixed_roles"))
    assert "make_pipeline(block, &pipe_state, prole)" in roles and "role != ROLE_LOAD" in roles
    assert "LOAD_KV_TILE" not in roles
    raw = changed(kernels.get("v11_fixed_roles"), kernels.get("v11_fixed_mbarrier"))
    assert "struct RawPipe" in raw and "cp_async_mbar_arrive_noinc" in raw and "make_pipeline" in raw


# ------------------------------------------------------------------------------ Hopper: mbarriers with tx bytes, TMA
KV = mc.KV_TILE_BYTES


def _clean(r):
    return (not r.deadlock and not r.truncated and r.safety is None and not r.safety_kinds
            and r.tx_mismatch is None and r.over_arrival is None and r.terminal_states >= 1)


@pytest.mark.parametrize("stages, consumers, tiles", [(2, 2, 3), (2, 3, 4), (3, 2, 4), (3, 3, 3), (4, 2, 3),
                                                      (4, 3, 4), (1, 2, 3), (2, 2, 1)])
def test_hopper_protocol_is_deadlock_free_and_never_overwrites(stages, consumers, tiles):
    r = mc.check(mc.hopper_ws(stages, consumers, tiles))
    assert r.safety_checked and _clean(r), r.verdict
    assert "no buffer is written while it is read" in r.verdict


def test_hopper_grid_is_proved_quickly():
    rows = mc.sweep_hopper(stages=(2, 3, 4), consumers=(2, 3), tiles=(3, 4), wrap=False)
    assert len(rows) == 12
    assert all(not r["deadlock"] and r["safe"] and not r["violated"] and not r["truncated"] for r in rows)
    assert max(r["states"] for r in rows) < 100_000                         # 50 555 at 4 stages, 3 consumers, 4 tiles
    assert sum(r["states"] for r in rows) > 10_000                          # the search really ran
    assert [r["refills"] for r in rows if r["stages"] == 4] == [False] * 4  # 4 stages, ≤ 4 tiles: no stage reused


def test_hopper_proof_covers_the_parity_wrap():
    rows = mc.sweep_hopper(stages=(2, 3), consumers=(2,), tiles=(), wrap=True)
    assert [(r["stages"], r["tiles"]) for r in rows] == [(2, 5), (3, 7)]
    assert all(r["refills"] and not r["violated"] and not r["truncated"] for r in rows)
    assert _clean(mc.check(mc.hopper_ws(3, 3, 7)))


@pytest.mark.parametrize("stages", [2, 3])
def test_hopper_overlap_is_safe_with_two_stages_and_deadlocks_with_one(stages):
    assert _clean(mc.check(mc.hopper_ws(stages, 2, 4, overlap=True)))
    one = mc.check(mc.hopper_ws(1, 2, 3, overlap=True))      # a consumer holds stage 0 while it waits for its refill
    assert one.deadlock and one.safety is None
    assert any(s["process"].startswith("consumer") and s["barrier"] == "full[0]" for s in one.stuck)


def test_hopper_roleless_finds_the_v11_bug():
    r = mc.check(mc.hopper_roleless(2, 2, 3))
    assert r.deadlock and r.safety is None and len(r.trace) <= 20
    cons = [s for s in r.stuck if s["process"].startswith("consumer")]
    assert len(cons) == 2
    for s in cons:                                            # one elected arrival of the block's 384
        assert s["barrier"] == "full[0]" and s["arrived"] == 1 and s["expected"] == 384 and s["tx_pending"] == 0
    assert mc.check(mc.hopper_roleless(3, 3, 4)).deadlock


def test_hopper_wrong_parity_deadlocks_before_the_first_tile():
    r = mc.check(mc.hopper_wrong_parity(2, 2, 3))
    assert r.deadlock and len(r.trace) <= 6
    prod = next(s for s in r.stuck if s["process"] == "producer")
    assert prod["barrier"] == "empty[0]" and prod["phase"] == 0 and "parity 0" in prod["waits_for"]


def test_hopper_short_release_overwrites_a_stage_a_consumer_still_reads():
    r = mc.check(mc.hopper_short_release(2, 2, 3))
    assert "overwrite" in r.violated and r.safety is not None and len(r.safety["trace"]) <= 22
    ow = r.safety_kinds["overwrite"]
    last = ow["trace"][-1]
    assert last["process"] == "producer" and last["op"].startswith("TMA K2 → K[0]")
    assert "still reads K0" in ow["message"]
    victim = ow["message"].split(" while ")[1].split(" still")[0]
    ops = [s["op"] for s in ow["trace"] if s["process"] == victim]
    assert "reads K0 in K[0]" in ops[-1]                      # its last step was the wait that started the read
    three = mc.check(mc.hopper_short_release(2, 3, 3, empty_count=2))
    assert "overwrite" in three.violated
    with pytest.raises(ValueError):
        mc.hopper_short_release(2, 2, 3, empty_count=2)


def test_hopper_tx_mismatch_is_caught_both_ways():
    short = mc.check(mc.hopper_tx_mismatch(2, 2, 3))          # expect K only: the phase completes with V in flight
    assert "read before landed" in short.violated and len(short.safety["trace"]) <= 10
    assert short.tx_mismatch["kind"] == "completes early" and short.tx_mismatch["bytes_in_flight"] == KV
    assert short.tx_mismatch["barrier"] == "full[0]"
    long = mc.check(mc.hopper_ws(2, 2, 3, expect_bytes=3 * KV))   # expect more: the phase never completes
    assert long.deadlock and long.safety is None
    assert long.tx_mismatch["kind"] == "never completes" and long.tx_mismatch["bytes_missing"] == KV
    assert any(s["barrier"] == "full[0]" and s["tx_pending"] == KV and s["arrived"] == 1 for s in long.stuck)


def test_hopper_release_needs_the_whole_warpgroup():
    early = mc.check(mc.hopper_warp_release(2, 1, 3))         # warp 0 arrives when only its own wgmmas retired
    assert "overwrite" in early.violated and "warps 1-3" in early.safety_kinds["overwrite"]["message"]
    assert _clean(mc.check(mc.hopper_warp_release(2, 1, 3, warpgroup_sync=True)))
    assert _clean(mc.check(mc.hopper_warp_release(2, 2, 3, warpgroup_sync=True)))


def _one_stage(producer: list, consumer: list) -> mc.Model:
    procs = [mc.Process("producer", 1, producer, "producer"), mc.Process("consumer", 128, consumer, "consumer"),
             mc.Process("TMA engine", 0, [], "copy engine", engine=True)]
    return mc.Model("one stage", procs, {"full": 1}, buffers=["B"])


READ_B = [("mbar_wait", "full", 0, (("B", "D"),)), ("work", "use D", ("B",))]


def test_tx_phase_waits_for_the_bytes_as_well_as_the_arrival():
    m = _one_stage([("mbar_arrive_tx", "full", 1, 100), ("tma_load", "full", "B", 60, "D"),
                    ("tma_load", "full", "B", 40, "D")], READ_B)
    steps = mc.simulate(m, ["producer", "producer", "producer", "TMA engine"])
    assert [s["barriers"]["full"]["tx"] for s in steps] == [100, 100, 100, 60]
    assert all(s["barriers"]["full"]["phase"] == 0 for s in steps)          # arrival in, 60 B still to land
    with pytest.raises(ValueError, match="consumer cannot move"):
        mc.simulate(m, ["producer", "producer", "producer", "TMA engine", "consumer"])
    done = mc.simulate(m, ["producer", "producer", "producer", "TMA engine", "TMA engine", "consumer"])
    assert done[4]["barriers"]["full"] == dict(phase=1, arrivals=0, tx=0) and done[5]["op"].startswith("try_wait")
    assert _clean(mc.check(m))


def test_tx_bytes_may_land_before_the_expect_tx():
    # copy first, arrive.expect_tx after: the count dips below zero, the pending arrival holds the phase
    m = _one_stage([("tma_load", "full", "B", 100, "D"), ("mbar_arrive_tx", "full", 1, 100)], READ_B)
    steps = mc.simulate(m, ["producer", "TMA engine", "producer", "consumer"])
    assert steps[1]["barriers"]["full"] == dict(phase=0, arrivals=0, tx=-100)
    assert steps[2]["barriers"]["full"] == dict(phase=1, arrivals=0, tx=0)
    assert _clean(mc.check(m))
    # but a plain arrive before the expect_tx completes the phase with nothing expected: the read can start early
    bad = _one_stage([("mbar_arrive", "full", 1, ()), ("mbar_expect_tx", "full", 100),
                      ("tma_load", "full", "B", 100, "D")], READ_B)
    r = mc.check(bad)
    assert "read before landed" in r.violated
    assert mc.simulate(bad, ["producer"])[0]["barriers"]["full"]["phase"] == 1


def test_parity_wait_passes_once_the_phase_of_that_parity_completed():
    procs = [mc.Process("arriver", 1, [("mbar_arrive", "b", 1, ())] * 2),
             mc.Process("p0", 32, [("mbar_wait", "b", 0, ())]), mc.Process("p1", 32, [("mbar_wait", "b", 1, ())])]
    m = mc.Model("parity", procs, {"b": 1})
    mc.simulate(m, ["p1"])                                    # fresh barrier (phase 0): parity 1 passes at once
    with pytest.raises(ValueError):
        mc.simulate(m, ["p0"])                                # parity 0: phase 0 has not completed
    assert mc.simulate(m, ["arriver", "p0"])[1]["op"].startswith("try_wait.parity(0) b: phase 0 done")
    with pytest.raises(ValueError):
        mc.simulate(m, ["arriver", "p1"])                     # phase 1 is current: parity 1 waits again
    mc.simulate(m, ["arriver", "arriver", "p1"])              # phase 1 completed
    with pytest.raises(ValueError):
        mc.simulate(m, ["arriver", "arriver", "p0"])          # phase 2 current: parity 0 waits (ABA: 2 phases on)


def test_hopper_over_arrival_is_reported():
    m = mc.hopper_ws(2, 2, 3)
    cons = m.processes[1].program                             # consumer 0 releases its first stage twice
    first = next(k for k, op in enumerate(cons) if op[0] == "mbar_arrive")
    cons.insert(first + 1, ("mbar_arrive", cons[first][1], 1, ()))
    r = mc.check(m)
    assert r.over_arrival is not None and r.over_arrival["process"] == "consumer 0"
    assert r.over_arrival["op"].startswith("arrive empty[0]")
    assert "over-arrival" in r.violated and "overwrite" in r.violated   # the double release frees the stage early


def test_run_hopper_is_json_ready():
    import json

    with pytest.raises(ValueError):
        mc.run_hopper(stages=4, consumers=2, tiles=4)            # no refill: release faults could not show
    out = mc.run_hopper(stages=2, consumers=2, tiles=3)
    json.loads(json.dumps(out))
    assert out["hopper_ws"]["violated"] == [] and out["hopper_ws"]["violation"] is None
    assert out["hopper_ws"]["protocol"]["empty_expected_arrivals"] == 2
    assert out["hopper_ws"]["protocol"]["full_expected_tx_bytes"] == 2 * KV
    expected = {"hopper_roleless": "deadlock", "hopper_wrong_parity": "deadlock",
                "hopper_short_release": "overwrite before read", "hopper_tx_mismatch": "read before landed",
                "hopper_warp_release": "overwrite before read"}
    for name, kind in expected.items():
        v = out[name]["violation"]
        assert v["kind"] == kind and 0 < v["steps"] <= 25 and out[name]["verdict"], name
        for st in v["trace"]:
            assert {"process", "op", "step"} <= set(st)
        assert all("barrier" in st and "phase" in st for st in v["trace"] if not st["op"].startswith("S"))
    assert "overwrite" in out["hopper_short_release"]["violated"]
    assert not out["hopper_overlap"]["violated"] and not out["hopper_warp_release_synced"]["violated"]


def test_pipeline_models_keep_their_record_layout():
    out = mc.run_all(tiles=2)
    assert all("safety_checked" not in r for r in out.values())
    assert (out["v11"]["states"], len(out["v11"]["trace"])) == (58, 15)
    assert out["v11_fixed"]["states"] == 835


# The kernels' own release (kernels/hopper/*.cu): lane 0 of every consumer warp arrives on empty[s] after its own
# wgmma.wait_group, empty[s] expects 4 per consumer warpgroup, no warpgroup barrier. The proof must cover it.
@pytest.mark.parametrize("stages,consumers,tiles,overlap", [(2, 2, 3, False), (2, 2, 5, True), (2, 3, 3, True),
                                                            (4, 2, 9, True)])
def test_the_kernels_per_warp_release_is_deadlock_free_and_never_overwrites(stages, consumers, tiles, overlap):
    m = mc.hopper_ws(stages, consumers, tiles, consumer_warps=2, per_warp_release=True, overlap=overlap)
    assert m.protocol["empty_expected_arrivals"] == 4 * consumers
    r = mc.check(m)
    assert _clean(r), r.verdict


@pytest.mark.parametrize("empty_count,kind", [(9, "deadlock"), (7, "overwrite")])
def test_a_per_warp_count_off_by_one_is_caught(empty_count, kind):
    """Expect one arrival too many: the producer waits forever; one too few: it refills a stage a warp still
    reads. (The kernel's FAULT_SKIP_RELEASE build is the first case, on the GPU, caught by the watchdog.)"""
    r = mc.check(mc.hopper_ws(2, 2, 3, consumer_warps=2, per_warp_release=True, empty_count=empty_count))
    if kind == "deadlock":
        assert r.deadlock
    else:
        assert r.safety is not None and "overwrite" in r.safety["kind"]
