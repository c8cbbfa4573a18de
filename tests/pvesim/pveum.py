"""The fake `pveum`: `main(argv) -> int`, behaving like pve-access-control's CLI.

Spec: pveum.md §1 (syntax, options, output), §2 (messages, exit codes, name grammars),
§4 (files), §8 (root, quorum), §10 (checklist). State comes from $PVESIM_ROOT (default /).
Errors go to stderr verbatim and exit 255; mutating commands print nothing on success.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import output
from .cliopts import OptionError, ParamError, UsageError
from .commands import command_tree
from .runtime import DIES, EXIT_ERROR, Command, Ctx, Tree, usage_list
from .state import NodeState


class Abort(Exception):
    """CLIHandler's $abort: 'ERROR: <msg>' plus the short usage (of the command group
    `words` for an incomplete command), exit 255."""

    def __init__(self, msg: str, words: Sequence[str] = ()) -> None:
        super().__init__(msg)
        self.words = tuple(words)


def _expand(node: Tree, word: str) -> Optional[str]:
    """CLIHandler's expand_command: exact name or a unique prefix."""
    if word in node:
        return word
    hits = [k for k in node if k.startswith(word)]
    return hits[0] if len(hits) == 1 else None


def resolve(argv: List[str], tree: Tree) -> Tuple[Command, List[str]]:
    """CLIHandler::resolve_cmd; aliases are spliced in and resolution restarts."""
    argv = list(argv)
    if not argv:
        raise Abort("no command specified")
    for _ in range(8):  # aliases restart resolution; bounded like the upstream loop guard
        node: Tree = tree
        cmdstr = "pveum"
        for i, arg in enumerate(argv):
            key = _expand(node, arg) or arg
            cmdstr += f" {key}"
            sub = node.get(key)
            if sub is None:
                raise Abort(f"unknown command '{cmdstr}'")
            if isinstance(sub, Command):
                return sub, argv[i + 1:]
            if isinstance(sub, str):
                argv[i:i + 1] = sub.split()
                break
            node = sub
        else:
            raise Abort(f"incomplete command '{cmdstr}'", cmdstr.split()[1:])
    raise Abort("alias loop detected")


# -- entry point --------------------------------------------------------------------
def _param_error_text(err: ParamError, cmd: Command) -> str:
    text = f"400 {err.msg}\n" + "".join(f"{k}: {err.errors[k]}\n" for k in sorted(err.errors))
    return text + cmd.usage() + "\n"


def execute(ctx: Ctx, cmd: Command, argv: List[str]) -> int:
    """Parse, validate, run and print one resolved command."""
    try:
        ctx.read_cfg()  # init_request reads user.cfg first: parse warnings appear for any command
        params = cmd.parse(argv)
        result = cmd.run(ctx, params)
    except OptionError as err:
        ctx.err.write("".join(err.warnings) + "400 unable to parse option\n" + cmd.usage() + "\n")
        return EXIT_ERROR
    except UsageError as err:
        ctx.err.write(f"400 {err}\n{cmd.usage()}\n")
        return EXIT_ERROR
    except ParamError as err:
        ctx.err.write(_param_error_text(err, cmd))
        return EXIT_ERROR
    except DIES as err:
        ctx.err.write(str(err) if str(err).endswith("\n") else f"{err}\n")
        return EXIT_ERROR
    if cmd.result == "perm":
        output.print_permissions(ctx.out, result, params)
    else:
        output.print_result(ctx.out, result, cmd.result, params, cmd.columns)
    return 0


def run(ctx: Ctx, argv: List[str]) -> Tuple[int, bool]:
    """-> (exit code, whether the command is a write)."""
    injected = ctx.state.consume_fail_next(" ".join(argv))
    tree = command_tree(ctx)
    try:
        cmd, rest = resolve(argv, tree)
    except Abort as abort:
        if injected is not None:
            return _inject(ctx, injected), False
        ctx.err.write(f"ERROR: {abort}\n" + usage_list(tree, abort.words))
        return EXIT_ERROR, False
    if injected is not None:
        return _inject(ctx, injected), cmd.write
    if os.geteuid() != 0:
        ctx.err.write("please run as root\n")
        return EXIT_ERROR, cmd.write
    return execute(ctx, cmd, rest), cmd.write


def _inject(ctx: Ctx, failure: Dict[str, Any]) -> int:
    """A fail_next entry: its stderr text and exit code instead of running the command."""
    text = str(failure.get("stderr", ""))
    ctx.err.write(text if not text or text.endswith("\n") else text + "\n")
    return int(failure.get("rc", EXIT_ERROR))


def _pmxcfs_down() -> int:
    """pve-cluster stopped: every command dies loading user.cfg over the pmxcfs IPC socket (three
    tries), with errno ECONNREFUSED as its exit status (node.md, pmxcfs down)."""
    for n in (1, 2, 3):
        sys.stderr.write(f"ipcc_send_rec[{n}] failed: Connection refused\n")
    sys.stderr.write("Unable to load access control list: Connection refused\n")
    return 111


def _process_start(fallback: float) -> float:
    """When this process was forked (10 ms steps): `run_time` then counts the interpreter's
    start-up too, i.e. all that the caller waited for this pveum run."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return fallback
    return min(fallback, time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    state = NodeState(os.environ.get("PVESIM_ROOT", "/"))
    start = time.time()
    settings = state.settings()
    if float(settings.get("delay") or 0) > 0:
        time.sleep(float(settings["delay"]))  # models Perl start-up
    if settings.get("pmxcfs", True):
        ctx = Ctx(state, settings, sys.stdout, sys.stderr)
        rc, write = run(ctx, args)
    else:
        rc, write = _pmxcfs_down(), False
    sys.stdout.flush()
    sys.stderr.flush()
    end = time.time()
    record = {"argv": args, "rc": rc, "start": start, "duration": end - start, "write": write,
              "run_time": end - _process_start(start)}
    try:
        state.append_call(record)
    except OSError as err:
        sys.stderr.write(f"pvesim: cannot log call: {err}\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
