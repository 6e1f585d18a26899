"""The Hopper family's CPU checks: tensor-map rules (flashcore/tma.py), the kernels' builds (nvcc, sm_90a: no spills,
no wgmma-serialisation or setmaxnreg warnings, HGMMA in the SASS), and (formerly) scripts/explore/hopper_dev.py's self-test (the
warpgroup's fragment bookkeeping emulated against fp64; the mbarrier protocol under random interleavings)."""
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


tma = _load("fc_tma_test", REPO / "flashcore" / "tma.py")

HOPPER_KERNELS = {  # file stem → entry points
    "hopper_01_wgmma": ["hopper_01_wgmma"],
    "hopper_02_tma": ["hopper_02_tma"],
    "hopper_03_warpspec": ["hopper_03_warpspec"],
    "hopper_04_overlap": ["hopper_04_overlap"],
    "flashcore_hopper": ["flashcore_hopper"],
    "probe_wgmma_tma": ["probe_scores", "probe_pv"],
}
HAS_MBARRIERS = {"hopper_02_tma", "hopper_03_warpspec", "hopper_04_overlap", "flashcore_hopper"}


# ------------------------------------------------------------------------------------------------ tensor maps
def test_map_layout_is_the_3d_view_of_bh_s_64():
    lay = tma.map_layout(bh=64, seq=4096, box_rows=128)
    assert lay.global_dim == (64, 4096, 64)
    assert lay.global_strides == (128, 4096 * 128)
    assert lay.box_dim == (64, 128, 1)
    assert lay.element_strides == (1, 1, 1)
    assert lay.box_bytes == 16384          # what a K or V stage's barrier expects, tails included


def test_q_box_bytes_match_the_kernels_expect_tx():
    assert tma.map_layout(8, 77, 64).box_bytes == 8192


@pytest.mark.parametrize("ptr,bh,seq,rows,head_dim,needle", [
    (0x1008, 1, 10, 128, 64, "16-byte aligned"),
    (0x1000, 1, 10, 0, 64, "box rows"),
    (0x1000, 1, 10, 257, 64, "box rows"),
    (0x1000, 1, 10, 128, 128, "head dim 64"),
    (0x1000, 0, 10, 128, 64, "empty tensor"),
])
def test_check_addressable_names_the_broken_rule(ptr, bh, seq, rows, head_dim, needle):
    with pytest.raises(tma.TmaError, match=needle):
        tma.check_addressable(ptr, bh, seq, rows, head_dim)


def test_check_addressable_accepts_odd_lengths():
    for seq in (1, 77, 1000, 4000, 16384):
        lay = tma.check_addressable(0x7f0000000000, 512, seq, 128)
        assert all(s % 16 == 0 for s in lay.global_strides)


def test_map_blob_is_128_bytes_of_16_words():
    import numpy as np

    dt = tma.TMA_MAP_DTYPE
    assert dt.itemsize == 128 and dt["w"].shape == (16,)
    blob = np.zeros((), dtype=dt)
    blob["w"] = np.arange(16, dtype=np.uint64)
    assert tma.map_words(blob[()]) == list(range(16))


def test_grid_rule():
    assert tma.hopper_grid(192, 64, 4096, 132, persistent=False) == 64 * 22
    assert tma.hopper_grid(192, 64, 4096, 132, persistent=True) == 132
    assert tma.hopper_grid(192, 8, 512, 132, persistent=True) == 24     # fewer tiles than SMs: one tile per CTA
    assert tma.hopper_grid(64, 1, 1, 132, persistent=False) == 1


def test_extra_args_refuse_mismatched_heads():
    torch = pytest.importorskip("torch")
    q = torch.zeros(2, 10, 64, dtype=torch.float16)
    k = torch.zeros(3, 10, 64, dtype=torch.float16)
    with pytest.raises(tma.TmaError, match="batch·heads"):
        tma.hopper_extra_args(q, k, k)


def test_extra_args_refuse_non_contiguous():
    torch = pytest.importorskip("torch")
    q = torch.zeros(2, 64, 10, dtype=torch.float16).transpose(1, 2)
    with pytest.raises(tma.TmaError, match="contiguous"):
        tma.hopper_extra_args(q, q, q)


# ------------------------------------------------------------------------------------------------ kernel builds
def _nvcc():
    return shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)


