"""gunicorn's own refusals (a request line or header too long, a malformed request) as JSON like
every other pvemond error, instead of gunicorn's HTML page.

gunicorn (20.1 to today) writes them with gunicorn.util.write_error(sock, status, reason,
message) from the worker's handle_error; replacing that one function in the worker keeps its
status codes and its WARNING line ("Invalid request from ...") as they are.
"""
from __future__ import annotations

import json


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    from gunicorn import util
    body = json.dumps({"error": reason.lower().replace(" ", "_") or "bad_request",
                       "detail": mesg or reason}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def install() -> None:
    from gunicorn import util
    util.write_error = write_json_error
