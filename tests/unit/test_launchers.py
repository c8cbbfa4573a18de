"""debian/launchers.py: the .deb's /usr/bin scripts run python3 -S and import from the package's
own directory, so they need neither the site module nor PYTHONPATH."""
from __future__ import annotations

import os
import subprocess
import sys

from harness import REPO

sys.path.insert(0, str(REPO / "debian"))
import launchers  # noqa: E402


def test_a_launcher_runs_without_site_and_finds_the_package_itself(tmp_path):
    script = tmp_path / "pvemond-claim"
    script.write_text(launchers.launcher(script.name, "pvemond.cli.claim:command", str(REPO)))
    assert script.read_text().startswith(f"#!/usr/bin/python3 {launchers.FLAGS}\n")
    probe = "import sys; print('site' in sys.modules)"
    assert subprocess.run([sys.executable, launchers.FLAGS, "-c", probe], capture_output=True,
                          text=True, check=True).stdout.strip() == "False"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, launchers.FLAGS, str(script), "--help"], env=env,
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("usage: pvemond-claim"), r.stderr
