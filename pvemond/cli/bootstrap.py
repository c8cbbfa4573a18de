"""pvemond-bootstrap: converge the monitoring access, mint and verify a token, hand it over once.

By default the secret leaves the node through a claim code on a one-shot TLS listener; with
--format or -o it is written locally instead.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from pvemond import config, formats, names
from pvemond.cli.report import Reporter
from pvemond.client import ApiError, Client, DaemonDown
from pvemond.contract import CLAIM_PORT
from pvemond.files import read_optional, staged_private, write_private

if TYPE_CHECKING:  # imported where a claim is made: a local delivery needs neither (nor ssl)
    from pvemond import claim
    from pvemond.cli import handoff

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DAEMON_DOWN = 0, 1, 2, 3
EXIT_EXPIRED, EXIT_BURNED, EXIT_CANCELLED = 4, 5, 6
CLAIM_EXIT = {"claimed": EXIT_OK, "expired": EXIT_EXPIRED,
              "burned": EXIT_BURNED, "stopped": EXIT_CANCELLED}
CLAIM_WHY = {"expired": "nobody claimed the token before the code expired",
             "burned": "too many wrong codes: the claim was burned",
             "stopped": "cancelled"}
# Seconds a delivery waits for the daemon to come back (`systemctl restart pvemond` takes one or
# two) before the secret is held back: it leaves only once the daemon has recorded it. A claim
# waits less (its client is on the line and retries), a local delivery more.
RESTART_GRACE = 10.0
CLAIM_GRACE = 6.0
WRITER = "pvemond-bootstrap"  # the header of the configs it writes on the node

_DONE = {"create": "created", "repair": "repaired", "ok": "already right"}
_WOULD = {"create": "would create", "repair": "would repair", "ok": "already right",
          "mint": "would mint a new secret"}
_HOW = {"added": "created", "regenerated": "new secret (regenerated in place)",
        "re-created": "new secret (removed and re-added: this pveum has no --regenerate)"}


class Interrupted(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Handout:
    """The daemon's hand-out this run holds open, and the token it is for."""

    id: str
    token: str


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pvemond-bootstrap",
        description="Create or repair the read-only monitoring access of this Proxmox VE node, "
                    "mint an API token, verify it, and hand it over once through a claim code.",
        epilog="exit codes: 0 done, 1 error, 2 usage or not root, 3 daemon not running, "
               "4 claim expired, 5 claim burned, 6 cancelled (4-6: the token was revoked)")
    p.add_argument("--token", type=token_name,
                   help="token name, one per consumer (default from the config: monitoring)")
    p.add_argument("--privsep", type=int, choices=(0, 1), help="privilege separation (default 0)")
    p.add_argument("--rotate", action="store_true",
                   help="the token exists: give it a new secret (its consumer loses the old one "
                        "at once); without it an existing token is kept and only repaired")
    p.add_argument("--dry-run", action="store_true", help="show what would change; change nothing")
    p.add_argument("--json", action="store_true", help="machine-readable events, one JSON object a line")
    add_handout_options(p)
    add_daemon_options(p)
    return p


def add_handout_options(p: argparse.ArgumentParser) -> None:
    """How the new secret leaves the node: a claim (default) or a local file."""
    claim_opts = p.add_argument_group("claim hand-off (the default)")
    claim_opts.add_argument("--listen", help="address of the claim listener (default 0.0.0.0)")
    claim_opts.add_argument("--port", type=int, help=f"its port (default {CLAIM_PORT})")
    claim_opts.add_argument("--ttl", type=int, help=f"seconds the code lives (default 600, at most {config.MAX_CLAIM_TTL})")
    claim_opts.add_argument("--allow", action="append", metavar="CIDR",
                            help="only this monitoring host or network may claim (repeatable)")
    local = p.add_argument_group("local delivery instead of a claim")
    local.add_argument("--format", choices=formats.FORMATS, help="config to write for the consumer")
    local.add_argument("-o", "--output", metavar="FILE",
                       help="write it here (atomically, mode 0600; the CA beside it), not stdout")


