"""The Hopper kernel in the library, on the CPU: the dispatch rule (sm_90, fp16 / D = 64 / not causal, the size
threshold and the record it comes from), the prepared TMA launch (its parameter block, maps re-encoded only for a
changed pointer, thread safety) and the library call through it, with the GPU faked
(:func:`flashcore.library_bench.fake_gpu`) and cuTensorMapEncodeTiled replaced by a recording fake."""
from __future__ import annotations

import ctypes
import threading

import pytest
import torch

import flashcore
from flashcore import api, dispatch, kernels, launch, library_bench, tma
from flashcore.compile import Launcher
from flashcore.launch import PreparedTmaLaunch

H200 = dispatch.Device(sm=90, num_sms=132)
SMALL = (1, 8, 512, 512)          # hopper_02_tma fastest of the three (runs/h200/20261201T042313Z-05_hopper)
LARGE = (4, 16, 4096, 4096)       # 275 GFLOP, fill 0.94: flashcore_hopper fastest (same record)
DECODE = (4, 16, 1, 8192)         # 64 query rows, long keys: flashcore fastest (same record)


# ----------------------------------------------------------------------------------------- a fake encoder
class FakeEncoder:
    """cuTensorMapEncodeTiled's signature; writes (ptr, seq, box rows, bh, row stride, head stride, swizzle) into
    the 128-byte map and counts the calls. ``fail``: return this CUresult instead."""

    def __init__(self):
        self.calls = 0
        self.fail = 0
        self.lock = threading.Lock()

    def __call__(self, out, dtype, rank, ptr, dims, strides, box, estr, interleave, swizzle, l2, oob):
        with self.lock:
            self.calls += 1
        if self.fail:
            return self.fail
        assert out % 64 == 0 and dtype == tma.DTYPE_FLOAT16 and rank == 3 and swizzle == tma.SWIZZLE_128B
        words = (ctypes.c_uint64 * 16).from_address(out)
        dims, strides, box = ((t * n).from_address(a) for t, n, a in ((ctypes.c_uint64, 3, dims),
                                                                          (ctypes.c_uint64, 2, strides),
                                                                          (ctypes.c_uint32, 3, box)))
        for i, w in enumerate((ptr, dims[1], box[1], dims[2], strides[0], strides[1], swizzle)):
            words[i] = w
        return 0


def map_words(prepared, i):
    return list((ctypes.c_uint64 * 16).from_buffer_copy(prepared.map_bytes(i)))


def fake_calls(encoder, launches=None):
    def launch_kernel(*args):
        if launches is not None:
            launches.append(args)

    def calls():
        return launch_kernel, (lambda: 1), (lambda device: __import__("contextlib").nullcontext()), encoder
    return calls


class FakeFunction:
    ptr = 0x1000
    max_dynamic_shared_size_bytes = 0


def hopper_launcher(sms=132):
    return Launcher(kernels.get("flashcore_hopper"), FakeFunction(), "sm_90a", 0, sms, (200 * 1024, 200 * 1024))


# ------------------------------------------------------------------------------------------------ dispatch
def test_three_kernels_by_the_shape_rule():
    assert dispatch.PREFERENCE == (dispatch.HOPPER_KERNEL, dispatch.TMA_KERNEL, dispatch.LIBRARY_KERNEL)
    small = dispatch.choose(*SMALL, H200)
    assert small.kernel == "hopper_02_tma" and "shape rule" in small.reason
    big = dispatch.choose(*LARGE, H200)
    assert big.kernel == "flashcore_hopper" and "GFLOP" in big.reason and "fill" in big.reason
    assert dispatch.choose(1, 32, 16384, 16384, H200).kernel == "flashcore_hopper"
    assert dispatch.choose(1, 8, 8192, 8192, H200).kernel == "hopper_02_tma"    # same work as B8 H16 S2048, fill 0.86
    assert dispatch.choose(8, 16, 2048, 2048, H200).kernel == "flashcore_hopper"
    assert dispatch.choose(*DECODE, H200).kernel == "flashcore"
    assert dispatch.choose(1, 8, 128, 4096, H200).kernel == "flashcore"       # S_q ≠ S_kv: few rows, long keys
    assert dispatch.choose(1, 8, 2048, 777, H200).kernel == "hopper_02_tma"


