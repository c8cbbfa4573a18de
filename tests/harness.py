"""Real parts for tests, the demo and the benchmark: the daemon under real gunicorn on a temporary
unix socket, configured against a simulated node, and the commands run as subprocesses."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

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


# The daemon's command line after the interpreter, as the unit runs it (systemd/pvemond.service).
DAEMON_ARGS = ["-OO", "-m", "pvemond.daemon", "-c", "python:pvemond.gunicorn_conf",
               "pvemond.wsgi:app"]
# Its -OO bytecode, kept from run to run as the unit's cache directory keeps it on a node.
DAEMON_PYCACHE = REPO / ".pycache-daemon"


def daemon_env(config: Path) -> Dict[str, str]:
    """env_for, plus the unit's bytecode cache (written even where the caller says not to)."""
    env = env_for(config)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(DAEMON_PYCACHE)
    return env


class Daemon:
    """pvemond under real gunicorn (whichever gunicorn this interpreter has), started as the unit
    starts it."""

    def __init__(self, config: Path, log: Path, prefix: List[str] = (),
                 python: str = sys.executable):
        self.prefix = list(prefix)  # e.g. ["ip", "netns", "exec", NS]
        self.python = python
        self.config = config
        self.log = log
        daemon = yaml.safe_load(config.read_text())["daemon"]
        self.socket = Path(daemon["socket"])
        self.tcp: Optional[str] = daemon.get("tcp")  # "HOST:PORT", HOST maybe in brackets
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 20.0) -> "Daemon":
        # A killed daemon's socket file may still reach a dying worker: never mistake it for ours.
        self.socket.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, self.python, *DAEMON_ARGS], env=daemon_env(self.config),
                stdout=log, stderr=log, cwd=REPO, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited {self.proc.returncode}:\n{self.log.read_text()}")
            if self._accepts() and self._tcp_accepts():
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

    def _tcp_accepts(self) -> bool:
        """The loopback TCP listener too, when configured: gunicorn may bind it a moment later."""
        if not self.tcp:
            return True
        host, port = self.tcp.rsplit(":", 1)
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
            return True
        except OSError:
            return False

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
CLUSTER_IPS = (NODE_IP, "192.0.2.11", "192.0.2.12")  # pve1..pve3 of SimNode(all_online=True)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def two_hosts(node_ips: Sequence[str] = (NODE_IP,)) -> Iterator[Dict[str, List[str]]]:
    """The node (192.0.2.10) and the monitoring host (192.0.2.20 and .30) in two network
    namespaces joined by a veth pair; yields the command prefix that runs a program on each.
    node_ips: the node namespace's addresses (a cluster's nodes: CLUSTER_IPS)."""
    tag = uuid.uuid4().hex[:6]
    node_ns, mon_ns = f"pvm-node-{tag}", f"pvm-mon-{tag}"
    try:
        for ns in (node_ns, mon_ns):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", f"vn{tag}", "netns", node_ns, "type", "veth", "peer", "name",
            f"vm{tag}", "netns", mon_ns)
        for addr in node_ips:
            _ip("-n", node_ns, "addr", "add", f"{addr}/24", "dev", f"vn{tag}")
        for addr in (MON_IP, OTHER_IP):
            _ip("-n", mon_ns, "addr", "add", f"{addr}/24", "dev", f"vm{tag}")
        _ip("-n", node_ns, "link", "set", f"vn{tag}", "up")
        _ip("-n", mon_ns, "link", "set", f"vm{tag}", "up")
        yield {"node": ["ip", "netns", "exec", node_ns], "mon": ["ip", "netns", "exec", mon_ns]}
    finally:
        for ns in (node_ns, mon_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@contextlib.contextmanager
def proxy_on(prefix: List[str], root: Path, ip: str = "0.0.0.0", node: Optional[str] = None) -> Iterator[str]:
    """The pveproxy stand-in on port 8006 inside a namespace; yields its URL (loopback when it
    listens on every address). ip/node: one cluster node's own proxy (see cluster_proxies)."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "tests"))
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "pvesim", "proxy", str(root),
                             "--listen", f"{ip}:8006", *(["--node", node] if node else [])],
                            stdout=subprocess.PIPE, text=True, env=env, stderr=subprocess.DEVNULL)
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("https://"):
            raise RuntimeError(f"the pveproxy stand-in did not start: {url!r}")
        yield url.replace("0.0.0.0", "127.0.0.1")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def cluster_proxies(prefix: List[str], sim) -> Iterator[Dict[str, str]]:
    """One pveproxy stand-in per node of the simulated cluster `sim`, each on its node's IP:8006
    answering as that node; yields {node name: URL}. The namespace must hold every node's IP
    (two_hosts(CLUSTER_IPS) for SimNode.create(..., cluster=NAME, all_online=True))."""
    with contextlib.ExitStack() as stack:
        yield {n["name"]: stack.enter_context(proxy_on(prefix, sim.root, n["ip"], n["name"]))
               for n in sim.cluster_nodes()}


EXPORTER_VENV = REPO / ".venv-exporter"
EXPORTER_PORT = 9221


def system_user(name: str) -> "tuple[int, int]":
    """(uid, gid) of a system user, created (no home, no login) when it is missing."""
    import pwd
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                        "/nonexistent", "--shell", "/usr/sbin/nologin", name], check=True,
                       capture_output=True)
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _exporter_bin() -> Path:
    """The venv's pve_exporter; a test that needs it fails (never skips) without it."""
    exe = EXPORTER_VENV / "bin" / "pve_exporter"
    if not exe.exists():
        import pytest
        pytest.fail(f"prometheus-pve-exporter is missing: no {exe.relative_to(REPO)}; "
                    "run `make exporter-venv` (Python 3.13 with PyPI's newest exporter)", pytrace=False)
    return exe


def _hidden_paths(paths: Sequence[Path]) -> Dict[Path, List[Path]]:
    """{first ancestor others cannot enter (e.g. /root, mode 0700): [paths under it]}."""
    out: Dict[Path, List[Path]] = {}
    for path in paths:
        for parent in reversed(path.parents):
            if parent != Path("/") and not os.stat(parent).st_mode & 0o001:
                out.setdefault(parent, []).append(path)
                break
    return out


def _reach_script(paths: Sequence[Path]) -> str:
    """Shell for a private mount namespace: each directory that hides one of `paths` (pyenv's
    interpreter under a 0700 /root) becomes an empty tmpfs with just those paths bound back, so
    an unprivileged user reaches the interpreter and nothing else there. Changes nothing outside."""
    from shlex import quote
    lines = ["set -e", "mount --make-rprivate /", "stage=$(mktemp -d)"]
    for i, (hider, inside) in enumerate(_hidden_paths(paths).items()):
        for j, path in enumerate(inside):
            lines += [f"mkdir $stage/{i}-{j}", f"mount --bind {quote(str(path))} $stage/{i}-{j}"]
        lines.append(f"mount -t tmpfs -o mode=0755 pvemond-test {quote(str(hider))}")
        for j, path in enumerate(inside):
            lines += [f"mkdir -p {quote(str(path))}", f"mount --bind $stage/{i}-{j} {quote(str(path))}",
                      f"umount $stage/{i}-{j}"]
    return "\n".join(lines + ['exec "$@"']) + "\n"


def _exporter_paths() -> List[Path]:
    """The venv and the interpreter installation it runs on (pyvenv.cfg `home`)."""
    base = subprocess.run([str(EXPORTER_VENV / "bin" / "python"), "-c", "import sys; print(sys.base_prefix)"],
                          capture_output=True, text=True, check=True).stdout.strip()
    return [EXPORTER_VENV.resolve(), Path(base)]


@contextlib.contextmanager
def run_exporter(prefix: List[str], pve_yml: Path, user: str) -> Iterator[str]:
    """The real prometheus-pve-exporter (REPO/.venv-exporter, `make exporter-venv`; the test fails
    loudly without it) inside the namespace of `prefix` (e.g. two_hosts()["mon"]), as the
    non-root system `user` (created when missing: system_user), with --config.file pve_yml,
    listening on 127.0.0.1:9221 there. Yields its base URL ("http://127.0.0.1:9221") once it
    answers. The caller makes pve_yml (and the CA file it names, and their directories)
    readable by that user, e.g. group-owned by system_user(user)[1] with mode 0640."""
    import tempfile
    exe = _exporter_bin()
    uid, gid = system_user(user)
    fd, name = tempfile.mkstemp(prefix="pvemond-exporter-", suffix=".log")
    os.close(fd)
    log = Path(name)
    url = f"http://127.0.0.1:{EXPORTER_PORT}"
    cmd = [*prefix, "unshare", "--mount", "--", "sh", "-c", _reach_script(_exporter_paths()), "reach",
           "setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--",
           str(exe), f"--config.file={pve_yml}", f"--web.listen-address=127.0.0.1:{EXPORTER_PORT}"]
    with open(log, "wb") as out:  # its log: root's file, never handed to the exporter's user
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, cwd="/", start_new_session=True)
    try:
        _wait_answer(prefix, url, proc, log)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.unlink(missing_ok=True)


