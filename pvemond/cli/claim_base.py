"""What every part of pvemond-claim shares: the exit codes, the Failure that carries one, and
the terminal and file helpers. Stdlib only, Python >= 3.9, like the rest of the client."""
from __future__ import annotations

import re
import sys

from pvemond.records import record

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays unloaded: pvemond/records.py says why
    from typing import Optional, Tuple

(EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_PIN, EXIT_WRONG_CODE, EXIT_EXPIRED, EXIT_CLAIMED,
 EXIT_BURNED, EXIT_NOT_ALLOWED, EXIT_NETWORK, EXIT_OUTPUT, EXIT_CHECK, EXIT_RATE) = range(13)
EXIT_INTERRUPTED = 130


class Failure(Exception):
    """A refusal or failure: one message for the user and the exit code."""

    def __init__(self, rc: int, message: str):
        super().__init__(message)
        self.rc = rc


@record
class Written:
    config: Optional[str]  # None: printed on stdout
    ca_path: Optional[str]  # None: the system CAs verify the node (formats.system_trust)
    companions: Tuple[str, ...] = ()  # a format's other files (curl's token header)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


def _clean(text: object) -> str:
    """A server sentence for the terminal: printable, one line, bounded."""
    return re.sub(r"[^\x20-\x7e]", "?", str(text))[:300]


def _check_failed(message: str) -> int:
    say(f"pvemond-claim: check failed: {message}")
    return EXIT_CHECK


def _write_kept(path: str, data: bytes, owner: Optional[str] = None,
                group: Optional[str] = None) -> None:
    from pvemond import hostfiles  # here: only a written file needs it (and pathlib)
    hostfiles.write_kept(path, data, owner=owner, group=group)
