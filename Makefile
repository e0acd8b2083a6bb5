# Two entry points for a new user: `make demo` and `make test`. Both create .venv when it is
# missing and are idempotent (the install step re-runs only when pyproject.toml changes).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.metaaug-installed
# The torch pair installed into a new .venv when none is there yet. Override it for another
# CUDA build, e.g. `make install TORCH_SPEC="torch torchvision --index-url ..."`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test compare-demo clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml scripts/install_learn2learn.sh
	$(BIN)/python -c "import torch, torchvision" >/dev/null 2>&1 || $(BIN)/python -m pip install -q $(TORCH_SPEC)
	bash scripts/install_learn2learn.sh $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/metaaug run fonts --policy metaaugment --out runs/demo --overwrite

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs build *.egg-info
