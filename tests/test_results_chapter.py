"""Chapter 4 (results) on a CPU: the spread rule, the registry's story order, lines of code, every view on both
committed records (H100, H200) and on a record written by the chapter's own measure with the GPU faked, the
headline's numbers against the record, the charts' labels, and the notebook executed in replay by papermill."""
import json
import re
import textwrap
from pathlib import Path

import pytest

from flashcore import records
import importlib

from flashcore.chapters import results

cmp = importlib.import_module("flashcore.chapters.results.spread")
rm = importlib.import_module("flashcore.chapters.results.measure")   # the package's `measure` is the function
from flashcore.harness import bench
from flashcore.harness import measure as hm
from flashcore.tools import profile

ROOT = Path(__file__).resolve().parent.parent
H100 = ROOT / "runs" / "h100-80gb-hbm3" / "20261125T201634Z-04_results"
H200 = ROOT / "runs" / "h200" / "20261201T022916Z-04_results"   # the H200 book's live papermill run
COMMITTED = [H100, H200]
PROV = dict(gpu="Test GPU", gpu_slug="test-gpu", sm="sm_90", num_sms=132, driver="0", cuda="13.0", torch="x",
            cupy="x", commit="1" * 40, dirty=False, date="2026-01-01T00:00:00+00:00", command="pytest",
            notebook="04_results")


