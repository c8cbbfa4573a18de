"""The claim hand-off as pvemond-bootstrap runs it.

A forked child binds the one-shot TLS listener as root (it needs the node key), drops to nobody,
and serves; it alone holds the payload. The parent shows the code and a countdown, and tells the
daemon the outcome, which revokes the token unless it was claimed.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import os
import pwd
import select
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from pvemond import claim, codes, tlspin
from pvemond.config import ClaimConfig

EXIT_EXPIRED, EXIT_BURNED, EXIT_CANCELLED = 4, 5, 6


@dataclass(frozen=True)
class Offer:
    """What the admin reads on the node and types on the monitoring host."""

    code: str
    port: int
    expires_at: float
    pin: str
    curl_pin: str
    fingerprint: str
    address: str


class Listener:
    """The child process serving the claim; `wait()` returns its claim.Outcome."""

    def __init__(self, payload: bytes, cert: Path, key: Path, cfg: ClaimConfig):
        self.code = codes.new_code()
        self._read, write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child never returns
            os.close(self._read)
            _child(payload, self.code, cert, key, cfg, write)
        os.close(write)
        self._pending = b""
        first = self._line(timeout=30)
        if "port" not in first:
            self.wait()
            raise OSError(first.get("error", "the claim listener did not start"))
        self.port, self.expires_at = first["port"], first["expires_at"]

    def _line(self, timeout: Optional[float]) -> Dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._read], [], [], left)[0]:
                return {}
            chunk = os.read(self._read, 4096)
            if not chunk:
                return {"error": "the claim listener exited unexpectedly"}
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def poll(self, timeout: float) -> Optional[claim.Outcome]:
        got = self._line(timeout)
        if not got:
            return None
        self.wait()
        if "status" not in got:
            return claim.Outcome("stopped", None, None, 0)
        return claim.Outcome(**got)

    def cancel(self) -> claim.Outcome:
        """Stop serving (the child answers no one after this) and reap it."""
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        outcome = self.poll(20)
        if outcome is None:  # wedged: it must not outlive us holding the secret
            os.kill(self.pid, signal.SIGKILL)
            self.wait()
        return outcome or claim.Outcome("stopped", None, None, 0)

    def wait(self) -> None:
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _child(payload: bytes, code: str, cert: Path, key: Path, cfg: ClaimConfig, out: int) -> None:
    status = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # stdout is the parent's (events, configs); never keep it open
        listener = claim.ClaimListener(payload, code, str(cert), str(key), host=cfg.listen,
                                       port=cfg.port, ttl=cfg.ttl, max_attempts=cfg.max_attempts,
                                       allow=cfg.allow, log=_claim_log())
        del payload
        try:
            _, port = listener.bind()
        except OSError as exc:
            _send(out, error=f"cannot listen on {cfg.listen} port {cfg.port}: {exc.strerror}")
            return
        _drop_root()
        signal.signal(signal.SIGTERM, lambda *_: listener.stop())
        _send(out, port=port, expires_at=listener.expires_at)
        _send(out, **asdict(listener.serve()))
        status = 0
    finally:
        os._exit(status)


def _send(fd: int, **fields: Any) -> None:
    os.write(fd, json.dumps(fields).encode() + b"\n")


def _drop_root() -> None:
    """The network-facing process keeps nothing of root: no uid, no groups."""
    if os.geteuid() != 0:
        return
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)


def _claim_log() -> logging.Logger:
    """Attempts go to the terminal and, where there is one, to syslog/journald for fail2ban."""
    log = logging.getLogger("pvemond.claim")
    log.setLevel(logging.INFO)
    log.propagate = False
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter("\r\033[K  %(message)s" if sys.stderr.isatty()
                                          else "  %(message)s"))
    log.addHandler(stderr)
    if os.path.exists("/dev/log"):
        syslog = logging.handlers.SysLogHandler(address="/dev/log",
                                                facility=logging.handlers.SysLogHandler.LOG_AUTH)
        syslog.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(syslog)
    return log


def offer(listener: Listener, cert: Path, address: str) -> Offer:
    der = tlspin.pem_to_der(cert.read_text(encoding="ascii"))
    return Offer(listener.code, listener.port, listener.expires_at, tlspin.pin_of_der(der),
                 tlspin.curl_pin(der), tlspin.fingerprint_of_der(der), address)


def commands(o: Offer, fmt: str = "pve-exporter", output: str = "/etc/prometheus/pve.yml") -> List[str]:
    host = f"[{o.address}]" if ":" in o.address else o.address
    body = json.dumps({"code": o.code})
    return [
        f"pvemond-claim {host}:{o.port} {o.code} --pin {o.pin} --format {fmt} -o {output}",
        f"curl -sS --insecure --pinnedpubkey '{o.curl_pin}' -H 'Content-Type: application/json' "
        f"-d '{body}' 'https://{host}:{o.port}{claim.ROUTE}'",
    ]
