"""The hand-out ledger: the one owner of state.json, its lock, and every transition of a hand-out.

A hand-out is one secret on its way to one consumer:

    intended --pveum mints--> offered --recorded--> delivered (the record closes; the token's
        |                        |                            metadata keeps who holds it)
        +----> revoked <---------+   (the mint failed, its bootstrap died, the deadline passed)

"intended" is written and fsynced before pveum creates or replaces a secret, so a daemon killed
at any instruction leaves a record of the token that may hold a secret nobody has; `sweep` (at
start and every second) revokes exactly those, re-checking each under the lock. A delivery is
recorded before the secret leaves the node, and a delivered token is never touched again.

No secret is ever written here: a record says who asked, for which token, until when.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import secrets
import tempfile
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from pvemond.errors import ServiceError
from pvemond.procs import Proc

audit = logging.getLogger("pvemond.audit")
log = logging.getLogger("pvemond")

INTENDED, OFFERED = "intended", "offered"
RETRY_AFTER = 30  # seconds before a sweep retries a revoke that failed
STATE_ROOM = 8192  # free bytes, beyond state.json's size, that its next version needs at least
# What pvemond records about a token it minted; every key null for one it did not mint.
TOKEN_META = ("created", "minted", "how", "privsep", "delivered_to", "delivered_at")


@dataclass(frozen=True)
class Handout:
    id: str
    token_id: str
    user: str
    token: str
    caller: str
    minted_at: float
    deadline: float
    stage: str = OFFERED       # records of older pvemond versions were all offered
    privsep: bool = False
    rotating: bool = False     # the token existed: its old secret dies with the mint
    owner: Optional[Proc] = None   # the process that asked (pvemond-bootstrap); None over TCP
    worker: Optional[Proc] = None  # the daemon process running the mint

    def json(self) -> Dict[str, Any]:
        out = asdict(self)
        out["owner_pid"] = self.owner.pid if self.owner else None
        return out

    @classmethod
    def from_json(cls, doc: Any) -> "Handout":
        """Raises ValueError for anything not of the record's shape."""
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        fields = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
        for key in ("owner", "worker"):
            fields[key] = _proc(fields.get(key))
        h = cls(**fields)  # TypeError for a missing field
        for key, kind in _TYPES.items():
            value = getattr(h, key)
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                raise ValueError(f"{key} has the wrong type")
        if h.stage not in (INTENDED, OFFERED):
            raise ValueError(f"unknown stage {h.stage!r}")
        return h


_TYPES = {"id": str, "token_id": str, "user": str, "token": str, "caller": str,
          "minted_at": (int, float), "deadline": (int, float), "stage": str, "privsep": bool,
          "rotating": bool}


def _proc(doc: Any) -> Optional[Proc]:
    if doc is None:
        return None
    if not isinstance(doc, dict) or not all(type(doc.get(k)) is int for k in ("pid", "start")):
        raise ValueError("a process is {pid, start}")
    return Proc(doc["pid"], doc["start"])


@dataclass(frozen=True)
class Snapshot:
    tokens: Dict[str, Dict[str, Any]]
    handouts: Tuple[Handout, ...]  # oldest first

    def for_token(self, token_id: str) -> Optional[Handout]:
        return next((h for h in self.handouts if h.token_id == token_id), None)