def test_rule_boundaries_are_inclusive_and_pure():
    t = dispatch.RULE
    assert dispatch.rule_pick(1, 1, t.split_max_q_rows, t.split_min_kv) == "flashcore"
    assert dispatch.rule_pick(1, 1, t.split_max_q_rows + 1, t.split_min_kv) == "hopper_02_tma"
    assert dispatch.rule_pick(1, 1, t.split_max_q_rows, t.split_min_kv - 1) == "hopper_02_tma"
    assert dispatch.work(8, 16, 2048, 2048) == t.hopper_min_flops
    assert dispatch.rule_pick(8, 16, 2048, 2048) == "flashcore_hopper"
    assert dispatch.rule_pick(8, 16, 2048, 2047) == "hopper_02_tma"          # work just below
    assert dispatch.hopper_fill(8, 16, 2048) >= t.hopper_min_fill > dispatch.hopper_fill(1, 8, 8192)
    assert dispatch.choose(*LARGE, H200) == dispatch.choose(*LARGE, H200)


def test_rule_is_derived_from_the_committed_record():
    """The constants are derive_rule of the chapter-5 record's grid rows (the docstring cites the same path)."""
    import json

    from flashcore import paths

    path = paths.ROOT / dispatch.GRID_RECORD if hasattr(paths, "ROOT") else None
    if path is None or not path.exists():
        import pathlib

        path = pathlib.Path(__file__).resolve().parents[1] / dispatch.GRID_RECORD
    rows = json.loads(path.read_text())["results"]
    assert dispatch.GRID_RECORD in dispatch.__doc__ and dispatch.GRID_RECORD in dispatch.RULE.__doc__ or \
        dispatch.GRID_RECORD in (dispatch.__doc__ or "")
    assert dispatch.RULE == dispatch.derive_rule(rows)
    assert len({(r["B"], r["H"], r["S"], r["S_kv"]) for r in rows if r.get("stage") == "grid"}) == 25
    # the rule picks the fastest of the three, or one tied with it, at every grid shape (no exceptions needed)
    assert dispatch.rule_misses(rows) == []
    picks = dispatch.library_pick_rows(rows)
    assert len(picks) == 25 and {p["kernel"] for p in picks} == set(dispatch.RULE_KERNELS)
    assert all(p["ratio"] == p["pick_us"] / p["baseline_us"] for p in picks)
    worst = dispatch.worst_ratio(rows)
    assert worst == max(picks, key=lambda p: p["ratio"]) and worst["S_q"] == 1       # decode: cuDNN is faster


def test_rule_misses_can_fail():
    """A rule that sends everything to flashcore misses the shapes where a Hopper kernel is strictly faster."""
    t = dispatch.Thresholds(10 ** 12, 1, None, None)
    rows = _rows3([(1, 8, 2048, 2048, (45.0, 45.7, 46.4), (22.1, 22.2, 22.3), (27.7, 27.8, 27.9))])
    (miss,) = dispatch.rule_misses(rows, t)
    assert miss["pick"] == "flashcore" and miss["fastest"] == "hopper_02_tma"
    assert dispatch.rule_misses(rows) == []


def _rows3(points):
    """points: (B, H, S, S_kv, flashcore, hopper_02_tma, flashcore_hopper), each (p10, med, p90)."""
    rows = []
    for B, H, S, S_kv, *ts in points:
        for kid, (p10, med, p90) in zip(dispatch.RULE_KERNELS, ts):
            rows.append(dict(stage="grid", kernel=kid, B=B, H=H, S=S, S_kv=S_kv, D=64, median_us=med, p10_us=p10,
                             p90_us=p90))
    return rows


def test_derive_rule_from_synthetic_rows():
    rows = _rows3([(1, 1, 4096, 4096, (26, 26.5, 27), (32, 33, 34), (50, 50.5, 51)),       # flashcore alone
                   (1, 8, 2048, 2048, (45, 45.5, 46), (22, 22.5, 23), (27, 27.5, 28)),     # hopper_02_tma
                   (8, 16, 2048, 2048, (490, 495, 500), (292, 293, 294), (289, 290, 291))])  # flashcore_hopper
    t = dispatch.derive_rule(rows)
    assert (t.split_max_q_rows, t.split_min_kv) == (4096, 4096)
    assert t.hopper_min_flops == dispatch.work(8, 16, 2048, 2048) and t.hopper_min_fill == 0.9403
    assert dispatch.rule_misses(rows, t) == []
    tied = _rows3([(8, 16, 2048, 2048, (490, 495, 500), (288, 292, 294), (289, 290, 291))])   # overlap: no bound
    assert dispatch.derive_rule(tied).hopper_min_flops is None


