"""Network ring: the node and the monitoring host in two network namespaces joined by a veth
pair (documentation addresses, inside the namespaces only). Needs root and iproute2."""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import pytest

from harness import (CLUSTER_IPS, NODE_IP, Bootstrap, Daemon, cluster_proxies, proxy_on, run_on,
                     two_hosts, write_config)
from pvesim.node import SimNode
from pvesim.testing import make_node

GUESTS = [{"vmid": 100, "name": "web", "type": "qemu", "node": "pve1"}]
STORAGES = [{"storage": "local", "node": "pve1"}]
CLAIM = {"ttl": 60, "max_attempts": 5}


def seed(node: SimNode, **knobs) -> SimNode:
    """What every network test's node holds: no 401 delay, one storage, one guest (or `knobs`)."""
    node.set(**{"auth_fail_delay": 0.0, "storages": STORAGES, "guests": GUESTS, **knobs})
    return node


@dataclass
class Served:
    """A node served in the node namespace: its proxy URL, pvemond.yaml and running daemon."""
    url: str
    config: Path
    daemon: Daemon


@contextlib.contextmanager
def serve(hosts, node: SimNode, tmp_path: Path) -> Iterator[Served]:
    """The pveproxy stand-in on 0.0.0.0:8006 (so 127.0.0.1, pvemond's default URL, reaches it),
    a pvemond.yaml for it and the daemon under gunicorn, all in the node namespace."""
    with proxy_on(hosts["node"], node.root) as url:
        config = write_config(tmp_path / "pvemond.yaml", node, url, tmp_path, claim=CLAIM)
        with Daemon(config, tmp_path / "daemon.log", prefix=hosts["node"]) as daemon:
            yield Served(url, config, daemon)


def bootstrap_and_claim(hosts, config: Path, port: str, *claim_args: str,
                        python: str = sys.executable, bootstrap_args: Tuple[str, ...] = ()):
    """pvemond-bootstrap on the node, pvemond-claim (with `python`) on the monitoring host;
    (claim result, finished bootstrap, its exit code)."""
    b = Bootstrap(config, "--port", port, *bootstrap_args, prefix=hosts["node"])
    offer = b.wait_for("claim_open")
    r = run_on(hosts["mon"], python, "-m", "pvemond.cli.claim", f"{NODE_IP}:{port}", offer["code"],
               "--pin", offer["pin"], *claim_args, config=config)
    return r, b, b.finish()


@pytest.fixture
def hosts():
    with two_hosts() as h:
        yield h


@pytest.fixture
def new_node(tmp_path) -> Callable[..., SimNode]:
    """new_node(**create_args): a seeded node at tmp_path/node, 192.0.2.10 (PVE 9 by default)."""
    return lambda **create_args: seed(make_node(tmp_path / "node", **{"pve": 9, "ip": NODE_IP, **create_args}))


@pytest.fixture
def node(new_node):
    return new_node()


@pytest.fixture
def serve_node(hosts, tmp_path) -> Callable[[SimNode], "contextlib.AbstractContextManager[Served]"]:
    """serve_node(node): a context manager that serves `node` in the node namespace (see serve)."""
    return lambda sim: serve(hosts, sim, tmp_path)


@pytest.fixture
def claim_on_mon(hosts) -> Callable:
    """claim_on_mon(config, port, *claim_args, python=..., bootstrap_args=()): see
    bootstrap_and_claim."""
    return lambda config, port, *args, **kw: bootstrap_and_claim(hosts, config, port, *args, **kw)


@pytest.fixture
def proxy(hosts, node):
    with proxy_on(hosts["node"], node.root) as url:
        yield url


@pytest.fixture
def config(tmp_path, node, proxy):
    return write_config(tmp_path / "pvemond.yaml", node, proxy, tmp_path, claim=CLAIM)


@pytest.fixture
def daemon(tmp_path, hosts, config):
    with Daemon(config, tmp_path / "daemon.log", prefix=hosts["node"]) as d:
        yield d


# -- a three-node cluster ---------------------------------------------------------------------
CLUSTER_GUESTS = [
    {"vmid": 100, "name": "web", "type": "qemu", "node": "pve1", "onboot": 1},
    {"vmid": 101, "name": "db", "type": "lxc", "node": "pve2", "onboot": 0},
    {"vmid": 102, "name": "cache", "type": "qemu", "node": "pve3", "backup": True},
]
CLUSTER_STORAGES = [{"storage": "local", "node": n} for n in ("pve1", "pve2", "pve3")] + \
    [{"storage": "nfs", "node": "pve1", "plugintype": "nfs", "shared": 1, "content": "images,rootdir"}]
CLUSTER_REPLICATION = [{"guest": 100, "target": "pve2"}]


@dataclass
class Cluster3:
    """What `cluster3` yields. sim: the SimNode (cluster "prod", all three nodes online; its
    settings hold every node's guests and storages); names: ["pve1", "pve2", "pve3"]; ips: their
    addresses (harness.CLUSTER_IPS), each served by its own pveproxy stand-in on IP:8006 in
    hosts["node"]; urls: {name: proxy URL}; config: pvemond.yaml for node 1 (pve1), written with
    harness.write_config (pveproxy_url https://192.0.2.10:8006, claim ttl 60 s); hosts: the
    two namespaces' command prefixes ({"node": [...], "mon": [...]}, as two_hosts yields)."""
    sim: SimNode
    names: List[str]
    ips: List[str]
    urls: Dict[str, str]
    config: Path
    hosts: Dict[str, List[str]]

    @property
    def nodes(self) -> List[Tuple[str, str]]:
        """[(name, ip)] in node id order."""
        return list(zip(self.names, self.ips))


@pytest.fixture(params=[dict(pve=9), dict(pve=8)], ids=["pve9", "pve8"])
def cluster3(request, tmp_path) -> Iterator[Cluster3]:
    """A simulated 3-node cluster across the network ring, PVE 9 (cluster CA with keyUsage) and
    PVE 8 (legacy CA without keyUsage, which pvemond hands out strictly re-issued). Override the
    generation with `@pytest.mark.parametrize("cluster3", [dict(pve=9, ca_key_usage=False)],
    indirect=True)`. The test starts the daemon itself (Daemon(c.config, ..., prefix=c.hosts["node"]))."""
    kind: Dict = getattr(request, "param", None) or dict(pve=9)
    sim = seed(make_node(tmp_path / "node", ip=NODE_IP, cluster="prod", all_online=True, **kind),
               guests=CLUSTER_GUESTS, storages=CLUSTER_STORAGES, replication=CLUSTER_REPLICATION)
    names = [n["name"] for n in sim.cluster_nodes()]
    ips = [n["ip"] for n in sim.cluster_nodes()]
    assert tuple(ips) == CLUSTER_IPS, ips
    with two_hosts(CLUSTER_IPS) as hosts, cluster_proxies(hosts["node"], sim) as urls:
        config = write_config(tmp_path / "pvemond.yaml", sim, urls[names[0]], tmp_path, claim=CLAIM)
        yield Cluster3(sim, names, ips, urls, config, hosts)
