"""`pip install .` gives an importable flashcore with its kernel sources: build the wheel, install it into a fresh
venv (no checkout on its path), import it there and list the kernels; the public names match the docs."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out)], check=True, cwd=out, capture_output=True, text=True)
    (whl,) = out.glob("flashcore-*.whl")
    return whl


def test_wheel_carries_every_kernel_source(wheel):
    from flashcore import kernels

    names = set(zipfile.ZipFile(wheel).namelist())
    for spec in kernels.all_specs():
        rel = spec.path.resolve().relative_to((ROOT / "kernels").resolve())
        assert f"flashcore/_kernel_sources/{rel.as_posix()}" in names, f"{spec.id}: {rel} missing from the wheel"
    assert "flashcore/_kernel_sources/triton_attention.py" in names
    assert not any(n.startswith(("runs/", "notebooks/", "figures/")) for n in names)


def test_fresh_venv_imports_and_lists_the_kernels(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    probe = ("import flashcore, flashcore.paths as p; from flashcore import kernels\n"
             "specs = kernels.all_specs()\n"
             "assert 'site-packages' in str(p.KERNELS_DIR), p.KERNELS_DIR\n"
             "missing = [s.id for s in specs if not s.path.is_file()]\n"
             "assert not missing, missing\n"
             "print(len(specs), flashcore.__version__, sorted(flashcore.__all__))\n")
    out = subprocess.run([str(py), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    n, version, _ = out.split(" ", 2)
    assert int(n) >= 20 and version == __import__("flashcore").__version__
    listed = subprocess.run([str(py), "-m", "flashcore", "list"], check=True, capture_output=True, text=True,
                            cwd=tmp_path).stdout
    assert "Registered kernels" in listed and "flashcore" in listed
    cli = subprocess.run([str(venv / "bin" / "flashcore"), "list"], capture_output=True, text=True, cwd=tmp_path)
    assert cli.returncode == 0 and "Dispatch rule" in cli.stdout


def test_public_names_match_the_docs():
    import flashcore

    for name in flashcore.__all__:
        assert hasattr(flashcore, name), name
    assert callable(flashcore.kernel_for) and callable(flashcore.attention)
    from flashcore import api

    for name in api.__all__:
        assert hasattr(api, name), name
    doc = (ROOT / "book" / "library.md").read_text()
    assert "flashcore.kernel_for" in doc or "kernel_for" in doc
