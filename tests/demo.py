"""`make demo`: the whole flow on a simulated Proxmox VE node, with the real daemon under gunicorn.

The node and the monitoring host are two network namespaces joined by a virtual cable; the token
secret crosses it once, through a claim code. Everything is removed at the end.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from harness import (MON_IP, NODE_IP, Bootstrap, Daemon, cli, env_for, proxy_on, run_cli,
                     two_hosts, write_config)
from pvesim.testing import make_node

BOLD, OFF = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")


def say(text: str) -> None:
    print(f"\n{BOLD}== {text}{OFF}", flush=True)


def show(prompt: str, cmd: str, result) -> None:
    print(f"{prompt}# {cmd}")
    sys.stdout.write(result.stderr + result.stdout)
    if result.returncode:
        print(f"(exit {result.returncode})")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="pvemond-demo-") as tmp, two_hosts() as hosts:
        work = Path(tmp)
        say(f"a simulated Proxmox VE 9 node pve1 ({NODE_IP}) and a monitoring host ({MON_IP})")
        node = make_node(work / "node", pve=9, ip=NODE_IP)
        node.set(auth_fail_delay=0.0, storages=[{"storage": "local", "node": "pve1"}],
                 guests=[{"vmid": 100, "name": "web", "type": "qemu", "node": "pve1"}])
        with proxy_on(hosts["node"], node.root) as proxy:
            config = write_config(work / "pvemond.yaml", node, proxy, work,
                                  daemon={"log_level": "warning"}, claim={"ttl": 120})
            with Daemon(config, work / "pvemond.log", prefix=hosts["node"]):
                print("pveproxy stand-in on :8006, pvemond under gunicorn on a root-only socket")
                return flow(config, node, hosts, work)


def flow(config: Path, node, hosts, work: Path) -> int:
    say("on the node: what would change (nothing is written)")
    show("root@pve1:~", "pvemond-bootstrap --dry-run",
         run_cli("bootstrap", "--dry-run", config=config, prefix=hosts["node"]))
    say("on the node: converge, mint, verify, and offer the secret once through a claim code")
    print("root@pve1:~# pvemond-bootstrap")
    boot = Bootstrap(config, prefix=hosts["node"])
    offer = boot.wait_for("claim_open")
    print(f"  claim code  {offer['code']}   single use\n  pin         {offer['pin']}")
    say("on the monitoring host: redeem the code over pinned TLS, write pve.yml, check it")
    out = work / "monitoring" / "pve.yml"
    out.parent.mkdir()
    claim = subprocess.run(cli("claim", f"{NODE_IP}:8116", offer["code"], "--pin", offer["pin"],
                               "--format", "pve-exporter", "-o", str(out), "--check",
                               prefix=hosts["mon"]), env=env_for(config), capture_output=True,
                           text=True, timeout=60)
    show("root@monitoring:~", f"pvemond-claim {NODE_IP}:8116 {offer['code']} --pin sha256:… "
         "--format pve-exporter -o pve.yml --check", claim)
    rc = boot.finish()
    say("back on the node, bootstrap reports")
    sys.stdout.write(boot.stderr)
    for e in boot.events:
        if e["event"] in ("step", "verified", "claimed"):
            print(f"  {e['event']}: {e.get('subject', '')} {e.get('result', e.get('peer', ''))}")
    say("what pveum wrote to /etc/pve/user.cfg")
    print(node.user_cfg())
    say("the written pve.yml (secret masked)")
    print("\n".join(ln if "token_value" not in ln else "  token_value: <secret>"
                    for ln in out.read_text().splitlines()))
    return rc or claim.returncode or admin_view(config, node, hosts)


def admin_view(config: Path, node, hosts) -> int:
    """What the admin sees afterwards: a break, doctor naming it, --fix, all green."""
    say("on the node: the tokens pvemond knows (who claimed them, never a secret)")
    show("root@pve1:~", "pvemond tokens", run_cli("admin", "tokens", config=config, prefix=hosts["node"]))
    say("a plain re-run keeps the delivered token: the monitoring host's secret stays valid")
    show("root@pve1:~", "pvemond-bootstrap", run_cli("bootstrap", config=config, prefix=hosts["node"]))
    say("someone turns privilege separation on by hand; pvemond doctor names it, --fix repairs it")
    node.run_pveum("user", "token", "modify", "monitoring@pve", "monitoring", "--privsep", "1")
    print("root@pve1:~# pveum user token modify monitoring@pve monitoring --privsep 1")
    show("root@pve1:~", "pvemond doctor", run_cli("admin", "doctor", config=config, prefix=hosts["node"]))
    fixed = run_cli("admin", "doctor", "--fix", config=config, prefix=hosts["node"])
    show("root@pve1:~", "pvemond doctor --fix", fixed)
    return fixed.returncode


if __name__ == "__main__":
    sys.exit(main())
