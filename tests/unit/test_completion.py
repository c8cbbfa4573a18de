"""The bash completion for `pvemond`: it knows the parser's commands and options, and completes
token names from `pvemond tokens --names`. Run in bash with bash-completion's two helpers
stubbed (that package is not needed here)."""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from pvemond.cli import admin

SCRIPT = Path(__file__).resolve().parents[2] / "etc" / "bash-completion" / "pvemond"
STUBS = r"""
_init_completion() { cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]};
                     words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; }
_filedir() { COMPREPLY=(FILES); }
pvemond() { [ "$*" = "tokens --names" ] && printf 'prometheus\nzabbix\n'; }
"""


def complete(line: str) -> list:
    words = line.split(" ")
    script = (STUBS + SCRIPT.read_text() + f"\nCOMP_WORDS=({' '.join(shlex.quote(w) for w in words)})"
              f"\nCOMP_CWORD={len(words) - 1}\n_pvemond\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    return sorted(filter(None, out.splitlines()))


def subcommands() -> dict:
    sub = next(a for a in admin.parser()._actions if a.dest == "command")
    return sub.choices


def test_commands_are_the_parsers():
    assert complete("pvemond ") == sorted([*subcommands(), "--json", "--config", "--socket", "--help"])
    assert complete("pvemond --json d") == ["doctor"]


@pytest.mark.parametrize("command", ["doctor", "tokens", "uninstall", "rotate"])
def test_options_are_the_parsers(command):
    parser = subcommands()[command]
    wanted = {o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help")}
    assert set(complete(f"pvemond {command} -")) - {"--help"} == wanted


def test_token_names_for_revoke_and_rotate():
    assert complete("pvemond revoke ") == ["prometheus", "zabbix"]
    assert complete("pvemond --socket /run/x rotate z") == ["zabbix"]
    assert complete("pvemond rotate zabbix --format t") == ["telegraf"]
    assert complete("pvemond --config ") == ["FILES"]


def test_formats_are_the_real_ones():
    from pvemond import formats
    listed = re.search(r'compgen -W "([^"]+)" -- "\$cur"\)\)\n\s+return\n\s+;;\n\s+--listen',
                       SCRIPT.read_text())
    assert listed and sorted(listed.group(1).split()) == sorted(formats.FORMATS)
