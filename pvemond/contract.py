"""The contract between the node and the monitoring host: what crosses the claim port.

Stdlib only and shipped whole in pvemond-client: the node's claim listener and pvemond-claim both
import it, so a port, a route or an error code is written once.
"""
from __future__ import annotations

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
    REQUEST_TIMEOUT = "request_timeout"
