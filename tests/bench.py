"""`make bench`: measured figures, one per line as `BENCH <name> <value> <unit>`.

pveum costs ~0.5-1 s of Perl start-up on a real node; the simulator adds 0.7 s per call so the
wall times here are what an admin would wait, and the call counts are counted, not hoped.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import Daemon, run_cli, write_config
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
                              daemon={"log_level": "warning"})
        (work / f"d{pve}").mkdir()
        with Daemon(config, work / f"pvemond{pve}.log") as daemon:
            for label in ("fresh", "rerun"):
                calls, wall = timed_bootstrap(config, node)
                bench(f"pve{pve}_{label}_pveum_calls", calls, "calls")
                bench(f"pve{pve}_{label}_wall", wall, "s")
            if pve == 9:
                node.set(delay=0.0)
                daemon_figures(daemon)


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
    rss = sum(_rss_kib(pid) for pid in daemon.pids())
    bench("daemon_idle_rss", rss / 1024, "MiB")
    bench("daemon_processes", len(daemon.pids()), "processes")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    print(f"# python {sys.version.split()[0]} at {sys.executable}; pveum delay {PVEUM_DELAY} s")
    with tempfile.TemporaryDirectory(prefix="pvemond-bench-") as tmp:
        for pve in (9, 8):
            converge_figures(Path(tmp), pve)
    return 0


if __name__ == "__main__":
    sys.exit(main())
