"""`python3 -m pvemond.daemon ARGS`: gunicorn's own command line (ARGS as for `gunicorn`), started
without the distribution-metadata modules gunicorn imports only to resolve `egg:` worker URIs,
which pvemond never uses.

gunicorn 20.1 (Debian bookworm, PVE 8) imports pkg_resources at start, which scans every
installed distribution and holds about 14 MiB for the daemon's life. Newer releases (PyPI's 27,
measured) import importlib.metadata instead, with zipfile, csv and email.message behind it: about
1.4 MiB that would stay in the master. A stand-in defers each to its first use: in the worker if
something there needs it (sh 2 reads its own version with it), else never.
"""
from __future__ import annotations

import importlib
import sys
import types

DEFERRED = ("pkg_resources", "importlib.metadata")


def defer(name: str) -> None:
    """Put a stand-in for module `name` in sys.modules; any attribute read loads the real one."""
    if name in sys.modules:
        return
    stand_in = types.ModuleType(name)

    def load(attr: str):
        if attr.startswith("__") and attr != "__path__":
            raise AttributeError(attr)  # a scan of sys.modules for __file__ & co loads nothing
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]  # the real module takes its place on first use
        return getattr(importlib.import_module(name), attr)

    stand_in.__getattr__ = load  # type: ignore[attr-defined]  # PEP 562
    sys.modules[name] = stand_in
    parent, _, child = name.rpartition(".")
    if parent:  # `import importlib.metadata` then `importlib.metadata.x` finds it too
        setattr(importlib.import_module(parent), child, stand_in)


def main() -> None:
    for name in DEFERRED:
        defer(name)
    from gunicorn.app.wsgiapp import run
    sys.argv[0] = "gunicorn"
    run()


if __name__ == "__main__":
    main()
