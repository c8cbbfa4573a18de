"""Fault-injection ring: kill -9 at each step of a hand-out, then start what systemd would restart,
and hold the invariant within 30 s:

  every pvemond-managed token in user.cfg is either delivered and working, or absent;
  a consumer that got a secret keeps it working (nothing delivered is revoked);
  a new bootstrap for the same name succeeds.

Steps are reached without timing guesses: each pveum run takes a second (the simulator's
`delay`), the ledger's records in state.json say where a mint is, SIGSTOP holds a process at a
point, and a bootstrap talking to the daemon has a socket open. A rotation kills its old secret by
design: that consumer's secret is not counted as held.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest
import yaml

from harness import Bootstrap, Daemon, cli, env_for, free_port, run_cli, token_works, write_config
from pvemond.client import Client, DaemonDown

pytestmark = pytest.mark.slow
DELAY = 1.0  # seconds each simulated pveum run takes: a mint is caught inside one
SETTLE = 30.0


class Scene:
    def __init__(self, node, proxy, config: Path, daemon, tmp_path: Path):
        self.node, self.proxy, self.config, self.daemon, self.tmp = node, proxy, config, daemon, tmp_path
        self.held: Dict[str, str] = {}  # token name -> the secret a consumer holds
        self.state = Path(yaml.safe_load(config.read_text())["daemon"]["state_dir"]) / "state.json"

    # -- driving ---------------------------------------------------------------------------
    def bootstrap(self, *args: str) -> Bootstrap:
        return Bootstrap(self.config, "--listen", "127.0.0.1", "--port", str(free_port()),
                         "--ttl", "60", *args)

    def claim(self, offer: Dict) -> subprocess.Popen:
        out = self.tmp / f"claimed-{offer['code']}.json"
        return subprocess.Popen(cli("claim", f"127.0.0.1:{offer['port']}", offer["code"], "--pin",
                                    offer["pin"], "--format", "json", "-o", str(out)),
                                env=env_for(self.config), cwd=self.tmp, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def claimed_secret(self, claim: subprocess.Popen, name: str) -> None:
        """Count the secret as held if the claim finished with it."""
        _, err = claim.communicate(timeout=90)
        out = next(self.tmp.glob("claimed-*.json"), None)
        if claim.returncode == 0 and out:
            self.held[name] = json.loads(out.read_text())["secret"]

    def records(self) -> List[Dict]:
        try:
            return list(json.loads(self.state.read_text()).get("handouts", {}).values())
        except (OSError, ValueError):
            return []

    def wait(self, what: Callable[[], bool], timeout: float = 60.0, why: str = "") -> None:
        end = time.monotonic() + timeout
        while not what():
            if time.monotonic() > end:
                raise TimeoutError(f"waited {timeout} s for {why or what}")
            time.sleep(0.02)

    def wait_stage(self, stage: str) -> None:
        self.wait(lambda: any(r.get("stage") == stage for r in self.records()), why=stage)

    # -- processes ---------------------------------------------------------------------------
    def master(self) -> int:
        return self.daemon.proc.pid

    def workers(self) -> List[int]:
        return children(self.master())

    def pause_daemon(self, sig: int) -> None:
        for pid in self.daemon.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:  # a killed worker the master (woken first) reaped already
                pass

    def kill(self, victim: str, b: Optional[Bootstrap]) -> None:
        if victim == "bootstrap":
            os.kill(b.proc.pid, signal.SIGKILL)
        elif victim == "listener":
            for pid in children(b.proc.pid):
                os.kill(pid, signal.SIGKILL)
        elif victim == "worker":
            for pid in self.workers():
                os.kill(pid, signal.SIGKILL)
        elif victim == "change":  # the worker's change process alone: the OOM killer's pick
            changes = [c for w in self.workers() for c in children(w, any_thread=True)]
            assert changes, "no change process to kill"
            for pid in changes:
                os.kill(pid, signal.SIGKILL)
        elif victim == "master":  # systemd kills the whole unit, then restarts it
            os.killpg(self.master(), signal.SIGKILL)
            self.daemon.proc.wait()
            self.daemon.start()
        else:
            raise ValueError(victim)

    # -- the invariant -------------------------------------------------------------------------
    def violations(self) -> List[str]:
        try:
            meta = {t["name"]: t for t in Client(str(self.daemon.socket)).tokens()["tokens"]}
        except DaemonDown as exc:
            return [f"the daemon does not answer: {exc}"]
        out = []
        for name, t in meta.items():
            if not t["managed"]:
                out.append(f"{name}: in user.cfg but unknown to pvemond (a stranded token)")
            elif not t["delivered_to"]:
                out.append(f"{name}: minted, never delivered, still there")
        for name, secret in self.held.items():
            if name not in meta or not meta[name]["delivered_to"]:
                out.append(f"{name}: the consumer holds it, pvemond does not know it as delivered")
            elif token_works(self.proxy, self.node, meta[name]["token_id"], secret) != 200:
                out.append(f"{name}: the consumer's secret no longer works")
        if self.records():
            out.append(f"open hand-outs left: {self.records()}")
        return out

    def settled(self, name: str) -> None:
        end = time.monotonic() + SETTLE
        while self.violations() and time.monotonic() < end:
            time.sleep(0.2)
        assert self.violations() == [], "\n".join(self.violations())
        again = run_cli("bootstrap", "--format", "json", "--token", name, config=self.config)
        assert again.returncode == 0, again.stderr


def children(pid: int, any_thread: bool = False) -> List[int]:
    """The children of the process's main thread, or (any_thread) of any of its threads: a
    worker's change process is forked by the request's thread."""
    tasks = os.listdir(f"/proc/{pid}/task") if any_thread and Path(f"/proc/{pid}").exists() else [pid]
    out = []
    for task in tasks:
        try:
            out += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return out


def talking_to_daemon(pid: int) -> bool:
    """The bootstrap opens a socket only for a request to the daemon."""
    fds = Path(f"/proc/{pid}/fd")
    return any(os.readlink(fds / fd).startswith("socket:") for fd in os.listdir(fds))


def answer_waiting(pid: int) -> bool:
    """Bytes wait unread in one of the process's unix sockets (the daemon's answer)."""
    out = subprocess.run(["ss", "-xpn"], capture_output=True, text=True).stdout
    return any(f"pid={pid}," in ln and int(ln.split()[2]) > 0 for ln in out.splitlines()[1:])


@pytest.fixture
def scene(node, proxy, config, daemon, tmp_path):
    node.set(delay=DELAY)
    s = Scene(node, proxy, config, daemon, tmp_path)
    yield s
    s.pause_daemon(signal.SIGCONT)


def finish(b: Bootstrap) -> None:
    """Wait for a bootstrap that may have lost its daemon; what it said stays in b.stdout (its
    --json events) and b.stderr."""
    try:
        b.proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        b.proc.kill()
    b.stdout, b.stderr = b.proc.communicate()


# --- the mint ---------------------------------------------------------------------------------

@pytest.mark.parametrize("victim", ["bootstrap", "listener", "change", "worker", "master"])
@pytest.mark.parametrize("moment", ["token-write", "verification"])
def test_kill_during_the_mint(scene, victim, moment):
    """`token-write`: inside the pveum run that makes the secret; `verification`: the token
    exists, nobody has its secret yet."""
    b = scene.bootstrap("--token", "mint")
    scene.wait_stage("intended")
    held = scene.proxy.proc.pid if moment == "verification" else None
    if held:  # the verification's HTTPS call waits for the held pveproxy: the kill lands in it
        os.kill(held, signal.SIGSTOP)
        scene.wait(lambda: "!mint " in scene.node.token_cfg(), why="the token in token.cfg")
    try:
        scene.kill(victim, b)
    finally:
        if held:
            os.kill(held, signal.SIGCONT)
    finish(b)
    if victim == "change":  # the bootstrap hears why, and what to do
        error = next(e for e in map(json.loads, b.stdout.splitlines()) if e["event"] == "error")
        assert error["error"] == "change_lost", error
        assert "killed by signal SIGKILL before it answered" in error["detail"]
        assert "a token it made is revoked within seconds" in error["detail"]
    scene.settled("mint")


# --- the offer (the code is shown, nobody has claimed) --------------------------------------------

@pytest.mark.parametrize("victim", ["bootstrap", "listener", "worker", "master"])
def test_kill_while_the_claim_waits(scene, victim):
    b = scene.bootstrap("--token", "wait")
    offer = b.wait_for("claim_open")
    scene.kill(victim, b)
    if victim in ("worker", "master"):  # the hand-out goes on: the claim still works
        claim = scene.claim(offer)
        scene.claimed_secret(claim, "wait")
        assert "wait" in scene.held, "a claim after a daemon restart failed"
    finish(b)
    scene.settled("wait")


def test_a_killed_bootstrap_takes_its_listener_along(scene):
    b = scene.bootstrap("--token", "gone")
    offer = b.wait_for("claim_open")
    listener = children(b.proc.pid)
    os.kill(b.proc.pid, signal.SIGKILL)
    finish(b)
    scene.wait(lambda: not any(Path(f"/proc/{p}").exists() for p in listener), 10, "the listener")
    claim = scene.claim(offer)
    scene.claimed_secret(claim, "gone")
    assert claim.returncode != 0 and "gone" not in scene.held
    scene.settled("gone")


# --- the claim: a right code arrived, the delivery is being recorded ------------------------------

@pytest.mark.parametrize("victim", ["bootstrap", "listener", "worker", "master"])
def test_kill_while_the_delivery_is_recorded(scene, victim):
    b = scene.bootstrap("--token", "claim")
    offer = b.wait_for("claim_open")
    scene.pause_daemon(signal.SIGSTOP)  # the record hangs until the daemon runs again
    claim = scene.claim(offer)
    scene.wait(lambda: talking_to_daemon(b.proc.pid), why="the bootstrap recording the delivery")
    scene.kill(victim, b)
    scene.pause_daemon(signal.SIGCONT)
    scene.claimed_secret(claim, "claim")
    if victim in ("worker", "master"):
        assert "claim" in scene.held, "a claim across a daemon restart failed"
    finish(b)
    scene.settled("claim")


# --- local delivery (-o) and rotation -----------------------------------------------------------

@pytest.mark.parametrize("victim", ["bootstrap", "worker", "master"])
def test_kill_around_a_local_delivery(scene, victim):
    """The bootstrap is held (SIGSTOP) with the mint's answer waiting for it, the victim dies,
    then the bootstrap goes on to write the file and record the delivery."""
    out = scene.tmp / "local.json"
    b = Bootstrap(scene.config, "--token", "local", "--format", "json", "-o", str(out))
    scene.wait_stage("intended")
    os.kill(b.proc.pid, signal.SIGSTOP)
    scene.wait(lambda: answer_waiting(b.proc.pid), why="the mint's answer in the bootstrap's socket")
    scene.kill(victim, b)
    if victim != "bootstrap":
        os.kill(b.proc.pid, signal.SIGCONT)
    finish(b)
    if out.exists():
        scene.held["local"] = json.loads(out.read_text())["secret"]
    assert out.exists() == (victim != "bootstrap"), b.stderr
    scene.settled("local")


@pytest.mark.parametrize("victim", ["bootstrap", "change", "worker", "master"])
def test_kill_during_a_rotation(scene, victim):
    first = run_cli("bootstrap", "--format", "json", "--token", "rot", config=scene.config)
    assert first.returncode == 0, first.stderr
    b = Bootstrap(scene.config, "--token", "rot", "--rotate", "--format", "json")
    scene.wait_stage("intended")
    scene.kill(victim, b)
    finish(b)
    scene.settled("rot")


# --- the rest of the field ----------------------------------------------------------------------

def test_a_busy_claim_port_costs_a_delivered_token_nothing(scene):
    first = run_cli("bootstrap", "--format", "json", "--token", "rt", config=scene.config)
    scene.held["rt"] = json.loads(first.stdout)["secret"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = run_cli("bootstrap", "--token", "rt", "--rotate", "--listen", "127.0.0.1", "--port",
                    str(busy.getsockname()[1]), config=scene.config)
    assert r.returncode == 1 and "cannot listen" in r.stderr and "nothing was changed" in r.stderr
    scene.settled("rt")


def test_two_bootstraps_of_one_token_at_once(scene):
    """One wins the token and hands it out; the other is refused without touching it."""
    pair = [scene.bootstrap("--token", "twin"), scene.bootstrap("--token", "twin")]
    scene.wait(lambda: any(b.proc.poll() is not None for b in pair), why="the loser's refusal")
    loser = next(b for b in pair if b.proc.poll() is not None)
    winner = pair[1] if loser is pair[0] else pair[0]
    assert loser.finish() == 1
    assert loser.events[-1]["error"] in ("handout_in_progress", "token_exists")
    scene.claimed_secret(scene.claim(winner.wait_for("claim_open")), "twin")
    assert winner.finish() == 0
    scene.settled("twin")


def test_a_full_state_disk_refuses_before_the_token(node, proxy, tmp_path):
    """ENOSPC on the state directory (a small tmpfs): a clear error, no token, and the next
    bootstrap works once there is room."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(small)], check=True)
    try:
        cfg = write_config(tmp_path / "c.yaml", node, proxy.url, tmp_path,
                           daemon={"state_dir": str(small)})
        with Daemon(cfg, tmp_path / "d.log"):
            fill(small / "fill")
            r = run_cli("bootstrap", "--format", "json", config=cfg)
            assert r.returncode == 1, r.stderr
            assert "No space left on device" in r.stderr and "Free space" in r.stderr
            assert "token:" not in node.user_cfg() and r.stdout == ""
            (small / "fill").unlink()
            assert run_cli("bootstrap", "--format", "json", config=cfg).returncode == 0
    finally:
        subprocess.run(["umount", str(small)], check=True)


