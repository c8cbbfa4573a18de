"""The one place that runs `pveum`, through `sh` (1.14 on PVE 8, 2.x on PVE 9 and PyPI).

Results come back typed; failures come back as typed errors built from pveum's stderr only. The
token secret arrives on pveum's stdout, is wrapped in a Secret at once, and stdout is never put
into an exception, a log line or a command line.
"""
from __future__ import annotations

import json
import logging
import re
import shlex
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from pvemond import procs
from pvemond.secret import Secret

# sh logs every chunk a child writes at DEBUG: pveum's stdout carries the secret.
logging.getLogger("sh").setLevel(logging.WARNING)

# Every exit code is an answer to read (classify); a signal's end raises from wait(), never from
# sh's background thread (_bg_exc off: its message would carry stdout, which may hold a secret,
# into the log).
_ANY_END = list(range(256))
_BG_EXTRA = {"_bg_exc": False}


def _kill(proc: Any) -> None:
    try:
        proc.kill()
    except OSError:  # it ended just now
        pass
# Real pveum prints these while it waits for the cluster lock; they are noise in an error.
_LOCK_WAIT = re.compile(r"^trying to acquire cfs lock .*$", re.M)


class PveumError(Exception):
    """pveum failed. `detail` is its stderr (never its stdout), `command` the words run."""

    def __init__(self, command: str, detail: str, exit_code: Optional[int] = None,
                 message: Optional[str] = None):
        self.command = command
        self.detail = detail
        self.exit_code = exit_code
        super().__init__(message or f"'{command}' failed: {first_line(detail) or f'exit {exit_code}'}")


class NotAProxmoxNode(PveumError):
    pass


class NoQuorum(PveumError):
    pass


class NotRoot(PveumError):
    pass


class PmxcfsDown(PveumError):
    """pve-cluster (pmxcfs) is stopped: pveum cannot load user.cfg over its IPC socket (exit 111)."""


class AlreadyExists(PveumError):
    pass


class NoSuchUser(PveumError):
    pass


class NoSuchToken(PveumError):
    pass


class NoSuchRole(PveumError):
    pass


class InvalidPrivilege(PveumError):
    pass


class InvalidName(PveumError):
    pass


class UnknownOption(PveumError):
    """This pveum is older than the option: `option` names it (e.g. 'regenerate')."""

    @property
    def option(self) -> str:
        m = re.search(r"Unknown option: (\S+)", self.detail)
        return m.group(1) if m else ""


class UnknownCommand(PveumError):
    pass


class PveumTimeout(PveumError):
    pass


# First match wins: pmxcfs, no-quorum and root problems hide behind every other message.
_CLASSIFY: List[Tuple[str, type]] = [
    (r"^ipcc_send_rec\[\d+\] failed: Connection refused|^Unable to load access control list: "
     r"Connection refused", PmxcfsDown),
    (r"error: no quorum!", NoQuorum),
    (r"please run as root", NotRoot),
    (r"Unknown option: ", UnknownOption),
    (r"^ERROR: unknown command", UnknownCommand),
    (r"invalid privilege", InvalidPrivilege),
    (r"already exists", AlreadyExists),
    (r"no such token", NoSuchToken),
    (r"no such user|user '[^']*' does not exist", NoSuchUser),
    (r"role '[^']*' does not exist", NoSuchRole),
    (r"invalid format|does not match the regex|cannot use role ID", InvalidName),
]


PMXCFS_DOWN = ("pve-cluster is down (pmxcfs does not serve /etc/pve), so nothing about users, "
               "roles or ACLs can be read or changed: run 'systemctl status pve-cluster' and "
               "start it again")


def first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


def classify(command: str, stderr: str, exit_code: Optional[int]) -> PveumError:
    detail = _LOCK_WAIT.sub("", stderr).strip()
    for pattern, cls in _CLASSIFY:
        if re.search(pattern, detail, re.M):
            if cls is NoQuorum:
                return NoQuorum(command, detail, exit_code,
                                "this node has no quorum (pveum: "
                                f"{first_line(detail)}); run it on a quorate node")
            if cls is PmxcfsDown:
                return PmxcfsDown(command, detail, exit_code, PMXCFS_DOWN)
            if cls is NotRoot:
                return NotRoot(command, detail, exit_code,
                               "pveum refuses to run without root: run pvemond as root")
            return cls(command, detail, exit_code)
    return PveumError(command, detail, exit_code)


