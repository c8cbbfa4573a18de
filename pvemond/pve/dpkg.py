"""Installed package versions from dpkg's status file (no subprocess, no Perl).

pvemond reads what the node's pveum can do from the package that ships it, before the first
call, instead of learning it from a refused run.
"""
from __future__ import annotations

import re
from typing import Optional, Tuple

ACCESS_CONTROL = "libpve-access-control"


def installed_version(status: str, package: str) -> Optional[str]:
    """The version of `package` if dpkg says it is installed, else None (file or entry missing)."""
    try:
        with open(status, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    # Only the package's own stanzas are parsed: a node's status file holds a thousand or two
    # (each parsed, ~15 ms of every mint).
    at, key = 0, f"Package: {package}\n"
    while True:
        at = text.find(key, at)
        if at < 0:
            return None
        if at == 0 or text[at - 1] == "\n":  # a field's start, not the end of another's value
            end = text.find("\n\n", at)
            stanza = text[at:end if end >= 0 else len(text)]
            fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.M))
            if fields.get("Status", "").endswith(" installed"):
                return fields.get("Version") or None
        at += len(key)


def version_tuple(version: str) -> Tuple[int, ...]:
    """'9.1.1' -> (9, 1, 1); an epoch ('1:9.1.1') and a suffix ('~rc1', '+pmx1') do not count."""
    upstream = version.split(":", 1)[-1]
    return tuple(int(x) for x in re.findall(r"\d+", re.split(r"[~+-]", upstream)[0])[:3])
