"""One HTTP/1.1 exchange on a connected socket, read by hand (stdlib only, Python >= 3.9).

pvemond's own clients talk to pvemond's own servers: pvemond-claim to the claim listener (TLS),
pvemond-bootstrap and `pvemond` to the daemon (its unix socket). Each sends one request with
`Connection: close`. http.client would import the email package: a third of pvemond-claim's
start-up, a fifth of pvemond-bootstrap's.
"""
from __future__ import annotations

import socket

from pvemond.records import record

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays unloaded: pvemond/records.py says why
    from typing import Dict

HEAD_LIMIT = 65536  # bytes of status line and headers; both servers send a few hundred


class BadAnswer(ValueError):
    """The answer is not HTTP that can be read (the peer died mid-answer, or is not ours)."""


@record
class Answer:
    status: int
    reason: str
    headers: Dict[str, str]  # by lower-case name
    body: bytes              # at most `limit` + 1 bytes: a caller sees it was too long


def exchange(sock: socket.socket, request: bytes, limit: int) -> Answer:
    """Send `request` and read its answer: by Content-Length, else chunked, else to the close."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536) if len(data) <= HEAD_LIMIT else b""
        if not chunk:
            raise BadAnswer("no complete HTTP answer" if data else "no answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    status, _, reason = rest.partition(" ")
    if not (version.startswith("HTTP/1.") and status.isdigit() and len(status) == 3):
        raise BadAnswer("not an HTTP answer")
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines)}
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise BadAnswer(f"a Content-Length that is no length: {length[:20]!r}")
        body = _read(sock, body, min(int(length), limit + 1), exact=True)
    else:
        body = _read(sock, body, limit + 1, exact=False)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = _unchunk(body)
    return Answer(int(status), reason, headers, body[:limit + 1])


def _read(sock: socket.socket, got: bytes, want: int, *, exact: bool) -> bytes:
    """`got` and what follows, up to `want` bytes; `exact`: the peer promised that many."""
    while len(got) < want:
        chunk = sock.recv(min(65536, want - len(got)))
        if not chunk:
            if exact:
                raise BadAnswer("the answer ended early")
            break
        got += chunk
    return got[:want]


def _unchunk(data: bytes) -> bytes:
    out = []
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            raise BadAnswer("a garbled chunked answer") from None
        if not sep or len(data) < size + 2:
            raise BadAnswer("the answer ended early")
        if size == 0:
            return b"".join(out)
        out.append(data[:size])
        data = data[size + 2:]
