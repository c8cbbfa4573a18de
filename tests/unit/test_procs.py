"""procs: a child tied to its parent never outlives it, not even when the parent dies between the
fork and the tie (the window in which PR_SET_PDEATHSIG is not armed yet)."""
from __future__ import annotations

import os
import signal
import time

from pvemond import procs


def _outcome_of_a_child(parent_dies_first: bool) -> bytes:
    """A middle process ties a child, as Pveum.run does for pveum, and (parent_dies_first) dies
    before the child calls the tie; the child says how far it got. What it said after the
    middle process died is returned."""
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.close(read_end)
        tie = procs.tied_to_parent()
        me = os.getpid()
        if os.fork() == 0:
            if parent_dies_first:
                while os.getppid() == me:  # the parent is gone: this child was reparented
                    time.sleep(0.005)
            tie()
            os.write(write_end, b"ran on")
            if not parent_dies_first:
                time.sleep(10)  # killed with its parent, below
            os.write(write_end, b" and outlived its parent")
            os._exit(0)
        if not parent_dies_first:
            time.sleep(60)  # killed by the test below
        os._exit(0)
    os.close(write_end)
    with open(read_end, "rb") as pipe:
        if not parent_dies_first:
            assert pipe.read(6) == b"ran on"  # tied while its parent lives: it runs
            os.kill(middle, signal.SIGKILL)
        os.waitpid(middle, 0)
        return pipe.read()  # b"" once every write end is closed: the child is gone


def test_a_child_whose_parent_died_before_the_tie_exits_at_once():
    assert _outcome_of_a_child(parent_dies_first=True) == b""


def test_a_tied_child_dies_with_its_parent():
    assert _outcome_of_a_child(parent_dies_first=False) == b""
