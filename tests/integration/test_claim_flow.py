"""The claim hand-off end to end on loopback: bootstrap in claim mode, pvemond-claim redeems.
(The same across two network namespaces is in tests/network.)"""
from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time

import pytest
import yaml

from harness import Bootstrap, Daemon, cli, env_for, free_port, run_cli, write_config
from pvemond import codes, tlspin
from pvemond.client import Client
from pvemond.pve import strictca


@pytest.fixture
def claim_args():
    return ["--listen", "127.0.0.1", "--port", str(free_port()), "--ttl", "60"]


def test_claim_writes_the_config_and_keeps_the_token(daemon, node, config, claim_args, tmp_path):
    b = Bootstrap(config, *claim_args)
    offer = b.wait_for("claim_open")
    out = tmp_path / "pve.yml"
    r = run_cli("claim", f"127.0.0.1:{offer['port']}", offer["code"], "--pin", offer["pin"],
                "--format", "pve-exporter", "-o", str(out), config=config)
    assert r.returncode == 0, r.stderr
    assert b.finish() == 0, b.stderr
    assert b.events[-1]["event"] == "claimed" and b.events[-1]["peer"] == "127.0.0.1"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    module = yaml.safe_load(out.read_text())["pve1"]
    assert module["token_name"] == "monitoring" and len(module["token_value"]) == 36
    assert "monitoring@pve!monitoring" in node.user_cfg()
    tokens = {t["name"]: t for t in Client(str(daemon.socket)).tokens()["tokens"]}
    assert tokens["monitoring"]["delivered_to"] == "claim from 127.0.0.1"
    # The secret is in the chosen output and PVE's own token.cfg; no log, no other file.
    secret = module["token_value"].encode()
    daemon.stop()
    token_cfg = node.pve_dir / "priv" / "token.cfg"
    holders = [p for p in tmp_path.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert sorted(holders) == sorted([out, token_cfg])
    assert secret.decode() not in r.stderr + r.stdout + b.stderr + json.dumps(b.events)


# Modules a claim must not load: each was once on its path and cost its start-up (issue 13's
# measurements). `python3 -X importtime` shows who brings one back.
HEAVY = ("typing", "shutil", "tempfile", "contextlib", "dataclasses", "http.client", "email",
         "urllib.parse", "ipaddress", "encodings.idna", "threading")
RECORD_MODULES = ("import atexit, sys; out = open(sys.argv.pop(1), 'w'); "
                  "atexit.register(lambda: print(*sorted(sys.modules), file=out)); "
                  "from pvemond.cli.claim import main; sys.exit(main())")


def test_a_claim_loads_none_of_the_heavy_modules(daemon, node, config, claim_args, tmp_path):
    b = Bootstrap(config, *claim_args)
    offer = b.wait_for("claim_open")
    loaded = tmp_path / "modules"
    r = subprocess.run([sys.executable, "-c", RECORD_MODULES, str(loaded),
                        f"127.0.0.1:{offer['port']}", offer["code"], "--pin", offer["pin"],
                        "-o", str(tmp_path / "pve.yml")], env=env_for(config),
                       capture_output=True, text=True, timeout=60, cwd=config.parent)
    assert r.returncode == 0, r.stderr
    assert b.finish() == 0, b.stderr
    modules = set(loaded.read_text().split())
    assert "pvemond.cli.claim" in modules and "ssl" in modules
    assert sorted(modules.intersection(HEAVY)) == []


def test_claim_while_the_daemon_restarts_is_recorded(daemon, node, config, claim_args, tmp_path):
    """The code is redeemed while the daemon is down: bootstrap waits for it to come back
    (a `systemctl restart pvemond` mid-claim) instead of leaving the token to be revoked."""
    b = Bootstrap(config, *claim_args)
    offer = b.wait_for("claim_open")
    daemon.stop()
    claim = subprocess.Popen(cli("claim", f"127.0.0.1:{offer['port']}", offer["code"], "--pin",
                                 offer["pin"], "--format", "json", "-o", str(tmp_path / "pve.json")),
                             env=env_for(config), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    # The secret waits in the listener until the daemon has recorded where it goes.
    time.sleep(8)  # longer than bootstrap's wait for a restarting daemon: the client retries
    assert claim.poll() is None and not (tmp_path / "pve.json").exists()
    assert b.proc.poll() is None, "bootstrap gave up while the daemon was down"
    daemon.start()
    _, err = claim.communicate(timeout=60)
    assert claim.returncode == 0, err
    assert "cannot record the hand-out yet; retrying" in err
    assert b.finish() == 0, b.stderr
    assert b.events[-1]["event"] == "claimed"
    tokens = {t["name"]: t for t in Client(str(daemon.socket)).tokens()["tokens"]}
    assert tokens["monitoring"]["delivered_to"] == "claim from 127.0.0.1"
    assert "monitoring@pve!monitoring" in node.user_cfg()


def test_ctrl_c_and_sigterm_revoke(daemon, node, config, claim_args):
    for sig in (signal.SIGINT, signal.SIGTERM):
        b = Bootstrap(config, *claim_args)
        b.wait_for("claim_open")
        assert "monitoring@pve!monitoring" in node.user_cfg()
        b.signal(sig)
        assert b.finish() == 6, b.stderr
        assert b.events[-1]["event"] == "error" and "cancelled" in b.events[-1]["detail"]
        assert "revoked" in b.events[-1]["detail"]
        assert "monitoring@pve!monitoring" not in node.user_cfg()


def test_expiry_revokes(daemon, node, config):
    b = Bootstrap(config, "--listen", "127.0.0.1", "--port", str(free_port()), "--ttl", "30")
    b.wait_for("claim_open")
    assert b.finish(timeout=60) == 4
    assert "expired" in b.events[-1]["detail"] and "revoked" in b.events[-1]["detail"]
    assert "monitoring@pve!monitoring" not in node.user_cfg()


def test_firewall_warning_names_the_rule(daemon, node, config, claim_args):
    fw = node.pve_dir / "firewall"
    fw.mkdir(exist_ok=True)
    (fw / "cluster.fw").write_text("[OPTIONS]\n\nenable: 1\n")
    b = Bootstrap(config, *claim_args, "--allow", "192.0.2.20")
    offer = b.wait_for("claim_open")
    b.signal(signal.SIGTERM)
    b.finish()
    assert any(f"pvesh create /nodes/pve1/firewall/rules --type in --action ACCEPT --proto tcp "
               f"--dport {offer['port']} --source 192.0.2.20 --enable 1" in w
               for w in offer["warnings"])


def test_custom_certificate_is_verified_by_the_system_cas(tmp_path, node, claim_args, monkeypatch):
    """pveproxy serves an ACME-style certificate (not the cluster CA's): the node verifies the new
    token with the system's CAs, and the consumer config keeps TLS verification on with no CA
    file. SSL_CERT_FILE stands in for a public CA in the system store."""
    monkeypatch.setenv("SSL_CERT_FILE", str(node.custom_ca_pem))
    node.install_custom_cert()
    with node.start_proxy() as proxy:
        config = write_config(tmp_path / "pvemond.yaml", node, proxy.url, tmp_path)
        with Daemon(config, tmp_path / "daemon.log"):
            b = Bootstrap(config, *claim_args)
            offer = b.wait_for("claim_open")
            out = tmp_path / "mon" / "pve.yml"
            out.parent.mkdir()
            r = run_cli("claim", f"127.0.0.1:{offer['port']}", offer["code"], "--pin", offer["pin"],
                        "--format", "pve-exporter", "-o", str(out), config=config)
            assert r.returncode == 0, r.stderr
            assert b.finish() == 0, b.stderr
    assert "no CA file: the node's certificate is verified by this host's system CAs" in r.stderr
    assert yaml.safe_load(out.read_text())["pve1"]["verify_ssl"] is True
    assert not list(out.parent.rglob("*.pem"))  # the system's CAs: no CA file beside pve.yml


def test_claim_listener_never_reads_the_node_keys(daemon, node, config, claim_args, tmp_path):
    """The listener serves a key made for this claim: with pveproxy's keys gone from /etc/pve
    (pveproxy already has its own in memory) the claim still works, and its pin is not
    pveproxy's, so a code sent to 8006 with it never leaves the monitoring host."""
    keys = [node.local_dir / n for n in ("pve-ssl.key", "pveproxy-ssl.key")]
    for key in keys:
        if key.exists():
            key.rename(tmp_path / key.name)
    b = Bootstrap(config, *claim_args)
    offer = b.wait_for("claim_open")
    assert offer["pin"] != tlspin.pin_of_der(tlspin.pem_to_der((node.local_dir / "pve-ssl.pem").read_text()))
    assert codes.expired_since(offer["code"], offer["expires_at"] + 60 + codes.CLOCK_SKEW + 1)
    assert codes.expired_since(offer["code"], time.time()) is None
    r = run_cli("claim", f"127.0.0.1:{offer['port']}", offer["code"], "--pin", offer["pin"],
                "--format", "json", "-o", str(tmp_path / "pve.json"), config=config)
    assert r.returncode == 0, r.stderr
    assert b.finish() == 0, b.stderr
    assert not any(k.exists() for k in keys)


@pytest.mark.pve(8)
def test_stdout_config_on_a_legacy_ca_node_points_at_the_strict_copy(daemon, node, config,
                                                                     bootstrap, tmp_path):
    """PVE 8's cluster CA has no keyUsage, which Python 3.13+ clients reject: the config written
    on the node points at the daemon's re-issue, which bootstrap learns from the daemon."""
    assert strictca.lacks_key_usage(node.ca_pem)
    r = bootstrap("--format", "pve-exporter")
    assert r.returncode == 0, r.stderr
    strict = strictca.strict_ca(str(node.pve_dir), str(tmp_path / "state"))
    assert strict != node.ca_pem and not strictca.lacks_key_usage(strict)
    assert str(strict) in r.stdout and str(node.ca_pem) not in r.stdout


def test_a_curl_script_written_on_the_node_has_its_token_file_beside_it(daemon, node, config,
                                                                       bootstrap, tmp_path):
    """Both files are staged and put in place once the delivery is recorded; on stdout the
    token file would land wherever the shell stands, so that is refused before any mint."""
    refused = bootstrap("--token", "script", "--format", "curl")
    assert refused.returncode == 1 and "give -o FILE" in refused.stderr
    assert "!script" not in node.user_cfg()  # refused before the mint
    r = bootstrap("--token", "script", "--format", "curl", "-o", str(tmp_path / "check.sh"))
    assert r.returncode == 0, r.stderr
    header = tmp_path / "pve-pve1-token.header"
    assert stat.S_IMODE(header.stat().st_mode) == 0o600 and str(header) in r.stderr
    assert str(header) in (tmp_path / "check.sh").read_text()
    assert not list(tmp_path.glob(".*.header.*")) and not list(tmp_path.glob(".check.sh.*"))
