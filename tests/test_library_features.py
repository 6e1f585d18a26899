"""The library as a drop-in for SDPA's forward, on the CPU: the new arguments' errors (and that they match SDPA's),
dispatch by features, the cached call (what a second call does and does not do, what re-validates, one compile
under a thread race), the fp64 reference's causal mask and grouped heads, the feature fuzz, the library record
from measure to page with the GPU faked, and the distributed example's sharding.

The GPU is faked where the call needs one (:func:`flashcore.library_bench.fake_gpu`): CPU tensors pass as CUDA
ones and the launch is a counted no-op; everything else is the library's own code.
"""
import json
import threading

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import flashcore  # noqa: E402
from flashcore import api, cli, dispatch, fuzz, kernels, library_bench, records  # noqa: E402
from flashcore.harness.reference import attention_ref64  # noqa: E402
from flashcore.kernels import KernelSpec  # noqa: E402
from flashcore.launch import PreparedLaunch  # noqa: E402
from flashcore.validate import ArrayDesc, HeadsError, Support, contiguous_strides, validate  # noqa: E402

FULL = Support(("float16", "bfloat16"), (64, 128), True, True)
PROV = dict(gpu="Test GPU", gpu_slug="test-gpu", sm="sm_90", driver="0", cuda="13.0", torch="x", cupy="x",
            commit="1" * 40, dirty=False, date="2026-01-01T00:00:00+00:00", command="pytest", notebook="library")


def desc(shape=(1, 8, 512, 64), dtype="float16", device="cuda:0", strides=None, ptr=1 << 20):
    return ArrayDesc(dtype=dtype, shape=tuple(shape), strides=tuple(strides or contiguous_strides(shape)),
                     device=device, data_ptr=ptr)


def lib_validate(q, k, v, **kw):
    return validate(q, k, v, support=FULL, **kw)


@pytest.fixture
def library_features():
    """Every feature flashcore's variants compute, as the GPU checks see them (flashcore.api.unverified_variants:
    the variants that await their GPU check are let through)."""
    with api.unverified_variants():
        yield


# ------------------------------------------------------------------------------------------- new arguments
@pytest.mark.parametrize("name", ["is_causal", "enable_gqa", "copy"])
@pytest.mark.parametrize("value", [1, "yes", None, 1.0])
def test_flags_must_be_bools(name, value):
    with pytest.raises(TypeError, match=rf"{name} must be a bool, got {type(value).__name__}"):
        lib_validate(desc(), desc(), desc(), **{name: value})


def test_flag_type_error_matches_sdpa_class():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(TypeError):
        F.scaled_dot_product_attention(q, q, q, is_causal=1)      # SDPA's argument parser says TypeError too


@pytest.mark.parametrize("dtype", ["float32", "float64", "int16", "float8_e4m3fn"])
def test_dtype_outside_the_supported_set(dtype):
    with pytest.raises(TypeError, match=rf"q\.dtype must be torch\.float16 or torch\.bfloat16, got torch\.{dtype}"):
        lib_validate(desc(dtype=dtype), desc(dtype=dtype), desc(dtype=dtype))


def test_dtypes_must_agree():
    with pytest.raises(TypeError, match=r"v\.dtype must equal q\.dtype \(torch\.bfloat16\), got torch\.float16"):
        lib_validate(desc(dtype="bfloat16"), desc(dtype="bfloat16"), desc())
    plan = lib_validate(desc(dtype="bfloat16"), desc(dtype="bfloat16"), desc(dtype="bfloat16"))
    assert plan.dtype == "bfloat16"


@pytest.mark.parametrize("D", [32, 80, 96, 256])
def test_head_dim_outside_the_supported_set(D):
    with pytest.raises(NotImplementedError, match=rf"head dimension D={D} is not supported: q\.shape\[3\] must be "
                                                  r"one of \{64, 128\}"):
        s = (1, 8, 64, D)
        lib_validate(desc(shape=s), desc(shape=s), desc(shape=s))


def test_head_dim_128():
    s = (1, 8, 64, 128)
    plan = lib_validate(desc(shape=s), desc(shape=s), desc(shape=s))
    assert plan.D == 128 and plan.scale == pytest.approx(128 ** -0.5)


