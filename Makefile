# Two commands: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,transfer,sim]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/privet demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint browser
	$(BIN)/python -m pytest

browser:  # headless Chromium for tests/serve/test_serve_dashboard.py (which skips without it)
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	  else echo "chromium/chromedriver missing (not root): the dashboard browser test will be skipped"; fi; }

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,transfer,sim,bench]'
	$(BIN)/python benchmarks/aead.py --json
	$(BIN)/python benchmarks/dp_sampling.py --json
	$(BIN)/python benchmarks/dp_stats.py --json
	$(BIN)/python benchmarks/dp_sgd.py --json
	$(BIN)/python benchmarks/dp_transfer.py --json
	$(BIN)/python benchmarks/pii.py --json
	test -x build/flower-venv/bin/python || $(BIN)/python benchmarks/fl_sim.py --setup-flower
	$(BIN)/python benchmarks/fl_sim.py --json
	$(BIN)/python benchmarks/secagg.py --json
	$(BIN)/python benchmarks/secagg_ckks.py --json
	$(BIN)/python benchmarks/gateway.py --json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
