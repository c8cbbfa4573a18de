"""The fleet ring against the .deb (booted containers; root; a built repository).

Runs only when asked for by path (`pytest tests/fleet/deb`, which `make test-fleet-deb` does),
so `make test-fleet`'s `pytest tests/fleet` leaves it out; once it runs, a missing prerequisite
is a failure, never a skip."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent.parent / "system")]


def _asked_for(config: pytest.Config) -> bool:
    for arg in config.args:
        path = (Path(config.invocation_params.dir) / str(arg).split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config):
    if collection_path.suffix == ".py" and collection_path.name != "conftest.py" \
            and not _asked_for(config):
        return True
    return None


@pytest.fixture(scope="session")
def repo() -> Path:
    """The signed flat repository `make repo` builds (PVEMOND_REPO overrides build/repo)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("the fleet ring must run as root (systemd-nspawn, network namespaces)")
    for tool in ("systemd-nspawn", "nsenter", "ssh-keygen", "dpkg-deb"):
        if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"):
            problems.append(f"{tool} is missing (make test-fleet-deb installs it)")
    path = Path(os.environ.get("PVEMOND_REPO", HERE.parents[2] / "build" / "repo")).resolve()
    if not (path / "InRelease").exists() or not (path / "pvemond-archive-keyring.gpg").exists() \
            or not list(path.glob("pvemond_*.deb")) or not list(path.glob("pvemond-client_*.deb")):
        problems.append(f"no signed repository with both packages at {path}: run `make repo`")
    if problems:
        pytest.fail("fleet ring (.deb) prerequisites:\n  " + "\n  ".join(problems), pytrace=False)
    return path


# One fleet walks through the steps of a module in order: after a failed step, the rest fail at once.
_FAILED: dict = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    if outcome.get_result().failed:
        _FAILED.setdefault(item.module.__name__, item.name)


def pytest_runtest_setup(item: pytest.Item) -> None:
    earlier = _FAILED.get(item.module.__name__)
    if earlier:
        pytest.fail(f"an earlier step failed ({earlier}); this one builds on it", pytrace=False)
