"""Network ring: the node and the monitoring host in two network namespaces joined by a veth
pair (documentation addresses, inside the namespaces only). Needs root and iproute2."""
from __future__ import annotations

import pytest

from harness import NODE_IP, Daemon, proxy_on, two_hosts, write_config
from pvesim.testing import make_node


@pytest.fixture
def hosts():
    with two_hosts() as h:
        yield h


@pytest.fixture
def node(tmp_path):
    n = make_node(tmp_path / "node", pve=9, ip=NODE_IP)
    n.set(auth_fail_delay=0.0, storages=[{"storage": "local", "node": "pve1"}],
          guests=[{"vmid": 100, "name": "web", "type": "qemu", "node": "pve1"}])
    return n


@pytest.fixture
def proxy(hosts, node):
    with proxy_on(hosts["node"], node.root) as url:
        yield url


@pytest.fixture
def config(tmp_path, node, proxy):
    return write_config(tmp_path / "pvemond.yaml", node, proxy, tmp_path,
                        claim={"ttl": 60, "max_attempts": 5})


@pytest.fixture
def daemon(tmp_path, hosts, config):
    with Daemon(config, tmp_path / "daemon.log", prefix=hosts["node"]) as d:
        yield d
