"""`python3 -m pvemond.daemon ARGS`: gunicorn's own command line (ARGS as for `gunicorn`), started
without the modules it and Flask import for what pvemond never does.

gunicorn 20.1 (Debian bookworm, PVE 8) imports pkg_resources at start, only to resolve `egg:`
worker URIs: it scans every installed distribution and holds about 14 MiB for the daemon's life.
Newer releases (PyPI's 27, measured) import importlib.metadata instead, with zipfile, csv and
email.message behind it: about 1.4 MiB that would stay in the master. Flask and werkzeug import
decimal (JSON for Decimal values), difflib (url_for's suggestions) and pkgutil (finding an app's
package by its loader): about 0.4 MiB of the worker. A stand-in defers each to its first use: in
the worker if something there needs it (sh 2 reads its own version with importlib.metadata),
else never.

The unit runs it under `python3 -OO` (no docstrings in memory: about 2 MiB of the two processes)
with PYTHONPYCACHEPREFIX on a cache directory, since Debian byte-compiles only for -O0.
"""
from __future__ import annotations

import importlib
import os
import sys
import types

DEFERRED = ("pkg_resources", "importlib.metadata", "decimal", "difflib", "pkgutil")
# What master and worker import at start (the worker's, as pvemond.wsgi does).
STARTUP = ("gunicorn.app.wsgiapp", "gunicorn.glogging", "gunicorn.workers.gthread", "flask",
           "pvemond.rest", "pvemond.service")


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


def warm_bytecode() -> None:
    """Compile what the daemon imports at start in a child that then exits. A module without
    cached bytecode (-OO's, on a first start or after an upgrade) is compiled by the process that
    imports it, and the compiler's leftovers stay in that heap for the daemon's life (measured:
    45 MiB after a start on a cold cache, 34.6 on a warm one). About 0.12 s per start."""
    if sys.dont_write_bytecode:
        return  # nothing would be kept
    pid = os.fork()
    if pid == 0:
        try:
            for name in STARTUP:
                importlib.import_module(name)
        finally:  # a broken install fails in the worker too, with gunicorn's own report
            os._exit(0)
    os.waitpid(pid, 0)


def main() -> None:
    for name in DEFERRED:
        defer(name)
    warm_bytecode()
    from gunicorn.app.wsgiapp import run
    sys.argv[0] = "gunicorn"
    run()


if __name__ == "__main__":
    main()
