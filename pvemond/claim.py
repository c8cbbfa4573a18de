"""Claim codes and the one-shot TLS claim listener (the node side of the hand-over).

Stdlib only: it runs in the listener process after bootstrap has dropped root. The listener is
the only network-facing part of pvemond (DESIGN.md, security model): it serves a key made for
this claim alone (fresh_identity: never pveproxy's, so a code sent with this claim's pin cannot
reach pveproxy, and the listener holds no key of the node), takes a code on one route and hands
the payload out once. It exists until the claim
is taken, expires, is burned by wrong codes, or is stopped.

At accept, before any TLS work or thread, a connection is closed (TCP reset, no reply) when its
source is outside `--allow`, already holds `max_per_source` connections (an IPv6 /64 counts as
one source), opens connections too fast, or when `max_connections` are open in all.

Protocol: HTTPS (TLS >= 1.2, forward-secret suites only), HTTP/1.1, one request per connection.
  POST /v1/claim   body {"code": "XXXX-XXXX-XXXX"}   (at most 4 KiB, Content-Length required)
  200  the payload (JSON), once
  403  wrong_code (attempts_left)
  409  already_claimed (claimed_at, claimed_by: tamper evidence for the legitimate client)
       claim_in_progress     (the right code, while the node records another request's hand-out)
  410  burned, expired, cancelled
  503  not_recorded          (the node could not record the hand-out; Retry-After, code still valid)
  429  rate_limited          400 bad_request   404 not_found   405 method_not_allowed
  408  request_timeout       411 length_required  413 body_too_large  431 headers_too_large
Every error body is {"error": CODE, "detail": SENTENCE}. Only wrong codes count as attempts.

Logging: each request is logged at INFO as `claim attempt from IP: RESULT`, and each failure
also at WARNING as exactly `pvemond-claim: failed claim from IP: REASON`; a connection refused at
accept gets the WARNING line alone (REASON source_not_allowed, too_many_connections or
connection_rate_limited), at most once per source every few seconds. A fail2ban filter:
    [Definition]
    failregex = ^pvemond-claim: failed claim from <HOST>: 
The code and the payload (it holds the token secret) are never logged.
"""
from __future__ import annotations

import collections
import contextlib
import http
import ipaddress
import json
import logging
import os
import selectors
import socket
import ssl
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple, Union

from pvemond.codes import codes_match, new_code, normalize_code
from pvemond.contract import CLAIM_PORT, CLAIM_ROUTE
from pvemond.contract import Refusal as R

ROUTE = CLAIM_ROUTE
MAX_BODY = 4096
MAX_HEAD = 8192
MAX_SOURCES = 4096            # rate-limit buckets kept; beyond that idle ones are dropped
MAX_PER_SOURCE = 4            # concurrent connections per source: the claimant needs one
ACCEPT_RATE_FACTOR = 4        # connections may come this many times faster than requests
REFUSAL_LOG_INTERVAL = 5.0    # seconds between two accept-refusal lines for one source
REFUSAL_LOG_SOURCES = 1024    # sources whose last refusal line is remembered
ACCEPT_BATCH = 64             # connections accepted between two looks at expiry and stop()
DRAIN_LIMIT = 65536           # bytes read after an early answer so that it is not reset
DRAIN_SECONDS = 0.5
RETRY_AFTER = 2               # seconds, on 503 not_recorded
# TLS 1.2 stays: pvemond-claim supports Python >= 3.9, which does not imply TLS 1.3 (macOS's own
# python3 3.9 is built on LibreSSL 2.8, without it), nor does every curl the printed command meets.
# Forward secrecy costs no client anything, so TLS 1.2 offers ECDHE with AEAD only (TLS 1.3's
# suites are all forward secret and not affected by this string).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
log_default = logging.getLogger("pvemond.claim")


# ---------------------------------------------------------------------------------------------
# Results and small helpers

@dataclass(frozen=True)
class Outcome:
    status: str            # "claimed" | "expired" | "burned" | "stopped"
    peer: Optional[str]    # who claimed it; for "burned", who sent the last wrong code
    at: Optional[float]    # wall clock of the claim or the burn
    attempts: int          # wrong codes received


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    result: str            # "ok" or the error code, for the log
    reason: str = ""       # the log's failure reason (never the code or the payload)
    headers: Tuple[Tuple[str, str], ...] = ()


