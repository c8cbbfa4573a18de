"""The collection against the .deb: ansible-playbook over real SSH installs pvemond through apt
from the signed repository into a booted Debian 12 node (PVE 8) and a booted Debian 13 node
(PVE 9), pvemond-client into a booted monitoring host, and wires both clusters into it; the
tokens answer over verified TLS; a second run changes nothing; no secret reaches the controller.

One step builds on the one before (one fleet for the module): a failed step fails the rest."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from debfleet import REPO_IN, DebFleet
from fleet import MON, MON_IP, TOKENS_ANSWER, changed_tasks, secrets_on_controller

CLUSTERS = {"c1-pve8": ("bookworm", 8), "c2-pve9": ("trixie", 9)}
STATE: dict = {}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, repo):
    with DebFleet(tmp_path_factory.mktemp("fleet-deb"), majors=[8, 9], repo=repo) as f:
        yield f


def assert_clean(run, changed: bool) -> None:
    assert run.rc == 0, run.output[-6000:]
    assert set(run.recap) == {*CLUSTERS, MON}, run.recap
    for host, counts in run.recap.items():
        assert counts["failed"] == 0 and counts["unreachable"] == 0, (host, counts)
        assert (counts["changed"] > 0) == changed, (host, counts, changed_tasks(run.output))


def modules(fleet) -> dict:
    return yaml.safe_load(fleet.read(fleet.mon, fleet.pve_yml))


def token(fleet, node) -> dict:
    """What the node's pvemond knows of the monitoring host's token (pvemond --json tokens)."""
    r = fleet.run_on(node, "pvemond", "--json", "tokens")
    assert r.returncode == 0, r.stderr
    return next(t for t in json.loads(r.stdout)["tokens"] if t["name"] == MON)


def test_containers_are_the_suites_and_have_no_pvemond_yet(fleet):
    for host in fleet.hosts:
        r = fleet.run_on(host, "sh", "-c", ". /etc/os-release && echo $VERSION_CODENAME; "
                         "systemctl is-system-running; dpkg -l 'pvemond*' 2>/dev/null | grep -c ^ii || true")
        release, state, ours = r.stdout.split()
        assert (release, ours) == (fleet.suite(host), "0") and state in ("running", "degraded"), \
            (host.name, r.stdout, r.stderr)


def test_first_run_installs_from_the_signed_repository_and_claims(fleet):
    STATE["first"] = run = fleet.playbook()
    assert_clean(run, changed=True)
    for host in fleet.hosts:
        package = "pvemond" if host.major else "pvemond-client"
        source = fleet.read(host, "/etc/apt/sources.list.d/pvemond.list")
        assert source == f"deb [signed-by=/etc/apt/keyrings/pvemond.gpg] file:{REPO_IN} ./\n", source
        policy = fleet.run_on(host, "apt-cache", "policy", package).stdout
        # The installed version's only origin is the signed repository.
        m = re.search(r"\*\*\* \S+ \d+\n((?:\s+\d+ .*\n)+)", policy + "\n")
        assert m and [ln.split()[1] for ln in m.group(1).splitlines()] == \
            [f"file:{REPO_IN}", "/var/lib/dpkg/status"], (host.name, policy)
    for node in fleet.nodes:
        active = fleet.run_on(node, "systemctl", "is-active", "pvemond").stdout.strip()
        assert active == "active", node.name
        t = token(fleet, node)
        assert t["delivered_to"] == f"claim from {MON_IP}", t
    assert fleet.run_on(fleet.mon, "dpkg-query", "-W", "pvemond").returncode != 0, \
        "the monitoring host needs pvemond-client only"


def test_every_cluster_has_its_module_and_targets(fleet):
    mods = modules(fleet)
    assert set(mods) == set(CLUSTERS)
    mode = fleet.run_on(fleet.mon, "stat", "-c", "%a %U", str(fleet.pve_yml)).stdout.strip()
    assert mode == "600 root", mode
    for name, m in mods.items():
        assert m["user"] == "monitoring@pve" and m["token_name"] == MON, sorted(m)
        groups = yaml.safe_load(fleet.read(fleet.mon, fleet.file_sd / f"{name}.yml"))
        assert [g["labels"]["__param_module"] for g in groups] == [name], groups
        node = next(n for n in fleet.nodes if n.name == name)
        assert groups[0]["labels"]["__param_target"] == node.ip, groups


def test_tokens_answer_over_verified_tls(fleet):
    """From the monitoring host, with the CA each claim wrote (strict TLS on Debian 12's python3)."""
    r = fleet.run_on(fleet.mon, "python3", "-c", TOKENS_ANSWER, str(fleet.pve_yml), str(fleet.file_sd))
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout) == {name: 200 for name in CLUSTERS}