@pytest.mark.parametrize("features", [
    dispatch.Features(causal=True), dispatch.Features(dtype="bfloat16"), dispatch.Features(head_dim=128),
    dispatch.Features(dtype="bfloat16", head_dim=128, causal=True)])
def test_features_the_hopper_kernel_lacks_never_go_there(features):
    c = dispatch.choose(*LARGE, H200, features)          # flashcore declares them (GPU check: its sweep record)
    assert c.kernel == "flashcore" and "flashcore_hopper" in c.reason and "hopper_02_tma" in c.reason


@pytest.mark.parametrize("sm", [100, 120])
def test_other_gpus_never_get_the_sm90a_build(sm):
    c = dispatch.choose(*LARGE, dispatch.Device(sm=sm, num_sms=148))
    assert c.kernel == "flashcore" and "sm_90a" in c.reason
    assert "sm_90a" in dispatch.device_problem(kernels.get("flashcore_hopper"), dispatch.Device(sm=sm))
    assert dispatch.device_problem(kernels.get("flashcore"), dispatch.Device(sm=sm)) is None


def test_gqa_follows_the_shape_rule():
    """Grouped heads: the same rule; the Hopper kernels get k and v repeated, flashcore maps the groups itself."""
    gqa = dispatch.Features(gqa=True)
    c = dispatch.choose(*LARGE, H200, gqa)
    assert c.kernel == "flashcore_hopper" and "repeated" in c.reason
    c = dispatch.choose(*SMALL, H200, gqa)
    assert c.kernel == "hopper_02_tma" and "repeated" in c.reason
    c = dispatch.choose(*DECODE, H200, gqa)
    assert c.kernel == "flashcore" and "mapped in the kernel" in c.reason
    assert dispatch.choose(*LARGE, H200, gqa, unverified=True).kernel == "flashcore_hopper"


def test_route_table_shows_the_families():
    kinds = {r["kernel"] for r in dispatch.route_table()}
    assert kinds >= {"flashcore", "hopper_02_tma"}
    from flashcore import cli

    text = cli.list_text()
    assert "→ hopper_02_tma" in text and "→ flashcore:" in text


# -------------------------------------------------------------------------------- the threshold from a record
def _rows(points):
    """points: (B, H, S, S_kv, flashcore (p10, med, p90), hopper (p10, med, p90))."""
    rows = []
    for B, H, S, S_kv, fc, hp in points:
        for kid, (p10, med, p90) in (("flashcore", fc), ("flashcore_hopper", hp)):
            rows.append(dict(stage="grid", kernel=kid, B=B, H=H, S=S, S_kv=S_kv, D=64, median_us=med, p10_us=p10,
                             p90_us=p90))
        rows.append(dict(stage="grid", kernel="sdpa_cudnn", B=B, H=H, S=S, S_kv=S_kv, D=64, median_us=1.0,
                         p10_us=1.0, p90_us=1.0))
    return rows


def test_crossover_threshold_from_grid_rows():
    rows = _rows([(1, 8, 256, 256, (3, 3.1, 3.2), (6, 6.1, 6.2)),
                  (1, 8, 1024, 1024, (10, 11, 12), (11.5, 12, 13)),        # overlapping ranges: a tie
                  (2, 8, 1024, 1024, (19, 20, 21), (15, 16, 17)),
                  (4, 16, 4096, 4096, (990, 1000, 1010), (570, 576, 580))])
    assert dispatch.crossover_threshold(rows) == dispatch.work(2, 8, 1024, 1024)
    # a loss above a win moves the threshold above it
    rows += _rows([(8, 8, 1024, 1024, (30, 31, 32), (40, 41, 42))])
    assert dispatch.crossover_threshold(rows) == dispatch.work(4, 16, 4096, 4096)
    # other stages, other kernels and half-measured shapes are ignored
    rows += [dict(stage="check", kernel="flashcore", B=64, H=64, S=9999, median_us=1e9),
             dict(stage="grid", kernel="flashcore_hopper", B=64, H=64, S=9999, median_us=1.0)]
    assert dispatch.crossover_threshold(rows) == dispatch.work(4, 16, 4096, 4096)


