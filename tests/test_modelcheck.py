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
    from flashcore.kernels import LaunchShape

    buf, cycles = wd.extra_args(LaunchShape(8, 512, 512, num_sms=3), np, cycles=5000)
    assert len(buf) == wd.buffer_ints(3) and int(cycles) == 5000 and wd.LAST["buffer"] is buf
    with pytest.raises(ValueError):
        wd.set_budget(10)


def _synthetic_record(tmp_path):
    from flashcore.records import Record

    rows = wd.decode(_synthetic_buffer())
    extra = {"watchdog": {"v11_pipeline": {"rows": rows, "diagnosis": wd.diagnose(rows), "seconds": 0.06,
                                           "cycles": 10 ** 8, "finished": False},
                          "v11_fixed_watchdog": {"rows": [], "diagnosis": wd.diagnose([]), "seconds": 0.001,
                                                 "cycles": 10 ** 8, "finished": True, "output_unwritten": 0}},
             "modelcheck": mc.run_all(tiles=2), "shape": [1, 8, 512, 64]}
    results = [dict(kernel="v11_pipeline", B=1, H=8, S=512, D=64, passed=False, outcome="deadlock-detected"),
               dict(kernel="v11_fixed", B=1, H=8, S=128, D=64, passed=True, max_abs_err=1e-4, tol=2e-4,
                    deterministic=True, role="check")]
    for name, us in (("v11_fixed", 300.0), ("sdpa_cudnn", 10.0)):
        results.append(dict(kernel=name, B=1, H=8, S=512, D=64, median_us=us, p10_us=us, p90_us=us, tflops=1.0,
                            role="timing"))
    data = dict(run_id="synthetic", provenance=dict(gpu="test", commit="0" * 10, date="2026"), results=results,
                extra=extra)
    return Record(data, tmp_path / "run.json")


def test_chapter_tables_and_swimlane_from_a_synthetic_record(tmp_path, monkeypatch):
    monkeypatch.setenv("FLASHCORE_FIGURES_DIR", str(tmp_path / "figs"))
    from flashcore.chapters import v11 as ch

    rec = _synthetic_record(tmp_path)
    assert len(ch.watchdog_table(rec)) == 3
    assert not ch.watchdog_sites(rec).empty
    mt = ch.model_table(rec)
    assert bool(mt.loc["v11", "deadlock"]) and not bool(mt.loc["v11_fixed", "deadlock"])
    assert "STUCK" in ch.model_trace(rec, "v11") and "deadlock-free" in ch.model_trace(rec, "v11_fixed")
    ch.plot_swimlane(rec, "v11")
    ch.plot_swimlane(rec, "v11_fixed", save_as="02_v11_swimlane_fixed")
    assert (tmp_path / "figs" / "02_v11_swimlane.png").exists()
    assert ch.timing_table(rec).loc["v11_fixed", "× cuDNN"] == 30.0
    assert len(ch.check_table(rec)) == 1


@pytest.mark.parametrize("query_tiles", [1, 2])
def test_v11_roles_fix_is_deadlock_free_and_never_over_arrives(query_tiles):
    """v11_fixed_roles / v11_fixed_mbarrier: role counts (128 produce, 384 consume), load warps never consume."""
    r = mc.check(mc.v11(tiles=3, query_tiles=query_tiles, flavour="role", load_releases=False, load_consumes=False))
    assert not r.deadlock and r.over_arrival is None and not r.truncated


def test_v11_variants_share_one_body():
    """The as-designed kernel and its three fixes differ only in their header (which sets V11_FIXED): below the
    marker line every file is v11_pipeline.cu's body (scripts/gen_variants.py writes them)."""
    from flashcore.paths import KERNELS_DIR

    marker = "// ---- v11 body:"
    base = (KERNELS_DIR / "v11_pipeline.cu").read_text()
    body = base[base.index(marker):]
    for name, fixed in (("v11_fixed", "1"), ("v11_fixed_roles", "2"), ("v11_fixed_mbarrier", "3")):
        text = (KERNELS_DIR / f"{name}.cu").read_text()
        header = text[:text.index(marker)]
        assert text[text.index(marker):] == body, f"{name}: body differs; run scripts/gen_variants.py"
        assert f"#define V11_FIXED {fixed}" in header and f"#define V11_ENTRY {name}" in header


def _matrix_summary(kid, flagged):
    per = [dict(kernel=kid, shape="1,8,512,64", problems=3 if flagged else 0,
                first="Barrier error detected. Missing wait." if flagged else "",
                kinds=["Barrier error detected. Missing wait."] if flagged else [],
                frames=["cuda::__4::pipeline<(cuda::std::__4::thread_scope)2>::producer_commit()", kid] if flagged
                else [])]
    return dict(tool="synccheck", kernels=[kid], shapes="1,8,512,64", clean=not flagged, errors=3 if flagged else 0,
                finished=not flagged, timed_out=False, per_launch=per, summary="")


@pytest.mark.parametrize("pattern, expected", [("pair", True), ("everything", False)])
def test_sync_matrix_verdict_reads_the_pattern_from_the_record(tmp_path, pattern, expected):
    from flashcore.chapters import v11 as ch

    rec = _synthetic_record(tmp_path)
    pair = {"v11_ctl_guide", "v11_ctl_guide_idle", "v11_ctl_roles", "v11_ctl_raw_inc", "v11_fixed", "v11_fixed_roles"}
    ids = ch.control_ids() + list(ch.FIX_VARIANTS)
    flagged = pair if pattern == "pair" else set(ids)
    rec["extra"]["sync_matrix"] = dict(shape="1,8,512,64", kernels=ids, details={},
                                       summaries=[_matrix_summary(k, k in flagged) for k in ids])
    rec["extra"]["controls"] = [dict(kernel=k, S=512, passed=True) for k in ch.control_ids()]
    v = ch.sync_matrix_verdict(rec)
    assert v["as_predicted"] is expected and set(v["flagged"]) == flagged
    assert v["checks"] == len(ch.control_ids()) + 1 and v["checks_passed"] == v["checks"]
    table = ch.sync_matrix_table(rec)
    assert list(table.index) == ids
    assert table.loc["v11_fixed", "synccheck"] == "flagged"
    assert table.loc["v11_fixed", "at"] == "pipeline::producer_commit()"
    assert table.loc["v11_fixed", "report"] == "Missing wait."
    assert table.loc["v11_ctl_guide", "own check"] == "1/1"


def test_sync_matrix_verdict_without_a_matrix(tmp_path):
    from flashcore.chapters import v11 as ch

    assert ch.sync_matrix_verdict(_synthetic_record(tmp_path))["as_predicted"] is None


def test_sync_matrix_runs_one_synccheck_process_per_kernel(monkeypatch):
    from flashcore import sanitize
    from flashcore.chapters import v11 as ch

    calls = []

    def fake(tool, ids, shapes, timeout=600, extra=()):
        calls.append((tool, tuple(ids), shapes))
        return _matrix_summary(ids[0], ids[0] == "v11_fixed")

    monkeypatch.setattr(sanitize, "run_sanitizer", fake)
    monkeypatch.setattr(ch, "synccheck_detail", lambda kid, shape: dict(kernel=kid))
    m = ch.sync_matrix("1,8,512,64")
    ids = ch.control_ids() + list(ch.FIX_VARIANTS)
    assert sorted(calls) == sorted(("synccheck", (k,), "1,8,512,64") for k in ids)
    assert [s["kernels"][0] for s in m["summaries"]] == ids                    # the matrix keeps its order
    assert list(m["details"]) == ["v11_fixed"]                                  # details only where flagged
