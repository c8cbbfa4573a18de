"""Check that each hand-written man page names every option its command's --help shows.

`python3 tests/system/manpages.py REPO` (run by `make lint`); exit 1 with the missing options.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PAGES = {"pvemond-bootstrap.1": ("pvemond.cli.bootstrap", ()),
         "pvemond-claim.1": ("pvemond.cli.claim", ()),
         "pvemond.8": ("pvemond.cli.admin",
                       ("status", "doctor", "tokens", "revoke", "rotate", "uninstall"))}


def options(repo: Path, module: str, sub: str = "") -> set:
    out = subprocess.run([sys.executable, "-m", module, *([sub] if sub else []), "--help"],
                         cwd=repo, capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", out.split("\nexit codes:")[0]))


def main(repo: Path) -> int:
    bad = 0
    for name, (module, subs) in PAGES.items():
        command = name.rsplit(".", 1)[0]
        page = (repo / "man" / name).read_text().replace("\\-", "-").replace("\\fB", "") \
            .replace("\\fR", "").replace("\\fP", "").replace("\\fI", "")
        wanted = set().union(options(repo, module), *(options(repo, module, sub) for sub in subs))
        wanted |= set(subs)
        missing = sorted(o for o in wanted if not re.search(re.escape(o) + r"(?![\w-])", page))
        if missing:
            bad = 1
            print(f"man/{name} lacks {', '.join(missing)} (from {command} --help)")
    if not bad:
        print(f"man pages cover every option of {', '.join(PAGES)}")
    return bad


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()))
