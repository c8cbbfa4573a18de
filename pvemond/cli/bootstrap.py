"""pvemond-bootstrap: converge the monitoring access, mint and verify a token, hand it over once.

By default the secret leaves the node through a claim code on a one-shot TLS listener; with
--format or -o it is written locally instead.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from pvemond import claim, config, formats
from pvemond.cli import handoff
from pvemond.cli.report import Reporter
from pvemond.client import ApiError, Client, DaemonDown
from pvemond.files import read_optional, write_private
from pvemond.pve import node

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DAEMON_DOWN = 0, 1, 2, 3
CLAIM_EXIT = {"claimed": EXIT_OK, "expired": handoff.EXIT_EXPIRED,
              "burned": handoff.EXIT_BURNED, "stopped": handoff.EXIT_CANCELLED}
CLAIM_WHY = {"expired": "nobody claimed the token before the code expired",
             "burned": "too many wrong codes: the claim was burned",
             "stopped": "cancelled"}
# Seconds a redeemed claim waits for the daemon to come back (`systemctl restart pvemond` takes
# one or two).
RESTART_GRACE = 10.0

_DONE = {"create": "created", "repair": "repaired", "ok": "already right"}
_WOULD = {"create": "would create", "repair": "would repair", "ok": "already right",
          "mint": "would mint a new secret"}
_HOW = {"added": "created", "regenerated": "new secret (regenerated in place)",
        "re-created": "new secret (removed and re-added: this pveum has no --regenerate)"}


class Interrupted(Exception):
    pass


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pvemond-bootstrap",
        description="Create or repair the read-only monitoring access of this Proxmox VE node, "
                    "mint an API token, verify it, and hand it over once through a claim code.",
        epilog="exit codes: 0 done, 1 error, 2 usage or not root, 3 daemon not running, "
               "4 claim expired, 5 claim burned, 6 cancelled (4-6: the token was revoked)")
    p.add_argument("--token", help="token name, one per consumer (default from the config: monitoring)")
    p.add_argument("--privsep", type=int, choices=(0, 1), help="privilege separation (default 0)")
    p.add_argument("--dry-run", action="store_true", help="show what would change; change nothing")
    p.add_argument("--json", action="store_true", help="machine-readable events, one JSON object a line")
    add_handout_options(p)
    add_daemon_options(p)
    return p


def add_handout_options(p: argparse.ArgumentParser) -> None:
    """How the new secret leaves the node: a claim (default) or a local file."""
    claim_opts = p.add_argument_group("claim hand-off (the default)")
    claim_opts.add_argument("--listen", help="address of the claim listener (default 0.0.0.0)")
    claim_opts.add_argument("--port", type=int, help="its port (default 8116)")
    claim_opts.add_argument("--ttl", type=int, help=f"seconds the code lives (default 600, at most {config.MAX_CLAIM_TTL})")
    claim_opts.add_argument("--allow", action="append", metavar="CIDR",
                            help="only this monitoring host or network may claim (repeatable)")
    local = p.add_argument_group("local delivery instead of a claim")
    local.add_argument("--format", choices=formats.FORMATS, help="config to write for the consumer")
    local.add_argument("-o", "--output", metavar="FILE",
                       help="write it here (atomically, mode 0600; the CA beside it), not stdout")


def add_daemon_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help=f"configuration file (default ${config.ENV_VAR} or {config.DEFAULT_PATH})")
    p.add_argument("--socket", help="the daemon's socket (default from the configuration)")


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    out = Reporter(args.json)
    if os.geteuid() != 0:
        return out.fail("not_root", "pvemond-bootstrap must run as root (the daemon's socket is "
                        "root-only): sudo pvemond-bootstrap", EXIT_USAGE)
    try:
        cfg = with_claim_options(config.load(args.config), args)
    except config.ConfigError as exc:
        return out.fail("bad_config", str(exc), EXIT_USAGE)
    client = Client(args.socket or cfg.daemon.socket)
    privsep = None if args.privsep is None else bool(args.privsep)
    on_sigterm_interrupt()
    try:
        if args.dry_run:
            return dry_run(client, out, args.token, privsep)
        return bootstrap(client, out, cfg, args, privsep)
    except DaemonDown as exc:
        return out.fail("daemon_down", str(exc), EXIT_DAEMON_DOWN)
    except ApiError as exc:
        return out.fail(exc.code, exc.detail, EXIT_ERROR)


def with_claim_options(cfg: config.Config, args: argparse.Namespace) -> config.Config:
    """Command-line claim options override the file, under the same rules."""
    given = {"listen": args.listen, "port": args.port, "ttl": args.ttl,
             "allow": tuple(args.allow) if args.allow else None}
    given = {k: v for k, v in given.items() if v is not None}
    problems = [f"--{k}: {p}" for k, v in given.items()
                for p in [config.RULES.get(f"claim.{k}", lambda _: None)(v)] if p]
    if problems:
        raise config.ConfigError("the command line", problems)
    return dataclasses.replace(cfg, claim=dataclasses.replace(cfg.claim, **given))


def dry_run(client: Client, out: Reporter, token: Optional[str], privsep: Optional[bool]) -> int:
    for step in client.mint(dry_run=True, token=token, privsep=privsep)["steps"]:
        out.step(step, _WOULD[step["change"]])
    return EXIT_OK


def bootstrap(client: Client, out: Reporter, cfg: config.Config, args: argparse.Namespace,
              privsep: Optional[bool]) -> int:
    local = bool(args.format or args.output)
    ttl = 120 if local else cfg.claim.ttl + 120
    minted = client.mint(token=args.token, privsep=privsep, handout_ttl=ttl)
    handout = minted["handout"]["id"]
    try:
        for step in minted["steps"]:
            word = _HOW[minted["how"]] if step["part"] == "token" else _DONE[step["change"]]
            out.step(step, word)
        out.verified(minted["token_id"], sorted(minted["payload"]["privileges"]))
        payload = dict(minted["payload"], secret=minted["secret"],
                       token_string=f"{minted['token_id']}={minted['secret']}")
        del minted
        if local:
            target = deliver_local(out, cfg, args, payload)
        else:
            return deliver_claim(client, out, cfg, handout, payload)
    except (Exception, KeyboardInterrupt, Interrupted) as exc:
        return _abandon(client, out, handout, _what(exc))
    _record_delivery(client, handout, target)
    return EXIT_OK


def deliver_local(out: Reporter, cfg: config.Config, args: argparse.Namespace,
                  payload: Dict[str, Any]) -> str:
    """Render the consumer's config and write it where the admin asked; return where."""
    fmt = args.format or "json"
    system = formats.system_trust(payload)  # a custom certificate: no CA of ours to point at
    if not args.output:
        ca = None if system else str(node.ca_file(cfg.node.pve_dir))
        out.deliver(formats.render(fmt, payload, ca_path=ca))
        return "stdout"
    output = Path(args.output).absolute()
    ca_path = None if system else output.with_name(f"pve-{formats.module_name(payload)}-ca.pem")
    text = formats.render(fmt, payload, ca_path=ca_path and str(ca_path),
                          existing=read_optional(str(output)))
    if ca_path:
        write_private(str(ca_path), payload["ca_pem"], mode=0o644)
    write_private(str(output), text)
    out.note(f"wrote the {fmt} config to {output} (mode 0600)"
             + (f" and the cluster CA to {ca_path}" if ca_path else "; the system CAs verify the node"))
    return f"file {output}"


