"""What the API answers about guests, storages, nodes and replication jobs, built from the
simulator's knobs (api-permissions.md §4: types as upstream, vmid an int, flags 0/1)."""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Dict, List

BOOT_TIME = time.time() - 86400 * 3 - 4242
NODE_STATS = {"cpu": 0.0123, "maxcpu": 8, "mem": 3221225472, "maxmem": 17179869184,
              "disk": 5368709120, "maxdisk": 107374182400}
GUEST_STATS = {"maxcpu": 2, "cpu": 0.01, "maxmem": 2147483648, "mem": 1073741824,
               "maxdisk": 34359738368, "disk": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0}
STORE_SIZE = {"disk": 5368709120, "maxdisk": 107374182400}


def node_uptime() -> int:
    return int(time.time() - BOOT_TIME)


def guest_kind(guest: Dict[str, Any]) -> str:
    return guest.get("type", "qemu")


def guest_running(guest: Dict[str, Any]) -> bool:
    return guest.get("status", "running") == "running"


def guest_resource(guest: Dict[str, Any], major: int) -> Dict[str, Any]:
    """API2Tools extract_vm_stats: one qemu/lxc item of /cluster/resources."""
    kind = guest_kind(guest)
    entry = {"id": f"{kind}/{guest['vmid']}", "type": kind, "vmid": int(guest["vmid"]),
             "name": guest.get("name", ""), "node": guest.get("node", ""),
             "status": guest.get("status", "running"), "template": int(guest.get("template", 0)),
             "uptime": 3600 if guest_running(guest) else 0, **GUEST_STATS}
    if major >= 9 and kind == "qemu":
        entry["memhost"] = GUEST_STATS["mem"]
    entry.update({k: guest[k] for k in ("lock", "tags", "hastate") if guest.get(k)})
    return entry


def guest_list_item(guest: Dict[str, Any]) -> Dict[str, Any]:
    """One item of /nodes/<n>/qemu or /lxc (vmlist)."""
    kind = guest_kind(guest)
    item = {"vmid": int(guest["vmid"]), "name": guest.get("name", ""), "status": guest.get("status", "running"),
            "uptime": 3600 if guest_running(guest) else 0, "cpus": GUEST_STATS["maxcpu"],
            **{k: v for k, v in GUEST_STATS.items() if k != "maxcpu"}}
    if kind == "lxc":
        item.update(type="lxc", swap=0, maxswap=536870912)
    else:
        item.update(pid=4242 + int(guest["vmid"]) if guest_running(guest) else None, serial=0)
        if item["pid"] is None:
            del item["pid"]
    if guest.get("tags"):
        item["tags"] = guest["tags"]
    return item


def guest_status(guest: Dict[str, Any]) -> Dict[str, Any]:
    """…/status/current: the list item plus the live details."""
    status = dict(guest_list_item(guest), ha={"managed": 0})
    if guest_kind(guest) == "qemu":
        status.update(qmpstatus=status["status"], agent=int(guest.get("agent", 0)), swap=0, maxswap=0)
    return status


def guest_config(guest: Dict[str, Any]) -> Dict[str, Any]:
    """The config hash (+digest) of a guest: a few plausible keys, then its `config` knob."""
    name = guest.get("name", "")
    if guest_kind(guest) == "lxc":
        cfg = {"arch": "amd64", "hostname": name, "memory": 512, "swap": 512, "ostype": "debian",
               "rootfs": f"local:{guest['vmid']}/vm-{guest['vmid']}-disk-0.raw,size=8G",
               "net0": "name=eth0,bridge=vmbr0,ip=dhcp,type=veth", "cores": 1}
    else:
        cfg = {"name": name, "memory": "2048", "cores": 2, "sockets": 1, "ostype": "l26",
               "boot": "order=scsi0", "scsi0": f"local:{guest['vmid']}/vm-{guest['vmid']}-disk-0.qcow2,size=32G",
               "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0", "scsihw": "virtio-scsi-single"}
    if "onboot" in guest:
        cfg["onboot"] = int(guest["onboot"])
    cfg.update(guest.get("config") or {})
    if cfg.get("cipassword"):
        cfg["cipassword"] = "**********"
    cfg["digest"] = hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()
    return cfg


def storage_resource(store: Dict[str, Any]) -> Dict[str, Any]:
    """API2Tools extract_storage_stats: one storage item of /cluster/resources."""
    return {"id": f"storage/{store.get('node', '')}/{store['storage']}", "type": "storage",
            "storage": store["storage"], "node": store.get("node", ""), "status": "available",
            "plugintype": store.get("plugintype", "dir"), "content": store.get("content", "backup,iso,vztmpl"),
            "shared": int(store.get("shared", 0)), **STORE_SIZE}


def storage_status(store: Dict[str, Any]) -> Dict[str, Any]:
    """One item of /nodes/<n>/storage (Storage/Status.pm index)."""
    total, used = STORE_SIZE["maxdisk"], STORE_SIZE["disk"]
    return {"storage": store["storage"], "type": store.get("plugintype", "dir"),
            "content": store.get("content", "backup,iso,vztmpl"), "shared": int(store.get("shared", 0)),
            "active": 1, "enabled": 1, "total": total, "used": used, "avail": total - used,
            "used_fraction": used / total}


def replication_job(job: Dict[str, Any], guest: Dict[str, Any]) -> Dict[str, Any]:
    """ReplicationState job_status: the job config + vmtype, next_sync and the last run."""
    now = int(time.time())
    guest_id, jobnum = int(job["guest"]), int(job.get("jobnum", 0))
    entry = {"id": f"{guest_id}-{jobnum}", "type": "local", "guest": guest_id, "jobnum": jobnum,
             "target": job["target"], "source": guest.get("node", ""), "schedule": job.get("schedule", "*/15"),
             "vmtype": guest_kind(guest), "next_sync": now + 600, "last_sync": now - 300,
             "last_try": now - 300, "fail_count": int(job.get("fail_count", 0)), "duration": 2.5}
    if job.get("error"):
        entry["error"] = job["error"]
    return entry


def rrd_points(now: int) -> List[Dict[str, Any]]:
    """70 points of the hour timeframe, one a minute, as /nodes/<n>/rrddata answers."""
    mem, disk = NODE_STATS["maxmem"], NODE_STATS["maxdisk"]
    return [{"time": now - now % 60 - 60 * i, "cpu": 0.0123, "maxcpu": NODE_STATS["maxcpu"], "loadavg": 0.12,
             "iowait": 0.0005, "memused": NODE_STATS["mem"], "memtotal": mem, "netin": 1024.5,
             "netout": 2048.25, "rootused": NODE_STATS["disk"], "roottotal": disk, "swapused": 0,
             "swaptotal": 0} for i in reversed(range(70))]
