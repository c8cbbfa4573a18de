"""One pveum invocation: the command model, the context handlers run in, usage text.

Handlers live in commands.py; parsing, dispatch and printing in pveum.py.
"""
from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple, Union

from . import names, output, perms, usage
from .cliopts import Param, parse_args, validate
from .privileges import Privileges, for_major
from .state import NodeState, version_tuple
from .usercfg import UserConfig, parse_user_config, read_token_cfg, save_user_config, write_token_cfg

EXIT_ERROR = 255


class CliError(Exception):
    """A die() reaching the top level: printed verbatim on stderr, exit 255."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text if text.endswith("\n") else text + "\n"

    def __str__(self) -> str:
        return self.text


DIES = (CliError, perms.AccessError, names.Invalid)


# -- command model ------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    words: Tuple[str, ...]
    run: Callable[["Ctx", Dict[str, str]], Any]
    args: Tuple[str, ...] = ()
    params: Tuple[Param, ...] = ()
    result: str = "null"  # null | array | object | perm
    write: bool = False
    format_options: bool = False
    optional_args: bool = False
    columns: Tuple[str, ...] = ()
    fixed: Dict[str, str] = field(default_factory=dict)

    def all_params(self) -> Tuple[Param, ...]:
        return self.params + (FORMAT_PARAMS if self.format_options else ())

    def usage(self) -> str:
        parts = ["pveum", *self.words]
        parts += [f"[<{a}>]" if self.optional_args else f"<{a}>" for a in self.args]
        options = [p for p in self.params if p.name not in self.args]
        if not self.args and (options or self.format_options):
            parts.append("")  # upstream joins an empty argument list too: "pveum acl list  [...]"
        parts += [f"--{p.name} <{p.type}>" for p in options if not p.optional]
        if any(p.optional for p in options):
            parts.append("[OPTIONS]")
        if self.format_options:
            parts.append("[FORMAT_OPTIONS]")
        return " ".join(parts)

    def parse(self, argv: Sequence[str]) -> Dict[str, str]:
        values = parse_args(argv, self.all_params(), self.args, self.optional_args)
        values.update(self.fixed)
        validate(values, self.all_params())
        return values


Tree = Dict[str, Union["Tree", Command, str]]  # a str value is an alias


# -- runtime context ----------------------------------------------------------------
class Ctx:
    """One pveum invocation: node state, knobs, privilege universe and output streams."""

    def __init__(self, state: NodeState, settings: Dict[str, Any], out: TextIO, err: TextIO) -> None:
        self.state = state
        self.settings = settings
        self.privs: Privileges = for_major(version_tuple(str(settings["pve_version"]))[0])
        self.access_control = version_tuple(str(settings["access_control"]))
        self.out, self.err = out, err
        self._parsed_raw: Optional[str] = None

    def read_cfg(self) -> UserConfig:
        """Parse user.cfg; warnings are printed once per distinct content (like cfs's cache)."""
        try:
            raw = self.state.user_cfg.read_text(encoding="utf-8")
        except FileNotFoundError:
            raw = ""
        seen, self._parsed_raw = self._parsed_raw == raw, raw
        return parse_user_config(raw, self.privs, (lambda _t: None) if seen else self.err.write)

    def save_cfg(self, cfg: UserConfig) -> None:
        save_user_config(self.state.user_cfg, cfg)

    def set_secret(self, full_tokenid: str, value: Optional[str]) -> None:
        tokens = read_token_cfg(self.state.token_cfg)
        if value is None:
            tokens.pop(full_tokenid, None)
        else:
            tokens[full_tokenid] = value
        write_token_cfg(self.state.token_cfg, tokens)

    def realms(self) -> Dict[str, str]:
        """domains.cfg: realm -> type."""
        try:
            text = self.state.domains_cfg.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        return {m.group(2): m.group(1) for m in re.finditer(r"^(\S+):\s*(\S+)\s*$", text, re.M)}

    def locked(self, errmsg: str, change: Callable[[UserConfig], Any]) -> Any:
        """lock_user_config: cluster lock (or no-quorum failure), fresh read, '<errmsg>: ' on errors."""
        knobs = self.state.settings()
        if not knobs.get("quorate", True):
            self._wait_for_quorum(float(knobs.get("no_quorum_delay", 10.0)))
            raise CliError(f"{errmsg}: cfs-lock 'file-user_cfg' error: no quorum!\n")
        with self.state.locked():
            cfg = self.read_cfg()
            try:
                return change(cfg)
            except DIES as err:
                raise CliError(f"{errmsg}: {err}") from None

    def _wait_for_quorum(self, timeout: float) -> None:
        """pmxcfs is read-only without quorum: retry mkdir of the lock dir until the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self.err.write("trying to acquire cfs lock 'file-user_cfg' ...\n")
            self.err.flush()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(1.0, remaining))
            if time.monotonic() >= deadline:
                return


def unsorted(items: List[dict], key: str) -> List[dict]:
    """Perl hash order: random per call, and never accidentally sorted (so order bugs show)."""
    items = list(items)
    if len({i[key] for i in items}) < 2:
        return items
    ordered = sorted(i[key] for i in items)
    while True:
        random.shuffle(items)
        if [i[key] for i in items] != ordered:
            return items


FORMAT_PARAMS = (
    Param("output-format", enum=output.FORMATS),
    Param("noheader", type="boolean"),
    Param("noborder", type="boolean"),
    Param("quiet", type="boolean"),
    Param("human-readable", type="boolean"),
)


def _commands(tree: Tree) -> List[Command]:
    found: List[Command] = []
    for value in tree.values():
        if isinstance(value, Command):
            found.append(value)
        elif isinstance(value, dict):
            found.extend(_commands(value))
    return found


def usage_list(tree: Tree, words: Sequence[str] = ()) -> str:
    """print_usage_short: every command, or those under `words` (an incomplete command)."""
    listing = usage.build([(c.words, c.usage()) for c in _commands(tree)])
    return usage.usage_text(listing, words)
