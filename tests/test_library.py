"""The library face on CPU: validation errors, the dispatch rule, the CLI, the fuzz generator, the sanitizer rule,
record writing.

No GPU: validation runs on descriptors (fake CUDA devices) and CPU tensors; the dispatch rule is a pure function;
the CLI's GPU work is replaced by fakes that return made-up results (never shown in the book).
"""
import json
import math

import pytest

from flashcore import cli, dispatch, fuzz, kernels, records, sweep
from flashcore.tools import sanitize
from flashcore.kernels import KernelSpec
from flashcore.validate import ArrayDesc, check_scale, contiguous_strides, describe, validate

torch = pytest.importorskip("torch")

PROV = dict(gpu="Test GPU", gpu_slug="test-gpu", sm="sm_90", driver="0", cuda="13.0", torch="x", cupy="x",
            commit="1" * 40, dirty=False, date="2026-01-01T00:00:00+00:00", command="pytest", notebook="cli")


def desc(shape=(1, 8, 512, 64), dtype="float16", device="cuda:0", strides=None, ptr=1 << 20, lib="torch",
         requires_grad=False):
    return ArrayDesc(dtype=dtype, shape=tuple(shape), strides=tuple(strides or contiguous_strides(shape)),
                     device=device, data_ptr=ptr, lib=lib, requires_grad=requires_grad)


def qkv(**kw):
    return desc(**kw), desc(**kw), desc(**kw)


# ------------------------------------------------------------------------------------------------ validation
def test_valid_plan():
    plan = validate(*qkv())
    assert (plan.B, plan.H, plan.S_q, plan.S_kv, plan.D, plan.bh) == (1, 8, 512, 512, 64, 8)
    assert plan.scale == 1 / 8 and not plan.empty and not plan.copies and plan.out_shape == (1, 8, 512, 64)


def test_cross_lengths_plan():
    plan = validate(desc(shape=(2, 4, 100, 64)), desc(shape=(2, 4, 1000, 64)), desc(shape=(2, 4, 1000, 64)))
    assert (plan.S_q, plan.S_kv, plan.out_shape) == (100, 1000, (2, 4, 100, 64))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64", "int16"])
def test_wrong_dtype_names_argument_and_expected(dtype):
    q, k, v = qkv()
    with pytest.raises(TypeError, match=rf"k\.dtype must be torch\.float16, got torch\.{dtype}"):
        validate(q, desc(dtype=dtype), v)


def test_wrong_dtype_cupy_names():
    with pytest.raises(TypeError, match=r"q\.dtype must be cupy\.float16, got cupy\.float32"):
        validate(desc(dtype="float32", lib="cupy"), desc(lib="cupy"), desc(lib="cupy"))


def test_cpu_tensor_refused():
    q = torch.zeros(1, 2, 16, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"q\.device must be a CUDA device, got cpu"):
        validate(describe(q, "q"), describe(q, "k"), describe(q, "v"))


def test_cpu_tensor_wrong_dtype_is_a_type_error():
    q = torch.zeros(1, 2, 16, 64, dtype=torch.float32)
    with pytest.raises(TypeError, match=r"q\.dtype must be torch\.float16, got torch\.float32"):
        validate(describe(q, "q"), describe(q, "k"), describe(q, "v"))


def test_mismatched_devices():
    with pytest.raises(ValueError, match=r"one device.*v\.device=cuda:1"):
        validate(desc(), desc(), desc(device="cuda:1"))


def test_mixed_libraries():
    with pytest.raises(TypeError, match="one library"):
        validate(desc(), desc(lib="cupy"), desc())


@pytest.mark.parametrize("shape", [(8, 512, 64), (1, 1, 8, 512, 64), (64,)])
def test_wrong_rank(shape):
    with pytest.raises(ValueError, match=r"q must have 4 dims \[B, H, S, D\], got %d dims" % len(shape)):
        validate(desc(shape=shape), desc(), desc())


