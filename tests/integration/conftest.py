"""Integration ring: the simulated node, its pveproxy stand-in, and pvemond under real gunicorn."""
from __future__ import annotations

import pytest

from harness import Daemon, run_cli, write_config
from pvesim.node import SimNode
from pvesim.testing import make_node


def pytest_generate_tests(metafunc):
    """Tests run on a PVE 9 node; `@pytest.mark.pve(8, 9)` runs them on both flavours."""
    if "pve" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("pve")
        versions = marker.args if marker else (9,)
        metafunc.parametrize("pve", versions, ids=[f"pve{v}" for v in versions])


@pytest.fixture
def node(tmp_path, pve) -> SimNode:
    n = make_node(tmp_path / "node", pve=pve)
    n.set(auth_fail_delay=0.0, no_quorum_delay=0.3)
    return n


@pytest.fixture
def proxy(node):
    with node.start_proxy() as p:
        yield p


@pytest.fixture
def config(tmp_path, node, proxy):
    return write_config(tmp_path / "pvemond.yaml", node, proxy.url, tmp_path)


@pytest.fixture
def daemon(tmp_path, config):
    with Daemon(config, tmp_path / "daemon.log") as d:
        yield d


@pytest.fixture
def bootstrap(config):
    def run(*args: str, **kwargs):
        return run_cli("bootstrap", *args, config=config, **kwargs)
    return run
