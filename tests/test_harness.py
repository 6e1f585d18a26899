"""The measurement harness on a CPU: compile, pass rule, records and replay, the ncu reader, modes."""
import json
import shutil
from pathlib import Path

import pytest

from flashcore import book, compile as fc_compile, records
from flashcore.harness import bench, check
from flashcore.tools import driver, profile, sass
from flashcore.kernels import KernelSpec, LaunchShape, cdiv, get

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------ compile
def test_nvcc_compile_reports_resources(tmp_path):
    rep = fc_compile.nvcc_compile(DATA / "tiny_attention.cu", arch="sm_90", out_dir=tmp_path)
    assert rep.kernel == "tiny_attention" and rep.arch == "sm_90"
    assert rep.registers > 0 and not rep.spills and Path(rep.cubin).is_file()


def test_nvcc_compile_sm89_too(tmp_path):
    assert fc_compile.nvcc_compile(DATA / "tiny_attention.cu", arch="sm_89", out_dir=tmp_path).arch == "sm_89"


def test_compile_error_names_the_line(tmp_path):
    with pytest.raises(fc_compile.CompileError) as err:
        fc_compile.nvcc_compile(DATA / "broken.cu", out_dir=tmp_path)
    assert "this_name_does_not_exist" in str(err.value)
    assert "broken.cu:3" in err.value.excerpt


def test_compile_bad_arguments():
    with pytest.raises(ValueError, match="arch"):
        fc_compile.nvcc_compile(DATA / "tiny_attention.cu", arch="90")
    with pytest.raises(FileNotFoundError):
        fc_compile.nvcc_compile(DATA / "nope.cu")
    with pytest.raises(TypeError, match="KernelSpec"):
        fc_compile.load_kernel("v12_baseline")


def test_parse_ptxas_spills():
    log = ("ptxas info    : Compiling entry function 'k' for 'sm_90'\n"
           "ptxas info    : Function properties for k\n"
           "    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n"
           "ptxas info    : Used 255 registers, used 1 barriers, 4096 bytes smem, 400 bytes cmem[0]\n")
    r = fc_compile.parse_ptxas(log)["k"]
    assert r == dict(arch="sm_90", registers=255, smem_bytes=4096, stack_bytes=16, spill_stores=8, spill_loads=12)


def test_sass_counts():
    text = ("        /*0120*/                   HMMA.16816.F32 R4, R8, R12, R4 ;  /* 0x... */\n"
            "        /*0130*/                   LDSM.16.M88.4 R8, [R2] ;  /* 0x... */\n"
            "        /*0140*/                   LDGSTS.E.BYPASS.128 [R3], desc[UR4][R6.64] ;  /* 0x... */\n"
            "        /*0150*/                   LDG.E.128 R4, desc[UR4][R2.64] ;  /* 0x... */\n")
    c = sass.instruction_counts(text)
    assert (c["HMMA"], c["LDSM"], c["LDGSTS"], c["LDG.128"], c["LDL"]) == (1, 1, 1, 1, 0)


# ------------------------------------------------------------------------------------------------ registry
def test_registry_rejects_unknown_id():
    with pytest.raises(KeyError, match="unknown kernel id"):
        get("no_such_kernel")
    with pytest.raises(TypeError):
        get(12)


def test_cdiv_and_launch_shape():
    assert cdiv(512, 48) == 11 and cdiv(1, 64) == 1
    spec = KernelSpec(id="t", source="x.cu", entry="x", threads=128, grid=lambda s: (cdiv(s.seq_q, 64), s.bh, 1))
    assert spec.grid(LaunchShape(bh=8, seq_q=512, seq_kv=512)) == (8, 8, 1)


# ------------------------------------------------------------------------------------------------ check
def test_pass_rule_right_and_wrong_outputs():
    torch = pytest.importorskip("torch")
    from flashcore.harness.reference import attention_ref64

    q, k, v = check.make_inputs(1, 2, 33, 64, seed=3, device="cpu")
    ref = attention_ref64(q, k, v)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float()).half()
    sdpa_err = float((sdpa.double() - ref).abs().max())
    right = check.compare(ref.half(), ref, sdpa_err)
    assert right["passed"] and right["unwritten"] == 0
    wrong = ref.half().clone()
    wrong[0, 1, 7, 3] += 0.05          # one wrong element
    assert not check.compare(wrong, ref, sdpa_err)["passed"]
    unwritten = ref.half().clone()
    unwritten[0, 0, 0, 0] = float("nan")  # one element the kernel never wrote (still poison)
    res = check.compare(unwritten, ref, sdpa_err)
    assert not res["passed"] and res["unwritten"] == 1


