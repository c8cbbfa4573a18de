"""What pveproxy on port 8006 looks like from the node: does it answer, which certificate does it
serve, who vouches for that certificate. No token involved (see api.py for calls with one).
"""
from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

from pvemond import tlspin
from pvemond.pve.api import CLOSE, HTTPSConnection


class Unreachable(Exception):
    pass


@dataclass(frozen=True)
class Served:
    der: bytes   # the leaf certificate pveproxy presents
    status: int  # its answer to an anonymous GET /api2/json/version (401 when healthy)


def probe(url: str, timeout: float = 10.0) -> Served:
    """One anonymous request, certificate not verified: we want to see what is served."""
    host, port = _host_port(url)
    conn = HTTPSConnection(host, port, tlspin.context(verify=False), timeout=timeout)
    try:
        conn.request("GET", "/api2/json/version", headers=CLOSE)
        der = conn.sock.getpeercert(binary_form=True)
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        raise Unreachable(f"cannot reach pveproxy at {url}: {exc}") from None
    finally:
        conn.close()
    return Served(der, status)


def verifies(url: str, cafile: Optional[str], timeout: float = 10.0) -> bool:
    """Whether the served chain verifies against `cafile` (None: the system's trust store).
    Host names are checked separately, against the node's own addresses."""
    host, port = _host_port(url)
    try:
        tlspin.connect(host, port, tlspin.context(cafile, check_name=False), timeout=timeout).close()
        return True
    except ssl.SSLCertVerificationError:
        return False
    except OSError as exc:
        raise Unreachable(f"cannot reach pveproxy at {url}: {exc}") from None


def _host_port(url: str):
    u = urlsplit(url)
    return u.hostname or "", u.port or 8006
