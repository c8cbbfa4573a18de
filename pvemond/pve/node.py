"""Node facts a root process reads cheaply: PVE version and its privileges, cluster membership and
quorum (/etc/pve/.members), which certificate files pveproxy serves (their content: served.py),
the firewall.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional, Tuple

# pve-access-control privilege lists (pveum.md §5). PVE 8 = stable-bookworm 8.2.x.
_COMMON = frozenset("""
Datastore.Allocate Datastore.AllocateSpace Datastore.AllocateTemplate Datastore.Audit
Group.Allocate Mapping.Audit Mapping.Modify Mapping.Use Permissions.Modify Pool.Allocate
Pool.Audit Realm.Allocate Realm.AllocateUser SDN.Allocate SDN.Audit SDN.Use Sys.AccessNetwork
Sys.Audit Sys.Console Sys.Incoming Sys.Modify Sys.PowerMgmt Sys.Syslog User.Modify VM.Allocate
VM.Audit VM.Backup VM.Clone VM.Config.CDROM VM.Config.CPU VM.Config.Cloudinit VM.Config.Disk
VM.Config.HWType VM.Config.Memory VM.Config.Network VM.Config.Options VM.Console VM.Migrate
VM.PowerMgmt VM.Snapshot VM.Snapshot.Rollback""".split())
PRIVILEGES = {
    8: _COMMON | {"VM.Monitor"},
    9: _COMMON | {"VM.Replicate", "VM.GuestAgent.Audit", "VM.GuestAgent.FileRead",
                  "VM.GuestAgent.FileSystemMgmt", "VM.GuestAgent.FileWrite",
                  "VM.GuestAgent.Unrestricted"},
}
LATEST_KNOWN = max(PRIVILEGES)
# Every privilege some supported version knows: a name outside it is a typo on any node.
ALL_PRIVILEGES = frozenset().union(*PRIVILEGES.values())


@dataclass(frozen=True)
class PveVersion:
    version: str  # e.g. "9.1.1"

    @property
    def major(self) -> int:
        m = re.match(r"(\d+)", self.version)
        return int(m.group(1)) if m else 0

    def privileges(self) -> FrozenSet[str]:
        """The privileges this version accepts; newer majors are assumed to keep the latest list."""
        return PRIVILEGES.get(self.major, PRIVILEGES[LATEST_KNOWN if self.major > 8 else 8])


def pve_version(pvecfg: str) -> Optional[PveVersion]:
    """pve-manager's version from the generated pvecfg.pm (no Perl, no subprocess)."""
    try:
        text = Path(pvecfg).read_text(encoding="utf-8")
    except OSError:
        return None
    m = re.search(r"sub\s+version\s*\{\s*return\s+'([^']+)'", text)
    return PveVersion(m.group(1)) if m else None


@dataclass(frozen=True)
class ClusterNode:
    name: str
    nodeid: int
    online: bool
    ip: Optional[str]


@dataclass(frozen=True)
class Cluster:
    nodename: str
    name: Optional[str]  # None on a standalone node
    quorate: bool
    nodes: Tuple[ClusterNode, ...]