def fill(path: Path) -> None:
    with open(path, "wb", buffering=0) as f:
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError:  # ENOSPC: full
            pass


@pytest.mark.parametrize("shape", ["[]", "null", '{"handouts": []}', '{"tokens": {"x": 1}}',
                                   '{"handouts": {"a": {"id": "a"}}}', '{"tokens": {'])
def test_state_of_the_wrong_shape_never_breaks_the_daemon(daemon, node, config, shape):
    """A hand-edited or damaged state.json: set aside with one log line; every route answers,
    a mint works, and the sweeper still revokes an abandoned hand-out."""
    api = Client(str(daemon.socket))
    stale = api.mint(token="stale", handout_ttl=30)["handout"]["id"]
    state = Path(yaml.safe_load(config.read_text())["daemon"]["state_dir"]) / "state.json"
    state.write_text(shape)
    assert api.status()["health"]["pve_node"] and api.tokens()["tokens"] is not None
    assert run_cli("bootstrap", "--format", "json", "--token", "fresh", config=config).returncode == 0
    aside = list(state.parent.glob("state.json.corrupt-*"))
    assert [p.read_text() for p in aside] == [shape]
    assert "does not match its schema" in daemon.log.read_text()
    # The stale record went with the damaged file: a plain revoke still removes its token.
    assert api.revoke("stale")["revoked"] and "!stale" not in node.user_cfg()
    del stale
