"""Booted Debian containers for the system ring: cached debootstrap bases and systemd-nspawn.

What works on these machines (PID 1 is not systemd, no D-Bus, no Docker; see
shared/reference/debian.md): `systemd-nspawn -D ROOT --ephemeral --register=no --keep-unit --boot
--console=passive`, then `nsenter -t <container PID 1> -a CMD` to run commands inside.

Bases live in /var/cache/pvemond-ci/<suite>/root, one per Debian suite, with a stamp saying how
they were made. A base that is missing, made differently, or fails its health check is rebuilt;
the cache only saves time, nothing depends on it. The mirror is the URI of this machine's own apt
sources, read at run time.

layer(suite, name, packages) is a cached copy of a base with more packages installed (the fleet
ring's image: sshd, python3-apt), in /var/cache/pvemond-ci/<suite>-<name>/root; Container's
nspawn_args put a container in its own network namespace instead of this host's.

Also a small CLI, for people: `python3 tests/system/debroot.py base bookworm` (re)builds a base,
`python3 tests/system/debroot.py shell trixie` boots one and opens a shell in it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

CACHE = Path(os.environ.get("PVEMOND_CI_CACHE", "/var/cache/pvemond-ci"))
# Proxmox VE 8 runs on bookworm, PVE 9 on trixie.
SUITES = {"bookworm": 8, "trixie": 9}
# A minimal system that boots: systemd as PID 1, D-Bus for systemctl, python3 for the package,
# openssl because every PVE node has it (the simulator makes its certificates with it).
INCLUDE = ["systemd", "systemd-sysv", "dbus", "python3", "openssl"]
# Downloaded into the base's apt cache (an optimisation only: apt fetches them when missing).
PREFETCH = ["python3-flask", "gunicorn", "python3-sh", "python3-yaml"]
BASE_FORMAT = 3  # bump when the way bases are made changes: old caches get rebuilt
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
             "TERM": "dumb", "DEBIAN_FRONTEND": "noninteractive"}


class SystemRingError(AssertionError):
    """A prerequisite of the system ring does not work here: the ring fails, it never skips."""


def log(msg: str) -> None:
    print(f"[system] {msg}", file=sys.stderr, flush=True)


def run(cmd: Sequence[str], *, timeout: float, check: bool = True, input: Optional[str] = None,
        env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                              input=input, env=env if env is not None else dict(CLEAN_ENV))
    except subprocess.TimeoutExpired as exc:
        raise SystemRingError(f"timed out after {timeout:g} s: {' '.join(cmd)}") from exc
    except FileNotFoundError as exc:
        raise SystemRingError(f"{cmd[0]} is missing: install it (make test-system does)") from exc
    if check and proc.returncode != 0:
        raise SystemRingError(f"exit {proc.returncode}: {' '.join(cmd)}\n--- stdout\n"
                              f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


# --- the mirror: whatever this machine's apt uses ---------------------------------------------

def host_mirror() -> str:
    """The URI of the first Debian main archive in this machine's apt sources (not -security)."""
    entries: List[tuple] = []
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$", line)
            if m:
                entries.append((m.group(1), m.group(2).split(), m.group(3).split()))
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: Dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    entries.append((uri, fields.get("suites", "").split(),
                                    fields.get("components", "").split()))
    for uri, suites, components in entries:
        if "main" in components and any(not s.endswith("-security") and "/" not in s for s in suites) \
                and "security" not in uri:
            return uri.rstrip("/")
    raise SystemRingError("no Debian archive (component main) in this machine's apt sources")


# --- cached bases ----------------------------------------------------------------------------

def _stamp(suite: str, mirror: str) -> Dict[str, object]:
    return {"format": BASE_FORMAT, "suite": suite, "mirror": mirror, "include": INCLUDE,
            "prefetch": PREFETCH}


def _healthy(root: Path, want: Dict[str, object]) -> Optional[str]:
    """None if the base at `root` is usable, else why not."""
    try:
        stamp = json.loads((root.parent / "stamp.json").read_text())
    except (OSError, ValueError):
        return "no stamp"
    if stamp != want:
        return f"made differently ({stamp} != {want})"
    if not root.is_dir():
        return f"{root} missing"
    if root.stat().st_mode & 0o777 != 0o755:
        return f"{root} is not mode 0755"
    for rel in ("usr/bin/python3", "usr/lib/systemd/systemd", "usr/bin/apt-get", "etc/os-release"):
        if not (root / rel).exists():
            return f"{rel} missing"
    probe = run(["chroot", str(root), "/usr/bin/python3", "-c", "import ssl, sqlite3"], timeout=60,
                check=False)
    if probe.returncode != 0:
        return f"python3 broken: {probe.stderr.strip()[-300:]}"
    audit = run(["chroot", str(root), "dpkg", "--audit"], timeout=60, check=False)
    if audit.returncode != 0 or audit.stdout.strip():
        return f"dpkg --audit: {audit.stdout.strip()[-300:]}"
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def base(suite: str, mirror: Optional[str] = None, *, rebuild: bool = False) -> Path:
    """The cached base root of `suite`, built (or rebuilt) here when needed."""
    if suite not in SUITES:
        raise SystemRingError(f"unknown suite {suite} (known: {', '.join(SUITES)})")
    mirror = mirror or host_mirror()
    want = _stamp(suite, mirror)
    top = CACHE / suite
    root = top / "root"
    with _locked(CACHE / f"{suite}.lock"):
        why = "rebuild asked for" if rebuild else _healthy(root, want)
        if why is None:
            return root
        log(f"{suite}: building the base ({why}) from {mirror}")
        return _build(top, f"{suite}: base", want, lambda tmp: _debootstrap(tmp, suite, mirror))


