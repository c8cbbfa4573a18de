"""`make bench`: measured figures, one per line as `BENCH <name> <value> <unit>`.

pveum costs ~0.5-1 s of Perl start-up on a real node; the simulator adds 0.7 s per call so the
wall times here are what an admin would wait, and the call counts are counted, not hoped.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional, Tuple

import yaml

from harness import REPO, Bootstrap, Daemon, env_for, free_port, run_cli, write_config
from pvemond.client import Client
from pvesim.node import SimNode

sys.path.insert(0, str(Path(__file__).resolve().parent / "upstream"))
import upnode  # noqa: E402  (tests/upstream: the genuine pveum's nodes)
sys.path.insert(0, str(REPO / "debian"))
import launchers  # noqa: E402  (the .deb's /usr/bin scripts)

PVEUM_DELAY = 0.7
STATUS_REQUESTS = 300
CLAIMS = 11  # claim round trips, their median reported (one fsync on a busy disk can cost 5 ms)
BUSY_DELAY = 3.0  # the pveum run status is sampled beside: long enough for STATUS_REQUESTS
WALL_SHARE, WALL_SLACK = 1.10, 0.150  # a fresh bootstrap's wall: at most 110 % of its runs + 150 ms
UNLOGGED_RUNS = 5  # upstream pveum runs timed from outside, against their own logged time


def bench(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name} {value:.6g} {unit}", flush=True)


class Runs:
    """The pveum runs of one node, whichever pveum it has: (exit code, seconds) each."""

    def __init__(self, node: SimNode, upstream: bool = False):
        self.node, self.upstream = node, upstream

    def clear(self) -> None:
        upnode.clear_calls(self.node) if self.upstream else self.node.clear_calls()

    def list(self) -> List[Tuple[int, float]]:
        if self.upstream:
            return [(r.rc, r.seconds) for r in upnode.runs(self.node)]
        return [(c["rc"], c.get("run_time", c["duration"])) for c in self.node.calls()]


def timed_bootstrap(config: Path, runs: Runs, prefix: str, label: str,
                    *args: str) -> Tuple[int, float]:
    """One bootstrap: its pveum runs (how many, how many failed, their summed time) and its wall
    time, which should be the runs' time and little else. Returns (runs, their time)."""
    runs.clear()
    start = time.monotonic()
    r = run_installed("pvemond-bootstrap", config, "--format", "json", *args)
    wall = time.monotonic() - start
    if r.returncode:
        raise SystemExit(f"bootstrap failed: {r.stderr}")
    done = runs.list()
    pveum = sum(sec for _, sec in done)
    bench(f"{prefix}_{label}_pveum_calls", len(done), "calls")
    bench(f"{prefix}_{label}_failed_pveum_calls", sum(1 for rc, _ in done if rc), "calls")
    bench(f"{prefix}_{label}_wall", wall, "s")
    bench(f"{prefix}_{label}_pveum_time", pveum, "s")
    if label == "fresh":  # the aim: the runs' time and little else
        bench(f"{prefix}_{label}_wall_limit", WALL_SHARE * pveum + WALL_SLACK, "s")
    return len(done), pveum


def node_site(work: Path, node: SimNode, name: str):
    """The node's pveproxy stand-in and a config for a daemon on it."""
    proxy = node.start_proxy()
    config = write_config(work / f"{name}.yaml", node, proxy.url, work / f"d{name}",
                          daemon={"log_level": "warning"},
                          claim={"listen": "127.0.0.1", "port": free_port()})
    (work / f"d{name}").mkdir()
    return proxy, config


def converge_figures(work: Path, pve: int, access_control: Optional[str] = None) -> None:
    name = f"pve{pve}" + (f"_ac{access_control.replace('.', '')}" if access_control else "")
    node = SimNode.create(work / f"node{name}", pve=pve, ca_bits=2048,
                          access_control=access_control)
    node.set(auth_fail_delay=0.0, delay=PVEUM_DELAY)
    runs = Runs(node)
    proxy, config = node_site(work, node, name)
    with proxy, Daemon(config, work / f"{name}.log", python=lone_interpreter(work)) as daemon:
        # rerun: a new secret for the existing token (--rotate); kept: a plain re-run, which
        # repairs drift and mints nothing.
        for label, args in (("fresh", ()), ("rerun", ("--rotate",)), ("kept", ())):
            timed_bootstrap(config, runs, name, label, *args)
        if access_control:
            return
        doctor_figures(config, node, pve)
        if pve == 9:
            status_during_converge(daemon, config, node)
            node.set(delay=0.0)
            daemon_figures(daemon)


