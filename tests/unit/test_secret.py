"""Secret keeps Python's contract: equal values hash equal; the value never shows."""
from __future__ import annotations

from pvemond.secret import Secret


def test_equal_secrets_hash_equal():
    value = "11111111-2222-3333-4444-555555555555"
    a, b = Secret(value), Secret(value)
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1 and b in {a}
    assert Secret("x") != Secret("y")


def test_the_value_never_shows():
    s = Secret("topsecret")
    assert "topsecret" not in f"{s} {s!r} {s:>20}"
