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

$(STAMP): $(BIN)/python pyproject.toml setup.py scripts/install_learn2learn.sh
	$(BIN)/python -c "import torch, torchvision" >/dev/null 2>&1 || $(BIN)/python -m pip install -q $(TORCH_SPEC)
	bash scripts/install_learn2learn.sh $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The framework's main job, short: learned augmentation side by side on embedded data, one
# seed each (about 5 minutes of training on a slow 2-core VM). RL-Mixup's agent needs more
# epochs than a demo has (its command is printed at the end). Full settings: docs/results.md.
demo: install
	$(BIN)/metaaug compare fonts --policies none,randaugment,metaaugment --seeds 0 --epochs 40 \
		--out runs/demo/fonts --overwrite
	$(BIN)/metaaug compare glyphs --policies nme,intershuffle --seeds 0 --epochs 2 --val-tasks 50 \
		--test-tasks 200 --out runs/demo/glyphs --overwrite
	@echo "figures: runs/demo/fonts/comparison.png, runs/demo/glyphs/comparison.png; what MetaAugment learned:" \
		"runs/demo/fonts/metaaugment/seed0/sampler_heatmap.png and weighted_samples.png"
	@echo "RL-Mixup (its PPO agent learns over 60 epochs, about 6 minutes more):" \
		"$(BIN)/metaaug compare fonts --policies none,rl-mixup --seeds 0 --epochs 60 --out runs/demo/rl-mixup"

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --durations=15

clean:
	rm -rf $(VENV) runs build *.egg-info