@pytest.mark.parametrize("k_shape,v_shape,pattern", [
    ((2, 8, 512, 64), (2, 8, 512, 64), r"k\.shape\[0\] \(B\) must equal q\.shape\[0\] = 1, got 2"),
    ((1, 4, 512, 64), (1, 4, 512, 64), r"k\.shape\[1\] \(H_kv = 4\) must equal q\.shape\[1\] \(H = 8\) without "
                                       r"enable_gqa"),
    ((1, 8, 512, 32), (1, 8, 512, 32), r"k\.shape\[3\] \(D\) must equal q\.shape\[3\] = 64, got 32"),
    ((1, 8, 512, 64), (1, 8, 500, 64), r"v\.shape must equal k\.shape \[1, 8, 512, 64\], got \[1, 8, 500, 64\]"),
])
def test_mismatched_shapes(k_shape, v_shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        validate(desc(), desc(shape=k_shape), desc(shape=v_shape))


@pytest.mark.parametrize("D", [128, 32, 96])
def test_unsupported_head_dim(D):
    """The base support set (the Triton peer's) has D = 64 only; the library's set is tested in
    test_library_features.py."""
    with pytest.raises(NotImplementedError, match=rf"D={D} is not supported: q\.shape\[3\] must be one of \{{64\}}"):
        validate(*qkv(shape=(1, 8, 128, D)))


def test_non_contiguous_copy_or_refuse():
    t = torch.zeros(1, 64, 8, 64, dtype=torch.float16).transpose(1, 2)     # [1, 8, 64, 64], not contiguous
    d = describe(t, "q")
    assert not d.contiguous and not t.is_contiguous()
    fake = ArrayDesc(**{**d.__dict__, "device": "cuda:0"})
    good = desc(shape=(1, 8, 64, 64))
    plan = validate(fake, good, good)
    assert "not contiguous" in plan.copies["q"] and set(plan.copies) == {"q"}
    with pytest.raises(ValueError, match=r"q must be contiguous and 16-byte aligned, got not contiguous"):
        validate(fake, good, good, copy=False)


def test_unaligned_copy_or_refuse():
    bad = desc(ptr=(1 << 20) + 2)
    plan = validate(desc(), desc(), bad)
    assert "not 16-byte aligned" in plan.copies["v"]
    with pytest.raises(ValueError, match=r"v must be contiguous and 16-byte aligned, got data_ptr 0x100002"):
        validate(desc(), desc(), bad, copy=False)


def test_size_one_dims_any_stride_is_contiguous():
    d = desc(shape=(1, 1, 5, 64), strides=(7, 3, 64, 1))
    assert d.contiguous


def test_cpu_tensor_descriptor_matches_torch():
    base = torch.zeros(2 * 3 * 5 * 64 + 1, dtype=torch.float16)
    view = base[1:].view(2, 3, 5, 64)
    d = describe(view, "q")
    assert d.shape == (2, 3, 5, 64) and d.contiguous and d.device == "cpu" and d.strides == (960, 320, 64, 1)
    assert d.data_ptr == view.data_ptr() and (d.aligned == (view.data_ptr() % 16 == 0))


@pytest.mark.parametrize("shape", [(0, 8, 512, 64), (1, 0, 512, 64), (1, 8, 0, 64)])
def test_empty_inputs_return_empty(shape):
    k_shape = shape if shape[2] else (shape[0], shape[1], 512, 64)
    plan = validate(desc(shape=shape), desc(shape=k_shape), desc(shape=k_shape))
    assert plan.empty and plan.out_shape == shape


def test_empty_keys_with_queries_is_an_error():
    with pytest.raises(ValueError, match=r"k\.shape\[2\] \(S_kv\) must be ≥ 1"):
        validate(desc(), desc(shape=(1, 8, 0, 64)), desc(shape=(1, 8, 0, 64)))


@pytest.mark.parametrize("scale,exc,pattern", [
    (float("nan"), ValueError, "scale must be a finite float, got nan"),
    (float("inf"), ValueError, "scale must be a finite float, got inf"),
    ("0.1", TypeError, "scale must be a float or None, got str"),
    (True, TypeError, "scale must be a float or None, got bool"),
    ([0.1], TypeError, "scale must be a float or None, got list"),
])
def test_bad_scale(scale, exc, pattern):
    with pytest.raises(exc, match=pattern):
        validate(*qkv(), scale=scale)


def test_good_scale():
    assert check_scale(None) == 0.125 and check_scale(0.5) == 0.5 and check_scale(2) == 2.0
    assert validate(*qkv(), scale=torch.tensor(0.25)).scale == 0.25


def test_int32_limit():
    big = (1, 1, 1 << 25, 64)            # exactly 2**31 elements: one too many for int32 indexing
    with pytest.raises(ValueError, match=r"q must have fewer than 2\*\*31 elements .* got 2147483648"):
        validate(desc(shape=big), desc(shape=(1, 1, 16, 64)), desc(shape=(1, 1, 16, 64)))
    ok = (1, 1, (1 << 25) - 1, 64)
    assert not validate(desc(shape=ok), desc(shape=ok), desc(shape=ok)).empty


def test_requires_grad_refused_under_autograd():
    q = desc(requires_grad=True)
    with pytest.raises(NotImplementedError, match=r"q\.requires_grad must be False"):
        validate(q, desc(), desc(), grad_enabled=True)
    assert validate(q, desc(), desc(), grad_enabled=False)


def test_not_an_array():
    with pytest.raises(TypeError, match="k must be a torch tensor or a CuPy array, got None"):
        describe(None, "k")
    with pytest.raises(TypeError):
        validate(desc(), "k", desc())


def test_api_rejects_before_launch():
    """The library call raises the validation error with CPU tensors: nothing compiled, nothing launched."""
    from flashcore import api

    q = torch.zeros(1, 2, 16, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"q\.device must be a CUDA device, got cpu"):
        api.attention(q, q, q)
    with pytest.raises(TypeError, match=r"q must be a torch\.Tensor or a cupy\.ndarray, got builtins\.list"):
        api.attention([1], q, q)
    with pytest.raises(TypeError, match=r"k\.dtype must be torch\.float16 or torch\.bfloat16, got torch\.float32"):
        api.attention(q, q.float(), q)
    np = pytest.importorskip("numpy")
    with pytest.raises(TypeError, match="numpy"):
        api.attention(np.zeros((1, 2, 16, 64), np.float16), q, q)


def test_nan_inf_documented_behaviour_cpu():
    """book/library.md's NaN/Inf claims that a CPU can test: SDPA (CPU) and the fp64 formula."""
    import torch.nn.functional as F

    from flashcore.harness.reference import attention_ref64

    cases = fuzz.special_inputs(device="cpu")
    rows = {n: (fuzz.nonfinite_rows(F.scaled_dot_product_attention(q.float(), k.float(), v.float())),
                fuzz.nonfinite_rows(attention_ref64(q, k, v))) for n, (q, k, v) in cases.items()}
    # NaN in one query row: that output row only, in SDPA and in the formula
    assert rows["nan_q"][0] == rows["nan_q"][1] == [(0, 0, 3)]
    # NaN in one key: every query row of that head
    assert rows["nan_k"][0] == rows["nan_k"][1] == [(0, 1, s) for s in range(100)]
    # every score of a row is -inf: the formula gives NaN (0/0), SDPA gives a finite row (zeros)
    assert rows["neg_inf_row"][1] == [(0, 1, 7)] and rows["neg_inf_row"][0] == []
    q, k, v = cases["neg_inf_row"]
    assert torch.all(F.scaled_dot_product_attention(q.float(), k.float(), v.float())[0, 1, 7] == 0)


# ---------------------------------------------------------------------------------------------- dispatch
def spec(kid, cross=True, expect_failure=False, threads=128, tags=()):
    return KernelSpec(id=kid, source=f"{kid}.cu", entry=kid, threads=threads,
                      grid=lambda s: (kernels.cdiv(s.seq_q, 64), s.bh, 1), cross=cross,
                      expect_failure=expect_failure, tags=tuple(tags))


def test_dispatch_is_a_pure_function_of_shape_and_device(tmp_path, monkeypatch):
    """The same problem on the same device gives the same kernel whatever runs/ holds (it reads no files)."""
    a = dispatch.choose(1, 8, 512, 512, dispatch.Device(90, 132))
    monkeypatch.setattr("flashcore.paths.RUNS_DIR", tmp_path)          # an empty runs/ changes nothing
    monkeypatch.setattr(records, "RUNS_DIR", tmp_path)
    assert dispatch.choose(1, 8, 512, 512, dispatch.Device(90, 132)) == a
    assert a.kernel == dispatch.rule_pick(1, 8, 512, 512, 132) == dispatch.TMA_KERNEL and a.reason
    import inspect

    src = inspect.getsource(dispatch)
    assert "records" not in src.split('"""', 2)[2] and "open(" not in src     # no record reading, no file I/O


def test_dispatch_refuses_older_gpus_and_bad_shapes():
    with pytest.raises(dispatch.NoKernelError, match="compute capability 9.0"):
        dispatch.choose(1, 8, 512, 512, dispatch.Device(sm=80, num_sms=108))
    with pytest.raises(ValueError, match="S_q must be a positive int, got 0"):
        dispatch.choose(1, 8, 0, 512)


def test_launch_problems_rule_kernels_out():
    assert "needs S_q == S_kv" in dispatch.launch_problem(spec("nocross", cross=False), 8, 100, 1000)
    assert "kept as a failure" in dispatch.launch_problem(spec("kept", expect_failure=True), 8, 100, 100)
    assert "2048 threads per block" in dispatch.launch_problem(spec("wide", threads=2048), 8, 100, 100)
    assert "control kernel" in dispatch.launch_problem(spec("ctl", tags=("control",)), 8, 100, 100)
    assert dispatch.launch_problem(spec("ok"), 8, 100, 1000) is None


def test_grid_limit():
    s = spec("ygrid")                              # grid.y = B·H
    assert "exceeds CUDA's limits" in dispatch.launch_problem(s, 70000, 64, 64)
    assert dispatch.launch_problem(s, 65535, 64, 64) is None


def test_route_table_rows():
    rows = dispatch.route_table()
    assert {r["kernel"] for r in rows} >= {dispatch.LIBRARY_KERNEL, dispatch.TMA_KERNEL}
    for r in rows:                                       # each row is the shape rule's pick (fp16, D=64, sm_90)
        assert r["kernel"] == dispatch.rule_pick(r["B"], r["H"], r["S_q"], r["S_kv"], 132), r
    big = dispatch.route_table(lengths=(8192,), B=4, H=16, cross=())      # 4.4 TFLOP, fill 0.94
    assert [r["kernel"] for r in big] == [dispatch.HOPPER_KERNEL]
    assert any(r["S_q"] != r["S_kv"] for r in rows)
    old = dispatch.route_table(device=dispatch.Device(sm=80, num_sms=108))
    assert all(r["kernel"] is None and "9.0" in r["reason"] for r in old)


# --------------------------------------------------------------------------------------------------- CLI
def test_cli_parses_shapes():
    a = cli.parse_args(["check", "v8_seed", "--shape", "1,8,512,64;2,4,1000,64,77", "--mode", "replay"])
    assert a.command == "check" and a.kernels == ["v8_seed"] and a.mode == "replay" and a.runs == 3
    assert a.shape == [(1, 8, 512, 64, 512), (2, 4, 1000, 64, 77)]
    b = cli.parse_args(["bench", "x", "--shape", "1,8,512,64", "--peers", "sdpa_cudnn", "--samples", "10"])
    assert b.peers == ["sdpa_cudnn"] and b.samples == 10 and b.mode == "auto"
    assert cli.parse_args(["list"]).command == "list"
    c = cli.parse_args(["bench", "a,b", "--shape", "1,8,512,64"])
    assert c.kernels == ["a", "b"]                       # several kernels in one process (was devcheck)
    assert cli.parse_args(["sweep", "--quick"]).quick and cli.parse_args(["live", "04_results"]).notebook


@pytest.mark.parametrize("argv,pattern", [
    (["check", "x", "--shape", "1,8,512,128"], "D must be 64"),
    (["check", "x", "--shape", "1,8,512"], "B,H,S,D"),
    (["check", "x", "--shape", "1,8,0,64"], "positive ints"),
    (["check", "x"], "--shape"),
    (["frobnicate", "x", "--shape", "1,8,512,64"], "invalid choice"),
    (["check", "x", "--shape", "1,8,512,64", "--mode", "fast"], "invalid choice"),
    (["check", "x", "--shape", "1,8,512,64", "--runs", "0"], "--runs must be"),
    (["bench", "x", "--shape", "1,8,512,64", "--peers", "sdpa_magic"], "sdpa_magic not in"),
    (["bench", "x", "--shape", "1,8,512,64", "--samples", "2"], "--samples must be"),
    (["profile", "a,b", "--shape", "1,8,512,64"], "profile takes one kernel"),
    (["sweep", "--tools", "bogus"], "not one of memcheck"),
    (["sweep", "--cases", "0"], "--cases must be"),
])
def test_cli_argument_errors(argv, pattern, capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(argv)
    assert e.value.code == 2
    assert pattern in capsys.readouterr().err


def test_cli_resolve_kernel():
    specs = [spec("v8_seed", cross=False)]
    assert cli.resolve_kernel("v8_seed", "check", specs) == "v8_seed"
    assert cli.resolve_kernel("triton_attention", "bench", specs) == "triton_attention"
    with pytest.raises(cli.CliError, match=r"unknown kernel 'flashcore': expected a registered kernel id \(v8_seed\)"):
        cli.resolve_kernel("flashcore", "check", specs)
    with pytest.raises(cli.CliError, match="none registered yet"):
        cli.resolve_kernel("flashcore", "check", [])
    with pytest.raises(cli.CliError, match="profile runs registered CUDA kernels"):
        cli.resolve_kernel("triton_attention", "profile", specs)
    assert "S_q == S_kv" in cli.check_shape("v8_seed", (1, 8, 100, 64, 200), specs)
    assert cli.check_shape("v8_seed", (1, 8, 100, 64, 100), specs) is None


def test_control_kernels_are_not_attention():
    ctl = spec("v11_ctl_guide")
    object.__setattr__(ctl, "tags", ("control",))
    with pytest.raises(cli.CliError, match="control kernel"):
        cli.resolve_kernel("v11_ctl_guide", "check", [ctl])
    assert cli.resolve_kernel("v11_ctl_guide", "bench", [ctl]) == "v11_ctl_guide"   # timing it is fine
    assert "control kernel" in dispatch.launch_problem(ctl, 8, 512, 512)              # never dispatched to


def test_cli_list_prints_registry_and_rule(capsys):
    text = cli.list_text([spec("a"), spec("kept", expect_failure=True)])
    assert "Registered kernels (2)" in text and "expect_failure" in text
    assert "S_q=512    S_kv=512    → hopper_02_tma" in text and "S_q=1      S_kv=8192   → flashcore" in text
    assert "none registered yet" in cli.list_text([])
    assert cli.main(["list"]) == 0 and "Dispatch rule" in capsys.readouterr().out


def test_cli_unknown_kernel_exit_code(monkeypatch, capsys):
    monkeypatch.setattr(kernels, "all_specs", lambda chapter=None: [])
    assert cli.main(["check", "flashcore", "--shape", "1,8,512,64", "--mode", "replay"]) == 2
    assert "unknown kernel 'flashcore'" in capsys.readouterr().err


@pytest.fixture
def fake_gpu(monkeypatch):
    _fake_harness(monkeypatch)


def _fake_harness(monkeypatch, fake_contenders=True):
    """A registry of one kernel, and a harness whose GPU calls return made-up results (S=13 plays a failing
    kernel). The real check-then-time routine runs: only the launches, the check and the clock are faked."""
    from flashcore.harness import bench, measure
    from flashcore.harness.bench import summarize
    from flashcore.harness.check import CheckResult

    monkeypatch.setattr(kernels, "all_specs", lambda chapter=None: [spec("k1")])

    def fake_check(fn, B, H, S, D=64, seed=0, runs=3, S_kv=None, scale=None, kernel=""):
        ok = S != 13
        return CheckResult(kernel, B, H, S, S_kv or S, D, seed, 1e-3 if ok else 1.0, 1e-3, 2.01e-3, ok, True, runs,
                           0, 0)

    def fake_time(fn, launches_per_graph=20, samples=50, warmup=3, flush=False):
        return summarize([5.0, 6.0, 7.0] if getattr(fn, "mine", False) else [9.0, 9.0, 9.0], launches_per_graph,
                         "fake")

    def mine():
        return None
    mine.mine = True

    def fake_contender(kid):
        return measure.Contender(kid, launch=lambda q, k, v, o: None, timed=lambda q, k, v, o: mine,
                                 fields=lambda shape: {})

    monkeypatch.setattr(measure, "check_kernel", fake_check)
    monkeypatch.setattr("flashcore.harness.check.check_kernel", fake_check)
    monkeypatch.setattr(bench, "time_graph", fake_time)
    monkeypatch.setattr(measure, "make_inputs", lambda *a, **kw: (torch.zeros(1), torch.zeros(1), torch.zeros(1)))
    if fake_contenders:
        monkeypatch.setattr(cli, "contender", fake_contender)
    monkeypatch.setattr(measure, "sdpa", lambda name, check=False: measure.Contender(
        name, launch=lambda q, k, v, o: None, timed=lambda q, k, v, o: (lambda: None), check=False))


def test_cli_check_writes_a_record(tmp_path, fake_gpu, capsys):
    code = cli.main(["check", "k1", "--shape", "1,8,512,64;2,2,100,64,7", "--mode", "live", "--runs-dir",
                     str(tmp_path), "--no-progress"], provenance=dict(PROV))
    assert code == 0
    out = capsys.readouterr().out
    assert "recorded" in out and "2,2,100,64,7" in out and "kernel" in out.splitlines()[0]
    (path,) = list(tmp_path.glob("*/*/run.json"))
    rec = records.load(path)
    assert rec["run_id"].endswith("-cli") and rec.provenance["notebook"] == "cli"
    assert rec["params"]["command"] == "check" and rec["params"]["kernels"] == ["k1"]
    assert [(r["S"], r["S_kv"], r["passed"], r["stage"]) for r in rec["results"]] == [(512, 512, True, "check"),
                                                                                     (100, 7, True, "check")]


def test_cli_failing_check_exit_status(tmp_path, fake_gpu):
    code = cli.main(["check", "k1", "--shape", "1,1,13,64", "--mode", "live", "--runs-dir", str(tmp_path),
                     "--no-progress"], provenance=dict(PROV))
    assert code == 1
    (path,) = list(tmp_path.glob("*/*/run.json"))
    assert records.load(path)["results"][0]["passed"] is False


def test_cli_bench_record_and_replay(tmp_path, fake_gpu, capsys):
    assert cli.main(["bench", "k1", "--shape", "1,8,512,64", "--mode", "live", "--runs-dir", str(tmp_path),
                     "--no-progress"], provenance=dict(PROV)) == 0
    (path,) = list(tmp_path.glob("*/*/run.json"))
    rec = records.load(path)
    assert {r["kernel"] for r in rec["results"]} == {"k1", "sdpa_cudnn", "sdpa_flash"}
    assert rec.row(kernel="k1")["median_us"] == 6.0 and rec.row(kernel="k1")["tflops"] > 0
    capsys.readouterr()
    assert cli.main(["bench", "k1", "--shape", "1,8,512,64", "--mode", "replay", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "replayed from" in out and "sdpa_cudnn" in out and "6.00" in out
    assert cli.main(["check", "k1", "--shape", "1,8,1024,64", "--mode", "replay", "--runs-dir", str(tmp_path)]) == 1
    assert "no recorded check row" in capsys.readouterr().err


def test_cli_format_table():
    text = cli.format_table([dict(kernel="a", B=1, H=8, S=512, D=64, S_kv=512, passed=True, max_abs_err=1e-4),
                             dict(kernel="b", B=1, H=8, S=5, D=64, S_kv=9, passed=None, error="boom")],
                            ("kernel", "shape", "passed", "max_abs_err"))
    lines = text.splitlines()
    assert lines[0].split() == ["kernel", "shape", "passed", "max_abs_err"]
    assert "1,8,512,64" in lines[2] and "0.0001" in lines[2] and "1,8,5,64,9" in lines[3] and "(boom)" in lines[3]


# --------------------------------------------------------------------------------------------- fuzz cases
def test_fuzz_cases_cover_the_edges():
    cases = fuzz.fuzz_cases(200, seed=0)
    assert len(cases) == 200
    assert any(c["S"] == 1 and c["S_kv"] == 1 for c in cases)
    assert any(c["B"] * c["H"] == 1 for c in cases)
    assert sum(1 for c in cases if c["S"] % 64 or c["S_kv"] % 64) >= 50
    assert max(max(c["S"], c["S_kv"]) for c in cases) == 16384
    assert sum(1 for c in cases if c["S"] != c["S_kv"]) >= 20
    assert all(1 <= c["S"] <= 16384 and 1 <= c["S_kv"] <= 16384 and c["B"] >= 1 and c["H"] >= 1 for c in cases)
    assert all(c["B"] * c["H"] * c["S"] * c["S_kv"] <= fuzz.DEFAULT_WORK for c in cases)
    assert all(c["B"] * c["H"] * max(c["S"], c["S_kv"]) * 64 < 2 ** 31 for c in cases)
    assert len({c["seed"] for c in cases}) == 200
    assert len({(c["B"], c["H"], c["S"], c["S_kv"]) for c in cases}) > 150


def test_fuzz_cases_are_deterministic_and_seeded():
    assert fuzz.fuzz_cases(50, seed=3) == fuzz.fuzz_cases(50, seed=3)
    assert fuzz.fuzz_cases(50, seed=3) != fuzz.fuzz_cases(50, seed=4)


def test_fuzz_cases_respect_the_kernel():
    cases = fuzz.fuzz_cases(120, cross=False, max_seq=1000)
    assert all(c["S"] == c["S_kv"] <= 1000 for c in cases)
    assert fuzz.fuzz_cases(3)[0] == dict(fuzz.fuzz_cases(3)[0]) and len(fuzz.fuzz_cases(3)) == 3
    with pytest.raises(ValueError, match="n must be ≥ 1"):
        fuzz.fuzz_cases(0)


def test_cases_for_uses_the_spec(monkeypatch):
    monkeypatch.setattr(kernels, "_REGISTRY", {"flashcore": spec("flashcore", cross=False)})
    cases = fuzz.cases_for("flashcore", 60)
    assert all(c["S"] == c["S_kv"] for c in cases)
    assert any(c["S"] != c["S_kv"] for c in fuzz.cases_for("triton_attention", 60))


def test_fuzz_summary():
    rows = [dict(B=1, H=1, S=1, S_kv=1, seed=1, passed=True, deterministic=True, max_abs_err=1e-4, tol=2e-4),
            dict(B=1, H=8, S=100, S_kv=7, seed=2, passed=False, deterministic=False, max_abs_err=1.0, tol=2e-4),
            dict(B=2, H=2, S=64, S_kv=64, seed=3, passed=False, error="RuntimeError: x")]
    s = fuzz.summarize("k", rows)
    assert (s["cases"], s["failures"], s["nondeterministic"], s["passed"]) == (3, 2, 1, False)
    assert s["s1_cases"] == 1 and s["bh1_cases"] == 1 and s["cross_cases"] == 1 and s["tail_cases"] == 2
    assert math.isclose(s["worst_err_over_tol"], 5000.0) and len(s["errors"]) == 2
    assert fuzz.summarize("k", rows[:1])["passed"]


# ------------------------------------------------------------------------------------------------ sweep
def test_sanitizer_kernels_skip_kept_failures():
    assert sweep.sanitizer_kernels([spec("b"), spec("a"), spec("kept", expect_failure=True)]) == ["a", "b"]


def test_sanitizer_kernels_skip_controls():
    ctl = spec("ctl")
    object.__setattr__(ctl, "tags", ("control",))
    assert sweep.sanitizer_kernels([spec("a"), ctl]) == ["a"]


def test_sanitizer_rows_per_kernel_and_shape():
    summary = dict(tool="memcheck", kernels=["a", "b"], shapes="1,3,77,64;1,8,512,64", finished=True,
                   timed_out=False, per_launch=[
        dict(kernel="a", shape="1,3,77,64", problems=0, first=""),
        dict(kernel="a", shape="1,8,512,64", problems=2, first="Invalid __global__ read"),
        dict(kernel="b", shape="1,3,77,64", problems=0, first="")])
    rows = {(r["kernel"], r["shape"]): r for r in sanitize.rows([summary], [(1, 3, 77, 64), (1, 8, 512, 64)])}
    assert rows[("a", "1,3,77,64")]["clean"] and not rows[("a", "1,8,512,64")]["clean"]
    assert rows[("a", "1,8,512,64")]["tools"]["memcheck"]["first"] == "Invalid __global__ read"
    assert rows[("b", "1,8,512,64")]["clean"] is None        # never launched: not shown clean, not blamed
    assert rows[("a", "1,8,512,64")]["clean"] is False


def _sweep_record(tmp_path, fail=False):
    run = records.Run("sweep", runs_dir=tmp_path, provenance=dict(PROV, notebook="sweep"))
    rows = [dict(B=1, H=1, S=1, S_kv=1, seed=1, passed=True, deterministic=True, max_abs_err=1e-4, tol=2e-4),
            dict(B=1, H=8, S=100, S_kv=7, seed=2, passed=not fail, deterministic=True, max_abs_err=1e-4, tol=2e-4)]
    for r in rows:
        run.add_result("flashcore", r["B"], r["H"], r["S"], S_kv=r["S_kv"], stage="fuzz", passed=r["passed"])
    run.add_result("v8_seed", 1, 3, 77, stage="sanitize", clean=True,
                   tools={"memcheck": dict(launches=1, problems=0, clean=True, first="")})
    run.extra["fuzz"] = {"flashcore": fuzz.summarize("flashcore", rows)}
    run.extra["special_values"] = {"flashcore": {
        "nan_q": dict(n_rows=1, sdpa_n_rows=1, ref64_n_rows=1, matches=True, matches_ref64=True),
        "neg_inf_row": dict(n_rows=1, sdpa_n_rows=0, ref64_n_rows=1, matches=False, matches_ref64=True)}}
    run.extra["sanitizer"] = dict(tools=["memcheck"], shapes=["1,3,77,64", "1,8,512,64"], kernels=["v8_seed"],
                                  summaries=[dict(tool="memcheck", kernels=["v8_seed"], clean=True,
                                                  summary="ERROR SUMMARY: 0 errors")],
                                  verdicts=[dict(tool="memcheck", kernel="v8_seed", clean=True)])
    return records.load(run.save())


def test_status_rows_from_a_sweep_record(tmp_path):
    rows = sweep.status_rows(_sweep_record(tmp_path))
    assert [r["check"] for r in rows] == ["fuzz vs fp64 reference", "NaN/Inf propagation",
                                          "compute-sanitizer memcheck"]
    assert rows[0]["result"] == "2/2 passed" and rows[0]["passed"]
    assert rows[1]["passed"] and "1/2 as SDPA" == rows[1]["result"]
    assert rows[2]["result"] == "clean" and rows[2]["passed"]
    json.dumps(rows)


def test_status_rows_show_a_failure(tmp_path):
    rows = sweep.status_rows(_sweep_record(tmp_path, fail=True))
    assert rows[0]["result"] == "1/2 passed" and not rows[0]["passed"]


def test_run_sweep_writes_one_record(tmp_path, monkeypatch, capsys):
    """The sweep's bookkeeping with the GPU work replaced by fakes: one record, rows per case and kernel/shape."""
    def fake_fuzz(kid, n=200, seed=0, progress=True, runs=2, unverified=False):
        return [dict(c, passed=True, deterministic=True, max_abs_err=1e-4, tol=2e-4, sdpa_err=1e-4, error=None)
                for c in fuzz.fuzz_cases(n, seed=seed)]

    def fake_sanitizer(tool, ids, shapes, timeout=600, extra=()):
        per = [dict(kernel=k, shape=s, problems=0, first="") for k in ids for s in shapes.split(";")]
        return dict(tool=tool, kernels=list(ids), shapes=shapes, clean=True, errors=0, warnings=0, exit_code=0,
                    timed_out=False, finished=True, summary="ERROR SUMMARY: 0 errors", per_launch=per, log_tail="")

    monkeypatch.setattr(fuzz, "fuzz_kernel", fake_fuzz)
    monkeypatch.setattr(fuzz, "special_values", lambda fn, **kw: {
        "nan_q": dict(n_rows=1, sdpa_n_rows=1, ref64_n_rows=1, matches=True, matches_ref64=True)})
    monkeypatch.setattr(sanitize, "run_sanitizer", fake_sanitizer)
    monkeypatch.setattr(sweep, "_library_fn", lambda kid: None)
    monkeypatch.setattr(fuzz, "api_smoke", lambda kernel=None: [dict(name="x", ok=True, detail="")])
    path, verdict = sweep.run_sweep(quick=True, runs_dir=tmp_path, fuzz_ids=["flashcore"], sanitize_ids=["a", "b"],
                                    provenance=dict(PROV, notebook="sweep"), progress=False)
    assert verdict["passed"] and verdict["sanitized_kernels"] == 2
    rec = records.load(path)
    assert rec["run_id"].endswith("-sweep") and rec.provenance["notebook"] == "sweep"
    assert len(rec.rows(stage="fuzz")) == sweep.QUICK_CASES
    assert {(r["kernel"], r["S"]) for r in rec.rows(stage="sanitize")} == {("a", 77), ("a", 512), ("b", 77),
                                                                           ("b", 512)}
    assert rec.ext("sanitizer")["tools"] == ["memcheck"] and rec.ext("fuzz")["flashcore"]["passed"]
    assert [r["check"] for r in sweep.status_rows(rec)] == ["fuzz vs fp64 reference", "fuzz per feature",
                                                           "NaN/Inf propagation", "library call paths",
                                                           "compute-sanitizer memcheck"]
    assert all(r["passed"] for r in sweep.status_rows(rec))
    assert rec.ext("fuzz_features")["flashcore"]["all"]["cases"] == sweep.QUICK_CASES


def _fake_summary(tool, ids, shapes, problems_for=(), abort=False, timed_out=False, kinds=(), frames=()):
    per = []
    for k in ids:
        for sh in shapes.split(";"):
            n = 3 if k in problems_for else 0
            per.append(dict(kernel=k, shape=sh, problems=n, first=kinds[0] if n and kinds else "",
                            kinds=list(kinds) if n else [], frames=list(frames) if n else []))
            if n and abort:
                break
    aborted = abort and any(p["problems"] for p in per)      # a tool error kills the process's launch
    finished = not aborted and not timed_out
    return dict(tool=tool, kernels=list(ids), shapes=shapes, clean=finished and not any(p["problems"] for p in per),
                errors=sum(p["problems"] for p in per), warnings=0,
                exit_code=None if timed_out else (1 if aborted else 0),
                timed_out=timed_out, finished=finished, summary="", per_launch=per, log_tail="")


def test_sanitize_jobs_one_process_per_tool_and_kernel_and_per_shape_after_an_abort(monkeypatch):
    calls = []

    def fake(tool, ids, shapes, timeout=600, extra=()):
        calls.append((tool, tuple(ids), shapes))
        return _fake_summary(tool, ids, shapes, problems_for={"bad"}, abort=True, kinds=["Invalid read"])

    monkeypatch.setattr(sanitize, "run_sanitizer", fake)
    shapes = "1,3,77,64;1,8,512,64"
    out = sanitize.run_jobs(["memcheck", "racecheck"], ["a", "bad"], shapes, workers=3)
    assert {("memcheck", ("a",), shapes), ("memcheck", ("bad",), shapes)} <= set(calls)
    # the aborted process is superseded by one process per shape, so the second shape gets a verdict too
    assert ("memcheck", ("bad",), "1,8,512,64") in calls and len(calls) == 2 * (1 + 1 + 2)
    live = [s for s in out if not s.get("superseded")]
    rows = {(r["kernel"], r["shape"]): r["clean"] for r in sanitize.rows(live, [(1, 3, 77, 64),
                                                                                     (1, 8, 512, 64)])}
    assert rows == {("a", "1,3,77,64"): True, ("a", "1,8,512,64"): True,
                    ("bad", "1,3,77,64"): False, ("bad", "1,8,512,64"): False}


def test_sanitize_jobs_respect_the_deadline(monkeypatch):
    import time

    seen = []

    def fake(tool, ids, shapes, timeout=600, extra=()):
        seen.append(timeout)
        return _fake_summary(tool, ids, shapes, timed_out=True)

    monkeypatch.setattr(sanitize, "run_sanitizer", fake)
    out = sanitize.run_jobs(["racecheck"], ["a", "b"], "1,3,77,64", timeout=300, deadline=time.time() + 8,
                              workers=1)
    assert seen and all(t <= 8 for t in seen)          # every timeout is capped by the budget
    assert not any(r["clean"] for r in sanitize.rows(out, [(1, 3, 77, 64)]))
    late = sanitize.run_jobs(["racecheck"], ["a"], "1,3,77,64", deadline=time.time() - 1)
    assert late[0]["summary"] == "TimeoutError: not run: the time budget ran out"


def test_known_findings_are_shown_as_known_never_as_clean():
    from flashcore.kernels import KnownFinding

    f = KnownFinding(tool="synccheck", kind="Missing wait", frame="producer_commit", why="see chapter 2")
    commit = ["cuda::pipeline<...>::producer_commit()", "v11_fixed"]
    s = _fake_summary("synccheck", ["v11_fixed"], "1,8,512,64", problems_for={"v11_fixed"}, abort=True,
                      kinds=["Barrier error detected. Missing wait."], frames=commit)
    (row,) = sanitize.rows([s], [(1, 8, 512, 64)], known={"v11_fixed": (f,)})
    assert row["tools"]["synccheck"]["clean"] == "known" and row["clean"] == "known"     # never shown as clean
    assert row["known"] == ["synccheck: see chapter 2"]
    # the same report from another frame, another kind next to it, or another tool: a failure
    for kinds, frames, tool in ((["Barrier error detected. Missing wait."], ["v11_fixed"], "synccheck"),
                                (["Barrier error detected. Missing wait.", "Invalid arrive"], commit, "synccheck"),
                                (["Barrier error detected. Missing wait."], commit, "racecheck")):
        s = _fake_summary(tool, ["v11_fixed"], "1,8,512,64", problems_for={"v11_fixed"}, abort=True, kinds=kinds,
                          frames=frames)
        (row,) = sanitize.rows([s], [(1, 8, 512, 64)], known={"v11_fixed": (f,)})
        assert row["clean"] is False and row["known"] == []
    # without the finding declared, the same report is a failure
    s = _fake_summary("synccheck", ["v11_fixed"], "1,8,512,64", problems_for={"v11_fixed"}, abort=True,
                      kinds=["Barrier error detected. Missing wait."], frames=commit)
    assert sanitize.rows([s], [(1, 8, 512, 64)])[0]["clean"] is False


def test_status_rows_name_known_findings(tmp_path):
    run = records.Run("sweep", runs_dir=tmp_path, provenance=dict(PROV, notebook="sweep"))
    run.add_result("v11_fixed", 1, 8, 512, stage="sanitize", clean=True, known=["synccheck: see chapter 2"],
                   tools={"synccheck": dict(launches=1, problems=3, clean="known", first="", known="see chapter 2")})
    run.add_result("v8_seed", 1, 8, 512, stage="sanitize", clean=True,
                   tools={"synccheck": dict(launches=1, problems=0, clean=True, first="")})
    run.extra["sanitizer"] = dict(tools=["synccheck"], shapes=["1,8,512,64"], kernels=["v11_fixed", "v8_seed"])
    (row,) = sweep.status_rows(records.load(run.save()))
    assert row["result"] == "clean + known findings" and row["passed"]
    assert "v11_fixed" in row["detail"] and "see chapter 2" in row["detail"]


def test_cli_records_the_triton_config(tmp_path, monkeypatch):
    from flashcore import triton_peer

    _fake_harness(monkeypatch, fake_contenders=False)    # the real contender(), with Triton faked as importable
    monkeypatch.setattr(triton_peer, "available", lambda: True)
    monkeypatch.setattr(triton_peer, "best_config", lambda S, S_kv=None: dict(BLOCK_M=64, BLOCK_N=64, S=S))
    assert cli.main(["check", "triton_attention", "--shape", "1,8,512,64", "--mode", "live", "--runs-dir",
                     str(tmp_path), "--no-progress"], provenance=dict(PROV)) == 0
    (path,) = list(tmp_path.glob("*/*/run.json"))
    assert records.load(path)["results"][0]["config"] == dict(BLOCK_M=64, BLOCK_N=64, S=512)


def test_function_pointer_reads_cupy_14_raw_kernels():
    """CuPy 14's RawModule.get_function returns a RawKernel whose CUfunction is ``.kernel.ptr`` (the first GPU run
    of the prepared launch failed on ``.ptr``); a driver-level Function has ``.ptr`` itself."""
    from types import SimpleNamespace

    from flashcore.launch import function_pointer

    assert function_pointer(SimpleNamespace(ptr=1234)) == 1234
    assert function_pointer(SimpleNamespace(kernel=SimpleNamespace(ptr=5678))) == 5678
