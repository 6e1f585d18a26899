"""The PyTorch operator on the CPU: torch.ops.flashcore.attention, its fake implementation, torch.compile wiring.

No GPU: the fake implementation runs on fake CUDA tensors (FakeTensorMode makes them on a CPU build); the compile
tests register a CPU stand-in for the CUDA kernel (SDPA in fp32) for the duration of a test and let the fake
implementation accept CPU tensors (``torch_op.FAKE_DEVICE_TYPES``), so what runs is the real wiring: dynamo traces
flashcore.attention, which routes through the operator while compiling; the fake implementation validates; the
compiled graph calls the operator.
"""
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

import flashcore  # noqa: E402
from flashcore import api, torch_op  # noqa: E402
from flashcore.validate import HeadsError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def library_features():
    """Every feature flashcore's variants compute (the variants awaiting their GPU check let through, as the GPU
    checks do): the fake implementation validates against the same set as the eager call."""
    with api.unverified_variants():
        yield


def test_the_fake_refuses_what_the_library_does_not_run():
    """No build runs D = 96 or fp32: the call fails at trace time exactly as it would eagerly, naming the supported
    set; bf16 (a declared feature build) traces without any opt-in."""
    with FakeTensorMode():
        q = _fake((1, 8, 64, 96))
        with pytest.raises(NotImplementedError, match=r"D=96 is not supported: q\.shape\[3\] must be one of "
                                                      r"\{64, 128\}"):
            torch.ops.flashcore.attention(q, q, q)
        q = _fake((1, 8, 64, 64), torch.float32)
        with pytest.raises(TypeError, match=r"q\.dtype must be torch\.float16 or torch\.bfloat16, got torch\.float32"):
            torch.ops.flashcore.attention(q, q, q)
        q = _fake((1, 8, 64, 128), torch.bfloat16)
        o = torch.ops.flashcore.attention(q, q, q, is_causal=True)
        assert o.dtype == torch.bfloat16 and tuple(o.shape) == (1, 8, 64, 128)


def cpu_attention(q, k, v, is_causal=False, scale=None, enable_gqa=False, copy=True, kernel_id=None):
    """The CPU stand-in for the CUDA kernel: SDPA in fp32, cast back."""
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=is_causal, scale=scale,
                                          enable_gqa=k.shape[1] != q.shape[1]).to(q.dtype)


@pytest.fixture(scope="module")
def cpu_kernel_registered():
    """The CPU stand-in registered as the operator's CPU kernel for this module (once), removed afterwards."""
    torch_op.attention_op.register_kernel("cpu")(cpu_attention)
    yield
    torch_op.attention_op._backend_fns.pop("cpu", None)


@pytest.fixture
def cpu_kernel(cpu_kernel_registered, monkeypatch, library_features):
    """The CPU stand-in, and a fake implementation that accepts CPU tensors, for one test."""
    monkeypatch.setattr(torch_op, "FAKE_DEVICE_TYPES", ("cuda", "cpu"))


def test_operator_is_registered_when_torch_is_imported_first():
    assert api._op is torch.ops.flashcore.attention.default
    assert api._is_compiling is torch.compiler.is_compiling
    schema = str(torch.ops.flashcore.attention.default._schema)
    assert "bool is_causal=False" in schema and "float? scale=None" in schema and "bool enable_gqa=False" in schema


def _fake(shape, dtype=torch.float16, device="cuda"):
    return torch.empty(*shape, dtype=dtype, device=device)


def test_fake_implementation_shape_dtype_device(library_features):
    with FakeTensorMode():
        q = _fake((2, 8, 100, 128), torch.bfloat16)
        k = _fake((2, 2, 300, 128), torch.bfloat16)
        o = torch.ops.flashcore.attention(q, k, k, is_causal=True, enable_gqa=True)
        assert tuple(o.shape) == (2, 8, 100, 128) and o.dtype == torch.bfloat16 and o.device.type == "cuda"
        assert o.is_contiguous()


@pytest.mark.parametrize("q_shape,k_shape,kw,exc,pattern", [
    ((1, 8, 64, 96), (1, 8, 64, 96), {}, NotImplementedError, r"D=96 is not supported: .* one of \{64, 128\}"),
    ((1, 8, 64, 64), (1, 4, 64, 64), {}, HeadsError, r"H_kv = 4\) must equal q\.shape\[1\] \(H = 8\) without"),
    ((1, 8, 64, 64), (1, 3, 64, 64), dict(enable_gqa=True), HeadsError, r"H_kv = 3\) must divide"),
    ((1, 8, 64, 64), (1, 8, 64, 64), dict(scale=float("nan")), ValueError, "scale must be a finite float"),
])
def test_fake_implementation_validates_like_eager(library_features, q_shape, k_shape, kw, exc, pattern):
    with FakeTensorMode():
        q, k = _fake(q_shape), _fake(k_shape)
        with pytest.raises(exc, match=pattern):
            torch.ops.flashcore.attention(q, k, k, **kw)


