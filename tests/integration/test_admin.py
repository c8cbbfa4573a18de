"""The `pvemond` admin command against pvemond under real gunicorn and the simulated node:
status, doctor, tokens (and the metadata kept across a daemon restart), revoke, rotate, uninstall,
and the --json shapes README.md documents."""
from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Dict, List


from harness import Bootstrap, REPO, cli, env_for, free_port, run_cli, token_works

U = "monitoring@pve"


def claim_args() -> List[str]:
    return ["--listen", "127.0.0.1", "--port", str(free_port()), "--ttl", "60"]


def admin(config: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return run_cli("admin", *args, config=config, **kw)


def admin_json(config: Path, *args: str) -> Dict:
    r = admin(config, "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def local_token(config: Path, name: str, *extra: str) -> str:
    """pvemond-bootstrap --token NAME --format json: the new secret."""
    r = run_cli("bootstrap", "--token", name, "--format", "json", *extra, config=config)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["secret"]


def claimed_token(config: Path, b: Bootstrap, out: Path) -> str:
    """Redeem the claim `b` offers with pvemond-claim; the secret it wrote."""
    offer = b.wait_for("claim_open")
    r = run_cli("claim", f"127.0.0.1:{offer['port']}", offer["code"], "--pin", offer["pin"],
                "--format", "json", "-o", str(out), config=config)
    assert r.returncode == 0, r.stderr
    assert b.finish() == 0, b.stderr
    return json.loads(out.read_text())["secret"]


def login(proxy, node, name: str, secret: str) -> int:
    return token_works(proxy, node, f"{U}!{name}", secret)


def by_name(tokens: List[Dict]) -> Dict[str, Dict]:
    return {t["name"]: t for t in tokens}


# --- tokens and their metadata -------------------------------------------------------------------

def test_tokens_keep_what_pvemond_knows_across_a_restart(daemon, node, config, tmp_path):
    b = Bootstrap(config, "--token", "prometheus", *claim_args())
    prometheus = claimed_token(config, b, tmp_path / "prometheus.json")
    zabbix = local_token(config, "zabbix")
    node.run_pveum("user", "token", "add", U, "byhand", "--privsep", "0")
    before = admin_json(config, "tokens")["tokens"]
    t = by_name(before)
    assert set(t) == {"prometheus", "zabbix", "byhand"}
    assert t["prometheus"]["delivered_to"] == "claim from 127.0.0.1" and t["prometheus"]["managed"]
    assert t["prometheus"]["created"] <= t["prometheus"]["minted"] <= t["prometheus"]["delivered_at"]
    assert t["zabbix"]["delivered_to"] == "stdout" and t["zabbix"]["how"] == "added"
    assert not t["byhand"]["managed"] and t["byhand"]["created"] is None
    daemon.stop()
    daemon.start()
    assert admin_json(config, "tokens")["tokens"] == before
    human = admin(config, "tokens").stdout
    assert re.search(r"prometheus\s+0\s+never .*claim from 127\.0\.0\.1 at ", human), human
    assert re.search(r"byhand\s+0\s+never\s+-\s+not made by pvemond\s+-", human), human
    assert set(admin(config, "tokens", "--names").stdout.split()) == {"prometheus", "zabbix", "byhand"}
    # What pvemond keeps and shows holds no secret.
    kept = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    for secret in (prometheus, zabbix):
        assert not any(secret.encode() in p.read_bytes() for p in kept)
        assert secret not in human + json.dumps(before) + daemon.log.read_text()


def test_revoke_cuts_off_one_consumer(daemon, node, config, proxy):
    prometheus, zabbix = local_token(config, "prometheus"), local_token(config, "zabbix", "--privsep", "1")
    r = admin(config, "revoke", "zabbix")
    assert r.returncode == 0 and "revoked monitoring@pve!zabbix" in r.stdout, r.stderr
    assert login(proxy, node, "zabbix", zabbix) == 401
    assert login(proxy, node, "prometheus", prometheus) == 200
    assert "zabbix" not in node.user_cfg() + node.token_cfg()  # its own ACL went with it
    assert [t["name"] for t in admin_json(config, "tokens")["tokens"]] == ["prometheus"]
    again = admin(config, "revoke", "zabbix")
    assert again.returncode == 1 and "has no token zabbix" in again.stderr
    bad = admin(config, "revoke", "no/such")
    assert bad.returncode == 2 and "'no/such' is not a token name" in bad.stderr


def test_rotate_hands_a_new_secret_over_a_new_claim(daemon, node, config, proxy, tmp_path):
    old = local_token(config, "prometheus")
    b = Bootstrap(config, "rotate", "prometheus", "--yes", *claim_args(), module="admin")
    new = claimed_token(config, b, tmp_path / "new.json")
    warning = next(e for e in b.events if e["event"] == "note")["text"]
    assert "rotating monitoring@pve!prometheus" in warning and "stdout" in warning and "401" in warning
    assert new != old
    assert login(proxy, node, "prometheus", old) == 401
    assert login(proxy, node, "prometheus", new) == 200
    t = by_name(admin_json(config, "tokens")["tokens"])["prometheus"]
    assert t["delivered_to"] == "claim from 127.0.0.1" and t["how"] == "regenerated"


def test_rotate_refuses_without_a_token_or_a_yes(daemon, node, config):
    missing = admin(config, "rotate", "grafana", "--yes")
    assert missing.returncode == 1 and "pvemond-bootstrap --token grafana" in missing.stderr
    local_token(config, "grafana")
    before, calls = node.token_cfg(), len(node.calls())
    unasked = admin(config, "rotate", "grafana", input="y\n")  # stdin is no terminal
    assert unasked.returncode == 2 and "--yes" in unasked.stderr
    assert node.token_cfg() == before and not [c for c in node.calls()[calls:] if c["write"]]


# --- uninstall --------------------------------------------------------------------------------

def test_uninstall_removes_what_pvemond_manages_and_nothing_else(daemon, node, config):
    local_token(config, "prometheus")
    local_token(config, "zabbix", "--privsep", "1")
    node.run_pveum("user", "add", "alice@pve")
    node.run_pveum("acl", "modify", "/storage", "--roles", "monitoring", "--users", "alice@pve")
    unasked = admin(config, "uninstall")
    assert unasked.returncode == 2 and "--yes" in unasked.stderr and U in node.user_cfg()
    plan = admin_json(config, "uninstall", "--yes")
    assert not plan["dry_run"]
    changes = {s["subject"]: s["change"] for s in plan["steps"]}
    assert changes == {f"token {U}!prometheus": "remove", f"token {U}!zabbix": "remove",
                       f"user {U} (and its ACLs)": "remove", "role monitoring": "keep"}
    cfg = node.user_cfg()
    assert U not in cfg and U not in node.token_cfg()
    assert "acl:1:/storage:alice@pve:monitoring:" in cfg and "user:root@pam:" in cfg
    assert admin_json(config, "tokens")["tokens"] == []
    # Once alice lets go of the role, a second run removes it; a third finds nothing to do.
    node.run_pveum("acl", "delete", "/storage", "--roles", "monitoring", "--users", "alice@pve")
    second = admin(config, "uninstall", "--yes")
    assert second.returncode == 0 and "role monitoring: did remove" in second.stdout, second.stderr
    assert "role:monitoring:" not in node.user_cfg()
    third = admin_json(config, "uninstall", "--yes")
    assert {s["change"] for s in third["steps"]} == {"absent"}


# --- status and doctor --------------------------------------------------------------------------

def test_status_shows_node_access_tokens_and_open_claims(daemon, node, config):
    local_token(config, "prometheus")
    # a TTL far beyond the commands below: under heavy load this claim once ended "expired"
    # (exit 4) before the SIGINT this test is about
    b = Bootstrap(config, "--token", "zabbix", *claim_args()[:-1], "600")
    b.wait_for("claim_open")
    try:
        human = admin(config, "status").stdout
        data = admin_json(config, "status")
        for args in (("revoke", "zabbix"), ("uninstall", "--yes")):
            busy = admin(config, *args)  # neither may pull the token from under the claim
            assert busy.returncode == 1 and "is being handed out right now" in busy.stderr, busy.stderr
        assert f"{U}!zabbix" in node.user_cfg()
    finally:
        b.signal(signal.SIGINT)
        assert b.finish() == 6, b.stderr
    assert "Proxmox VE 9." in human and "standalone node pve1" in human
    assert re.search(r"token monitoring@pve!monitoring \(privsep 0\)\s+ok", human), human
    assert re.search(r"zabbix .*claim open until \d\d:\d\d:\d\d", human), human
    assert re.search(r"monitoring@pve!zabbix\s+by uid 0 pid \d+, until", human), human
    assert set(data) == {"health", "cluster", "access", "tokens", "handouts"}
    assert [h["token_id"] for h in data["handouts"]] == [f"{U}!zabbix"]


def test_doctor_exit_codes_and_fix(daemon, node, config):
    fresh = admin(config, "doctor")
    assert fresh.returncode == 1
    assert re.search(r"^\[FAIL\] role\s+role monitoring does not exist$", fresh.stdout, re.M)
    assert "symptom: 403 and empty lists" in fresh.stdout and "fix:     pvemond doctor --fix" in fresh.stdout
    fixed = admin(config, "doctor", "--fix")
    assert fixed.returncode == 1 and "fixed:\n  role monitoring" in fixed.stdout  # no token yet
    local_token(config, "monitoring")
    ok = admin(config, "doctor")
    assert ok.returncode == 0 and ok.stdout.endswith("all checks passed\n"), ok.stdout
    fw = node.pve_dir / "firewall"
    fw.mkdir(exist_ok=True)
    (fw / "cluster.fw").write_text("[OPTIONS]\n\nenable: 1\n")
    warned = admin(config, "doctor")
    assert warned.returncode == 4 and "[WARN] firewall" in warned.stdout
    # Probe tokens were minted and used above; no secret (a UUID) reached the daemon's log.
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                         daemon.log.read_text())


def test_daemon_down_and_not_root(config):
    down = admin(config, "status")
    assert down.returncode == 3 and "systemctl start pvemond" in down.stderr
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        *cli("admin", "tokens")], env=env_for(config), capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode == 2 and "sudo pvemond tokens" in r.stderr


