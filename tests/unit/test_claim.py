"""The claim hand-over end to end on loopback: a ClaimListener in a thread serving a throw-away
certificate, driven by the real `pvemond-claim` (in-process and as a subprocess) and by raw
http.client/ssl/sockets. Codes, the state machine (claim, replay, burn, expiry, stop), the source
gates (allow list, rate), abuse (oversized, garbage, flood, slowloris), pinning, the written
files, --check against a stand-in pveproxy, and the logs (fail2ban line; never the code or the
secret)."""
from __future__ import annotations

import collections
import hmac
import http.client
import http.server
import json
import logging
import math
import os
import re
import secrets
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from pvemond import claim, tlspin
from pvemond import codes
from pvemond.claim import ClaimListener, Outcome
from pvemond.codes import ALPHABET, new_code, normalize_code
from pvemond.cli import claim as cli

REPO = Path(__file__).resolve().parents[2]
SECRET = "5f3c2b1a-0d9e-4c8b-a7f6-e5d4c3b2a190"
# Made at import: their expiry (hours ahead, within the codes' 512-minute horizon) must outlast
# the whole run, else pvemond-claim rightly calls them expired (codes.expired_since).
CODE = new_code(time.time() + 4 * 3600)
WRONG = next(c for c in iter(lambda: new_code(time.time() + 4 * 3600), None) if c != CODE)


# ---------------------------------------------------------------------------------------------
# A throw-away CA and node certificate (SAN IP:127.0.0.1), as bootstrap would serve

@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    pin: str
    fingerprint: str


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key, cert, key, csr, ext = (d / n for n in (
        "ca.pem", "ca.key", "node.pem", "node.key", "node.csr", "node.ext"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
            str(ca), "-days", "2", "-subj", "/CN=Test CA/O=PVE Cluster Manager CA",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", "/OU=PVE Cluster Node/CN=pve1")
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                   "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    der = tlspin.pem_to_der(cert.read_text())
    return Pki(ca, cert, key, tlspin.pin_of_der(der), tlspin.fingerprint_of_der(der))


def make_payload(pki: Pki, url: str = "https://127.0.0.1:8006/api2/json") -> dict:
    token_id = "monitoring@pve!monitoring"
    return {
        "version": 1, "user": "monitoring@pve", "token_name": "monitoring", "token_id": token_id,
        "secret": SECRET, "token_string": f"{token_id}={SECRET}", "privsep": 0,
        "cluster": "prod", "node": "pve1",
        "nodes": [{"name": "pve1", "address": "127.0.0.1", "url": url}],
        "pve_version": "9.1.1", "ca_pem": pki.ca.read_text(), "fingerprint": pki.fingerprint,
        "privileges": {"Datastore.Audit": 1, "Sys.Audit": 1, "VM.Audit": 1},
    }


# ---------------------------------------------------------------------------------------------
# The listener in a thread, with its log captured

class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str]] = []
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelname, self.format(record)))  # format: tracebacks too

    def messages(self, level: str | None = None) -> list[str]:
        return [m for lv, m in self.lines if level in (None, lv)]

    def attempts(self) -> list[str]:
        return [m for m in self.messages("INFO") if m.startswith("claim attempt from")]


@dataclass
class Running:
    listener: ClaimListener
    port: int
    log: Records
    thread: threading.Thread
    result: list = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def outcome(self, timeout: float = 5.0) -> Outcome:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "serve() did not return"
        return self.result[0]


_loggers = iter(range(10**6))


def _logger() -> tuple[logging.Logger, Records]:
    log = logging.getLogger(f"test.claim.{next(_loggers)}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    records = Records()
    log.addHandler(records)
    return log, records


@pytest.fixture
def listen(pki) -> Callable[..., Running]:
    started: list[Running] = []

    def start(payload: dict | None = None, host: str = "127.0.0.1", **kw: Any) -> Running:
        kw.setdefault("ttl", 30.0)
        kw.setdefault("grace", 0.2)
        log, records = _logger()
        body = json.dumps(payload or make_payload(pki)).encode()
        listener = ClaimListener(body, CODE, str(pki.cert), str(pki.key), host=host, port=0,
                                 log=log, **kw)
        port = listener.bind()[1]
        run = Running(listener, port, records, threading.Thread(target=lambda: None))
        run.thread = threading.Thread(target=lambda: run.result.append(listener.serve()),
                                      daemon=True)
        run.thread.start()
        started.append(run)
        return run

    yield start
    for run in started:
        run.listener.stop()
        run.outcome()
        assert run.listener._payload is None  # the reference to the secret is dropped
        text = "\n".join(run.log.messages())
        for leak in (CODE, CODE.replace("-", ""), WRONG, SECRET):
            assert leak not in text
        assert "internal error" not in text


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def client_ctx(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca))  # SAN IP:127.0.0.1 verifies


def post(pki: Pki, port: int, body: Any = None, *, method: str = "POST", path: str = "/v1/claim",
         headers: dict | None = None,
         timeout: float = 5) -> tuple[int, dict, http.client.HTTPResponse]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=client_ctx(pki), timeout=timeout)
    data = json.dumps(body if body is not None else {"code": WRONG}).encode() \
        if not isinstance(body, bytes) else body
    try:
        conn.request(method, path, body=data if method == "POST" else None,
                     headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    return resp.status, json.loads(raw) if raw else {}, resp


def tls_socket(pki: Pki, port: int) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return client_ctx(pki).wrap_socket(raw, server_hostname="127.0.0.1")


def read_all(sock: socket.socket) -> bytes:
    out = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return out
        out += chunk


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for an event the listener reports (a count, a state); the timeout is a safety net."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def fail2ban_lines(run: "Running", ip: str) -> list[str]:
    return [m for m in run.log.messages("WARNING")
            if m.startswith(f"pvemond-claim: failed claim from {ip}: ")]


class Hostile:
    """`count` TCP connections to the listener from another loopback address (another host, as
    the listener sees it), idle or dribbling a TLS record one byte at a time; never reconnects."""

    HELLO = b"\x16\x03\x01\x02\x00" + b"\x01" * 512  # a record header promising 512 bytes

    def __init__(self, port: int, count: int, source: str = "127.0.0.2", dribble: bool = False):
        self.socks = []
        for _ in range(count):
            s = socket.socket()
            s.bind((source, 0))
            s.settimeout(10)
            try:
                s.connect(("127.0.0.1", port))
            except ConnectionResetError:
                pass  # accepted and reset before connect() returned: counted all the same
            self.socks.append(s)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._dribble, daemon=True)
        if dribble:
            self.thread.start()

    def _dribble(self) -> None:
        live = list(self.socks)
        for byte in self.HELLO:
            if self.done.wait(0.2):
                return
            for s in list(live):
                try:
                    s.send(bytes([byte]))
                except OSError:  # refused (reset) or timed out by the listener
                    live.remove(s)

    def __enter__(self) -> "Hostile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join(5)
        for s in self.socks:
            s.close()