def test_pass_rule_edges():
    assert check.passes(0.0, 0.0)
    assert not check.passes(float("nan"), 1.0)
    assert check.passes(2e-3 + 1e-5, 1e-3) and not check.passes(2.1e-3 + 1e-5, 1e-3)


def test_make_inputs_is_seeded_and_validates():
    pytest.importorskip("torch")
    a = check.make_inputs(1, 1, 4, 64, seed=5, device="cpu")[0]
    b = check.make_inputs(1, 1, 4, 64, seed=5, device="cpu")[0]
    c = check.make_inputs(1, 1, 4, 64, seed=6, device="cpu")[0]
    assert (a == b).all() and not (a == c).all()
    with pytest.raises(ValueError, match="S must be a positive int"):
        check.make_inputs(1, 1, 0, 64, device="cpu")


# ------------------------------------------------------------------------------------------------ bench
def test_summarize_percentiles():
    t = bench.summarize([5.0, 1.0, 3.0, 2.0, 4.0], 10, "m")
    assert (t.median_us, t.p10_us, t.p90_us) == (3.0, 1.4, 4.6)
    assert bench.attention_flops(1, 8, 512, 64) == 4 * 8 * 512 * 512 * 64
    with pytest.raises(ValueError):
        bench.summarize([], 1, "m")


def test_driver_parses_shapes():
    assert driver.parse_shapes("1,8,512,64; 2,2,17,64,33") == [(1, 8, 512, 64), (2, 2, 17, 64, 33)]
    for bad in ("1,8,512", "1,8,0,64", "a,b,c,d", ""):
        with pytest.raises(ValueError):
            driver.parse_shapes(bad)


# ------------------------------------------------------------------------------------------------ records
FAKE_PROV = dict(gpu="NVIDIA Test GPU", gpu_slug="test-gpu", sm="sm_90", driver="0", cuda="13.0", torch="x",
                 cupy="x", commit="0" * 40, dirty=False, date="2026-01-01T00:00:00+00:00", command="pytest",
                 notebook="nb_test")


def _run(tmp_path, date="2026-01-01T00:00:00+00:00"):
    run = records.Run("nb_test", params=dict(S=512), runs_dir=tmp_path, provenance=dict(FAKE_PROV, date=date))
    timing = bench.summarize([1.0, 2.0, 3.0], 20, "cuda-graph replay")
    run.add_result("k1", 1, 8, 512, 64, timing=timing)
    run.extra["note"] = {"x": float("nan")}
    return run


def test_record_round_trip_and_write_once(tmp_path):
    run = _run(tmp_path)
    path = run.save()
    rec = records.load(path)
    assert rec.row(kernel="k1")["median_us"] == 2.0
    assert rec["extra"]["note"]["x"] == "nan"           # JSON has no NaN: it says so
    assert rec.provenance["commit"] == "0" * 40
    with pytest.raises(records.RecordError, match="never edited"):
        run.save()
    with pytest.raises(records.RecordError, match="no result row"):
        rec.row(kernel="k2")
    with pytest.raises(records.RecordError, match="extra"):
        rec.ext("missing")


def test_record_validation_names_missing_fields():
    with pytest.raises(records.RecordError, match="provenance.commit"):
        records.validate(dict(run_id="x", provenance={k: v for k, v in FAKE_PROV.items() if k != "commit"},
                              results=[]))
    with pytest.raises(records.RecordError, match="lacks B, H.*median_us"):
        records.validate(dict(run_id="x", provenance=FAKE_PROV, results=[{"kernel": "a"}]))


def test_replay_picks_newest(tmp_path):
    import time

    _run(tmp_path, date="2026-01-01T00:00:00+00:00").save()
    time.sleep(1.1)
    newer = _run(tmp_path, date="2026-02-01T00:00:00+00:00")
    newer.save()
    assert records.newest("nb_test", runs_dir=tmp_path)["run_id"] == newer.run_id
    assert records.newest("nb_test", device="test-gpu", runs_dir=tmp_path)["run_id"] == newer.run_id
    with pytest.raises(records.RecordError, match="no recorded run"):
        records.newest("nb_test", device="other-gpu", runs_dir=tmp_path)


def test_schema_file_lists_required_fields():
    schema = json.loads((ROOT / "runs" / "schema.json").read_text())
    assert set(records.PROVENANCE_FIELDS) <= set(schema["properties"]["provenance"]["required"])
    assert set(records.RESULT_FIELDS) <= set(schema["properties"]["results"]["items"]["required"])