# --- the JSON README.md promises ----------------------------------------------------------------

def test_json_shapes_are_the_documented_ones(daemon, node, config):
    local_token(config, "prometheus")
    doc = (REPO / "README.md").read_text()
    section = re.search(r"^### JSON output\n(.*?)(?=^#)", doc, re.M | re.S)
    assert section, "README.md lacks its '### JSON output' section"
    items = re.split(r"^- ", section.group(1), flags=re.M)[1:]  # one bullet may span lines
    documented = dict(re.match(r"`pvemond --json (\w+)[^`]*`: (.*)", item, re.S).groups()
                      for item in items)
    seen = {
        "status": admin_json(config, "status"),
        "doctor": admin_json(config, "doctor"),
        "tokens": admin_json(config, "tokens"),
        "revoke": admin_json(config, "revoke", "prometheus"),
        "uninstall": admin_json(config, "uninstall", "--yes"),
    }
    keys = {"status": set(seen["status"]), "doctor": set(seen["doctor"]) | set(seen["doctor"]["checks"][0]),
            "tokens": set(seen["tokens"]["tokens"][0]) if seen["tokens"]["tokens"] else set(),
            "revoke": set(seen["revoke"]), "uninstall": set(seen["uninstall"])}
    keys["tokens"] |= {"tokens"}
    for command, names in keys.items():
        assert command in documented, f"README does not document pvemond --json {command}"
        missing = sorted(k for k in names if not re.search(rf"[`{{ ]{k}[`}},]", documented[command]))
        assert not missing, f"README's pvemond --json {command} lacks {missing}"
