"""Read /etc/pve/user.cfg: the access-control state, without starting pveum.

Each pveum run costs up to a second of Perl start-up and a cluster lock; reading the file pmxcfs
serves costs a millisecond. Reads come from here, writes go through pveum. token.cfg (the secrets)
is never read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, FrozenSet, List, Tuple

TOKEN_SEP = "!"


@dataclass(frozen=True)
class Token:
    userid: str
    name: str
    expire: int = 0
    privsep: bool = True
    comment: str = ""

    @property
    def full_id(self) -> str:
        return f"{self.userid}{TOKEN_SEP}{self.name}"


@dataclass(frozen=True)
class User:
    userid: str
    enable: bool = True
    expire: int = 0
    comment: str = ""
    tokens: Tuple[Token, ...] = ()

    def token(self, name: str):
        return next((t for t in self.tokens if t.name == name), None)


@dataclass(frozen=True)
class AclEntry:
    path: str
    propagate: bool
    kind: str  # "user", "group" or "token", as `pveum acl list` names them
    ugid: str  # user id, bare group name, or full token id
    role: str


@dataclass(frozen=True)
class AccessState:
    users: Dict[str, User] = field(default_factory=dict)
    roles: Dict[str, FrozenSet[str]] = field(default_factory=dict)
    groups: Dict[str, FrozenSet[str]] = field(default_factory=dict)
    acls: Tuple[AclEntry, ...] = ()

    def acl_for(self, ugid: str) -> List[AclEntry]:
        return [a for a in self.acls if a.ugid == ugid]


def read(pve_dir: str) -> AccessState:
    path = Path(pve_dir) / "user.cfg"
    try:
        return parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return AccessState()  # a fresh pmxcfs has no user.cfg until the first write


def decode_text(text: str) -> str:
    """Undo pve-common's encode_text (%XX escapes for ':', '%', control and non-ASCII bytes)."""
    return re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]),
                  text.encode("utf-8")).decode("utf-8", "replace")


def _int(text: str) -> int:
    return int(text) if text.strip().isdigit() else 0


def parse(text: str) -> AccessState:
    users: Dict[str, dict] = {}
    tokens: Dict[str, List[Token]] = {}
    roles: Dict[str, FrozenSet[str]] = {}
    groups: Dict[str, FrozenSet[str]] = {}
    acls: List[AclEntry] = []
    for line in text.splitlines():
        kind, _, rest = line.strip().partition(":")
        fields = rest.split(":")
        if kind == "user" and len(fields) >= 3:
            users[fields[0]] = dict(enable=fields[1] != "0", expire=_int(fields[2]),
                                    comment=decode_text(fields[6]) if len(fields) > 6 else "")
        elif kind == "token" and len(fields) >= 2 and TOKEN_SEP in fields[0]:
            userid, _, name = fields[0].partition(TOKEN_SEP)
            privsep = len(fields) > 2 and fields[2] == "1"  # a missing field parses as 0
            comment = decode_text(fields[3]) if len(fields) > 3 else ""
            tokens.setdefault(userid, []).append(
                Token(userid, name, _int(fields[1]), privsep, comment))
        elif kind == "role" and fields:
            roles[fields[0]] = frozenset(p for p in re.split(r"[,;\s]+", fields[1]) if p) \
                if len(fields) > 1 else frozenset()
        elif kind == "group" and fields:
            members = fields[1] if len(fields) > 1 else ""
            groups[fields[0]] = frozenset(m for m in members.split(",") if m)
        elif kind == "acl" and len(fields) >= 4:
            acls.extend(_acl_entries(fields))
    return AccessState(
        users={u: User(u, tokens=tuple(tokens.get(u, ())), **v) for u, v in users.items()},
        roles=roles, groups=groups, acls=tuple(acls))


def _acl_entries(fields: List[str]) -> List[AclEntry]:
    propagate, path, ugids, roles = fields[0] != "0", fields[1], fields[2], fields[3]
    entries = []
    for ugid in filter(None, ugids.split(",")):
        if ugid.startswith("@"):
            kind, ugid = "group", ugid[1:]
        else:
            kind = "token" if TOKEN_SEP in ugid else "user"
        entries += [AclEntry(path, propagate, kind, ugid, r) for r in roles.split(",") if r]
    return entries
