"""Every consumer format read by the real consumer side: the curl script run with real curl
against the simulator's pveproxy stand-in, TOML by tomllib, env by sh, json by json."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pvemond.formats import render, render_files
from pvemond.hostfiles import write_kept
from pvesim.testing import make_node, pveum_call

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the fake pveum runs as root only")
REAL_CURL = shutil.which("curl")
# A curl that records its argv (NUL-separated, one line per call) and runs the real one.
RECORDING_CURL = f"""#!/bin/sh
printf '%s\\0' "$@" >> "$CURL_ARGV"; printf '\\n' >> "$CURL_ARGV"
exec {REAL_CURL} "$@"
"""


def pveum(node, *args) -> str:
    res = pveum_call(node, *args)
    assert res.rc == 0, res.err
    return res.out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    node = make_node(tmp_path_factory.mktemp("consumers") / "node")
    node.set(auth_fail_delay=0.02)
    pveum(node, "role", "add", "monitoring", "--privs", "Datastore.Audit,Sys.Audit,VM.Audit")
    pveum(node, "user", "add", "monitoring@pve")
    pveum(node, "acl", "modify", "/", "--roles", "monitoring", "--users", "monitoring@pve")
    out = pveum(node, "user", "token", "add", "monitoring@pve", "monitoring", "--privsep", "0",
                "--output-format", "json")
    with node.start_proxy() as proxy:
        yield node, proxy, json.loads(out)["value"]


def payload(site, secret: str | None = None) -> dict:
    node, proxy, real_secret = site
    secret = secret or real_secret
    token_id = "monitoring@pve!monitoring"
    return {"version": 1, "user": "monitoring@pve", "token_name": "monitoring",
            "token_id": token_id, "secret": secret, "token_string": f"{token_id}={secret}",
            "privsep": 0, "cluster": None, "node": "pve1",
            "nodes": [{"name": "pve1", "address": "127.0.0.1", "url": f"{proxy.url}/api2/json"}],
            "ca_pem": Path(node.ca_pem).read_text(), "privileges": {"Sys.Audit": 1}}


def write_curl(site, tmp_path: Path, secret: str | None = None) -> Path:
    node = site[0]
    out = tmp_path / "out"
    out.mkdir()
    for f in render_files("curl", payload(site, secret), ca_path=str(node.ca_pem),
                          directory=str(out)):
        write_kept(f.path or out / "check.sh", f.text.encode())
    return out / "check.sh"


def run_recorded(script: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, list]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(RECORDING_CURL)
    (bin_dir / "curl").chmod(0o755)
    argv_log = tmp_path / "argv"
    proc = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{bin_dir}:{os.environ['PATH']}",
                               "CURL_ARGV": str(argv_log)})
    calls = [line.split("\0")[:-1] for line in argv_log.read_text().splitlines()]
    return proc, calls


def test_curl_script_with_a_good_token(site, tmp_path: Path):
    script = write_curl(site, tmp_path)
    proc, calls = run_recorded(script, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"OK      pve1 HTTP 200 {site[1].url}/api2/json/version\n"
    assert len(calls) == 1 and not any(site[2] in arg for arg in calls[0])  # not in argv
    header = script.parent / "pve-pve1-token.header"
    assert oct(header.stat().st_mode & 0o777) == "0o600" and site[2] in header.read_text()
    assert site[2] not in script.read_text()


def test_curl_script_with_a_wrong_secret_fails(site, tmp_path: Path):
    wrong = "00000000-0000-0000-0000-000000000000"
    proc, calls = run_recorded(write_curl(site, tmp_path, wrong), tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == f"FAILED  pve1 HTTP 401 {site[1].url}/api2/json/version\n"
    assert "401" in proc.stderr  # curl -fsS says why
    assert not any(wrong in arg for call in calls for arg in call)


def test_telegraf_parses_with_tomllib(site):
    if sys.version_info < (3, 11):  # pragma: no cover - tomllib is 3.11+
        pytest.fail("tomllib needs Python 3.11")
    import tomllib
    (block,) = tomllib.loads(render("telegraf", payload(site), ca_path="/ca.pem"))["inputs"]["proxmox"]
    assert block["api_token"] == f"monitoring@pve!monitoring={site[2]}"
    assert block["base_url"] == f"{site[1].url}/api2/json" and block["tls_ca"] == "/ca.pem"


def test_env_is_sourced_by_sh(site, tmp_path: Path):
    path = tmp_path / "pve.env"
    path.write_text(render("env", payload(site), ca_path="/ca.pem"))
    proc = subprocess.run(["sh", "-c", '. "$1"; printf "%s\\n" "$PVE_TOKEN_VALUE" "$PVE_USER" '
                           '"$REQUESTS_CA_BUNDLE"', "sh", str(path)],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines() == [site[2], "monitoring@pve", "/ca.pem"]


def test_json_parses(site):
    doc = json.loads(render("json", payload(site), ca_path="/ca.pem"))
    assert doc["secret"] == site[2] and doc["ca_path"] == "/ca.pem"
