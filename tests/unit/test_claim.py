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
CODE = new_code()
WRONG = next(c for c in iter(new_code, None) if c != CODE)


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
         headers: dict | None = None) -> tuple[int, dict, http.client.HTTPResponse]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=client_ctx(pki), timeout=5)
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


# ---------------------------------------------------------------------------------------------
# Codes

def test_code_shape_alphabet_and_entropy():
    assert len(ALPHABET) == len(set(ALPHABET)) == 32 and not set("01OI") & set(ALPHABET)
    assert codes.CODE_SYMBOLS * math.log2(len(ALPHABET)) >= 60
    samples = [new_code() for _ in range(2000)]
    symbol = f"[{ALPHABET}]"
    assert all(re.fullmatch(f"{symbol}{{4}}-{symbol}{{4}}-{symbol}{{4}}", c) for c in samples)
    assert len(set(samples)) == len(samples)
    # 24000 symbols: each of the 32 expected 750 times; a biased generator leaves this band.
    counts = collections.Counter(ch for c in samples for ch in c.replace("-", ""))
    assert set(counts) == set(ALPHABET)
    assert all(600 < n < 900 for n in counts.values())


def test_code_comes_from_secrets(monkeypatch):
    calls = []
    monkeypatch.setattr(codes.secrets, "choice", lambda seq: calls.append(seq) or seq[0])
    assert new_code() == "2222-2222-2222" and calls == [ALPHABET] * 12


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
                     "Datastore.Audit, Sys.Audit, VM.Audit", "module=prod"):
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
    run = listen(grace=1.0, rate=0)
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
# Source gates: allow list and rate limit (neither counts as an attempt)

def test_allow_list_refuses_other_sources(listen, pki, capsys, tmp_path):
    run = listen(allow=["192.0.2.0/24"], max_attempts=1)
    rc, _, err = run_cli(capsys, run.target, CODE, "--pin", pki.pin, "-o", str(tmp_path / "x"))
    assert rc == cli.EXIT_NOT_ALLOWED == 8 and "127.0.0.1 is not in" in err and "--allow" in err
    assert post(pki, run.port, {"code": WRONG})[0] == 403  # would burn if it counted
    assert run.listener.attempts == 0 and run.thread.is_alive()
    assert "pvemond-claim: failed claim from 127.0.0.1: source_not_allowed" in run.log.messages()


def test_rate_limit_answers_429_without_counting(listen, pki, capsys, tmp_path):
    run = listen(rate=0.5, burst=2, max_attempts=10)
    statuses = [post(pki, run.port, {"code": WRONG})[0] for _ in range(3)]
    assert statuses == [403, 403, 429]
    rc, _, err = run_cli(capsys, run.target, CODE, "--pin", pki.pin, "-o", str(tmp_path / "x"))
    assert rc == cli.EXIT_RATE and "rate limiting" in err
    assert run.listener.attempts == 2
    assert run.log.attempts()[-1] == "claim attempt from 127.0.0.1: rate_limited"


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
    run = listen(rate=0, max_attempts=10**6)
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
    assert rc == cli.EXIT_NETWORK == 9 and "firewall" in err


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
