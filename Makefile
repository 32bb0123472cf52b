# Two set-up commands for a fresh machine: `make demo` and `make test`. Each bootstraps .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo bench lint promtool chromium wrk clean monitoring

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev]'
	@touch $(STAMP)

# promtool and prometheus come from Debian's prometheus package, alertmanager and amtool from
# prometheus-alertmanager; CI installs them here when they are missing.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing promtool (apt-get install prometheus)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	  else echo "promtool not found: install Debian's 'prometheus' package" >&2; exit 1; fi; }
	@command -v amtool >/dev/null 2>&1 && command -v prometheus-alertmanager >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing alertmanager and amtool (apt-get install prometheus-alertmanager)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager >/dev/null; \
	  else echo "alertmanager not found: install Debian's 'prometheus-alertmanager' package" >&2; exit 1; fi; }

# chromium (Debian's package) opens the scaling report in a test (headless).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get install chromium)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found: install Debian's 'chromium' package" >&2; exit 1; fi; }

# wrk drives the HTTP benchmarks; without it they fall back to a Python load generator.
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing wrk (apt-get install wrk)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else echo "wrk not found: benchmarks use the Python load generator" >&2; fi; }

test: $(STAMP) promtool chromium
	$(PY) -m pytest

demo: $(STAMP)
	$(VENV)/bin/ofsre demo

bench: $(STAMP) wrk
	$(PY) bench/run.py

# The Helm chart's copies of the generated dashboards and rules (a test fails while they are stale).
CHART_MONITORING := platform/deploy/helm/ofsre-platform/files/monitoring
monitoring: $(STAMP)
	$(VENV)/bin/ofsre dashboards build --config $(CHART_MONITORING)/config.toml --out $(CHART_MONITORING)/dashboards
	$(VENV)/bin/ofsre alerts build --config $(CHART_MONITORING)/config.toml --out $(CHART_MONITORING)/rules

# mypy reads the package through .typecheck/ (tools/typecheck_tree.py: pyproject's package-dir as symlinks).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) tools/typecheck_tree.py
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .typecheck