@pytest.mark.parametrize("H,H_kv,gqa,ok", [
    (8, 8, False, True), (8, 1, False, True), (8, 4, False, False), (8, 2, False, False),
    (8, 4, True, True), (8, 2, True, True), (8, 1, True, True), (8, 3, True, False), (4, 8, True, False),
    (4, 8, False, False), (6, 4, True, False), (32, 8, True, True),
])
def test_heads_rule_matches_sdpa(H, H_kv, gqa, ok):
    """Our rule accepts exactly what SDPA (CPU, its math backend's broadcasting) accepts for [B, H, S, D] inputs
    with H_kv key/value heads, and where SDPA raises RuntimeError we raise a HeadsError, which is one."""
    q, k = torch.randn(1, H, 5, 8), torch.randn(1, H_kv, 7, 8)
    try:
        F.scaled_dot_product_attention(q, k, k, enable_gqa=gqa)
        sdpa_ok = True
    except RuntimeError:
        sdpa_ok = False
    if H_kv > H and not gqa:
        pytest.skip("SDPA broadcasts q over more key heads (an output of H_kv heads); we refuse it: documented")
    assert sdpa_ok == ok
    qd, kd = desc(shape=(1, H, 5, 64)), desc(shape=(1, H_kv, 7, 64))
    if ok:
        plan = lib_validate(qd, kd, kd, enable_gqa=gqa)
        assert (plan.H, plan.H_kv, plan.kv_group) == (H, H_kv, H // H_kv)
    else:
        with pytest.raises(RuntimeError) as e:
            lib_validate(qd, kd, kd, enable_gqa=gqa)
        assert isinstance(e.value, (HeadsError, ValueError)) and isinstance(e.value, RuntimeError)


def test_more_key_heads_than_query_heads_is_refused():
    with pytest.raises(HeadsError, match=r"H_kv = 8\) must equal q\.shape\[1\] \(H = 4\)"):
        lib_validate(desc(shape=(1, 4, 5, 64)), desc(shape=(1, 8, 5, 64)), desc(shape=(1, 8, 5, 64)))


def test_heads_error_message_quotes_sdpa():
    with pytest.raises(HeadsError, match=r"SDPA: 'Number of heads in key and value must divide the number of heads"):
        lib_validate(desc(shape=(1, 8, 5, 64)), desc(shape=(1, 3, 5, 64)), desc(shape=(1, 3, 5, 64)),
                     enable_gqa=True)


def test_features_outside_support_are_refused():
    """The base support (the Triton peer's): no causal, no GQA."""
    with pytest.raises(NotImplementedError, match="is_causal=True is not supported here"):
        validate(desc(), desc(), desc(), is_causal=True)
    with pytest.raises(NotImplementedError, match="grouped-query attention is not supported here"):
        validate(desc(), desc(shape=(1, 2, 512, 64)), desc(shape=(1, 2, 512, 64)), enable_gqa=True)


@pytest.mark.parametrize("scale", [-1.0, -0.125, 0.0, -0.0, 1e-40, 1e-6, 100.0])
def test_any_finite_scale_is_accepted(scale):
    assert lib_validate(desc(), desc(), desc(), scale=scale).scale == scale


def test_plan_carries_the_features():
    plan = lib_validate(desc(shape=(2, 8, 100, 128), dtype="bfloat16"), desc(shape=(2, 2, 300, 128), dtype="bfloat16"),
                        desc(shape=(2, 2, 300, 128), dtype="bfloat16"), is_causal=True, enable_gqa=True)
    assert (plan.dtype, plan.D, plan.causal, plan.H_kv, plan.kv_group, plan.out_shape) == \
        ("bfloat16", 128, True, 2, 4, (2, 8, 100, 128))


# ----------------------------------------------------------------------------------------------- dispatch
def _spec(kid, dtypes=("float16",), head_dims=(64,), causal=False, gqa=False, cross=True):
    s = KernelSpec(id=kid, source=f"{kid}.cu", entry=kid, threads=128, grid=lambda s: (s.bh, 1, 1), cross=cross)
    for name, value in dict(dtypes=dtypes, head_dims=head_dims, causal=causal, gqa=gqa).items():
        object.__setattr__(s, name, value)
    return s


HOPPER = _spec("hopper_partial", dtypes=("float16", "bfloat16"), head_dims=(64,))
FLASH = _spec("flashcore", dtypes=("float16", "bfloat16"), head_dims=(64, 128), causal=True, gqa=True)
SPECS = {"hopper_partial": HOPPER, "flashcore": FLASH}


@pytest.mark.parametrize("features,expected", [
    (dispatch.Features(), "hopper_partial"),
    (dispatch.Features(dtype="bfloat16"), "hopper_partial"),
    (dispatch.Features(head_dim=128), "flashcore"),
    (dispatch.Features(causal=True), "flashcore"),
    (dispatch.Features(gqa=True), "hopper_partial"),
    (dispatch.Features(dtype="bfloat16", head_dim=128, causal=True, gqa=True), "flashcore"),
])
def test_a_partial_kernel_is_chosen_only_for_its_features(features, expected):
    """Grouped heads never rule a kernel out (the library repeats k and v for one that does not map them), so a
    GQA problem of the partial kernel's dtype / head dim / mask stays with it."""
    choice = dispatch.choose(1, 8, 512, 512, dispatch.Device(), features, specs=SPECS,
                             preference=("hopper_partial", "flashcore"))
    assert choice.kernel == expected
    if expected == "flashcore":
        assert "passed over: hopper_partial:" in choice.reason
    if features.gqa:
        assert ("k and v repeated over the head groups by the library" in choice.reason) is \
            (expected == "hopper_partial")
        assert ("grouped heads mapped in the kernel" in choice.reason) is (expected == "flashcore")


def test_dispatch_names_why_nothing_runs():
    with pytest.raises(dispatch.NoKernelError, match=r"hopper_partial: head dim 128 \(has 64\); causal masking"):
        dispatch.choose(1, 8, 512, 512, dispatch.Device(), dispatch.Features(head_dim=128, causal=True),
                        specs={"hopper_partial": HOPPER}, preference=("hopper_partial",))
    with pytest.raises(dispatch.NoKernelError, match="flashcore: not registered"):
        dispatch.choose(1, 8, 512, 512, dispatch.Device(), specs={}, preference=("flashcore",))


def test_library_support_is_the_union_of_the_preference():
    s = dispatch.library_support(SPECS, preference=("hopper_partial", "flashcore"))
    assert set(s.dtypes) == {"float16", "bfloat16"} and s.head_dims == (64, 128) and s.causal and s.gqa
    assert dispatch.library_support({}, preference=("x",)) == Support()


def test_flashcore_declares_its_feature_builds():
    """flashcore's feature builds (bf16, D = 128, causal, kernel-mapped GQA, any scale) passed their GPU check
    (runs/h200/20261201T041412Z-sweep), so the spec declares them: dispatch takes them without any opt-in, and the
    library's support is their union with the Hopper kernels' base set — nothing pending."""
    flash = kernels.get("flashcore")
    f = dispatch.Features(dtype="bfloat16", head_dim=128, causal=True)
    assert dispatch.unsupported(flash, f) is None and dispatch.unsupported(flash, f, unverified=True) is None
    choice = dispatch.choose(1, 8, 512, 512, dispatch.Device(), f)
    assert choice.kernel == "flashcore"
    assert "flashcore_hopper: dtype bfloat16 (has float16); head dim 128 (has 64); causal masking" in choice.reason
    assert dispatch.unsupported(flash, dispatch.Features(dtype="float32", head_dim=96)) == \
        "dtype float32 (has float16, bfloat16); head dim 96 (has 64, 128)"
    with pytest.raises(dispatch.NoKernelError, match=r"flashcore: head dim 96 \(has 64, 128\)"):
        dispatch.choose(1, 8, 512, 512, dispatch.Device(), dispatch.Features(head_dim=96))
    s = dispatch.library_support()
    assert (s.dtypes, s.head_dims, s.causal, s.gqa, s.pending) == (("float16", "bfloat16"), (64, 128), True, True,
                                                                    None)
    assert dispatch.library_support(unverified=True) == s


@pytest.mark.parametrize("kw,exc,pattern", [
    (dict(shape=(1, 8, 64, 96)), NotImplementedError,
     r"^head dimension D=96 is not supported: q\.shape\[3\] must be one of \{64, 128\}$"),
    (dict(shape=(1, 8, 64, 256), dtype="bfloat16"), NotImplementedError,
     r"^head dimension D=256 is not supported: q\.shape\[3\] must be one of \{64, 128\}$"),
    (dict(dtype="float32"), TypeError, r"^q\.dtype must be torch\.float16 or torch\.bfloat16, got torch\.float32$"),
    (dict(dtype="float64", shape=(1, 8, 64, 128)), TypeError,
     r"^q\.dtype must be torch\.float16 or torch\.bfloat16, got torch\.float64$"),
])
def test_what_no_build_runs_is_refused_naming_the_supported_set(kw, exc, pattern):
    d = desc(**kw)
    with pytest.raises(exc, match=pattern):
        validate(d, d, d, support=dispatch.library_support())
    with pytest.raises(exc, match=pattern):
        validate(d, d, d, is_causal=True, support=dispatch.library_support())


@pytest.mark.parametrize("kw,causal", [(dict(dtype="bfloat16"), False), (dict(shape=(1, 8, 64, 128)), False),
                                       (dict(), True), (dict(dtype="bfloat16", shape=(2, 8, 100, 128)), True)])
def test_the_declared_features_pass_validation(kw, causal):
    d = desc(**kw)
    plan = validate(d, d, d, is_causal=causal, support=dispatch.library_support())
    assert (plan.dtype, plan.D, plan.causal) == (d.dtype, d.shape[3], causal)


def test_dispatch_stays_pure():
    a = dispatch.choose(1, 8, 512, 512, dispatch.Device(), dispatch.Features(causal=True), specs=SPECS)
    assert dispatch.choose(1, 8, 512, 512, dispatch.Device(), dispatch.Features(causal=True), specs=SPECS) == a


# ------------------------------------------------------------------------------------------ the cached call
@pytest.fixture
def gpu(monkeypatch):
    """The GPU faked (flashcore.library_bench.fake_gpu), counting validations and output allocations."""
    counts = dict(validate=0, alloc=0, copies=0)
    real_validate, real_copy = api.validate, api._copy_torch

    def counted_validate(*a, **kw):
        counts["validate"] += 1
        return real_validate(*a, **kw)

    def counted_copy(x):
        counts["copies"] += 1
        return real_copy(x)

    monkeypatch.setattr(api, "validate", counted_validate)
    monkeypatch.setattr(api, "_copy_torch", counted_copy)
    with library_bench.fake_gpu() as state:
        state["count"] = True

        def alloc(*a, **kw):
            counts["alloc"] += 1
            return torch.empty(*a, **kw)

        api._new_output = alloc
        state["counts"] = counts
        yield state


def _qkv(B=1, H=8, S=64, D=64, dtype=torch.float16, H_kv=None):
    q = torch.randn(B, H, S, D).to(dtype)
    k = torch.randn(B, H_kv or H, S, D).to(dtype)
    return q, k, torch.randn_like(k)


def test_a_repeated_layout_is_validated_once(gpu):
    q, k, v = _qkv()
    for _ in range(5):
        out = flashcore.attention(q, k, v)
    c = gpu["counts"]
    assert (c["validate"], gpu["loads"], gpu["launches"], c["alloc"], c["copies"]) == (1, 1, 5, 5, 0)
    assert tuple(out.shape) == (1, 8, 64, 64) and out.dtype == torch.float16
    q2, k2, v2 = _qkv()                                    # new tensors, same layout: still no validation
    flashcore.attention(q2, k2, v2)
    assert c["validate"] == 1 and gpu["launches"] == 6


@pytest.mark.parametrize("change", ["stride", "dtype", "alignment", "shape", "causal", "gqa", "scale", "copy",
                                    "kernel", "grad"])
def test_a_changed_layout_revalidates(gpu, library_features, change):
    q, k, v = _qkv(H_kv=8)
    flashcore.attention(q, k, v)
    base = gpu["counts"]["validate"]
    kw = {}
    if change == "stride":
        q = q.transpose(2, 3).contiguous().transpose(2, 3)            # same shape and values, other strides
    elif change == "dtype":
        q, k, v = (x.to(torch.bfloat16) for x in (q, k, v))
    elif change == "alignment":
        buf = torch.empty(q.numel() + 1, dtype=q.dtype)
        q = buf[1:].view(q.shape).copy_(q)                             # 2 bytes off: not 16-byte aligned
        assert q.data_ptr() % 16
    elif change == "shape":
        q = torch.randn(1, 8, 65, 64).half()
    elif change == "causal":
        kw = dict(is_causal=True)
    elif change == "gqa":
        kw = dict(enable_gqa=True)
    elif change == "scale":
        kw = dict(scale=-0.5)
    elif change == "copy":
        kw = dict(copy=False)
    elif change == "kernel":
        kw = dict(kernel="flashcore")
    elif change == "grad":
        q = q.clone().requires_grad_()
        with torch.no_grad():                      # requires grad but no autograd: allowed, and the same plan
            flashcore.attention(q, k, v)
        assert gpu["counts"]["validate"] == base
        with pytest.raises(NotImplementedError, match=r"q\.requires_grad must be False"):
            flashcore.attention(q, k, v)                               # autograd on: refused, every time
        with pytest.raises(NotImplementedError):
            flashcore.attention(q, k, v)
        return
    flashcore.attention(q, k, v, **kw)
    assert gpu["counts"]["validate"] == base + 1
    flashcore.attention(q, k, v, **kw)
    assert gpu["counts"]["validate"] == base + 1                       # and cached in turn


def test_a_bad_flag_is_refused_even_when_an_equal_one_is_cached(gpu, library_features):
    q, k, v = _qkv()
    flashcore.attention(q, k, v, is_causal=True)
    with pytest.raises(TypeError, match="is_causal must be a bool, got int"):
        flashcore.attention(q, k, v, is_causal=1)                      # 1 == True: the key alone would hit
    with pytest.raises(TypeError, match="enable_gqa must be a bool, got str"):
        flashcore.attention(q, k, v, enable_gqa="no")


def test_the_copy_path_is_cached_and_launches_the_copy(gpu):
    q, k, v = _qkv()
    view = q.transpose(1, 2).contiguous().transpose(1, 2)
    flashcore.attention(view, k, v)
    flashcore.attention(view, k, v)
    assert gpu["counts"]["validate"] == 1 and gpu["counts"]["copies"] == 2
    with pytest.raises(ValueError, match="q must be contiguous"):
        flashcore.attention(view, k, v, copy=False)


def test_the_prepared_launch_packs_the_abi(gpu, library_features):
    q, k, v = _qkv(B=2, H=8, S=100, D=128, dtype=torch.bfloat16, H_kv=2)
    flashcore.attention(q, k, v, is_causal=True, enable_gqa=True, scale=-0.25)
    (call,) = api._PLANS.values()
    assert call.prepared and isinstance(call.launch, PreparedLaunch)
    args = call.launch.args()
    assert args[:3] == (q.data_ptr(), k.data_ptr(), v.data_ptr())
    spec = kernels.get("flashcore")
    consts = args[4:]
    assert consts[:4] == (16, 100, 100, -0.25)                        # bh, seq_q, seq_kv, softmax_scale (fp32)
    assert consts[4] in (0, 1) and consts[5] == 4                     # split, kv_group (query heads per k/v head)
    assert call.route.defines == (("FC_FEATURES", "1"), ("FC_BF16", "1"), ("HEAD_DIM", "128"), ("FC_CAUSAL", "1"))
    assert call.launch.grid == tuple(spec.grid(kernels.LaunchShape(16, 100, 100, 132)))


def _call_of(q, k, v, **kw):
    return api._PLANS[api._key(q, k, v, kw.get("is_causal", False), kw.get("scale"), kw.get("enable_gqa", False),
                               True, kw.get("kernel"))]


def _spy_repeats(monkeypatch):
    seen = []
    repeat = torch.Tensor.repeat_interleave

    def spy(self, *a, **kw):
        out = repeat(self, *a, **kw)
        seen.append(out.data_ptr())
        return out

    monkeypatch.setattr(torch.Tensor, "repeat_interleave", spy)
    return seen


def test_grouped_heads_on_a_kernel_that_does_not_map_them_are_repeated(gpu, monkeypatch):
    """GQA at a shape the rule gives a Hopper kernel (fp16, D = 64, not causal, sm_90): k and v repeated over the
    groups before every launch (fresh contiguous tensors), kv_group 1, no -D flag."""
    q, k, v = _qkv(H=8, H_kv=2)
    assert api.kernel_for(tuple(q.shape), device=dispatch.Device(90, 132)).kernel != "flashcore"
    flashcore.attention(q, k, v, enable_gqa=True)
    call = _call_of(q, k, v, enable_gqa=True)
    assert call.route.spec.id in ("hopper_02_tma", "flashcore_hopper")
    assert call.route.expand == 4 and call.route.kv_group == 1 and call.route.defines == ()
    seen = _spy_repeats(monkeypatch)
    flashcore.attention(q, k, v, enable_gqa=True)
    flashcore.attention(q, k, v, enable_gqa=True)
    assert len(seen) == 4                                              # k and v, on each call
    assert gpu["counts"]["validate"] == 1 and gpu["loads"] == 1 and gpu["launches"] == 3


def test_grouped_heads_pinned_to_flashcore_are_mapped_in_the_kernel(gpu, monkeypatch):
    """kernel="flashcore": its feature build maps the groups itself — nothing repeated, kv_group in the argument
    block, k and v's own pointers."""
    q, k, v = _qkv(H=8, H_kv=2)
    seen = _spy_repeats(monkeypatch)
    flashcore.attention(q, k, v, enable_gqa=True, kernel="flashcore")
    call = _call_of(q, k, v, enable_gqa=True, kernel="flashcore")
    assert call.route.spec.id == "flashcore" and call.route.expand == 1 and call.route.kv_group == 4
    args = call.launch.args()
    assert args[1:3] == (k.data_ptr(), v.data_ptr()) and args[-1] == 4 and not seen


@pytest.mark.parametrize("scale,kernel_scale,negated", [
    (-0.5, 0.5, True), (-1e-40, api.FLT_MIN, True), (0.0, api.FLT_MIN, False), (1e-40, api.FLT_MIN, False),
    (0.25, 0.25, False)])
def test_what_the_library_runs_today_any_scale(gpu, scale, kernel_scale, negated):
    """A negative scale: q negated (a fresh tensor), |scale| to the kernel; a scale below the smallest normal float
    (0 included): raised to it, so every unmasked key gets weight 1 — the base build takes neither itself."""
    q, k, v = _qkv()
    flashcore.attention(q, k, v, scale=scale)
    call = _call_of(q, k, v, scale=scale)
    assert call.route.negate_q is negated and call.route.defines == ()
    assert call.launch.args()[7] == pytest.approx(kernel_scale, rel=1e-6)          # the fp32 softmax_scale
    assert (call.launch.args()[0] != q.data_ptr()) is negated


def test_the_variants_map_heads_and_take_scales_themselves(gpu):
    """Pinned to flashcore, its feature build does both in the kernel: no repeat, no negation."""
    q, k, v = _qkv(H=8, H_kv=2)
    flashcore.attention(q, k, v, enable_gqa=True, scale=-0.5, kernel="flashcore")
    call = _call_of(q, k, v, enable_gqa=True, scale=-0.5, kernel="flashcore")
    assert call.route.spec.id == "flashcore" and call.route.expand == 1 and not call.route.negate_q and call.route.kv_group == 4
    assert call.route.defines == (("FC_FEATURES", "1"),)
    args = call.launch.args()
    assert args[:3] == (q.data_ptr(), k.data_ptr(), v.data_ptr()) and args[7] == -0.5 and args[-1] == 4


def test_the_call_routes_the_features_to_flashcore_and_refuses_the_rest(gpu):
    """bf16, D = 128 and causal calls run without any opt-in, on flashcore's feature builds (the Hopper kernels
    declare none of them); D = 96 and fp32 are refused naming the supported set, before anything compiles."""
    for kw, flags in ((dict(dtype=torch.bfloat16), dict()), (dict(D=128), dict()), (dict(), dict(is_causal=True)),
                      (dict(dtype=torch.bfloat16, D=128), dict(is_causal=True))):
        q, k, v = _qkv(**kw)
        out = flashcore.attention(q, k, v, **flags)
        assert out.dtype == q.dtype and tuple(out.shape) == tuple(q.shape)
        r = _call_of(q, k, v, **flags).route
        assert r.spec.id == "flashcore" and ("FC_FEATURES", "1") in r.defines
        assert (("FC_BF16", "1") in r.defines) is (q.dtype == torch.bfloat16)
        assert (("HEAD_DIM", "128") in r.defines) is (q.shape[3] == 128)
        assert (("FC_CAUSAL", "1") in r.defines) is bool(flags.get("is_causal"))
    assert gpu["loads"] == 4 and gpu["launches"] == 4
    q, k, v = _qkv(D=96)
    with pytest.raises(NotImplementedError, match=r"D=96 is not supported: q\.shape\[3\] must be one of \{64, 128\}"):
        flashcore.attention(q, k, v)
    q, k, v = _qkv(dtype=torch.float32)
    with pytest.raises(TypeError, match=r"q\.dtype must be torch\.float16 or torch\.bfloat16, got torch\.float32"):
        flashcore.attention(q, k, v)
    q, k, v = _qkv(dtype=torch.bfloat16)
    with pytest.raises(dispatch.NoKernelError, match=r"kernel='flashcore_hopper' cannot run .*dtype bfloat16"):
        flashcore.attention(q, k, v, kernel="flashcore_hopper")
    assert gpu["loads"] == 4 and gpu["launches"] == 4


def test_empty_inputs_launch_nothing(gpu):
    q = torch.empty(0, 8, 64, 64).half()
    out = flashcore.attention(q, q, q)
    assert tuple(out.shape) == (0, 8, 64, 64) and gpu["launches"] == 0 and gpu["loads"] == 0


def test_the_cache_is_bounded(gpu, monkeypatch):
    monkeypatch.setattr(api, "CACHE_LIMIT", 4)
    for S in range(1, 11):
        q, k, v = _qkv(S=S)
        flashcore.attention(q, k, v)
    assert len(api._PLANS) <= 4 and gpu["loads"] == 1


def test_first_call_compiles_once_under_a_thread_race(gpu):
    """16 threads make the first call at once (a barrier releases them) while the fake compile sleeps: one
    compile, 16 launches, 16 outputs."""
    gpu["load_delay"] = 0.2
    q, k, v = _qkv()
    barrier, outs, errors = threading.Barrier(16), [], []

    def work():
        try:
            barrier.wait()
            outs.append(flashcore.attention(q, k, v))
        except Exception as exc:       # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(outs) == 16 and gpu["loads"] == 1 and gpu["launches"] == 16


def test_variants_compile_separately(gpu, library_features, monkeypatch):
    """One compile per (dtype, head dim, causal) variant — whatever the spec's variant function builds."""
    seen = []
    monkeypatch.setattr(api, "variant_defines",
                        lambda spec, f: seen.append(f) or (("V", f"{f.dtype}-{f.head_dim}-{int(f.causal)}"),))
    for dtype in (torch.float16, torch.bfloat16):
        for D in (64, 128):
            for causal in (False, True):
                q, k, v = _qkv(D=D, dtype=dtype)
                flashcore.attention(q, k, v, is_causal=causal)
                flashcore.attention(q, k, v, is_causal=causal)
    assert gpu["loads"] == 8 and len(api._READY) == 8


def test_another_device_or_a_fresh_thread_switches_the_context():
    calls = []
    pl = PreparedLaunch(1, (2, 1, 1), (128, 1, 1), 0, [("i32", 1)], device=1, context=7,
                        launch_kernel=lambda *a: calls.append(("launch", a[8])),
                        current_context=lambda: 3,
                        switch_device=lambda d: _Ctx(calls, d))
    pl(16, 32, 48, 64, stream=99)
    assert calls == [("enter", 1), ("launch", 99), ("exit", 1)]
    calls.clear()
    pl._current = lambda: 7                                    # already current: no switch
    pl(16, 32, 48, 64, stream=5)
    assert calls == [("launch", 5)] and pl.args()[:4] == (16, 32, 48, 64)


class _Ctx:
    def __init__(self, calls, d):
        self.calls, self.d = calls, d

    def __enter__(self):
        self.calls.append(("enter", self.d))

    def __exit__(self, *a):
        self.calls.append(("exit", self.d))


def test_host_profile_on_the_cpu():
    """The CPU host-cost profile runs the real call with the launch faked: every stage is measured and the
    whole call is what the stages add up to (plus the call's own Python)."""
    r = library_bench.host_profile(calls=2000, fake=True)
    st = r["stages"]
    assert r["fake"] and r["per_call_us"] > 0 and st["prepared"]
    assert st["total"] == pytest.approx(sum(st[s] for s in ("key", "lookup", "alloc", "stream", "launch", "rest")))
    assert any("_key" in t["function"] for t in r["top"])
    assert not api._PLANS or all(not isinstance(c.launch, PreparedLaunch) or c.launch._launch is not
                                 library_bench._fake_launch_kernel for c in api._PLANS.values())


# -------------------------------------------------------------------------------------------- the reference
@pytest.mark.parametrize("S_q,S_kv", [(37, 37), (20, 50), (50, 20), (1, 30)])
@pytest.mark.parametrize("scale", [None, 0.3, 7.0])
def test_reference_causal_and_gqa_match_sdpa(S_q, S_kv, scale):
    q, k = torch.randn(2, 8, S_q, 16, dtype=torch.float64), torch.randn(2, 2, S_kv, 16, dtype=torch.float64)
    v = torch.randn_like(k)
    ref = attention_ref64(q, k, v, scale=scale, causal=True)
    sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)
    assert torch.allclose(ref, sdpa, atol=1e-12)


