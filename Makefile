# The front door: `make demo` shows the whole flow on the built-in Proxmox simulator,
# `make test` runs the suite on both library generations, then the packaging checks and the
# system ring (packaging.mk; CI runs `make test`, see .ci/run).

DEBIAN_PY   := /usr/bin/python3
VENV        := .venv
VENV_PY     := $(VENV)/bin/python
# Debian's own libraries: the PVE 8 (bookworm) generation.
APT_DEPS    := python3-sh python3-flask gunicorn python3-yaml python3-pytest python3-venv \
               openssl iproute2 curl prometheus
# What the genuine upstream pveum (the upstream ring) needs: ../shared/upstream-pve/README.md.
PERL_DEPS   := libjson-perl libjson-xs-perl libnet-ldap-perl libauthen-pam-perl \
               libcrypt-openssl-rsa-perl libcrypt-openssl-random-perl libmime-base32-perl \
               libnet-ssleay-perl liburi-perl libuuid-perl libyaml-libyaml-perl libclone-perl \
               libnet-ip-perl libhttp-message-perl libstring-shellquote-perl libfilesys-df-perl \
               liblinux-inotify2-perl libtimedate-perl libanyevent-perl libnetaddr-ip-perl \
               libio-stringy-perl libdevel-cycle-perl libwww-perl
# The genuine upstream pveum Perl (PVE 8.1/8.4/9.0/9.1), beside the clone in CI and on every
# developer machine; without it the upstream ring says so and the rest of make test goes on.
UPSTREAM_PVE ?= ../shared/upstream-pve
# Current PyPI releases: the newest generation.
PIP_DEPS    := flask gunicorn sh pyyaml pytest schemathesis
# The monitoring host's own tools, newest from PyPI on Python 3.13 (Debian 13's generation):
# the network ring runs prometheus-pve-exporter and proxmoxer from here.
EXPORTER_VENV := .venv-exporter
EXPORTER_DEPS := prometheus-pve-exporter proxmoxer requests

.PHONY: deps apt-deps venv exporter-venv test test-debian test-pypi test-fuzz test-upstream test-load demo bench clean

deps: apt-deps venv exporter-venv

apt-deps:
	@missing=$$(for p in $(APT_DEPS) $(PERL_DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
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

exporter-venv: $(EXPORTER_VENV)/.installed

$(EXPORTER_VENV)/.installed: Makefile $(VENV)/.installed
	py=$$($(VENV_PY) tests/strict_python.py) || { py=$(DEBIAN_PY); \
	    echo "*** no Python 3.13: $(EXPORTER_VENV) uses $$py; the strict-TLS tests will fail (pyenv install 3.13) ***"; }; \
	$$py -m venv $(EXPORTER_VENV)
	$(EXPORTER_VENV)/bin/python -m pip install -q --upgrade pip $(EXPORTER_DEPS)
	touch $@

# The two library generations side by side (they share no port, namespace or file: ports are
# free ones, namespaces and temporary directories are per test), each one's output kept
# together; then the upstream, fuzz and fleet rings two at a time; then one sub-make for the
# packaging targets and the fleet ring on the .deb, so the .deb they share is built once.
test: deps
	$(MAKE) -j2 --output-sync=target test-debian test-pypi
	$(MAKE) -j2 --output-sync=target test-upstream test-fuzz test-fleet
	$(MAKE) unit-check lint lint-ansible test-system test-fleet-deb

# PATH without pyenv, so subprocesses (gunicorn, the simulator) see Debian's python too.
test-debian:
	env PATH=/usr/sbin:/usr/bin:/sbin:/bin $(DEBIAN_PY) -m pytest $(PYTEST_ARGS)

test-pypi:
	env PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV_PY) -m pytest $(PYTEST_ARGS)

# schemathesis (PyPI only) against the served OpenAPI document, the daemon under real gunicorn.
test-fuzz:
	env PATH=$(CURDIR)/$(VENV)/bin:$$PATH PYTHONPATH=$(CURDIR):$(CURDIR)/tests $(VENV_PY) tests/fuzz.py

# Ring 0: tests/upstream against the genuine pveum; the other runs leave it out (its conftest
# collects only when PVEMOND_UPSTREAM_PVE is set).
test-upstream:
	@if [ ! -d "$(UPSTREAM_PVE)/pve-access-control" ]; then \
	    echo "*** UPSTREAM RING NOT RUN: $(UPSTREAM_PVE) (the genuine pveum Perl) is missing; set UPSTREAM_PVE=<folder> ***"; \
	else \
	    env PATH=/usr/sbin:/usr/bin:/sbin:/bin PVEMOND_UPSTREAM_PVE=$(abspath $(UPSTREAM_PVE)) \
	        $(DEBIAN_PY) -m pytest tests/upstream $(PYTEST_ARGS); \
	fi

# The rings under load (issue 10): pinned to one CPU beside a busy loop on it, both generations.
# Not part of `make test` (it doubles the rings' time); its figures go in the issue notes.
LOAD_RINGS := tests/integration tests/network
test-load: deps
	taskset -c 0 sh -c 'while :; do :; done' & busy=$$!; \
	env PATH=/usr/sbin:/usr/bin:/sbin:/bin taskset -c 0 $(DEBIAN_PY) -m pytest $(LOAD_RINGS) $(PYTEST_ARGS); d=$$?; \
	env PATH=$(CURDIR)/$(VENV)/bin:$$PATH taskset -c 0 $(VENV_PY) -m pytest $(LOAD_RINGS) $(PYTEST_ARGS); p=$$?; \
	kill $$busy; test $$d = 0 -a $$p = 0

demo: deps
	env PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH=$(CURDIR):$(CURDIR)/tests $(DEBIAN_PY) tests/demo.py

bench: deps
	env PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH=$(CURDIR):$(CURDIR)/tests \
	    $(if $(wildcard $(UPSTREAM_PVE)/pve-access-control),PVEMOND_UPSTREAM_PVE=$(abspath $(UPSTREAM_PVE))) \
	    $(DEBIAN_PY) tests/bench.py
	$(MAKE) bench-fleet

clean:
	rm -rf $(VENV) $(EXPORTER_VENV) $(ANSIBLE_VENV) build *.egg-info .pytest_cache .pycache-daemon
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Packaging: make deb, deb-stdeb, lint, unit-check, repo, test-system (make test needs them).
include packaging.mk
# The Ansible collection: ansible-venv, test-fleet, lint-ansible, bench-fleet.
include fleet.mk
