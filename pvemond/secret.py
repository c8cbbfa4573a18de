"""A token secret that cannot leak by accident: repr, str, logging and pickling all redact it."""
from __future__ import annotations

import hmac


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        """The only way to read the value: every use is a deliberate, greppable call."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        # Equal secrets must hash equal (Python's contract with __eq__); str's hash is keyed
        # per process (SipHash), so it tells nothing about the value.
        return hash((Secret, self._value))

    def __reduce__(self):
        raise TypeError("a Secret is never serialized")
