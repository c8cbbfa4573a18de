"""One authenticated API call as the pveproxy stand-in sees it, and upstream's permission checks
(api-permissions.md §2): `check` names the first missing privilege, `check_any` all of them."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from . import certs, perms
from .members import node_list, parse_members
from .state import NodeState, version_tuple
from .usercfg import UserConfig


class ApiError(Exception):
    """An error response: status, message (reason phrase), optional per-parameter errors."""

    def __init__(self, status: int, message: str, errors: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors


def perm_denied(what: str = "") -> ApiError:
    """raise_perm_exc: 'Permission check failed (WHAT)', or bare for an 'or' check."""
    return ApiError(403, "Permission check failed" + (f" ({what})" if what else "") + "\n")


def param_error(name: str, text: str) -> ApiError:
    return ApiError(400, "Parameter verification failed.\n", {name: text})


class Request:
    """Who calls, the node's current files, the query, and which node answers (`local`)."""

    def __init__(self, state: NodeState, who: str, cfg: UserConfig, query: Dict[str, str],
                 local: Optional[str] = None) -> None:
        self.state, self.who, self.cfg, self.query = state, who, cfg, query
        self.settings = state.settings()
        self.major = version_tuple(str(self.settings["pve_version"]))[0]
        self.members = parse_members(state.members.read_text(encoding="utf-8"))
        self.local = local or self.members.get("nodename") or self.settings.get("nodename", "pve1")

    def can(self, path: str, *privs: str) -> bool:
        """RPCEnvironment::check with noerr: every privilege held."""
        return perms.has_privs(self.cfg, self.who, path, list(privs))

    def can_any(self, path: str, *privs: str) -> bool:
        return any(self.can(path, p) for p in privs)

    def require(self, path: str, *privs: str) -> None:
        """check(): dies naming the first privilege missing."""
        for priv in privs:
            if not self.can(path, priv):
                raise perm_denied(f"{path}, {priv}")

    def require_any(self, path: str, *privs: str) -> None:
        """check_any(): dies naming every privilege of the list."""
        if not self.can_any(path, *privs):
            raise perm_denied(f"{path}, " + "|".join(privs))

    def nodes(self) -> List[Dict[str, Any]]:
        """[{name, online, local, ip?}], `local` relative to the node that answers."""
        return [dict(n, local=1 if n["name"] == self.local else 0) for n in node_list(self.members)]

    def target(self, node: str) -> Dict[str, Any]:
        """The node a /nodes/<node>/... call is forwarded to (proxyto, after the checks)."""
        known = {n["name"]: n for n in self.nodes()}
        if node not in known:
            raise ApiError(500, f"hostname lookup '{node}' failed - failed to get address info for: {node}: "
                                "Name or service not known\n")
        if not known[node].get("online"):
            raise ApiError(595, "No route to host")
        return known[node]

    def guests(self, node: Optional[str] = None, kind: Optional[str] = None) -> List[Dict[str, Any]]:
        return [g for g in self.settings.get("guests") or []
                if (node is None or g.get("node") == node) and (kind is None or g.get("type", "qemu") == kind)]

    def guest(self, node: str, kind: str, vmid: str) -> Dict[str, Any]:
        for g in self.guests(node, kind):
            if str(g["vmid"]) == str(vmid):
                return g
        conf = "qemu-server" if kind == "qemu" else "lxc"
        raise ApiError(500, f"Configuration file 'nodes/{node}/{conf}/{vmid}.conf' does not exist\n")

    def fingerprint(self, node: str) -> Optional[str]:
        """Cluster.pm get_node_fingerprint: pveproxy-ssl.pem if it exists (key unchecked)."""
        node_dir = self.state.pve_dir / "nodes" / node
        for name in ("pveproxy-ssl.pem", "pve-ssl.pem"):
            if (node_dir / name).exists():
                return certs.fingerprint(node_dir / name)
        return None


def choose(values: Sequence[str], name: str, value: Optional[str], required: bool = False) -> Optional[str]:
    """An enum parameter, checked as JSONSchema does upstream."""
    if value is None:
        if required:
            raise param_error(name, "property is missing and it is not optional")
        return None
    if value not in values:
        raise param_error(name, f"value '{value}' does not have a value in the enumeration "
                                f"'{', '.join(values)}'")
    return value
