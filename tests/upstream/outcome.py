"""What one pveum run leaves behind, normalised for comparison: status (zero or not), stdout
(JSON parsed, lists sorted, secrets masked), stderr, user.cfg and token.cfg (secrets masked)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SECRET = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
MASK = "<secret>"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    stdout: Any
    stderr: str
    user_cfg: str
    token_cfg: str

    def differences(self, other: "Outcome") -> dict:
        """{field: (self's, other's)} for every field that differs."""
        return {f: (getattr(self, f), getattr(other, f)) for f in self.__dataclass_fields__
                if getattr(self, f) != getattr(other, f)}


def _sorted(value: Any) -> Any:
    """Lists in a canonical order (upstream prints hash order); numbers stay numbers."""
    if isinstance(value, list):
        return sorted((_sorted(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, dict):
        return {k: MASK if k == "value" and isinstance(v, str) else _sorted(v) for k, v in value.items()}
    return value


def stdout_of(text: str) -> Any:
    try:
        return _sorted(json.loads(text)) if text.strip() else text
    except ValueError:
        return SECRET.sub(MASK, text)


def stderr_of(text: str, unordered: bool) -> str:
    lines = text.splitlines()
    return "\n".join(sorted(lines) if unordered else lines)


def read_files(pve_dir: Path) -> tuple:
    def read(path: Path) -> str:
        return path.read_text(encoding="utf-8") if path.exists() else "<missing>"
    return read(pve_dir / "user.cfg"), SECRET.sub(MASK, read(pve_dir / "priv" / "token.cfg"))


def outcome(rc: int, out: str, err: str, pve_dir: Path, unordered: bool) -> Outcome:
    return Outcome(rc == 0, stdout_of(out), stderr_of(err, unordered), *read_files(pve_dir))
