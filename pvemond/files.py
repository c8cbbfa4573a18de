"""Writing files that hold a secret: atomically (never a torn config) and private from the start
(mode 0600 before the first byte, not chmod afterwards). Stdlib only: the claim client uses it."""
from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays unloaded: pvemond/records.py says why
    from typing import Optional, Tuple, Union


def write_private(path: str, text: Union[str, bytes], mode: int = 0o600, *,
                  ids: Optional[Tuple[int, int]] = None, sync_dir: bool = True) -> None:
    """staged_private without a block. sync_dir=False leaves the rename to the caller's next
    sync of that directory (a second file written there): one fsync makes both durable."""
    with _Staged(path, _bytes(text), mode, ids, sync_dir):
        pass


def staged_private(path: str, text: Union[str, bytes], mode: int = 0o600, *,
                   ids: Optional[Tuple[int, int]] = None) -> _Staged:
    """Write `text` durably beside `path`; it replaces `path` only if the block succeeds (so
    the block can record where a secret goes before the secret is in place), else it is gone.
    The temporary file is 0600 from its creation; it gets owner and group `ids` (uid, gid)
    and `mode` once it is complete, and the directory is synced after the rename."""
    return _Staged(path, _bytes(text), mode, ids)


def _bytes(text: Union[str, bytes]) -> bytes:
    return text.encode("utf-8") if isinstance(text, str) else text


class _Staged:
    """staged_private's block: a class, not @contextmanager, which would load contextlib into
    every claim."""

    def __init__(self, path: str, data: bytes, mode: int, ids: Optional[Tuple[int, int]],
                 sync_dir: bool = True):
        self._path, self._data, self._mode, self._ids = path, data, mode, ids
        self._sync_dir = sync_dir
        self._directory = os.path.dirname(path) or "."
        self._tmp = ""

    def __enter__(self) -> None:
        fd, self._tmp = _create_temporary(self._directory, f".{os.path.basename(self._path)}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self._data)
                f.flush()
                os.fsync(f.fileno())
                if self._ids is not None:
                    os.fchown(f.fileno(), *self._ids)
                os.fchmod(f.fileno(), self._mode)  # after chown, which may clear set-id bits
        except BaseException:
            os.unlink(self._tmp)
            raise

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is not None:  # the block failed: the file stays as it was
            os.unlink(self._tmp)
            return
        try:
            os.replace(self._tmp, self._path)
        except BaseException:
            os.unlink(self._tmp)
            raise
        if self._sync_dir:
            sync_directory(self._directory)


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
