"""Real parts for tests, the demo and the benchmark: the daemon under real gunicorn on a temporary
unix socket, configured against a simulated node, and the commands run as subprocesses."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import yaml

REPO = Path(__file__).resolve().parent.parent


PRIVS = "Datastore.Audit,SDN.Audit,Sys.Audit,VM.Audit"
# user.cfg after a fresh converge and mint, as the simulator and upstream pveum both write it.
FRESH_USER_CFG = f"""\
user:monitoring@pve:1:0::::PVE monitoring (managed by pvemond)::
token:monitoring@pve!monitoring:0:0:managed by pvemond:
user:root@pam:1:0:::root@example.com:::



role:monitoring:{PRIVS}:

acl:1:/:monitoring@pve:monitoring:
"""


def write_config(path: Path, sim, proxy_url: str, workdir: Path, **sections: Dict) -> Path:
    """A pvemond.yaml pointing at the simulated node `sim`; `sections` override per section."""
    cfg = {
        "node": {"pveum": str(sim.pveum), "pve_dir": str(sim.pve_dir),
                 "pvecfg": str(sim.pvecfg), "dpkg_status": str(sim.dpkg_status),
                 "pveproxy_url": proxy_url, "pveum_timeout": 30.0},
        "daemon": {"socket": str(workdir / "pvemond.sock"), "state_dir": str(workdir / "state"),
                   "log_level": "debug"},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(cfg))
    return path


def free_port() -> int:
    """A free loopback port that pvemond accepts as a claim port: the OS may hand out one in
    Proxmox VE's own ranges (e.g. 60000-60050), which the configuration rightly refuses."""
    from pvemond import config
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if config.RULES["claim.port"](port) is None:
            return port


def token_works(proxy, node, token_id: str, secret: str) -> int:
    """The HTTP status pveproxy (the simulator's) answers a GET /version with this token."""
    ctx = ssl.create_default_context(cafile=str(node.ca_pem))
    req = urllib.request.Request(proxy.url + "/api2/json/version",
                                 headers={"Authorization": f"PVEAPIToken={token_id}={secret}"})
    try:
        return urllib.request.urlopen(req, context=ctx, timeout=10).status
    except urllib.error.HTTPError as exc:
        return exc.code


def env_for(config: Path) -> Dict[str, str]:
    env = dict(os.environ, PVEMOND_CONFIG=str(config), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


class Daemon:
    """pvemond under real gunicorn (whichever gunicorn this interpreter has)."""

    def __init__(self, config: Path, log: Path, prefix: List[str] = ()):
        self.prefix = list(prefix)  # e.g. ["ip", "netns", "exec", NS]
        self.config = config
        self.log = log
        self.socket = Path(yaml.safe_load(config.read_text())["daemon"]["socket"])
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 20.0) -> "Daemon":
        # A killed daemon's socket file may still reach a dying worker: never mistake it for ours.
        self.socket.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "pvemond.daemon", "-c", "python:pvemond.gunicorn_conf",
                 "pvemond.wsgi:app"], env=env_for(self.config), stdout=log, stderr=log,
                cwd=REPO, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited {self.proc.returncode}:\n{self.log.read_text()}")
            if self._accepts():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"gunicorn did not listen on {self.socket}:\n{self.log.read_text()}")

    def _accepts(self) -> bool:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(str(self.socket))
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop(self, sig: int = signal.SIGINT) -> None:
        """SIGINT is gunicorn's quick shutdown; systemd's SIGTERM (graceful) is tried in the
        system ring."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def pids(self) -> List[int]:
        """gunicorn master and workers (the session started for it)."""
        out = subprocess.run(["ps", "-o", "pid=", "-g", str(self.proc.pid)], capture_output=True,
                             text=True).stdout
        return [int(p) for p in out.split()]

    def __enter__(self) -> "Daemon":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def cli(module: str, *args: str, prefix: List[str] = ()) -> List[str]:
    return [*prefix, sys.executable, "-m", f"pvemond.cli.{module}", *args]


def run_cli(module: str, *args: str, config: Path, input: Optional[str] = None,
            timeout: float = 120, prefix: List[str] = (), **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m pvemond.cli.MODULE ARGS` as a user would run the command."""
    return subprocess.run(cli(module, *args, prefix=prefix),
                          env=env_for(config), capture_output=True, text=True, input=input,
                          timeout=timeout, cwd=config.parent, **kwargs)