@dataclass(frozen=True)
class MintedToken:
    full_id: str
    secret: Secret
    privsep: bool


def _bool(value: Any) -> bool:
    """pveum prints privsep as 1, "1" or "0" depending on where the value came from."""
    return str(value).strip() not in ("0", "", "false", "False", "None")


@dataclass(frozen=True)
class Command:
    """One pveum run exactly as pvemond makes it: `argv` follows `pveum`. What dry-run and doctor
    print is str() of the very value the applier runs. `mints`: its stdout carries a new secret."""

    args: Tuple[str, ...]
    json: bool = False  # adds --output-format json and parses stdout
    mints: bool = False

    @property
    def argv(self) -> Tuple[str, ...]:
        return self.args + (("--output-format", "json") if self.json else ())

    def __str__(self) -> str:
        return " ".join(shlex.quote(w) for w in ("pveum", *self.argv))

    # -- the commands pvemond uses ----------------------------------------------------------
    @classmethod
    def role_add(cls, roleid: str, privs: Sequence[str]) -> "Command":
        return cls(("role", "add", roleid, "--privs", ",".join(sorted(privs))))

    @classmethod
    def role_set_privs(cls, roleid: str, privs: Sequence[str]) -> "Command":
        """Replace the role's privileges (no --append): extra ones go, missing ones come."""
        return cls(("role", "modify", roleid, "--privs", ",".join(sorted(privs))))

    @classmethod
    def role_delete(cls, roleid: str) -> "Command":
        return cls(("role", "delete", roleid))

    @classmethod
    def user_add(cls, userid: str, comment: str, expire: int = 0) -> "Command":
        return cls(("user", "add", userid, "--comment", comment, "--enable", "1",
                    "--expire", str(expire)))

    @classmethod
    def user_enable(cls, userid: str) -> "Command":
        return cls(("user", "modify", userid, "--enable", "1", "--expire", "0"))

    @classmethod
    def user_delete(cls, userid: str) -> "Command":
        return cls(("user", "delete", userid))

    @classmethod
    def acl_modify(cls, path: str, role: str, *, users: Sequence[str] = (),
                   tokens: Sequence[str] = (), propagate: bool = True) -> "Command":
        return cls(("acl", "modify", path, "--roles", role, *_who(users, tokens),
                    "--propagate", "1" if propagate else "0"))

    @classmethod
    def acl_delete(cls, path: str, role: str, *, users: Sequence[str] = (),
                   tokens: Sequence[str] = ()) -> "Command":
        return cls(("acl", "delete", path, "--roles", role, *_who(users, tokens)))

    @classmethod
    def token_add(cls, userid: str, tokenid: str, *, privsep: bool, expire: int = 0,
                  comment: str = "") -> "Command":
        return cls(("user", "token", "add", userid, tokenid, "--privsep", "1" if privsep else "0",
                    "--expire", str(expire), *(("--comment", comment) if comment else ())),
                   json=True, mints=True)

    @classmethod
    def token_regenerate(cls, userid: str, tokenid: str, *, privsep: bool,
                         expire: int = 0) -> "Command":
        """New secret in place (libpve-access-control >= 9.1.0); older ones raise UnknownOption."""
        return cls(("user", "token", "modify", userid, tokenid, "--regenerate", "1",
                    "--privsep", "1" if privsep else "0", "--expire", str(expire)),
                   json=True, mints=True)

    @classmethod
    def token_modify(cls, userid: str, tokenid: str, *, privsep: bool, expire: int) -> "Command":
        return cls(("user", "token", "modify", userid, tokenid,
                    "--privsep", "1" if privsep else "0", "--expire", str(expire)), json=True)

    @classmethod
    def token_remove(cls, userid: str, tokenid: str) -> "Command":
        # `remove` works on every PVE >= 6.2; `delete` only from access-control 8.2.0 on.
        return cls(("user", "token", "remove", userid, tokenid))

    @classmethod
    def token_permissions(cls, userid: str, tokenid: str, path: str) -> "Command":
        return cls(("user", "token", "permissions", userid, tokenid, "--path", path), json=True)


def _who(users: Sequence[str], tokens: Sequence[str]) -> Tuple[str, ...]:
    return ((("--users", ",".join(users)) if users else ())
            + (("--tokens", ",".join(tokens)) if tokens else ()))


