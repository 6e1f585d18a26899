"""CPU checks of the mma.sync ladder steps (v8_05+) and the library kernel `flashcore`: they compile with nvcc for
sm_90 without spills or stack, their SASS shows the ideas (HMMA from mma.sync, LDSM from ldmatrix, LDGSTS from
cp.async, no local memory), and their launch geometry covers any shape."""
import shutil

import pytest

from flashcore import kernels
from flashcore.kernels import LaunchShape, cdiv
from flashcore.specs import v8_mma

IDS = [s.id for s in v8_mma.SPECS]


def _have_nvcc():
    try:
        from flashcore.compile import find_nvcc
        find_nvcc()
        return True
    except FileNotFoundError:
        return False


needs_nvcc = pytest.mark.skipif(not _have_nvcc(), reason="nvcc not installed")


def test_flashcore_is_registered_and_cross():
    spec = kernels.get("flashcore")
    assert spec.cross and spec.max_seq >= 16384
    assert spec.chapter == "03_v8_optimization"
    assert spec.source in {s.source for s in v8_mma.SPECS if s.id != "flashcore"}


def test_ladder_steps_have_predictions_and_parents():
    for spec in v8_mma.SPECS:
        assert spec.predicted_us and spec.predicted_us > 0, spec.id
        assert spec.parent, spec.id
        text = spec.path.read_text()
        assert "Predicted" in text and "ncu metric" in text, spec.source


@pytest.mark.parametrize("kid", IDS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (8, 512, 512), (6, 77, 77), (64, 4096, 4096), (8, 512, 1000),
                                   (1, 16384, 16384), (3, 5, 70000)])
def test_grid_covers_every_query_row(kid, shape):
    spec = kernels.get(kid)
    s = LaunchShape(*shape)
    grid = spec.grid(s)
    block_m = v8_mma.BLOCK_M2 if spec.source.startswith(("v8_09", "v8_10")) else v8_mma.BLOCK_M
    tiles = s.bh * cdiv(s.seq_q, block_m)
    assert grid[1] == grid[2] == 1
    assert grid[0] >= tiles
    if "cluster" in spec.tags:
        cluster = int(dict(spec.defines).get("CLUSTER", v8_mma.CLUSTER))
        assert grid[0] % cluster == 0
        # the kernel's own split test (gridDim.x == CLUSTER·tiles) must agree with the grid function's decision
        assert (grid[0] == cluster * tiles) == v8_mma.split_kv(s, cluster, v8_mma.SPLIT_FILL, block_m)
    assert spec.smem_bytes(s) <= 227 * 1024


@needs_nvcc
@pytest.mark.parametrize("kid", IDS)
def test_compiles_without_spills(kid):
    from flashcore.compile import nvcc_compile
    rep = nvcc_compile(kernels.get(kid))
    assert rep.spill_stores == 0 and rep.spill_loads == 0 and rep.stack_bytes == 0, rep.row()
    assert rep.registers <= 255


@needs_nvcc
@pytest.mark.parametrize("kid", IDS)
def test_sass_evidence(kid):
    from flashcore import sass
    try:
        ev = sass.evidence(kernels.get(kid))
    except (FileNotFoundError, RuntimeError) as exc:  # no cuobjdump on this machine
        pytest.skip(str(exc))
    assert ev["HMMA"] >= 64, ev        # mma.sync m16n8k16 → HMMA.16816
    assert ev["LDSM"] >= 16, ev        # ldmatrix
    assert ev["LDGSTS"] > 0, ev        # cp.async
    assert ev["LDL"] == 0 and ev["STL"] == 0, ev   # no local memory
    assert ev["HGMMA"] == 0, ev
