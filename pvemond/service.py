"""The daemon's use cases, without HTTP: node facts, converge, mint + verify, hand-outs,
revoke, uninstall, doctor.

Every change runs under the ledger's one lock (handouts.py), so two bootstraps never race pveum
into "already exists" and the sweeper never revokes a token a delivery just claimed. Every change
is written to the audit log with the caller and the result, never with a secret.
"""
from __future__ import annotations

import functools
import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from pvemond import __version__, access, changes, doctor, tlspin
from pvemond.contract import Node as PayloadNode, Payload
from pvemond.config import Config
from pvemond.errors import ServiceError, service_error
from pvemond.handouts import Handout, Ledger, TOKEN_META, clock_text
from pvemond.pve import api, node, served, usercfg
from pvemond.pve import pveum as P
from pvemond.pve import dpkg
from pvemond.secret import Secret

__all__ = ["NodeService", "ServiceError", "Minted", "Facts"]

audit = logging.getLogger("pvemond.audit")
log = logging.getLogger("pvemond")
MIN_HANDOUT_TTL = 30


@dataclass(frozen=True)
class Facts:
    version: Optional[node.PveVersion]
    cluster: Optional[node.Cluster]
    problem: Optional[str]  # why this is not a usable PVE node, in one sentence


@dataclass
class Minted:
    """A fresh secret and everything a consumer needs besides it."""

    token_id: str
    secret: Secret
    steps: List[Dict[str, Any]]
    how: str
    handout: str
    deadline: float
    payload: Dict[str, Any]
    verified: Dict[str, Any]  # {path, https}: what the verification proved
    node: Dict[str, Any]  # bootstrap_facts: what the bootstrap tells the admin about this node


