"""The monitoring role's check of a token already delivered here (roles/pvemond_monitor/files/
kept_check.py): what counts as its module still being in pve.yml, and what it says when not."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fleet import REPO

SCRIPT = REPO / "ansible" / "roles" / "pvemond_monitor" / "files" / "kept_check.py"
SECRET = "0b5d6f4e-3c1a-4f7e-9d2b-8a6c5e4f3a21"
KEPT = {"cluster": "pve-a", "token_id": "monitoring@pve!mon", "cluster_name": "prod.1", "node_name": "n1"}


def _load():
    spec = importlib.util.spec_from_file_location("kept_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kept_check = _load()


@pytest.fixture
def host(tmp_path):
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "prod.1.yml").write_text("[]\n")
    (tmp_path / "ca.pem").write_text("x\n")
    return tmp_path


def pve_yml(host: Path, body: str) -> str:
    (host / "pve.yml").write_text(body.replace("CA", str(host / "ca.pem")))
    return str(host / "pve.yml")


GOOD = f"""\
default:  # someone else's
  user: other@pve
prod.1:
  # pvemond: written by pvemond-claim
  user: monitoring@pve
  token_name: "mon"
  token_value: '{SECRET}'   # the secret
  verify_ssl: CA
lab:
  user: x@pve
"""


def test_the_module_with_its_token_is_fine(host):
    assert kept_check.problem(pve_yml(host, GOOD), str(host / "sd"), KEPT) == ""


@pytest.mark.parametrize("body, kept, why", [
    (GOOD.replace("prod.1:", "prod_1:"), KEPT, "has no module prod.1"),
    (GOOD.replace('"mon"', "other"), KEPT, "holds another token, not monitoring@pve!mon"),
    (GOOD.replace(f"'{SECRET}'", "''"), KEPT, "has no token_value"),
    (GOOD.replace("  verify_ssl: CA\n", "  verify_ssl: /nowhere/ca.pem\n"), KEPT, "CA file /nowhere/ca.pem"),
    (GOOD, dict(KEPT, cluster_name=None, node_name="n1"), "has no module n1"),
    (GOOD, dict(KEPT, cluster_name=None, node_name=None), "names neither its cluster nor itself"),
])
def test_what_is_lost_is_named(host, body, kept, why):
    assert why in kept_check.problem(pve_yml(host, body), str(host / "sd"), kept)


def test_a_deleted_file_and_a_lost_target(host):
    assert "has no module prod.1" in kept_check.problem(str(host / "none.yml"), str(host / "sd"), KEPT)
    (host / "sd" / "prod.1.yml").unlink()
    assert "file_sd target file" in kept_check.problem(pve_yml(host, GOOD), str(host / "sd"), KEPT)


def test_the_command_prints_the_lost_ones_and_no_value(host):
    path = pve_yml(host, GOOD.replace("prod.1:", "gone:"))
    r = subprocess.run([sys.executable, str(SCRIPT), path, str(host / "sd"),
                        json.dumps([KEPT, dict(KEPT, cluster="pve-b", cluster_name="lab")])],
                       capture_output=True, text=True, env={"PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    lost = json.loads(r.stdout)
    assert [x["cluster"] for x in lost] == ["pve-a", "pve-b"], lost
    assert "pve-b: module lab in" in lost[1]["detail"] and "holds another token" in lost[1]["detail"]
    assert SECRET not in r.stdout + r.stderr
