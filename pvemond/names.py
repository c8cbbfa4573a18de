"""Proxmox VE name grammars (pve-access-control), checked before anything is written.

Stdlib only: the monitoring-host side may import it. Every pattern is applied with fullmatch:
`$` would also match before a final newline, and "name\n" would reach pveum and the audit log.
"""
from __future__ import annotations

import re

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays unloaded: pvemond/records.py says why
    from typing import Collection, Iterable, Optional

REALM = r"[A-Za-z][A-Za-z0-9.\-_]+"
USERID = re.compile(rf"([^\s:/]+)@({REALM})")
TOKEN_SUBID = re.compile(REALM)
ROLEID = re.compile(r"[A-Za-z0-9.\-_]+")
PRIV_SYNTAX = re.compile(r"[A-Z][A-Za-z]*(\.[A-Z][A-Za-z]*)+")
ACL_PATH = re.compile(r"/([A-Za-z0-9.\-_]+(/[A-Za-z0-9.\-_]+)*)?")
# pvemond's own ceiling (PVE has none): a token name travels in URLs, log lines and configs.
TOKEN_MAX = 64


def userid_problem(userid: str) -> Optional[str]:
    if not USERID.fullmatch(userid):
        return f"{userid!r} is not a user id like monitoring@pve (name@realm)"
    if not 3 <= len(userid) <= 64:
        return f"'{userid}' must be 3 to 64 characters long"
    return None


def tokenid_problem(tokenid: str) -> Optional[str]:
    if not TOKEN_SUBID.fullmatch(tokenid):
        return (f"{tokenid!r} is not a token name: start with a letter, at least 2 characters, "
                "then letters, digits, '.', '-' or '_'")
    if len(tokenid) > TOKEN_MAX:
        return f"'{tokenid[:20]}...' is longer than {TOKEN_MAX} characters"
    return None


def roleid_problem(roleid: str) -> Optional[str]:
    if not ROLEID.fullmatch(roleid):
        return f"{roleid!r} is not a role name: letters, digits, '.', '-' or '_' only"
    if roleid.upper().startswith("PVE"):
        return f"'{roleid}': role names starting with 'PVE' are reserved for Proxmox VE's built-in roles"
    return None


def unknown_privileges(privileges: Iterable[str], known: Collection[str]) -> Optional[str]:
    """'unknown privilege VM.Audti (nearest: VM.Audit)' for the names not in `known`, or None."""
    unknown = sorted(set(privileges) - set(known))
    if not unknown:
        return None
    return "; ".join(f"unknown privilege {p}{_nearest(p, known)}" for p in unknown)


def _nearest(name: str, known: Collection[str]) -> str:
    import difflib  # here: only a misspelt privilege needs it (the daemon and bootstrap start lighter)
    close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
    return f" (nearest: {', '.join(close)})" if close else ""
