"""The claim hand-off as pvemond-bootstrap runs it.

A forked child makes a key and certificate for this claim alone (claim.fresh_identity: it never
reads the node's key), binds the one-shot TLS listener as root (the port may be privileged),
drops to nobody, and dies with its parent (PR_SET_PDEATHSIG). It binds BEFORE the daemon mints,
so a busy port costs no token; the parent then passes it the payload, and from then on only the
child holds the secret. When a right code arrives, the child asks the parent, which records the
delivery with the daemon first: the secret leaves the node only once pvemond knows where it went.

Parent <-> child: one JSON object a line each way.
  child -> parent  {"port", "cert"} | {"error"}, then {"expires_at", "code"}, then
                   {"claiming": ip}* and the outcome {"status", "peer", "at", "attempts"}
  parent -> child  the payload, then one answer per "claiming": {"go": true|false}
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
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from pvemond import claim, procs, tlspin
from pvemond.config import ClaimConfig
from pvemond.contract import CLAIM_ROUTE

# How long the child waits for the parent's word on a claim (the parent waits out a daemon
# restart for less than this).
ANSWER_WAIT = 15.0


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


@dataclass(frozen=True)
class Claiming:
    """A right code arrived from `peer`: the parent must say whether the secret may leave."""

    peer: str


class Listener:
    """The child process serving the claim: bound at construction, serving once `arm`ed."""

    def __init__(self, cfg: ClaimConfig):
        self.code = ""  # made by the child with its expiry, known once armed
        self._read, child_write = os.pipe()
        child_read, self._write = os.pipe()
        tie = procs.tied_to_parent()
        self.pid = os.fork()
        if self.pid == 0:  # the child never returns
            os.close(self._read)
            os.close(self._write)
            _child(cfg, child_read, child_write, tie)
        os.close(child_read)
        os.close(child_write)
        self._reader = _LineReader(self._read)
        self.expires_at = 0.0
        first = self._expect("port", "the claim listener did not start", self.wait)
        self.port, self.cert_pem = first["port"], first["cert"]

    def arm(self, payload: bytes) -> None:
        """Hand the child the payload (it holds the secret); the code's lifetime starts now."""
        os.write(self._write, payload + b"\n")
        got = self._expect("expires_at", "the claim listener did not take the payload",
                           self.cancel)
        self.expires_at, self.code = got["expires_at"], got["code"]

    def _expect(self, key: str, otherwise: str, cleanup: Callable[[], Any]) -> Dict[str, Any]:
        """The child's next line, which must hold `key`; else clean up and raise its error."""
        got = self._line(timeout=30)
        if key not in got:
            cleanup()
            raise OSError(got.get("error", otherwise))
        return got

    def answer(self, go: bool) -> bool:
        """Tell the child; False if it is gone (then it sent nothing)."""
        try:
            os.write(self._write, json.dumps({"go": go}).encode() + b"\n")
            return True
        except BrokenPipeError:
            return False  # poll() reports how it ended

    def _line(self, timeout: Optional[float]) -> Dict[str, Any]:
        line = self._reader.line(timeout)
        if line is None:
            return {}
        return json.loads(line) if line else {"error": "the claim listener exited unexpectedly"}

    def poll(self, timeout: float) -> Union[None, Claiming, claim.Outcome]:
        got = self._line(timeout)
        if not got:
            return None
        if "claiming" in got:
            return Claiming(got["claiming"])
        self.wait()
        if "status" not in got:
            return claim.Outcome("stopped", None, None, 0)
        return claim.Outcome(**got)

    def cancel(self) -> claim.Outcome:
        """Stop serving (the child answers no one after this) and reap it."""
        if self.expires_at:
            self.answer(False)  # armed: a claim waiting for our word gets a no at once
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        end = time.monotonic() + 20
        while time.monotonic() < end:
            got = self.poll(max(0.0, end - time.monotonic()))
            if isinstance(got, Claiming):
                self.answer(False)
            elif got is not None:
                return got
        os.kill(self.pid, signal.SIGKILL)  # wedged: it must not outlive us holding the secret
        self.wait()
        return claim.Outcome("stopped", None, None, 0)

    def wait(self) -> None:
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _child(cfg: ClaimConfig, inbox: int, out: int, tie: Callable[[], None]) -> None:
    status = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # stdout is the parent's (events, configs); never keep it open
        reader = _LineReader(inbox)
        try:
            listener, port, cert = _bind(cfg, lambda ip: _ask(out, reader, ip))
        except OSError as exc:
            _send(out, error=str(exc))
            return
        _drop_root()
        tie()  # after the uid change, which clears it
        _send(out, port=port, cert=cert)
        payload = reader.line(None)
        if not payload:
            return  # the parent gave up before minting
        signal.signal(signal.SIGTERM, lambda *_: listener.stop())
        listener.arm(payload)
        del payload
        _send(out, expires_at=listener.expires_at, code=listener.code)
        _send(out, **asdict(listener.serve()))
        status = 0
    finally:
        os._exit(status)


def _bind(cfg: ClaimConfig, ask: Callable[[str], bool]) -> Tuple[claim.ClaimListener, int, str]:
    """A listener with this claim's own key, bound: (listener, port, certificate PEM). The key's
    memory files are closed when this returns; the key lives on only in the listener's TLS
    context."""
    with claim.fresh_identity() as (cert, key):
        listener = claim.ClaimListener(b"", None, cert, key, host=cfg.listen, port=cfg.port,
                                       ttl=cfg.ttl, max_attempts=cfg.max_attempts,
                                       allow=cfg.allow, log=_claim_log(), before_handout=ask)
        try:
            _, port = listener.bind()
        except OSError as exc:
            raise OSError(f"cannot listen on {cfg.listen} port {cfg.port}: "
                          f"{exc.strerror or exc}") from None
        return listener, port, Path(cert).read_text(encoding="ascii")


class _LineReader:
    def __init__(self, fd: int):
        self.fd, self.buf = fd, b""

    def line(self, timeout: Optional[float]) -> Optional[bytes]:
        """The next line without its newline; b"" at EOF, None when `timeout` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return b""
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line


def _ask(out: int, reader: _LineReader, ip: str) -> bool:
    """May the secret go to `ip`? Only once the parent has the delivery recorded."""
    _send(out, claiming=ip)
    raw = reader.line(ANSWER_WAIT)
    try:
        return json.loads(raw or b"{}").get("go") is True
    except (ValueError, AttributeError):
        return False


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


def offer(listener: Listener, address: str) -> Offer:
    """What to print: the code, and the pin and fingerprint of this claim's own certificate."""
    der = tlspin.pem_to_der(listener.cert_pem)
    return Offer(listener.code, listener.port, listener.expires_at, tlspin.pin_of_der(der),
                 tlspin.curl_pin(der), tlspin.fingerprint_of_der(der), address)


def commands(o: Offer, fmt: str = "pve-exporter", output: str = "/etc/prometheus/pve.yml") -> List[str]:
    host = f"[{o.address}]" if ":" in o.address else o.address
    body = json.dumps({"code": o.code})
    return [
        f"pvemond-claim {host}:{o.port} {o.code} --pin {o.pin} --format {fmt} -o {output}",
        f"curl -sS --insecure --pinnedpubkey '{o.curl_pin}' -H 'Content-Type: application/json' "
        f"-d '{body}' 'https://{host}:{o.port}{CLAIM_ROUTE}'",
    ]
