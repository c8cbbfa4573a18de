"""Processes: telling a live one from a recycled PID, and tying a child's life to its parent's.
Linux only (/proc, prctl), like Proxmox VE."""
from __future__ import annotations

import functools
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

_PR_SET_PDEATHSIG = 1
_libc: Any = None  # ctypes' handle on the C library, loaded on first use (the worker never needs it)


@dataclass(frozen=True)
class Proc:
    """A process, told apart from a later one that reuses its PID by its start time."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> Optional["Proc"]:
        start = _start_time(pid)
        return None if start is None else cls(pid, start)

    def alive(self) -> bool:
        return _start_time(self.pid) == self.start


def _start_time(pid: int) -> Optional[int]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # Field 22 (starttime); the command name before it may hold spaces and parentheses.
    return int(stat[stat.rindex(")") + 2:].split()[19])


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when the thread that forked it ends; exit at once if `parent` (the
    pid that forked it) is already gone, which the signal, armed only now, would miss. A uid
    change clears it, so call it after dropping privileges."""
    _load_libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def tied_to_parent() -> Callable[[], None]:
    """die_with_parent for a child this process is about to fork, to call before exec (a
    preexec_fn) or after dropping privileges. It names this process as the parent: a child whose
    parent died between the fork and the call, before the signal was armed, exits instead of
    running on unowned (a pveum that would then write a token after the sweeper had revoked it;
    shown in the fault ring with that window widened). The C library is loaded here, before the
    fork, since an import between fork and exec may deadlock."""
    _load_libc()
    return functools.partial(die_with_parent, os.getpid())


def _load_libc() -> Any:
    global _libc
    if _libc is None:
        import ctypes
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc
