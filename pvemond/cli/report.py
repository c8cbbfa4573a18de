"""What pvemond-bootstrap tells its user: progress for people on stderr, or JSON events (one
object a line) on stdout for automation. The deliberate output (a config) goes to stdout."""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Dict, List, Sequence

COLUMN = 66  # where the dots end, so the results line up


class Reporter:
    def __init__(self, as_json: bool, prog: str = "pvemond-bootstrap"):
        self.as_json, self.prog = as_json, prog
        self.tty = sys.stderr.isatty()

    def _emit(self, event: str, **fields: Any) -> None:
        print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)

    def _say(self, text: str = "") -> None:
        print(text, file=sys.stderr, flush=True)

    def step(self, step: Dict[str, Any], word: str) -> None:
        if self.as_json:
            return self._emit("step", result=word, **step)
        dots = "." * max(3, COLUMN - len(step["subject"]))
        self._say(f"  {step['subject']} {dots} {word}")
        for finding in step["findings"] if step["change"] == "repair" else ():
            self._say(f"      - {finding}")

    def commands(self, commands: Sequence[str]) -> None:
        """The pveum runs of a dry-run's step (JSON already carries them in its step)."""
        for command in () if self.as_json else commands:
            self._say(f"      $ {command}")

    def verified(self, token_id: str, privs: List[str], path: str, https: bool) -> None:
        if self.as_json:
            return self._emit("verified", token_id=token_id, privileges=privs, path=path,
                              https=https)
        how = ("pveproxy accepts it" if https
               else "not tried over HTTPS (node.verify_https is off)")
        self._say(f"  verified: {token_id} holds {', '.join(privs)} on {path}, and {how}")

    def kept(self, exists: Dict[str, Any]) -> None:
        """An existing token was kept: nothing minted, its consumer keeps working."""
        if self.as_json:
            fields = ("token_id", "delivered_to", "delivered_at", "managed", "detail")
            return self._emit("kept", **{k: exists.get(k) for k in fields})
        self._say(f"  {exists.get('detail')}")

    def note(self, text: str) -> None:
        if self.as_json:
            return self._emit("note", text=text)
        self._say(f"  {text}")

    def deliver(self, text: str) -> None:
        if self.as_json:
            return self._emit("delivered", output=text)
        sys.stdout.write(text)
        sys.stdout.flush()

    def claim_open(self, offer: Any, commands: List[str], ttl: int, warnings: List[str]) -> None:
        if self.as_json:
            return self._emit("claim_open", code=offer.code, port=offer.port, address=offer.address,
                              expires_at=offer.expires_at, pin=offer.pin,
                              fingerprint=offer.fingerprint, commands=commands, warnings=warnings)
        until = time.strftime("%H:%M", time.localtime(offer.expires_at))
        self._say()
        self._say(f"  claim code  {offer.code}   single use, expires {until} ({ttl // 60} min)")
        self._say(f"  pin         {offer.pin}")
        self._say(f"  (PVE fingerprint of this node's certificate: {offer.fingerprint})")
        for w in warnings:
            self._say(f"  WARNING: {w}")
        self._say("  on the monitoring host:")
        self._say(f"    {commands[0]}")
        self._say("  or with curl (prints the JSON payload):")
        self._say(f"    {commands[1]}")

    def countdown(self, seconds_left: float) -> None:
        if self.as_json or not self.tty:
            return
        m, s = divmod(max(0, int(seconds_left)), 60)
        sys.stderr.write(f"\r\033[K  waiting ... {m}:{s:02d} left "
                         "(Ctrl-C cancels and revokes the token)")
        sys.stderr.flush()

    def claimed(self, peer: str, at: float) -> None:
        if self.as_json:
            return self._emit("claimed", peer=peer, at=at)
        when = time.strftime("%H:%M:%S", time.localtime(at))
        self._say(("\r\033[K" if self.tty else "") + f"  claimed by {peer} at {when}")

    def fail(self, code: str, detail: str, rc: int) -> int:
        if self.as_json:
            self._emit("error", error=code, detail=detail)
        else:
            self._say(("\r\033[K" if self.tty else "") + f"{self.prog}: {detail}")
        return rc
