"""Claim codes: typeable (no 0/O, 1/I), compared in constant time, and knowing their expiry.

`XXXX-XXXX-XXXX` is 12 symbols of 5 bits. The last two carry the code's expiry minute
((expires_at // 60) mod 1024), so pvemond-claim can tell "this code expired" apart from "nothing
answers" (after expiry nothing listens). That leaves 50 random bits from `secrets`: plenty, since
the listener burns the claim after max_attempts (at most 20) wrong codes, so a guesser wins with a
chance of at most 20 in 2**50 (about 1 in 5.6e13). The expiry symbols are no secret: they follow
from the time the code was printed.

Stdlib only: the node's listener and the monitoring host's pvemond-claim share it.
"""
from __future__ import annotations

import re

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays unloaded: pvemond/records.py says why
    from typing import Optional

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # 32 symbols: 5 bits each, no 0/O or 1/I
CODE_SYMBOLS = 12                             # 10 random (50 bits) + 2 for the expiry minute
RANDOM_SYMBOLS = 10
MINUTES = len(ALPHABET) ** 2                  # 1024: the expiry minute is kept modulo this
CLOCK_SKEW = 120.0                            # seconds the two hosts' clocks may disagree


def new_code(expires_at: float) -> str:
    """A fresh code, `XXXX-XXXX-XXXX`: 50 random bits and the minute `expires_at` falls in."""
    import secrets  # only the node makes codes; pvemond-claim starts without it (and random)
    raw = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_SYMBOLS))
    return _group(raw + _minute_symbols(int(expires_at // 60) % MINUTES))


def _minute_symbols(minute: int) -> str:
    high, low = divmod(minute, len(ALPHABET))
    return ALPHABET[high] + ALPHABET[low]


def expired_since(code: str, now: float) -> Optional[float]:
    """Seconds since `code` expired, by its expiry symbols and the wall clock `now`; None when it
    is not known to be expired. The expiry is known to the minute, so the count starts at the end
    of that minute, and only beyond CLOCK_SKEW does it say "expired" (the node's clock may be
    behind ours). The minute is kept modulo 1024 (17 h 4 min): a difference of more than half of
    that is taken as unknown, not as expired, because a code from the far past cannot be told
    apart from one that expires later. Raises ValueError for what is not a code."""
    raw = normalize_code(code).replace("-", "")
    minute = ALPHABET.index(raw[-2]) * len(ALPHABET) + ALPHABET.index(raw[-1])
    behind = (int(now // 60) - minute) % MINUTES  # whole minutes from the expiry minute to now
    if behind > MINUTES // 2:
        return None
    since = now - ((int(now // 60) - behind) * 60 + 60)  # after the end of the expiry minute
    return since if since > CLOCK_SKEW else None


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
    import hmac  # here: only the node compares codes; pvemond-claim starts without it
    return hmac.compare_digest(given.encode("ascii"), expected.encode("ascii"))
