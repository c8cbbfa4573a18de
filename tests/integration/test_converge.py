"""Converge scenarios against the simulated node, PVE 8 and PVE 9 flavours (the service layer,
in-process: real pveum stand-in, real user.cfg, real HTTPS verification)."""
from __future__ import annotations

import dataclasses

import pytest

from harness import FRESH_USER_CFG, PRIVS, token_works
from pvemond import config
from pvemond.service import NodeService, ServiceError

pytestmark = pytest.mark.pve(8, 9)



@pytest.fixture
def service(config) -> NodeService:
    return NodeService(config_load(config))


def config_load(path) -> config.Config:
    return config.load(str(path))


def writes(node) -> list:
    return [c["argv"] for c in node.calls() if c["write"]]


def failed(node) -> list:
    return [c["argv"] for c in node.calls() if c["rc"] != 0]


def call_words(node) -> list:
    return [" ".join(c["argv"][:3]) for c in node.calls()]


def test_fresh_node(service, node, proxy):
    node.clear_calls()
    m = service.mint(caller="test")
    assert node.user_cfg() == FRESH_USER_CFG
    assert [s["change"] for s in m.steps] == ["create"] * 4
    assert m.how == "added"
    # role, user, acl, token: the HTTPS call verifies, no pveum read; nothing refused
    assert call_words(node) == ["role add monitoring", "user add monitoring@pve", "acl modify /",
                                "user token add"]
    assert failed(node) == []
    assert token_works(proxy, node, m.token_id, m.secret.reveal()) == 200
    assert set(m.payload["privileges"]) == set(PRIVS.split(","))


def test_converged_node_changes_nothing_but_the_secret(service, node, proxy, pve):
    first = service.mint(caller="test")
    service.finish_handout(first.handout, caller="test", delivered=True, to="test")
    before = node.user_cfg()
    node.clear_calls()
    with pytest.raises(ServiceError) as kept:  # a delivered token is never re-minted unasked
        service.mint(caller="test")
    assert kept.value.code == "token_exists" and kept.value.status == 409
    assert kept.value.extra["delivered_to"] == "test" and node.calls() == []
    again = service.mint(caller="test", rotate=True)
    assert [s["change"] for s in again.steps] == ["ok", "ok", "ok", "mint"]
    assert node.user_cfg() == before
    words = call_words(node)
    if pve == 9:  # access-control 9.1.x regenerates in place
        assert again.how == "regenerated"
        assert words == ["user token modify"]
    else:
        assert again.how == "re-created"  # no probe: dpkg says access-control 8.x lacks it
        assert words == ["user token remove", "user token add"]
    assert failed(node) == []
    assert token_works(proxy, node, again.token_id, first.secret.reveal()) == 401
    assert token_works(proxy, node, again.token_id, again.secret.reveal()) == 200


@pytest.mark.pve(9)
def test_missing_regenerate_is_known_before_the_first_call(service, node):
    node.set(access_control="9.0.5")  # PVE 9.0/9.1 before libpve-access-control 9.1.0
    h = service.mint(caller="test")
    service.finish_handout(h.handout, caller="test", delivered=True)
    node.clear_calls()
    m = service.mint(caller="test", rotate=True)
    assert m.how == "re-created"
    assert call_words(node) == ["user token remove", "user token add"]  # no refused probe
    assert failed(node) == []


@pytest.mark.pve(9)
def test_without_dpkg_record_pve9_tries_regenerate_once(service, node):
    node.set(access_control="9.0.5")
    node.dpkg_status.unlink()  # no record: the PVE major decides, and 9 may or may not have it
    for name in ("first", "second"):
        h = service.mint(caller="test", token=name)
        service.finish_handout(h.handout, caller="test", delivered=True)
    node.clear_calls()
    h = service.mint(caller="test", token="first", rotate=True)
    assert h.how == "re-created"
    assert call_words(node)[:2] == ["user token modify", "user token remove"]  # tried, refused
    node.clear_calls()
    service.finish_handout(h.handout, caller="test", delivered=True)
    m = service.mint(caller="test", token="second", rotate=True)
    assert m.how == "re-created" and "user token modify" not in call_words(node)


