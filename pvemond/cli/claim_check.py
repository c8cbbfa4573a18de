"""pvemond-claim --check against the node: the token calls the node's API (TLS verified by the CA
just written), each failure turned into one sentence naming the cause and the fix; and the
consumer's user can read what was written. Stdlib only, Python >= 3.9."""
from __future__ import annotations

import socket
import ssl

from pvemond import prometheus, tlspin
from pvemond.cli.claim_base import EXIT_OK, Written, _check_failed, _clean, say
from pvemond.contract import PVE_PORT

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays unloaded: pvemond/records.py says why
    from typing import Any, Dict, List, Optional, Tuple


class _OnFirstUse:
    """A module imported when first used: only --check calls the node's API, and its import
    (dataclasses, inspect) would slow every claim's start."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib
        return getattr(importlib.import_module(self._name), attr)


api = _OnFirstUse("pvemond.pve.api")


def check(payload: Dict[str, Any], ca_path: Optional[str], timeout: float) -> int:
    url, ip = payload["nodes"][0]["url"], payload["nodes"][0].get("ip")

    def call(path: str) -> api.Response:
        return api.get(url, path, payload["token_id"], payload["secret"], cafile=ca_path,
                       timeout=timeout)

    try:
        version = call("/version")
        if version.status != 200:
            return _check_failed(_refused(version, url))
        resources = call("/cluster/resources")
    except api.ApiUnreachable as exc:
        return _check_failed(_unreachable(exc, url, ca_path, timeout, ip))
    if resources.status != 200:
        return _check_failed(_refused(resources, url))
    return _judge(url, version.data, resources.data)


def _refused(resp: api.Response, url: str) -> str:
    if resp.status == 401:
        return (f"{url} rejects the token (401): the user is disabled or expired, or the token "
                "was rotated or removed since; run pvemond-bootstrap on the node again")
    return f"{url} answered {resp.status} {_clean(resp.reason)}"


def _judge(url: str, version: Any, resources: Any) -> int:
    items = resources if isinstance(resources, list) else []
    kinds = [r.get("type") for r in items if isinstance(r, dict)]
    nodes, storages = kinds.count("node"), kinds.count("storage")
    guests = kinds.count("qemu") + kinds.count("lxc")
    release = version.get("version") if isinstance(version, dict) else None
    say(f"  check: {url}: Proxmox VE {_clean(release or '?')}; the token sees {nodes} node(s), "
        f"{guests} guest(s), {storages} storage(s)")
    if not items or nodes == len(items):
        return _check_failed(
            "the token sees nothing but nodes: a privilege-separated token without an ACL of "
            "its own, or an ACL that is not on / (or not propagated); run pvemond-bootstrap on "
            "the node again, it repairs both")
    return EXIT_OK


def _unreachable(exc: api.ApiUnreachable, url: str, ca_path: Optional[str], timeout: float,
                 ip: Optional[str] = None) -> str:
    """`ip`: the node's address when the payload names it by its certificate's DNS name."""
    cause = exc.__context__  # api.get raises `from None`; the cause is still recorded here
    host = _host_of(url)
    if ip and isinstance(cause, socket.gaierror):
        return (f"this host cannot resolve {host}, the name the node's certificate covers: add "
                f"it to DNS or add the line '{ip} {host}' to /etc/hosts")
    if ip and isinstance(cause, (ConnectionRefusedError, socket.timeout, TimeoutError)):
        return (f"this host cannot reach {host} port {PVE_PORT} (the name the node's certificate "
                f"covers; the node's address is {ip}): point {host} at {ip} in DNS or "
                f"/etc/hosts, and let port {PVE_PORT} through any firewall between them")
    if isinstance(cause, ssl.SSLCertVerificationError):
        return _tls_advice(cause, url, ca_path, timeout)
    if isinstance(cause, ConnectionRefusedError):
        return (f"{host} refused the connection to port {PVE_PORT}: pveproxy is down or a firewall "
                f"rejects port {PVE_PORT} from this host")
    if isinstance(cause, (socket.timeout, TimeoutError)):
        return (f"no answer from {host} port {PVE_PORT} within {timeout:g} s: a firewall may block "
                f"port {PVE_PORT} between this host and the node")
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve {host}: add it to DNS or /etc/hosts, or use its IP address"
    return str(exc)


def _host_of(url: str) -> str:
    return _split(url).hostname or url


def _split(url: str):
    from urllib.parse import urlsplit  # here: only a failed check takes a URL apart
    return urlsplit(url)


def _tls_advice(cause: ssl.SSLCertVerificationError, url: str, ca_path: Optional[str],
                timeout: float) -> str:
    host = _host_of(url)
    if ca_path and "key usage" in (cause.verify_message or ""):  # Python 3.13+, a legacy CA
        return (f"TLS verification of {url} failed ({_clean(cause.verify_message)}): the cluster "
                f"CA in {ca_path} predates pve-cluster 9.1.2 and this Python rejects it; update "
                "pvemond on the node (it hands out a copy re-issued with keyUsage) and claim again")
    sans = peer_sans(url, ca_path, timeout)
    if sans is None and ca_path is None:
        return (f"TLS verification of {url} failed ({_clean(cause.verify_message)}): this host's "
                "system CAs do not trust the node's certificate; install its issuing CA "
                "(update-ca-certificates) or ask the node's admin which CA signed it")
    if sans is None:
        return (f"TLS verification of {url} failed ({_clean(cause.verify_message)}): the "
                f"certificate on port {PVE_PORT} is not signed by the cluster CA in {ca_path} (a "
                "custom or ACME certificate?); for those, the system CA store applies")
    names = ", ".join(f"{kind}:{value}" for kind, value in sans) or "(none)"
    return (f"TLS verification of {url} failed: {host} is not in the node certificate's "
            f"subject alternative names ({names}); address the node by one of those names "
            "(e.g. in the config's host or URL)")


def peer_sans(url: str, ca_path: Optional[str], timeout: float) -> Optional[List[Tuple[str, str]]]:
    """The SANs of the certificate on `url`, verified against the CA but not the name; None when
    it does not chain to the CA or cannot be reached."""
    parts = _split(url)
    ctx = tlspin.context(ca_path, check_name=False)
    try:
        with tlspin.connect(parts.hostname or "", parts.port or PVE_PORT, ctx, timeout=timeout) as tls:
            return tlspin.peer_sans(tls)
    except (OSError, ssl.SSLError):
        return None


def check_readable(written: Written, owner: Optional[str], group: Optional[str]) -> int:
    """--owner/--group: the consumer's user can read the config and the CA."""
    if not written.config or not (owner or group):
        return EXIT_OK
    rc = EXIT_OK
    for path in (written.config, written.ca_path):
        why = prometheus.unreadable_by(path, owner) if owner and path else None
        if path and not why and group and not owner:
            why = prometheus.unreadable_by_group(path, group)
        if why:
            rc = _check_failed(why)
    if rc == EXIT_OK:
        say(f"  check: {owner or 'group ' + str(group)} can read {written.config}")
    return rc
