"""pvemond doctor and doctor --fix against the genuine pveum, on all four generations."""
from __future__ import annotations

from typing import Dict

U = "monitoring@pve"


def failing(report: Dict) -> Dict[str, Dict]:
    return {c["id"]: c for c in report["checks"] if c["status"] != "pass"}


def test_converged_node_passes_and_the_probe_leaves_no_trace(converged):
    before = converged.user_cfg(), converged.node.token_cfg()
    report = converged.doctor()
    assert report["result"] == "pass", failing(report)
    assert (converged.user_cfg(), converged.node.token_cfg()) == before


def test_fix_repairs_every_drift_at_once(converged):
    converged.pveum("role", "modify", "monitoring", "--privs", "VM.Audit")
    converged.pveum("user", "modify", U, "--enable", "0")
    converged.pveum("acl", "delete", "/", "--roles", "monitoring", "--users", U)
    converged.pveum("acl", "modify", "/vms/100", "--roles", "monitoring", "--users", U)
    converged.pveum("user", "token", "modify", U, "monitoring", "--privsep", "1")
    found = failing(converged.doctor())
    assert {"role", "user", "acl", "token:monitoring"} <= set(found), found
    assert all(found[c]["fixable"] for c in ("role", "user", "acl", "token:monitoring"))
    fixed = converged.doctor(fix=True)
    assert {s["part"] for s in fixed["fixed"]} >= {"role", "user", "acl", "token"}, fixed["fixed"]
    assert fixed["result"] == "pass", failing(fixed)
    assert "token:monitoring@pve!monitoring:0:0:" in converged.user_cfg()
    token = converged.minted
    assert converged.status_of(token.token_id, token.secret.reveal()) == 200


def test_fix_on_a_fresh_node_sets_up_all_but_the_token(site):
    report = site.doctor(fix=True)
    assert {s["part"] for s in report["fixed"]} == {"role", "user", "acl"}
    assert failing(report)["tokens"]["fixable"] is False
    site.bootstrap()
    report = site.doctor()
    assert report["result"] == "pass", failing(report)
