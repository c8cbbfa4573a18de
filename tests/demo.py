"""`make demo`: the whole flow on a simulated Proxmox VE node, with the real daemon under gunicorn.

Everything lives in a temporary directory and is removed at the end.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from harness import Daemon, run_cli, write_config
from pvesim.node import SimNode


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(cmd: str, result) -> None:
    print(f"root@pve1:~# {cmd}")
    sys.stdout.write(result.stderr + result.stdout)
    if result.returncode:
        print(f"(exit {result.returncode})")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="pvemond-demo-") as tmp:
        work = Path(tmp)
        say("a simulated Proxmox VE 9 node: pveum, pveproxy on HTTPS, /etc/pve")
        node = SimNode.create(work / "node", pve=9, ca_bits=2048)
        node.set(auth_fail_delay=0.0)
        with node.start_proxy() as proxy:
            config = write_config(work / "pvemond.yaml", node, proxy.url, work,
                                  daemon={"log_level": "info"})
            print(f"node {node.nodename}, pveproxy stand-in at {proxy.url}")
            with Daemon(config, work / "pvemond.log"):
                print("pvemond daemon running under gunicorn on a root-only unix socket")
                return flow(config, node, work)


def flow(config: Path, node, work: Path) -> int:
    say("what would change (nothing is written)")
    show("pvemond-bootstrap --dry-run", run_cli("bootstrap", "--dry-run", config=config))
    say("the first run creates the monitoring access and mints a token")
    out = work / "prometheus" / "pve.yml"
    out.parent.mkdir()
    first = run_cli("bootstrap", "--format", "pve-exporter", "-o", str(out), config=config)
    show(f"pvemond-bootstrap --format pve-exporter -o {out.name}", first)
    print(out.read_text().replace(_secret_of(out), "<secret, shown once>"))
    say("what pveum wrote to /etc/pve/user.cfg")
    print(node.user_cfg())
    say("someone disables the user; the next run names it and repairs it")
    node.run_pveum("user", "modify", "monitoring@pve", "--enable", "0")
    again = run_cli("bootstrap", "--format", "pve-exporter", "-o", str(out), config=config)
    show("pvemond-bootstrap --format pve-exporter -o pve.yml", again)
    calls = node.calls()
    print(f"\npveum calls in total: {len(calls)}")
    return first.returncode or again.returncode


def _secret_of(path: Path) -> str:
    line = next(ln for ln in path.read_text().splitlines() if "token_value" in ln)
    return line.split(":", 1)[1].strip().strip('"')


if __name__ == "__main__":
    sys.exit(main())