def test_pveum_read_verifies_only_without_https(node, config):
    cfg = config_load(config)
    svc = NodeService(dataclasses.replace(cfg, node=dataclasses.replace(cfg.node, verify_https=False)))
    node.clear_calls()
    m = svc.mint(caller="test")
    assert call_words(node)[-1] == "user token permissions" and len(node.calls()) == 5
    assert set(m.payload["privileges"]) == set(PRIVS.split(","))


ACL_DELETE = ["acl", "delete", "/", "--roles", "monitoring", "--users", "monitoring@pve"]
DRIFTS = {  # name: (pveum commands that break it, part, finding, change)
    "role lacks a privilege": ([["role", "modify", "monitoring", "--privs", "VM.Audit,Sys.Audit"]],
                               "role", "lacks Datastore.Audit, SDN.Audit", "repair"),
    "role grants more": ([["role", "modify", "monitoring", "--privs", PRIVS + ",VM.PowerMgmt"]],
                         "role", "also grants VM.PowerMgmt", "repair"),
    "acl removed": ([ACL_DELETE], "acl", "no ACL gives", "create"),
    "acl only on a sub-path": ([ACL_DELETE, ["acl", "modify", "/vms/100", "--roles", "monitoring",
                                             "--users", "monitoring@pve"]],
                               "acl", "only on /vms/100", "repair"),
    "acl not propagated": ([["acl", "modify", "/", "--roles", "monitoring", "--users",
                             "monitoring@pve", "--propagate", "0"]],
                           "acl", "does not propagate", "repair"),
    "user disabled": ([["user", "modify", "monitoring@pve", "--enable", "0"]], "user",
                      "is disabled", "repair"),
    "user expired": ([["user", "modify", "monitoring@pve", "--expire", "1600000000"]], "user",
                     "expired on 2020-09-13", "repair"),
    "token privsep 1": ([["user", "token", "modify", "monitoring@pve", "monitoring", "--privsep",
                          "1"]], "token", "privsep 1, wanted 0", "repair"),
    "token expired": ([["user", "token", "modify", "monitoring@pve", "monitoring", "--expire",
                        "1600000000"]], "token", "expired on 2020-09-13", "repair"),
}


@pytest.mark.parametrize("drift", DRIFTS)
def test_drift_is_found_and_repaired(service, node, proxy, drift):
    service.mint(caller="test")
    commands, part, finding, change = DRIFTS[drift]
    for args in commands:
        node.run_pveum(*args)
    status = service.status()
    assert any(finding in f for f in status["access"]["findings"]), status["access"]["findings"]
    result = service.converge(caller="test")
    step = next(s for s in result["steps"] if s["part"] == part)
    assert step["change"] == change and any(finding in f for f in step["findings"])
    assert service.status()["access"]["findings"] == []
    assert FRESH_USER_CFG.split("acl:")[0] in node.user_cfg()
    assert "acl:1:/:monitoring@pve:monitoring:" in node.user_cfg()


def test_acl_only_on_a_guest_is_completed(service, node):
    node.run_pveum("role", "add", "monitoring", "--privs", PRIVS)
    node.run_pveum("user", "add", "monitoring@pve")
    node.run_pveum("acl", "modify", "/vms/100", "--roles", "monitoring", "--users", "monitoring@pve")
    plan = service.converge(caller="test", dry_run=True)
    acl = next(s for s in plan["steps"] if s["part"] == "acl")
    assert "only on /vms/100" in acl["findings"][0]
    service.converge(caller="test")
    assert "acl:1:/:monitoring@pve:monitoring:" in node.user_cfg()


def test_privsep_1_gets_the_paired_acl(service, node, proxy):
    m = service.mint(caller="test", privsep=True)
    assert "acl:1:/:monitoring@pve,monitoring@pve!monitoring:monitoring:" in node.user_cfg()
    assert token_works(proxy, node, m.token_id, m.secret.reveal()) == 200


