"""`make demo`: the whole flow on a simulated three-node Proxmox VE cluster, with the real daemon
under gunicorn, and on the monitoring host the real Prometheus and prometheus-pve-exporter.

The cluster and the monitoring host are two network namespaces joined by a virtual cable; the
token secret crosses it once, through a claim code. It ends with Prometheus scraping every node,
reached with no hand edit. Everything is removed at the end.
"""
from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import (CLUSTER_IPS, MON_IP, NODE_IP, PROMETHEUS_YML, Bootstrap, Daemon, cli,
                     cluster_proxies, env_for, open_dir, prometheus_on, query, run_cli,
                     run_exporter, system_user, two_hosts, wait_for, write_config)
from pvesim.testing import make_node

EXPORTER_USER = "pvemond-exporter"  # the exporter runs as its own user, as in the field

BOLD, OFF = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")


def say(text: str) -> None:
    print(f"\n{BOLD}== {text}{OFF}", flush=True)


def show(prompt: str, cmd: str, result) -> None:
    print(f"{prompt}# {cmd}")
    sys.stdout.write(result.stderr + result.stdout)
    if result.returncode:
        print(f"(exit {result.returncode})")


def main() -> int:
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pvemond-demo-")))
        hosts = stack.enter_context(two_hosts(CLUSTER_IPS))
        say(f"a simulated Proxmox VE 9 cluster prod: pve1-pve3 ({', '.join(CLUSTER_IPS)}), "
            f"and a monitoring host ({MON_IP}) with Prometheus")
        node = make_node(work / "node", pve=9, ip=NODE_IP, cluster="prod", all_online=True)
        node.set(auth_fail_delay=0.0,
                 storages=[{"storage": "local", "node": n} for n in ("pve1", "pve2", "pve3")],
                 guests=[{"vmid": 100, "name": "web", "type": "qemu", "node": "pve1"},
                         {"vmid": 101, "name": "db", "type": "lxc", "node": "pve2"}])
        urls = stack.enter_context(cluster_proxies(hosts["node"], node))
        config = write_config(work / "pvemond.yaml", node, urls["pve1"], work,
                              daemon={"log_level": "warning"}, claim={"ttl": 120})
        stack.enter_context(Daemon(config, work / "pvemond.log", prefix=hosts["node"]))
        print("a pveproxy stand-in on each node's :8006, pvemond under gunicorn on pve1's "
              "root-only socket")
        etc = stack.enter_context(open_dir())  # the monitoring host's /etc/prometheus
        (etc / "prometheus.yml").write_text(PROMETHEUS_YML)
        prom = stack.enter_context(prometheus_on(hosts["mon"], etc / "prometheus.yml",
                                                 work / "tsdb"))
        print("Prometheus runs with its own prometheus.yml; nothing in it knows the cluster")
        return flow(config, node, hosts, etc, prom.pid)


def flow(config: Path, node, hosts, etc: Path, prom_pid: int) -> int:
    say("on the node: what would change (nothing is written)")
    show("root@pve1:~", "pvemond-bootstrap --dry-run",
         run_cli("bootstrap", "--dry-run", config=config, prefix=hosts["node"]))
    say("on the node: converge, mint, verify, and offer the secret once through a claim code")
    print("root@pve1:~# pvemond-bootstrap")
    boot = Bootstrap(config, prefix=hosts["node"])
    offer = boot.wait_for("claim_open")
    print(f"  claim code  {offer['code']}   single use\n  pin         {offer['pin']}")
    say("on the monitoring host: redeem the code over pinned TLS; write pve.yml, the file_sd "
        "targets and the scrape job; reload Prometheus; check")
    system_user(EXPORTER_USER)
    pve_yml = etc / "pve.yml"
    claim = subprocess.Popen(
        cli("claim", f"{NODE_IP}:8116", offer["code"], "--pin", offer["pin"], "--format",
            "pve-exporter", "-o", str(pve_yml), "--prometheus-config", str(etc / "prometheus.yml"),
            "--prometheus-pid", str(prom_pid), "--owner", EXPORTER_USER, "--group", EXPORTER_USER,
            "--check", prefix=hosts["mon"]),
        env=env_for(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The exporter reads its modules at start: it starts once pve.yml holds the cluster.
    wait_for(lambda: pve_yml.exists() and "prod:" in pve_yml.read_text(), timeout=60)
    with run_exporter(hosts["mon"], pve_yml, EXPORTER_USER):
        out, err = claim.communicate(timeout=150)
        show("root@monitoring:~", f"pvemond-claim {NODE_IP}:8116 {offer['code']} --pin sha256:… "
             "--format pve-exporter -o /etc/prometheus/pve.yml --prometheus-config "
             f"/etc/prometheus/prometheus.yml --owner {EXPORTER_USER} --check",
             subprocess.CompletedProcess([], claim.returncode, out, err))
        rc = boot.finish()
        say("back on the node, bootstrap reports")
        sys.stdout.write(boot.stderr)
        say("Prometheus's view (its HTTP API): every node of prod scraped through the exporter, "
            "TLS verified")
        up = prometheus_view(hosts["mon"])
    say("the written pve.yml (secret masked)")
    print("\n".join(ln if "token_value" not in ln else "  token_value: <secret>"
                    for ln in pve_yml.read_text().splitlines()))
    say("what pveum wrote to /etc/pve/user.cfg")
    print(node.user_cfg())
    return rc or claim.returncode or (0 if up else 1) or admin_view(config, node, hosts)


def prometheus_view(mon) -> bool:
    """up and pve_up per node, as Prometheus has them; True when every node is up."""
    up = wait_for(lambda: (lambda q: len(q) == 3 and set(q.values()) == {"1"} and q)(
        query(mon, 'up{job="pvemond-pve"}')), timeout=60) or query(mon, 'up{job="pvemond-pve"}')
    for labels, value in sorted(up.items(), key=lambda kv: dict(kv[0])["instance"]):
        name = dict(labels)["instance"]
        pve_up = query(mon, f'pve_up{{id="node/{name}"}}')
        print(f"  up{{instance=\"{name}\", cluster=\"{dict(labels).get('cluster')}\"}} {value}"
              f"    pve_up{{id=\"node/{name}\"}} {next(iter(pve_up.values()), 'absent')}")
    return len(up) == 3 and set(up.values()) == {"1"}


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
