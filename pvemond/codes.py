"""Claim codes: typeable (no 0/O, 1/I), 60 bits from `secrets`, compared in constant time.

Stdlib only: the node's listener and the monitoring host's pvemond-claim share it.
"""
from __future__ import annotations

import hmac
import re

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # 32 symbols: 5 bits each, no 0/O or 1/I
CODE_SYMBOLS = 12                             # 60 bits


def new_code() -> str:
    """A fresh code, `XXXX-XXXX-XXXX`, 60 bits from `secrets`."""
    import secrets  # only the node makes codes; pvemond-claim starts without it (and random)
    return _group("".join(secrets.choice(ALPHABET) for _ in range(CODE_SYMBOLS)))


def _group(raw: str) -> str:
    return "-".join(raw[i:i + 4] for i in range(0, len(raw), 4))


def normalize_code(text: str) -> str:
    """What a human typed -> canonical `XXXX-XXXX-XXXX`: case, spaces and dashes do not matter.
    The message never repeats the input (a near-miss of a code is still secret)."""
    raw = re.sub(r"[\s-]", "", text).upper() if text.isascii() else None
    if raw is None or set(raw) - set(ALPHABET):
        lookalike = raw is not None and bool(set(raw) & set("01OI"))
        hint = " (codes never contain 0, 1, O or I)" if lookalike else ""
        raise ValueError(f"a claim code uses only the characters {ALPHABET}{hint}; "
                         "type it as pvemond-bootstrap printed it")
    if len(raw) != CODE_SYMBOLS:
        raise ValueError(f"a claim code has {CODE_SYMBOLS} characters (XXXX-XXXX-XXXX), "
                         f"got {len(raw)}")
    return _group(raw)


def codes_match(given: str, expected: str) -> bool:
    """Constant-time comparison: the answer's timing says nothing about how close a guess was."""
    return hmac.compare_digest(given.encode("ascii"), expected.encode("ascii"))
