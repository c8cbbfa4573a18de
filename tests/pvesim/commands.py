"""The pveum commands: handlers mirroring pve-access-control's API methods, and the cmddef.

Checks made before lock_user_config() die without a prefix; those inside it get
'<errmsg>: ' (e.g. 'create user failed: ').
"""
from __future__ import annotations

import random
import re
import uuid
from typing import Any, Callable, Dict, List, Tuple

from . import names, perms
from .cliopts import Param, ParamError
from .names import perl_true
from .privileges import Privileges
from .runtime import CliError, Command, Ctx, Tree, unsorted, usage_list
from .usercfg import UserConfig, acl_sort_key, new_user

# -- user ---------------------------------------------------------------------------
USER_FIELDS = ("firstname", "lastname", "email", "comment", "keys")


def _add_user_group(cfg: UserConfig, userid: str, group: str) -> None:
    if group not in cfg.groups:
        raise CliError(f"no such group '{group}'\n")
    cfg.users[userid]["groups"].add(group)
    cfg.groups[group]["users"].add(userid)


def _delete_user_group(cfg: UserConfig, userid: str) -> None:
    for group in cfg.groups.values():
        group["users"].discard(userid)
    if userid in cfg.users:
        cfg.users[userid]["groups"].clear()


def user_add(ctx: Ctx, p: Dict[str, str]) -> None:
    userid = p["userid"]

    def change(cfg: UserConfig) -> None:
        if userid in cfg.users:
            raise CliError(f"user '{userid}' already exists\n")
        if "password" in p:  # domain_set_password checks the realm; the secret is not kept
            realm = names.verify_username(userid)[2]
            if realm not in ctx.realms():
                raise CliError(f"auth domain '{realm}' does not exist\n")
        user = cfg.users[userid] = new_user(enable=p.get("enable", 1))
        if perl_true(p.get("expire")):
            user["expire"] = p["expire"]
        for group in names.split_list(p.get("groups")):
            _add_user_group(cfg, userid, group)
        user.update({k: p[k] for k in USER_FIELDS if perl_true(p.get(k))})
        ctx.save_cfg(cfg)

    ctx.locked("create user failed", change)


def user_modify(ctx: Ctx, p: Dict[str, str]) -> None:
    userid = p["userid"]

    def change(cfg: UserConfig) -> None:
        user = perms.check_user_exist(cfg, userid)
        user.update({k: p[k] for k in ("enable", "expire") if k in p})
        if "groups" in p and not perl_true(p.get("append")):
            _delete_user_group(cfg, userid)
        for group in names.split_list(p.get("groups")):
            _add_user_group(cfg, userid, group)
        user.update({k: p[k] for k in USER_FIELDS if k in p})
        ctx.save_cfg(cfg)

    ctx.locked("update user failed", change)


def user_delete(ctx: Ctx, p: Dict[str, str]) -> None:
    """No existence check upstream: deleting a missing user succeeds silently."""
    userid = p["userid"]

    def change(cfg: UserConfig) -> None:
        _delete_user_group(cfg, userid)
        cfg.users.pop(userid, None)
        for node in cfg.acl.values():  # the user's ACLs go; its tokens' ACLs and token.cfg lines stay
            node["users"].pop(userid, None)
        ctx.save_cfg(cfg)

    ctx.locked("delete user failed", change)


def user_list(ctx: Ctx, p: Dict[str, str]) -> List[dict]:
    cfg, realms = ctx.read_cfg(), ctx.realms()
    result = []
    for userid in sorted(cfg.users):
        data = cfg.users[userid]
        entry = {k: data[k] for k in ("enable", "expire") + USER_FIELDS if data.get(k) is not None}
        if "enabled" in p and perl_true(entry.get("enable")) != perl_true(p["enabled"]):
            continue
        if perl_true(p.get("full")):
            entry["groups"] = ",".join(sorted(data["groups"]))
            # null, not [], for a user without tokens: upstream copies the parsed hash, absent then
            entry["tokens"] = [{"tokenid": t, **data["tokens"][t]} for t in sorted(data["tokens"])] or None
        realm = names.USERID_RE.fullmatch(userid)
        if realm and realm.group(2) in realms:
            entry["realm-type"] = realms[realm.group(2)]
        entry["userid"] = userid
        result.append(entry)
    return result


def user_permissions(ctx: Ctx, p: Dict[str, str]) -> Dict[str, Dict[str, int]]:
    """Caller is root@pam, so any user or token may be dumped; ghosts give {}."""
    path = p.get("path") if perl_true(p.get("path")) else None
    return perms.permission_dump(ctx.read_cfg(), p.get("userid") or "root@pam", path)


