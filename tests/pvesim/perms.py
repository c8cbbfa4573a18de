"""Effective permissions (pveum.md §3): RPCEnvironment::permissions and friends.

A permission set maps privilege -> propagate flag (0/1); a key being present means the
privilege is held. Privsep=1 tokens only get what both the token's own ACLs and the
owning user grant; privsep=0 tokens are their user; unknown users/tokens get {}.
"""
from __future__ import annotations

import time
from typing import Dict, Optional

from . import names
from .usercfg import UserConfig

PermSet = Dict[str, int]
DEFAULT_PATHS = ("/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms")


class AccessError(Exception):
    """An authentication-time check failed; str() is the verify_token/check_* text."""


def roles(cfg: UserConfig, who: str, path: str) -> Dict[str, int]:
    """AccessControl::roles: role -> propagate along the ACL path; most specific level wins."""
    split = names.try_split_tokenid(who)
    if split:
        info = cfg.token(*split)
        if info is None:
            return {}
        if not names.perl_true(info.get("privsep")):
            return roles(cfg, split[0], path)
    levels = [p for p in path.split("/") if p]
    result: Dict[str, int] = {}
    for depth in range(len(levels) + 1):
        node = cfg.acl.get("/" + "/".join(levels[:depth]))
        if node is None:
            continue
        final = depth == len(levels)
        new = _level_roles(cfg, node, who, final)
        if new is not None:
            result = new  # overwrite what the parent levels granted
    if "NoAccess" in result:
        return {"NoAccess": result["NoAccess"]}
    return result


def _level_roles(cfg: UserConfig, node: dict, who: str, final: bool) -> Optional[Dict[str, int]]:
    """Roles granted at one tree node: token entries, else user entries, else groups."""
    for kind in ("tokens", "users"):
        entry = node[kind].get(who)
        if entry:
            picked = {r: p for r, p in entry.items() if final or p}
            if picked:
                return picked
    picked = {}
    for group, entry in node["groups"].items():
        if who in cfg.groups.get(group, {}).get("users", ()):
            picked.update({r: p for r, p in entry.items() if final or p})
    return picked or None


def _pool_roles(cfg: UserConfig, who: str) -> Dict[str, Dict[str, int]]:
    """Roles a subject holds on pool members through /pool/<pool> ACLs."""
    result: Dict[str, Dict[str, int]] = {}
    for pool, data in cfg.pools.items():
        pool_roles = roles(cfg, who, f"/pool/{pool}")
        if not pool_roles:
            continue
        members = [f"/vms/{v}" for v in data["vms"]] + [f"/storage/{s}" for s in data["storage"]]
        for member in members:
            for role in pool_roles:
                result.setdefault(member, {})[role] = 1
    return result


def _compile(cfg: UserConfig, who: str, path: str, owner_privs: Optional[PermSet]) -> PermSet:
    granted = dict(roles(cfg, who, path))
    pool = _pool_roles(cfg, who).get(path)
    if pool and "NoAccess" not in granted:
        if "NoAccess" in pool:
            granted = {"NoAccess": 0}
        else:
            for role in pool:
                granted.setdefault(role, 0)  # pool-derived roles never propagate
    privs: PermSet = {}
    for role, prop in granted.items():
        for priv in cfg.roles.get(role, ()):
            privs[priv] = 1 if (privs.get(priv) or prop) else 0
    if owner_privs is not None:  # privsep token: intersect with the owning user
        privs = {p: (1 if owner_privs[p] and v else 0) for p, v in privs.items() if p in owner_privs}
    return privs


def permissions(cfg: UserConfig, who: str, path: str) -> PermSet:
    """RPCEnvironment::permissions for a user or a full token id on one path."""
    if who == "root@pam":
        return {p: 1 for p in cfg.roles["Administrator"]}
    split = names.try_split_tokenid(who)
    if split:
        user, token = split
        info = cfg.token(user, token)
        if info is None:
            return {}
        user_privs = permissions(cfg, user, path)
        if not names.perl_true(info.get("privsep")):
            return user_privs
        return _compile(cfg, who, path, None if user == "root@pam" else user_privs)
    if not names.valid_username(who):
        return {}
    return _compile(cfg, who, path, None)


def effective_permissions(cfg: UserConfig, who: str) -> Dict[str, PermSet]:
    """get_effective_permissions: default paths + ACL tree + pool members, empty ones dropped."""
    paths = set(DEFAULT_PATHS) | cfg.acl_tree_paths()
    for data in cfg.pools.values():
        paths.update(f"/vms/{v}" for v in data["vms"])
        paths.update(f"/storage/{s}" for s in data["storage"])
    result = {}
    for path in paths:
        perms = permissions(cfg, who, path)
        if perms:
            result[path] = perms
    return result


def permission_dump(cfg: UserConfig, who: str, path: Optional[str] = None) -> Dict[str, PermSet]:
    """The `user permissions` / GET /access/permissions result (§3.3)."""
    if path:
        return {path: permissions(cfg, who, path)}
    return effective_permissions(cfg, who)


def has_privs(cfg: UserConfig, who: str, path: str, privs: "tuple[str, ...] | list[str]") -> bool:
    """RPCEnvironment::check with noerr."""
    held = permissions(cfg, who, names.normalize_path(path) or path)
    return all(p in held for p in privs)


# -- authentication-time checks ----------------------------------------------------
def check_user_exist(cfg: UserConfig, userid: str) -> dict:
    try:
        names.verify_username(userid)
    except names.Invalid as err:
        raise AccessError(str(err)) from None
    user = cfg.user(userid)
    if user is None:
        raise AccessError(f"no such user ('{userid}')\n")
    return user


def check_user_enabled(cfg: UserConfig, userid: str, now: Optional[float] = None) -> None:
    user = check_user_exist(cfg, userid)
    if not names.perl_true(user.get("enable")):
        raise AccessError(f"user '{userid}' is disabled\n")
    expire = int(user.get("expire") or 0)
    if expire and expire < (time.time() if now is None else now):
        raise AccessError(f"user '{userid}' access expired\n")


def check_token_exist(cfg: UserConfig, userid: str, tokenid: str) -> dict:
    user = check_user_exist(cfg, userid)
    token = user["tokens"].get(tokenid)
    if token is None:
        raise AccessError(f"no such token '{tokenid}' for user '{userid}'\n")
    return token
