"""Ring 0: the genuine upstream pveum (../shared/upstream-pve, PVE 8.1/8.4/9.0/9.1).

Collected only when PVEMOND_UPSTREAM_PVE names the folder (`make test-upstream` sets it), so
the Debian and PyPI runs of the other rings do not run it again. Named but missing or
incomplete is an error, never a skip.
"""
from __future__ import annotations

import pytest

from differential import UpstreamRuns
from ring import Site
from upnode import ENV, GENERATIONS, missing_parts, upstream_dir

UPSTREAM = upstream_dir()
if UPSTREAM is None:
    collect_ignore_glob = ["*.py"]
elif missing_parts(UPSTREAM):
    raise pytest.UsageError(f"{ENV}={UPSTREAM} lacks {', '.join(missing_parts(UPSTREAM))}")


def pytest_generate_tests(metafunc):
    if "gen" in metafunc.fixturenames:
        metafunc.parametrize("gen", GENERATIONS, ids=[f"pve{g.name}" for g in GENERATIONS])


_RUNS = []  # the differential test's upstream sessions, started once it is collected


def pytest_collection_finish(session):
    """After -k/deselection: start them only if the differential test will run."""
    if UPSTREAM is not None and any("upstream_runs" in getattr(i, "fixturenames", ()) for i in session.items):
        _RUNS.append(UpstreamRuns(UPSTREAM))


def pytest_sessionfinish(session, exitstatus):
    while _RUNS:
        _RUNS.pop().close()


@pytest.fixture(scope="session")
def upstream():
    return UPSTREAM


@pytest.fixture(scope="session")
def upstream_runs():
    return _RUNS[0]


@pytest.fixture(scope="session")
def converged_templates(tmp_path_factory, upstream):
    """Per generation, once: a node pvemond converged and minted for, its token delivered."""
    made = {}

    def get(gen):
        if gen.name not in made:
            site = Site.fresh(tmp_path_factory.mktemp(f"converged{gen.name}"), gen, upstream)
            site.minted = site.bootstrap()
            site.close()
            made[gen.name] = site
        return made[gen.name]
    return get


@pytest.fixture
def site(tmp_path, gen, upstream):
    """A fresh node of this generation."""
    s = Site.fresh(tmp_path, gen, upstream)
    yield s
    s.close()


@pytest.fixture
def converged(tmp_path, gen, upstream, converged_templates):
    """A copy of the converged node; `.minted` is the delivered token (its secret valid)."""
    template = converged_templates(gen)
    s = Site.copy(template, tmp_path, upstream)
    s.minted = template.minted
    yield s
    s.close()