def _build(stem, defines, tmp_path):
    cubin = tmp_path / f"{stem}{''.join(defines)}.cubin"
    cmd = [_nvcc(), "-cubin", "-gencode=arch=compute_90a,code=sm_90a", "-O3", "-std=c++17", "-Xptxas", "-v",
           f"-I{REPO / 'kernels'}", *[f"-D{d}" for d in defines], str(REPO / "kernels" / "hopper" / f"{stem}.cu"),
           "-o", str(cubin)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout + p.stderr, cubin


BUILDS = [(s, ()) for s in HOPPER_KERNELS] + [(s, ("WATCHDOG",)) for s in sorted(HAS_MBARRIERS)] + [
    ("flashcore_hopper", ("NUM_CONSUMERS=2",)), ("flashcore_hopper", ("EXP2_FMA_EVERY=4",)),
    ("flashcore_hopper", ("WATCHDOG", "FAULT_SKIP_RELEASE"))]   # the watchdog demo's fault build


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not installed")
@pytest.mark.parametrize("stem,defines", BUILDS, ids=[f"{s}{'-' + '-'.join(d) if d else ''}" for s, d in BUILDS])
def test_hopper_kernel_builds_clean(stem, defines, tmp_path):
    rc, log, cubin = _build(stem, defines, tmp_path)
    assert rc == 0, log
    for code in ("C7515", "C7519", "C7508"):       # wgmma serialised / warpgroup.arrive injected / setmaxnreg ignored
        assert code not in log, log
    assert "warning" not in log.lower(), log
    entries = re.findall(r"Compiling entry function '(\w+)'", log)
    assert sorted(entries) == sorted(HOPPER_KERNELS[stem])
    for m in re.finditer(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log):
        assert m.group(1) == "0" and m.group(2) == "0", log
    cuobjdump = shutil.which("cuobjdump") or next(REPO.glob(".venv/lib/python*/site-packages/nvidia/*/bin/cuobjdump"),
                                                   None)
    if cuobjdump:
        sass = subprocess.run([str(cuobjdump), "-sass", str(cubin)], capture_output=True, text=True).stdout
        assert "HGMMA" in sass
        assert "LDL" not in sass and "STL" not in sass   # no local memory


# ------------------------------------------------------------------------------------------------ self-test
def geometry_from_cubin(cubin, entry):
    """The kernel's ``<entry>_geometry[4]`` (threads, rows per CTA, Q box rows, K/V box rows) read from a cubin's
    symbol table, or None: :func:`flashcore.compile.smem_bytes_from_cubin`'s ELF reading, for a 16-byte symbol."""
    import struct

    data = Path(cubin).read_bytes()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, _ = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    want = f"{entry}_geometry".encode()
    for _, sh_type, _, _, offset, size, link, _, _, entsize in sections:
        if sh_type != 2:                                   # SHT_SYMTAB
            continue
        strtab = sections[link][4]
        for i in range(size // (entsize or 24)):
            st_name, _, _, st_shndx, st_value, st_size = struct.unpack_from("<IBBHQQ", data, offset + i * 24)
            name = data[strtab + st_name:data.index(b"\0", strtab + st_name)]
            if name == want and st_size == 16 and 0 < st_shndx < len(sections):
                return list(struct.unpack_from("<iiii", data, sections[st_shndx][4] + st_value))
    return None


GEOMETRY_BUILDS = [("hopper_01_wgmma", ()), ("hopper_02_tma", ()), ("hopper_03_warpspec", ()),
                   ("hopper_04_overlap", ()), ("flashcore_hopper", ()), ("flashcore_hopper@c2", ("NUM_CONSUMERS=2",))]


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not installed")
@pytest.mark.parametrize("kid,defines", GEOMETRY_BUILDS, ids=[k for k, _ in GEOMETRY_BUILDS])
def test_exported_geometry_and_smem_match_the_spec(kid, defines, tmp_path):
    """<entry>_geometry[4] is what flashcore/specs/hopper.py launches with; <entry>_smem_bytes[2] is there (no split:
    both equal); no __constant__ symbol is left (each would cost every launch ~0.15 µs)."""
    from flashcore.compile import smem_bytes_from_cubin
    from flashcore.specs import hopper

    stem = kid.split("@")[0]
    rc, log, cubin = _build(stem, defines, tmp_path)
    assert rc == 0, log
    want = (hopper.KNOB_GEOMETRY.get(kid) or hopper.GEOMETRY[stem]).as_list()
    assert geometry_from_cubin(cubin, stem) == want
    smem = smem_bytes_from_cubin(cubin, stem)
    assert smem is not None and smem[0] == smem[1] > 0, smem
    assert "__constant__" not in (REPO / "kernels" / "hopper" / f"{stem}.cu").read_text()


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not installed")
def test_probe_exports_its_smem_bytes(tmp_path):
    from flashcore.compile import smem_bytes_from_cubin

    rc, log, cubin = _build("probe_wgmma_tma", (), tmp_path)
    assert rc == 0, log
    assert smem_bytes_from_cubin(cubin, "probe_wgmma_tma") == (8192 + 16384 + 1024 + 64,) * 2


def test_fault_skip_release_needs_the_watchdog(tmp_path):
    """A fault build without WATCHDOG would hang the GPU: it must not compile."""
    if _nvcc() is None:
        pytest.skip("nvcc not installed")
    rc, log, _ = _build("flashcore_hopper", ("FAULT_SKIP_RELEASE",), tmp_path)
    assert rc != 0 and "FAULT_SKIP_RELEASE without WATCHDOG" in log
