"""The daemon's work, without HTTP: node facts, converge, mint + verify, hand-outs, revoke.

Every change runs under one lock (a thread lock plus a file lock for extra workers), so two
bootstraps never race pveum into "already exists". Every change is written to the audit log
with the caller and the result, never with a secret.
"""
from __future__ import annotations

import fcntl
import logging
import os
import secrets as pysecrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from pvemond import __version__, access, doctor, formats
from pvemond.config import Config
from pvemond.pve import api, node, usercfg
from pvemond.pve import pveum as P
from pvemond.secret import Secret
from pvemond.state import StateStore

audit = logging.getLogger("pvemond.audit")
log = logging.getLogger("pvemond")


class ServiceError(Exception):
    """A failure the caller can act on: `code` for programs, the message for people."""

    def __init__(self, code: str, detail: str, status: int = 400):
        self.code, self.detail, self.status = code, detail, status
        super().__init__(detail)


_PVEUM_ERRORS = [  # (class, code, HTTP status): most specific first
    (P.NoQuorum, "no_quorum", 503),
    (P.NotAProxmoxNode, "not_a_pve_node", 503),
    (P.PveumTimeout, "pveum_timeout", 504),
    (P.NotRoot, "not_root", 500),
    (P.PveumError, "pveum_failed", 502),
]


def service_error(exc: P.PveumError) -> ServiceError:
    for cls, code, status in _PVEUM_ERRORS:
        if isinstance(exc, cls):
            return ServiceError(code, str(exc), status)
    raise AssertionError("unreachable")


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


