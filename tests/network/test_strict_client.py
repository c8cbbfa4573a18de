"""A Debian 13 monitoring host (Python 3.13: VERIFY_X509_STRICT) claims from a cluster whose CA
has no keyUsage (PVE 8; PVE 9 installed before pve-cluster 9.1.2): the CA in the payload is the
node's strict re-issue, so --check and the config it writes verify TLS there."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from harness import NODE_IP
from strict_python import python313

PORT = "8118"


@pytest.mark.parametrize("kind", [dict(pve=8), dict(pve=9, ca_key_usage=False)],
                         ids=["pve8", "pve9-upgraded"])
def test_python313_claim_check_against_a_legacy_ca_cluster(new_node, serve_node, claim_on_mon, tmp_path, kind):
    interpreter = python313()
    node = new_node(cluster="prod", **kind)
    out = tmp_path / "mon" / "pve.yml"
    out.parent.mkdir()
    with serve_node(node) as served:
        r, b, rc = claim_on_mon(served.config, PORT, "--format", "pve-exporter", "-o", str(out), "--check",
                                python=interpreter)
    assert rc == 0, b.stderr
    assert r.returncode == 0, r.stderr
    assert f"check: https://{NODE_IP}:8006/api2/json: Proxmox VE" in r.stderr
    [module] = yaml.safe_load(out.read_text()).values()
    ca_file = out.parent / module["verify_ssl"]
    assert "Certificate Sign, CRL Sign" in _openssl_text(ca_file)


def _openssl_text(path) -> str:
    return subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-ext", "keyUsage"],
                          capture_output=True, text=True, check=True).stdout
