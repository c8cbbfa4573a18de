"""Name rules match the whole string: `$` would also accept a final newline."""
from __future__ import annotations

import pytest

from pvemond import names
from pvemond.pve import node


@pytest.mark.parametrize("check, good, bad", [
    (names.tokenid_problem, "monitoring", "nl\n"),
    (names.userid_problem, "monitoring@pve", "monitoring@pve\n"),
    (names.roleid_problem, "monitoring", "monitoring\n"),
])
def test_a_final_newline_is_not_part_of_a_name(check, good, bad):
    assert check(good) is None
    problem = check(bad)
    assert problem and "\n" not in problem  # repr'd: one line in any log


@pytest.mark.parametrize("pattern, bad", [
    (names.PRIV_SYNTAX, "VM.Audit\n"), (names.ACL_PATH, "/vms\n"), (names.TOKEN_SUBID, "ab\n")])
def test_patterns_are_applied_to_the_whole_string(pattern, bad):
    assert pattern.fullmatch(bad) is None


def test_token_names_have_a_ceiling():
    assert names.tokenid_problem("a" * names.TOKEN_MAX) is None
    assert "longer than 64" in names.tokenid_problem("a" * (names.TOKEN_MAX + 1))


def test_unknown_privileges_name_the_nearest_known_ones():
    known = node.ALL_PRIVILEGES
    assert names.unknown_privileges(["VM.Audit", "Sys.Audit"], known) is None
    assert names.unknown_privileges(["VM.Audti"], known) == \
        "unknown privilege VM.Audti (nearest: VM.Audit)"
    assert names.unknown_privileges(["Zzz.Qqq"], known) == "unknown privilege Zzz.Qqq"
