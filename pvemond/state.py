"""What the daemon remembers across restarts (state_dir/state.json): token metadata and the
hand-outs still in flight. Never a secret: a hand-out records who waits for it and until when.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict


class StateStore:
    def __init__(self, state_dir: str):
        self.path = Path(state_dir) / "state.json"
        self._lock = threading.Lock()

    def load(self) -> Dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = {}
        except ValueError:
            # A torn or hand-edited file must not stop the daemon; keep it for inspection.
            os.replace(self.path, self.path.with_suffix(".corrupt"))
            data = {}
        data.setdefault("tokens", {})
        data.setdefault("handouts", {})
        return data

    def update(self, change) -> Dict[str, Any]:
        """Read, let `change(data)` edit it, write atomically (rename), return the new data."""
        with self._lock:
            data = self.load()
            change(data)
            self._write(data)
            return data

    def _write(self, data: Dict[str, Any]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise
