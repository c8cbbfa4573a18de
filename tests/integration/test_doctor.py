"""pvemond doctor against the simulated node: for each check, a scenario that breaks exactly that
thing. Doctor must name it with its symptom and fix and fail; `--fix` repairs what a converge can;
the rest is repaired by hand as the fix says; then a second doctor run passes.

In-process service (real pveum stand-in, real user.cfg, real pveproxy stand-in over TLS); the CLI
through real gunicorn is in test_admin.py.
"""
from __future__ import annotations

import re
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List
from urllib.parse import urlsplit

import pytest

from harness import free_port, write_config
from pvemond import config
from pvemond.service import NodeService
from pvesim import certs
from pvesim.testing import make_node

PRIVS = "Datastore.Audit,SDN.Audit,Sys.Audit,VM.Audit"
U = "monitoring@pve"


class Site:
    """A simulated node, its pveproxy (restartable on the same port) and pvemond's service."""

    def __init__(self, tmp: Path, pve: int, cluster=None, ca_key_usage=None, **access):
        self.tmp, self.access = tmp, access
        legacy = {} if ca_key_usage is None else {"ca_key_usage": ca_key_usage}
        self.node = make_node(tmp / "node", pve=pve, cluster=cluster, **legacy)
        self.node.set(auth_fail_delay=0.0, no_quorum_delay=0.3)
        self.proxy = self.node.start_proxy()
        self.port = free_port()
        self.svc = self.service()

    def service(self, **access) -> NodeService:
        path = write_config(self.tmp / "pvemond.yaml", self.node, self.proxy.url, self.tmp,
                            claim={"port": self.port, "listen": "127.0.0.1"},
                            access={**self.access, **access})
        return NodeService(config.load(str(path)))

    def restart_proxy(self) -> None:
        port = self.proxy.port
        self.proxy.stop()
        self.proxy = self.node.start_proxy(port=port)

    def bootstrap(self, token: str = None) -> None:
        m = self.svc.mint(caller="test", token=token, rotate=True)
        self.svc.finish_handout(m.handout, caller="test", delivered=True, to="test")

    def doctor(self, fix: bool = False) -> Dict:
        return self.svc.doctor(caller="test", fix=fix)

    def pveum(self, *args: str) -> None:
        self.node.run_pveum(*args)

    def reissue_cert(self, san: List[str], days: int = 730) -> None:
        pve = self.node.pve_dir
        local = self.node.local_dir
        certs.issue_cert(self.node.ca_pem, pve / "priv" / "pve-root-ca.key", local / "pve-ssl.pem",
                         local / "pve-ssl.key", subject="/CN=pve1.example.com", san=san, days=days)


@pytest.fixture
def site(tmp_path, pve):
    s = Site(tmp_path, pve)
    yield s
    s.proxy.stop()


@pytest.fixture
def ready(site):
    """A converged node with one delivered token: every check passes."""
    site.bootstrap()
    assert_passes(site.doctor())
    return site


def check(report: Dict, cid: str) -> Dict:
    return next(c for c in report["checks"] if c["id"] == cid)


def problems(report: Dict) -> List[str]:
    return [f"{c['id']}: {c['status']}: {c['what']}" for c in report["checks"]
            if c["status"] not in ("pass",)]


def assert_passes(report: Dict) -> None:
    assert report["result"] == "pass", problems(report)
    assert all(c["status"] == "pass" for c in report["checks"]), problems(report)


def assert_names(report: Dict, cid: str, status: str, what: str, symptom: str, fix: str) -> Dict:
    c = check(report, cid)
    assert c["status"] == status, (c, problems(report))
    assert what in c["what"] and symptom in c["symptom"] and fix in c["fix"], c
    assert report["result"] == status
    others = [p for p in problems(report) if not p.startswith(f"{cid}:")]
    return {"check": c, "others": others}


# --- what --fix repairs: the access itself, on both PVE generations ---------------------------

FIXABLE = {
    "role lacks privileges": (
        ("role", "modify", "monitoring", "--privs", "VM.Audit"),
        "role", "lacks Datastore.Audit, SDN.Audit, Sys.Audit", "sees less than it should",
        "pveum role modify monitoring --privs " + PRIVS),
    "role grants more": (
        ("role", "modify", "monitoring", "--privs", PRIVS + ",VM.PowerMgmt"),
        "role", "also grants VM.PowerMgmt", "more than monitoring needs", "pveum role modify"),
    "user disabled": (
        ("user", "modify", U, "--enable", "0"),
        "user", "is disabled", "401", "pveum user modify monitoring@pve --enable 1"),
    "user expired": (
        ("user", "modify", U, "--expire", "1600000000"),
        "user", "expired on 2020-09-13", "401", "--expire 0"),
    "ACL only on a sub-path": (
        ("acl", "delete", "/", "--roles", "monitoring", "--users", U),
        "acl", "only on /vms/100, not on /", "403", "pveum acl modify / --roles monitoring --users"),
    "ACL does not propagate": (
        ("acl", "modify", "/", "--roles", "monitoring", "--users", U, "--propagate", "0"),
        "acl", "does not propagate", "empty node and guest lists", "--propagate 1"),
    "privsep turned on": (
        ("user", "token", "modify", U, "monitoring", "--privsep", "1"),
        "token:monitoring", "privsep 1, wanted 0", "403 and empty lists", "--privsep 0"),
    "token expired": (
        ("user", "token", "modify", U, "monitoring", "--expire", "1600000000"),
        "token:monitoring", "expired on 2020-09-13", "401", "pveum user token modify"),
}


