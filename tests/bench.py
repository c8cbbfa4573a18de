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


def timed_bootstrap(config: Path, node: SimNode):
    node.clear_calls()
    start = time.monotonic()
    r = run_cli("bootstrap", "--format", "json", config=config)
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
            for label in ("fresh", "rerun"):
                calls, wall = timed_bootstrap(config, node)
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


def main() -> int:
    print(f"# python {sys.version.split()[0]} at {sys.executable}; pveum delay {PVEUM_DELAY} s")
    with tempfile.TemporaryDirectory(prefix="pvemond-bench-") as tmp:
        for pve in (9, 8):
            converge_figures(Path(tmp), pve)
        claim_round_trip(Path(tmp))
        flood_figures(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
