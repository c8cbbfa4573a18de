"""Every input refused precisely, under real gunicorn: the loopback rule as bound, the key file's
mode, 405 with Allow, gunicorn's own refusals as JSON, body limits, handout_ttl's range."""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys

import pytest

from harness import DAEMON_ARGS, Daemon, REPO, daemon_env, env_for, free_port, write_config

GUNICORN = [sys.executable, *DAEMON_ARGS]


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


def call(conn: http.client.HTTPConnection, method: str, url: str, body=None, headers=None):
    """(status, headers, decoded JSON body) of one request."""
    headers = dict(headers or {})
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    if body is not None:
        headers.setdefault("Content-Type", "application/json")
    conn.request(method, url, body=body, headers=headers)
    r = conn.getresponse()
    raw = r.read()
    assert r.getheader("Content-Type", "").startswith("application/json"), raw[:200]
    return r.status, r.headers, json.loads(raw)


@pytest.fixture
def api(daemon):
    return lambda *a, **k: call(UnixHTTP(str(daemon.socket)), *a, **k)


# --- the routes' own answers ----------------------------------------------------------

def test_405_says_what_is_allowed(api):
    status, headers, body = api("GET", "/v1/converge")
    assert status == 405 and body["error"] == "method_not_allowed"
    assert "POST" in headers["Allow"]


@pytest.mark.parametrize("raw, status, why", [
    (b"[" * 100_000 + b"]" * 100_000, 400, "nests deeper than 16 levels"),
    (b"[" * 5_000 + b"]" * 5_000, 400, "nests deeper than 16 levels"),
    (b" " * 300_000 + b"{}", 413, "larger than 262144 bytes"),
    (b'{"dry_run": true}\n{', 400, "not valid JSON"),
], ids=["nested-100000", "nested-5000", "too-large", "not-json"])
def test_bodies_beyond_the_limits_are_4xx(api, daemon, raw, status, why):
    got, _, body = api("POST", "/v1/converge", raw)
    assert got == status and why in body["detail"]
    assert "Traceback" not in daemon.log.read_text()


def test_a_name_with_a_final_newline_never_reaches_pveum(api, node):
    node.clear_calls()
    assert api("POST", "/v1/converge", {"token": "nl\n"})[0] == 400
    assert api("DELETE", "/v1/tokens/nl%0A")[0] == 400
    assert node.calls() == []


@pytest.mark.parametrize("body", [{"handout_ttl": 29}, {"handout_ttl": 3901},
                                  {"handout_ttl": 5, "dry_run": True}])
def test_handout_ttl_out_of_range_is_refused_naming_the_range(api, node, body):
    node.clear_calls()
    status, _, err = api("POST", "/v1/tokens", body)
    assert status == 400 and "between 30 and 3900 seconds" in err["detail"]
    assert node.calls() == []


def test_the_served_document_says_this_daemons_range(api):
    doc = api("GET", "/v1/openapi.json")[2]
    ttl = doc["components"]["schemas"]["MintRequest"]["properties"]["handout_ttl"]
    assert (ttl["minimum"], ttl["maximum"]) == (30, 3900)
    finish = doc["paths"]["/v1/handouts/{handout_id}"]["post"]
    assert finish["requestBody"]["required"] is True
    assert set(doc["paths"]["/v1/tokens/{name}"]["delete"]["responses"]) >= {"404", "409"}


def test_an_empty_hand_out_answer_is_refused(api):
    status, _, body = api("POST", "/v1/handouts/0123456789abcdef")
    assert status == 400 and "delivered (true or false) is required" in body["detail"]


# --- gunicorn's own refusals, as JSON ----------------------------------------------------

def test_a_request_line_over_the_limit_gets_json(api, daemon):
    status, _, body = api("GET", "/v1/health?x=" + "a" * 5000)
    assert status in (400, 414) and "too large" in body["detail"].lower()  # 20.1: 400
    assert "Invalid request from" in daemon.log.read_text()  # the WARNING line stays


def test_a_huge_header_gets_json(api):
    status, _, body = api("GET", "/v1/health", headers={"X-Big": "a" * 20_000})
    assert status in (400, 431) and body["error"]


# --- the loopback TCP listener and its key ---------------------------------------------

def tcp_config(tmp_path, node, proxy, tcp: str, mode: int = 0o600):
    key = tmp_path / "api.key"
    key.write_text("k" * 32 + "\n")
    os.chmod(key, mode)
    return write_config(tmp_path / "tcp.yaml", node, proxy.url, tmp_path,
                        daemon={"tcp": tcp, "tcp_key_file": str(key)}), key


def fails_to_start(config, **env) -> str:
    """gunicorn's exit code must be non-zero; returns its output, which has no traceback."""
    r = subprocess.run(GUNICORN, env={**daemon_env(config), **env}, cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out
    return out


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "[0:0:0:0:0:0:0:1]"])
def test_the_key_file_is_checked_on_every_request(tmp_path, node, proxy, host):
    port = free_port()
    config, key = tcp_config(tmp_path, node, proxy, f"{host}:{port}")
    addr = "::1" if ":" in host else host
    auth = {"Authorization": "Bearer " + "k" * 32}

    def health():
        return call(http.client.HTTPConnection(addr, port), "GET", "/v1/health", headers=auth)

    with Daemon(config, tmp_path / "tcp.log"):
        assert health()[0] == 200
        os.chmod(key, 0o644)
        status, _, body = health()
        assert status == 403 and f"chmod 600 {key}" in body["detail"]
        os.chmod(key, 0o600)
        os.chown(key, 65534, 65534)
        status, _, body = health()
        assert status == 403 and f"chown root:root {key}" in body["detail"]


def test_an_unsafe_key_file_stops_the_start(tmp_path, node, proxy):
    config, key = tcp_config(tmp_path, node, proxy, f"127.0.0.1:{free_port()}", mode=0o640)
    assert f"Error: {key} has mode 0640" in fails_to_start(config)


@pytest.mark.parametrize("spelling", ["0:0:0:0:0:0:0:1:8117", "::1:8117", "[::]:8117", "0:8117"])
def test_a_refused_spelling_stops_the_start_with_one_error(tmp_path, node, proxy, spelling):
    config, _ = tcp_config(tmp_path, node, proxy, spelling)
    out = fails_to_start(config)
    assert "Error: invalid configuration" in out and "daemon.tcp:" in out


@pytest.mark.parametrize("bind", ["0.0.0.0:0", "[::]:0"])
def test_what_gunicorn_really_bound_is_checked(tmp_path, config, bind):
    sock = tmp_path / "pvemond.sock"
    out = fails_to_start(config, GUNICORN_CMD_ARGS=f"--bind unix:{sock} --bind {bind}")
    assert "Error: listening on" in out and "not a loopback address" in out
    assert not sock.exists()  # halted, and cleaned up behind itself


def test_a_bad_config_in_the_worker_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("daemon: {log_level: loud}\n")
    r = subprocess.run([sys.executable, "-c", "import pvemond.wsgi"], env=env_for(bad), cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and r.stderr.startswith("Error: invalid configuration")
    assert "Traceback" not in r.stderr
