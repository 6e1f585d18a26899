"""Every registered kernel compiles with nvcc for sm_90 on this CPU machine, with no spills and no stack."""
import pytest

from flashcore import kernels
from flashcore.compile import nvcc_compile

SPECS = kernels.all_specs()
SOURCES = {}
for _s in SPECS:                      # one compile per (source, defines)
    SOURCES.setdefault((_s.source, _s.defines), _s)


@pytest.mark.parametrize("spec", list(SOURCES.values()), ids=lambda s: s.id)
def test_kernel_compiles_without_spills(spec):
    rep = nvcc_compile(spec, arch="sm_90")
    assert rep.spill_stores == 0 and rep.spill_loads == 0, f"{spec.id} spills: {rep.row()}"
    assert rep.registers <= 255


def test_every_spec_has_a_source_and_header():
    for spec in SPECS:
        text = spec.path.read_text()
        assert spec.entry in text, f"{spec.id}: entry {spec.entry} not in {spec.source}"
        assert text.lstrip().startswith(("//", "/*")), f"{spec.source} must open with its header comment"
        if spec.parent:
            assert spec.parent in {s.id for s in SPECS} or spec.parent.startswith("v"), spec.parent
