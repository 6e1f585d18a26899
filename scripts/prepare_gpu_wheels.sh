#!/usr/bin/env bash
# Prepare, on a machine WITH package access, the Python wheels a GPU host without internet lacks to run the
# notebooks live (papermill, ipykernel and their closure), for that host's Python (default 3.12, x86-64).
# They land in .whl/ (git-ignored); scripts/gpu_live.sh installs them from there with --no-index.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER="${PYVER:-3.12}"
PY="${PYTHON:-python3}"
mkdir -p .whl
plats=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 \
         manylinux_2_24_x86_64 manylinux_2_26_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 any; do
  plats+=(--platform "$p")
done
# The GPU image already has torch, cupy, numpy, pandas, matplotlib, pyyaml, tqdm, requests, jinja2, pygments,
# psutil, packaging, attrs...: only what is missing is fetched (with its own dependencies, resolved for $PYVER).
"$PY" -m pip download -q --only-binary=:all: --python-version "$PYVER" --implementation cp "${plats[@]}" \
  -d .whl papermill ipykernel nbformat nbclient jupyter_client
# The device copy of the repository must stay small (the tracked runs/ already weighs tens of MB): unless
# SLIM=0, drop the wheels of packages the CUDA + PyTorch image already ships (see the device's package list).
if [ "${SLIM:-1}" = 1 ]; then
  for name in attrs certifi charset_normalizer click idna packaging psutil pygments python_dateutil pyyaml \
              requests tqdm typing_extensions urllib3; do
    rm -f .whl/"$name"-[0-9]*.whl
  done
  # ... and the two biggest wheels, which a notebook run never uses: ipykernel's debugger (debugpy) and IPython's
  # tab completion (jedi, with parso). Both are optional imports there: without them the kernel starts and runs.
  for name in debugpy jedi parso; do
    rm -f .whl/"$name"-[0-9]*.whl
  done
fi
du -sh .whl
ls .whl | wc -l
