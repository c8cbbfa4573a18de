"""Claim codes: shape, randomness from `secrets`, and the expiry minute two symbols carry
(codes.expired_since, which pvemond-claim uses to say "expired" rather than "unreachable")."""
from __future__ import annotations

import collections
import math
import re
import secrets

import pytest

from pvemond import codes
from pvemond.codes import ALPHABET, CLOCK_SKEW, MINUTES, expired_since, new_code, normalize_code

NOW = 1_760_000_000.0  # any wall clock; 1_760_000_000 // 60 is minute 29_333_333


def test_shape_alphabet_and_random_bits():
    assert len(ALPHABET) == len(set(ALPHABET)) == 32 and not set("01OI") & set(ALPHABET)
    assert codes.RANDOM_SYMBOLS * math.log2(len(ALPHABET)) == 50
    samples = [new_code(NOW) for _ in range(2000)]
    symbol = f"[{ALPHABET}]"
    assert all(re.fullmatch(f"{symbol}{{4}}-{symbol}{{4}}-{symbol}{{4}}", c) for c in samples)
    assert len(set(samples)) == len(samples)
    assert len({c[-2:] for c in samples}) == 1  # one expiry, one pair of expiry symbols
    # 20000 random symbols: each of the 32 expected 625 times; a biased generator leaves this band.
    counts = collections.Counter(ch for c in samples for ch in c.replace("-", "")[:10])
    assert set(counts) == set(ALPHABET)
    assert all(500 < n < 750 for n in counts.values())


def test_random_part_comes_from_secrets(monkeypatch):
    calls = []
    monkeypatch.setattr(secrets, "choice", lambda seq: calls.append(seq) or seq[0])
    minute = int(NOW // 60) % MINUTES
    tail = ALPHABET[minute // 32] + ALPHABET[minute % 32]
    assert new_code(NOW) == f"2222-2222-22{tail}" and calls == [ALPHABET] * 10


def test_expiry_minute_is_encoded_modulo_1024():
    assert new_code(0)[-2:] == "22" and new_code(59.9)[-2:] == "22"
    assert new_code(60)[-2:] == "23"
    assert new_code(1023 * 60)[-2:] == "ZZ" and new_code(1024 * 60)[-2:] == "22"


@pytest.mark.parametrize("expires_in", [-3600, -CLOCK_SKEW - 60, 0, 600, 3600])
def test_not_known_expired_until_its_minute_and_the_skew_have_passed(expires_in):
    code = new_code(NOW + expires_in)
    # The code may expire as late as the end of its minute; only past that plus the skew is it
    # known to have expired.
    end_of_minute = ((NOW + expires_in) // 60) * 60 + 60
    for now in (NOW, NOW + 1, end_of_minute + CLOCK_SKEW - 0.001):
        since = expired_since(code, now)
        assert since is None or since == pytest.approx(now - end_of_minute)
        assert since is None or since > CLOCK_SKEW
    assert expired_since(code, end_of_minute + CLOCK_SKEW - 0.001) is None
    assert expired_since(code, end_of_minute + CLOCK_SKEW + 1) == pytest.approx(CLOCK_SKEW + 1)


def test_a_live_code_is_never_called_expired():
    for ttl in (30, 600, 3600):
        code = new_code(NOW + ttl)
        for elapsed in range(0, ttl + int(CLOCK_SKEW), 7):
            assert expired_since(code, NOW + elapsed) is None


def test_expired_for_minutes_says_how_long():
    code = new_code(NOW)
    end = (NOW // 60) * 60 + 60
    assert expired_since(code, NOW + 3600) == pytest.approx(NOW + 3600 - end)
    assert expired_since(code, end + (MINUTES // 2 - 1) * 60) == pytest.approx((MINUTES // 2 - 1) * 60)


def test_the_far_past_wraps_to_unknown_not_to_a_wrong_answer():
    """The minute is kept modulo 1024 (about 17 h): more than half of that ago is unknown, as is
    a code from the future (the node's clock ahead of ours)."""
    code = new_code(NOW)
    minute_start = (NOW // 60) * 60
    assert expired_since(code, minute_start + (MINUTES // 2 + 2) * 60) is None
    assert expired_since(code, minute_start + MINUTES * 60 + 30) is None  # one full wrap later
    assert expired_since(code, NOW - 3600) is None


def test_takes_what_people_type_and_refuses_what_is_no_code():
    code = new_code(NOW)
    typed = code.lower().replace("-", " ")
    assert expired_since(typed, NOW + 3600) == expired_since(code, NOW + 3600) is not None
    with pytest.raises(ValueError, match="12 characters"):
        expired_since("K7QM-2PXW", NOW)
    assert normalize_code(typed) == code


def test_stdlib_only_and_lean():
    import ast
    tree = ast.parse(open(codes.__file__, encoding="utf-8").read())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "hmac", "re", "secrets", "typing"}
