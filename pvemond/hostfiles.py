"""Files on the monitoring host that behave like the admin's own.

Replacing a config keeps its owner, group and mode (root:prometheus 0640 stays that, so the
exporter running as its own user can still read it); a symlinked config is written through to
its target, the link stays; a new file is private unless the admin names who reads it. Stdlib
only (pvemond-claim), Python >= 3.9.
"""
from __future__ import annotations

import os
import stat

from pvemond import files

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays unloaded: pvemond/records.py says why
    from typing import Callable, Optional, Tuple, Union

NEW_MODE = 0o600         # a new file nobody else was named for
NEW_SHARED_MODE = 0o640  # a new file for --owner/--group: they read it, nobody else


class HostFileError(OSError):
    """A file cannot be written as asked; the message names the cause and the fix."""

    def __init__(self, message: str):
        super().__init__(message)
        self.strerror = message  # what pvemond-claim's _why() shows


def write_kept(path: Union[str, "os.PathLike[str]"], data: bytes, *, owner: Optional[str] = None,
               group: Optional[str] = None) -> str:
    """Write `data` to `path` atomically; returns the real path written (a symlink's target).
    An existing file keeps its owner, group and mode (never wider); owner/group, when given,
    set those (a new file is then 0640, else 0600 and owned by whoever runs this)."""
    target = real_target(os.fspath(path))
    uid, gid = _ids(owner, group)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise HostFileError(f"{target} exists and is not a regular file; remove it or choose "
                            "another -o")
    if st is None:
        mode = NEW_SHARED_MODE if owner or group else NEW_MODE
        ids = (os.geteuid() if uid is None else uid, os.getegid() if gid is None else gid)
    else:
        mode = stat.S_IMODE(st.st_mode) & 0o777  # never wider: no set-id bits either
        ids = (st.st_uid if uid is None else uid, st.st_gid if gid is None else gid)
    try:
        files.write_private(target, data, mode, ids=_needed(ids))
    except PermissionError as exc:
        raise HostFileError(_permission(target, ids, exc)) from None
    return target


def real_target(path: str) -> str:
    """The file a write to `path` must replace: a symlink's final target, checked."""
    absolute = os.path.abspath(path)
    real = os.path.realpath(absolute)
    if os.path.islink(absolute) and not os.path.exists(real):
        raise HostFileError(f"{path} is a symlink to {os.readlink(absolute)}, which does not "
                            f"exist (or loops); create {real} or remove the link, then run again")
    directory = os.path.dirname(real)
    if not os.path.isdir(directory):
        raise HostFileError(f"directory {directory} does not exist (for {path}); create it "
                            "(mkdir -p) or choose another -o")
    return real


def _ids(owner: Optional[str], group: Optional[str]) -> Tuple[Optional[int], Optional[int]]:
    import grp  # here: only --owner/--group need the user and group databases
    import pwd
    uid = _lookup(lambda: pwd.getpwnam(owner).pw_uid, f"--owner {owner}: no such user on this "
                  "host; create it (adduser --system)") if owner else None
    gid = _lookup(lambda: grp.getgrnam(group).gr_gid, f"--group {group}: no such group on this "
                  "host; create it (addgroup --system)") if group else None
    return uid, gid


def _lookup(find: Callable[[], int], missing: str) -> int:
    try:
        return find()
    except KeyError:
        raise HostFileError(f"{missing} or name an existing one") from None


def _needed(ids: Tuple[int, int]) -> Optional[Tuple[int, int]]:
    """None when a non-root user's new file gets these ids anyway (no chown it cannot do)."""
    return None if os.geteuid() != 0 and ids == (os.geteuid(), os.getegid()) else ids


def _permission(target: str, ids: Tuple[int, int], exc: PermissionError) -> str:
    if exc.filename and os.path.dirname(os.fspath(exc.filename)) == os.path.dirname(target) \
            and not os.access(os.path.dirname(target), os.W_OK | os.X_OK):
        return f"cannot write into {os.path.dirname(target)}: run as a user who may, or choose another -o"
    return (f"cannot give {target} owner {ids[0]} and group {ids[1]} (uid/gid) as it had or as "
            "asked: run as root, or drop --owner/--group")