class Pveum:
    def __init__(self, command: str = "/usr/sbin/pveum", timeout: float = 60.0):
        self.command = command
        self.timeout = timeout

    # -- running ---------------------------------------------------------------------------
    def run(self, *args: str) -> str:
        """Run `pveum ARGS`; return stdout (text) or raise a typed PveumError."""
        import sh  # here, not at the top: only a change process runs pveum (changes.py)
        words = "pveum " + " ".join(args)
        try:
            program = sh.Command(self.command)
        except sh.CommandNotFound:
            raise NotAProxmoxNode(words, "", None,
                                  f"{self.command} not found: this is not a Proxmox VE node "
                                  "(pvemond manages the access control of a PVE node)") from None
        # sh's own _timeout polls, adding ~40 ms to every run: a timer kills a late one instead.
        late = threading.Event()
        try:
            # A killed daemon takes its pveum along: the ledger then knows nothing changes
            # behind it (an orphaned `token add` could create a secret after the sweep).
            proc = program(*args, _tty_out=False, _ok_code=_ANY_END, _bg=True,
                           _preexec_fn=procs.tied_to_parent(), **_BG_EXTRA)
            timer = threading.Timer(self.timeout, lambda: late.set() or _kill(proc))
            timer.start()
            try:
                proc.wait()
            finally:
                timer.cancel()
        except sh.ErrorReturnCode as exc:  # killed by a signal (sh 1.14 raises whatever ok_code says)
            if late.is_set():
                raise PveumTimeout(words, "", None,
                                   f"'{words}' did not finish within {self.timeout:g} s") from None
            raise classify(words, exc.stderr.decode("utf-8", "replace"), exc.exit_code) from None
        except OSError as exc:
            raise NotAProxmoxNode(words, "", None, f"cannot run {self.command}: {exc.strerror}") from None
        if late.is_set():
            raise PveumTimeout(words, "", None, f"'{words}' did not finish within {self.timeout:g} s")
        if proc.exit_code != 0:
            raise classify(words, proc.stderr.decode("utf-8", "replace"), proc.exit_code)
        return proc.stdout.decode("utf-8", "replace")

    def run_json(self, *args: str) -> Any:
        out = self.run(*args, "--output-format", "json")
        try:
            return json.loads(out) if out.strip() else None
        except ValueError:
            # stdout may hold a secret: name the command, never echo the output.
            raise PveumError("pveum " + " ".join(args), "", 0,
                             f"'pveum {' '.join(args)}' printed something that is not JSON") from None

    def execute(self, cmd: Command) -> Any:
        """Run a command value: parsed JSON where it asks for it, else stdout."""
        return self.run_json(*cmd.args) if cmd.json else self.run(*cmd.args)

    def mint(self, cmd: Command, userid: str, tokenid: str, privsep: bool) -> MintedToken:
        """Run a command whose output carries a new secret; the secret is wrapped at once."""
        return self._minted(self.execute(cmd), userid, tokenid, privsep)

    # -- shorthands for callers outside a plan (revoke, verification, tests) -------------------
    def token_add(self, userid: str, tokenid: str, *, privsep: bool, expire: int = 0,
                  comment: str = "") -> MintedToken:
        return self.mint(Command.token_add(userid, tokenid, privsep=privsep, expire=expire,
                                           comment=comment), userid, tokenid, privsep)

    def token_regenerate(self, userid: str, tokenid: str, *, privsep: bool,
                         expire: int = 0) -> MintedToken:
        return self.mint(Command.token_regenerate(userid, tokenid, privsep=privsep, expire=expire),
                         userid, tokenid, privsep)

    def token_remove(self, userid: str, tokenid: str) -> None:
        self.execute(Command.token_remove(userid, tokenid))

    def token_permissions(self, userid: str, tokenid: str, path: str) -> Dict[str, int]:
        data = self.execute(Command.token_permissions(userid, tokenid, path))
        return {k: int(v) for k, v in ((data or {}).get(path) or {}).items()}

    @staticmethod
    def _minted(data: Any, userid: str, tokenid: str, privsep: bool) -> MintedToken:
        if not isinstance(data, dict) or not isinstance(data.get("value"), str):
            raise PveumError(f"pveum user token ... {userid} {tokenid}", "", 0,
                             "pveum did not return a token value")
        info = data.get("info", data)
        full_id = data.get("full-tokenid") or f"{userid}!{tokenid}"
        return MintedToken(full_id, Secret(data["value"]), _bool(info.get("privsep", privsep)))
