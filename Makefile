# FlashCore — the two commands (see README.md):
#   make book   environment + every notebook executed (auto: live on a GPU, replay elsewhere) + _build/html
#   make test   environment + replay build of the book + the test suite (browser tests included)
# One GPU per book: `make book GPU=h100-80gb-hbm3` shows that GPU's records (a folder of runs/); default: the
# newest GPU with a record of every chapter. MODE=replay forces a replay build on a GPU host.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
MODE   ?= auto
GPU    ?=
GPU_ARG := $(if $(GPU),--gpu $(GPU))

.PHONY: book test setup browser live clean help
help:
	@echo "make book [GPU=<runs/ folder>] | make test | make live (GPU host) | make clean"

$(VENV)/.installed: requirements.txt
	@echo "== creating $(VENV) with $(PYTHON) and installing requirements.txt"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --progress-bar on -r requirements.txt
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(VENV)/.installed

# The browser tests drive the system chromium (Debian package), never a browser downloaded by a test tool.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  echo "== installing chromium (apt)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium >/dev/null; }; }

book: setup
	$(PY) scripts/build_book.py --mode $(MODE) $(GPU_ARG)

test: setup browser
	$(PY) scripts/build_book.py --mode replay $(GPU_ARG)
	$(PY) -m pytest -q tests

# GPU host with no internet: wheels prepared beforehand in .whl/ (scripts/prepare_gpu_wheels.sh).
live:
	bash scripts/gpu_live.sh

clean:
	rm -rf _build book/chapters book/generated
