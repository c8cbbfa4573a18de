"""The differential test's runs: script.SCRIPT on upstream's pveum and on the simulator.

The upstream sessions (~70 Perl start-ups per generation) start in the background as soon as
the test is collected, one at a time, while the rest of the ring runs on the other core; the
test then only compares.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

from outcome import Outcome, outcome
from pvesim.testing import pveum_call
from script import SCRIPT
from upnode import GENERATIONS, make_upstream_node


def run_upstream(node) -> List[Outcome]:
    results = []
    for argv, unordered in SCRIPT:
        proc = subprocess.run([str(node.pveum), *argv], capture_output=True, text=True, timeout=120)
        results.append(outcome(proc.returncode, proc.stdout, proc.stderr, node.pve_dir, unordered))
    return results


def run_simulator(node) -> List[Outcome]:
    results = []
    for argv, unordered in SCRIPT:
        r = pveum_call(node, *argv)
        results.append(outcome(r.rc, r.out, r.err, node.pve_dir, unordered))
    return results


class UpstreamRuns:
    """The upstream sessions of every generation, running in one background thread."""

    def __init__(self, upstream: Path):
        self.tmp = Path(tempfile.mkdtemp(prefix="pvemond-differential-"))
        self.pool = ThreadPoolExecutor(max_workers=1)
        nodes = {g.name: make_upstream_node(self.tmp / g.name, g, upstream) for g in GENERATIONS}
        self.futures: Dict[str, Future] = {name: self.pool.submit(run_upstream, n)
                                           for name, n in nodes.items()}

    def result(self, name: str) -> List[Outcome]:
        return self.futures[name].result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(str(self.tmp), ignore_errors=True)
