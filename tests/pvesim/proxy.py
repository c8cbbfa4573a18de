"""The pveproxy stand-in: HTTPS + API tokens over the simulated node's files (pveum.md §6).

Every request re-reads user.cfg, token.cfg, .members and settings.json, so a test sees
its changes at once. The GET routes are in routes.py (api_cluster.py, api_nodes.py).
Other paths under /api2/json answer 501 "Method 'GET /x' not implemented" once the
caller is authenticated (auth comes first, as in pve-http-server); paths outside
/api2/json answer 404, except GET / (the GUI page, no auth needed).
One server answers as one node (`node`, default the .members nodename): its certificate,
`local` in /cluster/status. A cluster runs one per node, each on that node's address.
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
from typing import Any, Dict, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from . import auth
from .privileges import for_major
from .request import ApiError, Request
from .routes import dispatch
from .state import NodeState, version_tuple
from .usercfg import read_token_cfg, read_user_config

API_BASE = "/api2/json"
SERVER_NAME = "pve-api-daemon/3.0"


def choose_cert(state: NodeState, node: Optional[str] = None) -> Tuple[Path, Path]:
    """pveproxy-ssl.pem/.key if BOTH exist, else pve-ssl.pem/.key (pveproxy.pm init), from the
    node's own directory (/etc/pve/local on the node itself)."""
    local = state.pve_dir / ("local" if node is None else f"nodes/{node}")
    custom = (local / "pveproxy-ssl.pem", local / "pveproxy-ssl.key")
    return custom if all(p.exists() for p in custom) else (local / "pve-ssl.pem", local / "pve-ssl.key")


# -- HTTP plumbing ------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # A buffered answer leaves in one write, as pveproxy sends it: headers and body apart, a
    # keep-alive client's delayed ACK holds the body back 40 ms (Nagle).
    wbufsize = -1
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
            data = dispatch(method, rel, Request(state, who, cfg, query, self.server.node))
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

    def __init__(self, root: Path, host: str, port: int, node: Optional[str] = None) -> None:
        self.state = NodeState(root)
        self.node = node  # the node this server answers as; None: the .members nodename
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        cert, key = choose_cert(self.state, node)
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


def serve(root: Path, listen: str, node: Optional[str] = None) -> int:
    """Bind, print the URL as the first stdout line, serve until SIGTERM/SIGINT."""
    import signal

    host, port = parse_listen(listen)
    server = ProxyServer(root, host, port, node)
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