def test_privsep_1_token_keeps_its_acl_when_reminted(service, node, proxy, pve):
    """PVE 8 has no --regenerate: remove + add, and pveum drops the old token's ACL on the
    add. The re-minted token must get it back (else verification fails and it is revoked)."""
    first = service.mint(caller="test", token="grafana", privsep=True)
    service.finish_handout(first.handout, caller="test", delivered=True)
    m = service.mint(caller="test", token="grafana", privsep=True, rotate=True)
    assert m.how == ("re-created" if pve == 8 else "regenerated")
    assert "acl:1:/:monitoring@pve,monitoring@pve!grafana:monitoring:" in node.user_cfg()
    assert token_works(proxy, node, m.token_id, m.secret.reveal()) == 200


def test_dry_run_writes_nothing(service, node):
    node.clear_calls()
    plan = service.converge(caller="test", dry_run=True)
    assert [s["change"] for s in plan["steps"]] == ["create", "create", "create", "ok"]
    assert node.calls() == []


def test_unknown_privilege_is_refused_before_any_write(tmp_path, node, proxy, pve):
    from harness import write_config
    priv = "VM.Monitor" if pve == 9 else "VM.GuestAgent.Audit"
    cfg = write_config(tmp_path / "c.yaml", node, proxy.url, tmp_path,
                       access={"privileges": ["VM.Audit", priv], "allow_write_privileges": True})
    node.clear_calls()
    with pytest.raises(ServiceError) as err:
        NodeService(config_load(cfg)).mint(caller="test")
    assert err.value.code == "unsupported_privilege" and priv in err.value.detail
    assert node.calls() == []


def test_no_quorum_in_a_cluster_is_seen_before_any_pveum_call(tmp_path, pve):
    from harness import write_config
    from pvesim.testing import make_node
    cluster = make_node(tmp_path / "c", pve=pve, cluster="prod")
    cluster.set(quorate=False, no_quorum_delay=0.3)
    cfg = write_config(tmp_path / "c.yaml", cluster, "https://127.0.0.1:1", tmp_path)
    with pytest.raises(ServiceError) as err:
        NodeService(config_load(cfg)).mint(caller="test")
    assert err.value.code == "no_quorum"
    assert "no quorum" in err.value.detail and "run it on a quorate node" in err.value.detail
    assert cluster.calls() == []


def test_no_quorum_reported_by_pveum_changes_nothing(service, node):
    """A standalone node's .members cannot show it: pveum's own error is the truth."""
    before = node.user_cfg()
    node.set(quorate=False)
    with pytest.raises(ServiceError) as err:
        service.mint(caller="test")
    assert err.value.code == "no_quorum" and "run it on a quorate node" in err.value.detail
    assert len(writes(node)) == 1 and node.calls()[0]["rc"] != 0
    assert node.user_cfg() == before


def test_pveum_missing_means_not_a_pve_node(tmp_path, node, proxy):
    from harness import write_config
    cfg = write_config(tmp_path / "c.yaml", node, proxy.url, tmp_path)
    loaded = config_load(cfg)
    loaded = dataclasses.replace(loaded, node=dataclasses.replace(loaded.node,
                                                                  pveum=str(tmp_path / "no-pveum")))
    svc = NodeService(loaded)
    assert svc.health()["pve_node"] is False
    assert "not a Proxmox VE node" in svc.health()["problem"]
    with pytest.raises(ServiceError) as err:
        svc.mint(caller="test")
    assert err.value.code == "not_a_pve_node"


def test_failure_after_the_token_was_minted_leaves_no_token(service, node):
    """privsep 1 adds the token before its ACL; if that ACL fails, the token must go again."""
    node.set(fail_next=[{"match": "acl modify", "stderr": "ACL update failed: boom", "rc": 255}])
    with pytest.raises(ServiceError) as err:
        service.mint(caller="test", privsep=True)
    assert "boom" in err.value.detail
    assert "token:" not in node.user_cfg()
    service.mint(caller="test", privsep=True)  # the next run converges
    assert "monitoring@pve!monitoring" in node.user_cfg()


def test_verification_failure_revokes(service, node, proxy):
    proxy.stop()
    with pytest.raises(ServiceError) as err:
        service.mint(caller="test")
    assert err.value.code == "verification_failed" and "pveproxy" in err.value.detail
    assert "token:" not in node.user_cfg()