@pytest.fixture(autouse=True)
def _outputs_elsewhere(tmp_path, monkeypatch):
    """Charts and headline.md written by a test must never land in the committed figures/ and book/generated/."""
    monkeypatch.setenv("FLASHCORE_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("FLASHCORE_GENERATED_DIR", str(tmp_path / "generated"))


def row(median, p10=None, p90=None, **kw):
    return dict(dict(kernel="k", B=1, H=8, S=512, D=64), median_us=median,
                p10_us=median if p10 is None else p10, p90_us=median if p90 is None else p90, **kw)


# --------------------------------------------------------------------------------------------- the spread rule
def test_overlapping_ranges_are_a_tie():
    v = cmp.compare([row(6.5, 6.4, 6.7)], [row(6.6, 6.55, 6.8)], a="mine", b="theirs")
    assert v.outcome == cmp.TIE and v.overlap and not v.separated
    assert "overlap" in str(v)


def test_repeated_measurements_wider_than_the_gap_are_a_tie():
    """The H100 record's case: flashcore 6.57 µs in the summary, 6.40 µs in the sweep; Triton 6.69 and 6.73. The
    ranges separate, but the two flashcore measurements differ by more than the gap to Triton."""
    mine = [row(6.5704, 6.5406, 6.6466), row(6.3952, 6.3560, 6.5240)]
    tri = [row(6.6888, 6.6752, 6.7726), row(6.7296, 6.6848, 6.9224)]
    v = cmp.compare(mine, tri)
    assert not v.overlap and v.outcome == cmp.TIE
    assert v.gap_us == pytest.approx(6.6888 - 6.5704) and v.spread_us == pytest.approx(6.5704 - 6.3952)
    assert v.ratio == pytest.approx(6.5704 / 6.6888)          # the primary (first) measurements


def test_separated_measurements_are_a_win_and_the_mirror_a_loss():
    """The H200 record's case: flashcore 6.26 and 6.36 µs, Triton 6.96 and 6.79: a win, and seen from Triton a loss."""
    mine = [row(6.2576, 6.2400, 6.3365), row(6.3584, 6.3272, 6.4616)]
    tri = [row(6.9552, 6.9118, 7.0274), row(6.7872, 6.7648, 6.9256)]
    assert cmp.compare(mine, tri).outcome == cmp.FASTER
    assert cmp.compare(tri, mine).outcome == cmp.SLOWER


def test_record_noise_floor_turns_a_narrow_single_win_into_a_tie():
    a, b = [row(10.0, 9.9, 10.1)], [row(10.5, 10.4, 10.6)]
    assert cmp.compare(a, b).outcome == cmp.FASTER                 # 5 % apart, ranges separate
    assert cmp.compare(a, b, noise=0.04).outcome == cmp.FASTER     # a 4 % floor is 0.42 µs < 0.5 µs
    assert cmp.compare(a, b, noise=0.06).outcome == cmp.TIE        # a 6 % floor is 0.63 µs > 0.5 µs


def test_compare_refuses_what_it_cannot_judge():
    with pytest.raises(ValueError, match="timed measurement"):
        cmp.compare([dict(kernel="k", median_us=None)], [row(1.0)])
    with pytest.raises(ValueError, match="non-negative"):
        cmp.compare([row(1.0)], [row(2.0)], noise=-0.1)


def test_record_noise_is_the_largest_repeat_difference():
    rows = [row(9.476, kernel="sdpa_cudnn"), row(9.069, kernel="sdpa_cudnn"), row(6.57, kernel="flashcore"),
            row(6.40, kernel="flashcore"), row(3.0, kernel="flashcore", S=128)]
    n = cmp.record_noise(rows)
    assert n.kernel == "sdpa_cudnn" and n.fraction == pytest.approx((9.476 - 9.069) / 9.069)
    assert cmp.record_noise([row(1.0)]).fraction == 0.0


# --------------------------------------------------------------------------------------------- the registry
class _Spec:
    def __init__(self, id):
        self.id = id


def test_journey_is_story_order_and_takes_the_hopper_kernel_when_registered():
    reg = [_Spec(i) for i in ("flashcore", "v8_02_swizzle", "v11_fixed", "v8_seed", "v8_01_vec_async",
                              "v12_baseline", "v12_abl_1_grid", "v11_pipeline", "sdpa_thing")]
    assert rm.journey_ids(reg) == ["v12_baseline", "v11_fixed", "v8_seed", "v8_01_vec_async", "v8_02_swizzle",
                                   "flashcore"]
    assert rm.library_ids(reg) == ["flashcore"]
    reg.append(_Spec("flashcore_hopper"))
    assert rm.journey_ids(reg)[-2:] == ["flashcore", "flashcore_hopper"]
    assert rm.library_ids(reg) == ["flashcore", "flashcore_hopper"]


def test_journey_of_the_real_registry():
    from flashcore import kernels

    ids = results.journey_ids()
    assert ids[:3] == ["v12_baseline", "v11_fixed", "v8_seed"] and "flashcore" in ids
    assert all(kernels.get(i) for i in ids)


def test_code_lines_counts_code_not_comments_and_follows_project_headers(tmp_path):
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "h.cuh").write_text("// helper\n#pragma once\n__device__ int f() { return 1; }\n")
    k = tmp_path / "k.cu"
    k.write_text('// header\n/* block\n comment #include "common/h.cuh" */\n#include "common/h.cuh"\n'
                 '#include "common/h.cuh"\n#include <cuda_fp16.h>\n#define N 4\nint a;\n\n  // note\n'
                 'int b; // trailing\n')
    assert rm.code_lines(k, follow_includes=False) == 6       # 2 + 1 + #define + 2 statements
    assert rm.code_lines(k) == 6 + 2                          # the header once: #pragma and f()
    p = tmp_path / "k.py"
    p.write_text('"""doc\nstring"""\nimport x  # why\n# comment\n\ny = 1\n')
    assert rm.code_lines(p) == 2


# ----------------------------------------------------------------------------------- the measure, GPU faked
FAKE_US = {"v12_baseline": 900.0, "v11_fixed": 800.0, "v8_seed": 60.0, "flashcore": 5.0, "flashcore_hopper": 4.0,
           "sdpa_cudnn": 8.0, "sdpa_flash": 9.0, "sdpa_efficient": 20.0, "sdpa_default": 8.1,
           "triton_attention": 6.0, "fa4_hopper": 4.5}


def _fake_us(kid, S, B=1, H=8):
    """Made-up times (never shown in the book): our kernel wins short sequences, cuDNN long ones."""
    base = FAKE_US.get(kid, 10.0)
    grow = {"sdpa_cudnn": 1.6, "flashcore": 2.0, "flashcore_hopper": 1.7}.get(kid, 1.8)
    return base * (S / 512) ** grow * (B * H / 8)


