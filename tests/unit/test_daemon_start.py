"""pvemond.daemon's stand-ins: a module gunicorn imports for nothing loads only when used."""
from __future__ import annotations

import subprocess
import sys

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