def test_fake_implementation_refuses_mixed_dtypes_and_cpu(library_features):
    with FakeTensorMode():
        q, k = _fake((1, 2, 16, 64)), _fake((1, 2, 16, 64), torch.bfloat16)
        with pytest.raises(TypeError, match=r"k\.dtype must equal q\.dtype \(torch\.float16\), got torch\.bfloat16"):
            torch.ops.flashcore.attention(q, k, k)
        c = _fake((1, 2, 16, 64), device="cpu")
        with pytest.raises(ValueError, match=r"q\.device must be a CUDA device, got cpu"):
            torch.ops.flashcore.attention(c, c, c)


def test_opcheck(cpu_kernel):
    q = torch.randn(1, 8, 37, 64, dtype=torch.float16)
    k = torch.randn(1, 2, 50, 64, dtype=torch.float16)
    result = torch.library.opcheck(torch.ops.flashcore.attention.default, (q, k, k),
                                   dict(is_causal=True, enable_gqa=True))
    assert set(result.values()) == {"SUCCESS"}, result


def _graph_ops(gm):
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]


def test_compile_fullgraph_routes_through_the_operator_and_matches_eager(cpu_kernel, monkeypatch):
    """dynamo traces flashcore.attention into ONE operator node; the compiled function equals the stand-in."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        from torch._dynamo.backends.common import aot_autograd
        from functorch.compile import make_boxed_func

        return aot_autograd(fw_compiler=lambda g, _: make_boxed_func(g.forward))(gm, example_inputs)

    eager_calls = []
    monkeypatch.setattr(api, "_key", lambda *a: eager_calls.append(1) or (_ for _ in ()).throw(AssertionError))

    def block(q, k, v, qb, kb):
        return flashcore.attention(q, k, v) * 2, flashcore.attention(qb, kb, kb, is_causal=True, enable_gqa=True)

    q = torch.randn(2, 4, 33, 64, dtype=torch.float16)
    qb = torch.randn(1, 8, 20, 128, dtype=torch.bfloat16)
    kb = torch.randn(1, 2, 29, 128, dtype=torch.bfloat16)
    torch._dynamo.reset()
    got = torch.compile(block, fullgraph=True, backend=backend)(q, q, q, qb, kb)
    want = (cpu_attention(q, q, q) * 2, cpu_attention(qb, kb, kb, is_causal=True))
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    ops = _graph_ops(graphs[0])
    assert ops.count("flashcore.attention.default") == 2, ops
    assert not eager_calls                                    # the eager path never ran: the operator did


def test_compile_dynamic_shapes(cpu_kernel):
    def f(q, k, v):
        return flashcore.attention(q, k, v, is_causal=True, enable_gqa=True)

    torch._dynamo.reset()
    g = torch.compile(f, fullgraph=True, backend="aot_eager", dynamic=True)
    for S, S_kv in ((40, 70), (65, 31)):
        q = torch.randn(2, 8, S, 64, dtype=torch.float16)
        k = torch.randn(2, 4, S_kv, 64, dtype=torch.float16)
        assert torch.equal(g(q, k, k), cpu_attention(q, k, k, is_causal=True))


def test_compile_reports_a_bad_call_at_trace_time(cpu_kernel):
    def f(q, k):
        return flashcore.attention(q, k, k)                # 8 query heads, 2 key heads, no enable_gqa

    torch._dynamo.reset()
    with pytest.raises(Exception, match=r"H_kv = 2\) must equal q\.shape\[1\] \(H = 8\)"):
        torch.compile(f, fullgraph=True, backend="eager")(torch.randn(1, 8, 8, 64).half(),
                                                          torch.randn(1, 2, 8, 64).half())


def test_eager_calls_do_not_pay_the_operator(monkeypatch):
    """Outside compilation the call never touches the operator (checked with the GPU faked)."""
    from flashcore import library_bench

    monkeypatch.setattr(api, "_op", lambda *a, **kw: pytest.fail("the eager call went through the operator"))
    with library_bench.fake_gpu() as state:
        q = torch.randn(1, 8, 64, 64).half()
        state["count"] = True
        out = flashcore.attention(q, q, q)
        assert tuple(out.shape) == (1, 8, 64, 64)


def test_import_order_does_not_matter():
    """flashcore imported before torch: the first call (here inside torch.compile) binds torch, registers the
    operator, and dynamo traces through to the operator's fake implementation (whose CUDA-only rule then names the
    CPU tensor)."""
    code = ("import flashcore\nimport torch\n"
            "f = lambda q: flashcore.attention(q, q, q) * 2\n"
            "q = torch.randn(1, 2, 10, 64, dtype=torch.float16)\n"
            "try:\n    torch.compile(f, fullgraph=True, backend='eager')(q)\nexcept Exception as e:\n"
            "    print(str(e)[:2000])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT).stdout
    assert "flashcore.attention.default" in out and "q.device must be a CUDA device, got cpu" in out


def test_no_schema_argument_collides_with_inductors_own_parameters():
    """Inductor lowers a custom op through FallbackKernel.create(kernel, *args, **kwargs): an operator argument named
    ``kernel`` (ours was, until the first GPU run of torch.compile failed on it) or ``example_output`` breaks it."""
    names = [a.name for a in torch.ops.flashcore.attention.default._schema.arguments]
    assert "kernel_id" in names
    assert not {"kernel", "example_output", "unbacked_bindings"} & set(names)
