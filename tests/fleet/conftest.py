"""The fleet ring: the Ansible collection (ansible/) over real SSH against simulated clusters.

Collected only when PVEMOND_ANSIBLE names the folder holding ansible-playbook (`make
test-fleet` sets it to its venv), so the plain Debian and PyPI runs do not run it; named but
missing is an error, never a skip."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ANSIBLE = os.environ.get("PVEMOND_ANSIBLE")
if not ANSIBLE:
    collect_ignore_glob = ["*.py"]
elif not (Path(ANSIBLE) / "ansible-playbook").exists():
    raise pytest.UsageError(f"PVEMOND_ANSIBLE={ANSIBLE} holds no ansible-playbook (make ansible-venv)")
elif not shutil.which("sshd", path="/usr/sbin"):
    raise pytest.UsageError("no /usr/sbin/sshd: the fleet ring needs openssh-server (make test-fleet installs it)")