# -- tokens -------------------------------------------------------------------------
def new_secret() -> str:
    return str(uuid.uuid4())  # lowercase, hyphenated, version 4


def token_add(ctx: Ctx, p: Dict[str, str]) -> dict:
    userid, tokenid = p["userid"], p["tokenid"]
    cfg = ctx.read_cfg()
    exists = cfg.token(userid, tokenid) is not None
    perms.check_user_exist(cfg, userid)
    if exists:
        raise ParamError({"tokenid": "Token already exists."})

    def change(cfg: UserConfig) -> dict:
        perms.check_user_exist(cfg, userid)
        if cfg.token(userid, tokenid) is not None:
            raise CliError("Token already exists.\n")
        full, value = f"{userid}!{tokenid}", new_secret()
        ctx.set_secret(full, value)  # token.cfg first, as TokenConfig::generate_token does
        info: Dict[str, Any] = {"privsep": p["privsep"] if "privsep" in p else 1}  # literal 1 if omitted
        if "expire" in p:
            info["expire"] = p["expire"]
        if perl_true(p.get("comment")):
            info["comment"] = p["comment"]
        cfg.users[userid]["tokens"][tokenid] = info
        ctx.save_cfg(cfg)
        return {"full-tokenid": full, "info": info, "value": value}

    return ctx.locked("generating token failed", change)


def token_modify(ctx: Ctx, p: Dict[str, str]) -> dict:
    userid, tokenid = p["userid"], p["tokenid"]
    perms.check_token_exist(ctx.read_cfg(), userid, tokenid)

    def change(cfg: UserConfig) -> dict:
        token = perms.check_token_exist(cfg, userid, tokenid)
        for key in names.split_list(p.get("delete")):
            token.pop(key, None)
        token.update({k: p[k] for k in ("privsep", "expire") if k in p})
        if perl_true(p.get("comment")):
            token["comment"] = p["comment"]
        ctx.save_cfg(cfg)
        result = dict(token)
        if perl_true(p.get("regenerate")):
            full, value = f"{userid}!{tokenid}", new_secret()
            ctx.set_secret(full, value)
            result.update({"full-tokenid": full, "value": value})
        return result

    return ctx.locked("updating token info failed", change)


def token_delete(ctx: Ctx, p: Dict[str, str]) -> None:
    userid, tokenid = p["userid"], p["tokenid"]
    perms.check_token_exist(ctx.read_cfg(), userid, tokenid)  # before the lock: no prefix

    def change(cfg: UserConfig) -> None:
        perms.check_token_exist(cfg, userid, tokenid)
        ctx.set_secret(f"{userid}!{tokenid}", None)
        del cfg.users[userid]["tokens"][tokenid]  # ACLs naming the token stay (dropped on parse)
        ctx.save_cfg(cfg)

    ctx.locked("deleting token failed", change)


def token_list(ctx: Ctx, p: Dict[str, str]) -> List[dict]:
    user = perms.check_user_exist(ctx.read_cfg(), p["userid"])
    return unsorted([{**info, "tokenid": t} for t, info in user["tokens"].items()], "tokenid")


def token_permissions(ctx: Ctx, p: Dict[str, str]) -> Dict[str, Dict[str, int]]:
    full = names.verify_tokenid(f"{p['userid']}!{p['tokenid']}")
    path = p.get("path") if perl_true(p.get("path")) else None
    return perms.permission_dump(ctx.read_cfg(), full, path)


# -- roles --------------------------------------------------------------------------
def role_add(ctx: Ctx, p: Dict[str, str]) -> None:
    role = p["roleid"]
    if re.match(r"PVE", role, re.I):
        raise ParamError({"roleid": "cannot use role ID starting with the (case-insensitive) 'PVE' namespace"})

    def change(cfg: UserConfig) -> None:
        if role in cfg.roles:
            raise CliError(f"role '{role}' already exists\n")
        cfg.roles[role] = set(names.split_list(p.get("privs")))
        ctx.save_cfg(cfg)

    ctx.locked("create role failed", change)


def role_modify(ctx: Ctx, p: Dict[str, str]) -> None:
    role = p["roleid"]
    if ctx.privs.is_builtin(role):
        raise CliError(f"auto-generated role '{role}' cannot be modified\n")

    def change(cfg: UserConfig) -> None:
        if role not in cfg.roles:
            raise CliError(f"role '{role}' does not exist\n")
        if not perl_true(p.get("append")):
            cfg.roles[role] = set()  # replace: no --privs empties the role
        cfg.roles[role].update(names.split_list(p.get("privs")))
        ctx.save_cfg(cfg)

    ctx.locked("update role failed", change)


