"""Privilege names and built-in roles of PVE 8 and PVE 9.

Mirrors pve-access-control's $privgroups + create_roles(): every category has
root/admin/user/audit groups; built-in roles are unions of those groups.
PVE 8 = stable-bookworm 8.2.3 (42 privileges), PVE 9 = master >= 9.0.3 (47).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, List

Groups = Dict[str, Dict[str, List[str]]]

_VM_ADMIN_COMMON = [
    "VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network",
    "VM.Config.HWType", "VM.Config.Options", "VM.Allocate", "VM.Clone", "VM.Migrate",
    "VM.Snapshot", "VM.Snapshot.Rollback",
]
_VM_USER = ["VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.Backup", "VM.PowerMgmt"]


def _common_groups() -> Groups:
    return {
        "Sys": {
            "root": ["Sys.PowerMgmt", "Sys.Modify", "Sys.Incoming", "Sys.AccessNetwork"],
            "admin": ["Sys.Console", "Sys.Syslog"],
            "user": [],
            "audit": ["Sys.Audit"],
        },
        "Datastore": {
            "root": [],
            "admin": ["Datastore.Allocate", "Datastore.AllocateTemplate"],
            "user": ["Datastore.AllocateSpace"],
            "audit": ["Datastore.Audit"],
        },
        "SDN": {"root": [], "admin": ["SDN.Allocate", "SDN.Audit"], "user": ["SDN.Use"], "audit": ["SDN.Audit"]},
        "User": {
            "root": ["Realm.Allocate"],
            "admin": ["User.Modify", "Group.Allocate", "Realm.AllocateUser"],
            "user": [],
            "audit": [],
        },
        "Pool": {"root": [], "admin": ["Pool.Allocate"], "user": ["Pool.Audit"], "audit": ["Pool.Audit"]},
        "Mapping": {"root": [], "admin": ["Mapping.Modify"], "user": ["Mapping.Use"], "audit": ["Mapping.Audit"]},
    }


def _groups_pve8() -> Groups:
    groups = _common_groups()
    groups["VM"] = {"root": [], "admin": _VM_ADMIN_COMMON + ["VM.Monitor"], "user": _VM_USER, "audit": ["VM.Audit"]}
    return groups


def _groups_pve9() -> Groups:
    # 9.0.2 dropped VM.Monitor and added VM.GuestAgent.*; 9.0.3 added VM.Replicate. The
    # guest-agent file privileges are in the user group (PVEVMUser has them), as upstream.
    groups = _common_groups()
    groups["VM"] = {
        "root": [],
        "admin": _VM_ADMIN_COMMON + ["VM.GuestAgent.Unrestricted", "VM.Replicate"],
        "user": _VM_USER + ["VM.GuestAgent.FileRead", "VM.GuestAgent.FileWrite", "VM.GuestAgent.FileSystemMgmt"],
        "audit": ["VM.Audit", "VM.GuestAgent.Audit"],
    }
    return groups


@dataclass(frozen=True)
class Privileges:
    """The privilege universe of one PVE major version."""

    major: int
    valid: FrozenSet[str]
    builtin_roles: Dict[str, FrozenSet[str]]

    def is_builtin(self, role: str) -> bool:
        return role in self.builtin_roles


def _create_roles(groups: Groups) -> "tuple[set, Dict[str, FrozenSet[str]]]":
    valid = {"Permissions.Modify"}  # not contained in any group
    roles: Dict[str, set] = {"NoAccess": set(), "PVEAdmin": set(), "PVEAuditor": set()}
    for cat, cd in groups.items():
        valid.update(cd["root"] + cd["admin"] + cd["user"] + cd["audit"])
        for priv in cd["admin"] + cd["user"] + cd["audit"]:
            roles.setdefault(f"PVE{cat}Admin", set()).add(priv)
            roles["PVEAdmin"].add(priv)
        if cd["user"]:
            roles[f"PVE{cat}User"] = set(cd["user"] + cd["audit"])
        roles["PVEAuditor"].update(cd["audit"])
    # Only Administrator, root@pam and PVEMappingAdmin get Mapping.Modify.
    roles["PVEAdmin"].discard("Mapping.Modify")
    roles["PVETemplateUser"] = {"VM.Clone", "VM.Audit"}
    roles["Administrator"] = set(valid)
    return valid, {name: frozenset(privs) for name, privs in roles.items()}


def _build(major: int) -> Privileges:
    valid, roles = _create_roles(_groups_pve8() if major <= 8 else _groups_pve9())
    return Privileges(major=major, valid=frozenset(valid), builtin_roles=roles)


PVE8 = _build(8)
PVE9 = _build(9)


def for_major(major: int) -> Privileges:
    """PVE 8 list for majors <= 8, PVE 9 list otherwise."""
    return PVE8 if major <= 8 else PVE9