def test_reference_causal_is_top_left_aligned():
    """S_q ≠ S_kv: query i sees keys 0 … i (SDPA's ones(L, S).tril(0)), not the bottom-right alignment."""
    q, k = torch.zeros(1, 1, 3, 4, dtype=torch.float64), torch.zeros(1, 1, 5, 4, dtype=torch.float64)
    v = torch.arange(5, dtype=torch.float64).view(1, 1, 5, 1).expand(1, 1, 5, 4)
    out = attention_ref64(q, k, v, causal=True)[0, 0, :, 0]
    assert out.tolist() == [0.0, 0.5, 1.0]                   # means of keys {0}, {0, 1}, {0, 1, 2}


def test_reference_negative_and_zero_scale():
    q, k, v = (torch.randn(1, 2, 9, 8, dtype=torch.float64) for _ in range(3))
    assert torch.allclose(attention_ref64(q, k, v, scale=-1.0), attention_ref64(-q, k, v, scale=1.0))
    assert torch.allclose(attention_ref64(q, k, v, scale=0.0), v.mean(dim=-2, keepdim=True).expand_as(v))
    causal0 = attention_ref64(q, k, v, scale=0.0, causal=True)
    assert torch.allclose(causal0, v.cumsum(-2) / torch.arange(1, 10, dtype=torch.float64).view(9, 1))