def role_delete(ctx: Ctx, p: Dict[str, str]) -> None:
    role = p["roleid"]
    if ctx.privs.is_builtin(role):
        raise CliError(f"auto-generated role '{role}' cannot be deleted\n")

    def change(cfg: UserConfig) -> None:
        if role not in cfg.roles:
            raise CliError(f"role '{role}' does not exist\n")
        del cfg.roles[role]  # ACLs using it stay (upstream: "fixme: delete role from acl?")
        ctx.save_cfg(cfg)

    ctx.locked("delete role failed", change)


def role_list(ctx: Ctx, p: Dict[str, str]) -> List[dict]:
    cfg = ctx.read_cfg()
    rows = [
        {"privs": ",".join(sorted(privs)), "roleid": role, "special": 1 if ctx.privs.is_builtin(role) else 0}
        for role, privs in cfg.roles.items()
    ]
    return unsorted(rows, "roleid")


# -- ACLs ---------------------------------------------------------------------------
def acl_update(ctx: Ctx, p: Dict[str, str]) -> None:
    delete = perl_true(p.get("delete"))
    if not any(perl_true(p.get(k)) for k in ("users", "groups", "tokens")):
        raise ParamError({k: "either 'users', 'groups' or 'tokens' is required." for k in ("users", "groups", "tokens")})
    path = names.normalize_path(p["path"])
    if not path or (not delete and not names.check_path(path)):
        raise ParamError({"path": f"invalid ACL path '{p['path']}'"})

    def change(cfg: UserConfig) -> None:
        propagate = 1 if perl_true(p.get("propagate", "1")) else 0
        node = cfg.acl_node(path)

        def apply(kind: str, ugid: str, role: str) -> None:
            if delete:
                node[kind].get(ugid, {}).pop(role, None)
            else:
                node[kind].setdefault(ugid, {})[role] = propagate

        for role in names.split_list(p["roles"]):
            if role not in cfg.roles:
                raise CliError(f"role '{role}' does not exist\n")
            for group in names.split_list(p.get("groups")):
                if group not in cfg.groups:
                    raise CliError(f"group '{group}' does not exist\n")
                apply("groups", group, role)
            for userid in names.split_list(p.get("users")):
                names.verify_username(userid)
                if userid not in cfg.users:
                    raise CliError(f"user '{userid}' does not exist\n")
                apply("users", userid, role)
            for tokenid in names.split_list(p.get("tokens")):
                perms.check_token_exist(cfg, *names.split_tokenid(tokenid))
                apply("tokens", tokenid, role)
        ctx.save_cfg(cfg)

    ctx.locked("ACL update failed", change)


def acl_list(ctx: Ctx, p: Dict[str, str]) -> List[dict]:
    """Depth-first sorted paths; per node users, groups, tokens; ids and roles in hash order."""
    cfg, result = ctx.read_cfg(), []
    for path in sorted(cfg.acl, key=acl_sort_key):
        for kind in ("users", "groups", "tokens"):
            members = list(cfg.acl[path][kind].items())
            random.shuffle(members)
            for ugid, roles in members:
                role_items = list(roles.items())
                random.shuffle(role_items)
                for role, prop in role_items:
                    result.append({"path": path, "propagate": prop, "roleid": role, "type": kind[:-1], "ugid": ugid})
    return result


# -- command table ------------------------------------------------------------------
USERID = Param("userid", optional=False, fmt=names.verify_username)
TOKENID = Param("tokenid", optional=False, pattern=names.TOKEN_SUBID_RE)
ROLEID = Param("roleid", optional=False, fmt=names.verify_rolename)
EXPIRE = Param("expire", type="integer", minimum=0)
GROUPS = Param("groups", is_list=True, fmt=names.verify_groupname)
USER_OPTS = (
    Param("enable", type="boolean"), EXPIRE, Param("firstname"), Param("lastname"),
    Param("email", fmt=names.verify_email_opt), Param("comment"), Param("keys"), GROUPS,
)
TOKEN_OPTS = (EXPIRE, Param("privsep", type="boolean"), Param("comment"))
TOP_ALIASES = {
    "useradd": "user add", "usermod": "user modify", "userdel": "user delete",
    "roleadd": "role add", "rolemod": "role modify", "roledel": "role delete",
    "aclmod": "acl modify", "acldel": "acl delete",
}


def _priv_format(privs: Privileges) -> Callable[[str], str]:
    def verify(priv: str) -> str:
        if priv not in privs.valid:
            raise names.Invalid(f"invalid privilege '{priv}'\n")
        return priv

    return verify


