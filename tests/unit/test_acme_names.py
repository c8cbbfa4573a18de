"""ACME certificates name no IP: which name pvemond verifies its own pveproxy against, and which
name the payload gives each node (pve/node.py), on the simulator's ACME-style certificates."""
from __future__ import annotations

import subprocess
from pathlib import Path

from pvemond.pve import node as N
from pvemond.pve import served as S
from pvesim import certs
from pvesim.testing import make_node


def san_text(pem: Path) -> str:
    return subprocess.run(["openssl", "x509", "-in", str(pem), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, check=True).stdout


def test_acme_certificate_names_only_the_fqdn(tmp_path):
    node = make_node(tmp_path / "n")
    node.install_acme_cert()
    pem = node.local_dir / "pveproxy-ssl.pem"
    assert san_text(pem).split("\n")[1].strip() == "DNS:pve1.example.com"
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(node.public_ca_pem), str(pem)],
                            capture_output=True, text=True)
    assert verify.stdout.strip().endswith("OK"), verify.stderr
    assert S.read(pem).sans == (("DNS", "pve1.example.com"),)


def test_standalone_verifies_its_fqdn_and_hands_it_out(tmp_path):
    node = make_node(tmp_path / "n")
    pve = str(node.pve_dir)
    assert S.local_tls_name(pve, "https://127.0.0.1:8006") is None  # PVE's own certificate
    node.install_acme_cert()
    assert S.local_tls_name(pve, "https://127.0.0.1:8006") == "pve1.example.com"
    assert S.local_tls_name(pve, "https://pve1.example.com:8006") is None
    [ep] = S.endpoints(N.read_members(pve), pve)
    assert ep == {"name": "pve1", "address": "pve1.example.com", "ip": "192.0.2.10",
                  "url": "https://pve1.example.com:8006/api2/json"}


def test_cluster_each_node_by_its_own_certificate(tmp_path):
    node = make_node(tmp_path / "c", cluster="prod")
    pve = str(node.pve_dir)
    node.install_acme_cert(["pve1", "pve2"])  # pve3 keeps PVE's own certificate
    eps = {e["name"]: e for e in S.endpoints(N.read_members(pve), pve)}
    assert eps["pve1"]["url"] == "https://pve1.example.com:8006/api2/json"
    assert eps["pve2"] == {"name": "pve2", "address": "pve2.example.com", "ip": "192.0.2.11",
                           "url": "https://pve2.example.com:8006/api2/json"}
    assert "ip" not in eps["pve3"] and eps["pve3"]["address"] != "pve3.example.com"


def test_custom_certificate_with_the_ip_keeps_the_ip(tmp_path):
    node = make_node(tmp_path / "n")
    node.install_custom_cert()  # IP SANs, as `pvenode cert set` with a private CA can have
    pve = str(node.pve_dir)
    assert S.local_tls_name(pve, "https://127.0.0.1:8006") is None
    [ep] = S.endpoints(N.read_members(pve), pve)
    assert ep["address"] == "192.0.2.10" and "ip" not in ep


def test_wildcard_is_applied_to_the_node_name(tmp_path):
    ca, key = tmp_path / "ca.pem", tmp_path / "ca.key"
    certs.create_ca(ca, key, bits=2048)
    leaf = tmp_path / "leaf.pem"
    certs.issue_cert(ca, key, leaf, tmp_path / "leaf.key", subject="/CN=*.example.com",
                     san=["DNS:*.example.com"])
    assert S.read(leaf).tls_name("127.0.0.1", "pve2") == "pve2.example.com"
