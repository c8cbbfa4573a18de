"""The daemon's answers as an admin reads them in a terminal (pvemond's human output)."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

MARK = {"pass": " ok ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}
CHANGE = {"create": "created", "repair": "repaired", "ok": "ok", "remove": "remove",
          "keep": "keep", "absent": "absent"}


def status(s: Dict[str, Any]) -> str:
    h = s["health"]
    lines = [f"pvemond {h['version']}: daemon running"]
    if not h["pve_node"]:
        return _text(lines + [f"not usable: {h['problem']}"])
    lines.append(f"Proxmox VE {h['pve_version']}, {_cluster(s['cluster'])}")
    a = s["access"]
    d = a["desired"]
    lines += ["", f"access ({d['role']} = {', '.join(d['privileges'])} on {d['acl_path']} "
              f"for {d['user']})"]
    for step in a["steps"]:
        lines.append(f"  {step['subject']:<66} {'drift' if step['change'] != 'ok' else 'ok'}")
        lines += [f"      - {f}" for f in step["findings"]]
    lines += ["", *tokens({"tokens": s["tokens"]}).splitlines()]
    lines += ["", "open hand-outs" if s["handouts"] else "open hand-outs: none"]
    lines += [f"  {h['token_id']}  by {h['caller']}, until {_at(h['deadline'])}" for h in s["handouts"]]
    return _text(lines)


def _cluster(c: Optional[Dict[str, Any]]) -> str:
    if not c:
        return "cluster state unknown"
    if not c["name"]:
        return f"standalone node {c['node']}"
    online = sum(1 for n in c["nodes"] if n["online"])
    return (f"node {c['node']} of cluster {c['name']}, {'quorate' if c['quorate'] else 'NO QUORUM'}, "
            f"{online} of {len(c['nodes'])} nodes online")


def tokens(t: Dict[str, Any]) -> str:
    rows = t["tokens"]
    if not rows:
        return "tokens: none (pvemond-bootstrap --token NAME creates one per consumer)\n"
    head = ("TOKEN", "PRIVSEP", "EXPIRES", "CREATED", "LAST SECRET", "DELIVERED TO")
    table = [head] + [(r["name"], str(r["privsep"]), _date(r["expire"]) if r["expire"] else "never",
                       _date(r["created"]), _secret(r), _delivered(r)) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head) - 1)]
    return _text(["tokens"] + ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1]
                               for row in table])


def _secret(r: Dict[str, Any]) -> str:
    if not r["managed"]:
        return "not made by pvemond"
    return f"{_date(r['minted'])} ({r['how']})"


def _delivered(r: Dict[str, Any]) -> str:
    if r.get("handout_until"):
        return f"claim open until {_at(r['handout_until'])}"
    if r["delivered_to"]:
        return f"{r['delivered_to']} at {_date(r['delivered_at'])}"
    return "-" if not r["managed"] else "not delivered"


def doctor(r: Dict[str, Any]) -> str:
    lines = []
    if r["fixed"]:
        lines += ["fixed:"] + [f"  {s['subject']}: {CHANGE.get(s['change'], s['change'])}"
                               for s in r["fixed"]] + [""]
    for c in r["checks"]:
        lines.append(f"[{MARK[c['status']]}] {c['id']:<18} {c['what']}")
        if c["status"] in ("fail", "warn"):
            lines += [f"{'':25}symptom: {c['symptom']}", f"{'':25}fix:     {c['fix']}"]
    bad = [c for c in r["checks"] if c["status"] in ("fail", "warn")]
    fixable = sum(1 for c in bad if c["fixable"])
    if not bad:
        lines.append("all checks passed")
    else:
        lines.append(f"{len(bad)} problem{'s' if len(bad) > 1 else ''}"
                     + (f"; pvemond doctor --fix repairs {fixable}" if fixable else ""))
    return _text(lines)


def revoked(r: Dict[str, Any]) -> str:
    return f"revoked {r['token_id']}: its consumer gets 401 from now on\n"


def uninstall(r: Dict[str, Any]) -> str:
    word = "would" if r["dry_run"] else "did"
    lines = [f"{s['subject']}: {word} {CHANGE[s['change']]}" if s["change"] in ("remove",)
             else f"{s['subject']}: {CHANGE[s['change']]}" for s in r["steps"]]
    lines += [f"  - {f}" for s in r["steps"] for f in s["findings"]]
    return _text(lines)


def rotation_warning(t: Dict[str, Any]) -> str:
    holder = (f"the consumer holding the current secret ({t['delivered_to']}, "
              f"{_date(t['delivered_at'])})" if t.get("delivered_to")
              else "whoever holds the current secret")
    return (f"rotating {t['token_id']}: {holder} gets 401 from the moment the new secret is "
            "minted until its config has the new one")


def _date(epoch: Optional[float]) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch)) if epoch else "-"


def _at(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def _text(lines: List[str]) -> str:
    return "\n".join(lines) + "\n"
