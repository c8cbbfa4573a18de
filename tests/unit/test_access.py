"""The converge plan, as pure logic: state in, steps out."""
import pytest

from pvemond import access, config
from pvemond.pve import pveum as P
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
    assert [str(c) for s in p.steps for c in s.commands] == [
        f"pveum role add monitoring --privs {PRIVS}",
        "pveum user add monitoring@pve --comment 'PVE monitoring (managed by pvemond)' --enable 1 "
        "--expire 0",
        "pveum acl modify / --roles monitoring --users monitoring@pve --propagate 1",
        "pveum user token add monitoring@pve monitoring --privsep 0 --expire 0 "
        "--comment 'managed by pvemond' --output-format json"]
    assert isinstance(p.steps[-1].ops[0], access.Mint) and p.writes == 4


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
    assert [str(c) for c in s.commands] == [f"pveum role modify monitoring --privs {PRIVS}"]


def test_acl_only_on_a_sub_path():
    s = steps(CONVERGED.replace("acl:1:/:", "acl:1:/vms/100:"))["acl"]
    assert s.change == "repair"
    assert "only on /vms/100" in s.findings[0]
    assert s.commands[0].args == ("acl", "modify", "/", "--roles", "monitoring",
                                  "--users", "monitoring@pve", "--propagate", "1")


def test_acl_without_propagate():
    s = steps(CONVERGED.replace("acl:1:/:", "acl:0:/:"))["acl"]
    assert "does not propagate" in s.findings[0] and s.commands[0].args[-2:] == ("--propagate", "1")


def test_disabled_and_expired_user():
    s = steps(CONVERGED.replace("user:monitoring@pve:1:0:", "user:monitoring@pve:0:1600000000:"))
    assert s["user"].change == "repair"
    assert any("disabled" in f for f in s["user"].findings)
    assert any("expired on 2020-09-13" in f for f in s["user"].findings)
    assert [str(c) for c in s["user"].commands] == [
        "pveum user modify monitoring@pve --enable 1 --expire 0"]


def test_privsep_token_drift_is_named_and_fixed_in_place():
    text = CONVERGED.replace("token:monitoring@pve!monitoring:0:0::", "token:monitoring@pve!monitoring:0:1::")
    s = steps(text, mint=False)["token"]
    assert "privsep 1, wanted 0" in s.findings[0]
    assert [str(c) for c in s.commands] == [
        "pveum user token modify monitoring@pve monitoring --privsep 0 --expire 0 --output-format json"]
    minting = steps(text)["token"]
    assert minting.change == "repair" and isinstance(minting.ops[0], access.Mint)


def test_expired_token():
    text = CONVERGED.replace("token:monitoring@pve!monitoring:0:0", "token:monitoring@pve!monitoring:1600000000:0")
    assert "expired on" in steps(text, mint=False)["token"].findings[0]


def test_privsep_1_wants_the_paired_token_acl_after_the_token():
    d = access.Desired.from_config(config.AccessConfig(), privsep=True)
    fresh = access.plan(parse(""), d, mint=True, now=NOW)
    assert [s.part for s in fresh.steps] == ["role", "user", "token", "acl"]
    assert fresh.steps[-1].commands[0].args[5:9] == ("--users", "monitoring@pve",
                                                     "--tokens", "monitoring@pve!monitoring")
    existing = CONVERGED.replace("!monitoring:0:0", "!monitoring:0:1")
    s = steps(existing, d)["acl"]
    assert "no ACL of its own" in s.findings[0]
    assert s.commands[0].args[5:] == ("--tokens", "monitoring@pve!monitoring", "--propagate", "1")


def test_privsep_1_without_token_and_without_mint_only_fixes_the_user():
    d = access.Desired.from_config(config.AccessConfig(), privsep=True)
    s = steps("", d, mint=False)["acl"]
    assert "--tokens" not in s.commands[0].args


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


# --- the mint: its commands known from the capability, run as shown ---------------------------

def mint_commands(regenerate, privsep=False, text=CONVERGED):
    d = access.Desired.from_config(config.AccessConfig(), privsep=privsep)
    step = {s.part: s for s in access.plan(parse(text), d, mint=True, now=NOW,
                                           regenerate=regenerate).steps}["token"]
    return [" ".join(c.args[:3]) for c in step.commands]


def test_rotation_regenerates_where_pveum_can_else_removes_and_adds():
    assert mint_commands(True) == ["user token modify"]
    assert mint_commands(None) == ["user token modify"]  # unknown: tried once, first
    assert mint_commands(False) == ["user token remove", "user token add"]
    sep = CONVERGED.replace("!monitoring:0:0", "!monitoring:0:1").replace(
        "acl:1:/:monitoring@pve:", "acl:1:/:monitoring@pve,monitoring@pve!monitoring:")
    assert mint_commands(False, privsep=True, text=sep) == [
        "user token remove", "user token add", "acl modify /"]  # the token's ACL comes back


class Recorder:
    """A Pveum that records the commands it is given; mints answer a token value."""

    def __init__(self, refuse_regenerate=False):
        self.ran, self.refuse = [], refuse_regenerate

    def execute(self, cmd):
        self.ran.append(cmd)

    def mint(self, cmd, userid, tokenid, privsep):
        self.ran.append(cmd)
        if self.refuse and "--regenerate" in cmd.args:
            raise P.UnknownOption(str(cmd), "Unknown option: regenerate")
        return P.MintedToken(f"{userid}!{tokenid}", P.Secret("s" * 36), privsep)


@pytest.mark.parametrize("text, regenerate", [("", False), (CONVERGED, True), (CONVERGED, False)])
def test_the_applier_runs_exactly_the_planned_commands(text, regenerate):
    plan = access.plan(parse(text), D, mint=True, now=NOW, regenerate=regenerate)
    pveum = Recorder()
    applied = access.Applier(pveum, access.Capabilities(regenerate)).apply(plan)
    assert pveum.ran == [c for s in plan.steps for c in s.commands]
    assert applied.how == ("added" if not text else "regenerated" if regenerate else "re-created")


def test_unknown_capability_is_tried_once_and_remembered():
    caps, pveum = access.Capabilities(), Recorder(refuse_regenerate=True)
    plan = access.plan(parse(CONVERGED), D, mint=True, now=NOW, regenerate=caps.regenerate)
    assert access.Applier(pveum, caps).apply(plan).how == "re-created"
    assert [" ".join(c.args[:3]) for c in pveum.ran] == [
        "user token modify", "user token remove", "user token add"]
    assert caps.regenerate is False


@pytest.mark.parametrize("pve, access_control, regenerate", [
    ("9.1.1", "9.1.1", True), ("9.1.1", "9.1.0", True), ("9.0.11", "9.0.7", False),
    ("8.4.1", "8.2.3", False), ("9.1.1", "1:9.2.0+pmx1", True),
    ("8.4.1", None, False), ("9.1.1", None, None)])
def test_capabilities_known_from_the_installed_package(pve, access_control, regenerate):
    caps = access.Capabilities()
    caps.know(PveVersion(pve), access_control)
    assert caps.regenerate is regenerate
