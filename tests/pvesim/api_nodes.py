"""Routes under /nodes (api-permissions.md §1, §2, §4). Upstream checks permissions before it
forwards a call to the named node (proxyto), so every handler checks first, then req.target()."""
from __future__ import annotations

import datetime as dt
import ssl
import time
from typing import Any, Dict, List

from . import certs, shapes
from .api_cluster import get_version, node_entry
from .request import ApiError, Request, choose, param_error, perm_denied

KERNELS = {8: "6.8.12-5-pve", 9: "6.17.2-1-pve"}
SUBSCRIPTION_URL = "https://www.proxmox.com/en/proxmox-virtual-environment/pricing"
GUEST_KINDS = {"qemu": "VM", "lxc": "CT"}


def get_nodes(req: Request) -> List[Dict[str, Any]]:
    return [node_entry(req, node, with_type_id=False) for node in req.nodes()]


def get_node_status(req: Request, node: str) -> Dict[str, Any]:
    req.require(f"/nodes/{node}", "Sys.Audit")
    req.target(node)
    info = get_version(req)
    kernel = KERNELS[9 if req.major >= 9 else 8]
    stats = shapes.NODE_STATS
    mem_total, mem_used, disk_total, disk_used = stats["maxmem"], stats["mem"], stats["maxdisk"], stats["disk"]
    return {
        "uptime": shapes.node_uptime(), "cpu": stats["cpu"], "wait": 0.0005, "idle": 0,
        "loadavg": ["0.12", "0.10", "0.08"], "kversion": f"Linux {kernel} #1 SMP PREEMPT_DYNAMIC PMX",
        "pveversion": f"pve-manager/{info['version']}/{info['repoid']}",
        "cpuinfo": {"cpus": stats["maxcpu"], "cores": 4, "sockets": 1, "model": "Simulated CPU", "mhz": "2400.000"},
        "memory": {"total": mem_total, "used": mem_used, "free": mem_total - mem_used},
        "swap": {"total": 0, "used": 0, "free": 0},
        "rootfs": {"total": disk_total, "used": disk_used, "avail": disk_total - disk_used,
                   "free": disk_total - disk_used},
        "ksm": {"shared": 0}, "boot-info": {"mode": "efi", "secureboot": 0},
    }


def get_node_version(req: Request, node: str) -> Dict[str, str]:
    req.target(node)
    return get_version(req)


def get_rrddata(req: Request, node: str) -> List[Dict[str, Any]]:
    req.require(f"/nodes/{node}", "Sys.Audit")
    choose(("hour", "day", "week", "month", "year", "decade"), "timeframe", req.query.get("timeframe"), True)
    choose(("AVERAGE", "MAX"), "cf", req.query.get("cf"))
    req.target(node)
    return shapes.rrd_points(int(time.time()))


def get_time(req: Request, node: str) -> Dict[str, Any]:
    req.require(f"/nodes/{node}", "Sys.Audit")
    req.target(node)
    now = int(time.time())
    return {"time": now, "localtime": now, "timezone": "UTC"}


def get_dns(req: Request, node: str) -> Dict[str, str]:
    req.require(f"/nodes/{node}", "Sys.Audit")
    req.target(node)
    return {"search": req.settings.get("domain") or "", "dns1": "192.0.2.1"}


def get_subscription(req: Request, node: str) -> Dict[str, Any]:
    """Subscription.pm get: user => 'all'; without Sys.Audit on /nodes/<n> only status,message,url.
    The `subscription` knob: null (no key: notfound) or the fields of a key."""
    req.target(node)
    info = _subscription(req.settings.get("subscription"))
    if not req.can(f"/nodes/{node}", "Sys.Audit"):
        return {k: info[k] for k in ("status", "message", "url") if k in info}
    return info


def _subscription(knob: Any) -> Dict[str, Any]:
    base = {"serverid": "0123456789ABCDEF0123456789ABCDEF", "sockets": 1, "url": SUBSCRIPTION_URL}
    if not knob:
        return {**base, "status": "notfound", "message": "There is no subscription key"}
    due = (dt.date.today() + dt.timedelta(days=200)).isoformat()
    return {**base, "status": "active", "level": "c", "key": "pve1c-0123456789", "productname":
            "Proxmox VE Community Subscription 1 CPU/year", "regdate": "2025-01-01 00:00:00",
            "nextduedate": due, "checktime": int(time.time()) - 3600, "message": "", **knob}


