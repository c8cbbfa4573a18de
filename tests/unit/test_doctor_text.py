"""What doctor tells the admin to type: the converge's own command, the configured port."""
from __future__ import annotations

import textwrap

import pytest
import yaml

from pvemond import config, doctor
from pvemond.pve.usercfg import parse

NOW = 1_800_000_000
ROLE = "role:monitoring:Datastore.Audit,SDN.Audit,Sys.Audit,VM.Audit:\n"


def inputs(user_cfg: str, pve_dir: str = "/nonexistent", **access) -> doctor.Inputs:
    cfg = config.parse(yaml.safe_dump({"access": access, "node": {"pve_dir": pve_dir}}))
    return doctor.Inputs(cfg, None, None, None, parse(user_cfg), {}, False, NOW)


def check(i: doctor.Inputs, cid: str) -> doctor.Check:
    return next(c for c in doctor.access_checks(i) if c.id == cid)


@pytest.mark.parametrize("propagate", [True, False])
def test_acl_fix_uses_the_configured_propagate(propagate):
    fix = check(inputs(ROLE + "user:monitoring@pve:1:0::::c::\n", propagate=propagate), "acl").fix
    assert fix.endswith(f"pveum acl modify / --roles monitoring --users monitoring@pve "
                        f"--propagate {int(propagate)})")


def test_a_missing_user_is_added_with_its_comment():
    fix = check(inputs(ROLE, user_comment="PVE monitoring (pvemond)"), "user").fix
    assert "pveum user add monitoring@pve --comment 'PVE monitoring (pvemond)'" in fix


def test_a_privsep_token_gets_its_own_acl_as_the_converge_grants_it():
    cfg = ROLE + textwrap.dedent("""\
        user:monitoring@pve:1:0::::c::
        token:monitoring@pve!monitoring:0:1::
        acl:1:/:monitoring@pve:monitoring:
        """)
    i = inputs(cfg, privsep=True)
    fix = doctor._token_check(i, i.desired("monitoring", privsep=True)).fix
    assert fix.endswith("pveum acl modify / --roles monitoring --tokens "
                        "'monitoring@pve!monitoring' --propagate 1)")


def write_firewall(pve_dir):
    (pve_dir / "firewall").mkdir()
    (pve_dir / "firewall" / "cluster.fw").write_text("[OPTIONS]\n\nenable: 1\n")
    (pve_dir / "nodes" / "pve1").mkdir(parents=True)
    (pve_dir / "nodes" / "pve1" / "host.fw").write_text("")


@pytest.mark.parametrize("url, port", [("https://127.0.0.1:8006", 8006),
                                       ("https://127.0.0.1:9443", 9443),
                                       ("https://pve.example.com/", 443)])
def test_the_firewall_check_uses_the_port_of_pveproxy_url(tmp_path, url, port):
    write_firewall(tmp_path)
    cfg = config.parse(yaml.safe_dump({"node": {"pve_dir": str(tmp_path),
                                                       "pveproxy_url": url}}))
    cluster = type("C", (), {"nodename": "pve1"})()
    c = doctor.firewall(doctor.Inputs(cfg, None, cluster, None, parse(""), {}, False, NOW))
    assert c.status == doctor.WARN and f"--dport {port} " in c.fix and str(port) in c.what
    assert ("management ipset" in c.what) == (port == 8006)
