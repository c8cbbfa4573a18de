"""The simulator held to upstream: the same pveum session (script.SCRIPT) on a simulated node
and on one whose pveum is the genuine Perl, per generation; after every step the status, the
output, the error text and the files must agree. Where they differ, the simulator is wrong."""
from __future__ import annotations

from differential import run_simulator
from script import SCRIPT
from upnode import Generation, make_sim_node


def test_simulator_answers_as_upstream(gen: Generation, upstream_runs, tmp_path):
    sim = run_simulator(make_sim_node(tmp_path / "sim", gen))
    up = upstream_runs.result(gen.name)
    assert len(up) == len(sim) == len(SCRIPT)
    report = []
    for (argv, _), u, s in zip(SCRIPT, up, sim):
        for field, (want, got) in u.differences(s).items():
            report.append(f"pveum {' '.join(argv)}\n  {field}:\n    upstream:  {want!r}\n    simulator: {got!r}")
    assert not report, f"{len(report)} difference(s) on PVE {gen.name}:\n" + "\n".join(report[:12])
    assert any(not o.ok for o in up) and any(o.ok for o in up)  # the script meets both kinds
