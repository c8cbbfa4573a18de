"""`make bench`: measured figures, one per line as `BENCH <name> <value> <unit>`.

pveum costs ~0.5-1 s of Perl start-up on a real node; the simulator adds 0.7 s per call so the
wall times here are what an admin would wait, and the call counts are counted, not hoped.
"""
from __future__ import annotations

import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness import Bootstrap, Daemon, env_for, free_port, run_cli, write_config
from pvemond.client import Client
from pvesim.node import SimNode

PVEUM_DELAY = 0.7
STATUS_REQUESTS = 300


def bench(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name} {value:.6g} {unit}", flush=True)


def timed_bootstrap(config: Path, node: SimNode, *args: str):
    node.clear_calls()
    start = time.monotonic()
    r = run_cli("bootstrap", "--format", "json", *args, config=config)
    if r.returncode:
        raise SystemExit(f"bootstrap failed: {r.stderr}")
    return len(node.calls()), time.monotonic() - start


def converge_figures(work: Path, pve: int) -> None:
    node = SimNode.create(work / f"node{pve}", pve=pve, ca_bits=2048)
    node.set(auth_fail_delay=0.0, delay=PVEUM_DELAY)
    with node.start_proxy() as proxy:
        config = write_config(work / f"pvemond{pve}.yaml", node, proxy.url, work / f"d{pve}",
                              daemon={"log_level": "warning"},
                              claim={"listen": "127.0.0.1", "port": free_port()})
        (work / f"d{pve}").mkdir()
        with Daemon(config, work / f"pvemond{pve}.log") as daemon:
            # rerun: a new secret for the existing token (--rotate); kept: a plain re-run, which
            # repairs drift and mints nothing.
            for label, args in (("fresh", ()), ("rerun", ("--rotate",)), ("kept", ())):
                calls, wall = timed_bootstrap(config, node, *args)
                bench(f"pve{pve}_{label}_pveum_calls", calls, "calls")
                bench(f"pve{pve}_{label}_wall", wall, "s")
            doctor_figures(config, node, pve)
            if pve == 9:
                node.set(delay=0.0)
                daemon_figures(daemon)


def doctor_figures(config: Path, node: SimNode, pve: int) -> None:
    """`pvemond doctor` on a healthy node: every check, the probe token's two pveum runs."""
    node.clear_calls()
    start = time.monotonic()
    r = run_cli("admin", "doctor", config=config)
    if r.returncode:
        raise SystemExit(f"doctor failed: {r.stdout}{r.stderr}")
    bench(f"pve{pve}_doctor_wall", time.monotonic() - start, "s")
    bench(f"pve{pve}_doctor_pveum_calls", len(node.calls()), "calls")


def daemon_figures(daemon: Daemon) -> None:
    client = Client(str(daemon.socket))
    client.status()
    samples = []
    for _ in range(STATUS_REQUESTS):
        start = time.perf_counter()
        client.status()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    bench("status_latency_p50", statistics.median(samples), "ms")
    bench("status_latency_p99", samples[int(len(samples) * 0.99) - 1], "ms")
    time.sleep(1)
    pids = daemon.pids()
    bench("daemon_idle_rss_sum", sum(_kib(pid, "status", "VmRSS:") for pid in pids) / 1024, "MiB")
    # PSS splits the pages master and worker share after fork: the memory they take in all.
    bench("daemon_idle_pss", sum(_kib(pid, "smaps_rollup", "Pss:") for pid in pids) / 1024, "MiB")
    bench("daemon_processes", len(daemon.pids()), "processes")


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
            boot = Bootstrap(config, "--listen", "127.0.0.1", "--port", "18116")
            offer = boot.wait_for("claim_open")
            start = time.monotonic()
            r = run_cli("claim", "127.0.0.1:18116", offer["code"], "--pin", offer["pin"],
                        "--format", "pve-exporter", "-o", str(work / "pve.yml"), config=config)
            bench("claim_round_trip", (time.monotonic() - start) * 1000, "ms")
            if r.returncode or boot.finish():
                raise SystemExit(f"claim failed: {r.stderr}")
            orphan_cleanup(config, node)


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
from pvemond.codes import new_code
l = ClaimListener(b"{}", new_code(), sys.argv[1], sys.argv[2], host="127.0.0.1", port=0,
                  ttl=600, max_attempts=10**9, rate=1e9, burst=10**9)
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
    code, cert = new_code(), work / "claimnode" / "etc" / "pve" / "local"
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
    with tempfile.TemporaryDirectory(prefix="pvemond-bench-") as tmp:
        for pve in (9, 8):
            converge_figures(Path(tmp), pve)
        claim_round_trip(Path(tmp))
        flood_figures(Path(tmp))
        slowloris_figures(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
