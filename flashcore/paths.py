"""Where things live: the repository's folders, or — for an installed wheel — the kernel sources inside the package.

In a checkout, kernels/ sits beside flashcore/. An installed wheel (pyproject.toml maps kernels/ into the package)
carries the same files as ``flashcore/_kernel_sources``; the book's folders (runs/, figures/, notebooks/, book/)
exist only in a checkout.
"""
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent
_INSTALLED_KERNELS = PACKAGE / "_kernel_sources"
KERNELS_DIR = _INSTALLED_KERNELS if _INSTALLED_KERNELS.is_dir() else ROOT / "kernels"
RUNS_DIR = ROOT / "runs"
FIGURES_DIR = ROOT / "figures"
NOTEBOOKS_DIR = ROOT / "notebooks"
BOOK_DIR = ROOT / "book"
