"""Behaviour that depends on the emulated PVE / libpve-access-control version."""
import json
import os

import pytest

from pvesim.testing import make_node, pveum_call

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the fake pveum runs as root only")
REGENERATE_REFUSED = (
    "Unknown option: regenerate\n400 unable to parse option\n"
    "pveum user token modify <userid> <tokenid> [OPTIONS] [FORMAT_OPTIONS]\n"
)


def run(node, *args):
    return pveum_call(node, *args)


def with_token(node, *extra):
    assert run(node, "user", "add", "monitor@pve").rc == 0
    res = run(node, "user", "token", "add", "monitor@pve", "monitoring", *extra, "--output-format", "json")
    assert res.rc == 0
    return json.loads(res.out)["value"]


def test_defaults_per_major(tmp_path):
    assert make_node(tmp_path / "a", pve=8).settings()["pve_version"] == "8.4.1"
    assert make_node(tmp_path / "b", pve=8).settings()["access_control"] == "8.2.3"
    nine = make_node(tmp_path / "c").settings()
    assert (nine["pve_version"], nine["access_control"]) == ("9.1.1", "9.1.1")


def test_vm_monitor_is_pve8_only_and_guest_agent_pve9_only(tmp_path):
    eight, nine = make_node(tmp_path / "eight", pve=8), make_node(tmp_path / "nine")
    assert run(eight, "role", "add", "A", "--privs", "VM.Monitor").rc == 0
    assert run(nine, "role", "add", "A", "--privs", "VM.GuestAgent.Audit").rc == 0
    res = run(nine, "role", "add", "B", "--privs", "VM.Monitor")
    assert (res.rc, res.err) == (255, "400 Parameter verification failed.\n"
                                      "privs: invalid format - invalid privilege 'VM.Monitor'\n\n"
                                      "pveum role add <roleid> [OPTIONS]\n")
    res = run(eight, "role", "add", "B", "--privs", "VM.GuestAgent.Audit")
    assert res.rc == 255 and "privs: invalid format - invalid privilege 'VM.GuestAgent.Audit'\n" in res.err


def test_pveauditor_and_administrator_per_version(tmp_path):
    eight = {r["roleid"]: r for r in json.loads(run(make_node(tmp_path / "e", pve=8), "role", "list",
                                                        "--output-format", "json").out)}
    assert eight["PVEAuditor"]["privs"] == "Datastore.Audit,Mapping.Audit,Pool.Audit,SDN.Audit,Sys.Audit,VM.Audit"
    assert len(eight["Administrator"]["privs"].split(",")) == 42


def test_pve_version_knob_switches_the_privilege_list(tmp_path):
    node = make_node(tmp_path / "n")
    node.set(pve_version="8.4.1")
    assert run(node, "role", "add", "A", "--privs", "VM.Monitor").rc == 0
    assert "sub version { return '8.4.1'; }" in node.pvecfg.read_text()


def test_token_delete_unknown_before_access_control_8_2(tmp_path):
    node = make_node(tmp_path / "old", pve=8, access_control="8.1.4")
    with_token(node)
    res = run(node, "user", "token", "delete", "monitor@pve", "monitoring")
    assert res.rc == 255 and res.out == ""
    assert res.err.startswith("ERROR: unknown command 'pveum user token delete'\n"
                              "USAGE: pveum <COMMAND> [ARGS] [OPTIONS]\n")
    assert "       pveum user token remove <userid> <tokenid> [FORMAT_OPTIONS]\n" in res.err
    assert run(node, "user", "token", "remove", "monitor@pve", "monitoring").rc == 0
    assert "token:" not in node.user_cfg()


def test_token_delete_exists_from_access_control_8_2(tmp_path):
    node = make_node(tmp_path / "n", pve=8, access_control="8.2.0")
    with_token(node)
    assert run(node, "user", "token", "delete", "monitor@pve", "monitoring").rc == 0


@pytest.mark.parametrize("pve, access_control", [(9, "9.0.3"), (9, "9.0.4"), (8, "8.2.3")])
def test_regenerate_refused_before_9_1_0(tmp_path, pve, access_control):
    node = make_node(tmp_path / "n", pve=pve, access_control=access_control)
    with_token(node)
    res = run(node, "user", "token", "modify", "monitor@pve", "monitoring", "--regenerate", "1")
    assert (res.rc, res.out, res.err) == (255, "", REGENERATE_REFUSED)


def test_regenerate_returns_a_new_secret_on_9_1(tmp_path):
    node = make_node(tmp_path / "n")
    old = with_token(node, "--comment", "mon")
    res = run(node, "user", "token", "modify", "monitor@pve", "monitoring", "--regenerate", "1",
              "--output-format", "json")
    assert res.rc == 0, res.err
    data = json.loads(res.out)
    assert data == {"comment": "mon", "expire": 0, "full-tokenid": "monitor@pve!monitoring", "privsep": 1,
                    "value": data["value"]}
    assert data["value"] != old
    assert node.token_cfg() == f"monitor@pve!monitoring {data['value']}\n"
    plain = run(node, "user", "token", "modify", "monitor@pve", "monitoring", "--regenerate", "0",
                "--output-format", "json")
    assert json.loads(plain.out) == {"comment": "mon", "expire": 0, "privsep": 1}


def test_delete_comment_only_from_9_0_4(tmp_path):
    old = make_node(tmp_path / "old", access_control="9.0.3")
    with_token(old, "--comment", "x")
    res = run(old, "user", "token", "modify", "monitor@pve", "monitoring", "--delete", "comment")
    assert res.rc == 255 and res.err.startswith("Unknown option: delete\n400 unable to parse option\n")
    new = make_node(tmp_path / "new", access_control="9.0.4")
    with_token(new, "--comment", "x")
    res = run(new, "user", "token", "modify", "monitor@pve", "monitoring", "--delete", "comment",
              "--output-format", "json")
    assert (res.rc, json.loads(res.out)) == (0, {"expire": 0, "privsep": 1})
    assert "token:monitor@pve!monitoring:0:1::\n" in new.user_cfg()
