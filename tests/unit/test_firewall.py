"""Reading the Proxmox firewall files: is it on, and what lets a TCP port in (node.md §4)."""
from __future__ import annotations

import pytest

from pvemond.pve import node


@pytest.fixture
def pve(tmp_path):
    (tmp_path / "firewall").mkdir()
    (tmp_path / "nodes" / "pve1").mkdir(parents=True)
    return tmp_path


def write(pve, cluster: str = "", host: str = "") -> None:
    (pve / "firewall" / "cluster.fw").write_text(cluster)
    (pve / "nodes" / "pve1" / "host.fw").write_text(host)


ON = "[OPTIONS]\n\nenable: 1\n\n"


def test_off_unless_the_datacenter_turns_it_on(pve):
    write(pve, host="[OPTIONS]\n\nenable: 1\n")
    assert not node.firewall_enabled(str(pve), "pve1")
    write(pve, cluster=ON)
    assert node.firewall_enabled(str(pve), "pve1")
    write(pve, cluster=ON, host="[OPTIONS]\nenable: 0\n")
    assert not node.firewall_enabled(str(pve), "pve1")


@pytest.mark.parametrize("rules, port, lets_in", [
    ("IN ACCEPT -p tcp -dport 8116", 8116, True),
    ("IN ACCEPT -source 192.0.2.20 -p tcp -dport 8000:8200", 8116, True),
    ("IN ACCEPT --proto tcp --dport 22,8116", 8116, True),
    ("|IN ACCEPT -p tcp -dport 8116 # disabled", 8116, False),
    ("IN DROP -p tcp -dport 8116", 8116, False),
    ("IN ACCEPT -p udp -dport 8116", 8116, False),
    ("OUT ACCEPT -p tcp -dport 8116", 8116, False),
    ("IN ACCEPT -p tcp -dport 8117", 8116, False),
])
def test_rules_in_either_file(pve, rules, port, lets_in):
    for cluster, host in ((ON + "[RULES]\n\n" + rules + "\n", ""), (ON, "[RULES]\n\n" + rules + "\n")):
        write(pve, cluster, host)
        assert bool(node.firewall_lets_in(str(pve), "pve1", port)) is lets_in, (cluster, host)


def test_an_accepting_input_policy_lets_everything_in(pve):
    write(pve, cluster="[OPTIONS]\nenable: 1\npolicy_in: ACCEPT\n")
    assert "policy is ACCEPT" in node.firewall_lets_in(str(pve), "pve1", 8116)


def test_the_rule_command_enables_the_rule():
    cmd = node.firewall_rule("pve1", 8116, ("192.0.2.20",), "pvemond claim")
    assert cmd == ("pvesh create /nodes/pve1/firewall/rules --type in --action ACCEPT --proto tcp "
                   "--dport 8116 --source 192.0.2.20 --enable 1 --comment 'pvemond claim'")
