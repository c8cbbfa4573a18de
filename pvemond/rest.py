"""The daemon's REST API (Flask app factory), reachable only from the node itself.

JSON in, JSON out, errors as {"error": code, "detail": sentence}. Callers are identified by the
peer credentials of the unix socket (root only) or, on the optional loopback TCP listener, by a
key from a root-only file.
"""
from __future__ import annotations

import hmac
import json
import logging
import re
import socket
import struct
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from flask import Blueprint, Flask, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from pvemond import apikey, jsonbody, names
from pvemond import config as config_mod
from pvemond.service import MIN_HANDOUT_TTL, NodeService, ServiceError

log = logging.getLogger("pvemond")
OPENAPI = Path(__file__).with_name("openapi.json")
v1 = Blueprint("v1", __name__, url_prefix="/v1")


def create_app(cfg: Optional[config_mod.Config] = None, service: Optional[NodeService] = None,
               *, trust_unidentified: bool = False) -> Flask:
    """`trust_unidentified` lets Flask's test client in (it has no socket to identify)."""
    cfg = cfg or config_mod.load()
    app = Flask("pvemond")
    app.config.update(PVEMOND=cfg, SERVICE=service or NodeService(cfg),
                      TRUST_UNIDENTIFIED=trust_unidentified)
    app.register_blueprint(v1)
    app.register_error_handler(ServiceError, _service_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    app.before_request(_identify_caller)
    return app


def svc() -> NodeService:
    return current_app.config["SERVICE"]


# --- who is calling ---------------------------------------------------------------------------

def _identify_caller() -> None:
    sock = request.environ.get("gunicorn.socket")
    if sock is None:
        if not current_app.config["TRUST_UNIDENTIFIED"]:
            raise ServiceError("forbidden", "cannot identify the caller", 403)
        g.caller = "test-client"
    elif sock.family == socket.AF_UNIX:
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
        if uid != 0:
            raise ServiceError("forbidden", f"uid {uid} may not use pvemond: run it as root", 403)
        g.caller, g.caller_pid = f"uid {uid} pid {pid}", pid
    else:
        _check_key()
        g.caller = f"tcp {request.remote_addr} (api key)"


def _check_key() -> None:
    try:  # read on every request: a key file made unsafe after start-up is refused at once
        key = apikey.read(current_app.config["PVEMOND"].daemon.tcp_key_file)
    except apikey.KeyFileError as exc:
        log.error("TCP listener refused a request: %s", exc)
        raise ServiceError("forbidden", str(exc), 403) from None
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise ServiceError("forbidden", "missing or wrong API key (Authorization: Bearer KEY)", 403)


# --- request bodies ---------------------------------------------------------------------------

def body(**fields: type) -> Dict[str, Any]:
    """The JSON object body, with only the named fields, each of the named type."""
    raw = _raw_body()
    if not raw:
        return {}
    if not request.is_json:
        raise ServiceError("bad_request", "send the body as Content-Type: application/json")
    try:
        data = jsonbody.parse(raw)
    except jsonbody.BodyError as exc:
        raise ServiceError("bad_request", str(exc)) from None
    if not isinstance(data, dict):
        raise ServiceError("bad_request", "the body must be a JSON object")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ServiceError("bad_request", f"unknown field {', '.join(unknown)} "
                           f"(allowed: {', '.join(fields) or 'none'})")
    for key, value in data.items():
        want = fields[key]
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ServiceError("bad_request", f"{key} must be {_TYPE_WORDS[want]}")
    token = data.get("token")
    if token is not None and names.tokenid_problem(token):
        raise ServiceError("bad_request", f"token: {names.tokenid_problem(token)}")
    return data


_TYPE_WORDS = {bool: "true or false", int: "a whole number", str: "a string", list: "a list"}


def _raw_body() -> bytes:
    """At most jsonbody.MAX_BYTES + 1 bytes of the body, read whatever Content-Length claims."""
    length = request.content_length
    if length is not None and length > jsonbody.MAX_BYTES:
        raise ServiceError("too_large", f"the body is larger than {jsonbody.MAX_BYTES} bytes", 413)
    raw = request.stream.read(jsonbody.MAX_BYTES + 1)
    if len(raw) > jsonbody.MAX_BYTES:
        raise ServiceError("too_large", f"the body is larger than {jsonbody.MAX_BYTES} bytes", 413)
    return raw


def _token_args(data: Dict[str, Any]) -> Tuple[Optional[str], Optional[bool]]:
    return data.get("token"), data.get("privsep")


# --- routes -----------------------------------------------------------------------------------

@v1.get("/health")
def health():
    return jsonify(svc().health())


@v1.get("/status")
def status():
    return jsonify(svc().status())


@v1.post("/converge")
def converge():
    data = body(dry_run=bool, token=str, privsep=bool)
    token, privsep = _token_args(data)
    return jsonify(svc().converge(caller=g.caller, dry_run=data.get("dry_run", False),
                                  token=token, privsep=privsep))


@v1.get("/tokens")
def tokens():
    return jsonify({"tokens": svc().tokens()})


@v1.post("/tokens")
def mint():
    data = body(token=str, privsep=bool, handout_ttl=int, dry_run=bool, rotate=bool,
                claim_port=int, claim_allow=list)
    token, privsep = _token_args(data)
    port, allow = _claim_args(data)
    rotate = data.get("rotate", False)
    ttl = svc().handout_ttl(data.get("handout_ttl", 660))  # refused, not clamped, dry runs too
    if data.get("dry_run"):
        return jsonify(svc().plan_mint(token=token, privsep=privsep, rotate=rotate))
    # The caller's PID (unix socket): when it dies, its hand-out ends and the token is revoked.
    m = svc().mint(caller=g.caller, token=token, privsep=privsep, rotate=rotate,
                   handout_ttl=ttl, owner=g.get("caller_pid"), claim_port=port, claim_allow=allow)
    return jsonify({"token_id": m.token_id, "secret": m.secret.reveal(), "how": m.how,
                    "steps": m.steps, "handout": {"id": m.handout, "deadline": m.deadline},
                    "payload": m.payload, "verified": m.verified, "node": m.node}), 201


# What the bootstrap passes on of its listener, only to word the firewall rule it should suggest:
# the port it bound (any, it is bound already) and --allow, already checked by its own config;
# here only the characters an address or CIDR has, as the OpenAPI document says.
_ALLOW_ITEM = re.compile(r"[0-9A-Fa-f:.]{1,39}(?:/[0-9]{1,3})?")


def _claim_args(data: Dict[str, Any]) -> Tuple[Optional[int], Tuple[str, ...]]:
    """The bootstrap's claim port and --allow, for the firewall warning in its mint answer."""
    port, allow = data.get("claim_port"), data.get("claim_allow", [])
    if port is not None and not 1 <= port <= 65535:
        raise ServiceError("bad_request", "claim_port must be 1-65535")
    if not all(isinstance(a, str) and _ALLOW_ITEM.fullmatch(a) for a in allow):
        raise ServiceError("bad_request", "claim_allow must be a list of addresses or CIDRs "
                           "(e.g. 192.0.2.20 or 2001:db8::/64)")
    return port, tuple(allow)


@v1.delete("/tokens/<name>")
def revoke(name: str):
    problem = names.tokenid_problem(name)
    if problem:
        raise ServiceError("bad_request", f"token: {problem}")
    return jsonify(svc().revoke(name, caller=g.caller))


@v1.post("/doctor")
def run_doctor():
    data = body(fix=bool)
    return jsonify(svc().doctor(caller=g.caller, fix=data.get("fix", False)))


@v1.post("/uninstall")
def uninstall():
    data = body(dry_run=bool)
    return jsonify(svc().uninstall(caller=g.caller, dry_run=data.get("dry_run", False)))


@v1.post("/handouts/<handout_id>")
def finish_handout(handout_id: str):
    data = body(delivered=bool, to=str)
    if "delivered" not in data:
        raise ServiceError("bad_request", "delivered (true or false) is required")
    return jsonify(svc().finish_handout(handout_id, caller=g.caller,
                                        delivered=data["delivered"], to=data.get("to", "")))


@v1.get("/openapi.json")
def openapi():
    return jsonify(openapi_document(current_app.config["PVEMOND"]))


def openapi_document(cfg: config_mod.Config) -> Dict[str, Any]:
    """openapi.json with this daemon's own limit: handout_ttl may not exceed
    daemon.handout_timeout (the service refuses more with a 400 naming the range)."""
    doc = json.loads(OPENAPI.read_text(encoding="utf-8"))
    ttl = doc["components"]["schemas"]["MintRequest"]["properties"]["handout_ttl"]
    ttl["minimum"], ttl["maximum"] = MIN_HANDOUT_TTL, cfg.daemon.handout_timeout
    ttl["default"] = min(ttl["default"], cfg.daemon.handout_timeout)
    return doc


# --- errors -----------------------------------------------------------------------------------

def _error(code: str, detail: str, status: int):
    return jsonify({"error": code, "detail": detail}), status


def _service_error(exc: ServiceError):
    return jsonify({**exc.extra, "error": exc.code, "detail": exc.detail}), exc.status


def _http_error(exc: HTTPException):
    code = (exc.name or "error").lower().replace(" ", "_")
    response, status = _error(code, exc.description or exc.name, exc.code or 500)
    # werkzeug's own headers, such as a 405's Allow (RFC 9110), but not its text/html type.
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response, status


def _unexpected(exc: Exception):
    log.exception("unexpected error")
    return _error("internal", f"unexpected {type(exc).__name__}; see journalctl -u pvemond", 500)
