#!/usr/bin/env bash
# One command for a GPU host with no internet access: execute every notebook LIVE (papermill, mode=live) and
# leave the new records in runs/<gpu>/ and the charts in figures/, ready to commit.
#
#   bash scripts/gpu_live.sh                      # all notebooks
#   bash scripts/gpu_live.sh 01_v12_baseline      # some of them (stems, space-separated)
#
# The host needs CUDA, ncu, compute-sanitizer and a python3 with torch + cupy. What it lacks to run notebooks
# (papermill, ipykernel and their closure) comes from .whl/, filled beforehand on a machine with package access
# by scripts/prepare_gpu_wheels.sh, and is installed into a scratch folder with --no-index: nothing is fetched.
# Records carry the commit: commit your code first (or the record says dirty=true, honestly).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
SITE="${FLASHCORE_SITE:-/tmp/flashcore-site}"
RUNNER=papermill
if ! "$PY" -c "import papermill, ipykernel" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    if ! "$PY" -c "import papermill, ipykernel.kernelapp" 2>/dev/null; then
      echo "the wheels in .whl/ did not give a working papermill + ipykernel: recording with 'python -m flashcore live'" >&2
      RUNNER=cli
    fi
  else
    # No Jupyter here and no wheels to install it from: run each chapter's measurements without Jupyter
    # (python -m flashcore live <notebook>). The records are the same; their `command` says how they were made.
    echo "papermill/ipykernel missing and .whl/ empty: recording with 'python -m flashcore live'" >&2
    RUNNER=cli
  fi
fi
# Provenance: the commit of this tree (a copy without .git passes it in FLASHCORE_COMMIT / FLASHCORE_DIRTY).
if git rev-parse HEAD >/dev/null 2>&1; then
  export FLASHCORE_COMMIT="${FLASHCORE_COMMIT:-$(git rev-parse HEAD)}"
  if [ -z "${FLASHCORE_DIRTY:-}" ]; then
    if [ -n "$(git status --porcelain --untracked-files=no)" ]; then export FLASHCORE_DIRTY=1; else export FLASHCORE_DIRTY=0; fi
  fi
fi
export PYTHONUNBUFFERED=1
if [ "$RUNNER" = cli ]; then
  # Only the chapters measure (flashcore.chapters.CHAPTERS); pages such as 06_gpus read records and need no GPU.
  if [ "$#" -gt 0 ]; then nbs=("$@"); else nbs=($("$PY" -c "from flashcore.chapters import CHAPTERS; print(' '.join(CHAPTERS))")); fi
  rc=0
  for nb in "${nbs[@]}"; do
    echo "== $nb (python -m flashcore live)"
    FLASHCORE_COMMAND="python -m flashcore live $nb (scripts/gpu_live.sh)" "$PY" -m flashcore live "$nb" || rc=1
  done
  exit $rc
fi
args=()
if [ "$#" -gt 0 ]; then args=(--only "$(IFS=,; echo "$*")"); fi
exec "$PY" scripts/build_book.py --mode live --no-build "${args[@]}"
