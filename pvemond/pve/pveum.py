"""The one place that runs `pveum`, through `sh` (1.14 on PVE 8, 2.x on PVE 9 and PyPI).

Results come back typed; failures come back as typed errors built from pveum's stderr only. The
token secret arrives on pveum's stdout, is wrapped in a Secret at once, and stdout is never put
into an exception, a log line or a command line.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import sh

from pvemond import procs
from pvemond.secret import Secret

# sh logs every chunk a child writes at DEBUG: pveum's stdout carries the secret.
logging.getLogger("sh").setLevel(logging.WARNING)

_SH2 = int(sh.__version__.split(".")[0]) >= 2
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


# First match wins: no-quorum and root problems hide behind every other message.
_CLASSIFY: List[Tuple[str, type]] = [
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


class Pveum:
    def __init__(self, command: str = "/usr/sbin/pveum", timeout: float = 60.0):
        self.command = command
        self.timeout = timeout

    # -- running ---------------------------------------------------------------------------
    def run(self, *args: str) -> str:
        """Run `pveum ARGS`; return stdout (text) or raise a typed PveumError."""
        words = "pveum " + " ".join(args)
        try:
            program = sh.Command(self.command)
        except sh.CommandNotFound:
            raise NotAProxmoxNode(words, "", None,
                                  f"{self.command} not found: this is not a Proxmox VE node "
                                  "(pvemond manages the access control of a PVE node)") from None
        extra = {"_return_cmd": True} if _SH2 else {}  # on sh 1.14 it would become an argument
        try:
            # A killed daemon takes its pveum along: the ledger then knows nothing changes
            # behind it (an orphaned `token add` could create a secret after the sweep).
            proc = program(*args, _tty_out=False, _ok_code=list(range(256)),
                           _timeout=self.timeout, _preexec_fn=procs.die_with_parent, **extra)
        except sh.TimeoutException:
            raise PveumTimeout(words, "", None,
                               f"'{words}' did not finish within {self.timeout:g} s") from None
        except sh.ErrorReturnCode as exc:  # killed by a signal
            raise classify(words, exc.stderr.decode("utf-8", "replace"), exc.exit_code) from None
        except OSError as exc:
            raise NotAProxmoxNode(words, "", None, f"cannot run {self.command}: {exc.strerror}") from None
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

    # -- commands pvemond uses -----------------------------------------------------------------
    def role_add(self, roleid: str, privs: Sequence[str]) -> None:
        self.run("role", "add", roleid, "--privs", ",".join(sorted(privs)))

    def role_set_privs(self, roleid: str, privs: Sequence[str]) -> None:
        """Replace the role's privileges (no --append): extra ones go, missing ones come."""
        self.run("role", "modify", roleid, "--privs", ",".join(sorted(privs)))

    def role_delete(self, roleid: str) -> None:
        self.run("role", "delete", roleid)

    def user_add(self, userid: str, comment: str, expire: int = 0) -> None:
        self.run("user", "add", userid, "--comment", comment, "--enable", "1",
                 "--expire", str(expire))

    def user_enable(self, userid: str) -> None:
        self.run("user", "modify", userid, "--enable", "1", "--expire", "0")

    def user_delete(self, userid: str) -> None:
        self.run("user", "delete", userid)

    def acl_modify(self, path: str, role: str, *, users: Sequence[str] = (),
                   tokens: Sequence[str] = (), propagate: bool = True) -> None:
        args = ["acl", "modify", path, "--roles", role, "--propagate", "1" if propagate else "0"]
        if users:
            args += ["--users", ",".join(users)]
        if tokens:
            args += ["--tokens", ",".join(tokens)]
        self.run(*args)

    def acl_delete(self, path: str, role: str, *, users: Sequence[str] = (),
                   tokens: Sequence[str] = ()) -> None:
        args = ["acl", "delete", path, "--roles", role]
        if users:
            args += ["--users", ",".join(users)]
        if tokens:
            args += ["--tokens", ",".join(tokens)]
        self.run(*args)

    def token_add(self, userid: str, tokenid: str, *, privsep: bool, expire: int = 0,
                  comment: str = "") -> MintedToken:
        args = ["user", "token", "add", userid, tokenid, "--privsep", "1" if privsep else "0",
                "--expire", str(expire)]
        if comment:
            args += ["--comment", comment]
        return self._minted(self.run_json(*args), userid, tokenid, privsep)

    def token_regenerate(self, userid: str, tokenid: str, *, privsep: bool,
                         expire: int = 0) -> MintedToken:
        """New secret in place (libpve-access-control >= 9.1.0); older ones raise UnknownOption."""
        data = self.run_json("user", "token", "modify", userid, tokenid, "--regenerate", "1",
                             "--privsep", "1" if privsep else "0", "--expire", str(expire))
        return self._minted(data, userid, tokenid, privsep)

    def token_modify(self, userid: str, tokenid: str, *, privsep: bool, expire: int) -> None:
        self.run_json("user", "token", "modify", userid, tokenid,
                      "--privsep", "1" if privsep else "0", "--expire", str(expire))

    def token_remove(self, userid: str, tokenid: str) -> None:
        # `remove` works on every PVE >= 6.2; `delete` only from access-control 8.2.0 on.
        self.run("user", "token", "remove", userid, tokenid)

    def token_permissions(self, userid: str, tokenid: str, path: str) -> Dict[str, int]:
        data = self.run_json("user", "token", "permissions", userid, tokenid, "--path", path)
        return {k: int(v) for k, v in ((data or {}).get(path) or {}).items()}

    @staticmethod
    def _minted(data: Any, userid: str, tokenid: str, privsep: bool) -> MintedToken:
        if not isinstance(data, dict) or not isinstance(data.get("value"), str):
            raise PveumError(f"pveum user token ... {userid} {tokenid}", "", 0,
                             "pveum did not return a token value")
        info = data.get("info", data)
        full_id = data.get("full-tokenid") or f"{userid}!{tokenid}"
        return MintedToken(full_id, Secret(data["value"]), _bool(info.get("privsep", privsep)))
