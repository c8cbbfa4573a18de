"""Network ring: the node and the monitoring host in two network namespaces joined by a veth
pair (documentation addresses, inside the namespaces only). Needs root and iproute2."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from harness import REPO, Daemon, env_for, write_config
from pvesim.testing import make_node

NODE_IP, MON_IP, OTHER_IP = "192.0.2.10", "192.0.2.20", "192.0.2.30"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def hosts():
    """Two namespaces: node (192.0.2.10) and mon (192.0.2.20, plus .30 for --allow tests)."""
    tag = uuid.uuid4().hex[:6]
    node_ns, mon_ns = f"pvm-node-{tag}", f"pvm-mon-{tag}"
    for ns in (node_ns, mon_ns):
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
    ip("link", "add", f"vn{tag}", "netns", node_ns, "type", "veth", "peer", "name", f"vm{tag}",
       "netns", mon_ns)
    ip("-n", node_ns, "addr", "add", f"{NODE_IP}/24", "dev", f"vn{tag}")
    ip("-n", mon_ns, "addr", "add", f"{MON_IP}/24", "dev", f"vm{tag}")
    ip("-n", mon_ns, "addr", "add", f"{OTHER_IP}/24", "dev", f"vm{tag}")
    ip("-n", node_ns, "link", "set", f"vn{tag}", "up")
    ip("-n", mon_ns, "link", "set", f"vm{tag}", "up")
    try:
        yield {"node": ["ip", "netns", "exec", node_ns], "mon": ["ip", "netns", "exec", mon_ns]}
    finally:
        for ns in (node_ns, mon_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def node(tmp_path):
    n = make_node(tmp_path / "node", pve=9, ip=NODE_IP)
    n.set(auth_fail_delay=0.0, storages=[{"storage": "local", "node": "pve1"}],
          guests=[{"vmid": 100, "name": "web", "type": "qemu", "node": "pve1"}])
    return n


@pytest.fixture
def proxy(hosts, node):
    """The pveproxy stand-in on the node's port 8006, inside the node namespace."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "tests"))
    proc = subprocess.Popen([*hosts["node"], sys.executable, "-m", "pvesim", "proxy",
                             str(node.root), "--listen", "0.0.0.0:8006"],
                            stdout=subprocess.PIPE, text=True, env=env)
    url = proc.stdout.readline().strip()
    assert url.startswith("https://"), url
    yield url.replace("0.0.0.0", "127.0.0.1")
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def config(tmp_path, node, proxy):
    return write_config(tmp_path / "pvemond.yaml", node, proxy, tmp_path,
                        claim={"ttl": 60, "max_attempts": 5})


@pytest.fixture
def daemon(tmp_path, hosts, config):
    with Daemon(config, tmp_path / "daemon.log", prefix=hosts["node"]) as d:
        yield d


def run_on(prefix, *cmd: str, config, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *cmd], env=env_for(config), capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
