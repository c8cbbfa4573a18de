"""pvemond: the admin's command on the node (status, doctor, tokens, revoke, rotate, uninstall).

A client of the daemon's socket. Human output by default; --json prints the daemon's answer as
one JSON document (rotate: bootstrap's JSON events), the shapes in README.md and openapi.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional

from pvemond import config
from pvemond.cli import bootstrap, views
from pvemond.cli.report import Reporter
from pvemond.client import ApiError, Client, DaemonDown

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DAEMON_DOWN, EXIT_WARNINGS = 0, 1, 2, 3, 4


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pvemond", description="Inspect, check and manage the monitoring access pvemond "
        "keeps on this Proxmox VE node.",
        epilog="exit codes: 0 ok, 1 error or failed check, 2 usage or not root, 3 daemon not "
               "running, 4 doctor found only warnings; rotate exits as pvemond-bootstrap does")
    p.add_argument("--json", action="store_true", help="print the result as JSON (see README.md)")
    bootstrap.add_daemon_options(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("status", help="PVE version, cluster, the access as it is, tokens, claims")
    doc = sub.add_parser("doctor", help="run every check; exit 0 only when all pass")
    doc.add_argument("--fix", action="store_true", help="repair what can be repaired (a converge), "
                     "show what changed, check again")
    tok = sub.add_parser("tokens", help="the tokens of the monitoring user and what pvemond knows")
    tok.add_argument("--names", action="store_true", help="only the names, one a line")
    rev = sub.add_parser("revoke", help="remove one token (its consumer gets 401 at once)")
    rev.add_argument("name", type=bootstrap.token_name, help="the token name, e.g. prometheus")
    rot = sub.add_parser("rotate", help="new secret for one token, handed over by a new claim")
    rot.add_argument("name", type=bootstrap.token_name, help="the token name, e.g. prometheus")
    rot.add_argument("--yes", action="store_true", help="do not ask; the old secret dies at once")
    bootstrap.add_handout_options(rot)
    uni = sub.add_parser("uninstall", help="remove the tokens, ACLs, user and role pvemond manages")
    uni.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    out = Reporter(args.json, prog="pvemond")
    if os.geteuid() != 0:
        return out.fail("not_root", "pvemond must run as root (the daemon's socket is root-only): "
                        f"sudo pvemond {args.command}", EXIT_USAGE)
    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        return out.fail("bad_config", str(exc), EXIT_USAGE)
    client = Client(args.socket or cfg.daemon.socket)
    try:
        return COMMANDS[args.command](client, args, cfg)
    except DaemonDown as exc:
        return out.fail("daemon_down", str(exc), EXIT_DAEMON_DOWN)
    except ApiError as exc:
        return out.fail(exc.code, exc.detail, EXIT_FAILED)


def status(client: Client, args: argparse.Namespace, cfg: config.Config) -> int:
    return _show(args, client.status(), views.status)


def doctor(client: Client, args: argparse.Namespace, cfg: config.Config) -> int:
    report = client.doctor(fix=args.fix)
    _show(args, report, views.doctor)
    return {"pass": EXIT_OK, "warn": EXIT_WARNINGS}.get(report["result"], EXIT_FAILED)


def tokens(client: Client, args: argparse.Namespace, cfg: config.Config) -> int:
    listed = client.tokens()
    if args.names and not args.json:
        print("\n".join(t["name"] for t in listed["tokens"]))
        return EXIT_OK
    return _show(args, listed, views.tokens)


def revoke(client: Client, args: argparse.Namespace, cfg: config.Config) -> int:
    return _show(args, client.revoke(args.name), views.revoked)


def rotate(client: Client, args: argparse.Namespace, cfg: config.Config) -> int:
    out = Reporter(args.json, prog="pvemond rotate")
    token = next((t for t in client.tokens()["tokens"] if t["name"] == args.name), None)
    if token is None:
        return out.fail("no_such_token", f"{cfg.access.user} has no token {args.name}: create it "
                        f"with pvemond-bootstrap --token {args.name}", EXIT_FAILED)
    out.note(views.rotation_warning(token))
    if not args.yes and not _confirm(f"rotate {token['token_id']} now?"):
        return out.fail("not_confirmed", "nothing changed (add --yes to rotate without asking)",
                        EXIT_USAGE)
    try:
        cfg = bootstrap.with_claim_options(cfg, args)
    except config.ConfigError as exc:
        return out.fail("bad_config", str(exc), EXIT_USAGE)
    args.token, args.rotate = args.name, True
    bootstrap.on_sigterm_interrupt()
    return bootstrap.bootstrap(client, out, cfg, args, bool(token["privsep"]))


def uninstall(client: Client, args: argparse.Namespace, cfg: config.Config) -> int:
    plan = client.uninstall(dry_run=True)
    if not args.yes:
        if args.json or not sys.stdin.isatty():
            return Reporter(args.json, prog="pvemond").fail(
                "not_confirmed", "uninstall removes access for good: add --yes", EXIT_USAGE)
        print(views.uninstall(plan), end="")
        if not _confirm("remove all of this?"):
            print("nothing changed")
            return EXIT_USAGE
    return _show(args, client.uninstall(dry_run=False), views.uninstall)


def _show(args: argparse.Namespace, data: Dict[str, Any], view: Callable[[Dict[str, Any]], str]) -> int:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(view(data), end="")
    return EXIT_OK


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


COMMANDS = {"status": status, "doctor": doctor, "tokens": tokens, "revoke": revoke,
            "rotate": rotate, "uninstall": uninstall}

if __name__ == "__main__":
    sys.exit(main())