# ------------------------------------------------------------------------------------------------- the fuzz
def test_feature_fuzz_cases_cover_every_feature():
    cases = fuzz.fuzz_cases(500, seed=0, features=FULL)
    assert len(cases) == 500 and len({c["seed"] for c in cases}) == 500
    summary = {t: 0 for t in ("bfloat16", "float16", "D=64", "D=128", "causal", "GQA", "MQA", "scale negative",
                              "scale zero", "scale tiny", "scale large", "S_q≠S_kv", "S_q=1")}
    for c in cases:
        for t in fuzz.feature_tags(c):
            if t in summary:
                summary[t] += 1
        assert c["H"] % c["H_kv"] == 0 and c["D"] in (64, 128) and c["dtype"] in ("float16", "bfloat16")
        assert c["enable_gqa"] or c["H_kv"] in (c["H"], 1)
        assert c["B"] * c["H"] * c["S"] * c["S_kv"] * c["D"] <= fuzz.DEFAULT_WORK * 64
    assert all(n >= 10 for n in summary.values()), summary
    assert sum(1 for c in cases if c["causal"] and c["S"] != c["S_kv"]) >= 10
    assert sum(1 for c in cases if c["H_kv"] == 1 and not c["enable_gqa"]) >= 2    # SDPA-style broadcast
    assert fuzz.fuzz_cases(500, seed=0, features=FULL) == cases