def upstream_figures(work: Path) -> None:
    """The same bootstraps on genuine upstream pveum (its own start-up, no simulated delay)."""
    upstream = upnode.upstream_dir()
    if upstream is None:
        print(f"# upstream figures skipped: {upnode.ENV} is not set")
        return
    for gen in (g for g in upnode.GENERATIONS if g.name in ("8.4", "9.1")):
        name = f"upstream_{gen.name.replace('.', '')}"
        node = upnode.make_upstream_node(work / name, gen, upstream)
        proxy, config = node_site(work, node, name)
        runs = Runs(node, upstream=True)
        with proxy, Daemon(config, work / f"{name}.log"):
            calls, pveum = timed_bootstrap(config, runs, name, "fresh")
            timed_bootstrap(config, runs, name, "rerun", "--rotate")
        # the runs whole, as the daemon waits for them: logged time, then start and exit
        whole = pveum + calls * unlogged_start(node, name)
        bench(f"{name}_fresh_pveum_whole_time", whole, "s")
        bench(f"{name}_fresh_wall_limit_whole", WALL_SHARE * whole + WALL_SLACK, "s")


def unlogged_start(node: SimNode, name: str) -> float:
    """What a pveum run costs beyond its logged time (Pvemond::RunLog starts its clock once perl
    runs and stops it in an END block): the wrapper, perl's own start and exit. pveum's, not
    pvemond's, yet inside a bootstrap's wall time and outside its pveum_time."""
    extra = []
    for _ in range(UNLOGGED_RUNS):
        upnode.clear_calls(node)
        start = time.monotonic()
        subprocess.run([str(node.pveum), "role", "list", "--output-format", "json"],
                       capture_output=True, check=True)
        extra.append(time.monotonic() - start - upnode.runs(node)[0].seconds)
    bench(f"{name}_pveum_unlogged_per_run", statistics.median(extra) * 1000, "ms")
    return statistics.median(extra)


def status_during_converge(daemon: Daemon, config: Path, node: SimNode) -> None:
    """/v1/status while a bootstrap's pveum runs are in flight: status takes no lock."""
    client = Client(str(daemon.socket))
    node.clear_calls()
    node.set(delay=BUSY_DELAY)
    boot = threading.Thread(target=run_cli, args=("bootstrap", "--format", "json", "--token",
                                                  "busy"), kwargs={"config": config})
    boot.start()
    time.sleep(0.5)  # the bootstrap has started and its one pveum run (BUSY_DELAY s) is going
    samples = []
    while boot.is_alive() and len(samples) < STATUS_REQUESTS:
        t0 = time.perf_counter()
        client.status()
        samples.append((time.perf_counter() - t0) * 1000)
    in_flight = not node.calls()  # the run logs itself when it ends: all samples beside it
    boot.join()
    if not in_flight:
        raise SystemExit("the status samples were not all taken while pveum ran")
    node.set(delay=PVEUM_DELAY)
    samples.sort()
    bench("status_during_converge_samples", len(samples), "requests")
    bench("status_latency_p99", samples[max(0, int(len(samples) * 0.99) - 1)], "ms")


def doctor_figures(config: Path, node: SimNode, pve: int) -> None:
    """`pvemond doctor` on a healthy node: every check, the probe token's two pveum runs."""
    node.clear_calls()
    start = time.monotonic()
    r = run_cli("admin", "doctor", config=config)
    if r.returncode:
        raise SystemExit(f"doctor failed: {r.stdout}{r.stderr}")
    bench(f"pve{pve}_doctor_wall", time.monotonic() - start, "s")
    bench(f"pve{pve}_doctor_pveum_calls", len(node.calls()), "calls")