# -- guests ---------------------------------------------------------------------------
def get_guests(kind: str):
    def handler(req: Request, node: str) -> List[Dict[str, Any]]:
        """vmlist: 'Only list VMs where you have VM.Audit permissions on /vms/<vmid>.'"""
        req.target(node)
        return [shapes.guest_list_item(g) for g in req.guests(node, kind)
                if req.can(f"/vms/{g['vmid']}", "VM.Audit")]
    return handler


def get_guest_config(kind: str):
    def handler(req: Request, node: str, vmid: str) -> Dict[str, Any]:
        req.require(f"/vms/{vmid}", "VM.Audit")
        req.target(node)
        cfg = shapes.guest_config(req.guest(node, kind, vmid))
        if kind == "lxc" and req.major >= 9 and not req.can(f"/vms/{vmid}", "VM.Config.Options"):
            cfg.pop("env", None)  # delete_read_restricted_options (pve-container 9)
        return cfg
    return handler


def get_guest_status(kind: str):
    def handler(req: Request, node: str, vmid: str) -> Dict[str, Any]:
        req.require(f"/vms/{vmid}", "VM.Audit")
        req.target(node)
        return shapes.guest_status(req.guest(node, kind, vmid))
    return handler


def get_agent(req: Request, node: str, vmid: str, command: str) -> Dict[str, Any]:
    """Agent.pm: VM.Monitor on PVE 8; VM.GuestAgent.Audit|Unrestricted (check_any) on PVE 9."""
    if req.major >= 9:
        req.require_any(f"/vms/{vmid}", "VM.GuestAgent.Audit", "VM.GuestAgent.Unrestricted")
    else:
        req.require(f"/vms/{vmid}", "VM.Monitor")
    req.target(node)
    req.guest(node, "qemu", vmid)
    raise ApiError(500, "QEMU guest agent is not running\n")


# -- replication ----------------------------------------------------------------------
def _jobs(req: Request, node: str) -> List[Dict[str, Any]]:
    """The `replication` knob's jobs whose guest runs on `node` (the source), as job_status has them."""
    guests = {str(g["vmid"]): g for g in req.guests(node)}
    return [shapes.replication_job(job, guests[str(job["guest"])])
            for job in req.settings.get("replication") or [] if str(job["guest"]) in guests]


def get_replication(req: Request, node: str) -> List[Dict[str, Any]]:
    """Replication.pm status: PVE 8 checks without noerr (the first unauditable job: 403),
    PVE 9 with noerr (filtered)."""
    req.target(node)
    out = []
    for job in _jobs(req, node):
        path = f"/vms/{job['guest']}"
        if req.can(path, "VM.Audit"):
            out.append(job)
        elif req.major < 9:
            raise perm_denied(f"{path}, VM.Audit")
    return out


def get_replication_status(req: Request, node: str, jobid: str) -> Dict[str, Any]:
    req.target(node)
    for job in _jobs(req, node):
        if job["id"] == jobid:
            req.require(f"/vms/{job['guest']}", "VM.Audit")
            return job
    raise ApiError(500, f"no such replication job '{jobid}'\n")


# -- storage, disks, hardware, apt, certificates --------------------------------------
def get_node_storage(req: Request, node: str) -> List[Dict[str, Any]]:
    """Storage/Status.pm index: each storage with Datastore.Audit|Datastore.AllocateSpace."""
    req.target(node)
    return [shapes.storage_status(s) for s in req.settings.get("storages") or []
            if (s.get("node") == node or s.get("shared"))
            and req.can_any(f"/storage/{s['storage']}", "Datastore.Audit", "Datastore.AllocateSpace")]


DISK = {"devpath": "/dev/sda", "type": "ssd", "size": 128849018880, "model": "SIMULATED_SSD",
        "serial": "PVESIM0001", "vendor": "ATA", "wwn": "0x5000000000000001", "health": "PASSED",
        "gpt": 1, "rpm": 0, "used": "LVM", "osdid": -1, "osdid-list": None, "by_id_link": "/dev/disk/by-id/ata-PVESIM0001"}