@pytest.mark.pve(8, 9)
@pytest.mark.parametrize("scenario", list(FIXABLE))
def test_fix_repairs(ready, scenario):
    argv, cid, what, symptom, fix = FIXABLE[scenario]
    if scenario == "ACL only on a sub-path":
        ready.pveum("acl", "modify", "/vms/100", "--roles", "monitoring", "--users", U)
    ready.pveum(*argv)
    found = assert_names(ready.doctor(), cid, "fail", what, symptom, fix)
    assert found["check"]["fixable"] and "pvemond doctor --fix" in found["check"]["fix"]
    fixed = ready.doctor(fix=True)
    assert fixed["fixed"] and all(s["change"] == "repair" for s in fixed["fixed"]), fixed["fixed"]
    assert_passes(fixed)
    assert_passes(ready.doctor())


def test_privsep_token_made_by_hand_gets_its_own_acl(ready):
    """A privsep token pvemond did not mint keeps privsep: the fix gives it an ACL."""
    ready.pveum("user", "token", "add", U, "grafana", "--privsep", "1")
    assert_names(ready.doctor(), "token:grafana", "fail", "no ACL of its own", "403, empty lists",
                 "--tokens 'monitoring@pve!grafana'")
    assert_passes(ready.doctor(fix=True))
    assert re.search(r"^acl:1:/:[^:]*monitoring@pve!grafana\b[^:]*:monitoring:$", ready.node.user_cfg(), re.M)
    assert "token:monitoring@pve!grafana:0:1:" in ready.node.user_cfg()


def test_the_probe_token_leaves_no_trace(ready):
    before = ready.node.user_cfg(), ready.node.token_cfg()
    ready.doctor()
    assert (ready.node.user_cfg(), ready.node.token_cfg()) == before
    probes = [c["argv"] for c in ready.node.calls() if "pvemond-doctor" in c["argv"]]
    assert probes[-2][:3] == ["user", "token", "add"] and probes[-1][:3] == ["user", "token", "remove"]


# --- what the admin repairs by hand, as the fix says -------------------------------------------

def test_no_token_yet(site):
    report = site.doctor(fix=True)
    assert {s["part"] for s in report["fixed"]} == {"role", "user", "acl"}
    assert_names(report, "tokens", "fail", "no API token yet", "nothing to log in with",
                 "pvemond-bootstrap")
    assert not check(report, "tokens")["fixable"]
    site.bootstrap()
    assert_passes(site.doctor())


def test_not_a_pve_node(ready):
    (ready.node.pve_dir / "local").unlink()
    report = ready.doctor(fix=True)
    assert [c["id"] for c in report["checks"]] == ["node"] and report["fixed"] == []
    assert_names(report, "node", "fail", "pve-cluster is down", "nothing can be set up",
                 "systemctl status pve-cluster")
    (ready.node.pve_dir / "local").symlink_to(f"nodes/{ready.node.nodename}")
    assert_passes(ready.doctor())


def test_privileges_unknown_to_this_version(site):
    # Old guides grant VM.Monitor (write-class, hence the allow); PVE 9 no longer has it.
    site.svc = site.service(privileges=["VM.Audit", "VM.Monitor"], allow_write_privileges=True)
    found = assert_names(site.doctor(), "privileges", "fail", "VM.Monitor was dropped in PVE 9",
                         "refuse to run", "edit access.privileges")
    assert not found["check"]["fixable"]
    site.svc = site.service()
    site.bootstrap()
    assert_passes(site.doctor())


def test_token_expiring_soon_is_a_warning(site):
    soon = int(time.time()) + 5 * 86400
    site.svc = site.service(token_expire=soon)
    site.bootstrap()
    assert_names(site.doctor(), "token:monitoring", "warn", "expires in 5 days",
                 "401 on the monitoring host from then on", "pvemond rotate monitoring")
    site.svc = site.service(token_expire=soon + 90 * 86400)
    site.bootstrap()
    assert_passes(site.doctor())


def test_pveproxy_down(ready):
    port = ready.proxy.port
    ready.proxy.stop()
    report = ready.doctor(fix=True)
    assert_names(report, "pveproxy", "fail", "cannot reach pveproxy", "connection refused",
                 "systemctl restart pveproxy")
    assert check(report, "token_auth")["status"] == check(report, "certificate")["status"] == "skip"
    ready.proxy = ready.node.start_proxy(port=port)
    assert_passes(ready.doctor())


