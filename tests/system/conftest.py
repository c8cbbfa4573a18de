"""The system ring: the fourth and outermost ring of tests (the .deb in booted Debian containers).

It runs when asked for by path (`pytest tests/system`, which `make test-system` does) or with
PVEMOND_SYSTEM=1; a plain `pytest` of the whole tree leaves it out and says so in its header,
because the ring needs root, a built repository (make repo) and a few minutes. Once it runs,
every missing prerequisite is a failure, never a skip.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, Tuple

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent


def _asked_for(config: pytest.Config) -> bool:
    if os.environ.get("PVEMOND_SYSTEM") == "1":
        return True
    for arg in config.args:
        path = Path(str(arg).split("::")[0])
        path = (Path(config.invocation_params.dir) / path).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "system: the system ring (booted Debian containers, root)")
    config.addinivalue_line("markers", "incremental: later steps fail at once when an earlier one did")


def pytest_report_header(config: pytest.Config) -> str:
    if _asked_for(config):
        return "system ring: selected (booted bookworm and trixie containers; needs root)"
    return "system ring: not selected (run `make test-system`, or pytest tests/system)"


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if _asked_for(config):
        return
    keep = [i for i in items if not i.get_closest_marker("system")]
    dropped = [i for i in items if i.get_closest_marker("system")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


# --- incremental steps: one container walks through install -> purge ---------------------------

_FAILED: Dict[Tuple[str, str], str] = {}


def _key(item: pytest.Item) -> Tuple[str, str]:
    params = getattr(item, "callspec", None)
    return (item.parent.nodeid, str(params.params.get("suite")) if params else "")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    if item.get_closest_marker("incremental") and report.failed:
        _FAILED.setdefault(_key(item), item.name)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("incremental"):
        earlier = _FAILED.get(_key(item))
        if earlier:
            pytest.fail(f"an earlier step failed ({earlier}); this one builds on it", pytrace=False)


# --- session prerequisites: fail loudly when one is missing ------------------------------------

@pytest.fixture(scope="session")
def prerequisites() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("the system ring must run as root (debootstrap, systemd-nspawn, nsenter)")
    for tool in ("debootstrap", "systemd-nspawn", "nsenter", "chroot", "tar", "piuparts"):
        if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"):
            problems.append(f"{tool} is missing (make test-system installs it)")
    if problems:
        pytest.fail("system ring prerequisites:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def repo(prerequisites) -> Path:
    """The signed flat repository `make repo` builds (PVEMOND_REPO overrides build/repo)."""
    path = Path(os.environ.get("PVEMOND_REPO", REPO_ROOT / "build" / "repo")).resolve()
    needed = ["InRelease", "Release", "Release.gpg", "Packages", "pvemond-archive-keyring.gpg"]
    missing = [n for n in needed if not (path / n).exists()]
    debs = sorted(p.name for p in path.glob("*.deb"))
    if missing or not any(d.startswith("pvemond_") for d in debs) \
            or not any(d.startswith("pvemond-client_") for d in debs):
        pytest.fail(f"no usable repository at {path} (missing {missing or 'debs'}): "
                    "run `make repo` (make test-system does it first)", pytrace=False)
    return path