def test_feature_fuzz_respects_the_support():
    cases = fuzz.fuzz_cases(200, seed=1, features=Support(("float16",), (64,), True, False))
    assert all(c["dtype"] == "float16" and c["D"] == 64 and c["H_kv"] == c["H"] for c in cases)
    assert any(c["causal"] for c in cases)
    base = fuzz.fuzz_cases(50, seed=1)                      # no features: the old cases, without feature fields
    assert "dtype" not in base[0] and base == fuzz.fuzz_cases(50, seed=1, features=None)


def test_cases_for_the_library_kernel_use_its_declared_features(monkeypatch):
    monkeypatch.setattr(kernels, "_REGISTRY", {"flashcore": FLASH})
    cases = fuzz.cases_for("flashcore", 100)
    assert any(c.get("dtype") == "bfloat16" for c in cases) and any(c.get("causal") for c in cases)
    assert all("dtype" not in c for c in fuzz.cases_for("triton_attention", 20))


def test_the_library_kernel_is_fuzzed_over_its_declared_features():
    cases = fuzz.cases_for("flashcore", 500)
    assert {c["dtype"] for c in cases} == {"float16", "bfloat16"} and {c["D"] for c in cases} == {64, 128}
    assert sum(1 for c in cases if c["causal"]) >= 100
    assert sum(1 for c in cases if c["H_kv"] != c["H"]) >= 50 and sum(1 for c in cases if c["scale"] == 0) >= 10
    assert sum(1 for c in cases if (c["scale"] or 0) < 0) >= 30
    assert fuzz.cases_for("flashcore", 500, unverified=True) == cases          # nothing awaits a check any more


def _stand_in(causal_override=None):
    def fn(q, k, v, o, case):
        f = fuzz.case_features(case)
        c = f["causal"] if causal_override is None else causal_override
        o.copy_(F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=c, scale=f["scale"],
                                               enable_gqa=k.shape[1] != q.shape[1]).to(q.dtype))
    return fn


@pytest.mark.parametrize("case", [
    dict(B=1, H=4, S=40, S_kv=40, seed=1, dtype="bfloat16", D=64, causal=True, H_kv=2, enable_gqa=True, scale=None),
    dict(B=2, H=2, S=17, S_kv=33, seed=2, dtype="float16", D=128, causal=False, H_kv=1, enable_gqa=False,
         scale=-0.5),
    dict(B=1, H=2, S=30, S_kv=20, seed=3, dtype="float16", D=64, causal=True, H_kv=2, enable_gqa=False, scale=2.0),
])
def test_check_case_passes_a_right_answer_and_fails_a_wrong_one(case):
    good = fuzz.check_case(lambda q, k, v, o: _stand_in()(q, k, v, o, case), case, device="cpu")
    assert good["passed"] and good["deterministic"] and good["baseline"] == "sdpa"
    if case["causal"]:
        bad = fuzz.check_case(lambda q, k, v, o: _stand_in(False)(q, k, v, o, case), case, device="cpu")
        assert not bad["passed"] and bad["max_abs_err"] > bad["tol"]
    unwritten = fuzz.check_case(lambda q, k, v, o: None, case, device="cpu")
    assert not unwritten["passed"] and unwritten["unwritten"] > 0


