"""The simulated node on disk (node.md §1, §2, §6) and the SimNode API."""
import datetime as dt
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pvesim import certs
from pvesim.node import TESTS_DIR, SimNode
from pvesim.testing import make_node

CLUSTER_MEMBERS = """\
{
"nodename": "pve1",
"version": 5,
"cluster": { "name": "prod", "version": 3, "nodes": 3, "quorate": 1 },
"nodelist": {
  "pve1": { "id": 1, "online": 1, "ip": "192.0.2.10"},
  "pve2": { "id": 2, "online": 1, "ip": "192.0.2.11"},
  "pve3": { "id": 3, "online": 0}
  }
}
"""


def openssl(*args):
    return subprocess.run(["openssl", *args], check=True, capture_output=True, text=True).stdout


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    return make_node(tmp_path_factory.mktemp("standalone") / "node")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    return make_node(tmp_path_factory.mktemp("cluster") / "node", cluster="prod")


def test_standalone_files(standalone):
    pve = standalone.pve_dir
    assert standalone.pve_dir == standalone.root / "etc/pve" and standalone.nodename == "pve1"
    assert (pve / ".members").read_text() == '{\n"nodename": "pve1",\n"version": 0\n}\n'
    assert json.loads((pve / ".members").read_text()) == {"nodename": "pve1", "version": 0}
    assert standalone.user_cfg() == "user:root@pam:1:0:::root@example.com:::\n\n\n\n\n"
    assert (pve / "priv/token.cfg").read_text() == ""
    assert os.readlink(pve / "local") == "nodes/pve1"
    assert (pve / "local/pve-ssl.pem").is_file() and (pve / "local/pve-ssl.key").is_file()
    assert re.search(r"^pve: pve$", (pve / "domains.cfg").read_text(), re.M)
    assert re.search(r"^pam: pam$", (pve / "domains.cfg").read_text(), re.M)
    assert standalone.ca_pem == pve / "pve-root-ca.pem" and (pve / "priv/pve-root-ca.key").is_file()


def test_pmxcfs_modes(standalone):
    pve = standalone.pve_dir
    assert mode(pve / "priv") == 0o700
    assert mode(pve / "priv/token.cfg") == 0o600 and mode(pve / "priv/pve-root-ca.key") == 0o600
    assert mode(pve / "user.cfg") == 0o640 and mode(pve / "local/pve-ssl.key") == 0o640
    assert mode(pve / "pve-root-ca.pem") == 0o640 and mode(pve / ".members") == 0o440


def test_pvecfg_is_generated_with_literals(standalone):
    text = standalone.pvecfg.read_text()
    assert standalone.pvecfg == standalone.root / "usr/share/perl5/PVE/pvecfg.pm"
    assert text.startswith("package PVE::pvecfg;\n")
    assert "sub version { return '9.1.1'; }" in text and "sub release { return '9.1'; }" in text
    assert "sub package { return 'pve-manager'; }" in text
    assert re.search(r"sub repoid \{ return '[0-9a-f]{16}'; \}", text)
    assert standalone.version_info()["release"] == "9.1"


def test_settings_defaults(standalone):
    knobs = standalone.settings()
    assert {k: knobs[k] for k in ("pve_version", "access_control", "quorate", "no_quorum_delay", "delay",
                                  "auth_fail_delay", "auth_errors", "fail_next", "guests", "storages")} == {
        "pve_version": "9.1.1", "access_control": "9.1.1", "quorate": True, "no_quorum_delay": 10.0,
        "delay": 0.0, "auth_fail_delay": 3.0, "auth_errors": "unified", "fail_next": [], "guests": [],
        "storages": [],
    }
    with pytest.raises(ValueError, match="unknown simulator knob"):
        standalone.set(quorum=False)


def test_open_existing_and_missing(standalone, tmp_path):
    again = SimNode.open(standalone.root)
    assert (again.nodename, again.ip, again.pveum) == ("pve1", "192.0.2.10", standalone.root / "usr/sbin/pveum")
    with pytest.raises(FileNotFoundError):
        SimNode.open(tmp_path / "nothing")


def test_cluster_members_exact_and_quorate_knob(cluster):
    members = cluster.pve_dir / ".members"
    assert members.read_text() == CLUSTER_MEMBERS
    cluster.set(quorate=False)
    assert '"quorate": 0 }' in members.read_text()
    cluster.set(quorate=True)
    assert members.read_text() == CLUSTER_MEMBERS
    for name in ("pve1", "pve2", "pve3"):
        assert (cluster.pve_dir / "nodes" / name / "pve-ssl.pem").is_file()


