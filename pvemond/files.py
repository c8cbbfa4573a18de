"""Writing files that hold a secret: atomically (never a torn config) and private from the start
(mode 0600 before the first byte, not chmod afterwards). Stdlib only: the claim client uses it."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional


def write_private(path: str, text: str, mode: int = 0o600) -> None:
    with staged_private(path, text, mode):
        pass


@contextmanager
def staged_private(path: str, text: str, mode: int = 0o600) -> Iterator[None]:
    """Write `text` durably beside `path`; it replaces `path` only if the block succeeds (so
    the block can record where a secret goes before the secret is in place), else it is gone."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent or Path("."), prefix=f".{target.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        yield
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def read_optional(path: str) -> Optional[str]:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
