"""The claim listener's own identity and code: a fresh ECDSA P-256 key and self-signed certificate
per claim (claim.fresh_identity; never pveproxy's key), a code that carries the listener's expiry,
and the forked listener of pvemond-bootstrap (cli/handoff.py) serving both. pvemond-claim with
this claim's pin, pointed at a server with another key (pveproxy on 8006), sends it nothing."""
from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from harness import REPO, free_port
from pvemond import claim, codes, tlspin
from pvemond.cli import claim as cli
from pvemond.cli import handoff
from pvemond.config import ClaimConfig


def served_der(port: int) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True)


# ---------------------------------------------------------------------------------------------
# fresh_identity

def test_fresh_identity_is_a_new_p256_key_in_memory_files_that_go_away():
    with claim.fresh_identity() as (cert, key):
        # anonymous memory, no file system: nothing to leave behind, nothing a full disk stops
        assert all(os.readlink(path).startswith("/memfd:") for path in (cert, key))
        pem = Path(cert).read_text()
        text = subprocess.run(["openssl", "x509", "-noout", "-text"], input=pem, check=True,
                              capture_output=True, text=True).stdout
        assert "prime256v1" in text or "P-256" in text
        assert "Issuer: CN = pvemond claim" in text and "Subject: CN = pvemond claim" in text
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
        first = tlspin.pin_of_der(tlspin.pem_to_der(pem))
    for path in (cert, key):  # closed: the number is free, or holds something else now
        assert not os.path.exists(path) or not os.readlink(path).startswith("/memfd:pvemond")
    with claim.fresh_identity() as (cert, _):
        assert tlspin.pin_of_der(tlspin.pem_to_der(Path(cert).read_text())) != first


def test_a_kill_inside_fresh_identity_leaves_no_file(tmp_path):
    """kill -9 while the claim's key exists (bootstrap killed as it binds): nothing stays
    behind in the temporary directory, where the key's directory used to be."""
    script = ("import os, signal\nfrom pvemond import claim\n"
              "with claim.fresh_identity() as (cert, key):\n"
              "    print(os.readlink(key), flush=True)\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == -9 and r.stdout.startswith("/memfd:pvemond-claim.key")
    assert list(tmp_path.iterdir()) == []


def test_fresh_identity_says_why_openssl_failed():
    with pytest.raises(OSError, match="cannot make the claim's key with /nonexistent/openssl"):
        with claim.fresh_identity("/nonexistent/openssl"):
            pass


def test_fresh_identity_says_why_it_has_no_memory_file(monkeypatch):
    """memfd_create failing (EMFILE) at the second file: a sentence, and the first one closed."""
    made: list = []
    real = os.memfd_create

    def memfd_create(name: str) -> int:
        if made:
            raise OSError(24, "Too many open files")
        made.append(real(name))
        return made[-1]

    monkeypatch.setattr(os, "memfd_create", memfd_create)
    with pytest.raises(OSError, match="cannot make the claim's key .*Too many open files"):
        with claim.fresh_identity():
            pass
    with pytest.raises(OSError):
        os.fstat(made[0])


def test_fresh_identity_is_cheap():
    start = time.monotonic()
    for _ in range(5):
        with claim.fresh_identity():
            pass
    assert (time.monotonic() - start) / 5 < 1.0  # measured about 6 ms on 2 cores


# ---------------------------------------------------------------------------------------------
# The listener's own code

def test_listener_makes_its_code_with_its_expiry_and_anew_when_armed():
    with claim.fresh_identity() as (cert, key):
        listener = claim.ClaimListener(b"", None, cert, key, host="127.0.0.1", port=0, ttl=600)
        listener.bind()
    try:
        first = listener.code
        assert first[-2:] == codes.new_code(listener.expires_at)[-2:]
        assert codes.expired_since(first, listener.expires_at + 60 + codes.CLOCK_SKEW + 1)
        assert codes.expired_since(first, time.time()) is None
        listener.arm(b"{}")
        assert listener.code != first and listener.code[-2:] == codes.new_code(listener.expires_at)[-2:]
    finally:
        listener.stop()
        listener.serve()


def test_a_given_code_is_kept():
    code = codes.new_code(time.time() + 600)
    with claim.fresh_identity() as (cert, key):
        listener = claim.ClaimListener(b"", code, cert, key, host="127.0.0.1", port=0)
        listener.bind()
    listener.arm(b"{}")
    assert listener.code == code
    listener.stop()
    assert listener.serve().status == "stopped"


# ---------------------------------------------------------------------------------------------
# The forked listener of pvemond-bootstrap

@pytest.fixture
def forked(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the child makes its key
    listeners = []

    def start(**cfg) -> handoff.Listener:
        listener = handoff.Listener(ClaimConfig(listen="127.0.0.1", port=free_port(), **cfg))
        listeners.append(listener)
        return listener
    yield start
    for listener in listeners:
        listener.cancel()


def test_forked_listener_serves_its_own_key_and_prints_its_pin(forked, tmp_path, capsys):
    listener = forked(ttl=120)
    assert listener.code == "" and os.listdir(tmp_path) == []  # the key's files are gone
    listener.arm(json.dumps({"hello": "world"}).encode())
    offer = handoff.offer(listener, "127.0.0.1")
    der = served_der(listener.port)
    assert offer.pin == tlspin.pin_of_der(der) and offer.fingerprint == tlspin.fingerprint_of_der(der)
    assert tlspin.pem_to_der(listener.cert_pem) == der
    assert abs(offer.expires_at - (time.time() + 120)) < 10
    assert listener.code[-2:] == codes.new_code(offer.expires_at)[-2:]
    assert offer.code in handoff.commands(offer)[0] and "/v1/claim" in handoff.commands(offer)[1]


def test_forked_listener_reports_a_busy_port(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1 port {port}"):
            handoff.Listener(ClaimConfig(listen="127.0.0.1", port=port))


# ---------------------------------------------------------------------------------------------
# The code never reaches a server with another key

class OtherServer:
    """A TLS server with a key of its own (pveproxy on 8006, say) that records every byte."""

    def __init__(self, cert: str, key: str):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self.handshakes = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    self.handshakes += 1
                    tls.settimeout(3)
                    while True:
                        chunk = tls.recv(4096)
                        if not chunk:
                            break
                        self.received += chunk
            except OSError:
                pass


def test_claim_pin_refuses_a_server_with_another_key_before_sending_the_code(capsys, tmp_path):
    code = codes.new_code(time.time() + 600)
    with claim.fresh_identity() as (cert, _):
        pin = tlspin.pin_of_der(tlspin.pem_to_der(Path(cert).read_text()))
    with claim.fresh_identity() as (cert, key):  # "pveproxy": another key
        other = OtherServer(cert, key)
        other_pin = tlspin.pin_of_der(tlspin.pem_to_der(Path(cert).read_text()))
    rc = cli.main([f"127.0.0.1:{other.port}", code, "--pin", pin, "-o", str(tmp_path / "pve.yml")])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_PIN and "NOT sent" in err and other_pin in err
    time.sleep(0.3)
    assert other.handshakes >= 1  # it was asked, and got nothing
    assert code.encode() not in other.received and b"code" not in other.received
    assert other.received == b""
    assert not (tmp_path / "pve.yml").exists()
    other.sock.close()