def get_disks(req: Request, node: str) -> List[Dict[str, Any]]:
    """Disks.pm list: ['or', perm / Sys.Audit, perm /nodes/{node} Sys.Audit]: a bare 403."""
    if not (req.can("/", "Sys.Audit") or req.can(f"/nodes/{node}", "Sys.Audit")):
        raise perm_denied()
    req.target(node)
    return [dict(DISK)]


def get_smart(req: Request, node: str) -> Dict[str, Any]:
    req.require("/", "Sys.Audit")
    disk = req.query.get("disk")
    if not disk:
        raise param_error("disk", "property is missing and it is not optional")
    req.target(node)
    if disk != DISK["devpath"]:
        raise ApiError(500, f"no such disk '{disk}'\n")
    return {"health": "PASSED", "type": "ata", "attributes": []}


def get_pci(req: Request, node: str) -> List[Dict[str, Any]]:
    req.require_any("/", "Sys.Audit", "Sys.Modify")
    req.target(node)
    return [{"id": "0000:00:00.0", "class": "0x060000", "vendor": "0x8086", "device": "0x1237",
             "vendor_name": "Intel Corporation", "device_name": "440FX - 82441FX PMC [Natoma]",
             "subsystem_vendor": "0x1af4", "subsystem_device": "0x1100", "iommugroup": -1}]


def get_usb(req: Request, node: str) -> List[Dict[str, Any]]:
    req.require("/", "Sys.Modify")
    req.target(node)
    return []


def get_apt_update(req: Request, node: str) -> List[Dict[str, Any]]:
    req.require(f"/nodes/{node}", "Sys.Modify")
    req.target(node)
    return []


def get_certificates(req: Request, node: str) -> List[Dict[str, Any]]:
    """Certificates.pm info: user => 'all'; the node's pve-ssl.pem and pveproxy-ssl.pem."""
    req.target(node)
    node_dir = req.state.pve_dir / "nodes" / node
    return [_cert_info(node_dir / name) for name in ("pve-ssl.pem", "pveproxy-ssl.pem")
            if (node_dir / name).exists()]


def _cert_info(path) -> Dict[str, Any]:
    decoded = ssl._ssl._test_decode_cert(str(path))  # noqa: SLF001 - the stdlib's only decoder
    flat = lambda rdns: ", ".join(f"{k}={v}" for rdn in rdns for k, v in rdn)  # noqa: E731
    pem = certs.first_pem_cert(path.read_text())
    return {"filename": path.name, "fingerprint": certs.fingerprint(path), "subject": flat(decoded["subject"]),
            "issuer": flat(decoded["issuer"]), "notbefore": int(ssl.cert_time_to_seconds(decoded["notBefore"])),
            "notafter": int(ssl.cert_time_to_seconds(decoded["notAfter"])), "pem": pem,
            "san": [v for _, v in decoded.get("subjectAltName", ())], "public-key-type": "rsaEncryption"}


# One route per path pattern; node names as pve-common's pve-node format allows.
N = r"/nodes/([A-Za-z0-9\.\-_]+)"
V = r"(\d+)"
NODE_ROUTES = [
    ("/nodes", get_nodes),
    (f"{N}/status", get_node_status),
    (f"{N}/version", get_node_version),
    (f"{N}/rrddata", get_rrddata),
    (f"{N}/time", get_time),
    (f"{N}/dns", get_dns),
    (f"{N}/subscription", get_subscription),
    (f"{N}/qemu", get_guests("qemu")),
    (f"{N}/lxc", get_guests("lxc")),
    (f"{N}/qemu/{V}/config", get_guest_config("qemu")),
    (f"{N}/lxc/{V}/config", get_guest_config("lxc")),
    (f"{N}/qemu/{V}/status/current", get_guest_status("qemu")),
    (f"{N}/lxc/{V}/status/current", get_guest_status("lxc")),
    (f"{N}/qemu/{V}/agent/(info|get-time|get-timezone|get-fsinfo|get-osinfo|network-get-interfaces)", get_agent),
    (f"{N}/replication", get_replication),
    (f"{N}/replication/([0-9]+-[0-9]+)/status", get_replication_status),
    (f"{N}/storage", get_node_storage),
    (f"{N}/disks/list", get_disks),
    (f"{N}/disks/smart", get_smart),
    (f"{N}/hardware/pci", get_pci),
    (f"{N}/hardware/usb", get_usb),
    (f"{N}/apt/update", get_apt_update),
    (f"{N}/certificates/info", get_certificates),
]
