"""The collection end to end: ansible-playbook over SSH rolls pvemond out to a PVE 8 and a PVE 9
cluster and wires both into one monitoring host; a second run changes nothing; a rotation is
explicit; no secret ever reaches the controller."""
from __future__ import annotations

import json
import sys

import pytest
import yaml

from fleet import MON, MON_IP, TOKENS_ANSWER, Fleet, changed_tasks, secrets_on_controller
from harness import env_for


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with Fleet(tmp_path_factory.mktemp("fleet"), majors=[8, 9]) as f:
        yield f


def modules(fleet) -> dict:
    return yaml.safe_load(fleet.pve_yml.read_text())


def tokens_answer(fleet) -> dict:
    r = fleet.run_on(fleet.mon, sys.executable, "-c", TOKENS_ANSWER, str(fleet.pve_yml), str(fleet.file_sd))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def token(fleet, node) -> dict:
    """What the node's pvemond knows of the monitoring host's token (pvemond --json tokens)."""
    r = fleet.run_on(node, sys.executable, "-m", "pvemond.cli.admin", "--json", "tokens",
                     env=env_for(node.config))
    assert r.returncode == 0, r.stderr
    return next(t for t in json.loads(r.stdout)["tokens"] if t["name"] == MON)


def assert_clean(run, changed: bool) -> None:
    assert run.rc == 0, run.output[-6000:]
    names = {n for n in run.recap}
    assert names == {"c1-pve8", "c2-pve9", MON}, run.recap
    for host, counts in run.recap.items():
        assert counts["failed"] == 0 and counts["unreachable"] == 0, (host, counts)
        assert (counts["changed"] > 0) == changed, (host, counts, changed_tasks(run.output))


def test_rollout_is_idempotent_and_keeps_secrets_off_the_controller(fleet):
    first = fleet.playbook()
    assert_clean(first, changed=True)
    mods = modules(fleet)
    assert set(mods) == {"c1-pve8", "c2-pve9"}
    for name, m in mods.items():
        assert m["user"] == "monitoring@pve" and m["token_name"] == MON, m.keys()
        groups = yaml.safe_load((fleet.file_sd / f"{name}.yml").read_text())
        assert [g["labels"]["__param_module"] for g in groups] == [name]
    assert tokens_answer(fleet) == {"c1-pve8": 200, "c2-pve9": 200}
    minted = {node.name: token(fleet, node) for node in fleet.nodes}
    for t in minted.values():  # each node recorded the hand-over to the monitoring host
        assert t["delivered_to"] == f"claim from {MON_IP}", t
    before = fleet.pve_yml.read_text()

    second = fleet.playbook()
    assert_clean(second, changed=False)
    assert fleet.pve_yml.read_text() == before, "a kept token must not touch pve.yml"
    assert {node.name: token(fleet, node) for node in fleet.nodes} == minted, "nothing minted"

    secrets = [m["token_value"] for m in mods.values()]
    assert all(len(s) == 36 for s in secrets), "pve.yml must hold the secrets the grep looks for"
    assert secrets_on_controller(fleet, secrets, first.output, second.output) == []
    assert secrets_on_controller(fleet, secrets[:1], f"x{secrets[0]}x"), "the grep must see a secret"
    assert {"ansible.log"} <= {p.name for p in fleet.controller_files()}, "-vvv's log is grepped too"
    print(f"fleet ring: run 1 {first.seconds:.1f} s, run 2 {second.seconds:.1f} s")


def test_rotation_is_explicit(fleet):
    """After the rollout (the test above): pvemond_node_rotate=true hands out new secrets, the
    old ones stop working, and the monitoring host holds the new ones."""
    if not fleet.pve_yml.exists():
        assert fleet.playbook().rc == 0
    old = {name: m["token_value"] for name, m in modules(fleet).items()}
    run = fleet.playbook("-e", "pvemond_node_rotate=true", "--limit", f"c2-pve9,{MON}")
    assert run.rc == 0, run.output[-6000:]
    new = {name: m["token_value"] for name, m in modules(fleet).items()}
    assert new["c1-pve8"] == old["c1-pve8"] and new["c2-pve9"] != old["c2-pve9"]
    assert tokens_answer(fleet) == {"c1-pve8": 200, "c2-pve9": 200}
    assert secrets_on_controller(fleet, [*old.values(), *new.values()], run.output) == []
    assert MON_IP in run.output  # the claim came from the monitoring host's address
