"""The daemon's REST API as seen from the node: HTTP over its root-only unix socket (stdlib)."""
from __future__ import annotations

import http.client
import json
import socket
from typing import Any, Dict, Optional


class DaemonDown(Exception):
    pass


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, data: Optional[Dict[str, Any]] = None):
        self.status, self.code, self.detail, self.data = status, code, detail, data or {}
        super().__init__(detail)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Client:
    def __init__(self, socket_path: str, timeout: float = 300.0):
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        conn = _UnixConnection(self.socket_path, self.timeout)
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload else {}
        try:
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonDown(f"pvemond is not running (no daemon at {self.socket_path}): "
                             "systemctl start pvemond") from None
        except PermissionError:
            raise DaemonDown(f"permission denied on {self.socket_path}: run this as root") from None
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonDown(f"lost the connection to pvemond ({exc}): "
                             "see journalctl -u pvemond") from None
        finally:
            conn.close()
        data = json.loads(raw.decode("utf-8")) if raw else None
        if resp.status >= 400:
            data = data if isinstance(data, dict) else {}
            raise ApiError(resp.status, data.get("error", "error"),
                           data.get("detail", f"HTTP {resp.status} {resp.reason}"), data)
        return data

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
