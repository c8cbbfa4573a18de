"""A request body parsed with limits: size and nesting are checked before json.loads sees it.

The largest valid body is well under a kilobyte and nests one level; a body nested 100,000 levels
deep would otherwise hit Python's recursion limit inside the parser (a 500, not a 400).
"""
from __future__ import annotations

import json
import re
from typing import Any

# Bounded, yet roomy enough that a body nested 100,000 levels deep meets the depth rule (a 400).
MAX_BYTES = 256 * 1024
MAX_DEPTH = 16
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(rb"[\[\]{}]")


class BodyError(ValueError):
    """The body is not acceptable JSON; the message says why."""


def parse(raw: bytes) -> Any:
    if len(raw) > MAX_BYTES:
        raise BodyError(f"the body is larger than {MAX_BYTES} bytes")
    if depth(raw) > MAX_DEPTH:
        raise BodyError(f"the body nests deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: also an int of 5,000 digits
        raise BodyError(f"the body is not valid JSON ({exc})") from None


def depth(raw: bytes) -> int:
    """How deep [ and { nest, outside strings (stops counting once past MAX_DEPTH)."""
    level = deepest = 0
    for m in _BRACKETS.finditer(_STRING.sub(b'""', raw)):
        level += 1 if m.group() in b"[{" else -1
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
    return deepest
