"""A cluster CA without keyUsage (every PVE 8 cluster; PVE 9 clusters installed before
pve-cluster 9.1.2): strict clients reject it, so pvemond re-issues it for the same key and hands
that out. Proven with OpenSSL's -x509_strict and Python 3.13's default context."""
from __future__ import annotations

import subprocess

import pytest

from pvemond.pve import strictca
from pvesim.testing import make_node
from strict_python import python313

LEGACY = [pytest.param(dict(pve=8), id="pve8"),
          pytest.param(dict(pve=9, ca_key_usage=False), id="pve9-upgraded")]

CONNECT = """\
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
with socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=10) as raw:
    try:
        ctx.wrap_socket(raw, server_hostname="127.0.0.1").close()
    except ssl.SSLCertVerificationError as exc:
        sys.exit(exc.verify_message)
"""


def openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True)


def x509(path, *what: str) -> str:
    return openssl("x509", "-in", str(path), "-noout", *what).stdout


@pytest.fixture(params=LEGACY)
def legacy(request, tmp_path):
    return make_node(tmp_path / "node", cluster="prod", **request.param)


def test_every_node_certificate_verifies_strictly_against_the_reissue(legacy, tmp_path):
    assert strictca.lacks_key_usage(legacy.ca_pem)
    strict = strictca.strict_ca(str(legacy.pve_dir), str(tmp_path / "state"))
    assert strict != legacy.ca_pem and not strictca.lacks_key_usage(strict)
    for name in ("pve1", "pve2", "pve3"):
        leaf = str(legacy.pve_dir / "nodes" / name / "pve-ssl.pem")
        old = openssl("verify", "-x509_strict", "-CAfile", str(legacy.ca_pem), leaf)
        assert old.returncode != 0 and "CA cert does not include key usage extension" in old.stderr
        new = openssl("verify", "-x509_strict", "-CAfile", str(strict), leaf)
        assert new.returncode == 0, new.stderr
    same = ("-subject", "-serial", "-dates", "-pubkey", "-ext", "subjectKeyIdentifier")
    assert [x509(strict, w) for w in same] == [x509(legacy.ca_pem, w) for w in same]
    assert "Certificate Sign, CRL Sign" in x509(strict, "-ext", "keyUsage")
    assert "CA:TRUE" in x509(strict, "-ext", "basicConstraints")


def test_python_313_default_context_accepts_only_the_reissue(legacy, tmp_path):
    strict = strictca.strict_ca(str(legacy.pve_dir), str(tmp_path / "state"))
    with legacy.start_proxy() as proxy:
        def connect(ca):
            return subprocess.run([python313(), "-c", CONNECT, str(ca), str(proxy.port)],
                                  capture_output=True, text=True, timeout=60)
        old = connect(legacy.ca_pem)
        assert old.returncode != 0 and "CA cert does not include key usage extension" in old.stderr
        new = connect(strict)
        assert new.returncode == 0, new.stderr


def test_a_ca_with_key_usage_is_handed_out_as_it_is(tmp_path):
    fresh = make_node(tmp_path / "node", pve=9)
    assert strictca.strict_ca(str(fresh.pve_dir), str(tmp_path / "state")) == fresh.ca_pem
    assert not (tmp_path / "state").exists()


def test_reissue_is_kept_until_the_cluster_ca_changes(legacy, tmp_path):
    state = str(tmp_path / "state")
    first = strictca.strict_ca(str(legacy.pve_dir), state)
    stamp = first.stat().st_mtime_ns
    assert strictca.strict_ca(str(legacy.pve_dir), state).stat().st_mtime_ns == stamp
    key = legacy.pve_dir / "priv" / "pve-root-ca.key"
    key.rename(key.with_suffix(".gone"))  # not root, or not this cluster's CA key: plain CA
    legacy.ca_pem.write_text(legacy.ca_pem.read_text() + "\n")
    assert strictca.strict_ca(str(legacy.pve_dir), state) == legacy.ca_pem