def _apart(left: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A change: run in a change process (changes.run) where the service keeps changes apart;
    `left` says what the change leaves behind if that process is killed before it answers."""
    def apart(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def run(self: "NodeService", *args: Any, **kwargs: Any) -> Any:
            if self.apart and not changes.inside():
                return changes.run(method, self, *args, left=left, **kwargs)
            return method(self, *args, **kwargs)
        return run
    return apart


class NodeService:
    def __init__(self, cfg: Config, clock=time.time, apart: bool = False):
        """`apart`: every change runs in a child process (the daemon's worker; changes.py says
        why); off, in the caller's thread (tests, the Flask test client)."""
        self.cfg = cfg
        self.clock = clock
        self.apart = apart
        self.pveum = P.Pveum(cfg.node.pveum, cfg.node.pveum_timeout)
        self.caps = access.Capabilities()
        self.ledger = Ledger(cfg.daemon.state_dir, clock)

    # -- facts -----------------------------------------------------------------------------
    def facts(self) -> Facts:
        n = self.cfg.node
        cluster = node.read_members(n.pve_dir)
        if not os.access(n.pveum, os.X_OK):
            problem = f"{n.pveum} not found: this is not a Proxmox VE node"
        elif not node.pmxcfs_mounted(n.pve_dir):
            problem = P.PMXCFS_DOWN
        else:
            problem = None
        return Facts(node.pve_version(n.pvecfg), cluster, problem)

    def health(self, f: Optional[Facts] = None) -> Dict[str, Any]:
        f = f or self.facts()
        return {"version": __version__, "pve_node": f.problem is None, "problem": f.problem,
                "pve_version": f.version.version if f.version else None}

    def status(self) -> Dict[str, Any]:
        f = self.facts()
        out: Dict[str, Any] = {"health": self.health(f), "cluster": _cluster_json(f.cluster)}
        if f.problem:
            return out
        d = self.desired()
        state = usercfg.read(self.cfg.node.pve_dir)
        plan = access.plan(state, d, mint=False, now=self.clock())
        out["access"] = {"desired": _desired_json(d), "steps": [s.describe() for s in plan.steps],
                         "findings": plan.findings()}
        out["tokens"] = self.tokens(state)
        out["handouts"] = [h.json() for h in self.ledger.snapshot().handouts]
        return out

    def desired(self, token: Optional[str] = None, privsep: Optional[bool] = None) -> access.Desired:
        return access.Desired.from_config(self.cfg.access, token=token, privsep=privsep)

    # -- changes ---------------------------------------------------------------------------
    @_apart("what it set up so far stays")
    def converge(self, *, caller: str, dry_run: bool = False, token: Optional[str] = None,
                 privsep: Optional[bool] = None) -> Dict[str, Any]:
        d = self.desired(token, privsep)
        with self.ledger.lock():
            plan = self._plan(d, mint=False)
            if dry_run:
                return {"dry_run": True, "steps": [s.describe() for s in plan.steps]}
            applied = self._apply(plan, caller, "converge")
        return {"dry_run": False, "steps": [s.describe() for s in applied.steps]}

    def plan_mint(self, *, token: Optional[str] = None, privsep: Optional[bool] = None,
                  rotate: bool = False) -> Dict[str, Any]:
        """What a mint would change, written nowhere (an existing token is kept unless rotated)."""
        d = self.desired(token, privsep)
        exists = self._holder(d) is not None
        plan = self._plan(d, mint=rotate or not exists)
        return {"dry_run": True, "steps": [s.describe() for s in plan.steps],
                "kept": exists and not rotate}

    @_apart("a token it made is revoked within seconds")
    def mint(self, *, caller: str, token: Optional[str] = None, privsep: Optional[bool] = None,
             handout_ttl: int = 660, rotate: bool = False, owner: Optional[int] = None,
             claim_port: Optional[int] = None, claim_allow: Sequence[str] = ()) -> Minted:
        """Converge, mint a secret, verify it, and open a hand-out that ends delivered or revoked:
        revoked when `owner` (the asking process) dies, or after `handout_ttl` seconds. An
        existing token gets a new secret only with `rotate`: its consumer loses the old one."""
        ttl = self.handout_ttl(handout_ttl)
        d = self.desired(token, privsep)
        with self.ledger.lock():
            self.ledger.sweep(self._revoke_record)  # frees a name whose bootstrap died
            facts = self._require_writable(d)
            self.ledger.check_free(d.token_id)
            holder = self._holder(d)
            if holder is not None and not rotate:
                raise _kept(d, holder)
            plan = self._plan(d, mint=True, facts=facts)
            if not isinstance(next(op for s in plan.steps for op in s.ops), access.Mint):
                # pveum writes before the intent: prove the state disk first. Where the mint is
                # the first write, the intent itself is that proof.
                self.ledger.check_writable()
            return self._mint(d, caller, owner, ttl, holder is not None, facts, plan,
                              (claim_port, tuple(claim_allow)))

    def finish_handout(self, handout_id: str, *, caller: str, delivered: bool,
                       to: str = "") -> Dict[str, Any]:
        if delivered:
            h = self.ledger.deliver(handout_id, to or "unknown", caller)
            return {"token_id": h.token_id, "delivered": True}
        with self.ledger.lock():
            h = next((h for h in self.ledger.snapshot().handouts if h.id == handout_id), None)
            revoked = self.ledger.cancel(handout_id, self._revoke_record,
                                         f"cancelled by {caller}: {to or 'no reason given'}")
        return {"token_id": h.token_id if h else None, "delivered": False, "revoked": revoked}

    @_apart("the token may still be there")
    def revoke(self, token: str, *, caller: str) -> Dict[str, Any]:
        d = self.desired(token)
        with self.ledger.lock():
            self._require_writable(d)
            self.ledger.sweep(self._revoke_record)
            self.ledger.check_free(d.token_id, "revoking it")
            step = access.token_teardown(usercfg.read(self.cfg.node.pve_dir), d)
            if step.change == access.ABSENT:
                raise ServiceError("no_such_token", f"{d.user} has no token {token} "
                                   "(pvemond tokens lists them)", 404)
            self._apply(access.Plan(d, (step,)), caller, "revoke")
            self.ledger.forget(d.token_id)
        return {"token_id": d.token_id, "revoked": True}

    @_apart("what it removed so far stays removed")
    def uninstall(self, *, caller: str, dry_run: bool = False) -> Dict[str, Any]:
        """Remove the tokens, ACLs, user and role pvemond manages; nothing else."""
        d = self.desired()
        if d.user == "root@pam":
            raise ServiceError("refused", "access.user is root@pam, which pvemond never removes", 422)
        with self.ledger.lock():
            self._require_writable(d, check_privileges=False)
            plan = access.teardown(usercfg.read(self.cfg.node.pve_dir), d)
            if dry_run:
                return {"dry_run": True, "steps": [s.describe() for s in plan.steps]}
            self.ledger.sweep(self._revoke_record)
            self.ledger.check_free(doing="uninstalling")
            self._apply(plan, caller, "uninstall")
            self.ledger.forget_all()
        return {"dry_run": False, "steps": [s.describe() for s in plan.steps]}

    @_apart("a repair (--fix) may be half done")
    def doctor(self, *, caller: str, fix: bool = False) -> Dict[str, Any]:
        """Run every check; with `fix`, converge what the checks found fixable and check again."""
        checks = self._checks()
        fixed: List[Dict[str, Any]] = []
        failed = {c.id for c in checks if c.status == doctor.FAIL}
        writable = not failed & {"node", "quorum", "privileges"}  # else a converge is refused
        if fix and writable and any(c.fixable and c.id in failed for c in checks):
            fixed = self._fix(caller)
            checks = self._checks()
        worst = next((s for s in (doctor.FAIL, doctor.WARN) if any(c.status == s for c in checks)),
                     doctor.PASS)
        return {"result": worst, "checks": [c.json() for c in checks], "fixed": fixed}

    def sweep(self) -> List[str]:
        """Revoke every token whose hand-out can no longer be delivered: its bootstrap died, its
        mint was cut off, or its deadline passed. The daemon runs it at start and every second."""
        return self.ledger.sweep(self._revoke_record)

    # -- reading ---------------------------------------------------------------------------
    def tokens(self, state: Optional[usercfg.AccessState] = None) -> List[Dict[str, Any]]:
        state = state or usercfg.read(self.cfg.node.pve_dir)
        user = state.users.get(self.cfg.access.user)
        stored = self.ledger.snapshot()
        open_until = {h.token_id: h.deadline for h in stored.handouts}
        return [{**dict.fromkeys(TOKEN_META), **stored.tokens.get(t.full_id, {}),
                 "managed": t.full_id in stored.tokens, "token_id": t.full_id, "name": t.name,
                 "privsep": int(t.privsep), "expire": t.expire, "comment": t.comment,
                 "handout_until": open_until.get(t.full_id)}
                for t in (user.tokens if user else ()) if t.name != doctor.PROBE_TOKEN]

    def handout_ttl(self, ttl: int) -> int:
        """The hand-out's lifetime if allowed: refused, never clamped."""
        most = self.cfg.daemon.handout_timeout
        if not MIN_HANDOUT_TTL <= ttl <= most:
            raise ServiceError("bad_request", f"handout_ttl must be between {MIN_HANDOUT_TTL} and "
                               f"{most} seconds (daemon.handout_timeout), not {ttl}")
        return ttl

    # -- internals -------------------------------------------------------------------------
    def _holder(self, d: access.Desired) -> Optional[Dict[str, Any]]:
        """What is known of the token if it exists (a consumer may hold its secret), else None."""
        user = usercfg.read(self.cfg.node.pve_dir).users.get(d.user)
        if not user or not user.token(d.token):
            return None
        meta = self.ledger.snapshot().tokens.get(d.token_id)
        return {**dict.fromkeys(TOKEN_META), **(meta or {}), "managed": meta is not None}

    def _mint(self, d: access.Desired, caller: str, owner: Optional[int], ttl: int,
              rotating: bool, facts: Facts, plan: access.Plan,
              claim: Tuple[Optional[int], Tuple[str, ...]]) -> Minted:
        """Apply the plan; the ledger records the intent right before pveum makes the secret,
        and closes it (revoking what was made) if anything after that fails."""
        intent: List[Handout] = []

        def before_mint() -> None:
            intent.append(self.ledger.intend(
                token_id=d.token_id, user=d.user, token=d.token, caller=caller, owner=owner,
                ttl=ttl, privsep=d.privsep, rotating=rotating))

        applier = access.Applier(self.pveum, self.caps, before_mint=before_mint)
        # What the verification needs is made while pveum works: the CA file (a legacy CA's
        # first re-issue is an openssl run), the name to verify, a TLS context.
        target = _Soon(self._https_target if self.cfg.node.verify_https else lambda: None)
        try:
            applied = self._apply(plan, caller, "mint", applier)
            privs = self._verify(d, applied.minted, target.result())
            told = self.bootstrap_facts(facts, *claim)
            h = self.ledger.offer(intent[0], applied.how)
        except BaseException:
            if intent:
                self._give_up(intent[0], applier)
            raise
        return Minted(d.token_id, applied.minted.secret, [s.describe() for s in applied.steps],
                      applied.how, h.id, h.deadline, self._payload(d, privs, facts),
                      {"path": d.acl_path, "https": self.cfg.node.verify_https}, told)

    def bootstrap_facts(self, f: Facts, claim_port: Optional[int] = None,
                        claim_allow: Sequence[str] = ()) -> Dict[str, Any]:
        """What pvemond-bootstrap says about this node, so that it reads nothing of /etc/pve
        itself: the node's name, the CA file a consumer config on this node points at (the
        strict re-issue for a legacy CA; None: the system CAs) and, for the claim port the
        bootstrap listens on, doctor's firewall warning."""
        name = f.cluster.nodename if f.cluster else None
        warn = claim_port and doctor.claim_firewall(self.cfg.node.pve_dir, name or "",
                                                    claim_port, claim_allow)
        return {"name": name, "ca_file": self._trust(),
                "warnings": [f"{warn.what} ({warn.symptom}); allow the monitoring host with: "
                             f"{warn.fix}"] if warn else []}

    def _give_up(self, h: Handout, applier: access.Applier) -> None:
        """A mint that failed after its intent: revoke what it made. A rotation whose pveum run
        itself failed left the old secret as it was, so its consumer keeps it."""
        kept = h.rotating and applier.minting and applier.minted is None
        try:
            self.ledger.abandon(h, (lambda _: False) if kept else self._revoke_record,
                                "the old secret is unchanged" if kept else "the mint failed")
        except Exception as exc:  # the record stays; the next sweep revokes
            audit.error("revoke token=%s after a failed mint failed: %s (will retry)", h.token_id, exc)

    @_apart("the token stays until a sweep revokes it")
    def _revoke_record(self, h: Handout) -> bool:
        """Remove a hand-out's token with its own ACLs; False if it is already gone."""
        d = access.Desired.from_config(self.cfg.access, token=h.token, user=h.user)
        step = access.token_teardown(usercfg.read(self.cfg.node.pve_dir), d)
        if step.change == access.ABSENT:
            return False
        self._apply(access.Plan(d, (step,)), h.caller, "revoke")
        return True

    def _require_writable(self, d: access.Desired, check_privileges: bool = True) -> Facts:
        f = self.facts()
        if f.problem:
            raise ServiceError("not_a_pve_node", f.problem, 503)
        if f.cluster and not f.cluster.quorate:
            raise ServiceError("no_quorum", "this node has no quorum, so the cluster configuration "
                               "is read-only; run it on a quorate node", 503)
        try:
            if check_privileges:
                access.check(d, f.version)
        except access.PlanError as exc:
            raise ServiceError("unsupported_privilege", str(exc), 422) from None
        return f

    def _plan(self, d: access.Desired, mint: bool, facts: Optional[Facts] = None) -> access.Plan:
        self.caps.know((facts or self._require_writable(d)).version,
                       dpkg.installed_version(self.cfg.node.dpkg_status, dpkg.ACCESS_CONTROL))
        state = usercfg.read(self.cfg.node.pve_dir)
        return access.plan(state, d, mint=mint, now=self.clock(), regenerate=self.caps.regenerate)

    def _apply(self, plan: access.Plan, caller: str, action: str,
               applier: Optional[access.Applier] = None) -> access.Applied:
        try:
            applied = (applier or access.Applier(self.pveum, self.caps)).apply(plan)
        except P.PveumError as exc:
            audit.warning("%s token=%s caller=%s result=failed error=%s", action,
                          plan.desired.token_id, caller, exc)
            raise service_error(exc) from None
        for step in applied.steps:
            if step.change != access.OK:
                audit.info("%s %s caller=%s change=%s findings=%s", action, step.subject, caller,
                           step.change, "; ".join(step.findings) or "-")
        return applied

    def _verify(self, d: access.Desired, minted: P.MintedToken,
                target: Optional[Tuple[Optional[str], Optional[str], ssl.SSLContext]]
                ) -> Dict[str, int]:
        """A real HTTPS call with the token (the real pveproxy, effective privileges on the ACL
        path) where it is on (`target`: _https_target()); pveum's view of the token only where
        it is off, since that run would prove nothing the HTTPS call does not."""
        if target is not None:
            return self._verify_https(d, minted, *target)
        try:
            privs = self.pveum.token_permissions(d.user, d.token, d.acl_path)
        except P.PveumError as exc:
            raise service_error(exc) from None
        missing = d.privileges - set(privs)
        if missing:
            raise ServiceError("verification_failed", f"the new token lacks "
                               f"{', '.join(sorted(missing))} on {d.acl_path} (pveum user token "
                               "permissions); the token was revoked", 502)
        return privs

    def _https_target(self) -> Tuple[Optional[str], Optional[str], ssl.SSLContext]:
        """The CA file pveproxy's certificate verifies against, the name it must cover (ACME:
        the FQDN, not 127.0.0.1) and a TLS context trusting that CA."""
        ca = self._trust()
        name = served.local_tls_name(self.cfg.node.pve_dir, self.cfg.node.pveproxy_url)
        return ca, name, tlspin.context(ca)

    def _verify_https(self, d: access.Desired, minted: P.MintedToken, ca: Optional[str],
                      name: Optional[str], context: ssl.SSLContext) -> Dict[str, int]:
        """pveproxy's own answer: the token's effective privileges on the ACL path; raises unless
        every desired privilege is among them. One request: a 200 here is also the login."""
        url = self.cfg.node.pveproxy_url
        try:
            perms = api.get(url, f"/access/permissions?path={d.acl_path}", minted.full_id,
                            minted.secret.reveal(), cafile=ca, tls_name=name, context=context)
        except api.TlsRefused as exc:
            raise ServiceError("verification_failed", f"{exc}; the token was revoked", 502) from None
        except api.ApiUnreachable as exc:
            raise ServiceError("verification_failed", f"{exc} (is pveproxy running? "
                               "systemctl status pveproxy); the token was revoked", 502) from None
        if perms.status != 200:
            raise ServiceError("verification_failed", f"pveproxy at {url} answered "
                               f"{perms.status} {perms.reason} to the new token; the token was "
                               "revoked", 502)
        seen = (perms.data or {}).get(d.acl_path) or {}
        if d.privileges - set(seen):
            raise ServiceError("verification_failed", f"over HTTPS the token lacks "
                               f"{', '.join(sorted(d.privileges - set(seen)))}; the token was revoked", 502)
        return {p: int(seen[p]) for p in sorted(seen)}

    def _inputs(self) -> doctor.Inputs:
        f = self.facts()
        state = usercfg.read(self.cfg.node.pve_dir) if not f.problem else usercfg.AccessState()
        stored = self.ledger.snapshot()
        return doctor.Inputs(self.cfg, f.version, f.cluster, f.problem, state, stored.tokens,
                             bool(stored.handouts), self.clock())

    def _checks(self) -> List[doctor.Check]:
        i = self._inputs()
        return doctor.run(i, lambda: self._probe(i.state))

    def _fix(self, caller: str) -> List[Dict[str, Any]]:
        """Converge the configured access and each token as it should be (doctor.token_desires)."""
        changed = []
        for d in [self.desired(), *doctor.token_desires(self._inputs())]:
            with self.ledger.lock():
                applied = self._apply(self._plan(d, mint=False), caller, "fix")
            changed += [s.describe() for s in applied.steps if s.change != access.OK]
        return changed

    def _probe(self, state: usercfg.AccessState) -> doctor.Probe:
        """Mint a throw-away token (10 minutes), log in with it over HTTPS, remove it."""
        d = self.desired(doctor.PROBE_TOKEN, privsep=False)
        applier = access.Applier(self.pveum)
        with self.ledger.lock():
            try:
                if access.token_teardown(state, d).change == access.REMOVE:
                    applier.revoke(d)  # left over by an interrupted run
                minted = self.pveum.token_add(d.user, d.token, privsep=False,
                                              expire=int(self.clock()) + 600,
                                              comment="pvemond doctor probe, removed at once")
            except P.PveumError as exc:
                return doctor.Probe(0, error=str(exc))
            audit.info("doctor probe token=%s minted (expires in 600 s, removed at once)", d.token_id)
            try:
                r = api.get(self.cfg.node.pveproxy_url, f"/access/permissions?path={d.acl_path}",
                            minted.full_id, minted.secret.reveal(), cafile=self._trust(),
                            tls_name=served.local_tls_name(self.cfg.node.pve_dir,
                                                           self.cfg.node.pveproxy_url))
                return doctor.Probe(r.status, frozenset(((r.data or {}).get(d.acl_path) or {})))
            except api.ApiUnreachable as exc:
                return doctor.Probe(0, error=str(exc))
            finally:
                self._drop_probe(applier, d)

    @staticmethod
    def _drop_probe(applier: access.Applier, d: access.Desired) -> None:
        try:
            applier.revoke(d)
        except P.PveumError as exc:  # it expires on its own within 10 minutes
            audit.warning("doctor probe token=%s not removed: %s", d.token_id, exc)

    def _trust(self) -> Optional[str]:
        """The cluster CA file (its keyUsage re-issue when legacy) for PVE's own certificate;
        None, the system's trust store, for a custom one (ACME or `pvenode cert set`)."""
        return served.trust(self.cfg.node.pve_dir, self.cfg.daemon.state_dir)

    def _payload(self, d: access.Desired, privs: Dict[str, int], f: Facts) -> Dict[str, Any]:
        """What a consumer needs besides the secret: where to connect and how to trust it."""
        n, ca = self.cfg.node, self._trust()  # ca None: a custom certificate, the system's CAs
        pem = None if ca is None else Path(ca).read_text(encoding="ascii")
        return Payload(
            user=d.user, token_name=d.token, privsep=int(d.privsep),
            cluster=f.cluster.name if f.cluster else None,
            node=f.cluster.nodename if f.cluster else None,
            nodes=tuple(PayloadNode(**e) for e in served.endpoints(f.cluster, n.pve_dir)),
            ca_pem=pem and pem[pem.index("-----BEGIN"):],
            pve_version=f.version.version if f.version else None,
            fingerprint=served.local(n.pve_dir).fingerprint, privileges=privs).to_json()


class _Soon:
    """`call` running in a thread from now on; result() waits for it and returns what it
    returned or raises what it raised, in the caller's thread."""

    def __init__(self, call: Callable[[], Any]):
        self._result: Any = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(call,), name="pvemond-soon",
                                        daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self._result = call()
        except BaseException as exc:  # handed to result(), raised there
            self._error = exc

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


def _kept(d: access.Desired, holder: Dict[str, Any]) -> ServiceError:
    """An existing token is never re-minted by a plain run: its consumer would get 401."""
    if holder["delivered_to"]:
        who = f"delivered to {holder['delivered_to']} at {clock_text(holder['delivered_at'])}"
    else:
        who = "made by pvemond" if holder["managed"] else "not made by pvemond; someone may use it"
    return ServiceError(
        "token_exists", f"token {d.token_id} exists ({who}); nothing was minted, so its consumer "
        f"keeps working. A new secret for it (the old one dies at once): pvemond rotate {d.token}; "
        "a token for another consumer: pvemond-bootstrap --token NAME", 409, token_id=d.token_id,
        delivered_to=holder["delivered_to"], delivered_at=holder["delivered_at"],
        managed=holder["managed"])


def _cluster_json(c: Optional[node.Cluster]) -> Optional[Dict[str, Any]]:
    if c is None:
        return None
    return {"name": c.name, "node": c.nodename, "quorate": c.quorate,
            "nodes": [{"name": n.name, "id": n.nodeid, "online": n.online, "ip": n.ip}
                      for n in c.nodes]}


def _desired_json(d: access.Desired) -> Dict[str, Any]:
    return {"user": d.user, "role": d.role, "privileges": sorted(d.privileges),
            "acl_path": d.acl_path, "propagate": d.propagate, "token": d.token,
            "privsep": int(d.privsep), "token_expire": d.token_expire}
