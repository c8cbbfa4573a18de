"""pve-cluster stopped: /etc/pve is an empty mountpoint and pveum dies with ipcc errors, exit 111
(reference/node.md). pvemond names pve-cluster and `systemctl status pve-cluster`, changes
nothing, and doctor offers no --fix until it is back."""
from __future__ import annotations

import pytest

from harness import free_port, run_cli
from pvemond.config import load
from pvemond.pve import pveum as P
from pvemond.service import NodeService, ServiceError

UPSTREAM_STDERR = ("ipcc_send_rec[1] failed: Connection refused\n"
                   "ipcc_send_rec[2] failed: Connection refused\n"
                   "ipcc_send_rec[3] failed: Connection refused\n"
                   "Unable to load access control list: Connection refused\n")
SENTENCE = "pve-cluster is down"
FIX = "systemctl status pve-cluster"


def test_simulator_stops_and_starts_pmxcfs(node):
    before = node.user_cfg()
    node.stop_pmxcfs()
    assert list(node.pve_dir.iterdir()) == []  # the bare mountpoint
    r = node.run_pveum("user", "list", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (111, "", UPSTREAM_STDERR)
    node.start_pmxcfs()
    assert node.run_pveum("user", "list").returncode == 0 and node.user_cfg() == before


def test_classified_from_upstream_text():
    err = P.classify("user token add", UPSTREAM_STDERR, 111)
    assert isinstance(err, P.PmxcfsDown) and err.exit_code == 111
    assert SENTENCE in str(err) and FIX in str(err) and "ipcc" not in str(err)


def test_bootstrap_names_pve_cluster_and_runs_nothing(node, config, daemon):
    node.stop_pmxcfs()
    r = run_cli("bootstrap", "--listen", "127.0.0.1", "--port", str(free_port()), config=config)
    assert r.returncode != 0
    assert SENTENCE in r.stderr and FIX in r.stderr, r.stderr
    assert node.calls() == []
    node.start_pmxcfs()
    assert "monitoring@pve" not in node.user_cfg()


def test_pmxcfs_dying_under_a_run_changes_nothing(node, config):
    """/etc/pve still looked mounted when checked; pveum is the one that meets the dead socket."""
    svc = service(config)
    before = node.user_cfg()
    node.set(pmxcfs=False)
    with pytest.raises(ServiceError) as err:
        svc.mint(caller="test")
    assert err.value.code == "pmxcfs_down" and err.value.status == 503
    assert SENTENCE in err.value.detail and FIX in err.value.detail
    assert all(c["rc"] == 111 for c in node.calls()) and len(node.calls()) == 1
    node.set(pmxcfs=True)
    assert node.user_cfg() == before


def test_doctor_fails_node_and_fixes_nothing(node, config):
    svc = service(config)
    node.stop_pmxcfs()
    report = svc.doctor(caller="test", fix=True)
    assert [(c["id"], c["status"]) for c in report["checks"]] == [("node", "fail")]
    assert report["fixed"] == [] and not report["checks"][0]["fixable"]
    assert SENTENCE in report["checks"][0]["what"] and FIX in report["checks"][0]["fix"]
    assert node.calls() == []
    node.start_pmxcfs()


def service(path) -> NodeService:
    return NodeService(load(str(path)))
