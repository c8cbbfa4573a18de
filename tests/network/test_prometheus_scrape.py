"""Prometheus scrapes a simulated three-node cluster with no hand edit: the real Prometheus and
the real prometheus-pve-exporter (non-root) on the monitoring host, pvemond-claim writing
pve.yml, the file_sd target file and the scrape job, and reloading Prometheus; its --check sees
every node's target up."""
from __future__ import annotations

import json
import subprocess
import sys

from harness import (NODE_IP, PROMETHEUS_YML, Bootstrap, Daemon, cli, env_for, open_dir,
                     prometheus_on, query, run_exporter, run_on, system_user, wait_for)

USER = "pvemond-exporter"


def test_prometheus_scrapes_every_node_with_no_hand_edit(cluster3, tmp_path):
    c = cluster3
    uid, gid = system_user(USER)
    with open_dir() as etc:
        pve_yml, sd_dir, prom_yml = etc / "pve.yml", etc / "file_sd", etc / "prometheus.yml"
        prom_yml.write_text(PROMETHEUS_YML)
        with Daemon(c.config, tmp_path / "daemon.log", prefix=c.hosts["node"]), \
                prometheus_on(c.hosts["mon"], prom_yml, tmp_path / "tsdb") as prom:
            boot = Bootstrap(c.config, "--port", "8116", prefix=c.hosts["node"])
            offer = boot.wait_for("claim_open")
            claim = subprocess.Popen(
                cli("claim", f"https://{NODE_IP}:8116", offer["code"], "--pin", offer["pin"],
                    "--format", "pve-exporter", "-o", str(pve_yml), "--file-sd", str(sd_dir),
                    "--prometheus-config", str(prom_yml), "--prometheus-pid", str(prom.pid),
                    "--owner", USER, "--group", USER, "--check", "--check-wait", "90",
                    prefix=c.hosts["mon"]),
                env=env_for(c.config), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
            # the admin's one step: (re)start the exporter once pve.yml holds the cluster
            assert wait_for(lambda: pve_yml.exists() and "prod:" in pve_yml.read_text()), \
                claim.communicate(timeout=30)
            with run_exporter(c.hosts["mon"], pve_yml, USER):
                out, err = claim.communicate(timeout=150)
                assert claim.returncode == 0, err
                assert boot.finish() == 0
                up = wait_for(lambda: (lambda q: len(q) == 3 and set(q.values()) == {"1"} and q)(
                    query(c.hosts["mon"], 'up{job="pvemond-pve"}')))
                assert {dict(k)["instance"] for k in up} == set(c.names), up
                for name in c.names:
                    series = wait_for(lambda: query(c.hosts["mon"],
                                                    f'pve_up{{id="node/{name}"}}'))
                    assert series and set(series.values()) == {"1"}, (name, series)
        # what was written, and how
        assert prom_yml.read_text().startswith(PROMETHEUS_YML)
        assert "job_name: pvemond-pve" in prom_yml.read_text()
        assert (pve_yml.stat().st_uid, pve_yml.stat().st_gid) == (uid, gid)
        assert pve_yml.stat().st_mode & 0o077 in (0, 0o040)
        targets = json.loads((sd_dir / "prod.yml").read_text().split("\n", 1)[1])
        assert [t["labels"]["__param_target"] for t in targets] == c.ips
        assert "added the job pvemond-pve" in err and f"pid {prom.pid}" in err
        assert "all 3 node(s) of prod: up" in err
        assert offer["code"] not in err and "token_value" not in err


def test_a_second_claim_adds_no_second_job(cluster3, tmp_path):
    """Idempotent: the job is there, a claim only rewrites the target file (no Prometheus
    running: the reload says so)."""
    c = cluster3
    with open_dir() as etc:
        prom_yml = etc / "prometheus.yml"
        prom_yml.write_text(PROMETHEUS_YML)
        with Daemon(c.config, tmp_path / "daemon.log", prefix=c.hosts["node"]):
            results = []
            for args in ((), ("--rotate",)):
                boot = Bootstrap(c.config, "--port", "8116", *args, prefix=c.hosts["node"])
                offer = boot.wait_for("claim_open")
                results.append(run_on(
                    c.hosts["mon"], sys.executable, "-m", "pvemond.cli.claim", f"{NODE_IP}:8116",
                    offer["code"], "--pin", offer["pin"], "-o", str(etc / "pve.yml"),
                    "--prometheus-config", str(prom_yml), config=c.config))
                assert results[-1].returncode == 0, results[-1].stderr
                assert boot.finish() == 0
        first, second = results
        assert "not running" in first.stderr and "added the job" in first.stderr
        assert "nothing added" in second.stderr
        assert prom_yml.read_text().count("job_name: pvemond-pve") == 1
        assert (etc / "file_sd" / "pvemond" / "prod.yml").exists()
