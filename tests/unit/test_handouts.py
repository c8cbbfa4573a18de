"""The hand-out ledger on its own: transitions, what the sweep revokes and what it never touches,
and state files of every wrong shape."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from pvemond import handouts
from pvemond.errors import ServiceError
from pvemond.handouts import INTENDED, OFFERED, Ledger
from pvemond.procs import Proc


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def ledger(tmp_path, clock):
    return Ledger(str(tmp_path / "state"), clock)


class Revoker:
    """Stands in for pveum: records which tokens it was asked to remove."""

    def __init__(self, fail: bool = False):
        self.revoked, self.fail = [], fail

    def __call__(self, h) -> bool:
        if self.fail:
            raise RuntimeError("pveum is busy")
        self.revoked.append(h.token_id)
        return True


def intend(ledger, name="prom", owner=None, ttl=600.0, rotating=False):
    return ledger.intend(token_id=f"monitoring@pve!{name}", user="monitoring@pve", token=name,
                         caller="test", owner=owner, ttl=ttl, privsep=False, rotating=rotating)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_delivered_token_is_never_swept(ledger, clock):
    h = ledger.offer(intend(ledger, owner=os.getpid()), "added")
    ledger.deliver(h.id, "claim from 192.0.2.20", "test")
    clock.now += 10 ** 6
    revoke = Revoker()
    assert ledger.sweep(revoke) == [] and revoke.revoked == []
    meta = ledger.snapshot().tokens["monitoring@pve!prom"]
    assert meta["delivered_to"] == "claim from 192.0.2.20" and meta["how"] == "added"


def test_an_offer_whose_bootstrap_died_is_revoked_at_once(ledger):
    ledger.offer(intend(ledger, owner=dead_pid()), "added")
    revoke = Revoker()
    assert ledger.sweep(revoke) == ["monitoring@pve!prom"]
    assert ledger.snapshot().handouts == () and "monitoring@pve!prom" not in ledger.snapshot().tokens


def test_a_live_bootstrap_keeps_its_offer_until_the_deadline(ledger, clock):
    ledger.offer(intend(ledger, owner=os.getpid(), ttl=60), "added")
    revoke = Revoker()
    assert ledger.sweep(revoke) == []
    clock.now += 61
    assert ledger.sweep(revoke) == ["monitoring@pve!prom"]


def test_a_recycled_pid_is_not_the_owner(ledger):
    me = Proc.of(os.getpid())
    assert me.alive() and not Proc(me.pid, me.start + 1).alive()


def test_an_intent_in_flight_here_is_left_alone_and_a_finished_one_is_revoked(ledger):
    h = intend(ledger)
    revoke = Revoker()
    assert ledger.sweep(revoke) == []  # its mint runs in this process right now
    ledger._inflight.discard(h.id)     # the request ended without offer or abandon
    assert ledger.sweep(revoke) == ["monitoring@pve!prom"]


def test_an_intent_of_a_dead_daemon_is_revoked(tmp_path, clock):
    """A daemon killed while minting: a fresh ledger (the restarted daemon) finds the record."""
    state = str(tmp_path / "state")
    h = intend(Ledger(state, clock))
    doc = json.loads((tmp_path / "state" / "state.json").read_text())
    doc["handouts"][h.id]["worker"] = {"pid": dead_pid(), "start": 1}
    (tmp_path / "state" / "state.json").write_text(json.dumps(doc))
    revoke = Revoker()
    assert Ledger(state, clock).sweep(revoke) == ["monitoring@pve!prom"]


def test_a_second_hand_out_of_the_same_token_is_refused(ledger):
    intend(ledger, owner=os.getpid())
    with pytest.raises(ServiceError) as err:
        intend(ledger)
    assert err.value.code == "handout_in_progress" and err.value.status == 409


def test_revoke_and_uninstall_are_refused_while_any_hand_out_is_open(ledger):
    """One refusal for every action that would kill a secret on its way: it names the action."""
    intend(ledger, owner=os.getpid())
    ledger.check_free("monitoring@pve!other", "revoking it")  # another token: free
    for token_id, doing in (("monitoring@pve!prom", "revoking it"), (None, "uninstalling")):
        with pytest.raises(ServiceError) as err:
            ledger.check_free(token_id, doing)
        assert err.value.status == 409 and f"{doing} would kill that secret" in err.value.detail


def test_an_idle_sweeper_reads_nothing_until_the_state_changes(ledger, monkeypatch):
    """The daemon sweeps every second; with nothing open it only stats state.json."""
    loads = []
    real = Ledger._load
    monkeypatch.setattr(Ledger, "_load", lambda self, **kw: loads.append(1) or real(self, **kw))
    loads_before = len(loads)
    revoke = Revoker()
    ledger.sweep(revoke)
    after_first = len(loads)
    ledger.sweep(revoke)
    assert after_first > loads_before and len(loads) == after_first
    h = intend(Ledger(str(ledger.dir), ledger.clock), owner=dead_pid())  # another worker writes
    ledger.offer(h, "added")
    assert ledger.sweep(revoke) == ["monitoring@pve!prom"]


def test_a_failed_revoke_keeps_the_record_and_backs_off(ledger, clock):
    ledger.offer(intend(ledger, owner=dead_pid()), "added")
    assert ledger.sweep(Revoker(fail=True)) == []
    assert len(ledger.snapshot().handouts) == 1
    revoke = Revoker()
    assert ledger.sweep(revoke) == []  # backing off: no log flood, no pveum storm
    ledger._retry_at.clear()
    assert ledger.sweep(revoke) == ["monitoring@pve!prom"]


def test_deliver_and_cancel_need_an_open_offer(ledger):
    h = intend(ledger)
    with pytest.raises(ServiceError) as err:
        ledger.deliver(h.id, "x", "test")  # still intended: nobody holds a secret yet
    assert err.value.code == "no_such_handout"
    with pytest.raises(ServiceError):
        ledger.cancel("feedface", Revoker(), "why")


def test_a_full_disk_refuses_the_intent(ledger, monkeypatch):
    def full(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(handouts, "_write_durably", full)
    with pytest.raises(ServiceError) as err:
        intend(ledger)
    assert err.value.code == "state_unwritable" and err.value.status == 507
    assert "No space left on device" in err.value.detail and "nothing was handed out" in err.value.detail
    assert ledger._inflight == set()


WRONG_SHAPES = {
    "a list": "[]",
    "null": "null",
    "handouts a list": '{"handouts": []}',
    "tokens a string": '{"tokens": "x"}',
    "torn": '{"tokens": {',
    "a hand-out missing fields": '{"handouts": {"a": {"id": "a"}}}',
    "a hand-out of the wrong types": '{"handouts": {"a": {"id": "a", "token_id": 1, "user": "u", '
                                     '"token": "t", "caller": "c", "minted_at": 0, "deadline": 0}}}',
    "an unknown stage": '{"handouts": {"a": {"id": "a", "token_id": "u!t", "user": "u", "token": "t",'
                        ' "caller": "c", "minted_at": 0, "deadline": 0, "stage": "lost"}}}',
    "a token of the wrong shape": '{"tokens": {"u!t": ["x"]}}',
    "a token of the wrong types": '{"tokens": {"u!t": {"created": "yesterday"}}}',
}


@pytest.mark.parametrize("name", WRONG_SHAPES)
def test_state_of_the_wrong_shape_is_set_aside_and_the_ledger_goes_on(ledger, tmp_path, caplog, name):
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.json").write_text(WRONG_SHAPES[name])
    assert ledger.snapshot().handouts == ()  # reading never fails
    assert ledger.sweep(Revoker()) == []
    aside = [p.name for p in state.iterdir() if p.name.startswith("state.json.corrupt-")]
    assert len(aside) == 1 and (state / aside[0]).read_text() == WRONG_SHAPES[name]
    assert [r.levelname for r in caplog.records if "does not match" in r.message] == ["ERROR"]
    h = ledger.offer(intend(ledger), "added")  # and it keeps working
    assert ledger.snapshot().handouts[0].id == h.id


def test_the_valid_parts_of_a_damaged_file_are_kept(ledger, tmp_path):
    good = ledger.offer(intend(ledger, owner=os.getpid()), "added")
    path = tmp_path / "state" / "state.json"
    doc = json.loads(path.read_text())
    doc["handouts"]["broken"] = {"id": "broken"}
    path.write_text(json.dumps(doc))
    ledger.sweep(Revoker())
    assert [h.id for h in ledger.snapshot().handouts] == [good.id]
    assert json.loads(path.read_text())["handouts"].keys() == {good.id}


def test_records_of_the_previous_version_are_offers_with_a_deadline(ledger, tmp_path, clock):
    path = tmp_path / "state" / "state.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"tokens": {}, "handouts": {"a": {
        "id": "a", "token_id": "monitoring@pve!old", "user": "monitoring@pve", "token": "old",
        "caller": "uid 0 pid 1", "minted_at": clock.now, "deadline": clock.now + 5}}}))
    h, = ledger.snapshot().handouts
    assert h.stage == OFFERED and h.owner is None
    clock.now += 6
    assert ledger.sweep(Revoker()) == ["monitoring@pve!old"]


def test_nothing_secret_in_the_record(ledger, tmp_path):
    h = intend(ledger, owner=os.getpid())
    assert h.stage == INTENDED
    text = (tmp_path / "state" / "state.json").read_text()
    assert set(json.loads(text)["handouts"][h.id]) == {
        "id", "token_id", "user", "token", "caller", "minted_at", "deadline", "stage",
        "privsep", "rotating", "owner", "worker", "owner_pid"}
