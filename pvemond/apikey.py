"""The loopback TCP listener's key file: root's alone, or not used at all.

A key that another user can read lets that user mint tokens, so the file is refused (at start-up
and on every request) unless it is a regular file owned by root with no group or other bits.
"""
from __future__ import annotations

import os
import stat


class KeyFileError(Exception):
    """The key file is missing, unsafe or empty; the message says which command fixes it."""


def read(path: str) -> str:
    """The key, after checking the file it was read from (fstat on the open file: no race)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY)
    except OSError as exc:
        raise KeyFileError(f"the TCP listener needs a key in {path} ({exc.strerror}): create it "
                           f"with (umask 077; openssl rand -hex 32 > {path})") from None
    with os.fdopen(fd, "rb") as f:
        _check(path, os.fstat(f.fileno()))
        key = f.read(4096).decode("utf-8", "replace").strip()
    if not key:
        raise KeyFileError(f"{path} is empty: put a key in it (openssl rand -hex 32 > {path})")
    return key


def _check(path: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path} is not a regular file")
    if st.st_uid != 0:
        raise KeyFileError(f"{path} is owned by uid {st.st_uid}, not root: "
                           f"run chown root:root {path}")
    if st.st_mode & 0o077:
        raise KeyFileError(f"{path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others may "
                           f"read or change the key; run chmod 600 {path}")
