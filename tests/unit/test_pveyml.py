"""pveyml.merge: inside our module, pvemond's keys are rewritten and what the user added (keys,
comments) is kept; what cannot be kept is refused with the line and the fix."""
from __future__ import annotations

import pytest
import yaml

from pvemond.pveyml import Block, MergeError, merge, render

OURS = ("# written by pvemond-",)
BLOCK = Block(["# written by pvemond-claim for cluster prod"], "prod:",
              [("user", "monitoring@pve"), ("token_name", "monitoring"),
               ("token_value", '"NEW"'), ("verify_ssl", "/etc/ca.pem")])
FRESH = "".join(line + "\n" for line in render(BLOCK))
MANAGED = {"user": "monitoring@pve", "token_name": "monitoring", "token_value": "NEW",
           "verify_ssl": "/etc/ca.pem"}


def merged(existing: str) -> str:
    return merge(existing, "prod", BLOCK, OURS)


def test_a_fresh_file_merges_into_itself():
    assert merged(FRESH) == FRESH


def test_user_keys_and_comments_inside_the_module_are_kept_in_place():
    existing = FRESH.replace('"NEW"', '"OLD"').replace(
        "  token_name: monitoring\n",
        "  token_name: monitoring\n  # keep the scrape short\n  timeout: 20\n")
    out = merged(existing)
    assert out == FRESH.replace("  token_name: monitoring\n",
                                "  token_name: monitoring\n  # keep the scrape short\n"
                                "  timeout: 20\n")
    assert yaml.safe_load(out) == {"prod": {**MANAGED, "timeout": 20}}
    assert merged(out) == out


def test_a_multi_line_user_value_is_kept_and_an_old_multi_line_value_of_ours_dropped():
    existing = ("prod:\n  token_value: >-\n    OLD\n    FOLDED\n  notes: |\n    line one\n"
                "      deeper\n  user: old@pve\n")
    out = merged(existing)
    assert "OLD" not in out and "FOLDED" not in out
    assert yaml.safe_load(out)["prod"] == {**MANAGED, "notes": "line one\n  deeper\n"}


def test_inline_comments_on_our_lines_are_kept_on_them():
    existing = 'prod:  # the prod cluster\n  token_value: "OLD"  # rotated by pvemond\n' \
               "  verify_ssl: false # was off\n"
    out = merged(existing)
    assert 'prod:  # the prod cluster\n' in out
    assert '  token_value: "NEW"  # rotated by pvemond\n' in out
    assert "  verify_ssl: /etc/ca.pem  # was off\n" in out
    assert yaml.safe_load(out)["prod"]["verify_ssl"] == "/etc/ca.pem"


def test_the_users_indentation_is_followed():
    existing = "prod:\n    user: old@pve\n    timeout: 20\n"
    out = merged(existing)
    assert "\n    token_value: \"NEW\"\n" in out and "\n    timeout: 20\n" in out
    assert yaml.safe_load(out)["prod"] == {**MANAGED, "timeout": 20}


def test_missing_keys_of_ours_are_added_after_the_last_one_present():
    out = merged("prod:\n  user: old@pve\n  timeout: 20\n")
    assert out.splitlines()[1:] == ["prod:", "  user: monitoring@pve", "  token_name: monitoring",
                                    '  token_value: "NEW"', "  verify_ssl: /etc/ca.pem",
                                    "  timeout: 20"]


def test_an_empty_module_gets_our_keys():
    out = merged("prod:\n  # nothing yet\nother:\n  user: o@pve\n")
    assert yaml.safe_load(out)["prod"] == MANAGED and "  # nothing yet\n" in out


def test_other_modules_and_anchors_they_own_stay():
    existing = "base: &b\n  timeout: 9\nprod:\n  <<: *b\n  user: old@pve\n"
    out = merged(existing)
    assert out.startswith("base: &b\n  timeout: 9\n# written by pvemond-claim for cluster prod\n"
                          "prod:\n  <<: *b\n")
    assert yaml.safe_load(out)["prod"] == {**MANAGED, "timeout": 9}


@pytest.mark.parametrize("existing, line, problem", [
    ("prod: {user: a, timeout: 20}\n", 1, "follow 'prod:' on the same line"),
    ("base: &b\n  user: a\nprod: *b\n", 3, "follow 'prod:' on the same line"),
    ("prod:\n  user: a\n  user: b\n", 3, "setting 'user' appears twice"),
    ("prod:\n  - user\n", 2, "a list item ('- ') in a module"),
    ("prod:\n    user: a\n  timeout: 1\n", 3, "indented less than the line above it"),
])
def test_what_cannot_be_kept_is_refused_with_the_line(existing, line, problem):
    with pytest.raises(MergeError) as err:
        merged(existing)
    assert f"line {line}: " in str(err.value) and problem in str(err.value)
    assert "fix pve.yml by hand, or write to a new file with -o" in str(err.value)
