"""pvemond's converge and mint against the genuine pveum, on all four generations: the files
checked are those upstream wrote, and every token is tried over HTTPS against the pveproxy
stand-in reading them."""
from __future__ import annotations

import pytest

from harness import FRESH_USER_CFG, PRIVS
from upnode import calls, clear_calls, failed_runs

U, ROLE = "monitoring@pve", "monitoring"
RE_CREATED = ["user token remove", "user token add"]


def test_fresh_node(site):
    m = site.mint()
    assert [s["change"] for s in m.steps] == ["create"] * 4 and m.how == "added"
    assert site.user_cfg() == FRESH_USER_CFG
    assert site.secrets() == {m.token_id: m.secret.reveal()}
    # the four writes and nothing else: the HTTPS call verifies
    assert calls(site.node) == ["role add monitoring", "user add monitoring@pve", "acl modify /",
                                "user token add"]
    assert failed_runs(site.node) == []
    assert site.status_of(m.token_id, m.secret.reveal()) == 200
    assert set(m.payload["privileges"]) == set(PRIVS.split(","))


def test_converged_node_changes_nothing_but_the_secret(converged, gen):
    before = converged.user_cfg()
    again = converged.mint(rotate=True)
    assert [s["change"] for s in again.steps] == ["ok", "ok", "ok", "mint"]
    assert converged.user_cfg() == before
    if gen.regenerate:
        assert again.how == "regenerated"
        assert calls(converged.node) == ["user token modify"]
    else:  # dpkg says --regenerate is missing: no refused probe, straight to remove + add
        assert again.how == "re-created"
        assert calls(converged.node) == RE_CREATED
    assert failed_runs(converged.node) == []
    old = converged.minted
    assert converged.status_of(old.token_id, old.secret.reveal()) == 401
    assert converged.status_of(again.token_id, again.secret.reveal()) == 200


def test_privsep_1_gets_the_paired_acl(site):
    m = site.mint(privsep=True)
    cfg = site.user_cfg()
    assert "token:monitoring@pve!monitoring:0:1:managed by pvemond:" in cfg
    assert "acl:1:/:monitoring@pve,monitoring@pve!monitoring:monitoring:" in cfg
    assert site.status_of(m.token_id, m.secret.reveal()) == 200


ACL_DELETE = ("acl", "delete", "/", "--roles", ROLE, "--users", U)
DRIFTS = {  # name: (pveum commands that break it, part, finding, change, status before repair)
    "acl only on a sub-path": ([ACL_DELETE, ("acl", "modify", "/vms/100", "--roles", ROLE, "--users", U)],
                               "acl", "only on /vms/100", "repair", 200),
    "role lacks a privilege": ([("role", "modify", ROLE, "--privs", "Sys.Audit,VM.Audit")],
                               "role", "lacks Datastore.Audit, SDN.Audit", "repair", 200),
    "role grants more": ([("role", "modify", ROLE, "--privs", PRIVS + ",VM.PowerMgmt")],
                         "role", "also grants VM.PowerMgmt", "repair", 200),
    "user disabled": ([("user", "modify", U, "--enable", "0")], "user", "is disabled", "repair", 401),
    "user expired": ([("user", "modify", U, "--expire", "1600000000")], "user",
                     "expired on 2020-09-13", "repair", 401),
}


@pytest.mark.parametrize("drift", DRIFTS)
def test_drift_is_found_and_repaired(converged, drift):
    commands, part, finding, change, status = DRIFTS[drift]
    for argv in commands:
        converged.pveum(*argv)
    token = converged.minted
    assert converged.status_of(token.token_id, token.secret.reveal()) == status
    assert any(finding in f for f in converged.svc.status()["access"]["findings"])
    clear_calls(converged.node)
    result = converged.svc.converge(caller="test")
    step = next(s for s in result["steps"] if s["part"] == part)
    assert step["change"] == change and any(finding in f for f in step["findings"])
    assert len(calls(converged.node)) == 1  # one write repairs it
    assert converged.svc.status()["access"]["findings"] == []
    cfg = converged.user_cfg()
    assert FRESH_USER_CFG.split("acl:")[0] in cfg and "acl:1:/:monitoring@pve:monitoring:" in cfg
    assert converged.status_of(token.token_id, token.secret.reveal()) == 200
