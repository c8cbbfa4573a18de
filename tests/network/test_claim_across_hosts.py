"""The claim crosses a real (virtual) network: node namespace 192.0.2.10, monitoring host
namespace 192.0.2.20 (and .30). Everything is the real thing: bootstrap, the daemon under
gunicorn, the TLS listener, pvemond-claim, curl."""
from __future__ import annotations

import json
import signal
import sys
import time

import yaml

from harness import MON_IP, NODE_IP, OTHER_IP, Bootstrap, run_on


PORT = "8116"


def start_bootstrap(config, hosts, *args):
    b = Bootstrap(config, "--port", PORT, *args, prefix=hosts["node"])
    return b, b.wait_for("claim_open")


def claim(hosts, config, offer, *extra, code=None, pin=None):
    return run_on(hosts["mon"], sys.executable, "-m", "pvemond.cli.claim", f"{NODE_IP}:{PORT}",
                  code or offer["code"], "--pin", pin or offer["pin"], *extra, config=config)


def test_pvemond_claim_with_check(hosts, daemon, node, config, tmp_path):
    b, offer = start_bootstrap(config, hosts)
    assert offer["address"] == NODE_IP
    assert offer["commands"][0].startswith(f"pvemond-claim {NODE_IP}:{PORT} {offer['code']} --pin sha256:")
    out = tmp_path / "mon" / "pve.yml"
    out.parent.mkdir()
    r = claim(hosts, config, offer, "--format", "pve-exporter", "-o", str(out), "--check")
    assert r.returncode == 0, r.stderr
    assert b.finish() == 0
    assert b.events[-1] == {"event": "claimed", "peer": MON_IP, "at": b.events[-1]["at"]}
    mod = yaml.safe_load(out.read_text())["pve1"]
    assert mod["user"] == "monitoring@pve" and mod["verify_ssl"].endswith("pve-pve1-ca.pem")
    assert "monitoring@pve!monitoring" in node.user_cfg()


def test_printed_curl_command(hosts, daemon, config):
    b, offer = start_bootstrap(config, hosts)
    curl = offer["commands"][1]
    assert "--pinnedpubkey 'sha256//" in curl and f"'https://{NODE_IP}:{PORT}/v1/claim'" in curl
    r = run_on(hosts["mon"], "bash", "-c", curl, config=config)
    assert r.returncode == 0, r.stderr
    payload = json.loads(r.stdout)
    assert payload["token_id"] == "monitoring@pve!monitoring" and len(payload["secret"]) == 36
    assert payload["nodes"][0]["url"] == f"https://{NODE_IP}:8006/api2/json"
    assert "BEGIN CERTIFICATE" in payload["ca_pem"]
    assert b.finish() == 0


def test_wrong_pin_is_refused_before_the_code_is_sent(hosts, daemon, node, config):
    b, offer = start_bootstrap(config, hosts)
    r = claim(hosts, config, offer, pin="sha256:" + "0" * 64)
    assert r.returncode == 3 and "NOT sent" in r.stderr
    right = claim(hosts, config, offer)  # the listener never saw a code: nothing was burned
    assert right.returncode == 0, right.stderr
    assert b.finish() == 0
    assert "wrong_code" not in b.stderr


def test_replay_is_answered_already_claimed(hosts, daemon, config):
    b, offer = start_bootstrap(config, hosts)
    assert claim(hosts, config, offer).returncode == 0
    again = claim(hosts, config, offer)
    assert again.returncode == 6 and "already claimed" in again.stderr and MON_IP in again.stderr
    assert b.finish() == 0


def test_wrong_codes_burn_the_claim_and_revoke(hosts, daemon, node, config):
    b, offer = start_bootstrap(config, hosts)
    wrong = "2222-2222-2222" if offer["code"] != "2222-2222-2222" else "3333-3333-3333"
    rcs = [claim(hosts, config, offer, code=wrong).returncode for _ in range(5)]
    assert rcs == [4, 4, 4, 4, 7]
    assert claim(hosts, config, offer).returncode in (7, 9)  # burned, or already closed
    assert b.finish() == 5
    assert "burned" in b.events[-1]["detail"] and "revoked" in b.events[-1]["detail"]
    assert "monitoring@pve!monitoring" not in node.user_cfg()
    assert f"pvemond-claim: failed claim from {MON_IP}: wrong_code" in b.stderr


def test_allow_refuses_another_source(hosts, daemon, config):
    b, offer = start_bootstrap(config, hosts, "--allow", f"{OTHER_IP}/32")
    refused = claim(hosts, config, offer)
    assert refused.returncode == 9 and "reset the connection before TLS" in refused.stderr
    assert "--allow" in refused.stderr
    curl = offer["commands"][1].replace("curl ", f"curl --interface {OTHER_IP} ", 1)
    r = run_on(hosts["mon"], "bash", "-c", curl, config=config)
    assert r.returncode == 0 and json.loads(r.stdout)["secret"]
    assert b.finish() == 0 and b.events[-1]["peer"] == OTHER_IP


def test_sigterm_while_waiting_revokes(hosts, daemon, node, config):
    b, offer = start_bootstrap(config, hosts)
    b.signal(signal.SIGTERM)
    assert b.finish() == 6
    assert "monitoring@pve!monitoring" not in node.user_cfg()
    assert claim(hosts, config, offer).returncode == 9  # the listener is gone


def test_expiry_revokes(hosts, daemon, node, config):
    b, offer = start_bootstrap(config, hosts, "--ttl", "30")
    assert b.finish(timeout=90) == 4
    assert "monitoring@pve!monitoring" not in node.user_cfg()


FLOOD = 2000
FLOOD_CODE = r'''
import json, socket, ssl, sys, threading
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
counts, lock = {}, threading.Lock()
body = json.dumps({"code": "2222-3333-4444"}).encode()
req = (f"POST /v1/claim HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
       f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
def one():
    try:
        with socket.create_connection((host, port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as s:
                s.sendall(req); data = b""
                while chunk := s.recv(65536): data += chunk
        key = data.split(b" ", 2)[1].decode() if data else "empty"
    except OSError as e:
        key = type(e).__name__
    with lock: counts[key] = counts.get(key, 0) + 1
def worker(k):
    for _ in range(k): one()
ts = [threading.Thread(target=worker, args=(n // 8,)) for _ in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
print(json.dumps(counts))
'''


def test_bounded_flood_hands_out_nothing(hosts, daemon, node, config):
    b, offer = start_bootstrap(config, hosts)
    start = time.monotonic()
    r = run_on(hosts["mon"], sys.executable, "-c", FLOOD_CODE, NODE_IP, PORT, str(FLOOD),
               config=config, timeout=180)
    counts = json.loads(r.stdout)
    assert sum(counts.values()) == FLOOD and "200" not in counts, counts
    assert b.finish() == 5  # burned by the wrong codes, not crashed
    assert "Traceback" not in b.stderr
    assert "monitoring@pve!monitoring" not in node.user_cfg()
    assert time.monotonic() - start < 180