def token_name(text: str) -> str:
    """An argparse type: a bad name is a usage error, before a claim binds its port."""
    problem = names.tokenid_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def add_daemon_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help=f"configuration file (default ${config.ENV_VAR} or {config.DEFAULT_PATH})")
    p.add_argument("--socket", help="the daemon's socket (default from the configuration)")


def main(argv: Optional[List[str]] = None) -> int:
    try:
        return run(argv)
    finally:
        gc.freeze()  # the interpreter's exit then skips a last walk over every object (~6 ms)


def run(argv: Optional[List[str]] = None) -> int:
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
            return dry_run(client, out, args.token, privsep, args.rotate)
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


def dry_run(client: Client, out: Reporter, token: Optional[str], privsep: Optional[bool],
            rotate: bool = False) -> int:
    plan = client.mint(dry_run=True, token=token, privsep=privsep, rotate=rotate)
    for step in plan["steps"]:
        kept = plan.get("kept") and step["part"] == "token" and step["change"] == "ok"
        out.step(step, "exists: kept (--rotate for a new secret)" if kept else _WOULD[step["change"]])
        out.commands(step.get("commands", ()))  # what the daemon would run, word for word
    return EXIT_OK


def bootstrap(client: Client, out: Reporter, cfg: config.Config, args: argparse.Namespace,
              privsep: Optional[bool]) -> int:
    """Check what can fail before any pveum write (the output, the claim port), then mint,
    verify and deliver; every way out of here ends the hand-out delivered or revoked."""
    local = bool(args.format or args.output)
    # Not a PVE node: said before a claim makes its key and binds its port; a local delivery
    # hears it from the mint, which refuses such a node the same way.
    problem = None if local else client.health()["problem"]
    if problem:
        return out.fail("not_a_pve_node", problem, EXIT_ERROR)
    try:
        listener = None if local else _listener(cfg)
        if local:
            check_output(args.output, args.format)
    except OSError as exc:
        return out.fail("not_started", f"{exc}; nothing was changed", EXIT_ERROR)
    try:
        minted = client.mint(token=args.token, privsep=privsep, rotate=args.rotate,
                             handout_ttl=120 if local else cfg.claim.ttl + 120,
                             **({} if local else _claim_facts(cfg, listener)))
    except BaseException as exc:
        if listener:
            listener.cancel()
        if isinstance(exc, ApiError) and exc.code == "token_exists":
            return keep(client, out, args.token, privsep, exc)
        raise
    handout = Handout(minted["handout"]["id"], minted["token_id"].split("!", 1)[1])
    try:
        _report_mint(out, minted)
        payload = dict(minted["payload"], secret=minted["secret"],
                       token_string=f"{minted['token_id']}={minted['secret']}")
        told = minted["node"]  # the daemon's word on this node: bootstrap reads no /etc/pve
        del minted
        if local:
            deliver_local(client, out, args, payload, handout, told["ca_file"])
            return EXIT_OK
        return deliver_claim(client, out, cfg, listener, handout, payload, told["warnings"])
    except (Exception, KeyboardInterrupt, Interrupted) as exc:
        if listener:
            listener.cancel()
        return _abandon(client, out, handout, _what(exc))


def keep(client: Client, out: Reporter, token: Optional[str], privsep: Optional[bool],
         exists: ApiError) -> int:
    """The token exists and someone may hold its secret: repair what drifted, mint nothing."""
    for step in client.converge(token=token, privsep=privsep)["steps"]:
        out.step(step, "kept" if step["part"] == "token" and step["change"] == "ok"
                 else _DONE[step["change"]])
    out.kept(exists.data)
    return EXIT_OK


