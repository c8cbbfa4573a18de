"""The pveproxy stand-in: HTTPS + API tokens over the simulated node's files (pveum.md §6).

Every request re-reads user.cfg, token.cfg, .members and settings.json, so a test sees
its changes at once. Routes (all GET, under /api2/json):
  /version, /access/permissions, /nodes, /nodes/<node>/status, /cluster/resources.
Other paths under /api2/json answer 501 "Method 'GET /x' not implemented" once the
caller is authenticated (auth comes first, as in pve-http-server); paths outside
/api2/json answer 404, except GET / (the GUI page, no auth needed).
"""
from __future__ import annotations

import json
import re
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from . import auth, certs, names, perms
from .members import node_list, parse_members
from .privileges import for_major
from .pvecfg import read_pvecfg
from .state import NodeState, version_tuple
from .usercfg import UserConfig, read_token_cfg, read_user_config

API_BASE = "/api2/json"
SERVER_NAME = "pve-api-daemon/3.0"
KERNELS = {8: "6.8.12-5-pve", 9: "6.17.2-1-pve"}
BOOT_TIME = time.time() - 86400 * 3 - 4242
NODE_STATS = {"cpu": 0.0123, "maxcpu": 8, "mem": 3221225472, "maxmem": 17179869184,
              "disk": 5368709120, "maxdisk": 107374182400}