class _HttpError(Exception):
    def __init__(self, status: int, code: str, detail: str):
        super().__init__(code)
        self.reply = _error(status, code, detail)


def _error(status: int, code: str, detail: str, reason: str = "", **extra: object) -> _Reply:
    body = json.dumps({"error": code, "detail": detail, **extra}).encode()
    headers = {405: (("Allow", "POST"),), 503: (("Retry-After", str(RETRY_AFTER)),)}
    return _Reply(status, body, code, reason or code, headers.get(status, ()))


def _peer_ip(addr: Tuple) -> str:
    ip = ipaddress.ip_address(addr[0].split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)  # a dual-stack socket reports IPv4 as ::ffff:a.b.c.d
    return str(mapped or ip)


def _bucket_key(ip: str) -> str:
    # IPv6 hosts own a whole /64: per-address limits would be trivial to sidestep there.
    addr = ipaddress.ip_address(ip)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if addr.version == 6 else ip


def _reset(conn: socket.socket) -> None:
    """Close with a TCP reset: no FIN handshake and no TIME_WAIT kept for a refused peer."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    conn.close()


class _RateLimiter:
    """Token buckets per source: `rate` requests a second, bursts of `burst`."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]):
        self.rate, self.burst, self.clock = rate, float(burst), clock
        self._buckets: Dict[str, Tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        if self.rate <= 0:
            return True
        now = self.clock()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        ok = tokens >= 1
        self._buckets[key] = (tokens - 1 if ok else tokens, now)
        if len(self._buckets) > MAX_SOURCES:
            self._prune(now)
        return ok

    def _prune(self, now: float) -> None:
        full = [k for k, (t, last) in self._buckets.items()
                if t + (now - last) * self.rate >= self.burst]
        for key in full or list(self._buckets)[:len(self._buckets) // 2]:
            del self._buckets[key]


class _Throttle:
    """At most one event per key every `interval` seconds; remembers the `size` latest keys."""

    def __init__(self, interval: float, size: int):
        self.interval, self.size = interval, size
        self._last: "collections.OrderedDict[str, float]" = collections.OrderedDict()

    def due(self, key: str) -> bool:
        now = time.monotonic()
        last = self._last.pop(key, None)
        if last is not None and now - last < self.interval:
            self._last[key] = last
            return False
        self._last[key] = now
        while len(self._last) > self.size:
            self._last.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._last)


# ---------------------------------------------------------------------------------------------
# This claim's own key

@contextlib.contextmanager
def fresh_identity(openssl: str = "openssl") -> Iterator[Tuple[str, str]]:
    """A new ECDSA P-256 key and a self-signed certificate for one claim, as (certfile, keyfile):
    /proc/self/fd paths of two anonymous memory files (memfd), open in this process until the
    block ends (load them in it).

    The stdlib cannot make keys, so openssl (on every PVE node) does, writing through the same
    paths (it inherits the two descriptors under their numbers): no key material passes a
    command line or a pipe, and none touches a file system, so a kill at any instant leaves no
    key behind and a full disk cannot stop a claim. The certificate says one day (OpenSSL
    before 3.4 has no exact end date); the claim itself ends far sooner, and nothing answers
    with this key after that."""
    fds: List[int] = []
    try:
        try:
            fds.append(os.memfd_create("pvemond-claim.pem"))  # one by one: none leaks on EMFILE
            fds.append(os.memfd_create("pvemond-claim.key"))
            cert, key = (f"/proc/self/fd/{fd}" for fd in fds)
            subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                            "-days", "1", "-subj", "/CN=pvemond claim", "-batch"],
                           check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=30, pass_fds=fds)
        except (OSError, subprocess.SubprocessError) as exc:
            raise OSError(f"cannot make the claim's key with {openssl}: {_why(exc)}") from None
        yield cert, key
    finally:
        for fd in fds:
            os.close(fd)


