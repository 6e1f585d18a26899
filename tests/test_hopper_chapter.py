"""Chapter 5 (the Hopper kernel) on the CPU: its page is drawn from the committed H200 record, its protocol table
comes from the model checker, and what it says matches what the record and the kernel headers hold."""
import re

import pytest

from flashcore import records
from flashcore.chapters import hopper
from flashcore.chapters.hopper import view
from flashcore.paths import KERNELS_DIR
from flashcore.specs import hopper as hopper_specs


@pytest.fixture(scope="module")
def rec():
    return records.newest(hopper.NOTEBOOK, device="h200")


def test_the_record_has_every_rung_checked_and_timed(rec):
    for kid in hopper.RUNGS:
        row = view.time_row(rec, kid)
        assert row and row["passed"] and row["median_us"] > 0, kid
    assert all(r["passed"] for r in rec["results"] if r.get("passed") is not None)


def test_predictions_are_the_kernel_headers_words():
    """PREDICTED repeats what each kernel header predicted before it ran: the numbers must be in the header."""
    for kid, pred in hopper.PREDICTED.items():
        head = kernels_source(kid).read_text()[:6000]
        assert re.search(rf"B4 H16 S4096 ≈ {pred['big_tflops']} TFLOP/s", head), kid


def kernels_source(kid):
    from flashcore import kernels

    return kernels.get(kid).path


def test_fa4_comes_from_the_reference_file_not_from_the_page():
    a = hopper.anchors()
    assert a[(4, 16, 4096)]["unit"] == "TFLOP/s"
    text = view.ANCHORS.read_text()
    value = a[(4, 16, 4096)][next(k for k in a[(4, 16, 4096)] if k.startswith("FA4"))]
    assert f"{value:g} TF" in text


def test_the_grid_pick_is_the_dispatch_rule_and_the_worst_ratio_is_named(rec):
    rows = hopper.pick_rows(rec)
    assert len(rows) >= 20
    from flashcore import dispatch

    for r in rows:
        assert r["pick"] == dispatch.choose(r["B"], r["H"], r["S"], r["S_kv"], dispatch.Device()).kernel
    w = hopper.worst_pick(rec)
    assert w["ratio"] == max(r["ratio"] for r in rows)
    assert w["shape"] in [r["shape"] for r in rows]


def test_the_summary_states_the_measured_numbers(rec):
    text = hopper.summary_md(rec)
    fin = view.time_row(rec, hopper.LIBRARY)
    assert view.fmt(fin["tflops"]) in text
    assert "tie" in text or "faster" in text or "slower" in text


def test_the_protocol_table_proves_the_kernels_protocol_and_catches_each_fault():
    rows = {r["protocol"]: r for r in view.protocol_rows()}
    proved = [k for k, r in rows.items() if r["verdict"].startswith("proved")]
    assert any("per-warp release" in k for k in proved)
    assert any("overlap" in k and "one-stage" not in k for k in proved)
    for k, r in rows.items():
        if k not in proved:
            assert r["first counterexample"] != "—", k
    assert rows["roles removed: every barrier counts the block (v11's bug)"]["verdict"] == "deadlock"


def test_the_fault_build_gave_up_with_the_producer_on_empty(rec):
    f = rec.ext("fault")
    assert not f["finished"]
    first = f["diagnosis"]["first"]
    assert first["role"] == "producer" and first["site"].startswith("empty[s]")
    assert all(w["finished"] for w in rec.ext("watchdog"))


def test_no_build_spills_or_serialises_a_wgmma(rec):
    rows = rec.ext("ptxas")
    assert rows and all(r["spill_stores"] == 0 and r["spill_loads"] == 0 and not r["wgmma_warnings"] for r in rows)