class ApiError(Exception):
    """An error response: status, message (reason phrase), optional per-parameter errors."""

    def __init__(self, status: int, message: str, errors: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors


def perm_denied(path: str, priv: str) -> ApiError:
    return ApiError(403, f"Permission check failed ({path}, {priv})\n")


def choose_cert(state: NodeState) -> Tuple[Path, Path]:
    """pveproxy-ssl.pem/.key if BOTH exist, else pve-ssl.pem/.key (pveproxy.pm init)."""
    local = state.pve_dir / "local"
    custom = (local / "pveproxy-ssl.pem", local / "pveproxy-ssl.key")
    return custom if all(p.exists() for p in custom) else (local / "pve-ssl.pem", local / "pve-ssl.key")


# -- request context ----------------------------------------------------------------
class Request:
    """One authenticated API call: who, the node's current files, the query."""

    def __init__(self, state: NodeState, who: str, cfg: UserConfig, query: Dict[str, str]) -> None:
        self.state, self.who, self.cfg, self.query = state, who, cfg, query
        self.settings = state.settings()
        self.major = version_tuple(str(self.settings["pve_version"]))[0]

    def can(self, path: str, priv: str) -> bool:
        return perms.has_privs(self.cfg, self.who, path, [priv])

    def require(self, path: str, priv: str) -> None:
        if not self.can(path, priv):
            raise perm_denied(path, priv)

    def nodes(self) -> List[Dict[str, Any]]:
        return node_list(parse_members(self.state.members.read_text(encoding="utf-8")))

    def fingerprint(self, node: str) -> Optional[str]:
        """Cluster.pm get_node_fingerprint: pveproxy-ssl.pem if it exists (key unchecked)."""
        node_dir = self.state.pve_dir / "nodes" / node
        for name in ("pveproxy-ssl.pem", "pve-ssl.pem"):
            if (node_dir / name).exists():
                return certs.fingerprint(node_dir / name)
        return None


def _node_entry(req: Request, node: Dict[str, Any], with_type_id: bool) -> Dict[str, Any]:
    """API2Tools::extract_node_stats: stats only for online nodes and with Sys.Audit."""
    name = node["name"]
    entry: Dict[str, Any] = {"id": f"node/{name}", "node": name, "type": "node",
                             "status": "online" if node.get("online") else "offline"}
    if node.get("online"):
        entry["level"] = ""
        if req.can(f"/nodes/{name}", "Sys.Audit"):
            entry.update(NODE_STATS, uptime=int(time.time() - BOOT_TIME))
    if not with_type_id:
        fp = req.fingerprint(name)
        if fp:
            entry["ssl_fingerprint"] = fp
    return entry


# -- routes -------------------------------------------------------------------------
def get_version(req: Request) -> Dict[str, str]:
    return read_pvecfg(req.state.root / "usr" / "share" / "perl5" / "PVE" / "pvecfg.pm")


def get_permissions(req: Request) -> Dict[str, Dict[str, int]]:
    """AccessControl.pm permissions: self or an owned token freely, anyone else with Sys.Audit."""
    userid = req.query.get("userid") or req.who
    if not names.USERID_OR_TOKEN_RE.fullmatch(userid):
        raise ApiError(400, "Parameter verification failed.\n", {"userid": "value does not match the regex pattern"})
    owner = names.try_split_tokenid(userid)
    if userid != req.who and not (owner and owner[0] == req.who):
        req.require("/access", "Sys.Audit")
    path = req.query.get("path")
    return perms.permission_dump(req.cfg, userid, path if names.perl_true(path) else None)


def get_nodes(req: Request) -> List[Dict[str, Any]]:
    return [_node_entry(req, node, with_type_id=False) for node in req.nodes()]


def get_node_status(req: Request, node: str) -> Dict[str, Any]:
    req.require(f"/nodes/{node}", "Sys.Audit")
    known = {n["name"]: n for n in req.nodes()}
    if node not in known:
        raise ApiError(500, f"hostname lookup '{node}' failed - failed to get address info for: {node}: "
                            "Name or service not known\n")
    if not known[node].get("online"):
        raise ApiError(595, "No route to host")
    info = get_version(req)
    kernel = KERNELS[9 if req.major >= 9 else 8]
    mem_total, mem_used = NODE_STATS["maxmem"], NODE_STATS["mem"]
    return {
        "uptime": int(time.time() - BOOT_TIME), "cpu": NODE_STATS["cpu"], "wait": 0.0005, "idle": 0,
        "loadavg": ["0.12", "0.10", "0.08"], "kversion": f"Linux {kernel} #1 SMP PREEMPT_DYNAMIC PMX",
        "pveversion": f"pve-manager/{info['version']}/{info['repoid']}",
        "cpuinfo": {"cpus": NODE_STATS["maxcpu"], "cores": 4, "sockets": 1, "model": "Simulated CPU", "mhz": "2400.000"},
        "memory": {"total": mem_total, "used": mem_used, "free": mem_total - mem_used},
        "swap": {"total": 0, "used": 0, "free": 0},
        "rootfs": {"total": NODE_STATS["maxdisk"], "used": NODE_STATS["disk"],
                   "avail": NODE_STATS["maxdisk"] - NODE_STATS["disk"], "free": NODE_STATS["maxdisk"] - NODE_STATS["disk"]},
        "ksm": {"shared": 0}, "boot-info": {"mode": "efi", "secureboot": 0},
    }


RESOURCE_TYPES = ("vm", "storage", "node", "sdn")


def get_cluster_resources(req: Request) -> List[Dict[str, Any]]:
    """Nodes always (stats need Sys.Audit); guests need VM.Audit, storage Datastore.Audit."""
    want = req.query.get("type")
    if want is not None and want not in RESOURCE_TYPES:
        raise ApiError(400, "Parameter verification failed.\n", {
            "type": f"value '{want}' does not have a value in the enumeration '{', '.join(RESOURCE_TYPES)}'"})
    result: List[Dict[str, Any]] = []
    if want in (None, "vm"):
        for guest in req.settings.get("guests") or []:
            if req.can(f"/vms/{guest['vmid']}", "VM.Audit"):
                result.append(_guest_entry(guest))
    if want in (None, "storage"):
        for store in req.settings.get("storages") or []:
            if req.can(f"/storage/{store['storage']}", "Datastore.Audit"):
                result.append(_storage_entry(store))
    if want in (None, "node"):
        result.extend(_node_entry(req, node, with_type_id=True) for node in req.nodes())
    return result


def _guest_entry(guest: Dict[str, Any]) -> Dict[str, Any]:
    kind = guest.get("type", "qemu")
    return {
        "id": f"{kind}/{guest['vmid']}", "type": kind, "vmid": int(guest["vmid"]), "name": guest.get("name", ""),
        "node": guest.get("node", ""), "status": guest.get("status", "running"), "template": 0,
        "maxcpu": 2, "cpu": 0.01, "maxmem": 2147483648, "mem": 1073741824, "maxdisk": 34359738368, "disk": 0,
        "uptime": 3600, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
    }


def _storage_entry(store: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "id": f"storage/{store.get('node', '')}/{store['storage']}", "type": "storage",
        "storage": store["storage"], "node": store.get("node", ""), "status": "available",
        "plugintype": store.get("plugintype", "dir"), "content": store.get("content", "backup,iso,vztmpl"),
        "shared": int(store.get("shared", 0)), "disk": 5368709120, "maxdisk": 107374182400,
    }


Route = Callable[..., Any]
ROUTES: List[Tuple[str, "re.Pattern[str]", Route]] = [
    ("GET", re.compile(r"/version"), get_version),
    ("GET", re.compile(r"/access/permissions"), get_permissions),
    ("GET", re.compile(r"/nodes"), get_nodes),
    ("GET", re.compile(r"/nodes/([A-Za-z0-9\.\-_]+)/status"), get_node_status),
    ("GET", re.compile(r"/cluster/resources"), get_cluster_resources),
]


def dispatch(method: str, rel: str, req: Request) -> Any:
    for route_method, pattern, handler in ROUTES:
        m = pattern.fullmatch(rel)
        if m and route_method == method:
            return handler(req, *m.groups())
    raise ApiError(501, f"Method '{method} {rel}' not implemented")


# -- HTTP plumbing ------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "ProxyServer"

    def version_string(self) -> str:
        return SERVER_NAME

    def log_message(self, fmt: str, *args: Any) -> None:  # an access log line, never a header
        sys.stderr.write(f"{self.address_string()} - [{self.log_date_time_string()}] {fmt % args}\n")

    def do_GET(self) -> None:
        self.handle_any("GET")

    def do_POST(self) -> None:
        self.handle_any("POST")

    def do_PUT(self) -> None:
        self.handle_any("PUT")

    def do_DELETE(self) -> None:
        self.handle_any("DELETE")

    def handle_any(self, method: str) -> None:
        self._drain_body()
        url = urlsplit(self.path)
        if url.path != API_BASE and not url.path.startswith(API_BASE + "/"):
            self._non_api(method, url.path)
            return
        rel = url.path[len(API_BASE):] or "/"
        state = self.server.state
        settings = state.settings()
        privs = for_major(version_tuple(str(settings["pve_version"]))[0])
        cfg = read_user_config(state.user_cfg, privs, sys.stderr.write)
        try:
            secrets = read_token_cfg(state.token_cfg) if settings.get("token_verify", True) else {}
            who = auth.authenticate(self.headers.get("Authorization"), cfg, secrets)
        except auth.AuthFailure as failure:
            self._unauthorized(str(failure), settings)
            return
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            data = dispatch(method, rel, Request(state, who, cfg, query))
        except ApiError as err:
            self._send_json(err.status, {"data": None, "message": err.message,
                                         **({"errors": err.errors} if err.errors else {})}, err.message)
            return
        self._send_json(200, {"data": data})

    def _drain_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def _unauthorized(self, raw: str, settings: Dict[str, Any]) -> None:
        """401, reason per auth_errors, EMPTY body, no Content-Length, delayed (pveproxy: 3 s)."""
        sys.stderr.write(f"authentication failure; rhost={self.client_address[0]} msg={raw}\n")
        time.sleep(float(settings.get("auth_fail_delay", 3.0)))
        unified = settings.get("auth_errors", "unified") != "raw"
        reason = raw if (raw == auth.NO_TICKET or not unified) else auth.UNIFIED_REASON
        self.send_response(401, _reason(reason))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _send_json(self, status: int, body: Dict[str, Any], reason: Optional[str] = None) -> None:
        payload = (json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")
        self.send_response(status, _reason(reason) if reason else None)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "max-age=0")
        self.send_header("Pragma", "no-cache")
        self.end_headers()
        self.wfile.write(payload)

    def _non_api(self, method: str, path: str) -> None:
        if method == "GET" and path == "/":
            page = b"<!DOCTYPE html>\n<html><head><title>pve1 - Proxmox Virtual Environment</title></head></html>\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/html;charset=UTF-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        message = f"no such file '{path}'"
        self._send_json(404, {"data": None, "message": message}, message)


def _reason(text: str) -> str:
    """A reason phrase: the error text without newlines, latin-1 safe."""
    text = text.replace("\r", " ").replace("\n", " ").strip()
    return text.encode("latin-1", "replace").decode("latin-1")


class ProxyServer(ThreadingHTTPServer):
    """Threaded HTTPS server; the TLS handshake runs in the request thread."""

    daemon_threads = True

    def __init__(self, root: Path, host: str, port: int) -> None:
        self.state = NodeState(root)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        cert, key = choose_cert(self.state)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(str(cert), str(key))
        self.cert_path = cert
        super().__init__((host, port), Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # a failed handshake (e.g. the client rejected our cert) ends the connection
        try:
            Handler(conn, client_address, self)
        finally:
            try:
                conn.close()
            except OSError:
                pass


def parse_listen(listen: str) -> Tuple[str, int]:
    m = re.fullmatch(r"\[(.+)\]:(\d+)|([^:]+):(\d+)", listen)
    if not m:
        raise ValueError(f"--listen wants HOST:PORT or [V6]:PORT, got {listen!r}")
    return (m.group(1), int(m.group(2))) if m.group(1) else (m.group(3), int(m.group(4)))


def url_of(server: ProxyServer) -> str:
    host, port = server.server_address[:2]
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def serve(root: Path, listen: str) -> int:
    """Bind, print the URL as the first stdout line, serve until SIGTERM/SIGINT."""
    import signal

    host, port = parse_listen(listen)
    server = ProxyServer(root, host, port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    worker.start()
    sys.stderr.write(f"pvesim proxy: serving {server.cert_path} on {url_of(server)}\n")
    print(url_of(server), flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    return 0