def _report_mint(out: Reporter, minted: Dict[str, Any]) -> None:
    for step in minted["steps"]:
        out.step(step, _HOW[minted["how"]] if step["part"] == "token" else _DONE[step["change"]])
    out.verified(minted["token_id"], sorted(minted["payload"]["privileges"]), **minted["verified"])


def _listener(cfg: config.Config) -> "handoff.Listener":
    from pvemond.cli import handoff
    return handoff.Listener(cfg.claim)


def _claim_facts(cfg: config.Config, listener: handoff.Listener) -> Dict[str, Any]:
    """The port really bound and --allow: the mint answer warns if the firewall drops that port."""
    return {"claim_port": listener.port, "claim_allow": list(cfg.claim.allow)}


def check_output(output: Optional[str], fmt: Optional[str]) -> None:
    """Refuse an output that cannot be written before a secret exists for it."""
    if fmt == "curl" and not output:  # its token file would land wherever the shell stands
        raise OSError("--format curl keeps the token in a file beside the script: give -o FILE")
    if not output:
        return
    target = Path(output).absolute()
    if not target.parent.is_dir():
        raise OSError(f"{target.parent} is not a directory (for -o {output})")
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise OSError(f"cannot write into {target.parent} (for -o {output})")
    if target.exists() and not target.is_file():
        raise OSError(f"{target} exists and is not a regular file")


def deliver_local(client: Client, out: Reporter, args: argparse.Namespace,
                  payload: Dict[str, Any], handout: Handout, ca_file: Optional[str]) -> None:
    """Render the consumer's config and write it where the admin asked. The file is written
    aside first and put in place only once the daemon has recorded the delivery. On stdout the
    config points at `ca_file`, the daemon's CA file for this node (for a legacy cluster CA its
    strict re-issue, which Python 3.13+ clients need)."""
    fmt = args.format or "json"
    system = formats.system_trust(payload)  # a custom certificate: no CA of ours to point at
    if not args.output:
        ca = None if system else ca_file
        text = formats.render(fmt, payload, ca_path=ca, writer=WRITER)
        _record_delivery(client, handout, "stdout")
        out.deliver(text)
        return
    output = Path(args.output).absolute()
    ca_path = None if system else output.with_name(f"pve-{formats.module_name(payload)}-ca.pem")
    rendered = formats.render_files(fmt, payload, ca_path=ca_path and str(ca_path),
                                    existing=read_optional(str(output)), writer=WRITER,
                                    directory=str(output.parent))
    if ca_path:
        write_private(str(ca_path), payload["ca_pem"], mode=0o644)
    with contextlib.ExitStack() as staged:  # every file aside; all in place once recorded
        for f in rendered:
            staged.enter_context(staged_private(f.path or str(output), f.text))
        _record_delivery(client, handout, f"file {output}")
    also = [f.path for f in rendered if f.path]
    out.note(f"wrote the {fmt} config to {output} (mode 0600)"
             + "".join(f", {path} (mode 0600)" for path in also)
             + (f" and the cluster CA to {ca_path}" if ca_path else "; the system CAs verify the node"))


def deliver_claim(client: Client, out: Reporter, cfg: config.Config, listener: handoff.Listener,
                  handout: Handout, payload: Dict[str, Any], warnings: List[str]) -> int:
    from pvemond.cli import handoff
    listener.arm(json.dumps(payload).encode())
    address = _local_address(payload)
    payload.clear()  # from here on only the listener process holds the secret
    waiting = _Waiting(client, listener, handout)
    try:
        offer = handoff.offer(listener, address)
        out.claim_open(offer, handoff.commands(offer), cfg.claim.ttl, warnings)
        outcome = waiting.until_done(out, offer)
    except (KeyboardInterrupt, Interrupted):
        outcome = listener.cancel()
    if outcome.status == "claimed":
        out.claimed(outcome.peer or "?", outcome.at or time.time())
        return EXIT_OK
    if waiting.recorded:  # recorded, then the listener ended: the consumer may hold the secret
        return out.fail("unconfirmed", f"the delivery to {waiting.recorded} was recorded, but the "
                        "claim listener ended before confirming it; the token is kept. If the "
                        f"claim failed there: pvemond rotate {handout.token}", EXIT_ERROR)
    why = CLAIM_WHY[outcome.status]
    if outcome.status == "burned":
        why += f" after {outcome.attempts} wrong codes (last from {outcome.peer})"
    return _abandon(client, out, handout, why, CLAIM_EXIT[outcome.status])


