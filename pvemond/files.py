"""Writing files that hold a secret: atomically (never a torn config) and private from the start
(mode 0600 before the first byte, not chmod afterwards). Stdlib only: the claim client uses it."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Optional, Tuple, Union


def write_private(path: str, text: Union[str, bytes], mode: int = 0o600, *,
                  ids: Optional[Tuple[int, int]] = None) -> None:
    with staged_private(path, text, mode, ids=ids):
        pass


@contextmanager
def staged_private(path: str, text: Union[str, bytes], mode: int = 0o600, *,
                   ids: Optional[Tuple[int, int]] = None) -> Iterator[None]:
    """Write `text` durably beside `path`; it replaces `path` only if the block succeeds (so
    the block can record where a secret goes before the secret is in place), else it is gone.
    The temporary file is 0600 from its creation; it gets owner and group `ids` (uid, gid)
    and `mode` once it is complete, and the directory is synced after the rename."""
    import tempfile  # here: pvemond-claim starts faster without it (and pathlib)
    data = text.encode("utf-8") if isinstance(text, str) else text
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=directory or ".", prefix=f".{name}.")  # O_EXCL, 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            if ids is not None:
                os.fchown(f.fileno(), *ids)
            os.fchmod(f.fileno(), mode)  # after chown, which may clear set-id bits
        yield
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    sync_directory(directory or ".")


def sync_directory(directory: str) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_optional(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
