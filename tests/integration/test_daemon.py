"""The daemon under real gunicorn on a unix socket, bootstrap as a subprocess."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

from harness import Daemon, REPO, env_for, run_cli, wait_for
from pvemond.client import ApiError, Client


def client(daemon) -> Client:
    return Client(str(daemon.socket))


def test_socket_is_root_only(daemon):
    mode = stat.S_IMODE(os.stat(daemon.socket).st_mode)
    assert mode == 0o600
    assert os.stat(daemon.socket).st_uid == 0


def test_health_and_status(daemon, node):
    h = client(daemon).health()
    assert h["pve_node"] is True and h["pve_version"] == node.settings()["pve_version"]
    s = client(daemon).status()
    assert s["cluster"]["node"] == node.nodename and s["cluster"]["quorate"] is True
    assert any("no ACL gives monitoring@pve the role monitoring on /" in f for f in s["access"]["findings"])


@pytest.mark.pve(8, 9)
def test_fresh_bootstrap_then_rerun(daemon, node, bootstrap, pve):
    first = bootstrap("--format", "json")
    assert first.returncode == 0, first.stderr
    for part in ("role monitoring", "user monitoring@pve", "acl / -> monitoring@pve"):
        assert any(part in ln and ln.endswith("created") for ln in first.stderr.splitlines())
    assert "verified: monitoring@pve!monitoring holds Datastore.Audit, SDN.Audit" in first.stderr
    payload = json.loads(first.stdout)
    assert payload["token_id"] == "monitoring@pve!monitoring" and len(payload["secret"]) == 36

    kept = bootstrap("--json", "--format", "json")
    assert kept.returncode == 0, kept.stderr
    events = [json.loads(ln) for ln in kept.stdout.splitlines()]
    assert [e["event"] for e in events] == ["step"] * 4 + ["kept"]
    assert events[-1]["delivered_to"] == "stdout" and events[-1]["managed"] is True
    assert "pvemond rotate monitoring" in events[-1]["detail"]
    assert token_secret(node, "monitoring") == payload["secret"]  # nothing was minted

    again = bootstrap("--rotate", "--format", "json")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already right") == 3
    assert ("regenerated in place" if pve == 9 else "removed and re-added") in again.stderr
    assert json.loads(again.stdout)["secret"] != payload["secret"]


def token_secret(node, name: str) -> str:
    line = next(ln for ln in node.token_cfg().splitlines() if f"!{name} " in ln)
    return line.split()[1]


def test_drift_is_reported_and_repaired(daemon, node, bootstrap):
    assert bootstrap("--format", "json").returncode == 0
    node.run_pveum("user", "modify", "monitoring@pve", "--enable", "0")
    r = bootstrap("--format", "env")
    assert r.returncode == 0, r.stderr
    assert "repaired" in r.stderr and "is disabled: every token of it gets 401" in r.stderr
    assert "token monitoring@pve!monitoring exists" in r.stderr and r.stdout == ""
    assert "user:monitoring@pve:1:" in node.user_cfg()  # enabled again, by the converge


def test_dry_run(daemon, node, bootstrap):
    node.clear_calls()
    r = bootstrap("--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("would create") == 4 and r.stdout == ""
    assert node.calls() == []


def test_json_events(daemon, bootstrap):
    r = bootstrap("--json", "--format", "env")
    events = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [e["event"] for e in events] == ["step"] * 4 + ["verified", "delivered"]
    assert events[0]["result"] == "created" and events[-1]["output"].startswith("#")


def test_output_file(daemon, bootstrap, tmp_path):
    out = tmp_path / "prom" / "pve.yml"
    out.parent.mkdir()
    out.write_text("other:\n  user: x@pve\n")
    r = bootstrap("--format", "pve-exporter", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    doc = yaml.safe_load(out.read_text())
    assert doc["other"] == {"user": "x@pve"}
    mod = next(v for k, v in doc.items() if k != "other")
    assert mod["user"] == "monitoring@pve" and mod["token_name"] == "monitoring"
    assert os.path.exists(mod["verify_ssl"])


def test_no_quorum(daemon, node, bootstrap):
    before = node.user_cfg()
    node.set(quorate=False)
    r = bootstrap("--format", "json")
    assert r.returncode == 1
    assert "no quorum" in r.stderr and "run it on a quorate node" in r.stderr
    assert r.stdout == "" and node.user_cfg() == before


def test_daemon_down(config, bootstrap):
    r = bootstrap("--format", "json")
    assert r.returncode == 3
    assert "pvemond is not running" in r.stderr and "systemctl start pvemond" in r.stderr


def test_pveum_missing(tmp_path, node, proxy):
    from harness import write_config
    cfg = write_config(tmp_path / "c.yaml", node, proxy.url, tmp_path,
                       node={"pveum": str(tmp_path / "missing" / "pveum")})
    with Daemon(cfg, tmp_path / "d.log") as d:
        assert "not a Proxmox VE node" in Client(str(d.socket)).health()["problem"]
        r = run_cli("bootstrap", "--format", "json", config=cfg)
    assert r.returncode == 1 and "not a Proxmox VE node" in r.stderr


def test_not_root_is_refused(config):
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        sys.executable, "-m", "pvemond.cli.bootstrap"], env=env_for(config),
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "must run as root" in r.stderr


def test_non_root_peer_is_refused_even_if_the_socket_were_open(tmp_path, node, proxy):
    """Simulate a mistake (a world-writable socket in a world-readable directory): the peer
    credential check still refuses every uid but root."""
    from harness import write_config
    open_dir = Path(tempfile.mkdtemp(prefix="pvemond-open-"))
    open_dir.chmod(0o755)
    cfg = write_config(tmp_path / "c.yaml", node, proxy.url, tmp_path,
                       daemon={"socket": str(open_dir / "pvemond.sock")})
    code = ("import sys; from pvemond.client import Client, ApiError\n"
            "try: Client(sys.argv[1]).status()\n"
            "except ApiError as e: print(e.status, e.detail)\n")
    try:
        with Daemon(cfg, tmp_path / "d.log") as d:
            os.chmod(d.socket, 0o666)
            r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                sys.executable, "-c", code, str(d.socket)], capture_output=True,
                               text=True, cwd=REPO, env=env_for(cfg))
    finally:
        shutil.rmtree(open_dir)
    assert r.stdout.startswith("403 uid 65534 may not use pvemond"), r.stderr


def test_bad_requests_get_json_errors(daemon):
    c = client(daemon)
    with pytest.raises(ApiError) as err:
        c.request("POST", "/v1/tokens", {"token": "x", "colour": "red"})
    assert (err.value.status, err.value.code) == (400, "bad_request")
    assert "unknown field colour" in err.value.detail
    with pytest.raises(ApiError) as err:
        c.request("POST", "/v1/tokens", {"token": "1bad"})
    assert "not a token name" in err.value.detail
    with pytest.raises(ApiError) as err:
        c.request("POST", "/v1/converge", {"dry_run": "yes"})
    assert "dry_run must be true or false" in err.value.detail
    with pytest.raises(ApiError) as err:
        c.request("GET", "/v1/nothing")
    assert err.value.status == 404 and err.value.code == "not_found"


def test_concurrent_bootstraps_for_different_tokens(daemon, node, bootstrap, proxy):
    node.set(delay=0.2)
    results = {}

    def run(name):
        results[name] = bootstrap("--token", name, "--format", "json")

    threads = [threading.Thread(target=run, args=(n,)) for n in ("prometheus", "zabbix")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, r in results.items():
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["token_id"] == f"monitoring@pve!{name}"
    assert "already exists" not in node.user_cfg()


def test_a_change_runs_in_a_child_of_the_worker(daemon, node, bootstrap):
    """pveum runs in a short-lived child of the worker, so what a change allocates never stays
    in the long-lived worker (changes.py); the worker never even loads ctypes, nor decimal,
    which Flask imports for nothing (pvemond.daemon's stand-ins)."""
    node.set(delay=1.0)
    done = []
    run = threading.Thread(target=lambda: done.append(
        bootstrap("--token", "apart", "--format", "json")))
    run.start()
    try:
        pveum = wait_for(lambda: next((int(p) for p in os.listdir("/proc") if p.isdigit()
                                       and _runs_pveum_of(int(p), node)), None), timeout=20)
        assert pveum, "no pveum run of this node seen"
        change = _ppid(pveum)
        worker = _ppid(change)
        assert _ppid(worker) == daemon.proc.pid and change != worker
    finally:
        run.join()
    assert done[0].returncode == 0, done[0].stderr
    assert not Path(f"/proc/{change}").exists()
    maps = Path(f"/proc/{worker}/maps").read_text()
    assert "/_ssl" in maps  # (a library the worker does load)
    assert "_ctypes" not in maps and "_decimal" not in maps


def _runs_pveum_of(pid: int, node) -> bool:
    """The simulated pveum (python3 -m pvesim.pveum, exec'd by node.pveum) of this node."""
    try:
        return (b"pvesim.pveum" in Path(f"/proc/{pid}/cmdline").read_bytes()
                and f"PVESIM_ROOT={node.root}".encode() in Path(f"/proc/{pid}/environ").read_bytes())
    except OSError:
        return False


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def test_a_bad_token_name_is_refused_before_a_claim_binds_its_port(bootstrap):
    r = bootstrap("--token", "x")
    assert r.returncode == 2 and "'x' is not a token name" in r.stderr
    assert "claim listener" not in r.stderr


def test_same_token_while_it_is_being_handed_out(daemon, bootstrap):
    open_handout = client(daemon).mint(token="busy")
    r = bootstrap("--token", "busy", "--format", "json")
    assert r.returncode == 1
    assert "is being handed out right now" in r.stderr and "--token NAME" in r.stderr
    client(daemon).finish_handout(open_handout["handout"]["id"], delivered=False)


def test_unfinished_handout_is_revoked_after_its_deadline(daemon, node):
    client(daemon).mint(token="orphan", handout_ttl=30)
    assert "monitoring@pve!orphan" in node.user_cfg()
    # The daemon's clock is real; move the deadline instead of waiting 30 s.
    state = daemon.socket.parent / "state" / "state.json"
    data = json.loads(state.read_text())
    for h in data["handouts"].values():
        h["deadline"] = 0
    state.write_text(json.dumps(data))
    client(daemon).mint(token="other")  # every mint sweeps first
    assert "monitoring@pve!orphan" not in node.user_cfg()


def test_handout_survives_a_daemon_restart(daemon, node):
    m = client(daemon).mint(token="survivor")
    daemon.stop()
    daemon.start()
    assert client(daemon).finish_handout(m["handout"]["id"], delivered=True, to="x")["delivered"]
    tokens = {t["name"]: t for t in client(daemon).tokens()["tokens"]}
    assert tokens["survivor"]["delivered_to"] == "x"


def test_openapi_document_matches_the_routes(daemon):
    from pvemond.rest import create_app
    doc = client(daemon).request("GET", "/v1/openapi.json")
    documented = {(p.replace("{", "<").replace("}", ">"), m.upper())
                  for p, ops in doc["paths"].items() for m in ops}
    app = create_app(daemon_config(daemon))
    served = {(r.rule, m) for r in app.url_map.iter_rules() if r.rule.startswith("/v1")
              for m in r.methods - {"HEAD", "OPTIONS"}}
    assert documented == served


def daemon_config(daemon):
    from pvemond import config
    return config.load(str(daemon.config))
