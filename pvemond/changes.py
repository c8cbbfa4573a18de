"""Changes run apart: a request that runs pveum or talks TLS runs in a short-lived child of the
daemon's worker, which sends back what the call returned or raised and exits.

Why: what a change allocates (sh's threads and buffers, pveum's output, OpenSSL's certificate
parsing, glibc's per-thread arenas) stayed in the long-lived worker: 2.2-2.6 MiB more heap after
three bootstraps and two doctor runs (measured); a child's memory goes back when it ends.
It costs about 4 ms (fork, answer, exit; 8 with the sh and ctypes imports a pveum run needs,
which the worker never loads): the child shares the worker's pages, its imports included.

Faults: the child dies with the worker thread that forked it (PDEATHSIG), and pveum dies with
the child, as pveum died with the worker before. A child killed on its own (the OOM killer) is
an error for its request; an intent it recorded names the child, so the sweeper revokes what
it minted.
"""
from __future__ import annotations

import _imp
import importlib._bootstrap
import io
import logging
import os
import pickle
import signal
import sys
import time
import traceback
from typing import Any, Callable, List, Tuple

from pvemond import procs
from pvemond.errors import ServiceError
from pvemond.secret import Secret

_inside = False  # this process is a change process
_NAMED = set(signal.Signals)


def inside() -> bool:
    return _inside


def run(call: Callable[..., Any], *args: Any, left: str = "", **kwargs: Any) -> Any:
    """call(*args, **kwargs) in a child process: what it returns is returned here, what it
    raises is raised here. `left`: what a change killed before it answered leaves behind, for
    the error that says so."""
    read_end, write_end = os.pipe()
    worker = os.getpid()
    pid = _fork()
    if pid == 0:  # the child: whatever happens, it never returns into the worker's code
        code = 1
        try:
            os.close(read_end)
            code = _child(write_end, worker, call, args, kwargs)
        finally:
            os._exit(code)
    os.close(write_end)
    with open(read_end, "rb") as pipe:
        answer = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not answer:
        raise _lost(status, left)
    kind, value, remote = pickle.loads(answer)
    if kind == "returned":
        return value
    if remote:  # where in the child it was raised, for the journal
        raise value from RemoteTraceback(remote)
    raise value


def _fork() -> int:
    """os.fork at a moment when no other thread of the worker holds a lock the child would need:
    none is inside an import (the child would find the module half made and wait forever for its
    lock; seen: the ascii codec, first imported by the sweeper while a request forked), none is
    writing a log line (CPython does not re-make stderr's buffer lock in a child)."""
    handlers = _log_handlers()
    while True:
        for handler in handlers:
            handler.acquire()
        _imp.acquire_lock()  # no import starts while it is held; a running one may finish
        try:
            if not _importing():
                pid = os.fork()
                if pid:  # (in the child, logging re-made the handlers' locks itself)
                    _release(handlers)
                return pid
        finally:
            _imp.release_lock()  # in the child too: CPython hands it over held
        _release(handlers)
        time.sleep(0.001)


def _importing() -> bool:
    """Some thread is importing a module (importlib keeps a lock per module being imported)."""
    return bool(getattr(importlib._bootstrap, "_module_locks", None))


def _log_handlers() -> List[logging.Handler]:
    loggers = [logging.getLogger()] + [lg for lg in list(logging.Logger.manager.loggerDict.values())
                                       if isinstance(lg, logging.Logger)]
    return list({id(h): h for lg in loggers for h in lg.handlers}.values())


def _release(handlers: List[logging.Handler]) -> None:
    for handler in reversed(handlers):
        handler.release()


class RemoteTraceback(Exception):
    """The traceback of an exception a change process raised (its text), as the cause."""

    def __str__(self) -> str:
        return f"\n\n(raised in a change process)\n{self.args[0]}"


def _child(fd: int, worker: int, call: Callable[..., Any], args: Tuple[Any, ...],
           kwargs: dict) -> int:
    global _inside
    _inside = True
    procs.die_with_parent(worker)
    try:
        answer: Tuple[str, Any, str] = ("returned", call(*args, **kwargs), "")
    except ServiceError as exc:  # an answer for the caller, nothing to trace
        answer = ("raised", exc, "")
    except Exception as exc:  # a bug: the worker logs it with this traceback
        answer = ("raised", exc, traceback.format_exc())
    # (SystemExit, from a signal handler inherited from gunicorn: no answer; the caller hears
    # that the change process exited before answering)
    data = _dumps(answer)
    with open(fd, "wb") as pipe:
        pipe.write(data)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    return 0


def _dumps(answer: Tuple[str, Any, str]) -> bytes:
    buf = io.BytesIO()
    try:
        _Pickler(buf).dump(answer)
    except Exception as exc:  # a bug: an answer that cannot cross; say which
        buf = io.BytesIO()
        _Pickler(buf).dump(("raised", TypeError(f"a change process cannot send back its "
                                                f"{type(answer[1]).__name__}: {exc}"), answer[2]))
    return buf.getvalue()


class _Pickler(pickle.Pickler):
    """Carries a Secret across the pipe (the only place it is ever serialized: a pipe between
    two processes of the daemon, never a file)."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is Secret:
            return Secret, (obj.reveal(),)
        return NotImplemented


def _lost(status: int, left: str) -> ServiceError:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        how = f"was killed by signal {signal.Signals(number).name if number in _NAMED else number}"
    else:
        how = f"exited {os.WEXITSTATUS(status)}"
    return ServiceError("change_lost", f"the process running this change {how} before it "
                        f"answered (out of memory?); {left + '; ' if left else ''}run the command "
                        "again (journalctl -u pvemond may say more)", 500)