def _why(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        return (exc.stderr or b"").decode(errors="replace").strip() or f"exit {exc.returncode}"
    return str(exc)


# ---------------------------------------------------------------------------------------------
# The listener

class ClaimListener:
    """One claim: `bind()` (loads the certificate and key), drop privileges, `serve()` until
    done. Without a `code` the listener makes its own, carrying its expiry (codes.new_code), at
    bind() and again at arm(); read it from `code`.

    `before_handout(peer_ip)`, when given, is called once a right code arrives and before the
    payload leaves (outside the lock; other requests are answered meanwhile): True hands the
    payload out, False (or an exception) keeps the code valid and answers 503 not_recorded. It
    must return within bounded time: expiry and stop wait for it."""

    def __init__(self, payload: bytes, code: Optional[str], certfile: str, keyfile: str, *,
                 host: str = "0.0.0.0", port: int = CLAIM_PORT, ttl: float = 600.0,
                 max_attempts: int = 5, allow: Iterable[Union[Network, str]] = (),
                 rate: float = 5.0, burst: int = 10, log: Optional[logging.Logger] = None,
                 clock: Callable[[], float] = time.monotonic, grace: float = 2.0,
                 max_connections: int = 32, timeout: float = 10.0,
                 max_per_source: int = MAX_PER_SOURCE,
                 before_handout: Optional[Callable[[str], bool]] = None):
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._payload: Optional[bytes] = bytes(payload)
        self._own_code = code is None
        self._code = "" if code is None else normalize_code(code)
        self._certfile, self._keyfile = certfile, keyfile
        self._host, self._port = host, port
        self._ttl, self._max_attempts, self._grace = ttl, max_attempts, grace
        self._allow: List[Network] = [ipaddress.ip_network(n, strict=False) for n in allow]
        self._limiter = _RateLimiter(rate, burst, clock)
        self._accepts = _RateLimiter(rate * ACCEPT_RATE_FACTOR, burst * ACCEPT_RATE_FACTOR, clock)
        self._refusals = _Throttle(REFUSAL_LOG_INTERVAL, REFUSAL_LOG_SOURCES)
        self._before_handout = before_handout
        self._log = log or log_default
        self._clock = clock
        self._timeout = timeout
        self._max_connections = max_connections
        self._max_per_source = max(1, min(max_per_source, max_connections))
        self._open: Dict[str, int] = {}  # open connections per source (bucket key)
        self._stats: "collections.Counter[str]" = collections.Counter()  # accepted, refusals
        self._lock = threading.Lock()
        self._state = "open"
        self._attempts = 0
        self._peer: Optional[str] = None
        self._at: Optional[float] = None
        self._burner: Tuple[Optional[str], Optional[float]] = (None, None)
        self._deadline = self._grace_end = 0.0
        self._stop_requested = False
        self._sock: Optional[socket.socket] = None
        self._ctx: Optional[ssl.SSLContext] = None
        self._wake_r = self._wake_w = None  # type: Optional[socket.socket]
        self._workers: Set[threading.Thread] = set()
        self._conns: Set[socket.socket] = set()
        self._last_full_log = -1e9
        self.expires_at: Optional[float] = None  # wall clock, known after bind()

    @property
    def state(self) -> str:
        """"open", "claiming", "claimed", "burned", "expired" or "stopped"."""
        return self._state

    @property
    def code(self) -> str:
        """The claim code (known after bind() when the listener makes it)."""
        return self._code

    @property
    def attempts(self) -> int:
        """Wrong codes so far (for a progress line; the Outcome carries the final count)."""
        return self._attempts

    # -- life cycle -----------------------------------------------------------------------------

    def bind(self) -> Tuple[str, int]:
        """Load the certificate and key and bind the socket; the TTL starts now."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(TLS12_CIPHERS)
        ctx.load_cert_chain(self._certfile, self._keyfile)
        ctx.set_alpn_protocols(["http/1.1"])
        six = ":" in self._host
        sock = socket.create_server(
            (self._host, self._port), family=socket.AF_INET6 if six else socket.AF_INET,
            backlog=64, dualstack_ipv6=six and self._host == "::" and socket.has_dualstack_ipv6())
        sock.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._ctx, self._sock = ctx, sock
        self._start_ttl()
        host, port = sock.getsockname()[:2]
        self._log.info("claim listener on %s port %d, expires in %.0f s", host, port, self._ttl)
        return host, port

    def arm(self, payload: bytes) -> None:
        """Give a listener bound before the secret existed its payload; the TTL starts again."""
        self._payload = bytes(payload)
        self._start_ttl()

    def _start_ttl(self) -> None:
        self._deadline = self._clock() + self._ttl
        self.expires_at = time.time() + self._ttl
        if self._own_code:  # the code names the minute it expires in, so it changes with it
            self._code = new_code(self.expires_at)

    def stop(self) -> None:
        """End serve() soon; safe from another thread and from a signal handler (no locks)."""
        self._stop_requested = True
        self._wake()

    def _wake(self) -> None:
        try:
            if self._wake_w is not None:
                self._wake_w.send(b"x")
        except OSError:
            pass  # buffer full (a wake-up is pending anyway) or already closed

    def serve(self) -> Outcome:
        """Accept connections until claimed (+ grace), expired, burned or stopped."""
        if self._sock is None:
            self.bind()
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while True:
                status = self._finished()
                if status:
                    break
                for key, _ in sel.select(timeout=0.1):
                    if key.data == "accept":
                        self._accept_all()
                    else:
                        self._drain_wake()
        finally:
            sel.close()
            self._shutdown()
        self._log.info("claim listener closed: %s after %d wrong code(s)", status, self._attempts)
        return Outcome(status, self._peer, self._at, self._attempts)

    def _finished(self) -> Optional[str]:
        """The end state, or None while serving; "claiming" waits for its hook to answer."""
        with self._lock:
            now = self._clock()
            if self._state == "open" and self._stop_requested:
                self._state = "stopped"
            elif self._state == "open" and now >= self._deadline:
                self._state = "expired"
                self._log.info("claim code expired unused")
            if self._state == "claimed":
                return "claimed" if now >= self._grace_end or self._stop_requested else None
            return None if self._state in ("open", "claiming") else self._state

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except OSError:
            pass

    def _shutdown(self) -> None:
        for s in (self._sock, self._wake_r, self._wake_w):
            s.close()
        self._payload = None
        # Let answers in flight (the burner's 410, a racer's 409) finish, then cut the rest.
        self._join_workers(1.0)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._join_workers(2.0)

    def _join_workers(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        with self._lock:
            workers = list(self._workers)
        for t in workers:
            t.join(max(0.0, end - time.monotonic()))

    # -- accepting: who may cost a handshake and a thread ----------------------------------------

    def _accept_all(self) -> None:
        for _ in range(ACCEPT_BATCH):  # then look at the clock and stop(): floods never end
            try:
                conn, addr = self._sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. out of file descriptors: back off, do not spin
                self._log.warning("claim listener: accept failed: %s", exc)
                time.sleep(0.05)
                return
            self._start(conn, addr)

    def _start(self, conn: socket.socket, addr: Tuple) -> None:
        try:
            ip = _peer_ip(addr)
        except ValueError:
            _reset(conn)
            return
        key = _bucket_key(ip)
        refusal = self._admit(ip, key)
        self._stats[refusal or "accepted"] += 1
        if refusal:
            _reset(conn)
            self._note_refusal(ip, key, refusal)
            return
        worker = threading.Thread(target=self._connection, args=(conn, ip, key), daemon=True,
                                  name="pvemond-claim-conn")
        with self._lock:
            self._workers.add(worker)
            self._conns.add(conn)
        try:
            worker.start()
        except RuntimeError:  # no thread to be had: this connection goes, the listener stays
            self._release(conn, key, worker)
            _reset(conn)

    def _admit(self, ip: str, key: str) -> Optional[str]:
        """Take a connection slot for `ip`, or say why not; the checks cost no TLS work."""
        if not self._allowed(ip):
            return R.NOT_ALLOWED
        with self._lock:
            if self._open.get(key, 0) >= self._max_per_source:
                return "too_many_connections"
            if sum(self._open.values()) >= self._max_connections:
                return "full"
            if not self._accepts.allow(key):
                return "connection_rate_limited"
            self._open[key] = self._open.get(key, 0) + 1
        return None

    def _allowed(self, ip: str) -> bool:
        if not self._allow:
            return True
        addr = ipaddress.ip_address(ip)
        return any(addr in net for net in self._allow)

    def _release(self, conn: socket.socket, key: str, worker: threading.Thread) -> None:
        with self._lock:
            self._conns.discard(conn)
            self._workers.discard(worker)
            left = self._open.pop(key, 1) - 1
            if left > 0:
                self._open[key] = left

    def _note_refusal(self, ip: str, key: str, reason: str) -> None:
        if reason == "full":  # not this source's fault: one line for everyone, not fail2ban's
            self._note_full(ip)
        elif self._refusals.due(key):  # a flood must not also flood the journal
            self._log.warning("pvemond-claim: failed claim from %s: %s", ip, reason)

    def _note_full(self, ip: str) -> None:
        now = time.monotonic()
        if now - self._last_full_log >= REFUSAL_LOG_INTERVAL:
            self._last_full_log = now
            self._log.warning("claim listener: %d connections open, dropping new ones "
                              "(latest from %s)", self._max_connections, ip)

    # -- connections ----------------------------------------------------------------------------

    def _connection(self, conn: socket.socket, ip: str, key: str) -> None:
        tls: Optional[ssl.SSLSocket] = None
        try:
            conn.settimeout(self._timeout)
            deadline = time.monotonic() + self._timeout  # slowloris: one budget per connection
            tls = self._ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            tls.do_handshake()
            self._exchange(tls, ip, deadline)
        except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts are OSErrors
            self._log.debug("claim listener: connection from %s ended: %s", ip,
                            type(exc).__name__)
        except Exception as exc:  # a bug must cost one connection, never the listener
            self._log.error("claim listener: internal error with %s: %s", ip, type(exc).__name__)
        finally:
            # before the close: a peer that sees EOF finds its slot free
            self._release(conn, key, threading.current_thread())
            (tls or conn).close()

    def _exchange(self, tls: ssl.SSLSocket, ip: str, deadline: float) -> None:
        reader = _Reader(tls, deadline)
        try:
            method, path = reader.head()
            reply = self._gate(ip) or self._route(method, path)
            if reply is None:
                reply = self._claim(ip, reader.body())
        except _HttpError as exc:
            reply = exc.reply
        self._log_reply(ip, reply)
        tls.settimeout(self._timeout)
        try:
            tls.sendall(_response(reply))
        except OSError:
            if reply.status == 200:
                self._log.warning("claim listener: sending the payload to %s failed; count "
                                  "it as delivered", ip)
            raise
        reader.discard_unread()

    # -- decisions ------------------------------------------------------------------------------

    def _gate(self, ip: str) -> Optional[_Reply]:
        """The request rate per source (the allow list was applied at accept); not an attempt."""
        with self._lock:
            ok = self._limiter.allow(_bucket_key(ip))
        if not ok:
            return _error(429, R.RATE_LIMITED, "too many requests from this address; "
                          "wait a few seconds and retry")
        return None

    @staticmethod
    def _route(method: str, path: str) -> Optional[_Reply]:
        if path.split("?", 1)[0] != ROUTE:
            return _error(404, R.NOT_FOUND, f"the only route is POST {ROUTE}")
        if method != "POST":
            return _error(405, R.METHOD_NOT_ALLOWED, f"use POST {ROUTE}")
        return None

    def _claim(self, ip: str, body: bytes) -> _Reply:
        right = self._check(body)
        if isinstance(right, _Reply):
            return right
        with self._lock:
            reply = self._decide(ip, right)
        if reply is not None:
            return reply
        recorded = self._record(ip)  # outside the lock: it may take seconds
        with self._lock:
            return self._resolve(ip, recorded)

    def _check(self, body: bytes) -> Union[bool, _Reply]:
        """Whether the body holds the right code, or the 400 for a body without one."""
        try:
            doc = json.loads(body.decode("utf-8"))
            given = doc["code"] if isinstance(doc, dict) else None
        except (ValueError, KeyError):
            given = None
        if not isinstance(given, str):
            return _error(400, R.BAD_REQUEST, 'the body must be JSON: {"code": "XXXX-XXXX-XXXX"}')
        try:
            given = normalize_code(given)
        except ValueError:
            given = ""  # not even shaped like a code: still a guess, so it counts
        return codes_match(given, self._code)

    def _decide(self, ip: str, right: bool) -> Optional[_Reply]:
        """The state machine, with the lock held so exactly one request wins. None: this request
        moved the claim to "claiming" and must record the hand-out before it gets the payload."""
        closed = self._settle()
        if closed is not None:
            return closed
        if self._state == "claimed":
            return self._after_claim(right)
        if not right:
            return self._wrong(ip)
        if self._state == "claiming":
            return _error(409, R.IN_PROGRESS, "someone is redeeming this code right now")
        if self._before_handout is None:
            return self._hand_out(ip)
        self._state = "claiming"
        return None

    def _settle(self) -> Optional[_Reply]:
        """Expire or stop an open claim now; the answer for a claim that is over, else None."""
        if self._state == "open" and self._clock() >= self._deadline:
            self._state = "expired"
            self._wake()
        if self._state == "open" and self._stop_requested:
            self._state = "stopped"
        if self._state == "burned":
            return _error(410, R.BURNED, "too many wrong codes: this claim is burned and the "
                          "token revoked")
        if self._state == "expired":
            return _error(410, R.EXPIRED, "the claim code expired")
        if self._state == "stopped":
            return _error(410, R.CANCELLED, "the claim was cancelled on the node")
        return None

    def _record(self, ip: str) -> bool:
        try:
            return self._before_handout(ip) is True
        except Exception as exc:  # the hook's failure is a "not recorded", never a hand-out
            self._log.warning("claim listener: recording the hand-out to %s failed: %s", ip,
                              type(exc).__name__)
            return False

    def _resolve(self, ip: str, recorded: bool) -> _Reply:
        """After the hook: hand out, or reopen (wrong codes, expiry and stop that came
        meanwhile take effect now)."""
        if recorded:
            return self._hand_out(ip)
        self._state = "open"
        if self._attempts >= self._max_attempts:
            self._burn(*self._burner)
        closed = self._settle()
        if closed is not None:
            return closed
        return _error(503, R.NOT_RECORDED, "the node could not record the hand-out; retry in "
                      "a few seconds")

    def _after_claim(self, right: bool) -> _Reply:
        if not right:  # only the code's holder learns who took it
            return _error(403, R.WRONG_CODE, "wrong claim code", "wrong_code (already claimed)")
        when = time.strftime("%H:%M:%S", time.gmtime(self._at))
        return _error(409, R.ALREADY_CLAIMED, f"already claimed at {when} UTC by {self._peer}",
                      claimed_at=_iso(self._at), claimed_by=self._peer)

    def _hand_out(self, ip: str) -> _Reply:
        payload, self._payload = self._payload, None  # this request's copy is the last one
        self._state, self._peer, self._at = "claimed", ip, time.time()
        self._grace_end = self._clock() + self._grace
        self._log.info("claimed by %s", ip)
        return _Reply(200, payload or b"", "ok")

    def _wrong(self, ip: str) -> _Reply:
        self._attempts += 1
        left = self._max_attempts - self._attempts
        if left > 0:
            return _error(403, R.WRONG_CODE, f"wrong claim code; {left} attempt(s) left before "
                          "the claim is burned", f"wrong_code ({left} attempts left)",
                          attempts_left=left)
        if self._state == "claiming":  # burned unless the hand-out in flight is recorded
            self._burner = (ip, time.time())
        else:
            self._burn(ip, time.time())
        return _error(410, R.BURNED, f"{self._attempts} wrong codes: this claim is burned and "
                      "the token revoked", f"wrong_code (burned after {self._attempts})")

    def _burn(self, ip: Optional[str], at: Optional[float]) -> None:
        self._state, self._peer, self._at = "burned", ip, at
        self._wake()

    def _log_reply(self, ip: str, reply: _Reply) -> None:
        self._log.info("claim attempt from %s: %s", ip, reply.result)
        if reply.status != 200:
            self._log.warning("pvemond-claim: failed claim from %s: %s", ip, reply.reason)


def _iso(at: Optional[float]) -> Optional[str]:
    return None if at is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _response(reply: _Reply) -> bytes:
    lines = [f"HTTP/1.1 {reply.status} {http.HTTPStatus(reply.status).phrase}",
             "Content-Type: application/json", f"Content-Length: {len(reply.body)}",
             "Cache-Control: no-store", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in reply.headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + reply.body


class _Reader:
    """A strict, bounded HTTP/1.1 request reader with one deadline for the whole request."""

    def __init__(self, sock: ssl.SSLSocket, deadline: float):
        self.sock, self.deadline, self.buf = sock, deadline, b""
        self.headers: Dict[str, str] = {}
        self.head_read = self.body_read = False

    def _more(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("request deadline passed")
        self.sock.settimeout(left)
        chunk = self.sock.recv(4096)
        if not chunk:
            raise ConnectionError("peer closed the connection mid-request")
        self.buf += chunk

    def _next(self) -> None:
        try:
            self._more(self.deadline)
        except socket.timeout:  # a slow request is refused out loud (fail2ban sees it)
            raise _HttpError(408, R.REQUEST_TIMEOUT, "the request did not arrive in time") \
                from None

    def head(self) -> Tuple[str, str]:
        while b"\r\n\r\n" not in self.buf[:MAX_HEAD + 4]:
            if len(self.buf) > MAX_HEAD:
                raise _HttpError(431, R.HEADERS_TOO_LARGE, f"request head over {MAX_HEAD} bytes")
            self._next()
        raw, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.head_read = True
        first, *lines = raw.decode("latin-1").split("\r\n")
        parts = first.split(" ")
        if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
            raise _HttpError(400, R.BAD_REQUEST, "not an HTTP/1.1 request line")
        self.headers = _headers(lines)
        return parts[0], parts[1]

    def body(self) -> bytes:
        if "transfer-encoding" in self.headers:
            raise _HttpError(400, R.BAD_REQUEST, "send the body with Content-Length, not chunked")
        size = self._declared()
        if size is None:
            raise _HttpError(411, R.LENGTH_REQUIRED, "a Content-Length header is required")
        if size > MAX_BODY:
            raise _HttpError(413, R.BODY_TOO_LARGE, f"the body is limited to {MAX_BODY} bytes")
        while len(self.buf) < size:
            self._next()
        self.body_read = True
        return self.buf[:size]

    def _declared(self) -> Optional[int]:
        size = self.headers.get("content-length")
        if size is None:
            return None
        # ASCII digits only: str.isdigit() also takes "²" (int() refuses it) and "٣" (int() takes)
        if not (size.isascii() and size.isdigit()):
            raise _HttpError(400, R.BAD_REQUEST, "Content-Length is not a number")
        return int(size) if len(size) <= 18 else MAX_BODY + 1  # int() refuses 4301+ digits

    def discard_unread(self, limit: int = DRAIN_LIMIT, seconds: float = DRAIN_SECONDS) -> None:
        """Read what the client still sends after an early answer (431, 413, 403, 408...):
        closing with unread bytes sends a TCP reset, which can destroy our answer before the
        client reads it."""
        end = time.monotonic() + seconds
        try:
            if not self.head_read:
                while b"\r\n\r\n" not in self.buf and len(self.buf) < limit:
                    self._more(end)
                return
            size = 0 if self.body_read else self._declared() or 0
            while len(self.buf) < min(size, limit):
                self._more(end)
        except (OSError, _HttpError):
            pass


def _headers(lines: List[str]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _HttpError(400, R.BAD_REQUEST, "malformed header line")
        key = name.lower()
        if key in out and key == "content-length" and out[key] != value.strip():
            raise _HttpError(400, R.BAD_REQUEST, "conflicting Content-Length headers")
        out[key] = value.strip()
    return out
