"""HTTPS calls to pveproxy with an API token, TLS verified (stdlib only).

Used on the node to prove a freshly minted token works, and on the monitoring host by
`pvemond-claim --check`. The secret goes into the Authorization header and nowhere else.
"""
from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from pvemond import tlspin

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays unloaded: pvemond/records.py says why
    from typing import Any, Optional


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    data: Any  # the "data" member of a JSON body, or None


class ApiUnreachable(Exception):
    pass


class TlsRefused(ApiUnreachable):
    """pveproxy answered, with a certificate that does not verify: it runs, the trust is wrong."""


# One request per connection, and the server told so: a server that writes its headers and its
# body apart (Python's http.server) otherwise holds the body back under Nagle until our delayed
# ACK, 40 ms later; closing pushes it out at once.
CLOSE = {"Connection": "close"}


class HTTPSConnection(http.client.HTTPSConnection):
    """http.client's HTTPS connection opened by tlspin.connect (so with `tls_name`). Here, not in
    tlspin: pvemond-claim imports tlspin for every claim, and http.client (with the email
    package) is a third of its start-up."""

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext, *, timeout: float,
                 tls_name: Optional[str] = None) -> None:
        super().__init__(host, port, timeout=timeout, context=ctx)
        self._ctx, self._tls_name = ctx, tls_name

    def connect(self) -> None:
        self.sock = tlspin.connect(self.host, self.port, self._ctx, timeout=self.timeout,
                                   tls_name=self._tls_name)


def get(base_url: str, path: str, token_id: str, secret: str, *, cafile: Optional[str],
        timeout: float = 15.0, tls_name: Optional[str] = None,
        context: Optional[ssl.SSLContext] = None) -> Response:
    """GET {base_url}/api2/json{path} as the token; `tls_name`: the name the certificate must
    cover when it is not the URL's host (tlspin.connect); `context`: one made already for
    `cafile` (tlspin.context)."""
    url = urlsplit(base_url)
    conn = HTTPSConnection(url.hostname or "", url.port or 8006, context or tlspin.context(cafile),
                           timeout=timeout, tls_name=tls_name)
    try:
        conn.request("GET", "/api2/json" + quote(path, safe="/?=&"),
                     headers={"Authorization": f"PVEAPIToken={token_id}={secret}",
                              "Accept": "application/json", **CLOSE})
        resp = conn.getresponse()
        body = resp.read()
    except ssl.SSLCertVerificationError as exc:
        named = f" as {tls_name}" if tls_name else ""
        raise TlsRefused(f"TLS verification of {base_url}{named} failed: "
                         f"{exc.verify_message}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise ApiUnreachable(f"cannot reach pveproxy at {base_url}: {exc}") from None
    finally:
        conn.close()
    return Response(resp.status, resp.reason, _data(body))


def _data(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8")).get("data") if body else None
    except (ValueError, AttributeError):
        return None
