"""pvemond doctor: the troubleshooting list, run from the node.

Each check names what is wrong, the symptom it causes on the monitoring host (401, 403, empty
lists, timeouts) and the fix. The access checks come from the converge plan, so whatever they
find, `--fix` (a converge) repairs; the rest (pveproxy, certificate, firewall, quorum) need the
admin, and say how.
"""
from __future__ import annotations

import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from pvemond import access
from pvemond.config import Config
from pvemond.pve import node, pveproxy, served, strictca
from pvemond.pve.usercfg import AccessState, Token

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
PROBE_TOKEN = "pvemond-doctor"  # the throw-away token that proves authentication end to end
SOON = 14 * 86400  # a token or certificate expiring within this is worth a warning
FIX = "pvemond doctor --fix"


@dataclass(frozen=True)
class Check:
    id: str
    status: str
    what: str
    symptom: str = ""
    fix: str = ""
    fixable: bool = False  # `pvemond doctor --fix` repairs it

    def json(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Probe:
    """What the throw-away token saw over HTTPS: a status, and its privileges on the ACL path."""

    status: int
    privileges: frozenset = frozenset()
    error: str = ""


@dataclass(frozen=True)
class Inputs:
    cfg: Config
    version: Optional[node.PveVersion]
    cluster: Optional[node.Cluster]
    problem: Optional[str]
    state: AccessState
    meta: Dict[str, Dict[str, Any]]  # pvemond's token metadata, by full token id
    claim_open: bool                 # a bootstrap holds the claim port right now
    now: float

    def desired(self, token: Optional[str] = None, privsep: Optional[bool] = None) -> access.Desired:
        return access.Desired.from_config(self.cfg.access, token=token, privsep=privsep)


def run(i: Inputs, probe: Callable[[], Probe]) -> List[Check]:
    if i.problem:
        return [Check("node", FAIL, i.problem, "nothing can be set up or checked", i.problem)]
    checks = [Check("node", PASS, f"Proxmox VE {i.version.version if i.version else '(unknown)'}"),
              quorum(i), privileges(i), *access_checks(i)]
    reach, probed = pveproxy_check(i)
    checks += [reach, token_auth(i, checks, reach, probe), certificate(i, probed),
               firewall(i), claim_port(i)]
    return checks


def token_desires(i: Inputs) -> List[access.Desired]:
    """Each token as it should be: privsep as minted by pvemond, else as found (an ACL of its
    own then makes it right)."""
    return [i.desired(t.name, bool(i.meta.get(t.full_id, {}).get("privsep", t.privsep)))
            for t in tokens(i)]


def tokens(i: Inputs) -> List[Token]:
    user = i.state.users.get(i.cfg.access.user)
    return [t for t in (user.tokens if user else ()) if t.name != PROBE_TOKEN]


# --- node and configuration -------------------------------------------------------------------

def quorum(i: Inputs) -> Check:
    c = i.cluster
    if c is None or c.name is None:
        return Check("quorum", PASS, "standalone node (no cluster, always quorate)")
    online = sum(n.online for n in c.nodes)
    if c.quorate:
        return Check("quorum", PASS, f"cluster {c.name} is quorate ({online} of {len(c.nodes)} nodes online)")
    return Check("quorum", FAIL, f"cluster {c.name} has no quorum ({online} of {len(c.nodes)} "
                 "nodes online), so /etc/pve is read-only",
                 "none for existing tokens; but nothing can be created, repaired or rotated",
                 "bring the other nodes back, or check corosync: pvecm status")


def privileges(i: Inputs) -> Check:
    try:
        access.check(i.desired(), i.version)
    except access.PlanError as exc:
        return Check("privileges", FAIL, str(exc), "pvemond-bootstrap and --fix refuse to run",
                     f"edit access.privileges in {i.cfg.source}")
    return Check("privileges", PASS, f"the configured privileges ({', '.join(sorted(i.desired().privileges))}) "
                 f"exist on Proxmox VE {i.version.version if i.version else '(unknown)'}")


# --- the access itself, from the converge plan -----------------------------------------------

def access_checks(i: Inputs) -> List[Check]:
    d = i.desired()
    steps = {s.part: s for s in access.plan(i.state, d, mint=False, now=i.now).steps}
    out = [_from_findings("role", f"role {d.role} grants {', '.join(sorted(d.privileges))}",
                          steps["role"].findings, _hand(steps["role"], d)),
           _from_findings("user", f"user {d.user} exists, enabled, not expired",
                          steps["user"].findings, _hand(steps["user"], d)),
           _from_findings("acl", f"{d.user} holds {d.role} on {d.acl_path} (propagating)",
                          [f for f in steps["acl"].findings if f.subject == d.user],
                          _hand(steps["acl"], d))]
    desires = token_desires(i)
    if not desires:
        out.append(Check("tokens", FAIL, f"{d.user} has no API token yet",
                         "the monitoring host has nothing to log in with",
                         "pvemond-bootstrap (one token per consumer: --token NAME)"))
    return out + [_token_check(i, td) for td in desires]


def _token_check(i: Inputs, d: access.Desired) -> Check:
    steps = {s.part: s for s in access.plan(i.state, d, mint=False, now=i.now).steps}
    found = [*steps["token"].findings, *(f for f in steps["acl"].findings if f.subject == d.token_id)]
    cid = f"token:{d.token}"
    if found:
        return _from_findings(cid, "", found, _hand(steps["acl"] if not steps["token"].findings
                                                     else steps["token"], d))
    token = next(t for t in tokens(i) if t.name == d.token)
    left = token.expire - i.now if token.expire else None
    if left is not None and left < SOON:
        return Check(cid, WARN, f"token {d.token_id} expires in {left / 86400:.0f} days "
                     f"({time.strftime('%Y-%m-%d', time.gmtime(token.expire))})",
                     "401 on the monitoring host from then on",
                     f"pvemond rotate {d.token} (with access.token_expire moved on in {i.cfg.source})")
    sep = "privsep 1 with its own ACL" if d.privsep else "privsep 0"
    return Check(cid, PASS, f"token {d.token_id} ({sep}, expires "
                 f"{time.strftime('%Y-%m-%d', time.gmtime(token.expire)) if token.expire else 'never'})")


def _from_findings(cid: str, ok: str, found, hand: str) -> Check:
    if not found:
        return Check(cid, PASS, ok)
    symptoms = list(dict.fromkeys(f.symptom for f in found))
    return Check(cid, FAIL, "; ".join(f.what for f in found), "; ".join(symptoms),
                 f"{FIX} (by hand: {hand})", fixable=True)


def _hand(step: access.Step, d: access.Desired) -> str:
    """The pveum commands an admin would type for this part: the very commands --fix runs."""
    return "; ".join(str(c) for c in step.commands) or "nothing (no pveum run repairs it)"


# --- pveproxy, the certificate, a real login ---------------------------------------------------

def pveproxy_check(i: Inputs) -> Tuple[Check, Optional[pveproxy.Served]]:
    """The check, and what was probed (the certificate check reads it) unless unreachable."""
    url = i.cfg.node.pveproxy_url
    try:
        probed = pveproxy.probe(url)
    except pveproxy.Unreachable as exc:
        return Check("pveproxy", FAIL, str(exc),
                     f"connection refused or timeouts on port {pveproxy_port(url)}",
                     "systemctl status pveproxy; systemctl restart pveproxy"), None
    if probed.status != 401:
        return Check("pveproxy", WARN, f"{url} answered {probed.status} to an anonymous request "
                     "(pveproxy answers 401)", "the monitoring host may be talking to something else",
                     f"check node.pveproxy_url in {i.cfg.source}"), probed
    return Check("pveproxy", PASS, f"pveproxy answers at {url}"), probed


def token_auth(i: Inputs, earlier: List[Check], reach: Check,
               probe: Callable[[], Probe]) -> Check:
    blockers = [c.id for c in earlier if c.id in ("quorum", "user") and c.status == FAIL]
    if reach.status == FAIL or blockers:
        why = ", ".join(blockers + (["pveproxy"] if reach.status == FAIL else []))
        return Check("token_auth", SKIP, f"not tried: {why} failed first")
    p = probe()
    want = i.desired().privileges
    if p.error:
        return Check("token_auth", FAIL, f"a throw-away token could not be tried: {p.error}",
                     "unknown: whether tokens log in was not proven",
                     "mend the other failed checks first; then see journalctl -u pvemond")
    if p.status == 401:
        return Check("token_auth", FAIL, "pveproxy refused a freshly minted token (401) though "
                     "user, role and ACL look right", "401 on the monitoring host with the right secret",
                     "journalctl -u pveproxy -u pve-cluster; systemctl restart pve-cluster pveproxy")
    if p.status != 200 or want - p.privileges:
        return Check("token_auth", FAIL, f"over HTTPS a token of {i.cfg.access.user} got {p.status} "
                     f"and lacks {', '.join(sorted(want - p.privileges)) or 'nothing'}",
                     "403 and empty lists", f"{FIX}, then pvemond doctor again")
    return Check("token_auth", PASS, f"a throw-away token of {i.cfg.access.user} logged in over "
                 f"HTTPS and holds {', '.join(sorted(want))} on {i.cfg.access.acl_path}")


def certificate(i: Inputs, probed: Optional[pveproxy.Served]) -> Check:
    if probed is None:
        return Check("certificate", SKIP, "not tried: pveproxy is unreachable")
    pve_dir, url = i.cfg.node.pve_dir, i.cfg.node.pveproxy_url
    cert = served.local(pve_dir)
    if probed.der != cert.der:
        return Check("certificate", FAIL, f"pveproxy serves a certificate other than {cert.file}",
                     "TLS or pin errors after a certificate change", "systemctl reload-or-restart pveproxy")
    problems = _cert_problems(i, cert)
    if problems:
        return problems
    ca = served.trust(pve_dir, i.cfg.daemon.state_dir)
    if ca is not None and pveproxy.verifies(url, ca):
        return Check("certificate", PASS, f"{cert.file.name}, issued by the cluster CA, valid and "
                     "naming this node's addresses" + _legacy_ca_note(pve_dir, ca))
    if pveproxy.verifies(url, None):  # e.g. ACME: consumers get system trust (payload version 2)
        return Check("certificate", PASS, f"{cert.file.name}, issued by a CA in the system trust "
                     "store (not the cluster CA), valid and naming this node's addresses; configs "
                     "written before it came must drop their pve-root-ca.pem")
    return Check("certificate", FAIL, f"{cert.file.name} is issued by neither the cluster CA nor a "
                 "trusted CA", "TLS verification errors on the monitoring host",
                 "pvenode cert delete (back to the cluster CA's certificate), or install a valid one")


def _legacy_ca_note(pve_dir: str, ca: str) -> str:
    if not strictca.is_reissued(Path(ca)):
        return ""
    return (f"; the cluster CA predates pve-cluster 9.1.2 (no keyUsage), which Python 3.13+ "
            f"clients (Debian 13, prometheus-pve-exporter on new Python) reject: pvemond hands "
            f"consumers a copy re-issued with keyUsage for the same key ({ca}); a config that "
            f"points at {node.ca_file(pve_dir)} itself should use that copy")


def _cert_problems(i: Inputs, cert: served.Cert) -> Optional[Check]:
    name = cert.file.name
    renew = ("renew it: pvenode acme cert renew (or install a new one)" if cert.custom
             else "pvecm updatecerts --force; systemctl restart pveproxy")
    if cert.expires is not None and cert.expires < i.now:
        return Check("certificate", FAIL, f"{name} expired on {cert.not_after}",
                     "TLS errors on the monitoring host (certificate has expired)", renew)
    names = set(cert.names())
    mine = [e["address"] for e in served.endpoints(i.cluster, i.cfg.node.pve_dir)
            if i.cluster and e["name"] == i.cluster.nodename]
    missing = [a for a in mine if a not in names]
    if missing:
        return Check("certificate", FAIL, f"{name} does not name {', '.join(missing)} "
                     f"(it names {', '.join(sorted(names)) or 'nothing'})",
                     "hostname mismatch on monitoring hosts that verify the address", renew)
    if cert.expires is not None and cert.expires - i.now < SOON:
        return Check("certificate", WARN, f"{name} expires on {cert.not_after}",
                     "TLS errors on the monitoring host from then on", renew)
    return None


# --- the network around it ----------------------------------------------------------------------

def pveproxy_port(url: str) -> int:
    """The port of node.pveproxy_url (8006 unless the admin moved pveproxy behind another)."""
    return urlsplit(url).port or 443


def firewall(i: Inputs) -> Check:
    name = i.cluster.nodename if i.cluster else ""
    if not node.firewall_enabled(i.cfg.node.pve_dir, name):
        return Check("firewall", PASS, "the Proxmox firewall is off for this node")
    port = pveproxy_port(i.cfg.node.pveproxy_url)
    why = node.firewall_lets_in(i.cfg.node.pve_dir, name, port)
    if why:
        return Check("firewall", PASS, f"the Proxmox firewall is on and lets {port} in ({why})")
    # PVE's default rules open 8006 (not another port) to the management ipset.
    what, symptom = ((f"the Proxmox firewall is on; {port} is open only to the management ipset "
                      "(this node's local network)", "timeouts from a monitoring host outside that "
                      "network") if port == 8006 else
                     (f"the Proxmox firewall is on and drops port {port} (node.pveproxy_url)",
                      "timeouts on the monitoring host"))
    return Check("firewall", WARN, what, symptom,
                 node.firewall_rule(name, port, ("MONITORING-HOST",), "monitoring"))


def claim_port(i: Inputs) -> Check:
    c = i.cfg.claim
    problem = _bind_problem(c.listen, c.port)
    if problem and i.claim_open:
        return Check("claim_port", PASS, f"port {c.port} is held by an open claim right now")
    if problem:
        return Check("claim_port", FAIL, f"cannot listen on {c.listen} port {c.port}: {problem}",
                     "pvemond-bootstrap cannot open its claim listener",
                     f"free it (ss -ltnp 'sport = :{c.port}') or set claim.port in {i.cfg.source}")
    name = i.cluster.nodename if i.cluster else ""
    return claim_firewall(i.cfg.node.pve_dir, name, c.port, c.allow) or \
        Check("claim_port", PASS, f"port {c.port} is free for the claim listener")


def claim_firewall(pve_dir: str, nodename: str, port: int, allow) -> Optional[Check]:
    """The warning when the Proxmox firewall drops the claim port (doctor, and each bootstrap
    for the port and --allow it really uses), else None."""
    if node.firewall_enabled(pve_dir, nodename) and \
            not node.firewall_lets_in(pve_dir, nodename, port):
        return Check("claim_port", WARN, f"the Proxmox firewall drops port {port}",
                     "pvemond-claim times out on the monitoring host",
                     node.firewall_rule(nodename, port, allow, "pvemond claim"))
    return None


def _bind_problem(host: str, port: int) -> Optional[str]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no obstacle
        try:
            s.bind((host, port))
        except PermissionError:
            return None  # below 1024 the sandboxed daemon may not bind; bootstrap (root) can
        except OSError as exc:
            return exc.strerror or str(exc)
    return None
