# The front door: `make demo` shows the whole flow on the built-in Proxmox simulator,
# `make test` runs the suite on both library generations, then the packaging checks and the
# system ring (packaging.mk; CI runs `make test`, see .ci/run).

DEBIAN_PY   := /usr/bin/python3
VENV        := .venv
VENV_PY     := $(VENV)/bin/python
# Debian's own libraries: the PVE 8 (bookworm) generation.
APT_DEPS    := python3-sh python3-flask gunicorn python3-yaml python3-pytest python3-venv \
               openssl iproute2 curl
# Current PyPI releases: the newest generation.
PIP_DEPS    := flask gunicorn sh pyyaml pytest

.PHONY: deps apt-deps venv test test-debian test-pypi demo bench clean

deps: apt-deps venv

apt-deps:
	@missing=$$(for p in $(APT_DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "apt: installing $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: Makefile
	python3 -m venv $(VENV)
	$(VENV_PY) -m pip install -q --upgrade pip $(PIP_DEPS)
	touch $@

# One sub-make for the packaging targets, so the .deb they share is built once.
test: deps
	$(MAKE) test-debian
	$(MAKE) test-pypi
	$(MAKE) unit-check lint test-system

# PATH without pyenv, so subprocesses (gunicorn, the simulator) see Debian's python too.
test-debian:
	env PATH=/usr/sbin:/usr/bin:/sbin:/bin $(DEBIAN_PY) -m pytest $(PYTEST_ARGS)

test-pypi:
	env PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV_PY) -m pytest $(PYTEST_ARGS)

demo: deps
	env PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH=$(CURDIR):$(CURDIR)/tests $(DEBIAN_PY) tests/demo.py

bench: deps
	env PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH=$(CURDIR):$(CURDIR)/tests $(DEBIAN_PY) tests/bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Packaging: make deb, deb-stdeb, lint, unit-check, repo, test-system (make test needs them).
include packaging.mk