def lone_interpreter(work: Path) -> str:
    """A copy of this interpreter for the daemons whose memory is measured. PSS splits a page
    among the processes that map it. On a node pvemond's master and worker are the only python3
    processes (PVE's own daemons are Perl); here the bench and the simulator run the same
    interpreter and took their share of its pages off the daemon's figure (measured: 33.0-34.4
    MiB shared with them, 36.3 alone). A venv's interpreter finds its packages only where it is:
    there, the shared figure, said so."""
    if sys.prefix != sys.base_prefix:
        print("# daemon_idle_pss: a venv's interpreter, shared with the bench", flush=True)
        return sys.executable
    copy = work / "python3-alone"
    if not copy.exists():
        shutil.copy2(os.path.realpath(sys.executable), copy)
    return str(copy)


def daemon_figures(daemon: Daemon) -> None:
    client = Client(str(daemon.socket))
    client.status()
    samples = []
    for _ in range(STATUS_REQUESTS):
        start = time.perf_counter()
        client.status()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    bench("status_latency_idle_p50", statistics.median(samples), "ms")
    bench("status_latency_idle_p99", samples[int(len(samples) * 0.99) - 1], "ms")
    time.sleep(1)
    pids = daemon.pids()
    bench("daemon_idle_rss_sum", sum(_kib(pid, "status", "VmRSS:") for pid in pids) / 1024, "MiB")
    # PSS splits the pages master and worker share after fork: the memory they take in all.
    bench("daemon_idle_pss", sum(_kib(pid, "smaps_rollup", "Pss:") for pid in pids) / 1024, "MiB")
    # Its heaps alone: the file-backed rest (the interpreter, its libraries) is shared with the
    # system's other processes (libc, OpenSSL), so it moves with what else runs; this part does not.
    bench("daemon_idle_pss_anon",
          sum(_kib(pid, "smaps_rollup", "Pss_Anon:") for pid in pids) / 1024, "MiB")
    bench("daemon_processes", len(daemon.pids()), "processes")
    _daemon_split(daemon.proc.pid, pids)


def _daemon_split(master: int, pids: List[int]) -> None:
    """Where daemon_idle_pss goes, master and worker apart. Private_Dirty: pages a process holds
    alone, its own allocations and every shared page either process wrote after the fork (the
    writer gets a copy, so both then hold that page privately); Shared_Dirty: what the master
    loaded before the fork that both still share as one copy."""
    workers = [pid for pid in pids if pid != master]
    for role, group in (("master", [master]), ("worker", workers)):
        bench(f"daemon_idle_pss_{role}",
              sum(_kib(pid, "smaps_rollup", "Pss:") for pid in group) / 1024, "MiB")
        bench(f"daemon_idle_private_dirty_{role}",
              sum(_kib(pid, "smaps_rollup", "Private_Dirty:") for pid in group) / 1024, "MiB")
    bench("daemon_idle_shared_dirty", _kib(master, "smaps_rollup", "Shared_Dirty:") / 1024, "MiB")


def _kib(pid: int, file: str, key: str) -> int:
    for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def claim_round_trip(work: Path) -> None:
    """Code entered to config written: pvemond-claim against a waiting bootstrap, on loopback."""
    node = SimNode.create(work / "claimnode", pve=9, ca_bits=2048)
    node.set(auth_fail_delay=0.0)
    with node.start_proxy() as proxy:
        config = write_config(work / "claim.yaml", node, proxy.url, work / "dc",
                              daemon={"log_level": "warning"})
        (work / "dc").mkdir()
        with Daemon(config, work / "claim.log"):
            times = [_one_claim(config, work, f"c{n}") for n in range(CLAIMS)]
            bench("claim_round_trip", statistics.median(times), "ms")
            bench("claim_round_trip_min", min(times), "ms")
            bench("claim_client_start", _client_start(config), "ms")
            bench("claim_stdlib_floor", _stdlib_floor(), "ms")
            orphan_cleanup(config, node)


def run_installed(name: str, config: Path, *args: str) -> subprocess.CompletedProcess:
    """Console script `name` as the package installs it (debian/launchers.py: python3 -S,
    importing from the package's directory), not `python -m`, whose site and runpy a user's
    command never pays. The launcher goes beside the config; the node's libraries (PyYAML)
    come from where this interpreter has them, as the package's come from dist-packages."""
    script = config.parent / name
    if not script.exists():
        entries = (REPO / "setup.py").read_text()  # its console_scripts, "name = module:func"
        target = dict(re.findall(r'"(pvemond[\w-]*) = ([\w.:]+)"', entries))[name]
        script.write_text(launchers.launcher(name, target, str(REPO)))
    env = env_for(config)
    env["PYTHONPATH"] += os.pathsep + str(Path(yaml.__file__).parent.parent)
    return subprocess.run([sys.executable, launchers.FLAGS, str(script), *args], env=env,
                          capture_output=True, text=True, timeout=120, cwd=config.parent)