class NodeService:
    def __init__(self, cfg: Config, clock=time.time):
        self.cfg = cfg
        self.clock = clock
        self.pveum = P.Pveum(cfg.node.pveum, cfg.node.pveum_timeout)
        self.caps = access.Capabilities()
        self.store = StateStore(cfg.daemon.state_dir)
        self._lock = threading.RLock()

    # -- facts -----------------------------------------------------------------------------
    def facts(self) -> Facts:
        n = self.cfg.node
        cluster = node.read_members(n.pve_dir)
        if not os.access(n.pveum, os.X_OK):
            problem = f"{n.pveum} not found: this is not a Proxmox VE node"
        elif not node.pmxcfs_mounted(n.pve_dir):
            problem = (f"the Proxmox cluster file system is not mounted at {n.pve_dir}: "
                       "start it with 'systemctl start pve-cluster'")
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
        out["handouts"] = self._pending()
        return out

    def desired(self, token: Optional[str] = None, privsep: Optional[bool] = None) -> access.Desired:
        return access.Desired.from_config(self.cfg.access, token=token, privsep=privsep)

    # -- changes ---------------------------------------------------------------------------
    def converge(self, *, caller: str, dry_run: bool = False, token: Optional[str] = None,
                 privsep: Optional[bool] = None) -> Dict[str, Any]:
        d = self.desired(token, privsep)
        with self._exclusive():
            plan = self._plan(d, mint=False)
            if dry_run:
                return {"dry_run": True, "steps": [s.describe() for s in plan.steps]}
            applied = self._apply(plan, caller, "converge")
        return {"dry_run": False, "steps": [s.describe() for s in applied.steps]}

    def plan_mint(self, *, token: Optional[str] = None,
                  privsep: Optional[bool] = None) -> Dict[str, Any]:
        """What a mint would change, written nowhere."""
        plan = self._plan(self.desired(token, privsep), mint=True)
        return {"dry_run": True, "steps": [s.describe() for s in plan.steps]}

    def mint(self, *, caller: str, token: Optional[str] = None, privsep: Optional[bool] = None,
             handout_ttl: int = 660) -> Minted:
        """Converge, mint a secret, verify it, and open a hand-out that must be finished
        (delivered or cancelled) before `handout_ttl` seconds, or the token is revoked."""
        self.sweep()
        d = self.desired(token, privsep)
        with self._exclusive():
            busy = self._pending_for(d.token_id)
            if busy:
                raise ServiceError(
                    "handout_in_progress",
                    f"token {d.token_id} is being handed out right now (started "
                    f"{_clock(busy['minted_at'])} by {busy['caller']}, open until "
                    f"{_clock(busy['deadline'])}); re-minting it would kill that secret. Wait for "
                    "it to finish, or use another token name (--token NAME)", 409)
            facts = self._require_writable(d)
            applied = self._apply(self._plan(d, mint=True, facts=facts), caller, "mint")
            minted = applied.minted
            try:
                privs = self._verify(d, minted)
            except ServiceError:
                access.Applier(self.pveum).revoke(d)
                audit.warning("revoke token=%s caller=%s reason=verification-failed", d.token_id, caller)
                raise
            handout = self._open_handout(d, caller, applied.how, handout_ttl)
        return Minted(d.token_id, minted.secret, [s.describe() for s in applied.steps], applied.how,
                      handout["id"], handout["deadline"], self._payload(d, privs, facts))

    def finish_handout(self, handout_id: str, *, caller: str, delivered: bool,
                       to: str = "") -> Dict[str, Any]:
        with self._exclusive():
            h = self.store.load()["handouts"].get(handout_id)
            if h is None:
                raise ServiceError("no_such_handout",
                                   f"no open hand-out {handout_id} (finished, or revoked when it "
                                   "timed out)", 404)
            if delivered:
                self._close_handout(h, delivered_to=to or "unknown")
                audit.info("deliver token=%s to=%s caller=%s", h["token_id"], to, caller)
                return {"token_id": h["token_id"], "delivered": True}
            revoked = self._revoke_handout(h, f"cancelled by {caller}: {to or 'no reason given'}")
            return {"token_id": h["token_id"], "delivered": False, "revoked": revoked}

    def revoke(self, token: str, *, caller: str) -> Dict[str, Any]:
        d = self.desired(token)
        with self._exclusive():
            self._require_writable(d)
            busy = self._pending_for(d.token_id)
            if busy:
                raise ServiceError("handout_in_progress", f"token {d.token_id} is being handed out "
                                   f"right now (by {busy['caller']}, until {_clock(busy['deadline'])}); "
                                   "cancel that pvemond-bootstrap (Ctrl-C) instead", 409)
            step = access.token_teardown(usercfg.read(self.cfg.node.pve_dir), d)
            if step.change == access.ABSENT:
                raise ServiceError("no_such_token", f"{d.user} has no token {token} "
                                   "(pvemond tokens lists them)", 404)
            self._apply(access.Plan(d, (step,)), caller, "revoke")
            self.store.update(lambda s: _forget(s, d.token_id))
        return {"token_id": d.token_id, "revoked": True}

    def uninstall(self, *, caller: str, dry_run: bool = False) -> Dict[str, Any]:
        """Remove the tokens, ACLs, user and role pvemond manages; nothing else."""
        d = self.desired()
        if d.user == "root@pam":
            raise ServiceError("refused", "access.user is root@pam, which pvemond never removes", 422)
        with self._exclusive():
            self._require_writable(d, check_privileges=False)
            plan = access.teardown(usercfg.read(self.cfg.node.pve_dir), d)
            busy = self._open_handouts()
            if dry_run:
                return {"dry_run": True, "steps": [s.describe() for s in plan.steps]}
            if busy:
                raise ServiceError("handout_in_progress", f"token {busy[0]['token_id']} is being "
                                   "handed out right now; wait for its pvemond-bootstrap to finish, "
                                   "or cancel it (Ctrl-C)", 409)
            self._apply(plan, caller, "uninstall")
            self.store.update(lambda s: (s["tokens"].clear(), s["handouts"].clear()))
        return {"dry_run": False, "steps": [s.describe() for s in plan.steps]}

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
        """Revoke tokens whose hand-out timed out (a bootstrap killed with SIGKILL, a lost host)."""
        now = self.clock()
        late = [h for h in self.store.load()["handouts"].values() if h["deadline"] < now]
        done = []
        for h in late:
            with self._exclusive():
                self._revoke_handout(h, "not delivered before its deadline")
            done.append(h["token_id"])
        return done

    # -- reading ---------------------------------------------------------------------------
    def tokens(self, state: Optional[usercfg.AccessState] = None) -> List[Dict[str, Any]]:
        state = state or usercfg.read(self.cfg.node.pve_dir)
        user = state.users.get(self.cfg.access.user)
        stored = self.store.load()
        open_until = {h["token_id"]: h["deadline"] for h in self._open_handouts(stored)}
        return [{**_TOKEN_META, **stored["tokens"].get(t.full_id, {}),
                 "managed": t.full_id in stored["tokens"], "token_id": t.full_id, "name": t.name,
                 "privsep": int(t.privsep), "expire": t.expire, "comment": t.comment,
                 "handout_until": open_until.get(t.full_id)}
                for t in (user.tokens if user else ()) if t.name != doctor.PROBE_TOKEN]

    # -- internals -------------------------------------------------------------------------
    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One change at a time: a thread lock in this worker, a file lock across workers."""
        with self._lock:
            path = Path(self.cfg.daemon.state_dir) / "lock"
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(path, "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                yield

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
        self.caps.know_version((facts or self._require_writable(d)).version)
        state = usercfg.read(self.cfg.node.pve_dir)
        return access.plan(state, d, mint=mint, now=self.clock())

    def _apply(self, plan: access.Plan, caller: str, action: str) -> access.Applied:
        try:
            applied = access.Applier(self.pveum, self.caps).apply(plan)
        except P.PveumError as exc:
            audit.warning("%s token=%s caller=%s result=failed error=%s", action,
                          plan.desired.token_id, caller, exc)
            raise service_error(exc) from None
        for step in applied.steps:
            if step.change != access.OK:
                audit.info("%s %s caller=%s change=%s findings=%s", action, step.subject, caller,
                           step.change, "; ".join(step.findings) or "-")
        return applied

    def _verify(self, d: access.Desired, minted: P.MintedToken) -> Dict[str, int]:
        """Twice: pveum's view of the token's privileges, and a real HTTPS call with it."""
        try:
            privs = self.pveum.token_permissions(d.user, d.token, d.acl_path)
        except P.PveumError as exc:
            raise service_error(exc) from None
        missing = d.privileges - set(privs)
        if missing:
            raise ServiceError("verification_failed", f"the new token lacks "
                               f"{', '.join(sorted(missing))} on {d.acl_path} (pveum user token "
                               "permissions); the token was revoked", 502)
        if self.cfg.node.verify_https:
            self._verify_https(d, minted)
        return privs

    def _verify_https(self, d: access.Desired, minted: P.MintedToken) -> None:
        url, ca = self.cfg.node.pveproxy_url, self._trust()
        try:
            version = api.get(url, "/version", minted.full_id, minted.secret.reveal(), cafile=ca)
            perms = api.get(url, f"/access/permissions?path={d.acl_path}", minted.full_id,
                            minted.secret.reveal(), cafile=ca)
        except api.ApiUnreachable as exc:
            raise ServiceError("verification_failed", f"{exc} (is pveproxy running? "
                               "systemctl status pveproxy); the token was revoked", 502) from None
        for r in (version, perms):
            if r.status != 200:
                raise ServiceError("verification_failed", f"pveproxy at {url} answered "
                                   f"{r.status} {r.reason} to the new token; the token was revoked", 502)
        seen = set(((perms.data or {}).get(d.acl_path) or {}))
        if d.privileges - seen:
            raise ServiceError("verification_failed", f"over HTTPS the token lacks "
                               f"{', '.join(sorted(d.privileges - seen))}; the token was revoked", 502)

    def _inputs(self) -> doctor.Inputs:
        f = self.facts()
        state = usercfg.read(self.cfg.node.pve_dir) if not f.problem else usercfg.AccessState()
        stored = self.store.load()
        return doctor.Inputs(self.cfg, f.version, f.cluster, f.problem, state, stored["tokens"],
                             bool(self._open_handouts(stored)), self.clock())

    def _checks(self) -> List[doctor.Check]:
        i = self._inputs()
        return doctor.run(i, lambda: self._probe(i.state))

    def _fix(self, caller: str) -> List[Dict[str, Any]]:
        """Converge the configured access and each token as it should be (doctor.token_desires)."""
        changed = []
        for d in [self.desired(), *doctor.token_desires(self._inputs())]:
            with self._exclusive():
                applied = self._apply(self._plan(d, mint=False), caller, "fix")
            changed += [s.describe() for s in applied.steps if s.change != access.OK]
        return changed

    def _probe(self, state: usercfg.AccessState) -> doctor.Probe:
        """Mint a throw-away token (10 minutes), log in with it over HTTPS, remove it."""
        d = self.desired(doctor.PROBE_TOKEN, privsep=False)
        applier = access.Applier(self.pveum)
        with self._exclusive():
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
                            minted.full_id, minted.secret.reveal(), cafile=self._trust())
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
        """The cluster CA for PVE's own certificate; the system's trust store for a custom one
        (ACME or `pvenode cert set`)."""
        cert, _ = node.tls_files(self.cfg.node.pve_dir)
        return str(node.ca_file(self.cfg.node.pve_dir)) if cert.name == "pve-ssl.pem" else None

    def _open_handout(self, d: access.Desired, caller: str, how: str, ttl: int) -> Dict[str, Any]:
        now = self.clock()
        h = {"id": pysecrets.token_hex(8), "token_id": d.token_id, "user": d.user, "token": d.token,
             "caller": caller, "minted_at": now, "deadline": now + max(30, min(ttl, 86400))}

        def change(s: Dict[str, Any]) -> None:
            s["handouts"][h["id"]] = h
            meta = s["tokens"].setdefault(d.token_id, {"created": now})
            meta.update(minted=now, how=how, privsep=int(d.privsep), delivered_to=None,
                        delivered_at=None)

        self.store.update(change)
        audit.info("handout open token=%s id=%s caller=%s deadline=%s", d.token_id, h["id"],
                   caller, _clock(h["deadline"]))
        return h

    def _close_handout(self, h: Dict[str, Any], delivered_to: Optional[str] = None) -> None:
        def change(s: Dict[str, Any]) -> None:
            s["handouts"].pop(h["id"], None)
            if delivered_to:
                s["tokens"].setdefault(h["token_id"], {}).update(
                    delivered_to=delivered_to, delivered_at=self.clock())
        self.store.update(change)

    def _revoke_handout(self, h: Dict[str, Any], reason: str) -> bool:
        d = access.Desired.from_config(self.cfg.access, token=h["token"], user=h["user"])
        try:
            removed = access.Applier(self.pveum).revoke(d)
        except P.PveumError as exc:
            audit.error("revoke token=%s failed: %s (will retry)", h["token_id"], exc)
            raise service_error(exc) from None
        self.store.update(lambda s: (s["handouts"].pop(h["id"], None), _forget(s, h["token_id"])))
        audit.info("revoke token=%s reason=%s", h["token_id"], reason)
        return removed

    def _pending(self, stored: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
        """Every recorded hand-out, oldest first (the sweeper revokes those past deadline)."""
        handouts = (stored or self.store.load())["handouts"].values()
        return sorted(handouts, key=lambda h: h["minted_at"])

    def _open_handouts(self, stored: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
        """The hand-outs still before their deadline: a bootstrap is waiting on each."""
        now = self.clock()
        return [h for h in self._pending(stored) if h["deadline"] >= now]

    def _pending_for(self, token_id: str) -> Optional[Dict[str, Any]]:
        return next((h for h in self._open_handouts() if h["token_id"] == token_id), None)

    def _payload(self, d: access.Desired, privs: Dict[str, int], f: Facts) -> Dict[str, Any]:
        """What a consumer needs besides the secret: where to connect and how to trust it."""
        n = self.cfg.node
        cert, _ = node.tls_files(n.pve_dir)
        trust = {"version": formats.PAYLOAD_VERSION,
                 "ca_pem": node.ca_file(n.pve_dir).read_text(encoding="ascii")}
        if self._trust() is None:  # a custom certificate, which _verify_https checked that way
            trust = {"version": formats.SYSTEM_TRUST_VERSION, "trust": "system", "ca_pem": None}
        return {**trust, "user": d.user, "token_name": d.token,
                "token_id": d.token_id, "privsep": int(d.privsep), "cluster": f.cluster.name if f.cluster else None,
                "node": f.cluster.nodename if f.cluster else None,
                "nodes": node.node_endpoints(f.cluster, n.pve_dir),
                "pve_version": f.version.version if f.version else None,
                "fingerprint": node.fingerprint(cert), "privileges": privs}


# What pvemond records about a token it minted (state.json); null for one it did not.
_TOKEN_META = dict.fromkeys(("created", "minted", "how", "delivered_to", "delivered_at"))


def _forget(s: Dict[str, Any], token_id: str) -> None:
    s["tokens"].pop(token_id, None)


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


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