def _enum_item(allowed: Tuple[str, ...]) -> Callable[[str], str]:
    def verify(value: str) -> str:
        if value not in allowed:
            raise names.Invalid(f"value '{value}' does not have a value in the enumeration '{', '.join(allowed)}'\n")
        return value

    return verify


def command_tree(ctx: Ctx) -> Tree:
    """The cmddef of the emulated pve-access-control version."""
    ac = ctx.access_control
    privs = Param("privs", is_list=True, fmt=_priv_format(ctx.privs))
    token_modify_opts = TOKEN_OPTS
    if ac >= (9, 0, 4):
        token_modify_opts += (Param("delete", is_list=True, fmt=_enum_item(("comment",))),)
    if ac >= (9, 1, 0):
        token_modify_opts += (Param("regenerate", type="boolean"),)
    token_delete_name = "delete" if ac >= (8, 2, 0) else "remove"
    token: Tree = {
        "add": Command(("user", "token", "add"), token_add, ("userid", "tokenid"), (USERID, TOKENID) + TOKEN_OPTS,
                       "object", write=True, format_options=True),
        "modify": Command(("user", "token", "modify"), token_modify, ("userid", "tokenid"),
                          (USERID, TOKENID) + token_modify_opts, "object", write=True, format_options=True),
        token_delete_name: Command(("user", "token", token_delete_name), token_delete, ("userid", "tokenid"),
                                   (USERID, TOKENID), "null", write=True, format_options=True),
        "list": Command(("user", "token", "list"), token_list, ("userid",), (USERID,), "array",
                        format_options=True, columns=("tokenid", "comment", "expire", "privsep")),
        "permissions": Command(("user", "token", "permissions"), token_permissions, ("userid", "tokenid"),
                               (USERID, TOKENID, Param("path")), "perm", format_options=True),
    }
    if token_delete_name == "delete":
        token["remove"] = "delete"  # alias since access-control 8.2.0
    acl_params = (
        Param("path", optional=False), Param("roles", is_list=True, optional=False, fmt=names.verify_rolename),
        Param("users", is_list=True, fmt=names.verify_username), GROUPS,
        Param("tokens", is_list=True, fmt=names.verify_tokenid), Param("propagate", type="boolean"),
    )
    tree: Tree = {
        "user": {
            "add": Command(("user", "add"), user_add, ("userid",),
                           (USERID,) + USER_OPTS + (Param("password", min_length=8, max_length=64),), write=True),
            "modify": Command(("user", "modify"), user_modify, ("userid",),
                              (USERID,) + USER_OPTS + (Param("append", type="boolean", requires="groups"),),
                              write=True),
            "delete": Command(("user", "delete"), user_delete, ("userid",), (USERID,), write=True),
            "list": Command(("user", "list"), user_list, (), (Param("enabled", type="boolean"),
                            Param("full", type="boolean")), "array", format_options=True,
                            columns=("userid", "enable", "expire", "firstname", "lastname", "email", "comment",
                                     "realm-type", "groups", "tokens")),
            "permissions": Command(("user", "permissions"), user_permissions, ("userid",),
                                   (Param("userid", pattern=names.USERID_OR_TOKEN_RE), Param("path")), "perm",
                                   format_options=True, optional_args=True),
            "token": token,
        },
        "role": {
            "add": Command(("role", "add"), role_add, ("roleid",), (ROLEID, privs), write=True),
            "modify": Command(("role", "modify"), role_modify, ("roleid",),
                              (ROLEID, privs, Param("append", type="boolean", requires="privs")), write=True),
            "delete": Command(("role", "delete"), role_delete, ("roleid",), (ROLEID,), write=True),
            "list": Command(("role", "list"), role_list, (), (), "array", format_options=True,
                            columns=("roleid", "privs", "special")),
        },
        "acl": {
            "modify": Command(("acl", "modify"), acl_update, ("path",), acl_params, write=True,
                              fixed={"delete": "0"}),
            "delete": Command(("acl", "delete"), acl_update, ("path",), acl_params, write=True,
                              fixed={"delete": "1"}),
            "list": Command(("acl", "list"), acl_list, (), (), "array", format_options=True,
                            columns=("path", "type", "ugid", "roleid", "propagate")),
        },
        "help": Command(("help",), lambda c, p: c.out.write(usage_list(command_tree(c))), ("extra-args",),
                        (Param("extra-args"), Param("verbose", type="boolean")), optional_args=True),
    }
    tree.update(TOP_ALIASES)
    return tree
