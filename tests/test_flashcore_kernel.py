"""CPU checks of the mma.sync ladder steps (v8_05+) and the library kernel `flashcore`: they compile with nvcc for
sm_90 without spills or stack, their SASS shows the ideas (HMMA from mma.sync, LDSM from ldmatrix, LDGSTS from
cp.async, no local memory), their launch geometry covers any shape, and the split-KV decision, the grid and the
kernel's own constants agree (the kernel traps on a launch where they would not)."""
import re

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
    assert spec.cross and not hasattr(spec, "max_seq")      # every length: no limit field to check
    assert spec.chapter == "03_v8_optimization"
    assert (spec.source, spec.entry, spec.parent) == ("flashcore.cu", "flashcore", "v8_07_dsmem_push")
    assert not spec.defines and spec.split is v8_mma.FLASHCORE_SPLIT


def test_ladder_steps_have_predictions_and_parents():
    for spec in v8_mma.SPECS:
        assert spec.predicted_us and spec.predicted_us > 0, spec.id
        assert spec.parent, spec.id
        text = spec.path.read_text()
        assert "Predicted" in text and "ncu metric" in text, spec.source


def _kernel_constants(spec):
    """(CLUSTER, BLOCK_M) as the kernel file defines them."""
    text = spec.path.read_text()
    cluster = re.search(r"#define CLUSTER (\d+)", text)
    mt = int(re.search(r"#define MT (\d+)", text).group(1))
    return (int(cluster.group(1)) if cluster else None), 64 * mt


@pytest.mark.parametrize("kid", IDS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (8, 512, 512), (6, 77, 77), (64, 4096, 4096), (8, 512, 1000),
                                   (1, 16384, 16384), (3, 5, 70000)])
def test_grid_covers_every_query_row(kid, shape):
    spec = kernels.get(kid)
    s = LaunchShape(*shape)
    grid = spec.grid(s)
    cluster, block_m = _kernel_constants(spec)
    tiles = s.bh * cdiv(s.seq_q, block_m)
    assert grid[1] == grid[2] == 1
    assert grid[0] >= tiles
    if "cluster" in spec.tags:
        # the launcher's split decision, its grid and the kernel's constants agree: the kernel traps unless
        # gridDim.x == (split ? CLUSTER·tiles : tiles rounded up to whole clusters)
        assert (spec.split.cluster, spec.split.block_m) == (cluster, block_m), kid
        split = spec.split(s)
        assert split == v8_mma.split_kv(s, cluster, v8_mma.SPLIT_FILL, block_m)
        assert grid[0] == (cluster * tiles if split else cdiv(tiles, cluster) * cluster)
    else:
        assert spec.split is None


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
    from flashcore.tools import sass
    try:
        ev = sass.evidence(kernels.get(kid))
    except (FileNotFoundError, RuntimeError) as exc:  # no cuobjdump on this machine
        pytest.skip(str(exc))
    assert ev["HMMA"] >= 64, ev        # mma.sync m16n8k16 → HMMA.16816
    assert ev["LDSM"] >= 16, ev        # ldmatrix
    assert ev["LDGSTS"] > 0, ev        # cp.async
    assert ev["LDL"] == 0 and ev["STL"] == 0, ev   # no local memory
    assert ev["HGMMA"] == 0, ev
