"""Proxmox VE name grammars (pve-access-control), checked before anything is written.

Stdlib only: the monitoring-host side may import it.
"""
from __future__ import annotations

import re
from typing import Optional

REALM = r"[A-Za-z][A-Za-z0-9.\-_]+"
USERID = re.compile(rf"^([^\s:/]+)@({REALM})$")
TOKEN_SUBID = re.compile(rf"^{REALM}$")
ROLEID = re.compile(r"^[A-Za-z0-9.\-_]+$")
PRIV_SYNTAX = re.compile(r"^[A-Z][A-Za-z]*(\.[A-Z][A-Za-z]*)+$")
ACL_PATH = re.compile(r"^/([A-Za-z0-9.\-_]+(/[A-Za-z0-9.\-_]+)*)?$")


def userid_problem(userid: str) -> Optional[str]:
    if not USERID.match(userid):
        return f"'{userid}' is not a user id like monitoring@pve (name@realm)"
    if not 3 <= len(userid) <= 64:
        return f"'{userid}' must be 3 to 64 characters long"
    return None


def tokenid_problem(tokenid: str) -> Optional[str]:
    if TOKEN_SUBID.match(tokenid):
        return None
    return (f"'{tokenid}' is not a token name: start with a letter, at least 2 characters, "
            "then letters, digits, '.', '-' or '_'")


def roleid_problem(roleid: str) -> Optional[str]:
    if not ROLEID.match(roleid):
        return f"'{roleid}' is not a role name: letters, digits, '.', '-' or '_' only"
    if roleid.upper().startswith("PVE"):
        return f"'{roleid}': role names starting with 'PVE' are reserved for Proxmox VE's built-in roles"
    return None
