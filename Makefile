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

# $(call apt_install,COMMANDS,PACKAGE,WHAT,NAME[,OPTIONAL]): nothing when every one of COMMANDS is on PATH.
# Otherwise, as root with apt-get: "installing WHAT (apt-get install PACKAGE)", then install Debian's PACKAGE;
# not as root (or without apt-get): "NAME not found: install Debian's 'PACKAGE' package" and fail, or, given
# OPTIONAL, "NAME not found: OPTIONAL" and go on.
define apt_install
@{ $(foreach c,$(1),command -v $(c) &&) :; } >/dev/null 2>&1 || { \
  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
    echo "installing $(3) (apt-get install $(2))"; \
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
  else echo "$(4) not found: $(or $(5),install Debian's '$(2)' package)" >&2; $(if $(5),,exit 1;) fi; }
endef

# promtool and prometheus come from Debian's prometheus package, alertmanager and amtool from
# prometheus-alertmanager; CI installs them here when they are missing.
promtool:
	$(call apt_install,promtool,prometheus,promtool,promtool)
	$(call apt_install,amtool prometheus-alertmanager,prometheus-alertmanager,alertmanager and amtool,alertmanager)

# chromium (Debian's package) opens the scaling report in a test (headless).
chromium:
	$(call apt_install,chromium,chromium,chromium,chromium)

# wrk drives the HTTP benchmarks; without it they fall back to a Python load generator.
wrk:
	$(call apt_install,wrk,wrk,wrk,wrk,benchmarks use the Python load generator)

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
