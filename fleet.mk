# The Ansible collection (ansible/): its venv, lint and the fleet rings (tests/fleet, tests/fleet/deb).
# Included by the Makefile; uses its DEBIAN_PY, VENV and VENV_PY. The venv is made on the default
# python3, as the Makefile's own (Debian 12's python3.11 or pyenv's).

ANSIBLE_VENV := .venv-ansible
ANSIBLE_BIN  := $(CURDIR)/$(ANSIBLE_VENV)/bin
# ansible-core 2.20+ needs a Python >= 3.12 controller; Debian 12 has 3.11.
ANSIBLE_DEPS := 'ansible-core>=2.15,<2.20' ansible-lint
# The collection where ansible-lint resolves its roles by their full names (pvemond.fleet.*).
ANSIBLE_COLLECTIONS := build/ansible-collections

.PHONY: ansible-venv sshd-deps test-fleet test-fleet-deb lint-ansible bench-fleet

ansible-venv: $(ANSIBLE_VENV)/.installed

$(ANSIBLE_VENV)/.installed: fleet.mk
	python3 -m venv $(ANSIBLE_VENV)
	$(ANSIBLE_VENV)/bin/python -m pip install -q --upgrade pip $(ANSIBLE_DEPS)
	touch $@

# One sshd per simulated host: the host has no openssh-server by default.
sshd-deps:
	@test -x /usr/sbin/sshd || { apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server; }

# Both generations of pvemond's own libraries; ansible-core is the venv's either way.
test-fleet: ansible-venv sshd-deps venv
	env PATH=/usr/sbin:/usr/bin:/sbin:/bin PVEMOND_ANSIBLE=$(ANSIBLE_BIN) \
	    $(DEBIAN_PY) -m pytest tests/fleet $(PYTEST_ARGS)
	env PATH=$(CURDIR)/$(VENV)/bin:$$PATH PVEMOND_ANSIBLE=$(ANSIBLE_BIN) \
	    $(VENV_PY) -m pytest tests/fleet $(PYTEST_ARGS)

# The fleet ring against the .deb (tests/fleet/deb): ansible-playbook installs pvemond through apt
# from the signed repository `make repo` built into booted bookworm (PVE 8) and trixie (PVE 9)
# containers and pvemond-client into a monitoring host container. make test runs it after
# test-system in the same make, so the .deb is built once. The containers are images layered on
# the system ring's cached bases (debroot.layer); ansible-core is the venv's, the harness runs on
# Debian's python3 as the system ring does (what it tests runs on each suite's own python3).
FLEET_DEB_DEPS := debootstrap systemd-container util-linux tar openssh-client iproute2
test-fleet-deb: ansible-venv repo
	$(call pkg-apt,$(FLEET_DEB_DEPS))
	cd $(CURDIR) && env PATH=$(PKG_PATH) PVEMOND_ANSIBLE=$(ANSIBLE_BIN) PVEMOND_REPO=$(PKG_BUILD)/repo \
	    $(PKG_PY) -m pytest tests/fleet/deb -q $(PYTEST_ARGS)

lint-ansible: ansible-venv
	mkdir -p $(ANSIBLE_COLLECTIONS)/ansible_collections/pvemond
	ln -sfn $(CURDIR)/ansible $(ANSIBLE_COLLECTIONS)/ansible_collections/pvemond/fleet
	cd ansible && env PATH=$(ANSIBLE_BIN):$$PATH ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/$(ANSIBLE_COLLECTIONS) \
	    ansible-lint

# The scale run (make bench calls it): FLEET_CLUSTERS simulated clusters in one playbook run.
FLEET_CLUSTERS ?= 10
FLEET_FORKS    ?= 5
bench-fleet: ansible-venv sshd-deps
	env PATH=/usr/sbin:/usr/bin:/sbin:/bin PVEMOND_ANSIBLE=$(ANSIBLE_BIN) \
	    $(DEBIAN_PY) tests/fleet/scale.py --clusters $(FLEET_CLUSTERS) --forks $(FLEET_FORKS)
