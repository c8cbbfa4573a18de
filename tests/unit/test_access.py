"""The converge plan, as pure logic: state in, steps out."""
import pytest

from pvemond import access, config
from pvemond.pve.node import PveVersion
from pvemond.pve.usercfg import parse

NOW = 1_800_000_000
D = access.Desired.from_config(config.AccessConfig())
PRIVS = "Datastore.Audit,SDN.Audit,Sys.Audit,VM.Audit"
CONVERGED = f"""\
user:monitoring@pve:1:0::::PVE monitoring::
token:monitoring@pve!monitoring:0:0::
role:monitoring:{PRIVS}:
acl:1:/:monitoring@pve:monitoring:
"""


def steps(text: str, desired=D, mint=True):
    return {s.part: s for s in access.plan(parse(text), desired, mint=mint, now=NOW).steps}


def test_fresh_node_plans_the_four_writes_in_order():
    p = access.plan(parse(""), D, mint=True, now=NOW)
    assert [s.part for s in p.steps] == ["role", "user", "acl", "token"]
    assert [s.change for s in p.steps] == ["create"] * 4
    assert [op[0] for s in p.steps for op in s.ops] == ["role_add", "user_add", "acl_modify",
                                                        "token_mint"]
    assert p.writes == 4


def test_converged_node_needs_only_the_token():
    s = steps(CONVERGED)
    assert [s[k].change for k in ("role", "user", "acl")] == ["ok"] * 3
    assert s["token"].change == "mint" and s["token"].findings == ()
    assert steps(CONVERGED, mint=False)["token"].ops == ()


def test_role_missing_and_extra_privileges_are_replaced():
    s = steps(CONVERGED.replace(PRIVS, "Sys.Audit,VM.Allocate,VM.Audit"))["role"]
    assert s.change == "repair"
    assert any("lacks Datastore.Audit, SDN.Audit" in f for f in s.findings)
    assert any("also grants VM.Allocate" in f for f in s.findings)
    assert s.ops == (("role_set_privs", "monitoring", sorted(D.privileges)),)


def test_acl_only_on_a_sub_path():
    s = steps(CONVERGED.replace("acl:1:/:", "acl:1:/vms/100:"))["acl"]
    assert s.change == "repair"
    assert "only on /vms/100" in s.findings[0]
    assert s.ops[0][:3] == ("acl_modify", "/", "monitoring")
    assert s.ops[0][3]["users"] == ["monitoring@pve"]


def test_acl_without_propagate():
    s = steps(CONVERGED.replace("acl:1:/:", "acl:0:/:"))["acl"]
    assert "does not propagate" in s.findings[0] and s.ops[0][3]["propagate"] is True


def test_disabled_and_expired_user():
    s = steps(CONVERGED.replace("user:monitoring@pve:1:0:", "user:monitoring@pve:0:1600000000:"))
    assert s["user"].change == "repair"
    assert any("disabled" in f for f in s["user"].findings)
    assert any("expired on 2020-09-13" in f for f in s["user"].findings)
    assert s["user"].ops == (("user_enable", "monitoring@pve"),)


def test_privsep_token_drift_is_named_and_fixed_in_place():
    text = CONVERGED.replace("token:monitoring@pve!monitoring:0:0::", "token:monitoring@pve!monitoring:0:1::")
    s = steps(text, mint=False)["token"]
    assert "privsep 1, wanted 0" in s.findings[0]
    assert s.ops == (("token_modify", "monitoring@pve", "monitoring",
                      {"privsep": False, "expire": 0}),)
    minting = steps(text)["token"]
    assert minting.change == "repair" and minting.ops[0][0] == "token_mint"


def test_expired_token():
    text = CONVERGED.replace("token:monitoring@pve!monitoring:0:0", "token:monitoring@pve!monitoring:1600000000:0")
    assert "expired on" in steps(text, mint=False)["token"].findings[0]


def test_privsep_1_wants_the_paired_token_acl_after_the_token():
    d = access.Desired.from_config(config.AccessConfig(), privsep=True)
    fresh = access.plan(parse(""), d, mint=True, now=NOW)
    assert [s.part for s in fresh.steps] == ["role", "user", "token", "acl"]
    acl = fresh.steps[-1].ops[0][3]
    assert acl["users"] == ["monitoring@pve"] and acl["tokens"] == ["monitoring@pve!monitoring"]
    existing = CONVERGED.replace("!monitoring:0:0", "!monitoring:0:1")
    s = steps(existing, d)["acl"]
    assert "no ACL of its own" in s.findings[0]
    assert s.ops[0][3] == {"users": [], "tokens": ["monitoring@pve!monitoring"], "propagate": True}


def test_privsep_1_without_token_and_without_mint_only_fixes_the_user():
    d = access.Desired.from_config(config.AccessConfig(), privsep=True)
    s = steps("", d, mint=False)["acl"]
    assert s.ops[0][3]["tokens"] == []


@pytest.mark.parametrize("version,priv,ok", [("8.4.1", "VM.Monitor", True),
                                             ("9.1.1", "VM.Monitor", False),
                                             ("9.1.1", "VM.GuestAgent.Audit", True),
                                             ("8.4.1", "VM.GuestAgent.Audit", False)])
def test_privileges_are_checked_against_the_version(version, priv, ok):
    d = access.Desired.from_config(config.AccessConfig(), privileges=frozenset({priv}))
    if ok:
        access.check(d, PveVersion(version))
    else:
        with pytest.raises(access.PlanError, match=f"Proxmox VE {version}: unknown privilege {priv}"):
            access.check(d, PveVersion(version))