def test_check_case_falls_back_to_the_formula_where_sdpa_fails():
    """PyTorch's CPU SDPA returns NaN for a causal mask with scale ≤ 0; the baseline is then the dtype's formula."""
    case = dict(B=1, H=2, S=20, S_kv=20, seed=4, dtype="float16", D=64, causal=True, H_kv=2, scale=0.0)
    q, k, v = fuzz.case_inputs(case, "cpu")
    if torch.isfinite(F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.0)).all():
        pytest.skip("this torch's CPU SDPA handles scale 0 with a causal mask")

    def fn(q, k, v, o):
        o.copy_(attention_ref64(q, k, v, scale=0.0, causal=True).to(q.dtype))

    row = fuzz.check_case(fn, case, device="cpu")
    assert row["passed"] and row["baseline"] == "formula_float16"


def test_feature_summary():
    rows = [dict(B=1, H=8, S=1, S_kv=9, dtype="bfloat16", D=128, causal=True, H_kv=2, scale=-1.0, passed=True,
                 max_abs_err=1e-3, tol=2e-3, deterministic=True),
            dict(B=1, H=8, S=5, S_kv=5, dtype="float16", D=64, causal=False, H_kv=8, scale=0.0, passed=False,
                 max_abs_err=1.0, tol=2e-3, deterministic=True, baseline="formula_float16")]
    s = fuzz.feature_summary(rows)
    assert s["all"]["cases"] == 2 and s["all"]["failures"] == 1 and s["all"]["formula_baseline"] == 1
    assert s["bfloat16"]["failures"] == 0 and s["GQA"]["cases"] == 1 and s["scale zero"]["failures"] == 1
    assert s["S_q=1"]["cases"] == 1 and s["S_q≠S_kv"]["cases"] == 1 and s["causal"]["worst_err_over_tol"] == 0.5


# ---------------------------------------------------------------------------------- the library record (faked)
def _fake_measurements(monkeypatch):
    from flashcore.harness.bench import summarize as timing

    def fake_eager(run, shapes, calls, samples, graph_samples):
        rows = []
        for B, H, S, D in shapes:
            for name, us in (("api_eager", 9.0), ("sdpa_eager", 25.0)):
                rows.append(run.add_result(name, B, H, S, D, timing=timing([us - 0.5] + [us] * 8 + [us + 0.5], 300,
                                                                                 "fake eager"),
                                           host_us=us - 1, kernel_us=6.0,
                                           kernel_timing="fake graph", stage="eager",
                                           ratio_to_sdpa=9.0 / 25.0 if name == "api_eager" else None))
        return rows

    def fake_features(run, shapes, features, graph_samples=20, calls=100, samples=5):
        for B, H, S in shapes:
            for name in features:
                f = library_bench.FEATURES[name]
                for kid, us in (("flashcore", 7.0), ("sdpa_cudnn", 9.0)):
                    run.add_result(kid, B, H, S, f["D"], dtype=f["dtype"], causal=f["causal"],
                                   timing=timing([us, us, us], 20, "fake graph"), feature=name,
                                   H_kv=H // f["group"], stage="feature", eager_us=us + 3, tflops=100.0,
                                   awaiting_gpu_check=f["unverified"],
                                   **(dict(passed=True, max_abs_err=1e-3, tol=2e-3) if kid == "flashcore" else {}))

    monkeypatch.setattr(library_bench, "measure_eager", fake_eager)
    monkeypatch.setattr(library_bench, "measure_features", fake_features)
    monkeypatch.setattr(library_bench, "compile_race_check", lambda threads=16: dict(
        threads=threads, loads=1, nvrtc_compiles=1, seconds=1.0, outputs=threads, bitwise_equal=threads, errors=[],
        passed=True, features={}))
    monkeypatch.setattr(library_bench, "compile_check", lambda: dict(
        fullgraph=True, compiled=True, compile_seconds=3.0, graphs=1, graph_breaks=0, max_abs_diff=0.0,
        bitwise_equal=True, passed=True))
    monkeypatch.setattr(library_bench, "graph_check", lambda: dict(captured=True, replay_bitwise_equal=True,
                                                                    new_inputs_bitwise_equal=True, passed=True))
    monkeypatch.setattr(library_bench, "concurrency_check", lambda t, s, c: dict(
        threads=t, streams=s, calls_per_thread=c, outputs=t * c, bitwise_equal=t * c, errors=[], passed=True))
    monkeypatch.setattr(library_bench, "device1_check", lambda: dict(tested=False, visible_gpus=1,
                                                                      note="not tested: 1 GPU visible", passed=None))
    real_profile = library_bench.host_profile
    monkeypatch.setattr(library_bench, "host_profile",
                        lambda shape, calls=10000, fake=False, **kw: real_profile(shape, calls=500, fake=True))


def test_measure_to_record_to_page(tmp_path, monkeypatch, library_features):
    """measure → one record (schema-valid) → summary → the page's markdown: every number the page shows is the
    record's, the verdicts are computed from it."""
    _fake_measurements(monkeypatch)
    path = library_bench.run_library(dict(shapes=[[1, 8, 512, 64], [1, 8, 128, 64]]), runs_dir=tmp_path,
                                     provenance=dict(PROV))
    rec = records.load(path)
    assert rec["run_id"].endswith("-library") and rec.provenance["notebook"] == "library"
    assert {r["kernel"] for r in rec.rows(stage="eager")} == {"api_eager", "sdpa_eager"}
    assert all(r["timing"] for r in rec.rows(stage="eager"))
    s = rec.ext("summary")
    assert s["eager"]["1,8,512,64"]["goal_met"] and s["eager"]["1,8,512,64"]["moonshot_met"]
    assert s["checks"] == dict(compile=True, cuda_graph=True, concurrency=True, compile_race=True, device1=None)
    assert rec.ext("breakdown")["fake"] and set(rec.ext("breakdown")["stages"]) >= {"key", "alloc", "launch"}
    assert len(s["features_passed"]) == 12 and all(s["features_passed"].values())
    page = library_bench.page_markdown(rec)
    assert "| B1 H8 S512 D64 | 9 (8.95–9.05) | 25 (24.9–25.1) | 0.36 | moonshot met (≤ 0.5×)" in page
    assert "not tested: 1 GPU visible" in page and "prepared launch" in page
    assert "| fp16 · D64 · causal † | B1 H8 S512 | 7 [10] | 9 [12] | 0.78 | ok |" in page
    assert "fp16 · D64 · H_kv 2 repeated" in page and "fp16 · D64 · H_kv 2 in kernel †" in page
    assert "nan" not in page.lower() and "None" not in page
    json.dumps(rec)


def test_page_says_when_a_record_predates_a_check(tmp_path, monkeypatch, library_features):
    _fake_measurements(monkeypatch)
    path = library_bench.run_library(dict(shapes=[[1, 8, 512, 64]], features=["base"]), runs_dir=tmp_path,
                                     provenance=dict(PROV))
    rec = records.load(path)
    del rec["extra"]["compile"]
    assert "| torch.compile, fullgraph | — | this record predates the check |" in library_bench.page_markdown(rec)


def test_write_page_without_a_record(tmp_path):
    out = library_bench.write_page(tmp_path / "library_record.md", gpu="nope", runs_dir=tmp_path)
    assert "No library record on `nope` yet" in out.read_text()