def test_second_run_changes_nothing(fleet):
    before = fleet.read(fleet.mon, fleet.pve_yml)
    tokens = {node.name: token(fleet, node) for node in fleet.nodes}
    STATE["second"] = run = fleet.playbook()
    assert_clean(run, changed=False)
    assert fleet.read(fleet.mon, fleet.pve_yml) == before, "a kept token must not touch pve.yml"
    assert {node.name: token(fleet, node) for node in fleet.nodes} == tokens, "nothing minted"


def test_no_secret_on_the_controller(fleet):
    secrets = [m["token_value"] for m in modules(fleet).values()]
    assert len(secrets) == len(CLUSTERS) and all(len(s) == 36 for s in secrets), \
        "pve.yml must hold the secrets the grep looks for"
    outputs = [STATE[k].output for k in ("first", "second")]
    assert secrets_on_controller(fleet, secrets, *outputs) == []
    assert secrets_on_controller(fleet, secrets[:1], f"x{secrets[0]}x"), "the grep must see a secret"
    assert "ansible.log" in {p.name for p in fleet.controller_files()}, "-vvv's log is grepped too"
    print(f"fleet ring (.deb): run 1 {STATE['first'].seconds:.1f} s, run 2 {STATE['second'].seconds:.1f} s")


# On the monitoring host: module EDITED goes from pve.yml (rewritten by a YAML dumper, as a hand
# edit might), DELETED's file_sd target file goes.
LOSE = """\
import os, sys, yaml
pve_yml, file_sd, edited, deleted = sys.argv[1:]
mods = yaml.safe_load(open(pve_yml))
del mods[edited]
with open(pve_yml, "w") as fh:
    yaml.safe_dump(mods, fh)
os.unlink(f"{file_sd}/{deleted}.yml")
"""


def test_a_lost_module_is_reported_with_the_way_back(fleet):
    """A token delivered to this monitoring host ("kept" on its node) whose module or targets
    are gone here: the run fails on the monitoring host and names the rotation that brings them
    back; that rotation does."""
    old = {name: m["token_value"] for name, m in modules(fleet).items()}
    lose = fleet.run_on(fleet.mon, "python3", "-c", LOSE, str(fleet.pve_yml), str(fleet.file_sd),
                        "c1-pve8", "c2-pve9")
    assert lose.returncode == 0, lose.stderr
    run = fleet.playbook()
    assert run.rc != 0 and run.recap[MON]["failed"] == 1, run.recap
    assert all(run.recap[c]["failed"] == 0 and run.recap[c]["changed"] == 0 for c in CLUSTERS), run.recap
    said = " ".join(run.output.split())
    for expected in (f"c1-pve8: {fleet.pve_yml} has no module c1-pve8;",
                     f"c2-pve9: its file_sd target file {fleet.file_sd}/c2-pve9.yml is gone.",
                     "-e pvemond_node_rotate=true --limit c1-pve8,c2-pve9,mon"):
        assert expected in said, run.output[-4000:]
    back = fleet.playbook("-e", "pvemond_node_rotate=true", "--limit", "c1-pve8,c2-pve9,mon")
    assert back.rc == 0, back.output[-6000:]
    new = {name: m["token_value"] for name, m in modules(fleet).items()}
    assert set(new) == set(CLUSTERS) and all(new[c] != old[c] for c in CLUSTERS)
    for name in CLUSTERS:
        assert fleet.run_on(fleet.mon, "test", "-f", str(fleet.file_sd / f"{name}.yml")).returncode == 0
    test_tokens_answer_over_verified_tls(fleet)
    assert secrets_on_controller(fleet, [*old.values(), *new.values()], run.output, back.output) == []
