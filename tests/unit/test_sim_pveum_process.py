"""The pveum wrapper as a process: call log, knobs (delay, quorum, fail_next), locking."""
import json
import os
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pvesim.testing import make_node, pveum_call

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the fake pveum runs as root only")
NO_QUORUM = "create role failed: cfs-lock 'file-user_cfg' error: no quorum!\n"
TRYING = "trying to acquire cfs lock 'file-user_cfg' ...\n"


@pytest.fixture
def node(tmp_path):
    return make_node(tmp_path / "node with space's")


def test_wrapper_is_an_executable_sh_script_with_quoted_paths(node):
    text = node.pveum.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "PVESIM_ROOT='" + str(node.root).replace("'", "'\\''") + "'" in text
    assert "-m pvesim.pveum \"$@\"\n" in text
    assert stat.S_IMODE(os.stat(node.pveum).st_mode) == 0o755


def test_wrapper_runs_pveum_and_logs_the_call(node):
    node.clear_calls()
    proc = node.run_pveum("user", "list", "--output-format", "json")
    assert json.loads(proc.stdout)[0]["userid"] == "root@pam" and proc.stderr == ""
    bad = node.run_pveum("role", "add", "PVEx", check=False)
    assert bad.returncode == 255
    with pytest.raises(subprocess.CalledProcessError):
        node.run_pveum("role", "delete", "Nope")
    calls = node.calls()
    assert [c["argv"] for c in calls] == [["user", "list", "--output-format", "json"], ["role", "add", "PVEx"],
                                          ["role", "delete", "Nope"]]
    assert [(c["rc"], c["write"]) for c in calls] == [(0, False), (255, True), (255, True)]
    assert all(isinstance(c["start"], float) and 0 <= c["duration"] < 5 for c in calls)
    node.clear_calls()
    assert node.calls() == []


def test_delay_knob_is_added_to_every_call(node):
    node.set(delay=0.3)
    node.clear_calls()
    started = time.monotonic()
    node.run_pveum("role", "list", "--output-format", "json")
    assert time.monotonic() - started >= 0.3
    assert node.calls()[0]["duration"] >= 0.3


def test_no_quorum_fails_writes_after_the_delay_and_changes_nothing(node):
    node.set(quorate=False, no_quorum_delay=1.2)
    before = node.user_cfg()
    started = time.monotonic()
    proc = node.run_pveum("role", "add", "Monitoring", "--privs", "VM.Audit", check=False)
    assert time.monotonic() - started >= 1.2
    assert proc.returncode == 255 and proc.stdout == ""
    assert proc.stderr == TRYING * 2 + NO_QUORUM  # about once a second, then the failure
    assert node.user_cfg() == before
    reads = node.run_pveum("role", "list", "--output-format", "json")  # reads still work
    assert "Monitoring" not in reads.stdout and reads.stderr == ""


@pytest.mark.parametrize("args, prefix", [
    (("user", "add", "a@pve"), "create user failed"),
    (("user", "modify", "ghost@pve", "--comment", "x"), "update user failed"),  # existence checked in the lock
    (("user", "delete", "root@pam"), "delete user failed"),
    (("acl", "modify", "/", "--roles", "PVEAuditor", "--users", "root@pam"), "ACL update failed"),
    (("role", "modify", "Nope", "--privs", "VM.Audit"), "update role failed"),
    (("role", "delete", "Nope"), "delete role failed"),
])
def test_no_quorum_messages_carry_the_command_prefix(node, args, prefix):
    node.set(quorate=False, no_quorum_delay=0.0)
    res = pveum_call(node, *args)
    assert res.rc == 255 and res.err == TRYING + f"{prefix}: cfs-lock 'file-user_cfg' error: no quorum!\n"


def test_no_quorum_token_commands(node):
    assert pveum_call(node, "user", "add", "monitor@pve").rc == 0
    assert pveum_call(node, "user", "token", "add", "monitor@pve", "tk").rc == 0
    node.set(quorate=False, no_quorum_delay=0.0)
    assert pveum_call(node, "user", "token", "add", "monitor@pve", "new").err.endswith(
        "generating token failed: cfs-lock 'file-user_cfg' error: no quorum!\n")
    assert pveum_call(node, "user", "token", "delete", "monitor@pve", "tk").err.endswith(
        "deleting token failed: cfs-lock 'file-user_cfg' error: no quorum!\n")
    # checks made before the lock still answer at once
    assert pveum_call(node, "user", "token", "delete", "monitor@pve", "gone").err == (
        "no such token 'gone' for user 'monitor@pve'\n")


def test_fail_next_injects_one_failure_in_a_sequence(node):
    node.set(fail_next=[{"match": "acl modify", "stderr": "injected failure", "rc": 2}])
    node.clear_calls()
    steps = [
        ("role", "add", "R", "--privs", "VM.Audit"),
        ("acl", "modify", "/", "--roles", "R", "--users", "root@pam"),
        ("acl", "modify", "/", "--roles", "R", "--users", "root@pam"),
    ]
    results = [pveum_call(node, *s) for s in steps]
    assert [(r.rc, r.err) for r in results] == [(0, ""), (2, "injected failure\n"), (0, "")]
    assert node.settings()["fail_next"] == []
    assert [(c["rc"], c["write"]) for c in node.calls()] == [(0, True), (2, True), (0, True)]
    node.set(fail_next=[{"match": "token add", "stderr": "x\n"}])
    assert pveum_call(node, "user", "token", "add", "root@pam", "tk").rc == 255  # rc defaults to 255
    assert "token:" not in node.user_cfg()


def test_concurrent_writers_are_serialized(node):
    def add(i):
        return node.run_pveum("user", "token", "add", "root@pam", f"tok{i}", "--output-format", "json")

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(add, range(8)))
    secrets = {json.loads(r.stdout)["value"] for r in results}
    assert len(secrets) == 8
    assert sum(line.startswith("token:root@pam!tok") for line in node.user_cfg().splitlines()) == 8
    assert len(node.token_cfg().splitlines()) == 8
    assert len(node.calls()) == 8