def _wait_answer(prefix: List[str], url: str, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    """Until GET / answers inside the namespace; the exporter's log in the error otherwise."""
    probe = f"import urllib.request; urllib.request.urlopen({url + '/'!r}, timeout=2)"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pve_exporter exited {proc.returncode}:\n{log.read_text()}")
        if subprocess.run([*prefix, sys.executable, "-c", probe], capture_output=True).returncode == 0:
            return
        time.sleep(0.3)
    raise RuntimeError(f"pve_exporter did not answer on {url} within {timeout} s:\n{log.read_text()}")


# -- Prometheus on the monitoring host --------------------------------------------------------
PROMETHEUS_URL = "http://127.0.0.1:9090"
# The admin's prometheus.yml before the claim: Prometheus scraping itself, nothing of pvemond.
PROMETHEUS_YML = """\
# my Prometheus
global:
  scrape_interval: 5s       # one exporter scrape of the simulated cluster takes over 1 s
  evaluation_interval: 1s

scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:9090']
"""


@contextlib.contextmanager
def open_dir() -> Iterator[Path]:
    """A directory the exporter's user may enter (pytest's tmp_path sits below a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="pvemond-prom-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@contextlib.contextmanager
def prometheus_on(prefix: List[str], config: Path, storage: Path) -> Iterator[subprocess.Popen]:
    """The real Prometheus in the namespace of `prefix`, on 127.0.0.1:9090 there."""
    log = storage.parent / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*prefix, "prometheus", f"--config.file={config}",
                                 f"--storage.tsdb.path={storage}",
                                 "--web.listen-address=127.0.0.1:9090"],
                                stdout=out, stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while api(prefix, "/-/ready", raw=True) != "ready":
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def api(prefix: List[str], path: str, raw: bool = False):
    """GET Prometheus's API inside the namespace; the decoded `data` (or "ready" for /-/ready)."""
    probe = ("import json, sys, urllib.request\n"
             "try:\n"
             f"    body = urllib.request.urlopen({PROMETHEUS_URL!r} + sys.argv[1], timeout=5).read()\n"
             "except OSError:\n"
             "    body = b''\n"
             "sys.stdout.write(body.decode())\n")
    out = subprocess.run([*prefix, sys.executable, "-c", probe, path], capture_output=True,
                         text=True, timeout=30).stdout
    if raw:
        return "ready" if "Ready" in out else out
    return json.loads(out)["data"] if out else None


def query(prefix: List[str], promql: str) -> dict:
    """{series labels as a frozenset: value} of an instant query."""
    from urllib.parse import quote
    data = api(prefix, "/api/v1/query?query=" + quote(promql)) or {"result": []}
    return {frozenset(r["metric"].items()): r["value"][1] for r in data["result"]}


def wait_for(what, timeout: float = 60):
    """what()'s first truthy answer, polled every half second; its last answer at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.5)
