"""Check that each hand-written man page names every option its command's --help shows.

`python3 tests/system/manpages.py REPO` (run by `make lint`); exit 1 with the missing options.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PAGES = {"pvemond-bootstrap": "pvemond.cli.bootstrap", "pvemond-claim": "pvemond.cli.claim"}


def options(repo: Path, module: str) -> set:
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=repo, capture_output=True,
                         text=True, check=True).stdout
    return set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", out.split("\nexit codes:")[0]))


def main(repo: Path) -> int:
    bad = 0
    for command, module in PAGES.items():
        page = (repo / "man" / f"{command}.1").read_text().replace("\\-", "-").replace("\\fB", "") \
            .replace("\\fR", "").replace("\\fP", "").replace("\\fI", "")
        missing = sorted(o for o in options(repo, module) if not re.search(re.escape(o) + r"(?![\w-])", page))
        if missing:
            bad = 1
            print(f"man/{command}.1 lacks {', '.join(missing)} (from {command} --help)")
    if not bad:
        print(f"man pages cover every option of {', '.join(PAGES)}")
    return bad


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()))