def _debootstrap(tmp: Path, suite: str, mirror: str) -> None:
    run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}",
         "--components=main", suite, str(tmp), mirror], timeout=900)
    (tmp / "etc/apt/sources.list").write_text(f"deb {mirror} {suite} main\n")
    (tmp / "etc/hostname").write_text(f"pvemond-ci-{suite}\n")
    # An empty machine-id: systemd-nspawn hands the container a fresh one at each boot.
    (tmp / "etc/machine-id").write_text("")
    _chroot_apt(tmp, ["clean"])  # debootstrap's own .debs: 100 MB copied at every boot
    _chroot_apt(tmp, ["update"])
    _chroot_apt(tmp, ["install", "-y", "--download-only", *PREFETCH])


def _build(top: Path, label: str, want: Dict[str, object], fill: Callable[[Path], None]) -> Path:
    """top/root made afresh by `fill` in a temporary directory, renamed into place only once
    complete; then its stamp and a health check."""
    root = top / "root"
    started = time.monotonic()
    top.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="root.new.", dir=top))
    tmp.chmod(0o755)  # it becomes the container's /: mkdtemp's 0700 would lock out _apt & co
    try:
        fill(tmp)
        for old in (root, top / "root.old"):
            if old.exists():
                shutil.rmtree(old)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (top / "stamp.json").write_text(json.dumps(want))
    why = _healthy(root, want)
    if why:
        raise SystemRingError(f"{label}: freshly built, unusable: {why}")
    log(f"{label} ready in {time.monotonic() - started:.0f} s")
    return root


def _chroot_apt(root: Path, args: List[str]) -> None:
    # Needs /proc for some maintainer scripts; apt-get update/download do not.
    run(["chroot", str(root), "apt-get", "-q", *args], timeout=600)


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def layer(suite: str, name: str, packages: Sequence[str], mirror: Optional[str] = None) -> Path:
    """A cached copy of base(suite) with `packages` installed, in CACHE/<suite>-<name>/root;
    rebuilt when the base or the package list changes (its stamp holds both). Services the
    packages bring are enabled but not started while installing (policy-rc.d)."""
    mirror = mirror or host_mirror()
    under = base(suite, mirror)
    want = dict(_stamp(suite, mirror), layer=name, packages=sorted(packages))
    top = CACHE / f"{suite}-{name}"
    root = top / "root"
    with _locked(CACHE / f"{suite}-{name}.lock"), _locked(CACHE / f"{suite}.lock"):
        why = _healthy(root, want)
        if why is None and _mtime(top / "stamp.json") >= _mtime(CACHE / suite / "stamp.json"):
            return root
        log(f"{suite}-{name}: building the layer ({why or 'the base is newer'})")
        return _build(top, f"{suite}-{name}: layer", want,
                      lambda tmp: _install_over(under, tmp, packages))


def _install_over(under: Path, tmp: Path, packages: Sequence[str]) -> None:
    run(["cp", "-a", "--reflink=auto", f"{under}/.", str(tmp)], timeout=600)
    policy = tmp / "usr/sbin/policy-rc.d"  # a chroot shares this host's network: start nothing
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    try:
        _chroot_apt(tmp, ["install", "-y", "--no-install-recommends", *sorted(packages)])
        _chroot_apt(tmp, ["clean"])
    finally:
        policy.unlink()


# --- booted containers -----------------------------------------------------------------------