def test_crossover_threshold_never_and_duplicates():
    assert dispatch.crossover_threshold(_rows([(4, 16, 4096, 4096, (5, 5, 5), (6, 6, 6))])) is None
    assert dispatch.crossover_threshold([]) is None
    dup = _rows([(1, 8, 512, 512, (5, 5, 5), (6, 6, 6))]) * 2
    with pytest.raises(ValueError, match="two grid rows"):
        dispatch.crossover_threshold(dup)


# --------------------------------------------------------------------------------- the prepared TMA launch
def test_tma_launch_parameter_block_layout():
    enc, launches = FakeEncoder(), []
    p = launch.prepare(hopper_launcher(), 8, 1000, 777, 0.125, cuda_calls=fake_calls(enc, launches))
    assert isinstance(p, PreparedTmaLaunch)
    assert p.grid == (min(132, 8 * -(-1000 // 192)), 1, 1) and p.block == (512, 1, 1) and p.smem == 200 * 1024
    assert p.base % 64 == 0
    assert p.const_offsets == [32, 36, 40, 44] and p.map_offsets == [64, 192, 320] and p.block_bytes == 448
    assert p.param_addresses() == tuple(p.base + o for o in (0, 8, 16, 24, 32, 36, 40, 44, 64, 192, 320))
    assert enc.calls == 0                                   # nothing encoded before the first call
    p(0x10000, 0x20000, 0x30000, 0x40000, 7)
    assert p.args() == (0x10000, 0x20000, 0x30000, 0x40000, 8, 1000, 777, 0.125)
    # the maps: q (box 64 rows of seq_q), k and v (box 128 rows of seq_kv); strides 128 B per row, S·128 per head
    assert map_words(p, 0)[:7] == [0x10000, 1000, 64, 8, 128, 1000 * 128, tma.SWIZZLE_128B]
    assert map_words(p, 1)[:7] == [0x20000, 777, 128, 8, 128, 777 * 128, tma.SWIZZLE_128B]
    assert map_words(p, 2)[:6] == [0x30000, 777, 128, 8, 128, 777 * 128]
    blob = p.block_bytes_now()
    assert blob[:32] == b"".join(x.to_bytes(8, "little") for x in (0x10000, 0x20000, 0x30000, 0x40000))
    assert blob[64:192] == p.map_bytes(0)
    (args,) = launches
    assert args[0] == FakeFunction.ptr and args[1:7] == (p.grid + p.block) and args[7] == p.smem and args[8] == 7
    assert args[9] == ctypes.addressof(p._params)


def test_maps_are_encoded_only_when_their_pointer_changes():
    enc = FakeEncoder()
    p = launch.prepare(hopper_launcher(), 8, 512, 512, 0.125, cuda_calls=fake_calls(enc))
    p(0x1000, 0x2000, 0x3000, 0x4000, 0)
    assert enc.calls == p.encodes == 3
    for _ in range(100):                                    # a benchmark loop, a graph capture: nothing encoded
        p(0x1000, 0x2000, 0x3000, 0x4000, 0)
    assert enc.calls == 3
    p(0x1000, 0x2000, 0x3000, 0x9000, 0)                    # a new output needs no map
    assert enc.calls == 3
    p(0x1100, 0x2000, 0x3000, 0x4000, 0)                    # a new q: one map
    assert enc.calls == 4 and map_words(p, 0)[0] == 0x1100 and map_words(p, 1)[0] == 0x2000
    p(0x1100, 0x2200, 0x3300, 0x4000, 0)                    # new k and v: two
    assert enc.calls == 6 and map_words(p, 2)[0] == 0x3300


def test_a_refused_encode_is_an_error_and_is_retried():
    enc = FakeEncoder()
    p = launch.prepare(hopper_launcher(), 8, 512, 512, 0.125, cuda_calls=fake_calls(enc))
    enc.fail = 1
    with pytest.raises(tma.TmaError, match="cuTensorMapEncodeTiled refused .* CUresult 1"):
        p(0x1000, 0x2000, 0x3000, 0x4000, 0)
    enc.fail = 0
    p(0x1000, 0x2000, 0x3000, 0x4000, 0)                    # the failed map is not taken as encoded
    assert map_words(p, 0)[0] == 0x1000 and p.encodes == 3


def test_misaligned_pointer_is_a_clear_error_not_a_launch():
    enc, launches = FakeEncoder(), []
    p = launch.prepare(hopper_launcher(), 8, 512, 512, 0.125, cuda_calls=fake_calls(enc, launches))
    with pytest.raises(tma.TmaError, match="16-byte aligned base address.*0x2008"):
        p(0x1000, 0x2008, 0x3000, 0x4000, 0)
    assert not launches


def test_other_extra_args_are_not_prepared():
    wd = kernels.get("flashcore_hopper_watchdog")
    assert not launch.preparable(wd) and launch.preparable(kernels.get("flashcore_hopper"))
    assert launch.preparable(kernels.get("flashcore"))
    with pytest.raises(ValueError, match="other than TMA maps"):
        launch.prepare(Launcher(wd, FakeFunction(), "sm_90a", 0, 132), 8, 512, 512, 0.1,
                       cuda_calls=fake_calls(FakeEncoder()))
    with pytest.raises(ValueError, match="kv_group=4"):
        launch.prepare(hopper_launcher(), 8, 512, 512, 0.1, kv_group=4, cuda_calls=fake_calls(FakeEncoder()))


def test_threads_never_launch_each_others_maps():
    """8 threads on one prepared launch, each with its own buffers: at every launch the block's pointers and the
    maps' encoded pointers belong to the same thread (the lock covers the encode and the launch)."""
    enc = FakeEncoder()
    bad = []
    holder = {}

    def check_launch(*args):
        p = holder["p"]
        q, k, v, o = p.args()[:4]
        if [map_words(p, i)[0] for i in range(3)] != [q, k, v] or not (q >> 20) == (k >> 20) == (v >> 20) == (o >> 20):
            bad.append((q, k, v, o))

    def calls():
        return check_launch, (lambda: 1), (lambda d: __import__("contextlib").nullcontext()), enc
    p = holder["p"] = launch.prepare(hopper_launcher(), 8, 512, 512, 0.125, cuda_calls=calls)

    def worker(t):
        base = (t + 1) << 20
        for i in range(300):
            s = (i % 3) * 0x100                              # the pointers change now and then
            p(base + 0x1000 + s, base + 0x2000, base + 0x3000 + s, base + 0x4000, 0)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad and enc.calls >= 3


# --------------------------------------------------------------------------------------- the library call
@pytest.fixture
def gpu(monkeypatch):
    """The GPU faked; cuTensorMapEncodeTiled a counting fake; validations and launches counted."""
    enc = FakeEncoder()
    monkeypatch.setattr(tma, "encode_tiled_fn", lambda: enc)
    monkeypatch.setattr(library_bench, "_fake_encode_tiled", enc)      # fake_gpu's cuda_calls hands this one out
    counts = dict(validate=0)
    real_validate = api.validate

    def counted_validate(*a, **kw):
        counts["validate"] += 1
        return real_validate(*a, **kw)

    monkeypatch.setattr(api, "validate", counted_validate)
    with library_bench.fake_gpu() as state:
        state["count"] = True
        state["enc"] = enc
        state["counts"] = counts
        yield state


def _qkv(B=1, H=8, S=1024, S_kv=None, H_kv=None):
    q = torch.randn(B, H, S, 64).half()
    k = torch.randn(B, H_kv or H, S_kv or S, 64).half()
    return q, k, torch.randn_like(k)


def _only_call():
    (call,) = api._PLANS.values()
    return call


def test_library_call_runs_the_prepared_tma_launch(gpu):
    q, k, v = _qkv()
    out = flashcore.attention(q, k, v)
    call = _only_call()
    assert call.kernel == "hopper_02_tma" and call.prepared and isinstance(call.launch, PreparedTmaLaunch)
    assert [lay.box_dim[1] for lay in call.launch.layouts] == [64, 128, 128]      # GEOMETRY["hopper_02_tma"]
    assert call.launch.grid == (8 * 1024 // 64, 1, 1) and call.launch.block[0] == 128
    assert tuple(out.shape) == (1, 8, 1024, 64) and gpu["launches"] == 1 and gpu["enc"].calls == 3
    for _ in range(20):
        flashcore.attention(q, k, v)
    assert gpu["launches"] == 21 and gpu["enc"].calls == 3 and gpu["counts"]["validate"] == 1
    q2 = q.clone()
    flashcore.attention(q2, k, v)                            # same layout: no validation, one new map
    assert gpu["counts"]["validate"] == 1 and gpu["enc"].calls == 4
    assert map_words(call.launch, 0)[0] == q2.data_ptr()
    assert flashcore.kernel_for(q.shape).kernel == "hopper_02_tma"


def test_decode_calls_stay_on_flashcore(gpu):
    q, k, v = _qkv(B=4, H=16, S=1, S_kv=8192)
    flashcore.attention(q, k, v)
    call = _only_call()
    assert call.kernel == "flashcore" and not isinstance(call.launch, PreparedTmaLaunch) and gpu["enc"].calls == 0


def test_forced_hopper_kernel(gpu):
    q, k, v = _qkv(S=100, S_kv=300)                         # small: the rule would pick hopper_02_tma
    flashcore.attention(q, k, v, kernel="flashcore_hopper")
    call = _only_call()
    assert call.kernel == "flashcore_hopper" and isinstance(call.launch, PreparedTmaLaunch)
    assert call.launch.args()[4:] == (8, 100, 300, pytest.approx(0.125))
    with pytest.raises(flashcore.NoKernelError, match="kernel='flashcore_hopper'.*causal masking"):
        flashcore.attention(q, k, v, kernel="flashcore_hopper", is_causal=True)    # flashcore declares it, not hopper
    with pytest.raises(flashcore.NoKernelError, match="kernel='hopper_02_tma'.*dtype bfloat16"):
        flashcore.attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), kernel="hopper_02_tma")


def test_forced_hopper_kernel_refused_off_sm90(monkeypatch):
    monkeypatch.setattr(tma, "encode_tiled_fn", lambda: FakeEncoder())
    with library_bench.fake_gpu(sm=100):
        q, k, v = _qkv()
        with pytest.raises(flashcore.NoKernelError, match="sm_90a"):
            flashcore.attention(q, k, v, kernel="flashcore_hopper")
        flashcore.attention(q, k, v)
        assert _only_call().kernel == "flashcore"


def test_gqa_negative_scale_and_copies_go_through_fresh_maps(gpu):
    q, k, v = _qkv(H_kv=2)
    flashcore.attention(q, k, v, enable_gqa=True, scale=-0.1)
    call = _only_call()
    assert call.kernel == "hopper_02_tma" and call.route.expand == 4 and call.route.negate_q
    assert call.launch.args()[7] == pytest.approx(0.1)
    assert gpu["enc"].calls == 3
    strided = torch.randn(1, 8, 64, 1024).half().transpose(-1, -2)      # [1, 8, 1024, 64], not contiguous
    flashcore.attention(strided, q, q)                                  # copied: a fresh, aligned q
    assert gpu["counts"]["validate"] == 2


def test_bad_inputs_are_clear_errors_before_any_launch(gpu):
    q, k, v = _qkv()
    strided = torch.randn(1, 8, 64, 1024).half().transpose(-1, -2)
    with pytest.raises(ValueError, match="q must be contiguous and 16-byte aligned.*not contiguous"):
        flashcore.attention(strided, k, v, copy=False)
    flat = torch.randn(8 * 1024 * 64 + 4).half()
    off = flat[4:].view(1, 8, 1024, 64)                                 # 8 bytes past an aligned base
    assert off.data_ptr() % 16 == 8
    with pytest.raises(ValueError, match="k must be contiguous and 16-byte aligned.*not 16-byte aligned"):
        flashcore.attention(q, off, v, copy=False)
    assert gpu["launches"] == 0 and gpu["enc"].calls == 0
    flashcore.attention(q, off, v)                                     # copy=True: copied, then launched
    assert gpu["launches"] == 1


def test_prepare_checks_the_map_layouts_once():
    lay = tma.check_addressable(0, 8, 512, 64)
    assert lay.global_dim == (64, 512, 8) and lay.box_dim == (64, 64, 1)
    with pytest.raises(tma.TmaError, match="box rows must be in 1..256"):
        tma.check_addressable(0, 8, 512, 300)


def test_map_encoder_writes_at_its_address():
    buf = (ctypes.c_char * 192)()
    addr = (ctypes.addressof(buf) + 63) // 64 * 64
    enc = FakeEncoder()
    tma.encode_into(addr, 0x5000, tma.map_layout(4, 100, 128), encode_tiled=enc)
    assert list((ctypes.c_uint64 * 3).from_address(addr)) == [0x5000, 100, 128]
    with pytest.raises(tma.TmaError, match="64-byte aligned"):
        tma.MapEncoder(addr + 8, tma.map_layout(4, 100, 128), encode_tiled=enc)


# ---------------------------------------------------------------------------- the fuzz of the Hopper kernels
@pytest.mark.parametrize("kid", ["flashcore_hopper", "hopper_02_tma"])
def test_the_hopper_fuzz_draws_the_library_features_that_reach_the_kernel(kid):
    """A Hopper spec declares only the base features (fp16, D = 64, not causal); the call forced to it still meets
    grouped heads (k, v repeated), every scale class (q negated / scale clamped), S_q ≠ S_kv, S_q = 1 and tails —
    and never what it does not declare."""
    from flashcore import fuzz

    cases = fuzz.cases_for(kid, 200)
    assert len(cases) >= 200 and len({c["seed"] for c in cases}) == len(cases)
    assert not any(c["dtype"] != "float16" or c["D"] != 64 or c["causal"] for c in cases)
    count = lambda pred: sum(1 for c in cases if pred(c))                             # noqa: E731
    assert count(lambda c: c["S"] % 64 or c["S_kv"] % 64) >= 20                        # tails
    assert count(lambda c: c["S"] != c["S_kv"]) >= 20 and count(lambda c: c["S"] == 1) >= 3
    assert count(lambda c: 1 < c["H_kv"] < c["H"]) >= 5 and count(lambda c: c["H_kv"] == 1 < c["H"]) >= 5
    for cls in ("negative", "zero", "tiny", "large"):
        assert count(lambda c: fuzz.scale_class(c["scale"]) == cls) >= 5, cls
    assert fuzz.cases_for(kid, 200) == cases                                           # seeded


@pytest.mark.parametrize("kid", ["flashcore_hopper", "hopper_02_tma"])
def test_the_forced_hopper_call_takes_every_fuzz_case(gpu, kid):
    """Every fuzz case through the library call forced to the kernel (the fuzz's prepared path), GPU faked: it
    routes to that kernel with the base build, repeats k and v for grouped heads, negates q for a negative scale,
    hands the kernel a positive normal scale, and launches."""
    from flashcore import fuzz

    cases = [c for c in fuzz.cases_for(kid, 200) if c["B"] * c["H"] * max(c["S"], c["S_kv"]) <= 1 << 16]
    assert len(cases) >= 100
    for c in cases:
        q, k, v = fuzz.case_inputs(c, "cpu")
        f = fuzz.case_features(c)
        out = flashcore.attention(q, k, v, scale=f["scale"], enable_gqa=f["enable_gqa"], kernel=kid)
        assert tuple(out.shape) == tuple(q.shape)
        call = api._PLANS[api._key(q, k, v, False, f["scale"], f["enable_gqa"], True, kid)]
        r = call.route
        assert r.spec.id == kid and r.defines == () and r.kv_group == 1
        assert r.expand == c["H"] // c["H_kv"]
        assert r.negate_q is (f["scale"] is not None and f["scale"] < 0)
        assert r.kernel_scale >= api.FLT_MIN
    assert gpu["launches"] == len(cases)


def test_the_forced_hopper_call_refuses_what_it_does_not_declare(gpu):
    q, k, v = _qkv(S=128)
    with pytest.raises(dispatch.NoKernelError, match=r"kernel='flashcore_hopper' cannot run .*causal masking"):
        flashcore.attention(q, k, v, is_causal=True, kernel="flashcore_hopper")
    with pytest.raises(dispatch.NoKernelError, match=r"kernel='hopper_02_tma' cannot run .*dtype bfloat16"):
        flashcore.attention(*(x.bfloat16() for x in (q, k, v)), kernel="hopper_02_tma")
    assert gpu["launches"] == 0


def test_the_sweep_cli_takes_the_kernels_to_fuzz_and_to_sanitize(capsys):
    from flashcore import cli

    a = cli.parse_args(["sweep", "--kernels", "flashcore_hopper,hopper_02_tma", "--sanitize", "flashcore_hopper"])
    assert a.fuzz_ids == ["flashcore_hopper", "hopper_02_tma"] and a.sanitize_ids == ["flashcore_hopper"]
    a = cli.parse_args(["sweep", "--kernels", "flashcore_hopper", "--sanitize", ""])
    assert a.fuzz_ids == ["flashcore_hopper"] and a.sanitize_ids == []
    a = cli.parse_args(["sweep"])
    assert a.fuzz_ids is None and a.sanitize_ids is None                  # the defaults: run_sweep's own lists
    for argv, msg in ((["--kernels", "nope"], "--kernels: unknown kernel nope"), (["--kernels", ""], "no kernel"),
                      (["--sanitize", "a_b"], "--sanitize: unknown kernel a_b")):
        with pytest.raises(SystemExit):
            cli.parse_args(["sweep", *argv])
        assert msg in capsys.readouterr().err


def test_the_sweep_cli_hands_the_ids_to_run_sweep(monkeypatch):
    from flashcore import cli, sweep

    seen = {}

    def fake_run_sweep(**kw):
        seen.update(kw)
        raise RuntimeError("stop here")

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    with pytest.raises(RuntimeError, match="stop here"):
        cli._sweep(cli.parse_args(["sweep", "--kernels", "hopper_02_tma", "--sanitize", ""]))
    assert seen["fuzz_ids"] == ["hopper_02_tma"] and seen["sanitize_ids"] == []


def test_a_sweep_of_the_hopper_kernels_without_the_sanitizer(tmp_path, monkeypatch):
    """run_sweep with fuzz_ids of the Hopper kernels and no sanitizer: the fuzz is over cases_for(<id>), the smoke
    test is forced to the first of them, and the verdict says the sanitizer was not run (neither clean nor not)."""
    from flashcore import fuzz, records, sweep
    from flashcore.tools import sanitize

    fuzzed, smoked = [], []

    def fake_fuzz(kid, n=200, seed=0, progress=True, runs=2, unverified=False):
        fuzzed.append(kid)
        return [dict(c, passed=True, deterministic=True, max_abs_err=1e-4, tol=2e-4, sdpa_err=1e-4, error=None)
                for c in fuzz.cases_for(kid, n, seed=seed)]

    monkeypatch.setattr(fuzz, "fuzz_kernel", fake_fuzz)
    monkeypatch.setattr(fuzz, "special_values", lambda fn, **kw: {
        "nan_q": dict(n_rows=1, sdpa_n_rows=1, ref64_n_rows=1, matches=True, matches_ref64=True)})
    monkeypatch.setattr(sanitize, "run_jobs", lambda *a, **kw: pytest.fail("the sanitizer ran"))
    monkeypatch.setattr(sweep, "_library_fn", lambda kid: None)
    monkeypatch.setattr(fuzz, "api_smoke", lambda kernel=None: smoked.append(kernel) or [dict(name="x", ok=True,
                                                                                               detail="")])
    prov = dict(gpu="Test GPU", gpu_slug="test-gpu", sm="sm_90", driver="0", cuda="13.0", torch="x", cupy="x",
                commit="1" * 40, dirty=False, date="2026-01-01T00:00:00+00:00", command="pytest", notebook="sweep")
    path, verdict = sweep.run_sweep(cases=30, runs_dir=tmp_path, fuzz_ids=["flashcore_hopper", "hopper_02_tma"],
                                    sanitize_ids=[], provenance=prov, progress=False)
    assert fuzzed == ["flashcore_hopper", "hopper_02_tma"] and smoked == ["flashcore_hopper"]
    assert verdict["passed"] and verdict["sanitizer_run"] is False and verdict["sanitizer_clean"] is None
    rec = records.load(path)
    rows = rec.rows(stage="fuzz")
    assert len(rows) == 60 and {r["kernel"] for r in rows} == {"flashcore_hopper", "hopper_02_tma"}
    assert not any(r["causal"] or r["dtype"] != "float16" or r["D"] != 64 for r in rows)
    assert rec["params"]["fuzz_kernels"] == ["flashcore_hopper", "hopper_02_tma"]
    assert rec["params"]["sanitize_kernels"] == []
