"""The daemon's one error type and how pveum's failures map onto it (the ground floor: every
daemon module may raise a ServiceError without importing the use cases)."""
from __future__ import annotations

from pvemond.pve import pveum as P


class ServiceError(Exception):
    """A failure the caller can act on: `code` for programs, the message for people, `status`
    for HTTP (rest.py is the only reader of it), `extra` for fields a program may need."""

    def __init__(self, code: str, detail: str, status: int = 400, **extra: object):
        self.code, self.detail, self.status, self.extra = code, detail, status, extra
        super().__init__(detail)

    def __reduce__(self):  # across the pipe from a change process (changes.py)
        return _rebuild, (self.code, self.detail, self.status, self.extra)


def _rebuild(code: str, detail: str, status: int, extra: dict) -> ServiceError:
    return ServiceError(code, detail, status, **extra)


_PVEUM_ERRORS = [  # (class, code, HTTP status): most specific first
    (P.PmxcfsDown, "pmxcfs_down", 503),
    (P.NoQuorum, "no_quorum", 503),
    (P.NotAProxmoxNode, "not_a_pve_node", 503),
    (P.PveumTimeout, "pveum_timeout", 504),
    (P.NotRoot, "not_root", 500),
    (P.PveumError, "pveum_failed", 502),
]


def service_error(exc: P.PveumError) -> ServiceError:
    for cls, code, status in _PVEUM_ERRORS:
        if isinstance(exc, cls):
            return ServiceError(code, str(exc), status)
    raise AssertionError("unreachable")
