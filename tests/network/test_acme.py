"""ACME end to end across the two namespaces: every node serves a certificate from a public CA's
stand-in that names only its FQDN (no IP). The default config (pveproxy_url on 127.0.0.1) must
verify the token over TLS, and the monitoring host, which knows the node's name through its own
/etc/hosts (`ip netns exec` binds /etc/netns/<ns>/hosts over /etc/hosts), must pass --check
with the system's CAs (SSL_CERT_FILE stands in for the public CA in the system store)."""
from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path
from typing import Dict

import pytest
import yaml

from harness import NODE_IP, OTHER_IP, Bootstrap, Daemon, proxy_on, run_on, write_config
from pvesim.testing import make_node

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
        if made_base:
            base.rmdir()  # leave the machine's /etc as it was


# A resolver that fails at once: nothing answers DNS inside the namespace.
NO_DNS = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
HOSTS = f"127.0.0.1 localhost\n{NODE_IP} {FQDN}\n"


def acme_node(tmp_path, monkeypatch, **kw):
    node = make_node(tmp_path / "node", pve=9, ip=NODE_IP, **kw)
    node.set(auth_fail_delay=0.0, storages=[{"storage": "local", "node": "pve1"}],
             guests=[{"vmid": 100, "name": "web", "type": "qemu", "node": "pve1"}])
    node.install_acme_cert(["pve1", "pve2", "pve3"] if kw.get("cluster") else None)
    monkeypatch.setenv("SSL_CERT_FILE", str(node.public_ca_pem))
    return node


def claim_with_check(hosts, node, tmp_path, etc: Dict[str, str]):
    """Bootstrap (default config) and claim with --check; (claim result, bootstrap, output)."""
    with proxy_on(hosts["node"], node.root) as url:
        assert url == "https://127.0.0.1:8006"  # pvemond's default pveproxy_url
        config = write_config(tmp_path / "pvemond.yaml", node, url, tmp_path,
                              claim={"ttl": 60, "max_attempts": 5})
        with Daemon(config, tmp_path / "daemon.log", prefix=hosts["node"]), \
                etc_files(hosts["mon"], etc):
            b = Bootstrap(config, "--port", PORT, prefix=hosts["node"])
            offer = b.wait_for("claim_open")
            out = tmp_path / "mon" / "pve.yml"
            out.parent.mkdir()
            r = run_on(hosts["mon"], sys.executable, "-m", "pvemond.cli.claim", f"{NODE_IP}:{PORT}",
                       offer["code"], "--pin", offer["pin"], "--format", "pve-exporter", "-o",
                       str(out), "--check", config=config)
            assert b.finish() == 0, b.stderr
    return r, b, out


@pytest.mark.parametrize("cluster", [None, "prod"], ids=["standalone", "cluster"])
def test_acme_node_default_config_check_green(hosts, tmp_path, monkeypatch, cluster):
    node = acme_node(tmp_path, monkeypatch, cluster=cluster)
    r, b, out = claim_with_check(hosts, node, tmp_path, {"hosts": HOSTS, "resolv.conf": NO_DNS})
    assert r.returncode == 0, r.stderr
    assert f"check: https://{FQDN}:8006/api2/json: Proxmox VE" in r.stderr
    [module] = yaml.safe_load(out.read_text()).values()  # named pve1, or the cluster's name
    assert module["verify_ssl"] is True  # system CAs, no CA file
    assert sorted(p.name for p in out.parent.iterdir()) == ["pve.yml"]
    assert "monitoring@pve!monitoring" in node.user_cfg()  # verified, so kept
    assert "IP address mismatch" not in b.stderr


def test_cluster_payload_names_every_node_by_its_certificate(hosts, tmp_path, monkeypatch):
    node = acme_node(tmp_path, monkeypatch, cluster="prod")
    with proxy_on(hosts["node"], node.root) as url:
        config = write_config(tmp_path / "pvemond.yaml", node, url, tmp_path,
                              claim={"ttl": 60, "max_attempts": 5})
        with Daemon(config, tmp_path / "daemon.log", prefix=hosts["node"]):
            b = Bootstrap(config, "--port", PORT, prefix=hosts["node"])
            offer = b.wait_for("claim_open")
            out = tmp_path / "pve.json"
            r = run_on(hosts["mon"], sys.executable, "-m", "pvemond.cli.claim", f"{NODE_IP}:{PORT}",
                       offer["code"], "--pin", offer["pin"], "--format", "json", "-o", str(out),
                       config=config)
            assert r.returncode == 0, r.stderr
            assert b.finish() == 0, b.stderr
    payload = yaml.safe_load(out.read_text())
    urls = [n["url"] for n in payload["nodes"]]
    assert urls == [f"https://pve{i}.example.com:8006/api2/json" for i in (1, 2, 3)], payload["nodes"]
    assert payload["trust"] == "system"


def test_check_says_what_to_add_when_the_name_does_not_resolve(hosts, tmp_path, monkeypatch):
    node = acme_node(tmp_path, monkeypatch)
    r, _, out = claim_with_check(hosts, node, tmp_path,
                                 {"hosts": "127.0.0.1 localhost\n", "resolv.conf": NO_DNS})
    assert r.returncode == 11
    assert (f"check failed: this host cannot resolve {FQDN}, the name the node's certificate "
            f"covers: add it to DNS or add the line '{NODE_IP} {FQDN}' to /etc/hosts") in r.stderr
    assert out.exists()  # the config is written; only the name is missing here


def test_check_says_what_to_fix_when_the_name_points_elsewhere(hosts, tmp_path, monkeypatch):
    node = acme_node(tmp_path, monkeypatch)
    stale = f"127.0.0.1 localhost\n{OTHER_IP} {FQDN}\n"  # an old address: nothing on 8006 there
    r, _, _ = claim_with_check(hosts, node, tmp_path, {"hosts": stale, "resolv.conf": NO_DNS})
    assert r.returncode == 11
    assert (f"check failed: this host cannot reach {FQDN} port 8006 (the name the node's "
            f"certificate covers; the node's address is {NODE_IP}): point {FQDN} at {NODE_IP} in "
            "DNS or /etc/hosts") in r.stderr