def _record_delivery(client: Client, handout: Handout, to: str, grace: float = RESTART_GRACE) -> None:
    """Have the daemon record the delivery, waiting out a restart of the daemon. A retry that
    finds the hand-out closed asks whether it was closed by this very delivery."""
    deadline = time.monotonic() + grace
    retried = False
    while True:
        try:
            client.finish_handout(handout.id, delivered=True, to=to)
            return
        except DaemonDown:
            if time.monotonic() >= deadline:
                raise
            retried = True
            time.sleep(0.5)
        except ApiError as exc:
            if retried and exc.code == "no_such_handout" and _recorded(client, to):
                return  # the connection broke after the daemon had recorded it
            raise


def _recorded(client: Client, to: str) -> bool:
    return any(t.get("delivered_to") == to for t in client.tokens()["tokens"])


class _Waiting:
    """The wait for the claim, answering the listener's "may the secret go?" on the way."""

    def __init__(self, client: Client, listener: handoff.Listener, handout: Handout):
        self.client, self.listener, self.handout = client, listener, handout
        self.recorded: Optional[str] = None  # to whom the daemon has recorded a delivery

    def until_done(self, out: Reporter, offer: handoff.Offer) -> claim.Outcome:
        from pvemond.cli import handoff
        while True:
            got = self.listener.poll(1.0)
            if isinstance(got, handoff.Claiming):
                self._answer(got.peer)
            elif got:
                return got
            out.countdown(offer.expires_at - time.time())

    def _answer(self, peer: str) -> None:
        """The secret may go once the delivery is recorded. A listener that died before our
        answer sent nothing: the recorded token then holds a secret nobody has, so it goes."""
        try:
            _record_delivery(self.client, self.handout, f"claim from {peer}", CLAIM_GRACE)
        except (DaemonDown, ApiError):
            self.listener.answer(False)
            return
        if self.listener.answer(True):
            self.recorded = peer
        else:
            self.client.revoke(self.handout.token)


def _local_address(payload: Dict[str, Any]) -> str:
    mine = [n for n in payload.get("nodes", []) if n["name"] == payload.get("node")]
    return mine[0]["address"] if mine else str(payload.get("node"))


def _abandon(client: Client, out: Reporter, handout: Handout, why: str,
             rc: int = EXIT_ERROR) -> int:
    try:
        try:
            revoked = client.finish_handout(handout.id, delivered=False, to=why)["revoked"]
        except ApiError as exc:
            if exc.code != "no_such_handout":
                raise
            revoked = _revoke_unrecorded(client, handout)
    except ApiError as exc:
        return out.fail("not_delivered", f"{why}; the token could not be revoked now "
                        f"({exc.detail}); pvemond revokes it at its next sweep", rc)
    except DaemonDown:
        return out.fail("not_delivered", f"{why}; pvemond is not running, and revokes the token "
                        "as soon as it runs again (this bootstrap has ended)", rc)
    word = "revoked" if revoked else "already gone"
    return out.fail("not_delivered", f"{why}; the token was {word}", rc)


def _revoke_unrecorded(client: Client, handout: Handout) -> bool:
    """The daemon no longer knows the hand-out (it ended, or its state was damaged) and nobody
    received the secret: revoke the token by name."""
    try:
        return bool(client.revoke(handout.token)["revoked"])
    except ApiError as exc:
        if exc.code == "no_such_token":
            return False
        raise


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
