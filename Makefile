# ron-kernel — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run demo-bus test test-pythons sysdeps lint typecheck rules pytest api spin fuzz fuzz-smoke soak soak-smoke perf perf-check perf-baseline clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## run: the kernel with its demo services, observability on http://127.0.0.1:9909
run: $(STAMP)
	$(BIN)/ron-kernel run --obs-http true --obs-addr 127.0.0.1:9909

## demo-bus: the short live demonstration of the bus alone (a slow receiver lags)
demo-bus: $(STAMP)
	$(BIN)/python examples/bus_demo.py

## test: every gate — ruff, mypy --strict, alert rules, pytest on asyncio + uvloop with coverage,
## API snapshot
test: $(STAMP) sysdeps lint typecheck rules pytest

## sysdeps: promtool and spin for the suite (apt-get when root; a no-op when present)
sysdeps:
	tools/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy src benchmarks examples

## rules: the monitoring kit's alert rules are valid and pass their unit tests (promtool)
rules: sysdeps
	promtool check rules ops/prometheus/alerts.yml
	promtool test rules ops/prometheus/tests.yml

pytest: $(STAMP)
	$(BIN)/pytest --cov --cov-report=term --cov-fail-under=90 -q

## api: regenerate the public API snapshot on purpose (review the diff!)
api: $(STAMP)
	$(BIN)/python tools/api_snapshot.py

## spin: model-check the Promela models of the bus and the supervisor (specs/)
spin:
	specs/check.sh

## fuzz: run every atheris target (FUZZ_SECONDS in all, default 600); crashes land in fuzz/regressions/
FUZZ_SECONDS ?= 600
fuzz: $(STAMP)
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS)

fuzz-smoke: $(STAMP)
	$(BIN)/python fuzz/run.py --seconds 60

## soak: restart storms, bus overflow and a reload loop together (SOAK_SECONDS, default 3600);
## RSS growth < 5 % after warm-up and a flat FD count, or exit 1 (docs/SOAK.md)
SOAK_SECONDS ?= 3600
soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak --duration $(SOAK_SECONDS) --interval 10 \
		--json perf-results/soak.json

soak-smoke: $(STAMP)
	$(BIN)/python -m benchmarks.soak --duration 120 --interval 5 \
		--json perf-results/soak-smoke.json

## perf: every perf rig of benchmarks/, full length (~10 min); JSON + PNG per rig into perf-results/
## (the rigs are not installed: they run from the repository root as `python -m benchmarks.<rig>`)
PERF_OUT ?= perf-results
PERF_RIGS := bus_fanout restart_storm config_reload http federation ui_sse
perf: $(STAMP)
	@mkdir -p $(PERF_OUT)
	for rig in $(PERF_RIGS); do \
	  $(BIN)/python -m benchmarks.$$rig --json $(PERF_OUT)/$$rig.json --plot $(PERF_OUT)/$$rig.png \
	    || exit 1; \
	done

## perf-check: short rigs x3, ratios vs perf/baselines/ (PERFORMANCE.MD §5); fails on a regression
perf-check: $(STAMP)
	$(BIN)/python -m benchmarks.check

## perf-baseline: re-measure and rewrite perf/baselines/ on purpose (review and commit the diff)
perf-baseline: $(STAMP)
	$(BIN)/python -m benchmarks.check --update

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov perf-results

## test-pythons: the supervisor/bus suites on every other CPython 3.12/3.13 this machine has
## (asyncio internals differ by version); says which versions it found and ran
test-pythons:
	tools/test-pythons.sh