def _one_claim(config: Path, work: Path, token: str) -> float:
    port = free_port()
    boot = Bootstrap(config, "--listen", "127.0.0.1", "--port", str(port), "--token", token)
    offer = boot.wait_for("claim_open")
    start = time.monotonic()
    r = run_installed("pvemond-claim", config, f"127.0.0.1:{port}", offer["code"],
                      "--pin", offer["pin"], "--format", "pve-exporter",
                      "-o", str(work / f"{token}.yml"))
    elapsed = (time.monotonic() - start) * 1000
    if r.returncode or boot.finish():
        raise SystemExit(f"claim failed: {r.stderr}")
    return elapsed


def _client_start(config: Path) -> float:
    """pvemond-claim's own start (interpreter and imports, no network)."""
    return _best_of(lambda: run_installed("pvemond-claim", config, "--help"))


def _stdlib_floor() -> float:
    """A bare python3 with the stdlib modules any claim client of this shape needs: the part of
    the round trip no change of ours can cut."""
    return _best_of(lambda: subprocess.run(
        [sys.executable, "-c", "import argparse, hashlib, json, socket, ssl"], check=True))


def _best_of(run, runs: int = 10) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.monotonic()
        run()
        best = min(best, (time.monotonic() - start) * 1000)
    return best


def orphan_cleanup(config: Path, node: SimNode) -> None:
    """kill -9 of a bootstrap whose claim waits -> its token revoked and the name free again."""
    boot = Bootstrap(config, "--listen", "127.0.0.1", "--port", str(free_port()), "--token", "orphan")
    boot.wait_for("claim_open")
    start = time.monotonic()
    os.kill(boot.proc.pid, 9)
    boot.proc.wait()
    state = Path(config.parent / "dc" / "state" / "state.json")
    while "!orphan" in node.user_cfg() or '"orphan"' in state.read_text():
        if time.monotonic() - start > 60:
            raise SystemExit("the orphaned token was not revoked within 60 s")
        time.sleep(0.02)
    bench("orphan_cleanup_s", time.monotonic() - start, "s")


LISTENER = """
import sys, ipaddress
from pvemond.claim import ClaimListener
l = ClaimListener(b"{}", None, sys.argv[1], sys.argv[2], host="127.0.0.1", port=0,
                  ttl=600, max_attempts=10**9, rate=1e9, burst=10**9, max_per_source=64)
print(l.bind()[1], flush=True)
l.serve()
"""


