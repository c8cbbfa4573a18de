"""pvemond/prometheus.py: the file_sd target file, the scrape job appended to prometheus.yml (the
rest byte for byte, idempotent, refusals), promtool run for real, the reload and the targets as
Prometheus's HTTP API reports them."""
from __future__ import annotations

import grp
import http.server
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from pvemond import prometheus

SD = "/etc/prometheus/file_sd/pvemond"
PAYLOAD = {
    "cluster": "prod", "node": "pve1",
    "nodes": [{"name": f"pve{i}", "address": f"192.0.2.1{i - 1}",
               "url": f"https://192.0.2.1{i - 1}:8006/api2/json"} for i in (1, 2, 3)],
}
GLOBAL = "global:\n  scrape_interval: 15s  # keep me\n  evaluation_interval: 15s\n"
ONE_JOB = ("scrape_configs:\n"
           "  - job_name: prometheus\n"
           "    static_configs:\n"
           "      - targets: ['localhost:9090']\n")


def job_of(text: str) -> dict:
    doc = yaml.safe_load(text)
    return next(j for j in doc["scrape_configs"] if j["job_name"] == prometheus.JOB_NAME)


def promtool(tmp_path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    (tmp_path / "rules.yml").write_text("groups: []\n")  # what some configs below name
    return subprocess.run(["promtool", "check", "config", str(path)], capture_output=True,
                          text=True)


# ---------------------------------------------------------------------------------------------
# The target file

def test_target_groups_one_per_node_labelled_by_node():
    groups = prometheus.target_groups(PAYLOAD, "prod", "127.0.0.1:9221")
    assert groups[1] == {"targets": ["127.0.0.1:9221"],
                         "labels": {"__param_target": "192.0.2.11", "__param_module": "prod",
                                    "cluster": "prod", "instance": "pve2"}}
    assert [g["labels"]["instance"] for g in groups] == ["pve1", "pve2", "pve3"]


def test_a_standalone_node_is_its_own_cluster_label_and_its_bare_address_is_the_target():
    payload = {"cluster": None, "node": "solo",
               "nodes": [{"name": "solo", "address": "2001:db8::10",
                          "url": "https://[2001:db8::10]:8006/api2/json"}]}
    (group,) = prometheus.target_groups(payload, "solo")
    assert group["labels"]["cluster"] == "solo"
    assert group["labels"]["__param_target"] == "2001:db8::10"  # no brackets, no port
    assert group["targets"] == [prometheus.EXPORTER]


def test_file_sd_text_is_yaml_and_json():
    groups = prometheus.target_groups(PAYLOAD, "prod")
    text = prometheus.file_sd_text(groups)
    assert text.startswith("# written by pvemond-claim")
    assert yaml.safe_load(text) == groups
    assert json.loads(text.split("\n", 1)[1]) == groups


@pytest.mark.parametrize("text", ["127.0.0.1", "host:", ":9221", "host:99999", "a b:1",
                                  "http://x:1"])
def test_exporter_address_must_be_host_and_port(text):
    with pytest.raises(prometheus.PrometheusError, match="HOST:PORT"):
        prometheus.check_exporter(text)


def test_exporter_address_forms_accepted():
    for text in ("127.0.0.1:9221", "exporter.example.com:80", "[::1]:9221"):
        assert prometheus.check_exporter(text) == text


# ---------------------------------------------------------------------------------------------
# The job, appended

@pytest.mark.parametrize("original", [
    GLOBAL + ONE_JOB,                                             # scrape_configs is the last key
    ONE_JOB + "\n# rules below\nrule_files:\n  - rules.yml\n",    # ... or not
    GLOBAL,                                                       # missing
    GLOBAL + "scrape_configs:\n",                                 # empty (null)
    GLOBAL + "scrape_configs:\n\nalerting:\n  alertmanagers: []\n",
    GLOBAL + "scrape_configs:\n- job_name: flush\n  static_configs:\n  - targets: ['a:1']\n",
    GLOBAL + ONE_JOB.rstrip("\n"),                                # no final line break
    "",                                                           # an empty file
])
def test_the_job_is_appended_and_every_other_byte_kept(original, tmp_path):
    edited = prometheus.add_job(original, SD)
    assert edited is not None
    # byte for byte: the edited text minus the stanza is the original (a header added when
    # scrape_configs was missing, a line break where the file lacked its last one)
    stanza = next(s for s in (prometheus.job_stanza(SD, ""), prometheus.job_stanza(SD))
                  if s in edited)
    body = original if not original or original.endswith("\n") else original + "\n"
    header = "" if "scrape_configs" in original else "scrape_configs:\n"
    assert edited.replace(stanza, "", 1) == body + header
    job = job_of(edited)
    assert job == {"job_name": "pvemond-pve", "metrics_path": "/pve",
                   "params": {"cluster": ["1"], "node": ["1"]},
                   "file_sd_configs": [{"files": [f"{SD}/*.yml"]}]}
    before = yaml.safe_load(original) or {}
    after = yaml.safe_load(edited)
    for key, value in before.items():
        if key != "scrape_configs":
            assert after[key] == value
    assert [j for j in after["scrape_configs"] if j["job_name"] != "pvemond-pve"] == \
        (before.get("scrape_configs") or [])
    check = promtool(tmp_path, edited)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_last_job_keeps_its_comment_lines_after_it_untouched():
    original = ONE_JOB + "\n# rules below\nrule_files:\n  - rules.yml\n"
    edited = prometheus.add_job(original, SD)
    assert edited.endswith("\n# rules below\nrule_files:\n  - rules.yml\n")
    assert edited.startswith(ONE_JOB)


def test_an_empty_flow_list_is_the_only_line_rewritten():
    original = GLOBAL + "scrape_configs: []\nrule_files: []\n"
    edited = prometheus.add_job(original, SD)
    assert edited.startswith(GLOBAL + "scrape_configs:\n")
    assert edited.endswith("\nrule_files: []\n")
    assert len(yaml.safe_load(edited)["scrape_configs"]) == 1


def test_crlf_files_get_crlf_lines():
    original = (GLOBAL + ONE_JOB).replace("\n", "\r\n")
    edited = prometheus.add_job(original, SD)
    assert "\n" not in edited.replace("\r\n", "")
    assert edited.startswith(original)


def test_idempotent_a_second_cluster_adds_nothing(tmp_path):
    once = prometheus.add_job(GLOBAL + ONE_JOB, SD)
    assert prometheus.add_job(once, SD) is None
    assert prometheus.reads_files(once, SD)


def test_a_job_of_someone_else_reading_the_files_counts():
    text = ONE_JOB + ("  - job_name: pve\n    file_sd_configs:\n"
                      f"      - files: ['{SD}/*.yml']\n")
    assert prometheus.add_job(text, SD) is None


def test_a_commented_out_job_does_not_count():
    text = ONE_JOB + f"  # - files: ['{SD}/*.yml']\n"
    assert prometheus.add_job(text, SD) is not None


def test_another_directory_gets_a_job_only_if_the_name_is_free():
    once = prometheus.add_job(ONE_JOB, SD)
    with pytest.raises(prometheus.PrometheusError, match="already in the config but does not read"):
        prometheus.add_job(once, "/srv/other")


@pytest.mark.parametrize("text,message", [
    ("scrape_configs: [{job_name: a}]\n", "flow list"),
    ("scrape_configs: *jobs\n", "alias"),
    ("{global: {}, scrape_configs: []}\n", "flow mapping"),
    ("global:\n\tscrape_interval: 1s\n", "tabs"),
    (ONE_JOB + ONE_JOB, "twice"),
    (ONE_JOB + "---\nscrape_configs:\n", "several YAML documents"),
    ("scrape_configs:\n  job_name: a\n", "not a list of jobs"),
])
def test_what_cannot_be_edited_safely_is_refused(text, message):
    with pytest.raises(prometheus.PrometheusError, match=message):
        prometheus.add_job(text, SD)


def test_a_leading_document_marker_is_fine(tmp_path):
    edited = prometheus.add_job("---\n" + GLOBAL + ONE_JOB, SD)
    assert edited.startswith("---\n" + GLOBAL + ONE_JOB)
    assert promtool(tmp_path, edited).returncode == 0


def test_the_stanza_is_what_promtool_accepts_with_any_directory(tmp_path):
    odd = str(tmp_path / "file sd: 'x'")
    edited = prometheus.add_job(GLOBAL + ONE_JOB, odd)
    assert job_of(edited)["file_sd_configs"] == [{"files": [f"{odd}/*.yml"]}]
    assert promtool(tmp_path, edited).returncode == 0


def test_promtool_check_passes_and_complains(tmp_path):
    good = tmp_path / "good.yml"
    good.write_text(prometheus.add_job(GLOBAL + ONE_JOB, SD))
    assert prometheus.promtool_check(str(good)) is None
    bad = tmp_path / "bad.yml"
    bad.write_text(GLOBAL + ONE_JOB + "  - job_name: prometheus\n")
    complaint = prometheus.promtool_check(str(bad))
    assert complaint and "prometheus" in complaint


def test_promtool_absent_is_no_complaint(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    bad = tmp_path / "bad.yml"
    bad.write_text("not: [valid")
    assert prometheus.promtool_check(str(bad)) is None


# ---------------------------------------------------------------------------------------------
# The reload

def test_reload_by_pid_and_by_config_path(tmp_path):
    config = tmp_path / "prometheus.yml"
    config.write_text(GLOBAL)
    # a process named prometheus reading this config, counting SIGHUPs
    script = tmp_path / "prometheus"
    script.write_text(f"#!{sys.executable}\n"
                      "import signal, sys, time\n"
                      "signal.signal(signal.SIGHUP, lambda *a: print('HUP', flush=True))\n"
                      "print('ready', flush=True)\n"
                      "time.sleep(30)\n")
    script.chmod(0o755)
    proc = subprocess.Popen([str(script), f"--config.file={config}"], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        assert proc.pid in prometheus.prometheus_pids(str(config))
        assert prometheus.prometheus_pids(str(tmp_path / "other.yml")) == []
        said = prometheus.reload(str(config))
        assert str(proc.pid) in said and "SIGHUP" in said
        assert proc.stdout.readline() == "HUP\n"
        assert prometheus.reload(str(config), pid=proc.pid) == \
            f"sent SIGHUP to Prometheus (pid {proc.pid})"
        assert proc.stdout.readline() == "HUP\n"
    finally:
        proc.kill()
        proc.wait()


def test_reload_without_a_running_prometheus_says_so(tmp_path):
    said = prometheus.reload(str(tmp_path / "prometheus.yml"))
    assert "not running" in said


def test_reload_of_a_gone_pid_is_refused():
    proc = subprocess.Popen(["true"])
    proc.wait()
    with pytest.raises(prometheus.PrometheusError, match=f"pid {proc.pid}"):
        prometheus.reload("/nonexistent.yml", pid=proc.pid)


# ---------------------------------------------------------------------------------------------
# The targets, as Prometheus's API reports them

class FakeApi(http.server.BaseHTTPRequestHandler):
    answers: list = []

    def do_GET(self):
        assert self.path == "/api/v1/targets?state=active"
        doc = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        body = json.dumps({"status": "success", "data": {"activeTargets": doc}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def active(instance: str, health: str, error: str = "") -> dict:
    return {"labels": {"job": prometheus.JOB_NAME, "cluster": "prod", "instance": instance},
            "health": health, "lastError": error, "scrapeUrl": "http://127.0.0.1:9221/pve"}


def test_wait_until_every_target_is_up(api):
    groups = prometheus.target_groups(PAYLOAD, "prod")
    FakeApi.answers = [[], [active("pve1", "up")],
                       [active(n, "up") for n in ("pve1", "pve2", "pve3")]]
    targets = prometheus.wait_for_targets(api, groups, wait=20)
    assert [t.health for t in targets] == ["up"] * 3


def test_the_api_is_asked_directly_whatever_http_proxy_says(api, monkeypatch):
    """A proxy from the environment (Debian's package build sets one that goes nowhere) would
    carry a question for 127.0.0.1 elsewhere."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    FakeApi.answers = [[active("pve1", "up")]]
    assert prometheus.active_targets(api, timeout=5)[0]["health"] == "up"


def test_a_down_target_is_named_with_its_error(api):
    groups = prometheus.target_groups(PAYLOAD, "prod")
    FakeApi.answers = [[active("pve1", "up"), active("pve3", "unknown"),
                        active("pve2", "down", "server returned HTTP status 400 BAD REQUEST")]]
    start = time.monotonic()
    targets = prometheus.wait_for_targets(api, groups, wait=1.5)
    assert time.monotonic() - start < 10
    assert [t.health for t in targets] == ["up", "down", "unknown"]
    advice = prometheus.target_advice(targets[1], "127.0.0.1:9221", "prod")
    assert advice.startswith("node pve2 is down: server returned HTTP status 400")
    assert "restart prometheus-pve-exporter" in advice
    assert "not scraped node pve3 yet" in prometheus.target_advice(targets[2], "x:1", "prod")


def test_a_missing_target_says_the_job_or_reload_is_missing(api):
    groups = prometheus.target_groups(PAYLOAD, "prod")
    FakeApi.answers = [[]]
    (first, *_) = prometheus.wait_for_targets(api, groups, wait=0)
    assert first.health == "missing"
    assert "lacks the pvemond-pve job" in prometheus.target_advice(first, "x:1", "prod")


def test_an_absent_prometheus_is_named():
    with pytest.raises(prometheus.PrometheusError, match="does not answer.*--prometheus-url"):
        prometheus.active_targets("http://127.0.0.1:9", timeout=2)


# ---------------------------------------------------------------------------------------------
# Who can read the config

@pytest.fixture
def open_dir():
    """A directory everyone may enter (pytest's tmp_path sits below a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="pvemond-prom-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_unreadable_by_another_user(open_dir):
    nobody = pwd.getpwnam("nobody")
    path = open_dir / "pve.yml"
    path.write_text("x")
    path.chmod(0o600)
    why = prometheus.unreadable_by(str(path), "nobody")
    assert why and "nobody cannot read" in why and "0600" in why
    os.chown(path, nobody.pw_uid, -1)
    assert prometheus.unreadable_by(str(path), "nobody") is None
    assert prometheus.unreadable_by(str(path), "root") is None
    assert "no user" in prometheus.unreadable_by(str(path), "no-such-user-here")


def test_a_closed_directory_is_named(open_dir):
    inner = open_dir / "closed"
    inner.mkdir(mode=0o700)
    path = inner / "pve.yml"
    path.write_text("x")
    path.chmod(0o644)
    assert prometheus.unreadable_by(str(path), "nobody") == f"nobody cannot enter {inner}"


def test_a_group_is_checked_down_the_whole_path(open_dir):
    """--group G (no --owner) with the config in a directory only root enters: the file's group
    bits alone would say G can read it; its exporter could not."""
    gid = grp.getgrnam("nogroup").gr_gid
    inner = open_dir / "closed"
    inner.mkdir(mode=0o700)
    path = inner / "pve.yml"
    path.write_text("x")
    os.chown(path, 0, gid)
    path.chmod(0o640)
    why = prometheus.unreadable_by_group(str(path), "nogroup")
    assert why == f"group nogroup cannot enter {inner}"
    os.chown(inner, 0, gid)
    inner.chmod(0o710)
    assert prometheus.unreadable_by_group(str(path), "nogroup") is None
    path.chmod(0o600)
    why = prometheus.unreadable_by_group(str(path), "nogroup")
    assert why and why.startswith(f"group nogroup cannot read {path} (mode 0600, "
                                  "owner root:nogroup)")
    assert prometheus.unreadable_by_group(str(path), "no-such-group-here") == \
        "there is no group no-such-group-here"


def test_the_module_is_stdlib_only():
    code = ("import sys; import pvemond.prometheus; "
            "print(sorted(m for m in ('yaml', 'requests', 'dataclasses') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"