def test_tokens_refused_though_the_config_is_right(ready):
    ready.node.set(token_verify=False)
    found = assert_names(ready.doctor(fix=True), "token_auth", "fail", "refused a freshly minted token",
                         "401 on the monitoring host with the right secret", "pve-cluster")
    assert not found["others"]
    ready.node.set(token_verify=True)
    assert_passes(ready.doctor())


def test_certificate_changed_but_pveproxy_not_restarted(ready):
    ready.reissue_cert(certs.node_san("pve1", "192.0.2.10", "example.com"))
    assert_names(ready.doctor(), "certificate", "fail", "serves a certificate other than",
                 "TLS or pin errors", "systemctl reload-or-restart pveproxy")
    ready.restart_proxy()
    assert_passes(ready.doctor())


def test_certificate_expired(ready):
    ready.reissue_cert(certs.node_san("pve1", "192.0.2.10", "example.com"), days=0)
    ready.restart_proxy()
    assert_names(ready.doctor(), "certificate", "fail", "expired on", "certificate has expired",
                 "pvecm updatecerts --force")
    ready.reissue_cert(certs.node_san("pve1", "192.0.2.10", "example.com"))
    ready.restart_proxy()
    assert_passes(ready.doctor())


def test_certificate_from_an_unknown_ca(ready):
    ready.node.install_custom_cert()
    ready.restart_proxy()
    report = ready.doctor()
    assert_names(report, "certificate", "fail", "issued by neither the cluster CA nor a trusted CA",
                 "TLS verification errors", "pvenode cert delete")
    ready.node.remove_custom_cert()
    ready.restart_proxy()
    assert_passes(ready.doctor())


def test_certificate_from_a_ca_the_system_trusts(ready, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(ready.node.custom_ca_pem))  # a public CA's stand-in
    ready.node.install_custom_cert()
    ready.restart_proxy()
    report = ready.doctor()
    assert_passes(report)
    assert "system trust store (not the cluster CA)" in check(report, "certificate")["what"]


def test_firewall_on_without_rules(ready):
    fw = ready.node.pve_dir / "firewall"
    fw.mkdir(exist_ok=True)
    (fw / "cluster.fw").write_text("[OPTIONS]\n\nenable: 1\n")
    report = ready.doctor()
    proxy_port = urlsplit(ready.proxy.url).port  # pveproxy's port, as node.pveproxy_url says
    assert_names(report, "firewall", "warn", f"drops port {proxy_port}",
                 "timeouts on the monitoring host", f"--dport {proxy_port} ")
    claim = check(report, "claim_port")
    assert claim["status"] == "warn" and f"--dport {ready.port}" in claim["fix"], claim
    host = ready.node.local_dir / "host.fw"
    host.write_text("[RULES]\n\n"
                    f"IN ACCEPT -source 192.0.2.20 -p tcp -dport {proxy_port},{ready.port}\n"
                    "|IN ACCEPT -p tcp -dport 1:65535 # disabled\n")
    assert_passes(ready.doctor())


def test_claim_port_taken(ready):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ready.port))
        squatter.listen()
        assert_names(ready.doctor(), "claim_port", "fail", f"cannot listen on 127.0.0.1 port {ready.port}",
                     "cannot open its claim listener", "claim.port")
    assert_passes(ready.doctor())


@contextmanager
def cluster_site(tmp_path):
    s = Site(tmp_path, 9, cluster="prod")
    try:
        yield s
    finally:
        s.proxy.stop()


def test_no_quorum(tmp_path):
    with cluster_site(tmp_path) as s:
        s.bootstrap()
        assert_passes(s.doctor())
        s.pveum("user", "modify", U, "--enable", "0")
        s.node.set(quorate=False)
        report = s.doctor(fix=True)  # reports; a converge would be refused without quorum
        assert_names(report, "quorum", "fail", "has no quorum", "nothing can be created",
                     "pvecm status")
        assert report["fixed"] == [] and check(report, "user")["status"] == "fail"
        assert check(report, "token_auth")["status"] == "skip"
        s.node.set(quorate=True)
        assert_passes(s.doctor(fix=True))


def test_certificate_without_the_node_address(tmp_path):
    with cluster_site(tmp_path) as s:
        s.bootstrap()
        s.reissue_cert(["DNS:pve1", "IP:127.0.0.1"])
        s.restart_proxy()
        assert_names(s.doctor(), "certificate", "fail", "does not name 192.0.2.10",
                     "hostname mismatch", "pvecm updatecerts --force")
        s.reissue_cert(certs.node_san("pve1", "192.0.2.10", "example.com"))
        s.restart_proxy()
        assert_passes(s.doctor())
