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
    data = text.encode("utf-8") if isinstance(text, str) else text
    directory, name = os.path.split(path)
    fd, tmp = _create_temporary(directory or ".", f".{name}.")
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


def _create_temporary(directory: str, prefix: str) -> Tuple[int, str]:
    """A new file, 0600, that no other process opened: tempfile.mkstemp's way (O_EXCL, no
    symlink followed) without importing tempfile, which costs pvemond-claim a tenth of its
    start-up (shutil, random, hashlib)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        tmp = os.path.join(directory, prefix + os.urandom(6).hex())
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory} after 100 tries")


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
