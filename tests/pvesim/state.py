"""Simulator-only state of a node: knobs (settings.json), the call log and the write lock.

Everything here lives under ROOT/var/lib/pvesim, apart from the paths of the /etc/pve
files that the fake pveum and the proxy share.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

PVE_DEFAULTS = {
    9: {"pve_version": "9.1.1", "access_control": "9.1.1"},
    8: {"pve_version": "8.4.1", "access_control": "8.2.3"},
}

# Knobs a test may set, with their defaults (pve_version/access_control depend on --pve).
DEFAULT_SETTINGS: dict[str, Any] = {
    **PVE_DEFAULTS[9],
    "quorate": True,
    "no_quorum_delay": 10.0,
    "delay": 0.0,
    "auth_fail_delay": 3.0,
    "auth_errors": "unified",
    # False: pmxcfs cannot verify token secrets (priv/token.cfg damaged or out of sync), so
    # pveproxy refuses every token with 401 while user.cfg looks right.
    "token_verify": True,
    # False: pve-cluster is stopped (SimNode.stop_pmxcfs): /etc/pve is empty, pveum exits 111.
    "pmxcfs": True,
    "fail_next": [],
    # [{vmid, name, type: qemu|lxc, node, status?, onboot?, tags?, lock?, hastate?, template?,
    #   backup? (covered by a backup job), config? (extra config keys)}]
    "guests": [],
    "storages": [],  # [{storage, node, plugintype?, content?, shared?}]
    "replication": [],  # [{guest, target, jobnum?, schedule?, fail_count?, error?}]
    "subscription": None,  # null: no key (notfound); else the key's fields over an active one
    "qdevice": {},  # /cluster/config/qdevice: {} is no qdevice
}
# settings.json also records facts from creation (nodename, ip, domain, cluster, python):
# informational, read by SimNode, not knobs.


def version_tuple(version: str) -> tuple[int, ...]:
    """'8.2.3' -> (8, 2, 3); tolerant of suffixes such as '9.1.1~rc1'."""
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


def atomic_write(path: Path, data: str, mode: int = 0o640) -> None:
    """Write via a temp file in the same directory and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class NodeState:
    """Paths of one simulated node plus access to its simulator knobs and logs."""

    def __init__(self, root: "str | os.PathLike[str]") -> None:
        self.root = Path(root)
        self.pve_dir = self.root / "etc" / "pve"
        self.sim_dir = self.root / "var" / "lib" / "pvesim"
        self.user_cfg = self.pve_dir / "user.cfg"
        self.token_cfg = self.pve_dir / "priv" / "token.cfg"
        self.domains_cfg = self.pve_dir / "domains.cfg"
        self.members = self.pve_dir / ".members"
        self.settings_path = self.sim_dir / "settings.json"
        self.calls_path = self.sim_dir / "calls.log"
        self.lock_path = self.sim_dir / "lock"

    # -- settings -----------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        data = dict(DEFAULT_SETTINGS)
        try:
            data.update(json.loads(self.settings_path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            pass
        return data

    def save_settings(self, data: dict[str, Any]) -> None:
        atomic_write(self.settings_path, json.dumps(data, indent=2, sort_keys=True) + "\n", 0o644)

    def update_settings(self, change: Callable[[dict[str, Any]], Any]) -> Any:
        """Read-modify-write settings.json under the node lock; returns change()'s result."""
        with self.locked():
            data = self.settings()
            result = change(data)
            self.save_settings(data)
            return result

    def consume_fail_next(self, joined_argv: str) -> Optional[dict[str, Any]]:
        """Pop the first fail_next entry whose 'match' occurs in the argv line."""
        if not self.settings().get("fail_next"):
            return None  # common case: no lock, no write

        def pop(data: dict[str, Any]) -> Optional[dict[str, Any]]:
            for i, entry in enumerate(data.get("fail_next") or []):
                if entry.get("match", "") in joined_argv:
                    return data["fail_next"].pop(i)
            return None

        return self.update_settings(pop)

    # -- lock and log -------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive flock on var/lib/pvesim/lock: stands in for pmxcfs's cluster lock.

        Not re-entrant: never nest two locked() blocks in one process.
        """
        self.sim_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def append_call(self, record: dict[str, Any]) -> None:
        """One JSON line per invocation; O_APPEND keeps concurrent writers' lines whole."""
        line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
        self.sim_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.calls_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def calls(self) -> list[dict[str, Any]]:
        try:
            text = self.calls_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]