def test_ca_certificate(standalone):
    ca = str(standalone.ca_pem)
    subject = openssl("x509", "-in", ca, "-noout", "-subject", "-nameopt", "compat")
    assert re.fullmatch(r"subject=/CN=Proxmox Virtual Environment/OU=[0-9a-f-]{36}/O=PVE Cluster Manager CA\n",
                        subject)
    assert "CA:TRUE" in openssl("x509", "-in", ca, "-noout", "-ext", "basicConstraints")
    assert "Public-Key: (2048 bit)" in openssl("x509", "-in", ca, "-noout", "-text")


def test_node_certificate(standalone):
    pem = str(standalone.pve_dir / "local/pve-ssl.pem")
    assert openssl("x509", "-in", pem, "-noout", "-subject", "-nameopt", "compat") == (
        "subject=/OU=PVE Cluster Node/O=Proxmox Virtual Environment/CN=pve1.example.com\n")
    exts = openssl("x509", "-in", pem, "-noout", "-ext", "subjectAltName,basicConstraints,extendedKeyUsage")
    assert ("IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:localhost, IP Address:192.0.2.10, "
            "DNS:pve1, DNS:pve1.example.com") in exts
    assert "CA:FALSE" in exts and "TLS Web Server Authentication" in exts
    assert openssl("verify", "-CAfile", str(standalone.ca_pem), pem).strip().endswith("OK")
    assert "Public-Key: (2048 bit)" in openssl("x509", "-in", pem, "-noout", "-text")
    not_before = openssl("x509", "-in", pem, "-noout", "-startdate").split("=", 1)[1].strip()
    started = dt.datetime.strptime(not_before, "%b %d %H:%M:%S %Y %Z")
    age = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - started
    assert dt.timedelta(hours=23) < age < dt.timedelta(hours=25)  # issued "yesterday"


def test_fingerprint_matches_openssl(standalone):
    pem = standalone.pve_dir / "local/pve-ssl.pem"
    expected = openssl("x509", "-in", str(pem), "-noout", "-fingerprint", "-sha256").split("=", 1)[1].strip()
    assert certs.fingerprint(pem) == expected and len(expected) == 95


def test_custom_certificate(tmp_path):
    node = make_node(tmp_path / "node")
    node.install_custom_cert()
    pem = node.local_dir / "pveproxy-ssl.pem"
    assert mode(node.local_dir / "pveproxy-ssl.key") == 0o640
    assert pem.read_text().count("BEGIN CERTIFICATE") == 2  # leaf first, then its issuer
    issuer = openssl("x509", "-in", str(pem), "-noout", "-issuer", "-nameopt", "compat")
    assert issuer == "issuer=/O=pvesim ACME test CA/CN=pvesim R1\n"
    assert openssl("verify", "-CAfile", str(node.custom_ca_pem), str(pem)).strip().endswith("OK")
    assert certs.fingerprint(pem) != certs.fingerprint(node.local_dir / "pve-ssl.pem")
    node.remove_custom_cert()
    assert not pem.exists()


def test_init_cli_pve8_cluster_without_domain(tmp_path):
    root = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "pvesim", "init", str(root), "--pve", "8", "--cluster", "lab", "--hostname", "node-a",
         "--ip", "198.51.100.7", "--domain", "", "--ca-bits", "2048", "--access-control", "8.1.4"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(TESTS_DIR)},
    )
    assert proc.returncode == 0, proc.stderr
    node = SimNode.open(root)
    knobs = node.settings()
    assert (knobs["pve_version"], knobs["access_control"], node.nodename) == ("8.4.1", "8.1.4", "node-a")
    members = json.loads((node.pve_dir / ".members").read_text())
    assert members["cluster"]["name"] == "lab" and set(members["nodelist"]) == {"node-a", "pve1", "pve2"}
    assert members["nodelist"]["pve1"]["ip"] == "198.51.100.8" and "ip" not in members["nodelist"]["pve2"]
    assert node.user_cfg().startswith("user:root@pam:1:0::::::\n")
    pem = str(node.pve_dir / "local/pve-ssl.pem")
    assert openssl("x509", "-in", pem, "-noout", "-subject", "-nameopt", "compat").endswith("/CN=node-a\n")
    assert "DNS:node-a" in openssl("x509", "-in", pem, "-noout", "-ext", "subjectAltName")
    assert "sub version { return '8.4.1'; }" in node.pvecfg.read_text()
    assert Path(node.pveum).read_text().count(str(root)) == 1
