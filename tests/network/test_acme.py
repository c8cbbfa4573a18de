"""ACME end to end across the two namespaces: every node serves a certificate from a public CA's
stand-in that names only its FQDN (no IP). The default config (pveproxy_url on 127.0.0.1) must
verify the token over TLS, and the monitoring host, which knows the node's name through its own
/etc/hosts (`ip netns exec` binds /etc/netns/<ns>/hosts over /etc/hosts), must pass --check
with the system's CAs (SSL_CERT_FILE stands in for the public CA in the system store)."""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Dict

import pytest
import yaml

from harness import NODE_IP, OTHER_IP

PORT = "8117"
FQDN = "pve1.example.com"


@contextlib.contextmanager
def etc_files(prefix, files: Dict[str, str]):
    """Files under /etc/netns/<ns>/ that `ip netns exec` shows the namespace as /etc/<name>."""
    base = Path("/etc/netns")
    made_base = not base.exists()
    ns_etc = base / prefix[-1]
    ns_etc.mkdir(parents=True)
    try:
        for name, text in files.items():
            (ns_etc / name).write_text(text)
        yield
    finally:
        shutil.rmtree(ns_etc)
        if made_base:  # leave the machine's /etc as it was, unless a parallel run uses it now
            with contextlib.suppress(OSError):
                base.rmdir()


# A resolver that fails at once: nothing answers DNS inside the namespace.
NO_DNS = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
HOSTS = f"127.0.0.1 localhost\n{NODE_IP} {FQDN}\n"


@pytest.fixture
def acme_node(new_node, monkeypatch):
    """acme_node(**create_args): a seeded node whose nodes serve ACME certificates, the public
    CA's stand-in trusted as the system's CAs are."""
    def make(**kw):
        node = new_node(**kw)
        node.install_acme_cert(["pve1", "pve2", "pve3"] if kw.get("cluster") else None)
        monkeypatch.setenv("SSL_CERT_FILE", str(node.public_ca_pem))
        return node
    return make


@pytest.fixture
def claim_with_check(serve_node, claim_on_mon, hosts, tmp_path):
    """claim_with_check(node, etc): bootstrap (default config) and claim with --check while the
    monitoring host's /etc holds `etc`; (claim result, bootstrap, output)."""
    def run(node, etc: Dict[str, str]):
        out = tmp_path / "mon" / "pve.yml"
        out.parent.mkdir()
        with serve_node(node) as served, etc_files(hosts["mon"], etc):
            assert served.url == "https://127.0.0.1:8006"  # pvemond's default pveproxy_url
            r, b, rc = claim_on_mon(served.config, PORT, "--format", "pve-exporter", "-o", str(out), "--check")
        assert rc == 0, b.stderr
        return r, b, out
    return run


@pytest.mark.parametrize("cluster", [None, "prod"], ids=["standalone", "cluster"])
def test_acme_node_default_config_check_green(acme_node, claim_with_check, cluster):
    node = acme_node(cluster=cluster)
    r, b, out = claim_with_check(node, {"hosts": HOSTS, "resolv.conf": NO_DNS})
    assert r.returncode == 0, r.stderr
    assert f"check: https://{FQDN}:8006/api2/json: Proxmox VE" in r.stderr
    [module] = yaml.safe_load(out.read_text()).values()  # named pve1, or the cluster's name
    assert module["verify_ssl"] is True  # system CAs, no CA file
    assert not list(out.parent.rglob("*.pem"))  # no CA file: the system's CAs verify
    assert "monitoring@pve!monitoring" in node.user_cfg()  # verified, so kept
    assert "IP address mismatch" not in b.stderr


def test_cluster_payload_names_every_node_by_its_certificate(acme_node, serve_node, claim_on_mon, tmp_path):
    node = acme_node(cluster="prod")
    out = tmp_path / "pve.json"
    with serve_node(node) as served:
        r, b, rc = claim_on_mon(served.config, PORT, "--format", "json", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert rc == 0, b.stderr
    payload = yaml.safe_load(out.read_text())
    urls = [n["url"] for n in payload["nodes"]]
    assert urls == [f"https://pve{i}.example.com:8006/api2/json" for i in (1, 2, 3)], payload["nodes"]
    assert payload["trust"] == "system"


def test_check_says_what_to_add_when_the_name_does_not_resolve(acme_node, claim_with_check):
    r, _, out = claim_with_check(acme_node(), {"hosts": "127.0.0.1 localhost\n", "resolv.conf": NO_DNS})
    assert r.returncode == 11
    assert (f"check failed: this host cannot resolve {FQDN}, the name the node's certificate "
            f"covers: add it to DNS or add the line '{NODE_IP} {FQDN}' to /etc/hosts") in r.stderr
    assert out.exists()  # the config is written; only the name is missing here


def test_check_says_what_to_fix_when_the_name_points_elsewhere(acme_node, claim_with_check):
    stale = f"127.0.0.1 localhost\n{OTHER_IP} {FQDN}\n"  # an old address: nothing on 8006 there
    r, _, _ = claim_with_check(acme_node(), {"hosts": stale, "resolv.conf": NO_DNS})
    assert r.returncode == 11
    assert (f"check failed: this host cannot reach {FQDN} port 8006 (the name the node's "
            f"certificate covers; the node's address is {NODE_IP}): point {FQDN} at {NODE_IP} in "
            "DNS or /etc/hosts") in r.stderr