# ---------------------------------------------------------------------------------------------
# Codes (their making and expiry: test_codes.py)

@pytest.mark.parametrize("typed", [CODE, CODE.lower(), CODE.replace("-", ""),
                                   " ".join(CODE.replace("-", "")), f"  {CODE.lower()}\n"])
def test_normalize_code_accepts_what_people_type(typed):
    assert normalize_code(typed) == CODE


@pytest.mark.parametrize("typed,message", [
    ("K7QM-2PXW-9DF0", "never contain 0, 1, O or I"), ("K7QM-2PXW-9DFO", "never contain"),
    ("I7QM-2PXW-9DFT", "never contain"), ("K7QM-2PXW-9DF", "12 characters"),
    ("K7QM-2PXW-9DFTT", "12 characters"), ("K7QM-2PXW-9DF!", "only the characters"),
    ("K7QM-2PXW-9DFß", "only the characters"), ("", "12 characters"),
])
def test_normalize_code_refuses_clearly_without_echoing(typed, message):
    with pytest.raises(ValueError, match=message) as info:
        normalize_code(typed)
    assert typed.replace("-", "")[:8] not in str(info.value) or not typed


def test_code_compared_in_constant_time(listen, pki, monkeypatch):
    seen = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    run = listen(max_attempts=5)
    assert post(pki, run.port, {"code": WRONG.lower()})[0] == 403
    assert seen == [(WRONG.encode(), CODE.encode())]


# ---------------------------------------------------------------------------------------------
# Successful claims and what they write

def test_claim_writes_config_and_ca_privately(listen, pki, capsys, tmp_path):
    run = listen()
    out_file = tmp_path / "pve.yml"
    out_file.write_text("other:\n  user: a@pve\n  token_name: b\n  token_value: c\n")
    out_file.chmod(0o600)  # the admin's own file: its mode is kept (tests/unit/test_hostfiles.py)
    rc, out, err = run_cli(capsys, run.target, CODE.lower(), "--pin", pki.pin, "-o", str(out_file))
    assert rc == 0 and out == ""
    ca = tmp_path / "pve-prod-ca.pem"
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.stat().st_mode) == 0o644
    assert ca.read_text() == pki.ca.read_text()
    doc = yaml.safe_load(out_file.read_text())
    assert doc["prod"] == {"user": "monitoring@pve", "token_name": "monitoring",
                           "token_value": SECRET, "verify_ssl": str(ca)}
    assert doc["other"]["user"] == "a@pve"  # merged, not replaced
    assert SECRET not in err and CODE not in err
    for expected in (str(out_file), str(ca), "monitoring@pve!monitoring",
                     "Datastore.Audit, Sys.Audit, VM.Audit", "file_sd/pvemond/prod.yml"):
        assert expected in err
    outcome = run.outcome()
    assert (outcome.status, outcome.peer, outcome.attempts) == ("claimed", "127.0.0.1", 0)
    assert abs(outcome.at - time.time()) < 10
    assert run.log.attempts() == ["claim attempt from 127.0.0.1: ok"]


