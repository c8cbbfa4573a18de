"""/etc/pve/user.cfg and /etc/pve/priv/token.cfg in the exact upstream format (pveum.md §4).

The in-memory model mirrors AccessControl.pm's hash, so the parser and writer can follow
parse_user_config/write_user_config line by line:

  users  {userid: {enable, expire, email?, firstname?, lastname?, comment?, keys?,
                   groups: set, tokens: {tokenid: {privsep, expire, comment?}}}}
  groups {name: {users: set, comment?}}     pools {name: {comment?, vms: set, storage: set}}
  roles  {name: set(privs)} (built-ins included)      acl {path: {users|groups|tokens: {id: {role: propagate}}}}
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Dict, Optional

from . import names
from .names import perl_true
from .privileges import Privileges
from .state import atomic_write

Warn = Callable[[str], None]
ACL_KINDS = ("users", "groups", "tokens")


class UserConfig:
    """Parsed user.cfg of one PVE version."""

    def __init__(self, privs: Privileges) -> None:
        self.privs = privs
        self.users: Dict[str, dict] = {}
        self.groups: Dict[str, dict] = {}
        self.pools: Dict[str, dict] = {}
        self.vms: Dict[str, str] = {}
        self.roles: Dict[str, set] = {name: set(p) for name, p in privs.builtin_roles.items()}
        self.acl: Dict[str, Dict[str, dict]] = {}
        self.force_defaults()

    def force_defaults(self) -> None:
        """userconfig_force_defaults: built-in roles and root@pam always exist."""
        for name, privs in self.privs.builtin_roles.items():
            self.roles[name] = set(privs)
        self.users.setdefault("root@pam", new_user(enable=1))

    def acl_node(self, path: str) -> Dict[str, dict]:
        return self.acl.setdefault(path, {kind: {} for kind in ACL_KINDS})

    def acl_tree_paths(self) -> set:
        """Every node of the ACL tree: ACL paths and their ancestors (find_acl_tree_node)."""
        paths = {"/"}
        for path in self.acl:
            parts = [p for p in path.split("/") if p]
            for i in range(1, len(parts) + 1):
                paths.add("/" + "/".join(parts[:i]))
        return paths

    def user(self, userid: str) -> Optional[dict]:
        return self.users.get(userid)

    def token(self, userid: str, tokenid: str) -> Optional[dict]:
        user = self.users.get(userid)
        return user["tokens"].get(tokenid) if user else None


def new_user(**fields: object) -> dict:
    return {"groups": set(), "tokens": {}, **fields}


# -- text escaping (PVE::Tools encode_text / decode_text) ---------------------------
def encode_text(text: str) -> str:
    out = []
    for byte in text.encode("utf-8"):
        if byte <= 0x1F or byte >= 0x7F or byte in (ord(":"), ord("%")):
            out.append(f"%{byte:02X}")
        else:
            out.append(chr(byte))
    return "".join(out)


def decode_text(text: str) -> str:
    raw = re.sub(rb"%([0-9a-fA-F]{2})", lambda m: bytes([int(m.group(1), 16)]), text.encode("utf-8"))
    return raw.decode("utf-8", errors="replace")


def perl_split_colon(line: str) -> list:
    """split(/:/, $line) with trimmed fields; Perl drops trailing empty fields."""
    fields = [f.strip() for f in line.split(":")]
    while fields and fields[-1] == "":
        fields.pop()
    return fields


def _field(data: list, i: int) -> Optional[str]:
    return data[i] if i < len(data) else None


# -- parser -------------------------------------------------------------------------
def parse_user_config(raw: str, privs: Privileges, warn: Warn) -> UserConfig:
    cfg = UserConfig(privs)
    for line in (m.group(1) for m in re.finditer(r"^\s*(.+?)\s*$", raw, re.M)):
        data = perl_split_colon(line)
        kind, data = (data[0] if data else ""), data[1:]
        parser = _PARSERS.get(kind)
        if parser is None:
            warn(f"user config - ignore config line: {line}\n")
            continue
        parser(cfg, data, warn)
    cfg.force_defaults()
    return cfg


def _parse_user(cfg: UserConfig, data: list, warn: Warn) -> None:
    user = _field(data, 0) or ""
    if not names.valid_username(user):
        warn(f"user config - ignore user '{user}' - invalid user name\n")
        return
    expire = _field(data, 2)
    expire = expire if perl_true(expire) else "0"
    if not re.fullmatch(r"\d+", expire):
        warn(f"user config - ignore user '{user}' - (illegal characters in expire '{expire}')\n")
        return
    entry = new_user(enable=1 if perl_true(_field(data, 1)) else 0, expire=int(expire))
    firstname, lastname, email, comment, keys = (_field(data, i) for i in range(3, 8))
    if perl_true(firstname):
        entry["firstname"] = decode_text(firstname)
    if perl_true(lastname):
        entry["lastname"] = decode_text(lastname)
    if email is not None:  # defined even when empty, if a later field is set (split quirk)
        entry["email"] = email
    if perl_true(comment):
        entry["comment"] = decode_text(comment)
    if perl_true(keys):
        entry["keys"] = keys
    cfg.users[user] = entry


def _parse_group(cfg: UserConfig, data: list, warn: Warn) -> None:
    group, members, comment = _field(data, 0) or "", _field(data, 1), _field(data, 2)
    if not names.GROUP_RE.fullmatch(group):
        warn(f"user config - ignore group '{group}' - invalid characters in group name\n")
        return
    entry = cfg.groups.setdefault(group, {"users": set()})
    if perl_true(comment):
        entry["comment"] = decode_text(comment)
    for user in names.split_list(members):
        if not names.valid_username(user):
            warn(f"user config - ignore invalid group member '{user}'\n")
            continue
        if user in cfg.users:
            cfg.users[user]["groups"].add(group)
        else:
            warn(f"user config - ignore invalid group member '{user}'\n")
        entry["users"].add(user)


def _parse_role(cfg: UserConfig, data: list, warn: Warn) -> None:
    role, privlist = _field(data, 0) or "", _field(data, 1)
    if not names.ROLE_RE.fullmatch(role):
        warn(f"user config - ignore role '{role}' - invalid characters in role name\n")
        return
    privset = cfg.roles.setdefault(role, set())
    for priv in names.split_list(privlist):
        if priv in cfg.privs.valid:
            privset.add(priv)
        else:
            warn(f"user config - ignore invalid privilege '{priv}'\n")


def _parse_acl(cfg: UserConfig, data: list, warn: Warn) -> None:
    propagate = 1 if perl_true(_field(data, 0)) else 0
    pathtxt, members, rolelist = _field(data, 1), _field(data, 2), _field(data, 3)
    path = names.normalize_path(pathtxt)
    if not path:
        warn(f"user config - ignore invalid path in acl '{pathtxt or ''}'\n")
        return
    for role in names.split_list(rolelist):
        if not names.ROLE_RE.fullmatch(role):
            warn(f"user config - ignore invalid role name '{role}' in acl\n")
            continue
        if role not in cfg.roles:
            warn(f"user config - ignore invalid acl role '{role}'\n")
            continue
        for ug in names.split_list(members):
            _parse_acl_member(cfg, path, role, propagate, ug, warn)


def _parse_acl_member(cfg: UserConfig, path: str, role: str, propagate: int, ug: str, warn: Warn) -> None:
    group = ug[1:] if re.fullmatch(r"@\S+", ug) else None
    if group and names.GROUP_RE.fullmatch(group):
        if group not in cfg.groups:
            warn(f"user config - ignore invalid acl group '{group}'\n")
        cfg.acl_node(path)["groups"].setdefault(group, {})[role] = propagate
    elif names.valid_username(ug):
        if ug not in cfg.users:
            warn(f"user config - ignore invalid acl member '{ug}'\n")
        cfg.acl_node(path)["users"].setdefault(ug, {})[role] = propagate
    elif names.try_split_tokenid(ug):
        user, token = names.split_tokenid(ug)
        if cfg.token(user, token) is not None:
            cfg.acl_node(path)["tokens"].setdefault(ug, {})[role] = propagate
        else:
            warn(f"user config - ignore invalid acl token '{ug}'\n")
    else:
        warn(f"user config - invalid user/group '{ug}' in acl\n")


def _parse_pool(cfg: UserConfig, data: list, warn: Warn) -> None:
    pool, comment, vmlist, storelist = (_field(data, i) for i in range(4))
    pool = pool or ""
    if not names.ROLE_RE.fullmatch(pool):
        warn(f"user config - ignore pool '{pool}' - invalid characters in pool name\n")
        return
    entry = cfg.pools.setdefault(pool, {"vms": set(), "storage": set()})
    if perl_true(comment):
        entry["comment"] = decode_text(comment)
    for vmid in names.split_list(vmlist):
        if not re.fullmatch(r"\d+", vmid):
            warn(f"user config - ignore invalid vmid '{vmid}' in pool '{pool}'\n")
            continue
        vmid = str(int(vmid))
        if vmid in cfg.vms:
            warn(f"user config - ignore duplicate vmid '{vmid}' in pool '{pool}'\n")
            continue
        entry["vms"].add(vmid)
        cfg.vms[vmid] = pool
    for storeid in names.split_list(storelist):
        if not re.fullmatch(r"[a-z][a-z0-9\-_\.]*[a-z0-9]", storeid, re.I):
            warn(f"user config - ignore invalid storage '{storeid}' in pool '{pool}'\n")
            continue
        entry["storage"].add(storeid)


def _parse_token(cfg: UserConfig, data: list, warn: Warn) -> None:
    tokenid = _field(data, 0) or ""
    split = names.try_split_tokenid(tokenid)
    if not split:
        warn(f"user config - ignore invalid tokenid '{tokenid}'\n")
        return
    user, token = split
    expire = _field(data, 1)
    expire = expire if perl_true(expire) else "0"
    if not re.fullmatch(r"\d+", expire):
        warn(f"user config - ignore token '{tokenid}' - (illegal characters in expire '{expire}')\n")
        return
    if user not in cfg.users:
        warn(f"user config - ignore token '{tokenid}' - user does not exist\n")
        return
    entry = cfg.users[user]["tokens"].setdefault(token, {})
    entry["privsep"] = 1 if perl_true(_field(data, 2)) else 0
    entry["expire"] = int(expire)
    comment = _field(data, 3)
    if perl_true(comment):
        entry["comment"] = decode_text(comment)


_PARSERS = {
    "user": _parse_user, "group": _parse_group, "role": _parse_role, "acl": _parse_acl,
    "pool": _parse_pool, "token": _parse_token,
}


# -- writer -------------------------------------------------------------------------
def _enc(value: object) -> str:
    return encode_text(str(value)) if perl_true(value) else ""


def _int(value: object) -> int:
    return int(value) if perl_true(value) else 0


def write_user_config(cfg: UserConfig) -> str:
    out = []
    for userid in sorted(cfg.users):
        d = cfg.users[userid]
        email = d.get("email") if perl_true(d.get("email")) else ""
        keys = d.get("keys") if perl_true(d.get("keys")) else ""
        out.append(
            f"user:{userid}:{1 if perl_true(d.get('enable')) else 0}:{_int(d.get('expire'))}:"
            f"{_enc(d.get('firstname'))}:{_enc(d.get('lastname'))}:{email}:{_enc(d.get('comment'))}:{keys}:\n"
        )
        for tokenid in sorted(d["tokens"]):
            td = d["tokens"][tokenid]
            out.append(
                f"token:{userid}!{tokenid}:{_int(td.get('expire'))}:"
                f"{1 if perl_true(td.get('privsep')) else 0}:{_enc(td.get('comment'))}:\n"
            )
    out.append("\n")
    for group in sorted(cfg.groups):
        d = cfg.groups[group]
        out.append(f"group:{group}:{','.join(sorted(d['users']))}:{_enc(d.get('comment'))}:\n")
    out.append("\n")
    for pool in sorted(cfg.pools):
        d = cfg.pools[pool]
        out.append(
            f"pool:{pool}:{_enc(d.get('comment'))}:{','.join(sorted(d['vms']))}:{','.join(sorted(d['storage']))}:\n"
        )
    out.append("\n")
    for role in sorted(cfg.roles):
        if not cfg.privs.is_builtin(role):
            out.append(f"role:{role}:{','.join(sorted(cfg.roles[role]))}:\n")
    out.append("\n")
    for path in sorted(cfg.acl, key=acl_sort_key):
        out.extend(_acl_lines(path, cfg.acl[path]))
    return "".join(out)


def acl_sort_key(path: str) -> list:
    """Depth-first with sorted children, like iterate_acl_tree."""
    return [p for p in path.split("/") if p]


def _acl_lines(path: str, node: Dict[str, dict]) -> list:
    """Members with the same (propagate, rolelist) on one path share a line."""
    by_list: Dict[int, Dict[str, set]] = {0: {}, 1: {}}
    for kind, prefix in (("groups", "@"), ("users", ""), ("tokens", "")):
        for member, roles in node[kind].items():
            if kind == "users" and member == "root@pam":
                continue  # always Administrator, never written
            for prop in (0, 1):
                rolelist = ",".join(sorted(r for r, p in roles.items() if (1 if perl_true(p) else 0) == prop))
                if rolelist:
                    by_list[prop].setdefault(rolelist, set()).add(prefix + member)
    lines = []
    for prop in (0, 1):
        for rolelist in sorted(by_list[prop]):
            lines.append(f"acl:{prop}:{path}:{','.join(sorted(by_list[prop][rolelist]))}:{rolelist}:\n")
    return lines


# -- files --------------------------------------------------------------------------
def read_user_config(path: Path, privs: Privileges, warn: Warn) -> UserConfig:
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raw = ""
    return parse_user_config(raw, privs, warn)


def save_user_config(path: Path, cfg: UserConfig) -> None:
    atomic_write(path, write_user_config(cfg), 0o640)


def parse_token_cfg(raw: str, warn: Optional[Warn] = None) -> Dict[str, str]:
    """priv/token.cfg: one '<full tokenid> <secret>' per line."""
    tokens: Dict[str, str] = {}
    for line in raw.splitlines():
        m = re.fullmatch(r"(\S+) (\S+)", line)
        if m:
            tokens[m.group(1)] = m.group(2)
        elif line.strip() and warn:
            warn("skipping invalid token.cfg entry\n")
    return tokens


def read_token_cfg(path: Path) -> Dict[str, str]:
    try:
        return parse_token_cfg(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def write_token_cfg(path: Path, tokens: Dict[str, str]) -> None:
    atomic_write(path, "".join(f"{t} {tokens[t]}\n" for t in sorted(tokens)), 0o600)
