# midge — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEBS   := mosquitto-clients mosquitto slapd ldap-utils haproxy jq chromium microsocks redis-server
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=
# The mypyc-compiled build of the hot modules (setup.py), in a venv of its own: `make compiled`.
CVENV  := .venv-mypyc
CBIN   := $(CVENV)/bin
CSTAMP := $(CVENV)/.installed
SOURCES := $(shell find src -name '*.py') setup.py pyproject.toml

.PHONY: install compiled run dist test test-pure test-compiled lint typecheck docs debs browser-deps dashboard-vendor screenshots clean

install: $(STAMP)

# The developer's venv: an editable install, which stays pure Python (setup.py).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# A normal install, as users get it: the hot modules compiled with mypyc (setup.py); rebuilt
# when a source file changes. It must really be compiled: `midge --version` says so.
compiled: $(CSTAMP)

$(CSTAMP): $(SOURCES)
	$(PYTHON) -m venv $(CVENV)
	$(CBIN)/pip install --quiet --upgrade pip
	$(CBIN)/pip install --quiet --force-reinstall '.[test]'
	$(CBIN)/midge --version | grep -q 'compiled with mypyc' || { $(CBIN)/midge --version; exit 1; }
	touch $(CSTAMP)

# The broker as users run it: the compiled build, on 127.0.0.1:1883, durable in ./data.
run: $(CSTAMP)
	$(CBIN)/midge broker --host 127.0.0.1 --port 1883

# An sdist and a wheel in dist/; the wheel holds the compiled hot modules (MIDGE_PURE=1: pure).
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

# Debian packages the tests drive (mosquitto_pub/sub, the mosquitto reference broker; slapd and
# ldap-utils for the LDAP backend's tests; chromium for MQTT.js in a real browser; redis-server
# for the cluster tests).
debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The npm packages of the browser test (tests/interop/test_browser.py): MQTT.js and Playwright,
# pinned by tests/browser/package-lock.json (node and npm from Debian when there is no npm).
BROWSER_STAMP := tests/browser/node_modules/.installed
# The dashboard's npm packages (web/: uPlot), vendored by `make dashboard-vendor` below.
WEB_STAMP := web/node_modules/.installed
browser-deps: $(BROWSER_STAMP) $(WEB_STAMP)

$(BROWSER_STAMP): tests/browser/package.json tests/browser/package-lock.json | debs
	@command -v npm >/dev/null 2>&1 || { \
		echo "installing Debian packages: nodejs npm"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm; }
	cd tests/browser && npm ci --no-audit --no-fund --loglevel=error
	touch $(BROWSER_STAMP)

# The web dashboard's front-end dependencies (uPlot), pinned by web/package-lock.json, copied with
# their licences into the package (src/midge/observe/dashboard/vendor/), where they are committed:
# users, and a wheel built from a clean clone (`make dist`), need no npm. tests/test_dashboard.py
# checks the copies against the pinned version's files (`make test` installs web/node_modules).
VENDOR := src/midge/observe/dashboard/vendor
dashboard-vendor: $(WEB_STAMP)
	mkdir -p $(VENDOR)/uplot
	cp web/node_modules/uplot/dist/uPlot.iife.min.js web/node_modules/uplot/dist/uPlot.min.css \
		web/node_modules/uplot/LICENSE $(VENDOR)/uplot/

# (after the browser tests' packages, whose step installs npm when it is missing)
$(WEB_STAMP): web/package.json web/package-lock.json | $(BROWSER_STAMP)
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $(WEB_STAMP)

# The dashboard's screenshots in docs/images/ (docs/operations.md shows them), taken by its
# browser test; the test alone writes nothing.
screenshots: $(STAMP) debs $(BROWSER_STAMP)
	MIDGE_SCREENSHOTS=docs/images $(BIN)/pytest -q -p no:cacheprovider tests/interop/test_dashboard.py

# docs/configuration.md is rendered from the option table (src/midge/config/); a unit test fails
# when the committed page is out of date.
docs: $(STAMP)
	$(BIN)/python -m midge.config.docs > docs/configuration.md

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# The whole suite on the pure-Python build, then the broker-facing tests on the compiled one
# (the same code must pass both ways; the tests that run only the real Mosquitto, and the restarts
# that check which configuration turns persistence on, decided by pure-Python config code, are not
# run twice).
# The compiled build is made while lint, mypy and the pure suite run (they mostly wait on sockets
# and processes), so a clean clone does not wait for the C compiler on its own.
test: $(STAMP) debs
	@$(MAKE) --no-print-directory -j4 --output-sync=target lint typecheck test-pure compiled
	@$(MAKE) --no-print-directory test-compiled

test-pure: $(STAMP) debs $(BROWSER_STAMP) $(WEB_STAMP)
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

test-compiled: $(CSTAMP) debs $(BROWSER_STAMP)
	$(CBIN)/python -c "from midge.build import build_kind as k; assert k() == 'compiled', k()"
	$(CBIN)/pytest -n 2 -p no:cacheprovider tests/conformance tests/differential tests/interop tests/fuzz tests/unit tests/durability tests/test_enhanced_auth.py tests/test_close.py tests/test_systree.py tests/test_workers.py tests/cluster tests/test_limits.py tests/test_auth_plugins.py tests/test_scram_auth.py tests/test_auth_ldap.py tests/test_oauth.py tests/security \
		tests/bridge tests/client tests/test_slow_consumer.py tests/test_session_totals.py tests/test_memory_limit.py tests/test_dashboard.py tests/test_reload.py \
		--deselect tests/security/test_mosquitto_files.py::test_real_mosquitto_with_the_files \
		--ignore tests/durability/test_mosquitto_persistence.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(CVENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The benchmark (issue 4): midge, Mosquitto and Aedes side by side; writes docs/performance.md.
# Not part of `make test`. BENCH_QUICK=1 make bench: a ~1 minute smoke run.
.PHONY: bench
BENCH_STAMP := $(VENV)/.bench-installed
AEDES_STAMP := benchmarks/aedes/node_modules/.installed

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

$(AEDES_STAMP): benchmarks/aedes/package.json benchmarks/aedes/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
		echo "installing Debian packages: nodejs npm"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm; }
	cd benchmarks/aedes && npm ci --no-audit --no-fund --loglevel=error
	touch $(AEDES_STAMP)

# midge is measured as the mypyc-compiled build; BENCH_ARGS passes options to benchmarks/run.py.
BENCH_ARGS ?=
bench: $(BENCH_STAMP) $(CSTAMP) debs $(AEDES_STAMP)
	MIDGE_PYTHON=$(CBIN)/python $(BIN)/python benchmarks/run.py $(BENCH_ARGS)
	$(CBIN)/python benchmarks/embed_startup.py --write  # midge.Broker's start-up: its section of docs/performance.md
