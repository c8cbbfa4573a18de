"""pvemond.daemon's start: a module gunicorn imports for nothing loads only when used; the -OO
bytecode is compiled by a throw-away child, and the unit starts the daemon as the tests do."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from harness import DAEMON_ARGS, REPO

# Each case runs in a fresh interpreter: a stand-in lives in sys.modules.
PRELUDE = "import sys; from pvemond import daemon; daemon.defer('colorsys'); "


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", PRELUDE + code], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_the_real_module_loads_at_the_first_attribute_read_and_stays():
    out = run("import colorsys; stand_in = colorsys; f = colorsys.rgb_to_hsv; "
              "print(sys.modules['colorsys'] is not stand_in, colorsys.hls_to_rgb(0, 0, 0), "
              "hasattr(sys.modules['colorsys'], '__file__'))")
    assert out == "True (0, 0, 0) True"


def test_a_scan_of_dunder_attributes_loads_nothing():
    out = run("m = sys.modules['colorsys']; print(getattr(m, '__file__', None), "
              "sys.modules['colorsys'] is m)")
    assert out == "None True"


def test_a_submodule_is_reachable_from_its_package_and_by_from_import():
    code = ("import xml.dom; daemon.defer('xml.dom.minidom'); "
            "print(type(xml.dom.minidom).__name__, 'parseString' in vars(xml.dom.minidom)); "
            "print(xml.dom.minidom.parseString('<a/>').documentElement.tagName); "
            "from xml.dom.minidom import parseString; print(callable(parseString))")
    assert run(code).split() == ["module", "False", "a", "True"]


def test_a_module_already_loaded_is_left_alone():
    out = run("import json; daemon.defer('json'); print(type(sys.modules['json'].dumps).__name__)")
    assert out == "function"


# Imports what the daemon imports at start after warm_bytecode(), and prints how many bytecode
# files the warm-up wrote and how many the imports after it wrote.
WARM = """
import importlib, os, sys
from pvemond import daemon
def cached():
    return {os.path.join(d, f) for d, _, fs in os.walk(sys.pycache_prefix) for f in fs}
for name in daemon.DEFERRED:
    daemon.defer(name)
daemon.warm_bytecode()
warmed = cached()
for name in daemon.STARTUP:
    importlib.import_module(name)
print(len([f for f in warmed if f.endswith('.opt-2.pyc')]), len(cached() - warmed))
"""


def test_the_start_compiles_in_a_child_so_master_and_worker_only_read_bytecode(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPYCACHEPREFIX=str(tmp_path), PYTHONPATH=str(REPO), PVEMOND_CONFIG="/nonexistent")
    out = subprocess.run([sys.executable, "-OO", "-c", WARM], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    warmed, compiled_after = map(int, out)
    assert warmed > 100  # gunicorn, Flask and pvemond's modules: about 260
    assert compiled_after == 0


def test_the_unit_starts_the_daemon_as_the_tests_do():
    unit = (REPO / "systemd" / "pvemond.service").read_text()
    assert re.findall(r"^ExecStart=(.*)$", unit, re.M) == [" ".join(["/usr/bin/python3", *DAEMON_ARGS])]
    assert "Environment=PYTHONPYCACHEPREFIX=/var/cache/pvemond\n" in unit
    assert "CacheDirectory=pvemond\n" in unit and "CacheDirectoryMode=0700\n" in unit