class Ledger:
    def __init__(self, state_dir: str, clock: Callable[[], float] = time.time):
        self.dir = Path(state_dir)
        self.path = self.dir / "state.json"
        self.clock = clock
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._quiet: Optional[Tuple[int, int, int]] = None  # state.json's stat when nothing was open
        self._inflight: Set[str] = set()  # intents whose mint runs in this process right now
        self._retry_at: Dict[str, float] = {}  # failed sweeps back off
        _LEDGERS.add(self)

    def _after_fork(self) -> None:
        """In a forked child: the thread that may hold the lock did not come along."""
        self._thread_lock = threading.RLock()
        self._depth = 0

    # -- the one lock ------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """One change at a time: a thread lock in this process, a file lock across processes
        (the worker, its change processes, a restarted daemon). Re-entrant within a thread.
        The file lock is a POSIX record lock, which a forked child does not inherit (a flock
        would stay held by the child's copy of the descriptor, even once the worker let go)."""
        with self._thread_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(self.dir / "lock", "a") as f:
                fcntl.lockf(f, fcntl.LOCK_EX)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0

    # -- reading (no lock: every write is an atomic rename) -------------------------------------
    def snapshot(self) -> Snapshot:
        tokens, handouts, _ = self._load()
        return Snapshot(tokens, tuple(sorted(handouts.values(), key=lambda h: h.minted_at)))

    # -- transitions -------------------------------------------------------------------------
    def intend(self, *, token_id: str, user: str, token: str, caller: str, owner: Optional[int],
               ttl: float, privsep: bool, rotating: bool) -> Handout:
        """Record, durably, that `token_id` is about to get a new secret; refuse if it is being
        handed out already. Nothing may mint before this returns."""
        with self.lock():
            self.check_free(token_id)
            now = self.clock()
            h = Handout(secrets.token_hex(8), token_id, user, token, caller, now, now + ttl,
                        INTENDED, privsep, rotating, _owner(owner), Proc.of(os.getpid()))
            self._change(lambda t, hs: hs.__setitem__(h.id, h), "record the hand-out")
            self._inflight.add(h.id)
        audit.info("handout intended token=%s id=%s caller=%s", token_id, h.id, caller)
        return h

    def check_free(self, token_id: Optional[str] = None, doing: str = "minting it again") -> None:
        """Refuse a token (None: any token) that is being handed out: `doing` would kill the
        secret on its way to a consumer."""
        handouts = self.snapshot().handouts
        busy = next((h for h in handouts if token_id in (None, h.token_id)), None)
        if busy:
            raise _busy(busy, doing)

    def check_writable(self) -> None:
        """Fail now, before pveum changes anything, if the state cannot be written (a full or
        read-only disk): a record that cannot be kept would leave a token nobody tracks. Asked
        of the filesystem, not proven by a write: the intent's own write is that proof, and a
        refusal there still comes before any secret."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        fs = os.statvfs(self.dir)
        free = (fs.f_bfree if os.geteuid() == 0 else fs.f_bavail) * fs.f_frsize
        if not os.access(self.dir, os.W_OK):
            problem = errno.EROFS if fs.f_flag & os.ST_RDONLY else errno.EACCES
        elif free < size + STATE_ROOM or fs.f_favail == 0:
            problem = errno.ENOSPC
        else:
            return
        raise _unwritable("write the state", self.path, os.strerror(problem))

    def offer(self, h: Handout, how: str) -> Handout:
        """The secret exists and was verified; the asking process now holds it."""
        offered = replace(h, stage=OFFERED)
        now = self.clock()

        def change(tokens: Dict, handouts: Dict) -> None:
            handouts[h.id] = offered
            meta = tokens.setdefault(h.token_id, {"created": now})
            meta.update(minted=now, how=how, privsep=int(h.privsep), delivered_to=None,
                        delivered_at=None)
        with self.lock():
            # Whole but not durable: a crash of the node may bring back the intent, and that
            # crash also took the bootstrap holding the secret; the sweep then revokes it.
            self._change(change, "record the minted token", durable=False)
            self._inflight.discard(h.id)
        audit.info("handout open token=%s id=%s caller=%s deadline=%s", h.token_id, h.id,
                   h.caller, clock_text(h.deadline))
        return offered

    def deliver(self, handout_id: str, to: str, caller: str) -> Handout:
        """Record that the secret is leaving for `to`; from now on nothing revokes the token."""
        with self.lock():
            h = self._open(handout_id)
            if h.owner and not h.owner.alive():  # a request that outlived its bootstrap
                raise ServiceError("owner_gone", f"the pvemond-bootstrap that holds hand-out "
                                   f"{h.id} (pid {h.owner.pid}) is gone, so nobody can deliver "
                                   "its secret; the token is revoked", 410)
            now = self.clock()

            def change(tokens: Dict, handouts: Dict) -> None:
                del handouts[h.id]
                tokens.setdefault(h.token_id, {"created": now}).update(delivered_to=to,
                                                                      delivered_at=now)
            self._change(change, "record the delivery")
        audit.info("deliver token=%s to=%s caller=%s", h.token_id, to, caller)
        return h

    def cancel(self, handout_id: str, revoke: Callable[[Handout], bool], reason: str) -> bool:
        """The asking process gives up: revoke the token (True if it was there)."""
        with self.lock():
            return self._revoke(self._open(handout_id), revoke, reason)

    def abandon(self, h: Handout, revoke: Callable[[Handout], bool], reason: str) -> bool:
        """The mint itself failed after its intent was recorded."""
        with self.lock():
            try:
                return self._revoke(h, revoke, reason)
            finally:
                self._inflight.discard(h.id)

    def forget(self, token_id: str) -> None:
        with self.lock():
            self._change(lambda t, hs: t.pop(token_id, None), "forget the token")

    def forget_all(self) -> None:
        with self.lock():
            self._change(lambda t, hs: (t.clear(), hs.clear()), "forget the tokens")

    def sweep(self, revoke: Callable[[Handout], bool]) -> List[str]:
        """Revoke every token whose hand-out can no longer be delivered; each re-checked here,
        under the lock, so a delivery that just landed is never undone."""
        if self._quiet == _stat_key(self.path):
            return []  # nothing was open at the last look and nobody has written since
        done = []
        with self.lock():
            self._load(repair=True)
            for h, reason in self._orphans():
                if self._retry_at.get(h.id, 0.0) > time.monotonic():
                    continue
                try:
                    self._revoke(h, revoke, reason)
                    done.append(h.token_id)
                except Exception as exc:  # pveum busy, disk full: retry, without a log flood
                    self._retry_at[h.id] = time.monotonic() + RETRY_AFTER
                    audit.error("revoke token=%s failed: %s (retrying in %d s)", h.token_id, exc,
                                RETRY_AFTER)
            self._quiet = None if self.snapshot().handouts else _stat_key(self.path)
        return done

    # -- internals ---------------------------------------------------------------------------
    def _open(self, handout_id: str) -> Handout:
        h = next((h for h in self.snapshot().handouts if h.id == handout_id), None)
        if h is None or h.stage != OFFERED:
            raise ServiceError("no_such_handout", f"no open hand-out {handout_id} (finished, or "
                               "revoked when its bootstrap ended or it timed out)", 404)
        return h

    def _orphans(self) -> List[Tuple[Handout, str]]:
        now, me = self.clock(), Proc.of(os.getpid())
        out = []
        for h in self.snapshot().handouts:
            if h.stage == INTENDED:
                mine = h.worker == me
                if (mine and h.id not in self._inflight) or (not mine and not _alive(h.worker)):
                    out.append((h, "its mint was interrupted before it finished"))
            elif h.owner and not h.owner.alive():
                out.append((h, f"its pvemond-bootstrap (pid {h.owner.pid}) is gone"))
            elif h.deadline < now:
                out.append((h, "not delivered before its deadline"))
        return out

    def _revoke(self, h: Handout, revoke: Callable[[Handout], bool], reason: str) -> bool:
        removed = revoke(h)

        def change(tokens: Dict, handouts: Dict) -> None:
            handouts.pop(h.id, None)
            tokens.pop(h.token_id, None)
        self._change(change, "close the hand-out")
        audit.info("revoke token=%s reason=%s", h.token_id, reason)
        return removed

    def _change(self, edit: Callable[[Dict, Dict], Any], what: str, durable: bool = True) -> None:
        """Read, edit, write atomically (and durably: the rename too survives a crash); a disk
        that cannot take it is a clear error."""
        tokens, handouts, _ = self._load(repair=True)
        edit(tokens, handouts)
        try:
            self._write(tokens, handouts, durable)
        except OSError as exc:
            raise _unwritable(what, self.path, exc.strerror) from None

    def _write(self, tokens: Dict[str, Dict], handouts: Dict[str, Handout],
               durable: bool = True) -> None:
        doc = {"version": 2, "tokens": tokens,
               "handouts": {k: h.json() for k, h in handouts.items()}}
        text = json.dumps(doc, indent=1, sort_keys=True)
        (_write_durably if durable else _write_atomically)(self.path, text)

    def _load(self, repair: bool = False) -> Tuple[Dict[str, Dict], Dict[str, Handout], List[str]]:
        """The state as far as it has the right shape; with `repair` (under the lock) a file that
        does not is moved aside, once, with one log line."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}, {}, []
        tokens, handouts, problems = _parse(raw)
        if problems and repair:
            aside = self.path.with_name(f"state.json.corrupt-{int(self.clock())}")
            try:  # a hard link needs no space; the rewrite replaces the file atomically
                os.link(self.path, aside)
                self._write(tokens, handouts)
            except OSError as exc:
                log.error("state.json does not match its schema and cannot be set aside: %s",
                          exc.strerror)
                return tokens, handouts, problems
            log.error("state.json does not match its schema (%s); moved it to %s, kept %d "
                      "token(s) and %d hand-out(s) that did", "; ".join(problems[:3]), aside,
                      len(tokens), len(handouts))
        return tokens, handouts, problems


def _stat_key(path: Path) -> Tuple[int, int, int]:
    """What tells an idle sweeper that state.json changed: every write is a rename (new inode)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0, 0, 0
    return st.st_ino, st.st_mtime_ns, st.st_size


_LEDGERS: "weakref.WeakSet[Ledger]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for ledger in _LEDGERS:
        ledger._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _unwritable(what: str, path: Path, why: str) -> ServiceError:
    return ServiceError("state_unwritable", f"cannot {what} in {path}: {why}; nothing was handed "
                        f"out. Free space or fix {path.parent} (df -h {path.parent}), then retry", 507)


def _busy(h: Handout, doing: str) -> ServiceError:
    return ServiceError(
        "handout_in_progress",
        f"token {h.token_id} is being handed out right now (started {clock_text(h.minted_at)} by "
        f"{h.caller}, open until {clock_text(h.deadline)}); {doing} would kill that "
        "secret. Wait for it to finish, cancel that pvemond-bootstrap (Ctrl-C), or use another "
        "token name (--token NAME)", 409)


def _owner(pid: Optional[int]) -> Optional[Proc]:
    """The asking process; one already gone gets a start time no process has, so the first
    sweep ends its hand-out."""
    return None if pid is None else (Proc.of(pid) or Proc(pid, -1))


def _alive(p: Optional[Proc]) -> bool:
    return p is not None and p.alive()


def _parse(raw: str) -> Tuple[Dict[str, Dict], Dict[str, Handout], List[str]]:
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}, {}, ["not JSON (a torn write or a hand edit)"]
    if not isinstance(doc, dict):
        return {}, {}, [f"the top level is {type(doc).__name__}, not an object"]
    problems: List[str] = []
    tokens = {}
    for key, value in _mapping(doc, "tokens", problems).items():
        if _meta(value) is None:
            problems.append(f"token {key!r} is malformed")
        else:
            tokens[key] = dict(value)
    handouts = {}
    for key, value in _mapping(doc, "handouts", problems).items():
        try:
            handouts[key] = Handout.from_json(value)
        except (TypeError, ValueError) as exc:
            problems.append(f"hand-out {key!r}: {exc}")
    return tokens, handouts, problems


def _mapping(doc: Dict, key: str, problems: List[str]) -> Dict:
    value = doc.get(key, {})
    if isinstance(value, dict):
        return value
    problems.append(f"{key} is {type(value).__name__}, not an object")
    return {}


def _meta(value: Any) -> Optional[Dict[str, Any]]:
    if not isinstance(value, dict) or set(value) - set(TOKEN_META):
        return None
    numbers = all(value.get(k) is None or type(value[k]) in (int, float)
                  for k in ("created", "minted", "delivered_at", "privsep"))
    strings = all(value.get(k) is None or isinstance(value[k], str) for k in ("how", "delivered_to"))
    return value if numbers and strings else None


def _write_durably(path: Path, text: str) -> None:
    _replace(path, text, durable=True)


def _write_atomically(path: Path, text: str) -> None:
    """After a crash the old file or the new one, whole (its data is fsynced before the rename,
    or some filesystems would leave it empty); which of the two is not settled."""
    _replace(path, text, durable=False)


def _replace(path: Path, text: str, durable: bool) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            dirfd = os.open(path.parent, os.O_RDONLY)  # the rename itself must survive a crash
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
    except BaseException:
        with _quiet():
            os.unlink(tmp)
        raise


@contextmanager
def _quiet() -> Iterator[None]:
    try:
        yield
    except OSError:
        pass


def clock_text(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))
