"""Request bodies: size and nesting limits before the parser sees them."""
from __future__ import annotations

import pytest

from pvemond import jsonbody


def test_a_flat_object_parses():
    assert jsonbody.parse(b'{"token": "a[{b", "dry_run": true}') == {"token": "a[{b",
                                                                       "dry_run": True}


@pytest.mark.parametrize("raw, why", [
    (b"[" * 100_000 + b"]" * 100_000, "nests deeper than 16"),     # RecursionError otherwise
    (b'{"a": ' * 17 + b"1" + b"}" * 17, "nests deeper than 16"),
    (b'"' + b"x" * (jsonbody.MAX_BYTES) + b'"', "larger than 262144 bytes"),
    (b'{"handout_ttl": ' + b"9" * 5000 + b"}", "not valid JSON"),  # int() digit limit
    (b"\xff", "not valid JSON"),
    (b"{", "not valid JSON"),
])
def test_what_is_refused(raw, why):
    with pytest.raises(jsonbody.BodyError, match=why):
        jsonbody.parse(raw)


def test_brackets_inside_strings_do_not_count():
    assert jsonbody.depth(b'{"a": "[[[[[[[[[[[[[[[[[[[[", "b": "\\"["}') == 1