def test_cli_library(tmp_path, monkeypatch, capsys, library_features):
    _fake_measurements(monkeypatch)
    code = cli.main(["library", "--runs-dir", str(tmp_path), "--param", "features=[\"base\",\"causal\"]",
                     "--param", "shapes=[[1,8,512,64]]"], provenance=dict(PROV))
    out = capsys.readouterr().out
    assert code == 0 and "recorded" in out and "ratio 0.36 (goal ≤ 1.0: met; moonshot ≤ 0.5: met)" in out
    assert "--  device1" in out and "features checked: 4, failed: none" in out
    assert cli.main(["library", "--param", "bogus=1"], provenance=dict(PROV)) == 2
    assert "unknown bogus" in capsys.readouterr().err


def test_causal_flops_count_only_the_unmasked_pairs():
    assert library_bench.causal_flops(1, 1, 4, 4, 64, False) == 4 * 16 * 64
    assert library_bench.causal_flops(1, 1, 4, 4, 64, True) == 4 * 10 * 64      # 1 + 2 + 3 + 4 pairs
    assert library_bench.causal_flops(1, 1, 4, 2, 64, True) == 4 * 7 * 64       # 1 + 2 + 2 + 2 (top-left)


# --------------------------------------------------------------------------------- the distributed example
def test_distributed_example_shards_heads_with_their_key_heads():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "distributed_heads.py"
    spec = importlib.util.spec_from_file_location("distributed_heads", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import os

    assert os.environ["NCCL_NVLS_ENABLE"] == "0" and os.environ["TORCH_SYMM_MEM_DISABLE_MULTICAST"] == "1"
    world, H, H_kv = 4, 32, 8
    for rank in range(world):
        hq, hk = mod.shard(H, H_kv, rank, world)
        for h in range(hq.start, hq.stop):
            assert hk.start <= h // (H // H_kv) < hk.stop       # the key/value head a query head reads is local
    with pytest.raises(SystemExit, match="divisible"):
        mod.shard(16, 2, 0, 4)
    assert mod.parse(["--H", "8", "--causal"]).causal


# ------------------------------------------- the GPU measurements' own bookkeeping, with their CUDA parts faked
@pytest.fixture
def cpu_measure(monkeypatch, library_features):
    """measure_eager / measure_features / compile_race_check run for real on CPU tensors; only the clocks (CUDA
    events, graph replay), the kernel launch (fake_gpu) and torch.cuda's synchronisation are faked."""
    from flashcore.harness.bench import summarize

    monkeypatch.setattr(library_bench, "DEVICE", "cpu")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **kw: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    timed_calls = []

    def fake_eager_cost(fns, calls=300, samples=15, **kw):
        out = {}
        for i, (name, fn) in enumerate(fns.items()):
            fn()                                               # the callable really runs (on the CPU)
            us = 10.0 + 10 * i
            out[name] = dict(median_us=us, p10_us=us - 1, p90_us=us + 1, samples=samples, calls=calls,
                             host_us=us - 2, host_p10_us=us - 3, host_p90_us=us - 1, timing="fake eager",
                             result=summarize([us - 1, us, us + 1], calls, "fake eager"))
        return out

    def fake_kernel_time(fn, samples=20):
        fn()
        timed_calls.append(fn)
        return summarize([5.0, 6.0, 7.0], 20, "fake graph")

    monkeypatch.setattr(library_bench, "eager_cost", fake_eager_cost)
    monkeypatch.setattr(library_bench, "kernel_time", fake_kernel_time)
    monkeypatch.setattr(flashcore, "kernel_for", lambda *a, **kw: dispatch.Choice("flashcore", "test"))
    with library_bench.fake_gpu() as state:
        state["timed"] = timed_calls
        state["count"] = True
        api._new_output = torch.zeros              # the fake launch writes nothing: outputs start equal
        yield state


def _run(tmp_path):
    return records.Run("library", runs_dir=tmp_path, provenance=dict(PROV))


def test_measure_eager_rows(tmp_path, cpu_measure):
    run = _run(tmp_path)
    rows = library_bench.measure_eager(run, [(1, 2, 64, 64)], calls=10, samples=3, graph_samples=3)
    assert [r["kernel"] for r in rows] == ["api_eager", "sdpa_eager"]
    api_row, sdpa_row = rows
    assert api_row["median_us"] == 10.0 and sdpa_row["median_us"] == 20.0 and api_row["ratio_to_sdpa"] == 0.5
    assert api_row["timing"] == "fake eager" and api_row["kernel_us"] == 6.0 and api_row["host_us"] == 8.0
    assert cpu_measure["launches"] >= 2                    # flashcore.attention really ran (launch faked)
    records.validate(run.to_dict())


def test_measure_features_rows(tmp_path, cpu_measure, monkeypatch):
    """A passing feature is timed beside cuDNN (or SDPA's default where cuDNN refuses: that refusal is a row); a
    failing one is a row with its error and is not timed."""
    def fake_sdpa(q, k, v, causal=False, backend=None):
        def call():
            if backend == "sdpa_cudnn" and k.shape[1] != q.shape[1]:
                raise RuntimeError("No available kernel")       # cuDNN refusing GQA, say
            return q
        return call

    def fake_check(fn, case, runs=2, kernel="", device="cuda"):
        q, k, v = fuzz.case_inputs(case, "cpu")
        fn(q, k, v, torch.empty_like(q))                        # the library call runs (launch faked)
        ok = case["D"] != 128                                   # D=128 plays a failing variant
        return dict(kernel=kernel, passed=ok, max_abs_err=1e-3 if ok else 1.0, tol=2e-3, deterministic=True,
                    sdpa_err=1e-3, baseline="sdpa")

    monkeypatch.setattr(library_bench, "_sdpa", fake_sdpa)
    monkeypatch.setattr(fuzz, "check_case", fake_check)
    run = _run(tmp_path)
    library_bench.measure_features(run, [(1, 8, 64)], ["base", "d128", "gqa"], graph_samples=3)
    got = [(r["kernel"], r["feature"], r.get("median_us"), bool(r.get("error"))) for r in run.results]
    assert got == [("flashcore", "base", 6.0, False), ("sdpa_cudnn", "base", 6.0, False),
                   ("flashcore", "d128", None, False),
                   ("sdpa_cudnn", "gqa", None, True), ("flashcore", "gqa", 6.0, False),
                   ("sdpa_default", "gqa", 6.0, False)]
    base = run.results[0]
    assert base["passed"] and base["eager_us"] == 10.0 and base["eager_of"] == "flashcore"
    assert run.results[1]["eager_us"] == 20.0 and run.results[1]["eager_of"] == "sdpa_default"
    assert base["tflops"] == pytest.approx(library_bench.causal_flops(1, 8, 64, 64, 64, False) / 6e-6 / 1e12)
    assert run.results[2]["passed"] is False and run.results[2]["max_abs_err"] == 1.0
    assert run.results[4]["H_kv"] == 2 and run.results[4]["dtype"] == "float16"
    records.validate(run.to_dict())
    page = library_bench.page_markdown(records.Record(run.to_dict()))
    assert "| fp16 · D64 · H_kv 2 repeated | B1 H8 S64 | 6 [10] | default 6 [20] | 1.00 (tie) | ok |" in page
    assert "| fp16 · D128 † | B1 H8 S64 | — [—] | — | — | **FAILED**" in page and "† A kernel variant" in page
    assert "**FAILED**" in page


def test_compile_race_check_bookkeeping(cpu_measure):
    """16 threads released together on a variant whose (fake) compile takes 0.2 s: one compile, 16 outputs."""
    cpu_measure["load_delay"] = 0.2
    r = library_bench.compile_race_check(threads=16)
    assert r["passed"] and r["loads"] == 1 and r["outputs"] == 16 and r["bitwise_equal"] == 16 and not r["errors"]


# ------------------------------------------------------------------------ the kernel variants (nvcc, no GPU)
def _variants():
    from flashcore.specs import v8_mma

    return v8_mma.flashcore_variants()


def test_the_spec_declares_the_feature_builds_their_record_checked():
    spec = kernels.get("flashcore")
    assert (spec.dtypes, spec.head_dims, spec.causal, spec.gqa, spec.any_scale) == (("float16", "bfloat16"), (64, 128),
                                                                                     True, True, True)
    assert not spec.unverified
    assert spec.kv_group_arg and api.variant_defines(spec, dispatch.Build()) == ()   # the base build: no -D at all
    builds = [d for _, d in _variants()]
    assert builds[0] == () and len(set(builds)) == 9 and all(("FC_FEATURES", "1") in d for d in builds[1:])


def test_the_feature_record_says_the_builds_passed():
    """The record the spec cites: a 500-case fuzz of flashcore with its feature builds, every case and every
    declared feature passed."""
    from pathlib import Path

    from flashcore.specs import v8_mma

    path = Path(__file__).resolve().parent.parent / "runs" / v8_mma.FEATURES_RECORD / "run.json"
    if not path.exists():
        pytest.skip(f"{path} not in this checkout")
    rec = records.load(path)
    assert rec["params"]["unverified"] is True and "flashcore" in rec["params"]["fuzz_kernels"]
    s = rec["extra"]["fuzz"]["flashcore"]
    assert s["passed"] and s["failures"] == 0 and s["cases"] >= 500
    feats = rec["extra"]["fuzz_features"]["flashcore"]
    for tag in ("bfloat16", "D=128", "causal", "GQA", "MQA", "scale negative", "scale zero", "scale tiny",
                "scale large", "S_q=1", "S_q≠S_kv"):
        assert feats[tag]["cases"] > 0 and feats[tag]["failures"] == 0, tag


@pytest.mark.skipif(not __import__("shutil").which("nvcc"), reason="nvcc not installed")
@pytest.mark.parametrize("variant", range(9))
def test_every_build_compiles_for_sm90_without_spills(variant):
    """nvcc -cubin -arch=sm_90 of kernels/flashcore.cu with each build's -D flags (the base build and the 8 feature
    builds): it compiles, ptxas reports no spill and no stack, and the kernel's <entry>_smem_bytes (the launcher's
    shared-memory sizes) follow the head dim: a Q tile and 3 stages of K and V tiles, then the split-KV landing."""
    from flashcore.compile import nvcc_compile

    features, defines = _variants()[variant]
    rep = nvcc_compile(kernels.get("flashcore"), defines=defines)
    assert not rep.spills, f"{defines}: {rep.spill_stores} B spill stores, {rep.spill_loads} B spill loads"
    assert rep.stack_bytes == 0 and rep.registers <= 255
    row_bytes = 2 * features.head_dim
    unsplit = 64 * row_bytes + 3 * 2 * 64 * row_bytes
    assert rep.smem_dynamic == (unsplit, unsplit + 64 * (features.head_dim + 8) * 4 + 2 * 64 * 4)


def _have_sass_tools() -> bool:
    import shutil

    try:
        from flashcore.tools.sass import _tool

        return bool(shutil.which("nvcc")) and bool(_tool("cuobjdump"))
    except Exception:
        return False


@pytest.mark.skipif(not _have_sass_tools(), reason="nvcc / cuobjdump not installed")
def test_the_base_build_is_the_committed_kernel_instruction_for_instruction(tmp_path, monkeypatch):
    """The features are guarded so that flashcore's base build — and the ladder kernels over the same header — keep
    their machine code: the working tree's builds against the last commit's kernels/, instruction for instruction
    (scripts/check_sass_identity.py does this for every id against the pre-consolidation baseline)."""
    import re
    import subprocess
    import tarfile
    from io import BytesIO
    from pathlib import Path

    from flashcore import compile as compile_mod
    from flashcore.tools.sass import sass_of

    root = Path(__file__).resolve().parent.parent
    blob = subprocess.run(["git", "-C", str(root), "archive", "HEAD", "kernels"], capture_output=True).stdout
    if not blob:
        pytest.skip("no git history here")
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(tmp_path, filter="data")

    def instructions(cubin):
        return [re.sub(r"\s+", " ", i) for i in re.findall(r"/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;", sass_of(cubin))]

    for kid in ("flashcore", "v8_07_dsmem_push", "v8_09_two_mtiles"):
        spec = kernels.get(kid)
        new = compile_mod.nvcc_compile(spec, out_dir=tmp_path / "new")
        with monkeypatch.context() as m:                       # the committed headers on the include path
            m.setattr(compile_mod, "KERNELS_DIR", tmp_path / "kernels")
            old = compile_mod.nvcc_compile(tmp_path / "kernels" / spec.source, defines=spec.defines,
                                           out_dir=tmp_path / "old")
        assert len(instructions(new.cubin)) > 500
        assert instructions(old.cubin) == instructions(new.cubin), kid


@pytest.mark.parametrize("scale", [None, -0.5, -3.0, 0.0, -0.0, 1e-40, -1e-40, 0.3])
@pytest.mark.parametrize("H_kv,gqa", [(8, False), (2, True), (1, False), (1, True)])
def test_what_the_base_build_is_given_computes_sdpas_answer(gpu, scale, H_kv, gqa):
    """The library's work around the base build — q negated, k and v repeated, the scale made positive and normal —
    hands the kernel a problem whose plain softmax(q'·k'ᵀ·s')·v' (no grouping, s' > 0) is SDPA's answer to the
    call: checked in fp64 with SDPA on the CPU as the kernel."""
    gen = torch.Generator().manual_seed(H_kv)
    q = torch.randn(2, 8, 37, 64, generator=gen, dtype=torch.float64)
    k = torch.randn(2, H_kv, 45, 64, generator=gen, dtype=torch.float64)
    v = torch.randn(2, H_kv, 45, 64, generator=gen, dtype=torch.float64)
    want = F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=H_kv != 8)
    qh, kh, vh = (x.half() for x in (q, k, v))
    flashcore.attention(qh, kh, vh, scale=scale, enable_gqa=gqa)
    call = _call_of(qh, kh, vh, scale=None if scale is None else float(scale), enable_gqa=gqa)
    r = call.route
    assert r.defines == () and r.kv_group == 1 and r.kernel_scale >= api.FLT_MIN
    q2, k2, v2 = call.inputs(q, k, v)                          # the same work on the fp64 values
    assert q2.shape == q.shape and k2.shape == v2.shape == (2, 8, 45, 64) and k2.is_contiguous()
    got = F.scaled_dot_product_attention(q2, k2, v2, scale=r.kernel_scale)
    assert torch.allclose(got, want, atol=1e-12, rtol=1e-12)