def test_committed_records_are_valid():
    recs = list(records.all_records())
    assert recs, "runs/ holds no committed record"
    for rec in recs:
        assert rec.dir.parent.name == rec.provenance.get("gpu_slug", rec.dir.parent.name)
        for f in rec.get("files", []):
            assert (rec.dir / f).is_file(), f"{rec['run_id']} lists {f}, which is missing"


# ------------------------------------------------------------------------------------------------ modes
def test_modes():
    with pytest.raises(ValueError, match="mode must be one of"):
        book.resolve_mode("fast")
    assert book.resolve_mode("replay") == "replay"
    if not book.gpu_available():
        assert book.resolve_mode("auto") == "replay"
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            book.resolve_mode("live")


def test_replay_banner_names_run(tmp_path):
    rec = records.load(_run(tmp_path).save())
    html = book.banner_html(rec, "replay")
    assert rec["run_id"] in html and "NVIDIA Test GPU" in html and "0000000000" in html


# ------------------------------------------------------------------------------------------------ ncu reader
def _method_record():
    return records.newest("00_method")


def test_ncu_reader_on_committed_report():
    rec = _method_record()
    reports = rec.ext("ncu_reports")
    rows = profile.read_report(rec.file(reports.get("base_clocks") or reports["full"]))   # key renamed in chapter 0
    labels = {r["launch_label"].split(" ")[0] for r in rows}
    assert {"sdpa_cudnn", "sdpa_flash", "empty_kernel"} <= labels
    cudnn = profile.rows_for(rows, "sdpa_cudnn")[0]
    assert cudnn["duration_us"] > 0 and cudnn["grid_size"] >= 1 and cudnn["tensor_pipe_pct"] is not None
    assert profile.stall_breakdown(cudnn)
    with pytest.raises(FileNotFoundError):
        profile.read_report(ROOT / "runs" / "missing.ncu-rep")


# ------------------------------------------------------------------------------------ the one measuring routine
def _fake_measure(monkeypatch):
    import torch

    from flashcore.harness import measure

    checks = []

    def fake_check(fn, B, H, S, D=64, seed=0, runs=3, S_kv=None, scale=None, kernel=""):
        checks.append((kernel, S, S_kv))
        ok = "wrong" not in kernel
        return check.CheckResult(kernel, B, H, S, S_kv or S, D, seed, 1e-3 if ok else 1.0, 1e-3, 2.01e-3, ok, True,
                                 runs, 0, 0)

    timed = []

    def fake_time(fn, launches_per_graph=20, samples=50, warmup=3, flush=False):
        timed.append(fn.__name__)
        return bench.summarize([4.0, 5.0, 6.0], launches_per_graph, "fake")

    monkeypatch.setattr(measure, "check_kernel", fake_check)
    monkeypatch.setattr(bench, "time_graph", fake_time)
    monkeypatch.setattr(measure, "make_inputs", lambda *a, **kw: (torch.zeros(1), torch.zeros(1), torch.zeros(1)))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **kw: None)

    def contender(kid, check=True, expect_failure=False, boom=False):
        def fn():
            return None
        fn.__name__ = kid

        def timed_fn(q, k, v, o):
            if boom:
                raise RuntimeError("no kernel image for this shape")
            return fn
        return measure.Contender(kid, launch=lambda q, k, v, o: None, timed=timed_fn, check=check,
                                 expect_failure=expect_failure, fields=lambda shape: dict(source=f"{kid}.cu"))
    return measure, contender, checks, timed


def test_check_then_time_times_only_what_passed(tmp_path, monkeypatch):
    measure, contender, checks, timed = _fake_measure(monkeypatch)
    run = _run(tmp_path)
    rows = measure.check_then_time(run, [contender("good"), contender("wrong"), contender("kept_wrong",
                                   expect_failure=True), contender("peer", check=False), contender("boom", boom=True)],
                                   1, 8, 512, lpg=20, role="mission", check_shapes=[(1, 8, 1000)])
    assert timed == ["good", "kept_wrong", "peer"]                      # a failed check is never timed
    assert rows["good"]["median_us"] == 5.0 and rows["good"]["tflops"] > 0 and rows["good"]["role"] == "mission"
    assert rows["wrong"]["passed"] is False and rows["wrong"]["median_us"] is None
    assert rows["kept_wrong"]["passed"] is False and rows["kept_wrong"]["median_us"] == 5.0
    assert rows["peer"]["passed"] is None and rows["peer"]["median_us"] == 5.0      # the yardstick, not checked
    assert "no kernel image" in rows["boom"]["error"] and rows["boom"]["median_us"] is None
    assert rows["good"]["source"] == "good.cu"
    extra = [r for r in run.results if r.get("role") == "check"]
    assert {(r["kernel"], r["S"]) for r in extra} == {(k, 1000) for k in ("good", "wrong", "kept_wrong", "peer",
                                                                             "boom")}
    assert ("good", 1000, 1000) in checks and not any(c[0] == "peer" for c in checks)


