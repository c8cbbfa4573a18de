"""pvemond.http1: one request, its answer read by Content-Length, chunks or the close, and every
answer it cannot read refused as BadAnswer; pvemond's command on the node says so in one line."""
from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from pvemond import http1
from pvemond.client import Client, DaemonDown

REQUEST = b"POST /v1/claim HTTP/1.1\r\nConnection: close\r\n\r\n"


def answered(raw: bytes, limit: int = 1 << 20) -> http1.Answer:
    """http1.exchange against a peer that sends `raw` and closes (a socketpair: no TLS needed)."""
    ours, peer = socket.socketpair()
    with ours, peer:
        peer.sendall(raw)
        peer.shutdown(socket.SHUT_WR)
        answer = http1.exchange(ours, REQUEST, limit)
        assert peer.recv(100) == REQUEST  # the request went out whole
        return answer


def test_an_answer_is_read_by_its_content_length():
    raw = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
           b"Retry-After: 3\r\nContent-Length: 8\r\nConnection: close\r\n\r\n{\"a\": 1}trailing")
    answer = answered(raw)
    assert (answer.status, answer.reason, answer.headers["retry-after"], answer.body) == \
        (503, "Service Unavailable", "3", b'{"a": 1}')


def test_without_a_length_the_body_runs_to_the_close():
    assert answered(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"ok\": true}").body == \
        b'{"ok": true}'


def test_a_chunked_answer_is_joined():
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n4;x=y\r\n: 1}\r\n0\r\n\r\n"
    assert answered(raw).body == b'{"a": 1}'


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
    b"HTTP/1.1 200 OK\r\n\r\n0123456789",
])
def test_an_answer_over_the_limit_is_cut_one_byte_past_it(raw):
    assert answered(raw, limit=4).body == b"01234"


@pytest.mark.parametrize("raw, why", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "ended early"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}", "no length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort", "ended early"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "garbled chunked"),
    (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP answer"),
    (b"HTTP/1.1 20x OK\r\n\r\n", "not an HTTP answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Le", "no complete HTTP answer"),
    (b"", "no answer"),
])
def test_an_unreadable_answer_is_refused(raw, why):
    with pytest.raises(http1.BadAnswer, match=why):
        answered(raw)


def test_endless_headers_are_refused():
    ours, peer = socket.socketpair()
    with ours, peer:
        def flood():
            try:
                peer.sendall(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20000)
            except OSError:
                pass  # refused and closed: what the test wants
        sender = threading.Thread(target=flood)
        sender.start()
        with pytest.raises(http1.BadAnswer, match="no complete HTTP answer"):
            http1.exchange(ours, REQUEST, 1 << 20)
        ours.close()
        sender.join()


def test_the_node_command_names_a_daemon_that_died_mid_answer(tmp_path: Path):
    path = str(tmp_path / "api.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def half_answer():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"stat")

    t = threading.Thread(target=half_answer)
    t.start()
    with server, pytest.raises(DaemonDown, match=r"lost the connection to pvemond \(the answer "
                               r"ended early\): see journalctl -u pvemond"):
        Client(path, timeout=5).status()
    t.join()