def _contender(kid, check=True):
    def launch(q, k, v, o):
        import torch

        o.copy_(torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(o.dtype))

    def timed(q, k, v, o):
        return lambda: _fake_us(kid, q.shape[2], q.shape[0], q.shape[1])

    fields = (lambda shape: dict(config=dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3),
                                 source="triton_attention.py")) if kid == "triton_attention" else \
        (lambda shape: dict(source=f"{kid}.cu"))
    return hm.Contender(kid, launch=launch, timed=timed, check=check, fields=fields)


def _ncu_rows(shape):
    def r(kid, dur, inst, issue, grid, block, tensor, **kw):
        out = dict(kernel_name=kid, launch_label=f"{kid} {','.join(map(str, shape))}", duration_us=dur,
                   instructions=inst, issue_active_pct=issue, grid_size=grid, block_size=block,
                   tensor_pipe_pct=tensor, registers_per_thread=128, dynamic_smem_per_block=49152,
                   static_smem_per_block=0, theoretical_occupancy_pct=25.0, achieved_occupancy_pct=20.0,
                   dram_read_bytes=3.0e7, dram_write_bytes=8.0e6, l2_read_sectors=2.0e6, l2_write_sectors=2.5e5,
                   smem_bank_conflicts=100.0, sm_count=132, stall_long_scoreboard=0.5, stall_barrier=0.3,
                   stall_wait=0.8, stall_selected=1.0)
        out.update(kw)
        return out

    B, H, S = shape[:3]
    return [r("flashcore", 1100.0, 9.0e8, 60.0, B * H * S // 64, 128, 35.0, stall_mio_throttle=1.2),
            r("flashcore_hopper", 700.0, 5.0e8, 55.0, B * H * S // 128, 384, 60.0),
            r("sdpa_flash", 950.0, 6.0e8, 70.0, B * H * S // 128, 128, 45.0),
            r("sdpa_cudnn", 600.0, 4.0e8, 50.0, B * H * S // 128, 384, 70.0)]


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    """The harness's GPU calls replaced by CPU stand-ins; check_then_time and scaling_sweep themselves run."""
    torch = pytest.importorskip("torch")
    from functools import partial

    from flashcore.harness.check import CheckResult, make_inputs

    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda *a, **k: None)
    monkeypatch.setattr(hm, "make_inputs", partial(make_inputs, device="cpu"))

    def check_kernel(fn, B, H, S, D=64, seed=0, runs=3, S_kv=None, scale=None, kernel=""):
        q, k, v = make_inputs(B, H, min(S, 64), D, seed=seed, device="cpu")
        o = torch.empty_like(q)
        fn(q, k, v, o)                                            # the contender's launch path runs
        return CheckResult(kernel, B, H, S, S if S_kv is None else S_kv, D, seed, 1e-4, 1e-4, 2.1e-4, True, True,
                           runs, 0, 0)

    monkeypatch.setattr(hm, "check_kernel", check_kernel)
    monkeypatch.setattr(hm.bench, "time_graph", lambda fn, launches_per_graph=20, samples=50, **kw: bench.summarize(
        [fn() * f for f in (0.99, 1.0, 1.0, 1.01, 1.02)], launches_per_graph, "fake graph replay"))
    monkeypatch.setattr(hm, "kernel", lambda kid, defines=(): _contender(kid))
    monkeypatch.setattr(hm, "sdpa", lambda name, check=False: _contender(name, check=False))
    monkeypatch.setattr(hm, "triton", lambda check=True: _contender("triton_attention"))
    monkeypatch.setattr(hm, "fa4", lambda check=True: None)
    configs = [dict(BLOCK_M=m, BLOCK_N=n, num_warps=4, num_stages=s) for m in (64, 128) for n in (32, 64)
               for s in (2, 3)]
    monkeypatch.setattr(rm.triton_peer, "configs", lambda: configs)
    monkeypatch.setattr(rm.triton_peer, "best_config",
                        lambda S, S_kv=None: dict(BLOCK_M=64 if S <= 1024 else 128, BLOCK_N=64, num_warps=4,
                                                  num_stages=3 if S <= 1024 else 2))
    reports = []

    def ncu_profile(out_rep, kernels=(), shapes="", sdpa=(), sections=(), **kw):
        assert tuple(sections) == profile.BOOK_SECTIONS           # never --set full
        Path(out_rep).write_bytes(b"fake report")
        reports.append(dict(path=Path(out_rep), kernels=list(kernels), sdpa=list(sdpa), shapes=shapes))
        return Path(out_rep)

    monkeypatch.setattr(profile, "ncu_profile", ncu_profile)
    monkeypatch.setattr(profile, "read_report", lambda p: _ncu_rows(
        tuple(int(x) for x in next(r["shapes"] for r in reports if r["path"] == Path(p)).split(","))))
    return reports


def _measured_record(tmp_path, params=None):
    run = records.Run(results.NOTEBOOK, params=params, runs_dir=tmp_path / "runs", provenance=dict(PROV))
    p = dict(results.DEFAULTS, samples=9, sweep_S=[128, 512, 2048, 8192], **(params or {}))
    results.measure(run, p)
    return records.load(run.save()), p


def test_measure_with_the_gpu_faked(tmp_path, fake_gpu):
    rec, p = _measured_record(tmp_path)
    ids = results.journey_ids()
    mission = [r for r in rec["results"] if r.get("role") == "mission"]
    assert [r["kernel"] for r in mission] == ids + list(rm.SDPA_PEERS) + ["triton_attention"]
    assert all(r["median_us"] for r in mission)
    flash = rec.row(kernel="flashcore", role="mission")
    assert flash["lines_of_code"] == rm.code_lines(rm.kernels.get("flashcore").path)
    assert rec.row(kernel="triton_attention", role="mission")["lines_of_code"] == rm.triton_peer.kernel_lines()
    assert rec.ext("lines_rule") == rm.LINES_RULE and "headers" in results.summary_table(rec, show=False)
    tails = rec.rows(role="check", S=p["tail_S"])
    assert {r["kernel"] for r in tails} >= set(ids) | {"triton_attention"}
    assert {r["S"] for r in rec.ext("sweep")} == {128, 512, 2048, 8192}
    assert {r["kernel"] for r in rec.ext("sweep")} == {"flashcore", "flashcore_hopper", "sdpa_cudnn", "sdpa_flash",
                                                      "triton_attention"}
    big = rec.rows(role="big")
    assert {r["kernel"] for r in big} == {"flashcore", "flashcore_hopper", "sdpa_cudnn", "sdpa_flash", "triton_attention"}
    assert rec.row(kernel="flashcore", role="big")["passed"] is True
    assert rec.ext("triton")["configs_searched"] == 8 and set(rec.ext("triton")["chosen"]) >= {"512", "4096"}
    # two ncu reports, sections only, our kernel beside cuDNN (mission) and beside FA2 and cuDNN (long S)
    assert [(r["kernels"], r["sdpa"], r["shapes"]) for r in fake_gpu] == [
        (["flashcore", "flashcore_hopper"], ["cudnn"], "1,8,512,64"),
        (["flashcore", "flashcore_hopper"], ["flash", "cudnn"], "4,16,4096,64")]
    assert rec.ext("long_s_profile")["report"] == "long_s_profile.ncu-rep"
    assert sorted(rec["files"]) == ["long_s_profile.ncu-rep", "mission_profile.ncu-rep"]
    assert flash["ncu_report"] == "mission_profile.ncu-rep"


def test_measure_records_a_failed_profile_and_keeps_the_timings(tmp_path, fake_gpu, monkeypatch):
    def broken(*a, **k):
        raise FileNotFoundError("ncu (Nsight Compute) not found on this machine")

    monkeypatch.setattr(profile, "ncu_profile", broken)
    rec, _ = _measured_record(tmp_path)
    assert "not found" in rec.ext("long_s_profile")["error"]
    assert "failed" in results.long_s_markdown(rec)
    assert rec.rows(role="mission")


def test_the_hopper_kernel_and_fa4_join_everything_when_present(tmp_path, fake_gpu, monkeypatch):
    real = rm.kernels.all_specs()
    flash = rm.kernels.get("flashcore")
    import dataclasses

    hopper = dataclasses.replace(flash, id="flashcore_hopper")
    monkeypatch.setattr(rm.kernels, "all_specs", lambda chapter=None: real + [hopper])
    monkeypatch.setattr(rm.kernels, "get", lambda i: hopper if i == "flashcore_hopper" else flash
                        if i == "flashcore" else next(s for s in real if s.id == i))
    monkeypatch.setattr(hm, "fa4", lambda check=True: _contender("fa4_hopper"))     # FA4 installed, too
    rec, _ = _measured_record(tmp_path)
    assert rec.row(kernel="fa4_hopper", role="mission")["passed"] is True
    assert "fa4_hopper" in {r["kernel"] for r in rec.ext("sweep")} and rec.ext("fa4") is True
    assert results.ours(rec) == ["flashcore", "flashcore_hopper"]
    assert rec.ext("journey")[-1] == "flashcore_hopper"
    assert {r["kernel"] for r in rec.ext("sweep")} >= {"flashcore", "flashcore_hopper"}
    assert "flashcore_hopper" in {r["kernel"] for r in rec.rows(role="big")}
    # the headline leads with the faster library kernel at the mission shape and names the other
    assert results.headline(rec)["kernel"] == "flashcore_hopper"
    assert "flashcore" in results.headline_markdown(rec)
    assert len(results.sweep_tables(rec, show=False)) == 3       # times + one verdict table per library kernel


# ------------------------------------------------------------------------------------ every view, every record
VIEWS_TEXT = ["headline_markdown", "noise_markdown", "journey_markdown", "sweep_markdown", "long_s_markdown",
              "mission_profile_markdown", "dsl_markdown", "limits_markdown"]


def _all_views(rec):
    out = {name: getattr(results, name)(rec) for name in VIEWS_TEXT}
    out["tables"] = "".join([results.summary_table(rec, show=False), *results.sweep_tables(rec, show=False),
                             results.big_table(rec, show=False), *results.profile_tables(rec, "long_s", show=False),
                             *results.profile_tables(rec, "mission", show=False),
                             results.triton_config_table(rec, show=False)])
    out["figures"] = {n: getattr(results, f)(rec) for n, f in (
        ("headline", "plot_headline"), ("04_results_journey", "plot_journey"), ("04_results_scaling", "plot_scaling"),
        ("04_results_loc", "plot_loc"), ("04_results_dsl", "plot_dsl"))}
    results.write_headline(rec, show=False)
    return out


@pytest.fixture(params=["h100", "h200", "measured"])
def any_record(request, tmp_path):
    if request.param == "h100":
        return records.load(H100)
    if request.param == "h200":
        return records.load(H200)
    fake = request.getfixturevalue("fake_gpu")
    assert fake is not None
    return _measured_record(tmp_path)[0]


def test_every_view_on_every_record(any_record, tmp_path):
    out = _all_views(any_record)
    figures = {p.stem for p in (tmp_path / "figures").glob("*.png")}
    assert figures == set(results.FIGURES), "FIGURES must list exactly the charts the page draws"
    assert (tmp_path / "generated" / "headline.md").read_text() == out["headline_markdown"]
    cells = re.sub(r"<[^>]+>", "|", out["tables"])
    for bad in ("NaN", "None", "nan"):
        assert bad not in cells, f"{bad!r} in a table"
    assert not re.search(r"\(\s*['\d.]+\s*,|\[", cells), "a Python tuple or list in a table"
    html = out["tables"]
    assert "v8_05_mma_registers" not in html and "sdpa_cudnn" not in html   # readable labels, never raw ids
    for name in VIEWS_TEXT:
        assert "None" not in out[name] and "nan" not in out[name].lower().replace("nanosecond", ""), name


def test_old_records_say_they_predate_the_long_sequence_profile():
    rec = records.load(H100)                                          # written before the long-S profile existed
    assert "predates the comparison" in results.long_s_markdown(rec)
    assert results.profile_table_rows(rec, "long_s") == []
    assert results.profile_table_rows(rec, "mission")                 # the mission-shape report still reads
    assert "predates the per-length record" in results.dsl_markdown(rec)
    new = records.load(H200)                                          # the live run of the new measure has both
    assert "predates" not in results.long_s_markdown(new) and results.profile_table_rows(new, "long_s")


def test_long_sequence_findings_are_computed_from_the_report(tmp_path, fake_gpu):
    rec, _ = _measured_record(tmp_path)
    found = " ".join(results.long_s_findings(rec))
    rows = {r["launch_label"].split()[0]: r for r in _ncu_rows((4, 16, 4096, 64))}
    a, b = rows["flashcore"], rows["sdpa_flash"]
    assert f"{a['instructions'] / b['instructions']:.2f}× FA2's instructions" in found
    assert f"{a['duration_us'] / b['duration_us']:.2f}× its time" in found
    assert "64 query rows each" in found and "128 rows each" in found
    l2 = {k: r["l2_read_sectors"] + r["l2_write_sectors"] for k, r in rows.items()}
    assert f"({l2['flashcore'] / l2['sdpa_flash']:.2f}×)" in found
    table = results.profile_table_rows(rec, "long_s")
    assert [list(r) for r in table][0] == ["metric", "flashcore", "flashcore (Hopper)", "FlashAttention-2 (SDPA)",
                                           "cuDNN (SDPA)"]


# --------------------------------------------------------------------------------- the headline vs the record
def _fmt_us(x):
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _fmt_ratio(x):
    return f"{x:.2f}" if x < 10 else f"{x:.3g}" if x < 100 else f"{x:.0f}"


def _expected_headline_numbers(raw):
    """Every number the headline may print, computed here from the raw JSON record (not through the views)."""
    B, H, S, D = raw["extra"]["mission"]
    Bb, Hb, Sb, Db = raw["extra"]["big"]
    res = [r for r in raw["results"] if r.get("role") != "check"]
    at = {r["kernel"]: r for r in res
          if (r["B"], r["H"], r["S"]) == (B, H, S) and r.get("role", "mission") == "mission"}
    big = {r["kernel"]: r for r in res if (r["B"], r["H"], r["S"]) == (Bb, Hb, Sb) and r.get("median_us")}
    sweep = [r for r in raw["extra"]["sweep"] if r.get("median_us")]
    me = "flashcore"
    nums = {str(x) for x in (B, H, S, D, Bb, Hb, Sb, Db)} | {str(r["S"]) for r in sweep}
    for k in (me, "sdpa_cudnn", "sdpa_flash", "triton_attention", "v8_seed", "v12_baseline"):
        nums |= {_fmt_us(at[k][f]) for f in ("median_us", "p10_us", "p90_us")}
    for k in ("sdpa_cudnn", "sdpa_flash", "triton_attention"):
        nums.add(_fmt_ratio(at[me]["median_us"] / at[k]["median_us"]))
    nums.add(_fmt_ratio(at["v8_seed"]["median_us"] / at[me]["median_us"]))
    nums.add(_fmt_ratio(at["v12_baseline"]["median_us"] / at["sdpa_cudnn"]["median_us"]))
    nums.add(str(at["triton_attention"]["lines_of_code"]))
    # the tie's reason: two measurements of the same kernel at the mission shape and the gap
    for k in (me, "triton_attention"):
        meds = [r["median_us"] for r in res + sweep if r["kernel"] == k and (r["B"], r["H"], r["S"]) == (B, H, S)
                and r.get("role", "mission") != "big"]
        nums |= {_fmt_us(m) for m in meds} | {f"{max(meds) - min(meds):.2f}"}
    sw = {(r["kernel"], r["S"]): r for r in sweep}
    lengths = sorted({r["S"] for r in sweep})
    nums |= {str(len(lengths))} | {str(n) for n in range(len(lengths) + 1)}
    for k in ("sdpa_cudnn", "sdpa_flash"):
        nums |= {f"{sw[(me, s)]['tflops'] / sw[(k, s)]['tflops']:.2f}" for s in lengths}
    nums.add(f"{at['triton_attention']['median_us'] - at[me]['median_us']:.2f}")
    nums.add(f"{big[me]['tflops']:.0f}")
    nums |= {_fmt_ratio(big[me]["tflops"] / big[k]["tflops"]) for k in big if k != me}
    return nums


@pytest.mark.parametrize("path", COMMITTED, ids=["h100", "h200"])
def test_every_number_in_the_headline_is_the_records(path):
    rec = records.load(path)
    raw = json.loads((path / "run.json").read_text())
    text = results.headline_markdown(rec)
    stripped = re.sub(r"\{download\}`[^`]*`", "", text)                        # the record's link
    stripped = stripped.replace(rec["provenance"]["gpu"], "GPU")
    for words in ("p10–p90", "fp16", "FlashAttention-2", "NVIDIA L4", "chapter 1", "chapter 3", "`v8_seed`", "v12"):
        stripped = stripped.replace(words, "")
    stripped = re.sub(r"\b[BHSD](\d+)", r" \1", stripped)                     # B1 H8 S512 D64 → the numbers
    printed = re.findall(r"\d+(?:\.\d+)?", stripped)
    allowed = _expected_headline_numbers(raw)
    stray = [n for n in printed if n not in allowed]
    assert not stray, f"numbers in the headline that the record does not give: {stray}"


def test_headline_states_scope_wins_losses_and_history_h100():
    rec = records.load(H100)
    raw = json.loads((H100 / "run.json").read_text())
    text = results.headline_markdown(rec)
    at = {r["kernel"]: r for r in raw["results"] if r["S"] == 512 and r["B"] == 1}
    fc, tri = at["flashcore"], at["triton_attention"]
    assert "Scope: one shape" in text and "B = 1, H = 8, S = 512, D = 64" in text
    assert f"**{_fmt_us(fc['median_us'])} µs** for `flashcore` (p10–p90 {_fmt_us(fc['p10_us'])}–" \
           f"{_fmt_us(fc['p90_us'])})" in text
    # Triton's median sits next to Triton's own range (the first edition put flashcore's range there)
    tri_range = f"{_fmt_us(tri['p10_us'])}–{_fmt_us(tri['p90_us'])}"
    assert f"Triton takes {_fmt_us(tri['median_us'])} µs (p10–p90 {tri_range})" in text
    assert "**a tie**" in text and "1.02×" not in text
    sweep_fc = next(r for r in raw["extra"]["sweep"] if r["kernel"] == "flashcore" and r["S"] == 512)
    assert f"{_fmt_us(fc['median_us'])} µs and {_fmt_us(sweep_fc['median_us'])} µs" in text
    assert "Where `flashcore` loses" in text and "7 of 8 lengths" in text
    assert "From S = 2048 up, `flashcore` is slower than cuDNN" in text
    assert "From S = 2048 up, `flashcore` is slower than FlashAttention-2" in text
    assert f"{_fmt_ratio(at['v8_seed']['median_us'] / fc['median_us'])}× less time than `v8_seed`" in text
    assert f"{_fmt_ratio(at['v12_baseline']['median_us'] / at['sdpa_cudnn']['median_us'])}× cuDNN's time" in text
    assert "L4" in text and not re.search(r"\b(fifty|\w+ty) times\b", text)   # history, no unbacked multiple
    assert "fifty times" in results.journey_markdown(rec)                       # quoted as history in the chapter
    assert "faster than the correct baseline" not in text          # no 242×-style ratio against v12


def test_headline_claims_the_h200_win_over_triton():
    text = results.headline_markdown(records.load(H200))
    assert "**a tie**" not in text.split("Where `flashcore` loses")[0]
    assert "× the time of Triton**" in text


def test_headline_numbers_for_the_landing_page_test():
    rec = records.load(H100)
    nums = results.headline_numbers(rec)
    text = results.headline_markdown(rec)
    assert nums["vs_triton"] == "tie" and nums["run_id"] == rec["run_id"]
    for key, value in nums.items():
        if key not in ("vs_triton", "gpu", "run_id", "cudnn_slower_from", "triton_faster_lengths"):
            assert value in text, f"{key} = {value!r} is not printed in the headline"


# --------------------------------------------------------------------------------------------- the charts
def _drawn(fig):
    """A figure plots.save has closed, given a canvas again so it can be laid out and measured."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig


def _boxes(fig, gid):
    _drawn(fig)
    r = fig.canvas.get_renderer()
    return [t.get_window_extent(r) for ax in fig.axes for t in ax.texts if t.get_gid() == gid]


def _overlap(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("path", COMMITTED, ids=["h100", "h200"])
def test_value_labels_never_touch_reference_lines_or_each_other(path):
    rec = records.load(path)
    for fig in (results.plot_journey(rec), results.plot_headline(rec), results.plot_loc(rec)):
        boxes = _boxes(fig, "value-label")
        assert boxes
        r = fig.canvas.get_renderer()
        for ax in fig.axes:
            for line in ax.lines:
                xs = set(line.get_xdata()) if len(set(line.get_xdata())) == 1 else None
                if xs is None:
                    continue                                    # not a vertical reference line
                x = ax.transData.transform((list(xs)[0], 1))[0]
                ax_box = ax.get_window_extent(r)
                for b in boxes:
                    if ax_box.y0 <= b.y0 <= ax_box.y1:
                        assert not (b.x0 <= x <= b.x1), "a value label sits on a reference line"
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not _overlap(a, b), "two value labels overlap"


def test_source_note_sits_below_every_tick_label():
    rec = records.load(H100)
    fig = _drawn(results.plot_headline(rec))
    r = fig.canvas.get_renderer()
    note = [t for t in fig.texts if t.get_text().startswith("data: run")]
    assert len(note) == 1
    lowest = min(ax.get_tightbbox(r).y0 for ax in fig.axes)
    assert note[0].get_window_extent(r).y1 <= lowest + 1


def test_chart_axes_use_readable_labels():
    rec = records.load(H100)
    fig = results.plot_journey(rec)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "v8 seed" in ticks and not any(re.fullmatch(r"v8_\d\d_\w+", t) for t in ticks)
    assert fig.axes[0].get_xlabel().startswith("time per call, µs")


# --------------------------------------------------------------------------------------------- the notebook
NB = ROOT / "notebooks" / "04_results.ipynb"
TEACHING = ("rec = book.chapter(", "results.verdict(")


def test_parameters_cell_parses_cleanly(caplog):
    from papermill.inspection import inspect_notebook

    with caplog.at_level("WARNING"):
        params = inspect_notebook(str(NB))
    assert not [r for r in caplog.records if "Unable to parse" in r.getMessage()]
    assert set(params) == {"mode", "B", "H", "S", "D", "tail_S", "sweep_S", "sweep_BH", "big", "samples", "device"}
    assert params["device"]["default"] == "None"
    defaults = {k: v for k, v in results.DEFAULTS.items()}
    for k in ("B", "H", "S", "D", "tail_S", "samples"):
        assert int(params[k]["default"]) == defaults[k]


def test_only_teaching_cells_show_their_code():
    import nbformat

    nb = nbformat.read(str(NB), as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        teaches = any(t in cell.source for t in TEACHING)
        assert ("remove-input" in tags) != teaches, f"cell {cell.source[:60]!r}: tags {tags}"


def test_notebook_executes_in_replay_on_a_measured_record(tmp_path, fake_gpu, monkeypatch):
    """measure → record → the notebook itself, executed by papermill in replay against that record."""
    papermill = pytest.importorskip("papermill")
    nbformat = pytest.importorskip("nbformat")
    rec, _ = _measured_record(tmp_path)
    ipy = tmp_path / "ipython"
    (ipy / "profile_default" / "startup").mkdir(parents=True)
    (ipy / "profile_default" / "startup" / "00-records.py").write_text(textwrap.dedent(f"""
        import pathlib
        import flashcore.book as _book
        import flashcore.records as _records
        _records.newest.__defaults__ = (None, pathlib.Path({str(tmp_path / 'runs')!r}))
        _book.STATUS_DIR = pathlib.Path({str(tmp_path / 'status')!r})
    """))
    monkeypatch.setenv("IPYTHONDIR", str(ipy))
    out = tmp_path / "04_results.ipynb"
    papermill.execute_notebook(str(NB), str(out), parameters=dict(mode="replay", device="test-gpu"),
                               kernel_name="python3", cwd=str(ROOT), progress_bar=False)
    nb = nbformat.read(str(out), as_version=4)
    text = json.dumps([o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])])
    assert '"output_type": "error"' not in text
    for name in results.FIGURES:
        assert f'data-figure=\\"{name}\\"' in text, f"the page does not show {name}"
    assert rec["run_id"] in text, "the page does not name its record"
    assert re.search(r"Where `flashcore\w*` wins|Where each of our kernels", text), "the headline lost its wins/losses"
    assert "executes" in text                                      # the long-S comparison's findings
    assert (tmp_path / "generated" / "headline.md").exists()
    assert not (tmp_path / "status").exists() or (tmp_path / "status" / "04_results.json").exists()