def run_on(prefix: List[str], *cmd: str, config: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a command on one of the two hosts (see two_hosts) with pvemond's environment."""
    return subprocess.run([*prefix, *cmd], env=env_for(config), capture_output=True, text=True,
                          timeout=timeout, cwd=config.parent)  # files a command drops stay there


class Bootstrap:
    """pvemond-bootstrap in claim mode (or `pvemond rotate`: module="admin"), running in the
    background with --json events."""

    def __init__(self, config: Path, *args: str, prefix: List[str] = (), module: str = "bootstrap"):
        self.proc = subprocess.Popen(cli(module, "--json", *args, prefix=prefix),
                                     env=env_for(config), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=REPO,
                                     start_new_session=True)
        self.events: List[Dict] = []
        self._partial = b""

    def wait_for(self, event: str, timeout: float = 60) -> Dict:
        """Read events until `event` (the claim code, the outcome...). Reads the pipe itself:
        a buffered readline after select() would hide lines that arrived together."""
        import json
        import select
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            found = next((e for e in self.events if e["event"] == event), None)
            if found:
                return found
            if not select.select([fd], [], [], 0.5)[0]:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"bootstrap ended without {event}: {self.proc.stderr.read()}")
            self._partial += chunk
            *lines, self._partial = self._partial.split(b"\n")
            self.events += [json.loads(ln) for ln in lines if ln.strip()]
        raise TimeoutError(f"no {event} event within {timeout} s")

    def finish(self, timeout: float = 60) -> int:
        import json
        out, self.stderr = self.proc.communicate(timeout=timeout)
        rest = self._partial.decode() + out
        self.events += [json.loads(ln) for ln in rest.splitlines() if ln.strip()]
        return self.proc.returncode

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)


NODE_IP, MON_IP, OTHER_IP = "192.0.2.10", "192.0.2.20", "192.0.2.30"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def two_hosts() -> Iterator[Dict[str, List[str]]]:
    """The node (192.0.2.10) and the monitoring host (192.0.2.20 and .30) in two network
    namespaces joined by a veth pair; yields the command prefix that runs a program on each."""
    tag = uuid.uuid4().hex[:6]
    node_ns, mon_ns = f"pvm-node-{tag}", f"pvm-mon-{tag}"
    try:
        for ns in (node_ns, mon_ns):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", f"vn{tag}", "netns", node_ns, "type", "veth", "peer", "name",
            f"vm{tag}", "netns", mon_ns)
        _ip("-n", node_ns, "addr", "add", f"{NODE_IP}/24", "dev", f"vn{tag}")
        for addr in (MON_IP, OTHER_IP):
            _ip("-n", mon_ns, "addr", "add", f"{addr}/24", "dev", f"vm{tag}")
        _ip("-n", node_ns, "link", "set", f"vn{tag}", "up")
        _ip("-n", mon_ns, "link", "set", f"vm{tag}", "up")
        yield {"node": ["ip", "netns", "exec", node_ns], "mon": ["ip", "netns", "exec", mon_ns]}
    finally:
        for ns in (node_ns, mon_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@contextlib.contextmanager
def proxy_on(prefix: List[str], root: Path) -> Iterator[str]:
    """The pveproxy stand-in on port 8006 inside a namespace; yields its loopback URL."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "tests"))
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "pvesim", "proxy", str(root),
                             "--listen", "0.0.0.0:8006"], stdout=subprocess.PIPE, text=True,
                            env=env, stderr=subprocess.DEVNULL)
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("https://"):
            raise RuntimeError(f"the pveproxy stand-in did not start: {url!r}")
        yield url.replace("0.0.0.0", "127.0.0.1")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
