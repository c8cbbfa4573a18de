"""`python3 -m pvesim init ROOT [...]` creates a node; `python3 -m pvesim proxy ROOT` serves it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m pvesim", description="Proxmox VE node simulator")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create a simulated node under ROOT")
    init.add_argument("root", type=Path)
    init.add_argument("--pve", type=int, choices=(8, 9), default=9)
    init.add_argument("--access-control", help="libpve-access-control package version, e.g. 9.0.3")
    init.add_argument("--pve-version", help="pve-manager version, e.g. 9.1.1")
    init.add_argument("--hostname", default="pve1")
    init.add_argument("--ip", default="192.0.2.10")
    init.add_argument("--domain", default="example.com", help="search domain ('' for none)")
    init.add_argument("--cluster", help="cluster name: a 3-node cluster instead of a standalone node")
    init.add_argument("--ca-bits", type=int, default=4096)
    proxy = sub.add_parser("proxy", help="run the pveproxy stand-in for the node under ROOT")
    proxy.add_argument("root", type=Path)
    proxy.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT or [V6]:PORT (default %(default)s)")
    proxy.add_argument("--node", help="answer as this cluster node (its certificate, `local`); "
                                      "default: the node ROOT belongs to")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "init":
        from .node import SimNode

        node = SimNode.create(
            args.root, pve=args.pve, pve_version=args.pve_version, access_control=args.access_control,
            hostname=args.hostname, ip=args.ip, domain=args.domain or None, cluster=args.cluster,
            ca_bits=args.ca_bits,
        )
        knobs = node.settings()
        print(f"pvesim: node {node.nodename} (pve-manager {knobs['pve_version']}, "
              f"libpve-access-control {knobs['access_control']}) at {node.root}")
        return 0
    from .proxy import serve

    return serve(args.root.resolve(), args.listen, args.node)


if __name__ == "__main__":
    sys.exit(main())
