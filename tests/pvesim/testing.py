"""Helpers for tests: cheap node copies and an in-process pveum runner.

Creating a node costs a few RSA key generations; tests instead clone a template made
once per process for each distinct set of create() arguments (2048-bit CA by default).
"""
from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Tuple

from . import pveum
from .node import SimNode, clone_node

_TEMPLATES: Dict[Tuple[Tuple[str, Any], ...], SimNode] = {}
_TEMPLATE_DIR = Path(tempfile.mkdtemp(prefix="pvesim-templates-"))
atexit.register(shutil.rmtree, str(_TEMPLATE_DIR), True)


def make_node(dest: "str | os.PathLike[str]", **create_args: Any) -> SimNode:
    """A fresh node at dest, as SimNode.create(dest, **create_args) would make it."""
    create_args.setdefault("ca_bits", 2048)
    # Versions are plain knobs: applying them to a clone saves a template (and its keys).
    knobs = {k: create_args.pop(k) for k in ("pve_version", "access_control") if create_args.get(k)}
    key = tuple(sorted(create_args.items()))
    template = _TEMPLATES.get(key)
    if template is None:
        template = SimNode.create(_TEMPLATE_DIR / f"t{len(_TEMPLATES)}", **create_args)
        _TEMPLATES[key] = template
    node = clone_node(template, dest)
    if knobs:
        node.set(**knobs)
    return node


@dataclass
class Result:
    rc: int
    out: str
    err: str


def pveum_call(node: SimNode, *args: Any) -> Result:
    """Run pvesim.pveum.main() in this process (no interpreter start-up) against node."""
    out, err = io.StringIO(), io.StringIO()
    saved = os.environ.get("PVESIM_ROOT")
    os.environ["PVESIM_ROOT"] = str(node.root)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = pveum.main([str(a) for a in args])
    finally:
        if saved is None:
            os.environ.pop("PVESIM_ROOT", None)
        else:
            os.environ["PVESIM_ROOT"] = saved
    return Result(rc, out.getvalue(), err.getvalue())


MONITORING_SETUP = (
    ("role", "add", "Monitoring", "--privs", "Datastore.Audit,Sys.Audit,VM.Audit"),
    ("user", "add", "monitor@pve", "--comment", "PVE monitoring"),
    ("user", "token", "add", "monitor@pve", "monitoring", "--output-format", "json"),
    ("acl", "modify", "/", "--roles", "Monitoring", "--users", "monitor@pve", "--tokens", "monitor@pve!monitoring"),
)
# user.cfg exactly as a real node writes it after MONITORING_SETUP (pveum.md §4).
MONITORING_CFG = """\
user:monitor@pve:1:0::::PVE monitoring::
token:monitor@pve!monitoring:0:1::
user:root@pam:1:0:::root@example.com:::



role:Monitoring:Datastore.Audit,Sys.Audit,VM.Audit:

acl:1:/:monitor@pve,monitor@pve!monitoring:Monitoring:
"""
