"""The certificate pveproxy serves, node side, in one place: which file (pveproxy.pm's rule), who
vouches for it (the cluster CA, strictly re-issued when it is legacy, or the system's CAs for a
custom one), when it expires, which names it covers, and so by which name each node is reached.
Used by the payload, the token verification, doctor and bootstrap.
"""
from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from pvemond import tlspin
from pvemond.contract import PVE_PORT
from pvemond.pve import node, strictca


@dataclass(frozen=True)
class Cert:
    file: Path
    custom: bool  # pveproxy-ssl.pem (ACME, `pvenode cert set`): the system's CAs vouch for it
    der: bytes
    not_after: Optional[str]  # as ssl shows it, e.g. "Nov 29 15:13:55 2028 GMT"
    sans: Tuple[Tuple[str, str], ...]  # ("DNS", name) / ("IP Address", ip)

    @property
    def fingerprint(self) -> str:
        return tlspin.fingerprint_of_der(self.der)

    @property
    def expires(self) -> Optional[float]:
        return ssl.cert_time_to_seconds(self.not_after) if self.not_after else None

    def names(self) -> List[str]:
        return [v for _, v in self.sans]

    def tls_name(self, host: str, nodename: str) -> Optional[str]:
        """The DNS name to verify this certificate against when it does not cover `host` (an
        ACME certificate reached by IP), or None when `host` will do. Prefers the node's own
        FQDN; a wildcard SAN is applied to the node name."""
        ips = {_ip_text(v) for k, v in self.sans if k == "IP Address"}
        names = [v.lower() for k, v in self.sans if k == "DNS"]
        if _ip_text(host) in ips or host.lower() in names or not names:
            return None
        exact = [v for v in names if not v.startswith("*.")]
        wild = [f"{nodename}.{v[2:]}" for v in names if v.startswith("*.")]
        own = [v for v in exact + wild if v.split(".")[0] == nodename.lower()]
        return (own or exact or wild)[0]


def read(path: Path, custom: bool = False) -> Cert:
    """The first (leaf) certificate of a PEM file; OSError/ValueError when it cannot be read."""
    der = tlspin.pem_to_der(path.read_text(encoding="ascii"))
    decoded = _decode(path)
    return Cert(path, custom, der, decoded.get("notAfter"),
                tuple((k, v.strip()) for k, v in decoded.get("subjectAltName", ())))


def local(pve_dir: str) -> Cert:
    """What this node's pveproxy serves (pveproxy-ssl.pem when it and its key exist)."""
    cert, _ = node.tls_files(pve_dir)
    return read(cert, custom=_is_custom(cert))


def custom_of(pve_dir: str, nodename: str) -> Optional[Cert]:
    """A node's own pveproxy-ssl.pem (readable from every cluster node), else None."""
    d = Path(pve_dir) / "nodes" / nodename
    pem = d / "pveproxy-ssl.pem"
    if not (pem.exists() and (d / "pveproxy-ssl.key").exists()):
        return None
    try:
        return read(pem, custom=True)
    except (OSError, ValueError):
        return None


def trust(pve_dir: str, state_dir: str) -> Optional[str]:
    """The CA file that vouches for this node's certificate, None for the system's CAs (custom).
    A cluster CA from before pve-cluster 9.1.2 lacks keyUsage: its strict re-issue."""
    cert, _ = node.tls_files(pve_dir)
    return None if _is_custom(cert) else str(strictca.strict_ca(pve_dir, state_dir))


def _is_custom(cert: Path) -> bool:
    """pveproxy-ssl.pem is the admin's (ACME, `pvenode cert set`); pve-ssl.pem the cluster CA's."""
    return cert.name == "pveproxy-ssl.pem"


def local_tls_name(pve_dir: str, url: str) -> Optional[str]:
    """The name to verify this node's certificate against when pvemond reaches pveproxy at
    `url` (127.0.0.1 by default) and the certificate does not cover that host."""
    members = node.read_members(pve_dir)
    nodename = members.nodename if members else socket.gethostname().split(".")[0]
    try:
        cert = local(pve_dir)
    except (OSError, ValueError):
        return None  # nothing to read a name from: verify the URL's host, and say so then
    return cert.tls_name(urlsplit(url).hostname or "", nodename)


def endpoints(cluster: Optional[node.Cluster], pve_dir: str) -> List[Dict[str, str]]:
    """Each node's name, address and API URL. The address is a name the node's own certificate
    covers when it has one that names no IP (ACME: pveproxy-ssl.pem with DNS names only), with
    the IP beside it for /etc/hosts; else, as PVE does, the .members IP (a standalone .members has
    none: resolve the node name, get_ip_from_hostname), else the name itself."""
    if cluster is None:
        return []
    out = []
    for n in cluster.nodes:
        local_node = n.name == cluster.nodename
        ip = n.ip or (local_node and _pve_ssl_ip(pve_dir)) or _resolve(n.name) or n.name
        custom = custom_of(pve_dir, n.name)
        name = custom.tls_name(ip, n.name) if custom else None
        address = name or ip
        host = f"[{address}]" if ":" in address else address
        out.append({"name": n.name, "address": address, "url": f"https://{host}:{PVE_PORT}/api2/json",
                    **({"ip": ip} if name and _is_ip(ip) else {})})
    return out


def _pve_ssl_ip(pve_dir: str) -> Optional[str]:
    """The node IP that PVE wrote into its own certificate's SAN when it generated it."""
    try:
        sans = read(Path(pve_dir) / "local" / "pve-ssl.pem").sans
    except (OSError, ValueError):
        return None
    ips = [v for k, v in sans if k == "IP Address"]
    return next((ip for ip in ips if not ipaddress.ip_address(ip).is_loopback), None)


def _resolve(name: str) -> Optional[str]:
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError:
        return None
    addrs = [i[4][0] for i in infos if not ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback]
    return addrs[0] if addrs else None


def _decode(path: Path) -> dict:
    """notAfter and subjectAltName as ssl.getpeercert() shows them. The stdlib parses a
    certificate file only through this private helper (CPython 3.9-3.13); without it, both
    come back empty and callers treat the certificate as naming nothing."""
    try:
        return ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
    except (AttributeError, OSError, ssl.SSLError):
        return {}


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _ip_text(value: str) -> str:
    """An address in one spelling (ssl writes IPv6 SANs uncompressed)."""
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        return value
