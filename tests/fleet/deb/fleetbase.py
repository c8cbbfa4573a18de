"""The fleet ring's container image: the system ring's cached base of a suite (debroot.base) plus
sshd, python3-apt (Ansible's apt module) and pvemond's Debian dependencies, read from the built
.deb. The containers have no route to the Debian mirror, so the dependencies come with the image
and `apt install pvemond` takes pvemond itself from the signed test repository; that apt pulls
the dependencies from Debian is the system ring's test_install_pulls_only_debian_and_ours.

    python3 tests/fleet/deb/fleetbase.py REPO_DIR SUITE...   (builds the images ahead of a run)
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "system"))

import debroot  # noqa: E402  (after the path set-up above)

LAYER = "fleet"
FOR_ANSIBLE = ["openssh-server", "python3-apt"]


def debian_depends(deb: Path) -> List[str]:
    """The Debian packages `deb` depends on (first of each alternative, ours left out)."""
    field = debroot.run(["dpkg-deb", "-f", str(deb), "Depends"], timeout=30).stdout
    names = []
    for item in field.split(","):
        name = re.sub(r":any$", "", item.split("|")[0].split("(")[0].strip())
        if name and not name.startswith("pvemond"):
            names.append(name)
    return names


def image(suite: str, repo: Path) -> Path:
    debs = sorted(repo.glob("pvemond_*.deb"))
    if not debs:
        raise debroot.SystemRingError(f"no pvemond_*.deb in {repo}: run `make repo`")
    return debroot.layer(suite, LAYER, sorted(set(FOR_ANSIBLE + debian_depends(debs[-1]))))


if __name__ == "__main__":
    for name in sys.argv[2:]:
        print(image(name, Path(sys.argv[1])))
