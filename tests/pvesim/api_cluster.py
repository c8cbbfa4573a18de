"""Routes under /version, /access and /cluster (api-permissions.md §1, §2, §4)."""
from __future__ import annotations

from typing import Any, Dict, List

from . import names, perms, shapes
from .pvecfg import read_pvecfg
from .request import Request, choose, param_error

RESOURCE_TYPES = ("vm", "storage", "node", "sdn")
NODE_KEEP = ("id", "node", "type", "status", "level")  # without Sys.Audit (extract_node_stats)


def get_version(req: Request) -> Dict[str, str]:
    return read_pvecfg(req.state.root / "usr" / "share" / "perl5" / "PVE" / "pvecfg.pm")


def get_permissions(req: Request) -> Dict[str, Dict[str, int]]:
    """AccessControl.pm permissions: self or an owned token freely, anyone else with Sys.Audit."""
    userid = req.query.get("userid") or req.who
    if not names.USERID_OR_TOKEN_RE.fullmatch(userid):
        raise param_error("userid", "value does not match the regex pattern")
    owner = names.try_split_tokenid(userid)
    if userid != req.who and not (owner and owner[0] == req.who):
        req.require("/access", "Sys.Audit")
    path = req.query.get("path")
    return perms.permission_dump(req.cfg, userid, path if names.perl_true(path) else None)


def get_users(req: Request) -> List[Dict[str, Any]]:
    """User.pm index: everyone with User.Modify|Sys.Audit on /access/groups, else only oneself."""
    full = req.can_any("/access/groups", "User.Modify", "Sys.Audit")
    out = []
    for userid in sorted(req.cfg.users):
        if not (full or userid == req.who):
            continue
        user = req.cfg.users[userid]
        item = {"userid": userid, "enable": int(user.get("enable") or 0), "expire": int(user.get("expire") or 0),
                "realm-type": userid.rsplit("@", 1)[1]}
        item.update({k: user[k] for k in ("firstname", "lastname", "email", "comment") if user.get(k)})
        out.append(item)
    return out


# -- /cluster -------------------------------------------------------------------------
def get_cluster_status(req: Request) -> List[Dict[str, Any]]:
    """Cluster.pm get_status: the cluster entry, then one entry per node; standalone one node."""
    req.require("/", "Sys.Audit")
    cluster = req.members.get("cluster")
    if not cluster:
        return [{"type": "node", "id": f"node/{req.local}", "name": req.local, "nodeid": 0, "local": 1,
                 "online": 1, "level": "", "ip": req.settings.get("ip", "")}]
    out: List[Dict[str, Any]] = [{"type": "cluster", "id": "cluster", "name": cluster["name"],
                                  "nodes": int(cluster["nodes"]), "version": int(cluster["version"]),
                                  "quorate": int(cluster["quorate"])}]
    for node in req.nodes():
        entry = {"type": "node", "id": f"node/{node['name']}", "name": node["name"], "nodeid": int(node["id"]),
                 "local": node["local"], "online": int(node.get("online") or 0), "level": ""}
        if node.get("ip"):
            entry["ip"] = node["ip"]
        out.append(entry)
    return out


def node_entry(req: Request, node: Dict[str, Any], with_type_id: bool) -> Dict[str, Any]:
    """API2Tools::extract_node_stats: stats only for online nodes and with Sys.Audit."""
    name = node["name"]
    entry: Dict[str, Any] = {"id": f"node/{name}", "node": name, "type": "node",
                             "status": "online" if node.get("online") else "offline"}
    if node.get("online"):
        entry["level"] = ""
        if req.can(f"/nodes/{name}", "Sys.Audit"):
            entry.update(shapes.NODE_STATS, uptime=shapes.node_uptime())
    if not with_type_id:
        fp = req.fingerprint(name)
        if fp:
            entry["ssl_fingerprint"] = fp
    return entry


def get_cluster_resources(req: Request) -> List[Dict[str, Any]]:
    """Cluster.pm resources: user => 'all', then a check per item (§2)."""
    want = choose(RESOURCE_TYPES, "type", req.query.get("type"))
    result: List[Dict[str, Any]] = []
    if want in (None, "vm"):
        result += _guest_items(req)
    if want in (None, "storage"):
        result += [shapes.storage_resource(s) for s in req.settings.get("storages") or []
                   if req.can(f"/storage/{s['storage']}", "Datastore.Audit")]
    if want in (None, "node"):
        result += [node_entry(req, node, with_type_id=True) for node in req.nodes()]
    if want is None:
        result += [{"id": f"pool/{p}", "type": "pool", "pool": p} for p in sorted(req.cfg.pools)
                   if req.can(f"/pool/{p}", "Pool.Audit")]
    if want in (None, "sdn"):
        result += _local_networks(req)
    return result


def _guest_items(req: Request) -> List[Dict[str, Any]]:
    out = []
    for guest in req.guests():
        if not req.can(f"/vms/{guest['vmid']}", "VM.Audit"):
            continue
        entry = shapes.guest_resource(guest, req.major)
        pool = req.cfg.vms.get(str(guest["vmid"]))
        if pool and req.can(f"/pool/{pool}", "Pool.Audit"):
            entry["pool"] = pool  # deleted without Pool.Audit on that pool
        out.append(entry)
    return out


def _local_networks(req: Request) -> List[Dict[str, Any]]:
    """The localnetwork zone of every online node: PVE 8 an sdn item, PVE 9 a network item
    (listed under type=sdn here too: EX and TG never ask for it)."""
    if not req.can("/sdn/zones/localnetwork", "SDN.Audit"):
        return []
    out = []
    for node in req.nodes():
        if not node.get("online"):
            continue
        name = node["name"]
        if req.major >= 9:
            out.append({"id": f"network/{name}/zone/localnetwork", "type": "network", "network": "localnetwork",
                        "network-type": "zone", "zone-type": "simple", "node": name, "status": "ok"})
        else:
            out.append({"id": f"sdn/{name}/localnetwork", "type": "sdn", "sdn": "localnetwork",
                        "node": name, "status": "ok"})
    return out


def get_not_backed_up(req: Request) -> List[Dict[str, Any]]:
    """BackupInfo.pm: Sys.Audit on /, then only guests with VM.Audit; `backup: true` covers one."""
    req.require("/", "Sys.Audit")
    return [{"vmid": int(g["vmid"]), "type": shapes.guest_kind(g), **({"name": g["name"]} if g.get("name") else {})}
            for g in req.guests()
            if not g.get("backup") and req.can(f"/vms/{g['vmid']}", "VM.Audit")]


def get_qdevice(req: Request) -> Dict[str, Any]:
    """ClusterConfig.pm status (qdevice): {} without a qdevice socket (the `qdevice` knob)."""
    req.require("/", "Sys.Audit")
    return dict(req.settings.get("qdevice") or {})
