"""The fleet at scale: N simulated single-node clusters (PVE 8 and 9 alternating) and one
monitoring host, one ansible-playbook run of the collection's site.yml, then a second one
(changed=0). Prints BENCH lines for `make bench`. Needs root, sshd and PVEMOND_ANSIBLE (fleet.mk).

    python3 tests/fleet/scale.py [--clusters 10] [--forks 5]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]

from fleet import Fleet  # noqa: E402  (after the path set-up above)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clusters", type=int, default=10)
    p.add_argument("--forks", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="pvemond-fleet-") as work, \
            Fleet(Path(work), [8 + i % 2 for i in range(args.clusters)], forks=args.forks) as fleet:
        first = fleet.playbook()
        if first.rc != 0:
            sys.exit(f"the rollout failed:\n{first.output[-4000:]}")
        again = fleet.playbook()
        changed = sum(c["changed"] for c in again.recap.values())
        if again.rc != 0 or changed:
            sys.exit(f"the second run changed {changed} (rc {again.rc}):\n{again.output[-4000:]}")
    n = args.clusters
    print(f"BENCH fleet_clusters {n} clusters")
    print(f"BENCH fleet_forks {args.forks} forks")
    print(f"BENCH fleet_wall_s {first.seconds:.1f} s")
    print(f"BENCH fleet_per_cluster_s {first.seconds / n:.2f} s")
    print(f"BENCH fleet_rerun_wall_s {again.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
