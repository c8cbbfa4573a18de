"""Writing files that hold a secret: atomically (never a torn config) and private from the start
(mode 0600 before the first byte, not chmod afterwards). Stdlib only: the claim client uses it."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Optional


def write_private(path: str, text: str, mode: int = 0o600) -> None:
    with staged_private(path, text, mode):
        pass


@contextmanager
def staged_private(path: str, text: str, mode: int = 0o600) -> Iterator[None]:
    """Write `text` durably beside `path`; it replaces `path` only if the block succeeds (so
    the block can record where a secret goes before the secret is in place), else it is gone."""
    import tempfile  # here: pvemond-claim starts faster without it (and pathlib)
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=directory or ".", prefix=f".{name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        yield
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_optional(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
