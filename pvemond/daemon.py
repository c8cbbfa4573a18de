"""`python3 -m pvemond.daemon ARGS`: gunicorn's own command line (ARGS as for `gunicorn`), started
without pkg_resources.

gunicorn 20.1 (Debian bookworm, PVE 8) imports pkg_resources at start, which scans every
installed distribution and holds about 14 MiB for the daemon's life, only to resolve `egg:`
worker URIs pvemond never uses. A stand-in defers it to its first use; newer gunicorn does not
import it at all, and there the stand-in stays unused.
"""
from __future__ import annotations

import importlib
import sys
import types


def defer_pkg_resources() -> None:
    if "pkg_resources" in sys.modules:
        return
    stand_in = types.ModuleType("pkg_resources")

    def load(name: str):
        del sys.modules["pkg_resources"]  # the real module takes its place on first use
        return getattr(importlib.import_module("pkg_resources"), name)

    stand_in.__getattr__ = load  # type: ignore[attr-defined]  # PEP 562
    sys.modules["pkg_resources"] = stand_in


def main() -> None:
    defer_pkg_resources()
    from gunicorn.app.wsgiapp import run
    sys.argv[0] = "gunicorn"
    run()


if __name__ == "__main__":
    main()
