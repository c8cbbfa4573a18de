"""What pveproxy on port 8006 looks like from the node: does it answer, which certificate does it
serve, who vouches for that certificate. No token involved (see api.py for calls with one).
"""
from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit


class Unreachable(Exception):
    pass


@dataclass(frozen=True)
class Served:
    der: bytes   # the leaf certificate pveproxy presents
    status: int  # its answer to an anonymous GET /api2/json/version (401 when healthy)


def probe(url: str, timeout: float = 10.0) -> Served:
    """One anonymous request, certificate not verified: we want to see what is served."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    host, port = _host_port(url)
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    try:
        conn.request("GET", "/api2/json/version")
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
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    host, port = _host_port(url)
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=host):
            return True
    except ssl.SSLCertVerificationError:
        return False
    except OSError as exc:
        raise Unreachable(f"cannot reach pveproxy at {url}: {exc}") from None


def decode(pem_file: Path) -> dict:
    """notAfter and subjectAltName of a certificate file, as ssl.getpeercert() shows them."""
    try:
        return ssl._ssl._test_decode_cert(str(pem_file))  # type: ignore[attr-defined]
    except (AttributeError, OSError, ssl.SSLError):
        return {}


def _host_port(url: str):
    u = urlsplit(url)
    return u.hostname, u.port or 8006