def test_stdout_output_and_ca_in_current_directory(listen, pki, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = listen()
    rc, out, err = run_cli(capsys, run.target, CODE, "--pin", pki.pin, "--format", "json")
    assert rc == 0
    ca = tmp_path / "pve-prod-ca.pem"
    assert json.loads(out)["secret"] == SECRET and json.loads(out)["ca_path"] == str(ca)
    assert ca.read_text() == pki.ca.read_text() and str(ca) in err
    assert SECRET not in err


def test_subprocess_claim(listen, pki, tmp_path):
    run = listen()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "pvemond.cli.claim", run.target, CODE, "--pin", pki.pin,
         "--format", "env", "-o", str(tmp_path / "pve.env")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and SECRET not in proc.stderr
    text = (tmp_path / "pve.env").read_text()
    assert f"PVE_TOKEN_VALUE='{SECRET}'" in text
    assert f"REQUESTS_CA_BUNDLE='{tmp_path / 'pve-prod-ca.pem'}'" in text
    assert run.outcome().status == "claimed"


def test_ipv6_listener_and_bracketed_target(listen, pki, capsys, tmp_path):
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    run = listen(host="::1")
    rc, _, err = run_cli(capsys, f"[::1]:{run.port}", CODE, "--pin", pki.pin,
                         "-o", str(tmp_path / "pve.yml"))
    assert rc == 0, err
    assert run.outcome().peer == "::1"


def test_concurrent_right_codes_one_winner(listen, pki):
    run = listen(grace=1.0, rate=0, max_per_source=8)  # 8 racers from one host
    start = threading.Barrier(8)
    results: list[tuple[int, dict]] = []

    def claim_once() -> None:
        start.wait()
        status, body, _ = post(pki, run.port, {"code": CODE})
        results.append((status, body))

    threads = [threading.Thread(target=claim_once) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    statuses = sorted(s for s, _ in results)
    assert statuses == [200] + [409] * 7
    assert sum(1 for _, b in results if b.get("secret") == SECRET) == 1


# ---------------------------------------------------------------------------------------------
# Pinning: nothing leaves this host for the wrong server

def test_wrong_pin_refused_before_the_code_is_sent(listen, pki, capsys, tmp_path):
    run = listen()
    other = "sha256:" + "ab" * 32
    rc, out, err = run_cli(capsys, run.target, CODE, "--pin", other.upper(),
                           "-o", str(tmp_path / "pve.yml"))
    assert rc == cli.EXIT_PIN == 3
    assert other in err and pki.pin in err and pki.fingerprint in err and "NOT sent" in err
    time.sleep(0.2)
    assert run.log.attempts() == [] and not (tmp_path / "pve.yml").exists()
    # nothing was spent: the right pin still claims
    assert run_cli(capsys, run.target, CODE, "--pin", pki.pin, "-o", str(tmp_path / "pve.yml"))[0] == 0


def test_no_pin_refused(listen, pki, capsys):
    run = listen()
    rc, _, err = run_cli(capsys, run.target, CODE)
    assert rc == cli.EXIT_USAGE == 2 and "--pin" in err and "pvemond-bootstrap" in err
    assert run.log.attempts() == []


def test_tofu_without_terminal_refused(listen, pki, capsys, monkeypatch, tmp_path):
    def no_tty():
        raise OSError("no tty")

    monkeypatch.setattr(cli, "_open_tty", no_tty)
    run = listen()
    rc, _, err = run_cli(capsys, run.target, CODE, "--tofu", "-o", str(tmp_path / "x.yml"))
    assert rc == 2 and "terminal" in err
    time.sleep(0.2)
    assert run.log.attempts() == []


class FakeTty:
    def __init__(self, answer: str):
        self.answer, self.written = answer, ""

    def write(self, text: str) -> None:
        self.written += text

    def flush(self) -> None:
        pass

    def readline(self) -> str:
        return self.answer

    def __enter__(self) -> "FakeTty":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.mark.parametrize("answer,rc", [("y\n", 0), ("\n", 3), ("nope\n", 3)])
def test_tofu_asks_with_pin_and_fingerprint(listen, pki, capsys, monkeypatch, tmp_path, answer, rc):
    tty = FakeTty(answer)
    monkeypatch.setattr(cli, "_open_tty", lambda: tty)
    run = listen()
    got, _, err = run_cli(capsys, run.target, CODE, "--tofu", "-o", str(tmp_path / "pve.yml"))
    assert got == rc
    assert pki.pin in tty.written and pki.fingerprint in tty.written
    assert "Trust this node? [y/N]" in tty.written
    assert (run.log.attempts() == ["claim attempt from 127.0.0.1: ok"]) == (rc == 0)


# ---------------------------------------------------------------------------------------------
# The state machine: replay, burn, expiry, stop

def test_replay_is_already_claimed_with_time_and_address(listen, pki, capsys, tmp_path):
    run = listen(grace=3.0)
    assert run_cli(capsys, run.target, CODE, "--pin", pki.pin, "-o", str(tmp_path / "a.yml"))[0] == 0
    rc, _, err = run_cli(capsys, run.target, CODE, "--pin", pki.pin, "-o", str(tmp_path / "b.yml"))
    assert rc == cli.EXIT_CLAIMED == 6
    assert re.search(r"already claimed at \d\d:\d\d:\d\d UTC by 127\.0\.0\.1", err)
    assert "someone else claimed this token" in err and not (tmp_path / "b.yml").exists()
    assert run.listener.state == "claimed"
    # a wrong code after the claim learns nothing about who took it
    status, body, _ = post(pki, run.port, {"code": WRONG})
    assert status == 403 and "127.0.0.1" not in json.dumps(body)
    run.listener.stop()
    assert run.outcome().status == "claimed"


def test_wrong_codes_burn_the_claim(listen, pki, capsys, tmp_path):
    run = listen(max_attempts=3)
    args = ["--pin", pki.pin, "-o", str(tmp_path / "pve.yml")]
    for left in (2, 1):
        rc, _, err = run_cli(capsys, run.target, WRONG, *args)
        assert rc == cli.EXIT_WRONG_CODE == 4 and f"{left} attempt(s) left" in err
    rc, _, err = run_cli(capsys, run.target, WRONG, *args)
    assert rc == cli.EXIT_BURNED == 7 and "burned" in err
    outcome = run.outcome()
    assert (outcome.status, outcome.attempts, outcome.peer) == ("burned", 3, "127.0.0.1")
    assert run_cli(capsys, run.target, CODE, *args)[0] == cli.EXIT_NETWORK  # listener is gone
    assert not (tmp_path / "pve.yml").exists()


def test_burned_answers_burned_even_to_the_right_code(listen, pki):
    run = listen(max_attempts=1)
    slow = tls_socket(pki, run.port)  # opened before the burn, body sent after it
    body = json.dumps({"code": CODE}).encode()
    slow.sendall(b"POST /v1/claim HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
    assert post(pki, run.port, {"code": WRONG})[0] == 410
    slow.sendall(body)
    reply = read_all(slow)
    assert reply.startswith(b"HTTP/1.1 410 ") and b'"burned"' in reply and SECRET.encode() not in reply
    assert run.outcome().status == "burned"


def test_expiry_answers_expired_and_ends_serve(listen, pki):
    now = [1000.0]
    run = listen(ttl=60, clock=lambda: now[0])
    pending = tls_socket(pki, run.port)
    body = json.dumps({"code": CODE}).encode()
    pending.sendall(b"POST /v1/claim HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
    time.sleep(0.1)
    now[0] += 61
    time.sleep(0.3)  # serve() notices and closes the listening socket, letting this one finish
    pending.sendall(body)
    reply = read_all(pending)
    assert reply.startswith(b"HTTP/1.1 410 ") and b'"expired"' in reply
    assert run.outcome() == Outcome("expired", None, None, 0)


def test_real_ttl_expires_unused(listen):
    run = listen(ttl=0.3)
    started = time.monotonic()
    assert run.outcome(3).status == "expired"
    assert 0.25 < time.monotonic() - started < 2.0
    assert run.listener.expires_at is not None


def test_stop_from_another_thread(listen, pki, capsys, tmp_path):
    run = listen()
    threading.Timer(0.2, run.listener.stop).start()
    assert run.outcome(3) == Outcome("stopped", None, None, 0)
    rc, _, err = run_cli(capsys, run.target, CODE, "--pin", pki.pin, "-o", str(tmp_path / "x"))
    assert rc == cli.EXIT_NETWORK and "nothing listens" in err


def test_stop_from_a_signal_handler(pki):
    log, records = _logger()
    listener = ClaimListener(b"{}", CODE, str(pki.cert), str(pki.key), host="127.0.0.1", port=0,
                             log=log)
    listener.bind()
    previous = signal.signal(signal.SIGALRM, lambda *_: listener.stop())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        assert listener.serve().status == "stopped"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------------------------------
# Record before the secret leaves: the before_handout hook and the "claiming" state

class Hook:
    """A before_handout hook: records what it saw, answers from `answers`, and optionally
    blocks until the test releases it (the bootstrap parent writing to the daemon)."""

    def __init__(self, *answers: Any, block: bool = False):
        self.answers, self.block = list(answers), block
        self.seen: list[tuple[str, str, bool]] = []
        self.entered, self.release = threading.Event(), threading.Event()
        self.listener: ClaimListener | None = None

    def __call__(self, ip: str) -> bool:
        self.seen.append((ip, self.listener.state, self.listener._payload is not None))
        self.entered.set()
        if self.block:
            assert self.release.wait(30)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def listen_with(listen: Callable[..., Running], hook: Hook, **kw: Any) -> Running:
    run = listen(before_handout=hook, **kw)
    hook.listener = run.listener
    return run


def claim_in_background(pki: Pki, port: int) -> list:
    got: list = []
    threading.Thread(target=lambda: got.append(post(pki, port, {"code": CODE}, timeout=60)),
                     daemon=True).start()
    return got


def test_hook_records_before_the_payload_leaves(listen, pki, capsys, tmp_path):
    hook = Hook(True)
    run = listen_with(listen, hook)
    rc, _, err = run_cli(capsys, run.target, CODE, "--pin", pki.pin, "-o", str(tmp_path / "x"))
    assert rc == 0, err
    assert hook.seen == [("127.0.0.1", "claiming", True)]  # the secret was still here
    assert run.outcome().status == "claimed"


@pytest.mark.parametrize("failure", [False, RuntimeError(SECRET), None, "yes"],
                         ids=["false", "raises", "none", "truthy"])
def test_hook_failure_is_503_and_the_code_stays_valid(listen, pki, failure):
    hook = Hook(failure, True)
    run = listen_with(listen, hook, max_attempts=1)
    status, body, resp = post(pki, run.port, {"code": CODE})
    assert (status, body) == (503, {"error": "not_recorded", "detail": "the node could not record "
                                    "the hand-out; retry in a few seconds"})
    assert resp.getheader("Retry-After") == "2"
    assert (run.listener.state, run.listener.attempts) == ("open", 0)
    assert "pvemond-claim: failed claim from 127.0.0.1: not_recorded" in run.log.messages("WARNING")
    status, body, _ = post(pki, run.port, {"code": CODE})
    assert status == 200 and body["secret"] == SECRET
    assert run.outcome().status == "claimed"
    if isinstance(failure, Exception):  # named, never quoted (the fixture checks SECRET too)
        assert "claim listener: recording the hand-out to 127.0.0.1 failed: RuntimeError" \
            in run.log.messages("WARNING")


def test_while_claiming_right_codes_wait_and_wrong_codes_count(listen, pki):
    hook = Hook(True, block=True)
    run = listen_with(listen, hook, rate=0)
    first = claim_in_background(pki, run.port)
    assert hook.entered.wait(30)
    status, body, _ = post(pki, run.port, {"code": CODE})
    assert (status, body) == (409, {"error": "claim_in_progress",
                                    "detail": "someone is redeeming this code right now"})
    status, body, _ = post(pki, run.port, {"code": WRONG})
    assert (status, body["attempts_left"]) == (403, 4)
    assert run.listener.state == "claiming" and len(hook.seen) == 1
    hook.release.set()
    eventually(lambda: bool(first))
    assert first[0][0] == 200 and first[0][1]["secret"] == SECRET
    assert run.outcome().attempts == 1
    assert "pvemond-claim: failed claim from 127.0.0.1: claim_in_progress" \
        in run.log.messages("WARNING")


@pytest.mark.parametrize("recorded", [True, False])
def test_stop_during_claiming_waits_for_the_hook(listen, pki, recorded):
    hook = Hook(recorded, block=True)
    run = listen_with(listen, hook)
    got = claim_in_background(pki, run.port)
    assert hook.entered.wait(30)
    run.listener.stop()
    time.sleep(0.3)  # serve() has seen the stop by now, and must not have acted on it
    assert run.thread.is_alive() and run.listener._payload is not None
    hook.release.set()
    eventually(lambda: bool(got))
    if recorded:  # a recorded delivery is always handed out
        assert got[0][0] == 200 and got[0][1]["secret"] == SECRET
        assert run.outcome().status == "claimed"
    else:
        assert (got[0][0], got[0][1]["error"]) == (410, "cancelled")
        assert run.outcome().status == "stopped"


@pytest.mark.parametrize("recorded", [True, False])
def test_expiry_during_claiming_waits_for_the_hook(listen, pki, recorded):
    now = [1000.0]
    hook = Hook(recorded, block=True)
    run = listen_with(listen, hook, ttl=60, clock=lambda: now[0])
    got = claim_in_background(pki, run.port)
    assert hook.entered.wait(30)
    now[0] += 61
    hook.release.set()
    eventually(lambda: bool(got))
    now[0] += 1  # past the grace after a claim
    if recorded:
        assert got[0][0] == 200 and run.outcome().status == "claimed"
    else:
        assert (got[0][0], got[0][1]["error"]) == (410, "expired")
        assert run.outcome().status == "expired"


@pytest.mark.parametrize("recorded", [True, False])
def test_wrong_codes_during_claiming_burn_only_an_unrecorded_claim(listen, pki, recorded):
    hook = Hook(recorded, block=True)
    run = listen_with(listen, hook, max_attempts=2, rate=0)
    got = claim_in_background(pki, run.port)
    assert hook.entered.wait(30)
    assert [post(pki, run.port, {"code": WRONG})[0] for _ in range(2)] == [403, 410]
    hook.release.set()
    eventually(lambda: bool(got))
    outcome = run.outcome()
    if recorded:
        assert got[0][0] == 200 and (outcome.status, outcome.attempts) == ("claimed", 2)
    else:
        assert (got[0][0], got[0][1]["error"]) == (410, "burned")
        assert (outcome.status, outcome.peer, outcome.attempts) == ("burned", "127.0.0.1", 2)


# ---------------------------------------------------------------------------------------------
# Source gates: allow list and rate limit (neither counts as an attempt)

def test_allow_list_refuses_other_sources_at_accept(listen, pki, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(claim, "REFUSAL_LOG_INTERVAL", 3600.0)
    # Closed before TLS: no handshake, no thread, no reply (a non-allowed host costs nothing).
    run = listen(allow=["192.0.2.0/24"], max_attempts=1)
    rc, _, err = run_cli(capsys, run.target, CODE, "--pin", pki.pin, "-o", str(tmp_path / "x"))
    assert rc == cli.EXIT_NETWORK and ("reset" in err.lower() or "TLS handshake" in err)
    with pytest.raises(OSError):
        post(pki, run.port, {"code": WRONG})  # would burn if it counted
    assert run.listener.attempts == 0 and run.thread.is_alive()
    assert run.listener._stats == {"source_not_allowed": 2}  # nothing accepted
    assert fail2ban_lines(run, "127.0.0.1") == [
        "pvemond-claim: failed claim from 127.0.0.1: source_not_allowed"]  # once, not twice
    assert run.log.attempts() == []


def test_rate_limit_answers_429_without_counting(listen, pki, capsys, tmp_path):
    run = listen(rate=0.5, burst=2, max_attempts=10)
    statuses = [post(pki, run.port, {"code": WRONG})[0] for _ in range(3)]
    assert statuses == [403, 403, 429]
    rc, _, err = run_cli(capsys, run.target, CODE, "--pin", pki.pin, "-o", str(tmp_path / "x"))
    assert rc == cli.EXIT_RATE and "rate limiting" in err
    assert run.listener.attempts == 2
    assert run.log.attempts()[-1] == "claim attempt from 127.0.0.1: rate_limited"


@pytest.mark.parametrize("dribble", [False, True], ids=["idle", "dribbling"])
def test_claim_while_a_non_allowed_host_holds_200_connections(listen, pki, capsys, tmp_path,
                                                              monkeypatch, dribble):
    # Before: 32 slots shared by everyone, taken before the --allow check: 40 idle connections
    # from any host blocked every claim.
    monkeypatch.setattr(claim, "REFUSAL_LOG_INTERVAL", 3600.0)
    run = listen(allow=["127.0.0.1/32"])
    with Hostile(run.port, 200, dribble=dribble):
        # queued before the claim's connection, so all 200 were dealt with before it
        rc, _, err = run_cli(capsys, run.target, CODE, "--pin", pki.pin,
                             "-o", str(tmp_path / "pve.yml"))
        assert rc == 0, err
    assert run.outcome().status == "claimed"
    # no TLS and no thread for the other host: the claimant's was the one connection accepted
    assert run.listener._stats == {"source_not_allowed": 200, "accepted": 1}
    assert fail2ban_lines(run, "127.0.0.2") == [
        "pvemond-claim: failed claim from 127.0.0.2: source_not_allowed"]


def test_one_source_cannot_take_every_slot(listen, pki, capsys, tmp_path, monkeypatch):
    # Without --allow: a hostile host holds max_per_source connections, not all of them.
    monkeypatch.setattr(claim, "REFUSAL_LOG_INTERVAL", 3600.0)
    run = listen(max_connections=32, max_per_source=4)
    with Hostile(run.port, 60, dribble=True):
        rc, _, err = run_cli(capsys, run.target, CODE, "--pin", pki.pin,
                             "-o", str(tmp_path / "pve.yml"))
        assert rc == 0, err
    assert run.listener._stats == {"accepted": 4 + 1, "too_many_connections": 56}
    assert fail2ban_lines(run, "127.0.0.2") == [
        "pvemond-claim: failed claim from 127.0.0.2: too_many_connections"]
    assert run.outcome().status == "claimed"


def test_per_source_cap_counts_an_ipv6_64_as_one_source_and_the_total_is_bounded(pki):
    listener = ClaimListener(b"{}", CODE, str(pki.cert), str(pki.key), max_connections=5,
                             max_per_source=2, rate=0)

    def admit(ip: str) -> str | None:
        return listener._admit(ip, claim._bucket_key(ip))

    same_64 = ["2001:db8:1:2::1", "2001:db8:1:2::ffff", "2001:db8:1:2:abcd::9"]
    assert [admit(ip) for ip in same_64] == [None, None, "too_many_connections"]
    assert [admit(ip) for ip in ("2001:db8:1:3::1", "192.0.2.1", "192.0.2.2")] == [None] * 3
    assert admit("192.0.2.3") == "full"
    listener._release(socket.socket(), claim._bucket_key(same_64[0]), threading.current_thread())
    assert admit(same_64[2]) is None  # a slot freed in that /64


def test_connection_rate_per_source_is_bounded_at_accept(pki):
    now = [0.0]
    listener = ClaimListener(b"{}", CODE, str(pki.cert), str(pki.key), rate=1, burst=2,
                             max_per_source=100, max_connections=100, clock=lambda: now[0])
    key = claim._bucket_key("192.0.2.1")
    results = [listener._admit("192.0.2.1", key) for _ in range(9)]
    assert results == [None] * (2 * claim.ACCEPT_RATE_FACTOR) + ["connection_rate_limited"]
    assert listener._admit("192.0.2.2", claim._bucket_key("192.0.2.2")) is None
    now[0] += 1.0
    assert listener._admit("192.0.2.1", key) is None


def test_an_endless_accept_queue_still_lets_serve_look_at_stop_and_expiry(pki):
    class Endless:  # a flood that reconnects as fast as the listener refuses
        accepted = 0

        def accept(self) -> tuple:
            self.accepted += 1
            return socket.socket(), ("192.0.2.9", 1234)

    listener = ClaimListener(b"{}", CODE, str(pki.cert), str(pki.key), allow=["127.0.0.1/32"],
                             log=_logger()[0])
    listener._sock = Endless()
    listener._accept_all()  # returns, so serve() gets back to its checks
    assert listener._sock.accepted == claim.ACCEPT_BATCH
    assert listener._stats == {"source_not_allowed": claim.ACCEPT_BATCH}


def test_refusal_lines_are_rate_limited_and_sources_remembered_are_bounded(listen, monkeypatch):
    monkeypatch.setattr(claim, "REFUSAL_LOG_INTERVAL", 3600.0)
    monkeypatch.setattr(claim, "REFUSAL_LOG_SOURCES", 3)
    run = listen(allow=["127.0.0.1/32"])
    with Hostile(run.port, 20, source="127.0.0.2"):
        pass
    for n in range(3, 8):
        with Hostile(run.port, 2, source=f"127.0.0.{n}"):
            pass
    eventually(lambda: run.listener._stats["source_not_allowed"] == 30)
    lines = [m for m in run.log.messages("WARNING") if m.startswith("pvemond-claim:")]
    assert lines == [f"pvemond-claim: failed claim from 127.0.0.{n}: source_not_allowed"
                     for n in range(2, 8)]
    assert len(run.listener._refusals) == 3  # the latest sources only


# ---------------------------------------------------------------------------------------------
# HTTP strictness

def test_http_errors_are_json_and_never_count(listen, pki):
    run = listen(max_attempts=1, rate=0)
    status, body, resp = post(pki, run.port, method="GET")
    assert (status, body["error"], resp.getheader("Allow")) == (405, "method_not_allowed", "POST")
    assert post(pki, run.port, path="/v1/other")[1]["error"] == "not_found"
    for bad in (b"{not json", b"[]", json.dumps({"code": 5}).encode(), b"\xff"):
        status, body, _ = post(pki, run.port, bad)
        assert (status, body["error"]) == (400, "bad_request") and "detail" in body
    assert run.listener.attempts == 0 and run.thread.is_alive()


def test_oversized_body_gets_413_not_a_reset(listen, pki):
    # The listener answers before reading the body; closing with it unread would send a TCP
    # reset that often destroys the 413 before the client reads it.
    run = listen(max_attempts=1, rate=0)
    for size in (5000, 20000, 60000) * 4:
        status, body, _ = post(pki, run.port, {"code": CODE, "pad": "x" * size})
        assert (status, body["error"]) == (413, "body_too_large")
    assert run.listener.attempts == 0 and run.thread.is_alive()


def test_length_required_and_huge_declared_length(listen, pki):
    run = listen(rate=0)
    for request, status in ((b"POST /v1/claim HTTP/1.1\r\nHost: x\r\n\r\n", b"411"),
                            (b"POST /v1/claim HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", b"413"),
                            (b"POST /v1/claim HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", b"431"),
                            (b"HELLO\r\n\r\n", b"400")):
        sock = tls_socket(pki, run.port)
        sock.sendall(request)
        reply = read_all(sock)
        assert reply.split(b" ")[1] == status and b'"error"' in reply
        sock.close()
    assert run.listener.attempts == 0


def raw_exchange(pki: Pki, port: int, request: bytes) -> bytes:
    sock = tls_socket(pki, port)
    try:
        sock.sendall(request)
        return read_all(sock)
    finally:
        sock.close()


@pytest.mark.parametrize("value,status,error", [
    (b"\xb2", b"400", "bad_request"),     # latin-1 "²": str.isdigit() says yes, int() says no
    (b"\xb9\xb3", b"400", "bad_request"),  # "¹³"
    (b"+12", b"400", "bad_request"),
    (b"9" * 5000, b"413", "body_too_large"),  # int() refuses over 4300 digits
], ids=["superscript-2", "superscripts-13", "plus-sign", "5000-digits"])
def test_odd_content_length_is_answered_and_logged(listen, pki, value, status, error):
    run = listen(rate=0)
    reply = raw_exchange(pki, run.port, b"POST /v1/claim HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: " + value + b"\r\n\r\n")
    assert reply.split(b" ")[1] == status
    assert json.loads(reply.split(b"\r\n\r\n")[1])["error"] == error
    assert fail2ban_lines(run, "127.0.0.1") == [
        f"pvemond-claim: failed claim from 127.0.0.1: {error}"]
    assert run.listener.attempts == 0


def test_huge_head_gets_its_431_delivered(listen, pki):
    # The listener stops reading at 8 KiB; closing with the rest unread sent a TCP reset that
    # destroyed the 431 before the client read it.
    run = listen(rate=0)
    request = b"POST /v1/claim HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    for _ in range(5):
        reply = raw_exchange(pki, run.port, request)
        assert reply.startswith(b"HTTP/1.1 431 ") and b'"headers_too_large"' in reply
    assert len(fail2ban_lines(run, "127.0.0.1")) == 5


def test_slow_request_gets_408_and_a_warning(listen, pki):
    run = listen(timeout=0.5)
    sock = tls_socket(pki, run.port)
    sock.sendall(b"POST /v1/claim HTTP/1.1\r\nHost: x\r\n")  # ...and never the rest
    reply = read_all(sock)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 408 ") and b'"request_timeout"' in reply
    assert fail2ban_lines(run, "127.0.0.1") == [
        "pvemond-claim: failed claim from 127.0.0.1: request_timeout"]


def tls12_client(pki: Pki, ciphers: str) -> ssl.SSLContext:
    ctx = client_ctx(pki)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    return ctx


@pytest.mark.parametrize("suite", ["AES128-SHA", "AES256-GCM-SHA384", "AES128-GCM-SHA256",
                                   "AES256-SHA256"])
def test_tls_refuses_suites_without_ecdhe(listen, pki, suite):
    run = listen()
    ctx = tls12_client(pki, suite)
    with pytest.raises(ssl.SSLError):
        ctx.wrap_socket(socket.create_connection(("127.0.0.1", run.port), timeout=5),
                        server_hostname="127.0.0.1")


@pytest.mark.parametrize("suite", ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                                   "ECDHE-RSA-CHACHA20-POLY1305", None])
def test_tls_serves_forward_secret_suites(listen, pki, suite):
    run = listen()
    ctx = tls12_client(pki, suite) if suite else client_ctx(pki)
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", run.port), timeout=5),
                         server_hostname="127.0.0.1") as tls:
        name, version, _ = tls.cipher()
    assert (name, version) == (suite, "TLSv1.2") if suite else version == "TLSv1.3"
    offered = run.listener._ctx.get_ciphers()
    assert offered and all(c["protocol"] == "TLSv1.3" or c["kea"] == "kx-ecdhe" for c in offered)


# ---------------------------------------------------------------------------------------------
# Abuse: garbage, floods, slowloris

def test_garbage_and_plain_http_do_not_hurt(listen, pki, capsys, tmp_path):
    run = listen()
    for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(2000), b"\x16\x03\x01\x02\x00",
                 b""):
        with socket.create_connection(("127.0.0.1", run.port), timeout=5) as s:
            try:  # the listener may answer and close before we finish: that is fine
                s.sendall(junk)
                s.shutdown(socket.SHUT_WR)
                assert SECRET.encode() not in read_all(s)
            except (ConnectionResetError, BrokenPipeError, OSError) as exc:
                assert not isinstance(exc, AssertionError)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, OSError)):
        old.wrap_socket(socket.create_connection(("127.0.0.1", run.port), timeout=5))
    rc, _, _ = run_cli(capsys, run.target, CODE, "--pin", pki.pin, "-o", str(tmp_path / "x.yml"))
    assert rc == 0 and run.log.attempts() == ["claim attempt from 127.0.0.1: ok"]