def read_members(pve_dir: str) -> Optional[Cluster]:
    """Parse /etc/pve/.members; None when pmxcfs does not serve it (not a PVE node, or pmxcfs down)."""
    try:
        data = json.loads((Path(pve_dir) / ".members").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    nodename = str(data.get("nodename", ""))
    info = data.get("cluster")
    nodelist = data.get("nodelist") or {}
    nodes = tuple(sorted(
        (ClusterNode(name, int(n.get("id", 0)), bool(n.get("online")), n.get("ip"))
         for name, n in nodelist.items()), key=lambda n: n.nodeid))
    if not info:  # standalone: no corosync, so always quorate
        return Cluster(nodename, None, True, nodes or (ClusterNode(nodename, 0, True, None),))
    return Cluster(nodename, str(info.get("name")), bool(info.get("quorate")), nodes)


def pmxcfs_mounted(pve_dir: str) -> bool:
    """PVE's own check (check_cfs_is_mounted): the `local` symlink exists."""
    return (Path(pve_dir) / "local").is_symlink()


def tls_files(pve_dir: str) -> Tuple[Path, Path]:
    """The certificate and key pveproxy serves: the custom pair if both exist (pveproxy.pm init)."""
    local = Path(pve_dir) / "local"
    custom = (local / "pveproxy-ssl.pem", local / "pveproxy-ssl.key")
    if all(p.exists() for p in custom):
        return custom
    return local / "pve-ssl.pem", local / "pve-ssl.key"


def ca_file(pve_dir: str) -> Path:
    return Path(pve_dir) / "pve-root-ca.pem"


def firewall_enabled(pve_dir: str, nodename: str) -> bool:
    """Whether the Proxmox firewall filters this node: datacenter `enable` on (cluster.fw) and the
    host not opted out (host.fw `enable: 0`). pve-firewall must also run; not checked here."""
    cluster, host = _fw_files(pve_dir, nodename)
    return _fw_on(cluster.options.get("enable", "0")) and host.options.get("enable", "1") != "0"


def firewall_rule(nodename: str, port: int, sources, comment: str) -> str:
    """The command that opens `port` on this node's firewall (pvesh: the rule is enabled)."""
    source = f" --source {','.join(sources)}" if sources else ""
    return (f"pvesh create /nodes/{nodename}/firewall/rules --type in --action ACCEPT --proto tcp "
            f"--dport {port}{source} --enable 1 --comment '{comment}'")


def firewall_lets_in(pve_dir: str, nodename: str, port: int) -> Optional[str]:
    """What lets TCP `port` in past an enabled firewall (a rule, the policy), or None. Port 8006
    is also open to the `management` ipset by default; callers say so themselves."""
    cluster, host = _fw_files(pve_dir, nodename)
    if cluster.options.get("policy_in", "DROP").upper() == "ACCEPT":
        return "the datacenter input policy is ACCEPT"
    for where, fw in (("host.fw", host), ("cluster.fw", cluster)):
        rule = next((r for r in fw.rules if _accepts_tcp(r, port)), None)
        if rule:
            return f"{where}: {rule}"
    return None


@dataclass(frozen=True)
class _Firewall:
    options: Dict[str, str]
    rules: Tuple[str, ...]  # enabled rule lines, as written


def _fw_files(pve_dir: str, nodename: str) -> Tuple[_Firewall, _Firewall]:
    return (_fw_read(Path(pve_dir) / "firewall" / "cluster.fw"),
            _fw_read(Path(pve_dir) / "nodes" / nodename / "host.fw"))


def _fw_on(value: str) -> bool:
    """`enable` above 1 is an epoch stamp, on for 60 s only (pve-firewall's own quirk)."""
    n = int(value) if value.isdigit() else 0
    return n == 1 or (n > 1 and time.time() - n < 60)


def _fw_read(path: Path) -> _Firewall:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return _Firewall({}, ())
    options, rules, section = {}, [], ""
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if line.startswith("["):
            section = line.lower()
        elif section == "[options]" and ":" in line:
            key, _, value = line.partition(":")
            options[key.strip()] = value.strip()
        elif section == "[rules]" and line and not line.startswith("|"):  # "|" = disabled
            rules.append(line)
    return _Firewall(options, tuple(rules))


def _accepts_tcp(rule: str, port: int) -> bool:
    """`IN ACCEPT [-source S] -p tcp -dport P` (the parser takes -x and --x alike)."""
    words = rule.split()
    if words[:2] != ["IN", "ACCEPT"]:
        return False
    opts = dict(zip([w.lstrip("-") for w in words[2::2]], words[3::2]))
    proto = opts.get("p", opts.get("proto"))
    return proto == "tcp" and _port_in(opts.get("dport", ""), port)


def _port_in(spec: str, port: int) -> bool:
    for part in filter(None, spec.split(",")):
        lo, _, hi = part.partition(":")
        if lo.isdigit() and (hi or lo).isdigit() and int(lo) <= port <= int(hi or lo):
            return True
    return False
