"""The daemon's REST API as seen from the node: HTTP over its root-only unix socket (stdlib),
one request per connection (pvemond.http1: http.client would slow every command's start)."""
from __future__ import annotations

import json
import socket
from typing import Any, Dict, Optional

from pvemond import http1

MAX_ANSWER = 16 << 20  # the daemon's biggest answer (a token list) is a few KiB


class DaemonDown(Exception):
    pass


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, data: Optional[Dict[str, Any]] = None):
        self.status, self.code, self.detail, self.data = status, code, detail, data or {}
        super().__init__(detail)


class Client:
    def __init__(self, socket_path: str, timeout: float = 300.0):
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        payload = json.dumps(body).encode() if body is not None else b""
        head = (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                f"Content-Length: {len(payload)}\r\n"
                + ("Content-Type: application/json\r\n" if payload else "") + "\r\n")
        try:
            answer = self._exchange(head.encode("ascii") + payload)
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonDown(f"pvemond is not running (no daemon at {self.socket_path}): "
                             "systemctl start pvemond") from None
        except PermissionError:
            raise DaemonDown(f"permission denied on {self.socket_path}: run this as root") from None
        except (OSError, http1.BadAnswer) as exc:  # e.g. a worker killed mid-answer
            raise DaemonDown(f"lost the connection to pvemond ({exc}): "
                             "see journalctl -u pvemond") from None
        data = json.loads(answer.body.decode("utf-8")) if answer.body else None
        if answer.status >= 400:
            data = data if isinstance(data, dict) else {}
            raise ApiError(answer.status, data.get("error", "error"),
                           data.get("detail", f"HTTP {answer.status} {answer.reason}"), data)
        return data

    def _exchange(self, request: bytes) -> http1.Answer:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
            return http1.exchange(sock, request, MAX_ANSWER)

    def health(self) -> Dict[str, Any]:
        return self.request("GET", "/v1/health")

    def status(self) -> Dict[str, Any]:
        return self.request("GET", "/v1/status")

    def converge(self, **body: Any) -> Dict[str, Any]:
        return self.request("POST", "/v1/converge", _drop_none(body))

    def mint(self, **body: Any) -> Dict[str, Any]:
        return self.request("POST", "/v1/tokens", _drop_none(body))

    def tokens(self) -> Dict[str, Any]:
        return self.request("GET", "/v1/tokens")

    def revoke(self, token: str) -> Dict[str, Any]:
        return self.request("DELETE", f"/v1/tokens/{token}")

    def doctor(self, fix: bool = False) -> Dict[str, Any]:
        return self.request("POST", "/v1/doctor", {"fix": fix})

    def uninstall(self, dry_run: bool) -> Dict[str, Any]:
        return self.request("POST", "/v1/uninstall", {"dry_run": dry_run})

    def finish_handout(self, handout_id: str, delivered: bool, to: str = "") -> Dict[str, Any]:
        return self.request("POST", f"/v1/handouts/{handout_id}", {"delivered": delivered, "to": to})


def _drop_none(body: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}
