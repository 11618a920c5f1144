PYTHON ?= python
PROFILE ?= paper
# PROFILE=fmnist (Fashion-MNIST's 60,000 images, 2.5 hours on 2 cores): class removal and the backdoor
EXPERIMENTS_fmnist = table1 table2
# its sweeps run two jobs at a time, one thread each (Hydra's joblib launcher), after training
# the models they need two at a time (callbacks.train_first): 2 cores do ~1.1-1.2x the work
# of one job on both (docs/results/README.md, "Fashion-MNIST")
SWEEP_ARGS_fmnist = launcher=joblib
SWEEP_ARGS ?= $(SWEEP_ARGS_$(PROFILE))
EXPERIMENTS ?= $(or $(EXPERIMENTS_$(PROFILE)),table1 fig3 table2 label_change random_removal)
REPORT_DIR ?= docs/results/$(PROFILE)
# make tune: trials per method (the same for every method), and studies at a time (one per core)
TRIALS ?= 8
JOBS ?= 2

.PHONY: test lint quickstart clean-outputs toy-figure bench reproduce-tables tune

test:            ## the test suite (CPU, offline)
	$(PYTHON) -m pytest -q -n auto --dist worksteal   # one worker per core, one torch thread each (tests/conftest.py); an idle worker takes queued tests from the busy one

lint:
	$(PYTHON) -m ruff check src tests scripts

quickstart:      ## the full pipeline on digits, on CPU, in a few minutes
	$(PYTHON) -m gif_bench experiment=quickstart

clean-outputs:   ## remove results, caches, W&B runs and Hydra run folders
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +

toy-figure:      ## the paper's Figure 2 toy -> docs/figures/toy_regression.png (+ its JSON in docs/results/)
	$(PYTHON) -m gif_bench.toy --out docs

bench:           ## performance suite -> BENCHMARKS.md (BENCH_ARGS="--against <checkout>": GIF iteration against another tree)
	$(PYTHON) scripts/bench.py $(BENCH_ARGS)

reproduce-tables:  ## every experiment's sweep, then its tables and figures -> $(REPORT_DIR) (PROFILE=cpu: digits, 2 CPU cores); a failed run stops nothing, the exit status is 1
	@start=$$(date +%s); missing=0; \
	for e in $(EXPERIMENTS); do $(PYTHON) -m gif_bench experiment=$$e profile=$(PROFILE) $(SWEEP_ARGS) $(ARGS) || { rc=$$?; [ $$rc -eq 2 ] && exit 2; missing=1; }; done; \
	for e in $(EXPERIMENTS); do \
	  $(PYTHON) -m gif_bench.report experiment=$$e profile=$(PROFILE) $(ARGS) --out $(REPORT_DIR) || missing=1; done; \
	took=$$(( $$(date +%s) - start )); \
	echo "make reproduce-tables PROFILE=$(PROFILE): $$took s, finished $$(date -u +%FT%TZ)" > $(REPORT_DIR)/reproduce.log; \
	$(PYTHON) -c "from gif_bench.report_header import machine; print('machine:', machine())" >> $(REPORT_DIR)/reproduce.log; \
	cat $(REPORT_DIR)/reproduce.log; exit $$missing

tune:            ## every method tuned on validation, TRIALS trials each -> conf/recipes/tuned/$(PROFILE)/ (PROFILE=cpu: within 2 hours on 2 CPU cores)
	$(PYTHON) -m gif_bench.tune --profile $(PROFILE) --trials $(TRIALS) --jobs $(JOBS) $(EXPERIMENTS)
