"""The real monitoring tools against a simulated 3-node cluster across the network ring: pvemond
bootstraps on pve1, pvemond-claim writes pve.yml on the monitoring host, and the genuine
prometheus-pve-exporter (Python 3.13, PyPI's newest, run as a non-root user) scrapes every node
with TLS verified against the CA pvemond handed out (PVE 8: the legacy CA's strict re-issue).
proxmoxer runs the script `--format proxmoxer` writes."""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from harness import EXPORTER_VENV, Daemon, run_exporter, run_on, system_user

USER = "pvemond-test-exporter"
SCRAPE = r'''
import sys, urllib.error, urllib.request
try:
    resp = urllib.request.urlopen(sys.argv[1], timeout=60)
    print(resp.status); print(resp.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
'''
RESOURCES = r'''
import json, sys
scope = {}
exec(open(sys.argv[1]).read(), scope)  # the script pvemond-claim wrote defines `proxmox`
api = scope["proxmox"]
print(json.dumps({"vms": api.cluster.resources.get(type="vm"), "verify": api._store["session"].auth.verify_ssl}))
'''


@pytest.fixture
def share(tmp_path):
    """A directory the exporter's user may read (pytest's own tmp dirs are root's, mode 0700)."""
    _, gid = system_user(USER)
    path = Path(tempfile.mkdtemp(prefix="pvemond-exporter-"))
    os.chown(path, 0, gid)
    os.chmod(path, 0o750)
    yield path
    shutil.rmtree(path)


def readable_by_group(path: Path) -> None:
    os.chown(path, 0, system_user(USER)[1])
    os.chmod(path, 0o640)


def scrape(c, url: str) -> "tuple[int, str]":
    r = run_on(c.hosts["mon"], sys.executable, "-c", SCRAPE, url, config=c.config, timeout=90)
    status, _, body = r.stdout.partition("\n")
    assert status.isdigit(), r.stderr
    return int(status), body


def test_exporter_scrapes_every_node_with_verified_tls(cluster3, claim_on_mon, share, tmp_path):
    c = cluster3
    pve_yml = share / "pve.yml"
    with Daemon(c.config, tmp_path / "daemon.log", prefix=c.hosts["node"]):
        r, b, rc = claim_on_mon(c.config, "8119", "--format", "pve-exporter", "-o", str(pve_yml))
        assert (rc, r.returncode) == (0, 0), (b.stderr, r.stderr)
        [(module, entry)] = yaml.safe_load(pve_yml.read_text()).items()
        ca_file = pve_yml.parent / entry["verify_ssl"]  # a CA file, never false
        assert ca_file.is_file() and ca_file.parent == share
        for path in (pve_yml, ca_file):
            readable_by_group(path)
        with run_exporter(c.hosts["mon"], pve_yml, USER) as base:
            for name, ip in c.nodes:
                status, text = scrape(c, f"{base}/pve?target={ip}&module={module}")
                assert status == 200, text
                check_metrics(text, c, name)
            status, text = scrape(c, f"{base}/pve?target={c.ips[0]}&module=nonexistent")
            assert status == 400  # the exporter answers by module: the one above was ours


def check_metrics(text: str, c, name: str) -> None:
    for node in c.names:
        assert f'pve_up{{id="node/{node}"}} 1.0' in text, text
    assert 'pve_up{id="cluster/prod"} 1.0' in text
    assert 'pve_up{id="qemu/100"} 1.0' in text and 'pve_up{id="lxc/101"} 1.0' in text
    assert 'pve_up{id="storage/pve1/local"} 1.0' in text
    assert re.search(r'^pve_disk_size_bytes\{id="storage/pve3/local"\} 1\.073741824e\+0?11$', text, re.M), text
    assert 'pve_not_backed_up_info{id="qemu/100"} 1.0' in text and 'id="qemu/102"} 1.0' not in \
        text.split("pve_not_backed_up_info")[-1]
    assert f'pve_subscription_status{{id="node/{name}",status="notfound"}} 1.0' in text
    version = c.sim.version_info()["version"]
    assert f'version="{version}"' in text
    if name == "pve1":  # node collectors read the node the target is
        assert 'pve_onboot_status{id="qemu/100",node="pve1",type="qemu"} 1.0' in text
        assert 'pve_replication_info{guest="qemu/100",id="100-0",source="node/pve1",target="node/pve2",type="local"} 1.0' in text
        assert 'pve_replication_failed_syncs{id="100-0"} 0.0' in text
    if name == "pve2":
        assert 'pve_onboot_status{id="lxc/101",node="pve2",type="lxc"} 0.0' in text
        assert "pve_replication_info{" not in text


def test_proxmoxer_script_lists_the_cluster_with_verified_tls(cluster3, claim_on_mon, tmp_path):
    c = cluster3
    script = tmp_path / "mon" / "pve.py"
    script.parent.mkdir()
    with Daemon(c.config, tmp_path / "daemon.log", prefix=c.hosts["node"]):
        r, b, rc = claim_on_mon(c.config, "8120", "--format", "proxmoxer", "-o", str(script),
                                bootstrap_args=("--token", "scripts"))
        assert (rc, r.returncode) == (0, 0), (b.stderr, r.stderr)
        python = EXPORTER_VENV / "bin" / "python"
        assert python.exists(), "run `make exporter-venv`"
        out = run_on(c.hosts["mon"], str(python), "-c", RESOURCES, str(script), config=c.config)
    assert out.returncode == 0, out.stderr
    result = yaml.safe_load(out.stdout)
    assert sorted((v["vmid"], v["node"]) for v in result["vms"]) == [(100, "pve1"), (101, "pve2"), (102, "pve3")]
    assert isinstance(result["verify"], str) and Path(result["verify"]).is_file()
