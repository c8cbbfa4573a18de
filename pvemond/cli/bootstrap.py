"""pvemond-bootstrap: converge the monitoring access, mint and verify a token, hand it over once."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from pvemond import config, formats
from pvemond.client import ApiError, Client, DaemonDown
from pvemond.files import read_optional, write_private

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DAEMON_DOWN = 0, 1, 2, 3
WIDTH = 76

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
                    "mint an API token, verify it, and hand it over once.")
    p.add_argument("--token", help="token name, one per consumer (default from the config: monitoring)")
    p.add_argument("--privsep", type=int, choices=(0, 1), help="privilege separation (default 0)")
    p.add_argument("--dry-run", action="store_true", help="show what would change; change nothing")
    p.add_argument("--json", action="store_true", help="machine-readable events, one JSON object a line")
    p.add_argument("--format", choices=formats.FORMATS, default="json",
                   help="config to write for the consumer (default json)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write it here (atomically, mode 0600; the CA beside it) instead of stdout")
    p.add_argument("--config", help=f"configuration file (default ${config.ENV_VAR} or {config.DEFAULT_PATH})")
    p.add_argument("--socket", help="the daemon's socket (default from the configuration)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    out = Reporter(args.json)
    if os.geteuid() != 0:
        return out.fail("not_root", "pvemond-bootstrap must run as root (the daemon's socket is "
                        "root-only): sudo pvemond-bootstrap", EXIT_USAGE)
    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        return out.fail("bad_config", str(exc), EXIT_USAGE)
    args.node_ca = str(Path(cfg.node.pve_dir) / "pve-root-ca.pem")
    client = Client(args.socket or cfg.daemon.socket)
    privsep = None if args.privsep is None else bool(args.privsep)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        if args.dry_run:
            return dry_run(client, out, args.token, privsep)
        return bootstrap(client, out, args, privsep)
    except DaemonDown as exc:
        return out.fail("daemon_down", str(exc), EXIT_DAEMON_DOWN)
    except ApiError as exc:
        return out.fail(exc.code, exc.detail, EXIT_ERROR)


def dry_run(client: Client, out: "Reporter", token: Optional[str], privsep: Optional[bool]) -> int:
    result = client.converge(dry_run=True, token=token, privsep=privsep)
    for step in result["steps"]:
        out.step(step, _WOULD[step["change"]])
    token_step = next(s for s in result["steps"] if s["part"] == "token")
    out.note(f"a real run also mints a new secret for {token_step['subject'].split()[1]}")
    return EXIT_OK


def bootstrap(client: Client, out: "Reporter", args: argparse.Namespace,
              privsep: Optional[bool]) -> int:
    minted = client.mint(token=args.token, privsep=privsep, handout_ttl=120)
    handout = minted["handout"]["id"]
    try:
        for step in minted["steps"]:
            word = _HOW[minted["how"]] if step["part"] == "token" else _DONE[step["change"]]
            out.step(step, word)
        privs = sorted(minted["payload"]["privileges"])
        out.verified(minted["token_id"], privs)
        target = deliver(out, args, minted)
    except (Exception, KeyboardInterrupt, Interrupted) as exc:
        revoked = client.finish_handout(handout, delivered=False, to=f"bootstrap failed: {_what(exc)}")
        word = "revoked" if revoked.get("revoked") else "already gone"
        return out.fail("not_delivered", f"{_what(exc)}; the new token was {word}", EXIT_ERROR)
    client.finish_handout(handout, delivered=True, to=target)
    return EXIT_OK


def deliver(out: "Reporter", args: argparse.Namespace, minted: Dict[str, Any]) -> str:
    """Render the consumer's config and write it where the admin asked; return where."""
    payload = dict(minted["payload"], secret=minted["secret"],
                   token_string=f"{minted['token_id']}={minted['secret']}")
    if not args.output:
        text = formats.render(args.format, payload, ca_path=args.node_ca)
        out.deliver(text)
        return "stdout"
    output = Path(args.output)
    ca_path = output.with_name(f"pve-{formats.module_name(payload)}-ca.pem")
    text = formats.render(args.format, payload, ca_path=str(ca_path),
                          existing=read_optional(args.output))
    write_private(str(ca_path), payload["ca_pem"], mode=0o644)
    write_private(args.output, text)
    out.note(f"wrote {args.format} config to {output} (mode 0600) and the cluster CA to {ca_path}")
    return f"file {output}"


def _what(exc: BaseException) -> str:
    if isinstance(exc, (KeyboardInterrupt, Interrupted)):
        return "interrupted"
    return str(exc) or type(exc).__name__


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


class Reporter:
    """Progress for people on stderr, or JSON events on stdout; the deliberate output on stdout."""

    def __init__(self, as_json: bool):
        self.as_json = as_json

    def _emit(self, event: str, **fields: Any) -> None:
        print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)

    def step(self, step: Dict[str, Any], word: str) -> None:
        if self.as_json:
            return self._emit("step", result=word, **step)
        dots = "." * max(3, WIDTH - len(step["subject"]) - len(word) - 4)
        print(f"  {step['subject']} {dots} {word}", file=sys.stderr)
        for finding in step["findings"] if step["change"] == "repair" else ():
            print(f"      - {finding}", file=sys.stderr)

    def verified(self, token_id: str, privs: List[str]) -> None:
        if self.as_json:
            return self._emit("verified", token_id=token_id, privileges=privs)
        print(f"  verified: {token_id} holds {', '.join(privs)} and pveproxy accepts it",
              file=sys.stderr)

    def note(self, text: str) -> None:
        if self.as_json:
            return self._emit("note", text=text)
        print(f"  {text}", file=sys.stderr)

    def deliver(self, text: str) -> None:
        if self.as_json:
            return self._emit("delivered", output=text)
        sys.stdout.write(text)
        sys.stdout.flush()

    def fail(self, code: str, detail: str, rc: int) -> int:
        if self.as_json:
            self._emit("error", error=code, detail=detail)
        else:
            print(f"pvemond-bootstrap: {detail}", file=sys.stderr)
        return rc


if __name__ == "__main__":
    sys.exit(main())