def _children(pid: int) -> List[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class Container:
    """`systemd-nspawn --ephemeral --boot` of a base; commands run through nsenter."""

    def __init__(self, root: Path, name: str, binds: Sequence[str] = (), log_path: Optional[Path] = None,
                 nspawn_args: Sequence[str] = ()):
        """nspawn_args: more systemd-nspawn options, e.g. --network-namespace-path=/run/netns/NS
        (without one the container shares this host's network, as the system ring's do)."""
        self.root, self.name, self.binds = root, name, list(binds)
        self.nspawn_args = list(nspawn_args)
        self.log_path = log_path or Path(tempfile.mkstemp(prefix=f"{name}.", suffix=".console")[1])
        self.proc: Optional[subprocess.Popen] = None
        self.pid1: Optional[int] = None

    def boot(self, timeout: float = 60) -> "Container":
        cmd = ["systemd-nspawn", "-D", str(self.root), "--ephemeral", "--register=no", "--keep-unit",
               "--boot", "--console=passive", f"--machine={self.name}"]
        cmd += [f"--bind-ro={b}" for b in self.binds] + self.nspawn_args
        env = dict(CLEAN_ENV, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
        with open(self.log_path, "wb") as console:
            self.proc = subprocess.Popen(cmd, stdout=console, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemRingError(f"systemd-nspawn exited {self.proc.returncode} while booting "
                                      f"{self.name}:\n{self.console()}")
            self.pid1 = self.pid1 or self._find_pid1()
            if self.pid1:
                state = self.sh("systemctl is-system-running --wait", timeout=deadline - time.monotonic(),
                                check=False).stdout.strip()
                if state in ("running", "degraded"):
                    if state == "degraded":
                        failed = self.sh("systemctl --failed --no-legend --plain", check=False).stdout
                        log(f"{self.name}: booted degraded; failed units: {failed.strip()}")
                    return self
            time.sleep(0.2)
        raise SystemRingError(f"{self.name} did not finish booting in {timeout:g} s:\n{self.console()}")

    def _find_pid1(self) -> Optional[int]:
        """The container's PID 1: the first descendant of systemd-nspawn named systemd."""
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop(0)
            for kid in _children(pid):
                if _comm(kid) == "systemd":
                    return kid
                todo.append(kid)
        return None

    def console(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return "(no console log)"

    def _inside(self, argv: Sequence[str]) -> List[str]:
        """`argv` as run inside the container, with a clean environment."""
        if not self.pid1:
            raise SystemRingError(f"{self.name} is not running")
        env_args = [f"{k}={v}" for k, v in CLEAN_ENV.items()]
        return ["nsenter", "-t", str(self.pid1), "-a", "--", "/usr/bin/env", "-i", *env_args, *argv]

    def exec(self, argv: Sequence[str], *, timeout: float = 120, check: bool = True,
             input: Optional[str] = None) -> subprocess.CompletedProcess:
        return run(self._inside(argv), timeout=max(timeout, 1), check=check, input=input)

    def popen(self, argv: Sequence[str]) -> subprocess.Popen:
        """A command left running inside (stdout and stderr piped, as text). Killing the Popen
        kills only nsenter: stop the command itself inside (see test_system.ClaimRun)."""
        return subprocess.Popen(self._inside(argv), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(CLEAN_ENV))

    def sh(self, script: str, **kw) -> subprocess.CompletedProcess:
        return self.exec(["/bin/sh", "-ec", script], **kw)

    def put_tree(self, src: Path, dest: str, timeout: float = 60) -> None:
        """Copy a directory tree into the container (tar through nsenter), without __pycache__."""
        tar = subprocess.Popen(["tar", "-C", str(src.parent), "--exclude=__pycache__", "-cf", "-",
                                src.name], stdout=subprocess.PIPE)
        try:
            untar = subprocess.run(
                self._inside(["/bin/sh", "-ec", f'mkdir -p "{dest}" && tar -xf - -C "{dest}"']),
                stdin=tar.stdout, capture_output=True, timeout=timeout)
        finally:
            tar.stdout.close()
            tar.wait(timeout=timeout)
        if untar.returncode != 0 or tar.returncode != 0:
            raise SystemRingError(f"copying {src} into {self.name}:{dest} failed: "
                                  f"{untar.stderr.decode(errors='replace')}")

    def shutdown(self, timeout: float = 30) -> None:
        """Power off cleanly; kill systemd-nspawn if that does not finish in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.pid1:
            subprocess.run(["nsenter", "-t", str(self.pid1), "-a", "--", "systemctl", "poweroff",
                            "--no-block"], capture_output=True, timeout=15, env=dict(CLEAN_ENV))
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"{self.name}: no clean poweroff in {timeout:g} s, killing systemd-nspawn")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def __enter__(self) -> "Container":
        try:
            return self.boot()
        except BaseException:
            self.shutdown()
            raise

    def __exit__(self, *exc) -> None:
        self.shutdown()


def _main(argv: List[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("base", "shell") or argv[1] not in SUITES:
        print(__doc__.strip().splitlines()[-2:], file=sys.stderr)
        print("usage: debroot.py base|shell bookworm|trixie", file=sys.stderr)
        return 2
    if argv[0] == "base":
        print(base(argv[1], rebuild=True))
        return 0
    with Container(base(argv[1]), f"pvemond-shell-{argv[1]}") as c:
        return subprocess.call(["nsenter", "-t", str(c.pid1), "-a", "--", "/bin/bash", "-l"])


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
