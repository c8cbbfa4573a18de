"""Change processes (pvemond/changes.py): what a call returns or raises crosses back; a child that
dies answers with a clear error; a child dies with the thread that forked it; the ledger's lock
works from a child while a thread of the parent holds it."""
from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
import threading
import time

import pytest

from pvemond import changes
from pvemond.errors import ServiceError
from pvemond.handouts import Ledger
from pvemond.secret import Secret


def test_the_value_comes_back_and_the_call_ran_elsewhere():
    assert changes.run(lambda a, b=0: (a + b, os.getpid(), changes.inside()), 40, b=2)[::2] == \
        (42, True)
    assert changes.run(os.getpid) != os.getpid()
    assert not changes.inside()


def test_a_secret_crosses_the_pipe_but_is_still_never_pickled():
    got = changes.run(lambda: {"secret": Secret("s3cr3t-value")})
    assert got["secret"].reveal() == "s3cr3t-value"
    with pytest.raises(TypeError, match="never serialized"):
        pickle.dumps(Secret("s3cr3t-value"))


def test_a_service_error_comes_back_whole():
    def refuse():
        raise ServiceError("busy", "token x is being handed out", 409, holder="uid 0")
    with pytest.raises(ServiceError) as err:
        changes.run(refuse)
    e = err.value
    assert (e.code, e.detail, e.status, e.extra) == ("busy", "token x is being handed out", 409,
                                                    {"holder": "uid 0"})
    assert e.__cause__ is None  # an answer, not a bug: nothing to trace


def test_a_bug_comes_back_with_where_the_child_raised_it():
    def buggy_change():
        return {}["missing"]
    with pytest.raises(KeyError) as err:
        changes.run(buggy_change)
    assert isinstance(err.value.__cause__, changes.RemoteTraceback)
    assert "buggy_change" in str(err.value.__cause__)


def test_an_answer_that_cannot_cross_is_named():
    with pytest.raises(TypeError, match="cannot send back its .*lock"):
        changes.run(threading.Lock)


@pytest.mark.parametrize("end, said", [(lambda: os.kill(os.getpid(), signal.SIGKILL),
                                         "was killed by signal SIGKILL"),
                                        (lambda: os._exit(3), "exited 3")])
def test_a_child_that_ends_without_answering_is_a_clear_error(end, said):
    with pytest.raises(ServiceError) as err:
        changes.run(end, left="what it did stays")
    assert err.value.code == "change_lost" and err.value.status == 500
    assert said in err.value.detail
    assert "; what it did stays; run the command again" in err.value.detail


def test_a_child_never_returns_into_the_callers_code(tmp_path):
    """A SystemExit (gunicorn's SIGINT handler, inherited) ends the child, not the request."""
    marker = tmp_path / "returned"
    with pytest.raises(ServiceError, match="exited 1 before it answered"):
        try:
            changes.run(sys.exit, 0)
        finally:
            if changes.inside():  # the child came back into this code: say so, and leave
                marker.write_text("the child returned")
                os._exit(0)
    time.sleep(0.2)
    assert not marker.exists()


def test_a_change_process_dies_with_the_process_that_forked_it():
    """The worker killed mid-change takes its change (and so its pveum) along."""
    read_end, write_end = os.pipe()
    worker = os.fork()
    if worker == 0:  # the "worker": a change that reports its pid, then outlives everything
        os.close(read_end)
        changes.run(lambda: os.write(write_end, f"{os.getpid()}\n".encode()) and time.sleep(60))
        os._exit(0)
    os.close(write_end)
    with open(read_end, "rb") as pipe:
        child = int(pipe.readline())
        os.kill(worker, signal.SIGKILL)
        os.waitpid(worker, 0)
        assert pipe.read() == b""  # every write end closed: the change process is gone too
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # reaped by init; /proc may lag the exit by a moment
            os.kill(child, 0)
            time.sleep(0.05)


def test_the_ledger_lock_from_a_change_process_while_a_thread_here_holds_it(tmp_path):
    """A forked child gets neither the thread lock held by another thread nor the file lock:
    it waits for the holder, then takes the lock (a flock would deadlock it on itself)."""
    ledger = Ledger(str(tmp_path))
    held, release = threading.Event(), threading.Event()

    def holder():
        with ledger.lock():
            held.set()
            release.wait(10)
    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)

    def locked_at():
        with ledger.lock():
            return time.monotonic()
    answer = []
    change = threading.Thread(target=lambda: answer.append(changes.run(locked_at)))
    change.start()
    time.sleep(0.3)
    assert not answer, "the change process took the lock while a thread here held it"
    released = time.monotonic()
    release.set()
    change.join(10)
    thread.join(10)
    assert answer and answer[0] >= released


def _finishes(call, timeout: float = 10.0):
    """call() in a thread; what it returned, or a failure if it hangs (a deadlocked child)."""
    out = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert out, f"hung for {timeout} s: a lock held at the fork by another thread"
    return out[0]


def test_no_fork_while_another_thread_imports(tmp_path, monkeypatch):
    """Forked mid-import, the child would find the module half made and wait forever for the
    lock of a thread it does not have (seen: the ascii codec, imported by the sweeper)."""
    (tmp_path / "slow_module.py").write_text(
        "import time\n"
        "open(__file__ + '.started', 'w').close()\n"
        "time.sleep(0.5)\n"
        "VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importer = threading.Thread(target=__import__, args=("slow_module",))
    importer.start()
    started = tmp_path / "slow_module.py.started"
    while not started.exists():
        time.sleep(0.01)
    assert _finishes(lambda: changes.run(lambda: __import__("slow_module").VALUE)) == 42
    importer.join()


class _SlowStream:
    """A stream with a lock of its own held while it writes, like CPython's buffered stderr
    (whose lock a forked child does not get re-made)."""

    def __init__(self):
        self.lock, self.writing = threading.Lock(), threading.Event()
        self.lines = []

    def write(self, text):
        with self.lock:
            self.writing.set()
            time.sleep(0.5)
            self.lines.append(text)

    def flush(self):
        with self.lock:
            pass


def test_no_fork_while_another_thread_writes_a_log_line():
    stream = _SlowStream()
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("pvemond.test-changes")
    log.addHandler(handler)
    try:
        writer = threading.Thread(target=log.warning, args=("from the worker",))
        writer.start()
        stream.writing.wait(5)
        assert _finishes(lambda: changes.run(lambda: log.warning("from a change") or "logged"))\
            == "logged"
        writer.join()
    finally:
        log.removeHandler(handler)
