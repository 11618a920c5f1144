PYTHON ?= python
PROFILE ?= paper

.PHONY: test lint quickstart clean-outputs toy-figure bench

test:            ## the test suite (CPU, offline)
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check src tests scripts

quickstart:      ## the full pipeline on digits, on CPU, in a few minutes
	$(PYTHON) -m gif_bench experiment=quickstart

clean-outputs:   ## remove results, caches, W&B runs and Hydra run folders
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +

toy-figure:      ## the paper's Figure 2 toy -> docs/figures/toy_regression.png
	$(PYTHON) -m gif_bench experiment=toy_regression paths.root=docs

bench:           ## performance suite -> BENCHMARKS.md
	$(PYTHON) scripts/bench.py
