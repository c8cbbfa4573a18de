"""The contract between the node and the monitoring host: what crosses the claim port.

Stdlib only and shipped whole in pvemond-client: the node's claim listener and pvemond-claim both
import it, so a port, a route or an error code is written once.
"""
from __future__ import annotations

from pvemond.records import record

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays unloaded: pvemond/records.py says why
    from typing import Any, Dict, Optional, Tuple

CLAIM_PORT = 8116          # pvemond-bootstrap's claim listener, unless --port says otherwise
CLAIM_ROUTE = "/v1/claim"  # POST {"code": "XXXX-XXXX-XXXX"} -> 200 with the payload
PVE_PORT = 8006            # pveproxy's port is fixed

# The payload's "version": 1 when ca_pem holds the cluster CA that signed the node certificates;
# 2 adds "trust": "system" and ca_pem null: pveproxy serves a custom (e.g. ACME) certificate,
# which the consumer's own trust store verifies. A node writes 1 whenever it can.
PAYLOAD_VERSION = 1
SYSTEM_TRUST_VERSION = 2


class Refusal:
    """The claim listener's error codes (the JSON body's "code"), one name per outcome."""
    WRONG_CODE = "wrong_code"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    BURNED = "burned"
    ALREADY_CLAIMED = "already_claimed"
    IN_PROGRESS = "claim_in_progress"
    NOT_RECORDED = "not_recorded"
    NOT_ALLOWED = "source_not_allowed"
    RATE_LIMITED = "rate_limited"
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    LENGTH_REQUIRED = "length_required"
    HEADERS_TOO_LARGE = "headers_too_large"
    BODY_TOO_LARGE = "body_too_large"
    REQUEST_TIMEOUT = "request_timeout"


# ---------------------------------------------------------------------------------------------
# The payload: what the monitoring host receives for a claim code, checked once on arrival.
# NamedTuples, not dataclasses: importing dataclasses (and inspect with it) would cost
# pvemond-claim a tenth of its start-up.

TRUST_SYSTEM = "system"  # version 2: the consumer's own trust store verifies the node

# C0/C1 controls and YAML's extra line breaks: none belongs in a name, an address or a secret, and
# refusing them keeps every comment line and HTTP header of a rendering single-line. A set: the
# same character class as a regex takes 0.3 ms of every claim to compile.
_CONTROL = frozenset(map(chr, (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)))


class PayloadError(ValueError):
    """The payload is not one this pvemond-claim can use; the message names the field, never a
    value (a value may be the secret, and messages end up in logs)."""


@record
class Node:
    name: str
    address: str  # a name the node's certificate covers (ACME), else its IP
    url: str
    ip: Optional[str] = None  # beside a name: the IP for the monitoring host's /etc/hosts

    def to_json(self) -> Dict[str, str]:
        return {k: v for k, v in self._asdict().items() if v is not None}


@record
class Payload:
    """The claim payload. `secret` is None on the node until pveum made it (with_secret)."""
    user: str
    token_name: str
    node: str
    nodes: Tuple[Node, ...]
    cluster: Optional[str] = None
    ca_pem: Optional[str] = None      # None: version 2, the system's CAs verify the node
    secret: Optional[str] = None
    privsep: int = 0
    pve_version: Optional[str] = None
    fingerprint: Optional[str] = None
    privileges: Optional[Dict[str, int]] = None

    @property
    def token_id(self) -> str:
        return f"{self.user}!{self.token_name}"

    @property
    def token_string(self) -> str:
        return f"{self.token_id}={self.secret}"

    @property
    def version(self) -> int:
        return PAYLOAD_VERSION if self.ca_pem is not None else SYSTEM_TRUST_VERSION

    @property
    def system_trust(self) -> bool:
        return self.ca_pem is None

    def with_secret(self, secret: str) -> "Payload":
        return self._replace(secret=secret)

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "version": self.version, "user": self.user, "token_name": self.token_name,
            "token_id": self.token_id, "privsep": int(self.privsep), "cluster": self.cluster,
            "node": self.node, "nodes": [n.to_json() for n in self.nodes],
            "pve_version": self.pve_version, "ca_pem": self.ca_pem,
            "fingerprint": self.fingerprint, "privileges": dict(self.privileges or {}),
        }
        if self.system_trust:
            out["trust"] = TRUST_SYSTEM
        if self.secret is not None:
            out.update(secret=self.secret, token_string=self.token_string)
        return out

    @classmethod
    def from_json(cls, raw: object) -> "Payload":
        """The payload as received, every field pvemond-claim relies on checked."""
        if not isinstance(raw, dict):
            raise PayloadError(f"payload must be a JSON object, got {type(raw).__name__}")
        check_version(raw)
        text = {k: check_text(raw.get(k), k) for k in ("user", "token_name", "token_id", "secret",
                                                   "token_string", "node")}
        cluster = raw.get("cluster")
        ca_pem = raw.get("ca_pem")
        payload = cls(
            user=text["user"], token_name=text["token_name"], node=text["node"],
            nodes=_nodes(raw.get("nodes")),
            cluster=None if cluster is None else check_text(cluster, "cluster"),
            ca_pem=None if system_trust(raw) else (ca_pem if isinstance(ca_pem, str) else ""),
            secret=text["secret"], privsep=int(bool(raw.get("privsep"))),
            pve_version=raw.get("pve_version") if isinstance(raw.get("pve_version"), str) else None,
            fingerprint=raw.get("fingerprint") if isinstance(raw.get("fingerprint"), str) else None,
            privileges=raw.get("privileges") if isinstance(raw.get("privileges"), dict) else None,
        )
        # The three encodings (consumers.md) must agree, or some consumer gets a wrong credential.
        if text["token_id"] != payload.token_id:
            raise PayloadError(f"payload token_id {text['token_id']!r} is not user!token_name "
                               f"({payload.token_id})")
        if text["token_string"] != payload.token_string:
            raise PayloadError("payload token_string is not token_id=secret")
        return payload


def check_version(raw: Dict[str, Any]) -> None:
    version = raw.get("version")
    if version not in (PAYLOAD_VERSION, SYSTEM_TRUST_VERSION):
        raise PayloadError(f"payload version {version!r} is not supported (this pvemond-claim "
                           f"reads versions {PAYLOAD_VERSION} and {SYSTEM_TRUST_VERSION}); install "
                           "the pvemond-claim that matches the node's pvemond")


def system_trust(raw: Dict[str, Any]) -> bool:
    """The node's certificate is verified by the consumer's trust store, not by a CA we ship."""
    return raw.get("version") == SYSTEM_TRUST_VERSION and raw.get("trust") == TRUST_SYSTEM


def check_text(value: object, field: str) -> str:
    """`value` as a non-empty single-line string, else PayloadError naming `field`."""
    if not isinstance(value, str) or not value:
        got = "an empty string" if value == "" else type(value).__name__  # the type, never the value
        raise PayloadError(f"payload field {field!r} must be a non-empty string, got {got}")
    if not _CONTROL.isdisjoint(value):
        raise PayloadError(f"payload field {field!r} contains a control character or line break")
    return value


def _nodes(raw: object) -> Tuple[Node, ...]:
    if not isinstance(raw, list) or not raw:
        raise PayloadError("payload field 'nodes' must be a non-empty list of nodes")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise PayloadError(f"payload field 'nodes[{i}]' must be an object")
        ip = item.get("ip")
        out.append(Node(*(check_text(item.get(k), f"nodes[{i}].{k}") for k in Node._fields[:3]),
                        ip=None if ip is None else check_text(ip, f"nodes[{i}].ip")))
    return tuple(out)