def test_scaling_sweep_rows_and_errors(monkeypatch):
    measure, contender, _, _ = _fake_measure(monkeypatch)
    monkeypatch.setattr("torch.cuda.empty_cache", lambda: None)
    rows = measure.scaling_sweep([contender("a"), contender("b", boom=True)], [(1, 8, 128), (4, 16, 4096, 1024)])
    assert [(r["kernel"], r["S"], r["S_kv"]) for r in rows] == [("a", 128, 128), ("b", 128, 128), ("a", 4096, 1024),
                                                                 ("b", 4096, 1024)]
    assert rows[0]["median_us"] == 5.0 and "error" in rows[1] and "median_us" not in rows[1]


# ------------------------------------------------------------------------------------------- the page's pieces
def test_table_shows_no_nan_none_or_index():
    import math

    html = book.table([dict(kernel="a", us=1.23456, ratio=None, err=float("nan"), shape=(1, 8, 512), ok=True)],
                      show=False)
    assert "NaN" not in html and "None" not in html and "nan" not in html.lower().replace("nanoseconds", "")
    assert "1.23" in html and "1×8×512" in html and "yes" in html and html.count("—") == 2
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame([dict(x=1.0, y=math.nan)])                   # an unnamed index is not a column
    assert "<th>x</th><th>y</th>" in book.table(df, show=False).replace("\n", "")
    assert book.fmt(12345.6) == "12,346" and book.fmt(0.000123) == "1.2e-04" and book.fmt(None) == "—"


def test_dropdown_escapes_logs():
    out = book.dropdown("3 reports", code="<error> & more", show=False)
    assert "<details" in out and "&lt;error&gt; &amp; more" in out and "3 reports" in out


def test_book_gpu_is_one_parameter_or_the_newest_complete_set(tmp_path, monkeypatch):
    from flashcore.chapters import CHAPTERS

    def rec(slug, nb, date):
        run = records.Run(nb, runs_dir=tmp_path, provenance=dict(FAKE_PROV, gpu_slug=slug, notebook=nb, date=date))
        run.add_result("k", 1, 8, 512)
        run.save()

    for nb in CHAPTERS:
        rec("old-gpu", nb, "2026-01-01T00:00:00+00:00")
    rec("new-gpu", "04_results", "2026-02-01T00:00:00+00:00")          # newer, but not complete
    monkeypatch.delenv(book.GPU_ENV, raising=False)
    assert book.book_gpu(runs_dir=tmp_path) == "old-gpu"
    monkeypatch.setenv(book.GPU_ENV, "new-gpu")
    assert book.book_gpu(runs_dir=tmp_path) == "new-gpu"
    monkeypatch.setenv(book.GPU_ENV, "absent")
    with pytest.raises(records.RecordError, match="absent"):
        book.book_gpu(runs_dir=tmp_path)
    assert records.complete_devices(list(CHAPTERS), tmp_path) == ["old-gpu"]


def test_plots_save_shows_the_saved_file_by_name(tmp_path, monkeypatch):
    from flashcore import plots

    shown = []
    monkeypatch.setenv("FLASHCORE_FIGURES_DIR", str(tmp_path))
    monkeypatch.setattr(book, "show_figure", lambda path, name, alt="": shown.append((path, name)))
    plt = plots.plt()
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    ax.set_xticks([1, 2])
    ax.set_xticklabels(["a long tick label", "another"], rotation=30)
    path = plots.save(fig, "unit_chart", records.load(_run(tmp_path / "r").save()))
    assert path.is_file() and shown == [(path, "unit_chart")]
    assert not plt.get_fignums()                                     # closed: nothing shown twice


def test_long_tokens_get_break_opportunities_numbers_do_not():
    html = book.table([dict(kernel="cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16", us=12345.678)],
                      show=False)
    assert "cudnn_<wbr>generated_<wbr>" in html and "12,346" in html and "12,<wbr>" not in html