def deliver_claim(client: Client, out: Reporter, cfg: config.Config, handout: str,
                  payload: Dict[str, Any]) -> int:
    cert, key = node.tls_files(cfg.node.pve_dir)
    listener = handoff.Listener(json.dumps(payload).encode(), cert, key, cfg.claim)
    address = _local_address(payload)
    payload.clear()  # from here on only the listener process holds the secret
    try:
        offer = handoff.offer(listener, cert, address)
        out.claim_open(offer, handoff.commands(offer), cfg.claim.ttl, _warnings(cfg, offer))
        outcome = _wait(listener, out, offer)
    except (KeyboardInterrupt, Interrupted):
        outcome = listener.cancel()
    except BaseException:
        listener.cancel()
        raise
    if outcome.status == "claimed":
        _record_delivery(client, handout, f"claim from {outcome.peer}")
        out.claimed(outcome.peer or "?", outcome.at or time.time())
        return EXIT_OK
    why = CLAIM_WHY[outcome.status]
    if outcome.status == "burned":
        why += f" after {outcome.attempts} wrong codes (last from {outcome.peer})"
    return _abandon(client, out, handout, why, CLAIM_EXIT[outcome.status])


def _record_delivery(client: Client, handout: str, to: str) -> None:
    """Tell the daemon the secret was delivered, waiting out a restart of the daemon: the
    consumer already holds the secret, and an unfinished hand-out gets the token revoked."""
    deadline = time.monotonic() + RESTART_GRACE
    retried = False
    while True:
        try:
            client.finish_handout(handout, delivered=True, to=to)
            return
        except DaemonDown:
            if time.monotonic() >= deadline:
                raise
            retried = True
            time.sleep(0.5)
        except ApiError as exc:
            if retried and exc.code == "no_such_handout":
                return  # the connection broke after the daemon had recorded it
            raise


def _wait(listener: handoff.Listener, out: Reporter, offer: handoff.Offer) -> claim.Outcome:
    while True:
        outcome = listener.poll(1.0)
        if outcome:
            return outcome
        out.countdown(offer.expires_at - time.time())


def _local_address(payload: Dict[str, Any]) -> str:
    mine = [n for n in payload.get("nodes", []) if n["name"] == payload.get("node")]
    return mine[0]["address"] if mine else str(payload.get("node"))


def _warnings(cfg: config.Config, offer: handoff.Offer) -> List[str]:
    nodename = str(Path(cfg.node.pve_dir, "local").resolve().name)
    if not node.firewall_enabled(cfg.node.pve_dir, nodename) or \
            node.firewall_lets_in(cfg.node.pve_dir, nodename, offer.port):
        return []
    return [f"the Proxmox firewall is on and drops port {offer.port} unless a rule allows it; "
            "allow the monitoring host with: "
            + node.firewall_rule(nodename, offer.port, cfg.claim.allow, "pvemond claim")]


def _abandon(client: Client, out: Reporter, handout: str, why: str, rc: int = EXIT_ERROR) -> int:
    try:
        revoked = client.finish_handout(handout, delivered=False, to=why)
    except (DaemonDown, ApiError) as exc:
        return out.fail("not_delivered", f"{why}; the token could not be revoked now ({exc}); "
                        "pvemond revokes it when its hand-out deadline passes", rc)
    word = "revoked" if revoked.get("revoked") else "already gone"
    return out.fail("not_delivered", f"{why}; the token was {word}", rc)


def _what(exc: BaseException) -> str:
    if isinstance(exc, (KeyboardInterrupt, Interrupted)):
        return "interrupted"
    return str(exc) or type(exc).__name__


def on_sigterm_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so the hand-out is cancelled and the token revoked."""
    signal.signal(signal.SIGTERM, _raise_interrupted)


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


if __name__ == "__main__":
    sys.exit(main())