def flood_figures(work: Path, requests: int = 2000, threads: int = 8) -> None:
    """The listener under a bounded flood of wrong codes (never burned here, to keep it busy)."""
    cert = work / "claimnode" / "etc" / "pve" / "local"
    proc = subprocess.Popen([sys.executable, "-c", LISTENER, str(cert / "pve-ssl.pem"),
                             str(cert / "pve-ssl.key")], stdout=subprocess.PIPE, text=True,
                            env=env_for(work / "claim.yaml"), stderr=(work / "flood.err").open("w"))
    first = proc.stdout.readline()
    if not first.strip().isdigit():
        raise SystemExit(f"the claim listener did not start: {(work / 'flood.err').read_text()}")
    port = int(first)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    body = b'{"code": "2222-3333-4444"}'
    req = (b"POST /v1/claim HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)) + body
    answered = []

    def worker(n: int) -> None:
        for _ in range(n):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with ctx.wrap_socket(raw) as s:
                    s.sendall(req)
                    if s.recv(64).startswith(b"HTTP/1.1 "):
                        answered.append(1)

    cpu0 = _cpu_seconds(proc.pid)
    start = time.monotonic()
    pool = [threading.Thread(target=worker, args=(requests // threads,)) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.monotonic() - start
    bench("claim_flood_answered", len(answered), "requests")
    bench("claim_flood_rate", len(answered) / wall, "requests/s")
    bench("claim_flood_listener_cpu", _cpu_seconds(proc.pid) - cpu0, "s")
    proc.terminate()
    proc.wait(timeout=10)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- claim during a slowloris (issue 10): one self-contained block ------------------------------

SLOWLORIS_LISTENER = """
import sys
from pvemond.claim import ClaimListener
l = ClaimListener(b'{"ok": true}', sys.argv[3], sys.argv[1], sys.argv[2], host="127.0.0.1",
                  port=0, ttl=600, allow=["127.0.0.1/32"], grace=0.1)
print(l.bind()[1], flush=True)
print(l.serve().status, flush=True)
"""


def _slowloris(port: int, count: int, stop: threading.Event, opened: list) -> None:
    """Another host (127.0.0.2) keeps `count` connections open: it reopens each one the listener
    closes at once and dribbles a byte on every open one twice a second."""
    import selectors
    sel = selectors.DefaultSelector()

    def open_one() -> None:
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        sel.register(s, selectors.EVENT_READ)
        opened.append(1)

    for _ in range(count):
        open_one()
    next_drip = time.monotonic() + 0.5
    while not stop.is_set():
        for key, _ in sel.select(timeout=0.05):
            sel.unregister(key.fileobj)
            key.fileobj.close()  # reset by the listener (or EOF): reopen, as a slowloris does
            open_one()
        if time.monotonic() >= next_drip:
            next_drip += 0.5
            for key in list(sel.get_map().values()):
                try:
                    key.fileobj.send(b"\x16")
                except OSError:
                    pass  # not connected yet, or reset: the select loop reopens it
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    sel.close()


def _claim_once(port: int, code: str) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    body = b'{"code": "%s"}' % code.encode()
    req = (b"POST /v1/claim HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)) + body
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with ctx.wrap_socket(raw) as s:
            s.sendall(req)
            return s.recv(64).decode("latin-1").split("\r\n")[0]


def slowloris_figures(work: Path, connections: int = 200) -> None:
    """A claim from the allowed host (--allow 127.0.0.1/32) while 127.0.0.2 holds
    `connections` connections; and the listener's CPU under that flood."""
    from pvemond.codes import new_code
    code, cert = new_code(time.time() + 600), work / "claimnode" / "etc" / "pve" / "local"
    proc = subprocess.Popen([sys.executable, "-c", SLOWLORIS_LISTENER, str(cert / "pve-ssl.pem"),
                             str(cert / "pve-ssl.key"), code], stdout=subprocess.PIPE, text=True,
                            env=env_for(work / "claim.yaml"),
                            stderr=(work / "slowloris.err").open("w"))
    first = proc.stdout.readline()
    if not first.strip().isdigit():
        err = (work / "slowloris.err").read_text()
        raise SystemExit(f"the claim listener did not start: {err}")
    port, stop, opened = int(first), threading.Event(), []
    hostile = threading.Thread(target=_slowloris, args=(port, connections, stop, opened))
    hostile.start()
    time.sleep(1.0)  # the flood is at full strength
    cpu0, wall0, opened0 = _cpu_seconds(proc.pid), time.monotonic(), len(opened)
    time.sleep(3.0)
    cpu = (_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - wall0)
    rate = (len(opened) - opened0) / (time.monotonic() - wall0)
    start = time.monotonic()
    status = _claim_once(port, code)
    elapsed = (time.monotonic() - start) * 1000
    stop.set()
    hostile.join()
    outcome = proc.stdout.readline().strip()
    proc.wait(timeout=30)
    if not status.startswith("HTTP/1.1 200") or outcome != "claimed":
        raise SystemExit(f"the claim during the slowloris failed: {status!r}, {outcome!r}")
    bench("claim_during_slowloris_ms", elapsed, "ms")
    bench("claim_slowloris_listener_cpu", cpu, "cpu-s/s")
    bench("claim_slowloris_reconnects", rate, "connections/s")


def main() -> int:
    print(f"# python {sys.version.split()[0]} at {sys.executable}; pveum delay {PVEUM_DELAY} s")
    # The package ships byte-compiled modules (py3compile); a source tree edited since its last
    # compile would pay the compiler on every start (PYTHONDONTWRITEBYTECODE is common here).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "pvemond")], check=True,
                   stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="pvemond-bench-") as tmp:
        for pve in (9, 8):
            converge_figures(Path(tmp), pve)
        converge_figures(Path(tmp), 9, access_control="9.0.5")
        upstream_figures(Path(tmp))
        claim_round_trip(Path(tmp))
        flood_figures(Path(tmp))
        slowloris_figures(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