def test_flood_of_wrong_codes(listen, pki, capsys, tmp_path):
    # 4 clients from one host; a client's next connection may come before the server thread
    # of its last one has released its slot
    run = listen(rate=0, max_attempts=10**6, max_per_source=16)
    statuses: collections.Counter = collections.Counter()
    leaked = []

    def flood() -> None:
        for _ in range(125):
            status, body, _ = post(pki, run.port, {"code": WRONG})
            statuses[status] += 1
            leaked.append(SECRET in json.dumps(body))

    started = time.monotonic()
    threads = [threading.Thread(target=flood) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert time.monotonic() - started < 15
    assert statuses == {403: 500} and not any(leaked)
    assert run.listener.attempts == 500
    assert run_cli(capsys, run.target, CODE, "--pin", pki.pin, "-o", str(tmp_path / "x.yml"))[0] == 0


def test_connection_cap_and_slowloris(listen, pki, capsys, tmp_path):
    run = listen(max_connections=3, timeout=1.0)
    idle = [socket.create_connection(("127.0.0.1", run.port), timeout=5) for _ in range(3)]
    time.sleep(0.2)
    with pytest.raises((ssl.SSLError, OSError)):  # over the cap: dropped
        tls_socket(pki, run.port)
    for s in idle:  # ...while every slot was still held, so not queued until one freed up
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            s.recv(10)
        s.setblocking(True)
    for s in idle:  # the per-connection timeout frees every slot
        s.settimeout(3)
        assert s.recv(10) == b""
        s.close()
    trickle = tls_socket(pki, run.port)
    started = time.monotonic()
    with pytest.raises(OSError):
        for ch in b"POST /v1/claim HTTP/1.1\r\nX-Slow: " + b"a" * 100:
            trickle.send(bytes([ch]))
            time.sleep(0.1)
    assert time.monotonic() - started < 3  # one deadline for the whole request, not per byte
    trickle.close()
    assert run_cli(capsys, run.target, CODE, "--pin", pki.pin, "-o", str(tmp_path / "x.yml"))[0] == 0


# ---------------------------------------------------------------------------------------------
# Logs: every attempt, fail2ban lines, never the code

def fail2ban_regex() -> re.Pattern:
    """The module's documented failregex, with <HOST> as fail2ban (>= 0.10) expands it."""
    documented = re.search(r"failregex = (.+)", claim.__doc__).group(1)
    host = (r"(?:(?:::f{4,6}:)?(?P<ip4>(?:\d{1,3}\.){3}\d{1,3})|\[?(?P<ip6>(?:[0-9a-fA-F]{1,4}"
            r"::?|::){1,7}(?:[0-9a-fA-F]{1,4}|(?<=:):))\]?|(?P<dns>[\w\-.^_]*\w))")
    return re.compile(documented.replace("<HOST>", host))


def test_fail2ban_lines_and_attempt_log(listen, pki):
    assert claim.__doc__ and "failregex = ^pvemond-claim: failed claim from <HOST>: " in claim.__doc__
    run = listen(max_attempts=2, allow=["127.0.0.0/8"])
    post(pki, run.port, method="GET")
    post(pki, run.port, {"code": WRONG})
    post(pki, run.port, {"code": WRONG})
    warnings = [m for m in run.log.messages("WARNING") if m.startswith("pvemond-claim:")]
    assert warnings == ["pvemond-claim: failed claim from 127.0.0.1: method_not_allowed",
                        "pvemond-claim: failed claim from 127.0.0.1: wrong_code (1 attempts left)",
                        "pvemond-claim: failed claim from 127.0.0.1: wrong_code (burned after 2)"]
    regex = fail2ban_regex()
    assert all(regex.search(w).group("ip4") == "127.0.0.1" for w in warnings)
    assert not any(regex.search(m) for m in run.log.messages("INFO"))
    assert run.log.attempts() == ["claim attempt from 127.0.0.1: " + r for r in
                                  ("method_not_allowed", "wrong_code", "burned")]
    assert run.outcome().status == "burned"


# ---------------------------------------------------------------------------------------------
# Client: exit codes, output safety, --check

@pytest.mark.parametrize("error,rc", [
    ("wrong_code", 4), ("expired", 5), ("cancelled", 5), ("already_claimed", 6), ("burned", 7),
    ("source_not_allowed", 8), ("rate_limited", 12), ("not_found", 1), (None, 1)])
def test_server_errors_map_to_exit_codes(error, rc):
    body = json.dumps({"error": error, "detail": "d\x1b[31m"}).encode() if error else b"<html>"
    with pytest.raises(cli.Failure) as info:
        cli.server_failure(410, body, "node:8116")
    assert info.value.rc == rc and "\x1b" not in str(info.value)


@pytest.mark.parametrize("text,expected", [
    ("pve1", ("pve1", 8116)), ("pve1:9000", ("pve1", 9000)), ("[::1]:9000", ("::1", 9000)),
    ("[fe80::1]", ("fe80::1", 8116)), ("2001:db8::5", ("2001:db8::5", 8116)),
    ("10.0.0.1:1", ("10.0.0.1", 1))])
def test_parse_target(text, expected):
    assert cli.parse_target(text) == expected


@pytest.mark.parametrize("text", ["pve1:0", "pve1:70000", "pve1:x", ":8116", "[::1]:y"])
def test_parse_target_refuses(text):
    with pytest.raises(cli.Failure) as info:
        cli.parse_target(text)
    assert info.value.rc == 2


def test_help_documents_every_exit_code(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for rc in (0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11):
        assert re.search(rf"^  {rc} +\S", text, re.M), rc
    assert "someone else" in text


def test_unwritable_output_refused_before_the_code_is_sent(listen, pki, capsys, tmp_path):
    run = listen()
    rc, _, err = run_cli(capsys, run.target, CODE, "--pin", pki.pin,
                         "-o", str(tmp_path / "missing" / "pve.yml"))
    assert rc == cli.EXIT_OUTPUT == 10 and "NOT sent" in err
    broken = tmp_path / "pve.yml"
    broken.write_text("a:\n\tuser: x\n")  # a tab: the merge cannot be done safely
    rc, _, err = run_cli(capsys, run.target, CODE, "--pin", pki.pin, "-o", str(broken))
    assert rc == 10 and "tab" in err and "NOT sent" in err
    time.sleep(0.2)
    assert run.log.attempts() == []


def test_not_a_claim_listener(fake_pveproxy, pki, capsys, tmp_path):
    # pveproxy serves the same certificate, so the pin matches; its answer gives it away
    rc, _, err = run_cli(capsys, f"127.0.0.1:{fake_pveproxy.port}", CODE, "--pin", pki.pin,
                         "-o", str(tmp_path / "x.yml"))
    assert rc == cli.EXIT_UNEXPECTED and "claim listener" in err


def test_nothing_listening_is_a_network_failure(capsys, pki):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, _, err = run_cli(capsys, f"127.0.0.1:{port}", CODE, "--pin", pki.pin)
    assert rc == cli.EXIT_NETWORK == 9 and "no longer waiting" in err and "firewall" not in err


class FakePveproxy(http.server.BaseHTTPRequestHandler):
    """pveproxy's two answers --check needs, behind the token."""
    resources: list = []

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"PVEAPIToken=monitoring@pve!monitoring={SECRET}":
            return self._send(401, {"data": None})
        data = {"/api2/json/version": {"version": "9.1.1", "release": "9.1"},
                "/api2/json/cluster/resources": type(self).resources}.get(self.path)
        self._send(200 if data is not None else 501, {"data": data})

    do_POST = do_GET

    def _send(self, status: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_pveproxy(pki):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakePveproxy)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki.cert), str(pki.key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


RESOURCES = [{"type": "node", "node": "pve1"}, {"type": "qemu", "vmid": 100},
             {"type": "lxc", "vmid": 101}, {"type": "storage", "storage": "local"}]


@pytest.mark.parametrize("resources,rc,words", [
    (RESOURCES, 0, "Proxmox VE 9.1.1; the token sees 1 node(s), 2 guest(s), 1 storage(s)"),
    ([], 11, "sees nothing"),
    (RESOURCES[:1], 11, "privilege-separated token without an ACL"),
])
def test_check_reports_what_the_token_sees(listen, pki, capsys, tmp_path, fake_pveproxy,
                                           monkeypatch, resources, rc, words):
    monkeypatch.setattr(FakePveproxy, "resources", resources)
    run = listen(make_payload(pki, f"https://127.0.0.1:{fake_pveproxy.port}/api2/json"))
    got, _, err = run_cli(capsys, run.target, CODE, "--pin", pki.pin, "--check",
                          "-o", str(tmp_path / "pve.yml"))
    assert got == rc and words in err and SECRET not in err
    assert (tmp_path / "pve.yml").exists()  # written before checking


def test_check_names_the_certificate_names_on_mismatch(listen, pki, capsys, tmp_path,
                                                       fake_pveproxy):
    run = listen(make_payload(pki, f"https://localhost:{fake_pveproxy.port}/api2/json"))
    rc, _, err = run_cli(capsys, run.target, CODE, "--pin", pki.pin, "--check",
                         "-o", str(tmp_path / "pve.yml"))
    assert rc == cli.EXIT_CHECK == 11
    assert "localhost is not in the node certificate's subject alternative names" in err
    assert "IP Address:127.0.0.1" in err


def test_check_blames_the_firewall_when_refused(listen, pki, capsys, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = listen(make_payload(pki, f"https://127.0.0.1:{port}/api2/json"))
    rc, _, err = run_cli(capsys, run.target, CODE, "--pin", pki.pin, "--check",
                         "-o", str(tmp_path / "pve.yml"))
    assert rc == 11 and "firewall" in err and "8006" in err


def test_the_benchmark_listener_script_imports():
    """`make bench` runs this snippet in a subprocess; a rename must fail here, not silently there."""
    import bench
    header = bench.LISTENER.split("\nl = ")[0]
    exec(compile(header, "bench.LISTENER", "exec"), {})


def test_the_slowloris_benchmark_listener_script_imports():
    import bench
    header = bench.SLOWLORIS_LISTENER.split("\nl = ")[0]
    exec(compile(header, "bench.SLOWLORIS_LISTENER", "exec"), {})
