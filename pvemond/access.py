"""Desired monitoring access -> plan (steps, in a PVE admin's words) -> apply through pveum.

Converge, not create: the plan is computed from user.cfg as it is, so a converged node needs no
write but the token's new secret, and every drift found is named with its symptom.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple

from pvemond import names
from pvemond.config import AccessConfig
from pvemond.pve import pveum as P
from pvemond.pve.node import PveVersion
from pvemond.pve.usercfg import AccessState, Token

CREATE, REPAIR, MINT, OK = "create", "repair", "mint", "ok"
REMOVE, KEEP, ABSENT = "remove", "keep", "absent"  # what an uninstall does with each part
_NOTHING_GRANTED = "403 and empty lists on the monitoring host"


class Finding(str):
    """One drift, as a sentence ("what: symptom"), keeping its parts for pvemond doctor."""

    def __new__(cls, subject: str, what: str, symptom: str) -> "Finding":
        self = super().__new__(cls, f"{what}: {symptom}")
        self.subject, self.what, self.symptom = subject, what, symptom
        return self


class PlanError(Exception):
    """The desired state cannot be applied on this node (checked before any write)."""


@dataclass(frozen=True)
class Desired:
    user: str
    user_comment: str
    role: str
    privileges: FrozenSet[str]
    acl_path: str
    propagate: bool
    token: str
    token_comment: str
    privsep: bool
    token_expire: int

    @classmethod
    def from_config(cls, cfg: AccessConfig, **overrides) -> "Desired":
        base = cls(cfg.user, cfg.user_comment, cfg.role, frozenset(cfg.privileges), cfg.acl_path,
                   cfg.propagate, cfg.token, cfg.token_comment, cfg.privsep, cfg.token_expire)
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def token_id(self) -> str:
        return f"{self.user}!{self.token}"


@dataclass(frozen=True)
class Step:
    part: str  # role | user | acl | token
    subject: str
    change: str  # create | repair | mint | ok
    findings: Tuple["Finding", ...] = ()
    ops: Tuple[Tuple, ...] = ()  # (Pveum method name, *args, {kwargs})

    def describe(self) -> Dict:
        return {"part": self.part, "subject": self.subject, "change": self.change,
                "findings": list(self.findings)}


@dataclass(frozen=True)
class Plan:
    desired: Desired
    steps: Tuple[Step, ...]

    @property
    def writes(self) -> int:
        return sum(len(s.ops) for s in self.steps)

    def findings(self) -> List[str]:
        return [f for s in self.steps for f in s.findings]


# --- checks before any write ------------------------------------------------------------------

def check(desired: Desired, version: Optional[PveVersion]) -> None:
    """Refuse what pveum would refuse, before the first write, so nothing is left half-done."""
    if version is None:
        return  # unknown version: pveum itself validates
    problem = names.unknown_privileges(desired.privileges, version.privileges())
    if problem:
        dropped = "VM.Monitor" in problem
        hint = " (VM.Monitor was dropped in PVE 9; use Sys.Audit)" if dropped else ""
        raise PlanError(f"Proxmox VE {version.version}: {problem}{hint}; fix access.privileges "
                        "in the configuration")


# --- planning ---------------------------------------------------------------------------------

def plan(state: AccessState, desired: Desired, *, mint: bool, now: Optional[float] = None) -> Plan:
    now = time.time() if now is None else now
    token = _token(state, desired)
    acl = _acl_step(state, desired, token_ready=bool(token) or mint)
    tok = _token_step(desired, token, mint, now)
    # A privsep=1 token needs its own ACL entry, which pveum accepts only once the token exists.
    tail = [tok, acl] if desired.privsep else [acl, tok]
    return Plan(desired, (_role_step(state, desired), _user_step(state, desired, now), *tail))


def _token(state: AccessState, d: Desired) -> Optional[Token]:
    user = state.users.get(d.user)
    return user.token(d.token) if user else None


def _privs(privs) -> str:
    return ", ".join(sorted(privs))


def _role_step(state: AccessState, d: Desired) -> Step:
    subject = f"role {d.role} ({_privs(d.privileges)})"
    have = state.roles.get(d.role)
    if have is None:
        return Step("role", subject, CREATE,
                    (Finding(d.role, f"role {d.role} does not exist", _NOTHING_GRANTED),),
                    (("role_add", d.role, sorted(d.privileges)),))
    findings = []
    if d.privileges - have:
        findings.append(Finding(d.role, f"role {d.role} lacks {_privs(d.privileges - have)}",
                                "the monitoring host sees less than it should (missing metrics)"))
    if have - d.privileges:
        findings.append(Finding(d.role, f"role {d.role} also grants {_privs(have - d.privileges)}",
                                "more than monitoring needs: a leaked token could change things"))
    if not findings:
        return Step("role", subject, OK)
    return Step("role", subject, REPAIR, tuple(findings),
                (("role_set_privs", d.role, sorted(d.privileges)),))


def _user_step(state: AccessState, d: Desired, now: float) -> Step:
    subject = f"user {d.user}"
    user = state.users.get(d.user)
    if user is None:
        return Step("user", subject, CREATE,
                    (Finding(d.user, f"user {d.user} does not exist", "every token of it gets 401"),),
                    (("user_add", d.user, d.user_comment),))
    findings = []
    if not user.enable:
        findings.append(Finding(d.user, f"user {d.user} is disabled", "every token of it gets 401"))
    if user.expire and user.expire < now:
        findings.append(Finding(d.user, f"user {d.user} expired on {_date(user.expire)}",
                                "every token of it gets 401"))
    if not findings:
        return Step("user", subject, OK)
    return Step("user", subject, REPAIR, tuple(findings), (("user_enable", d.user),))


def _acl_step(state: AccessState, d: Desired, token_ready: bool) -> Step:
    """The role on the ACL path for the user, and for the token too when privsep is on."""
    who = [("user", d.user)] + ([("token", d.token_id)] if d.privsep and token_ready else [])
    subject = (f"acl {d.acl_path} -> {' + '.join(u for _, u in who)} "
               f"({d.role}{', propagate' if d.propagate else ''})")
    users, tokens, findings = [], [], []
    for kind, ugid in who:
        problem = _acl_problem(state, d, ugid)
        if problem:
            findings.append(problem)
            (users if kind == "user" else tokens).append(ugid)
    if not users and not tokens:
        return Step("acl", subject, OK)
    change = CREATE if not any(a.role == d.role for _, u in who for a in state.acl_for(u)) else REPAIR
    op = ("acl_modify", d.acl_path, d.role,
          {"users": users, "tokens": tokens, "propagate": d.propagate})
    return Step("acl", subject, change, tuple(findings), (op,))


def _acl_problem(state: AccessState, d: Desired, ugid: str) -> Optional[Finding]:
    mine = [a for a in state.acl_for(ugid) if a.role == d.role]
    here = [a for a in mine if a.path == d.acl_path]
    if here and (here[0].propagate or not d.propagate):
        return None
    if here:
        return Finding(ugid, f"the ACL on {d.acl_path} for {ugid} does not propagate",
                       "the monitoring host gets empty node and guest lists")
    elsewhere = sorted({a.path for a in mine})
    if elsewhere:
        return Finding(ugid, f"{ugid} holds {d.role} only on {', '.join(elsewhere)}, not on "
                       f"{d.acl_path}", "403 and partial lists on the monitoring host")
    if ugid == d.token_id:
        return Finding(ugid, f"token {ugid} has privilege separation on but no ACL of its own",
                       "it authenticates yet sees nothing (403, empty lists)")
    return Finding(ugid, f"no ACL gives {ugid} the role {d.role} on {d.acl_path}", _NOTHING_GRANTED)


def _token_step(d: Desired, token: Optional[Token], mint: bool, now: float) -> Step:
    subject = f"token {d.token_id} (privsep {int(d.privsep)})"
    if token is None:
        if not mint:
            return Step("token", subject, OK, (Finding(d.token_id, "token does not exist yet",
                                                       "none until pvemond-bootstrap mints it"),))
        return Step("token", subject, CREATE, (), (("token_mint", d, False),))
    findings = []
    if token.privsep != d.privsep:
        findings.append(Finding(d.token_id, f"token {d.token_id} has privsep {int(token.privsep)}, "
                                f"wanted {int(d.privsep)}",
                                "403 and empty lists (the classic privsep trap)" if token.privsep
                                else "it holds the user's whole rights, not its own ACL's"))
    if token.expire and token.expire < now:
        findings.append(Finding(d.token_id, f"token {d.token_id} expired on {_date(token.expire)}",
                                "401 on the monitoring host"))
    elif token.expire != d.token_expire:
        findings.append(Finding(d.token_id, f"token {d.token_id} expires {_when(token.expire)}, "
                                f"wanted {_when(d.token_expire)}",
                                f"401 from {_when(token.expire)} on" if token.expire
                                else "none now; it outlives its planned expiry"))
    if mint:
        return Step("token", subject, REPAIR if findings else MINT, tuple(findings),
                    (("token_mint", d, True),))
    if not findings:
        return Step("token", subject, OK)
    return Step("token", subject, REPAIR, tuple(findings),
                (("token_modify", d.user, d.token, {"privsep": d.privsep, "expire": d.token_expire}),))


def _when(epoch: int) -> str:
    return _date(epoch) if epoch else "never"


def _date(epoch: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


# --- tearing down ------------------------------------------------------------------------------

def teardown(state: AccessState, d: Desired) -> Plan:
    """Remove what pvemond manages, nothing else: the user's tokens (their ACLs first, which
    pveum keeps otherwise), the user (its own ACLs go with it), and the role unless someone else
    still holds it."""
    user = state.users.get(d.user)
    tokens = [token_teardown(state, replace(d, token=t.name)) for t in (user.tokens if user else ())]
    gone = Step("user", f"user {d.user}", ABSENT)
    user_step = Step("user", f"user {d.user} (and its ACLs)", REMOVE, (),
                     (("user_delete", d.user),)) if user else gone
    return Plan(d, (*tokens, user_step, _role_teardown(state, d)))


def token_teardown(state: AccessState, d: Desired) -> Step:
    token = _token(state, d)
    if token is None:
        return Step("token", f"token {d.token_id}", ABSENT)
    acl_ops = tuple(("acl_delete", a.path, a.role, {"tokens": [d.token_id]})
                    for a in state.acl_for(d.token_id))
    return Step("token", f"token {d.token_id}", REMOVE, (),
                (*acl_ops, ("token_remove", d.user, d.token)))


def _role_teardown(state: AccessState, d: Desired) -> Step:
    subject = f"role {d.role}"
    if d.role not in state.roles:
        return Step("role", subject, ABSENT)
    others = sorted({a.ugid for a in state.acls if a.role == d.role
                     and a.ugid != d.user and not a.ugid.startswith(d.user + "!")})
    if others:
        return Step("role", subject, KEEP, (Finding(d.role, f"still granted to {', '.join(others)}",
                                                    "left in place"),))
    return Step("role", subject, REMOVE, (), (("role_delete", d.role),))


# --- applying ---------------------------------------------------------------------------------

@dataclass
class Capabilities:
    """What this node's pveum can do, learned by trying, not guessed from the PVE version: a PVE 9
    node may or may not have libpve-access-control >= 9.1.0. Only the absence is certain on PVE 8,
    whose access-control stays 8.x, so there the probe (one wasted pveum run) is skipped."""

    regenerate: Optional[bool] = None

    def know_version(self, version: Optional[PveVersion]) -> None:
        if self.regenerate is None and version is not None and version.major <= 8:
            self.regenerate = False


@dataclass
class Applied:
    steps: List[Step] = field(default_factory=list)
    minted: Optional[P.MintedToken] = None
    how: str = ""  # how the secret was minted: added, regenerated, re-created


class Applier:
    """`before_mint` runs right before pveum creates or replaces a secret (the ledger records its
    intent there); `minting` and `minted` tell a caller whose apply raised how far it got."""

    def __init__(self, pveum: P.Pveum, caps: Optional[Capabilities] = None,
                 progress: Optional[Callable[[Step], None]] = None,
                 before_mint: Optional[Callable[[], None]] = None):
        self.pveum = pveum
        self.caps = caps or Capabilities()
        self.progress = progress or (lambda step: None)
        self.before_mint = before_mint or (lambda: None)
        self.minting = False
        self.minted: Optional[P.MintedToken] = None

    def apply(self, plan: Plan) -> Applied:
        """Run the plan's writes in order. A token minted here is removed again if a later
        step fails, so a failed run never leaves a fresh secret behind."""
        done = Applied()
        try:
            for step in plan.steps:
                for op in step.ops:
                    self._run(op, done)
                done.steps.append(step)
                self.progress(step)
        except Exception:
            if done.minted:
                self.revoke(plan.desired)
            raise
        return done

    def _run(self, op: Tuple, done: Applied) -> None:
        name, *args = op
        kwargs = args.pop() if args and isinstance(args[-1], dict) else {}
        if name == "token_mint":
            self.before_mint()
            self.minting = True
            self.minted, done.how = self._mint(*args)
            done.minted = self.minted
        else:
            getattr(self.pveum, name)(*args, **kwargs)

    def _mint(self, d: Desired, exists: bool) -> Tuple[P.MintedToken, str]:
        if exists and self.caps.regenerate is not False:
            try:
                minted = self.pveum.token_regenerate(d.user, d.token, privsep=d.privsep,
                                                     expire=d.token_expire)
                self.caps.regenerate = True
                return minted, "regenerated"
            except P.UnknownOption as exc:
                if exc.option != "regenerate":
                    raise
                self.caps.regenerate = False
        if exists:
            self.pveum.token_remove(d.user, d.token)
        minted = self.pveum.token_add(d.user, d.token, privsep=d.privsep, expire=d.token_expire,
                                      comment=d.token_comment)
        if exists and d.privsep:
            # pveum drops the old token's ACL on the next parse: the token_add above. A
            # privsep token without it authenticates and sees nothing, so it gets it back.
            self.pveum.acl_modify(d.acl_path, d.role, tokens=[d.token_id], propagate=d.propagate)
        return minted, "re-created" if exists else "added"

    def revoke(self, d: Desired) -> bool:
        """Remove the token; False if it was already gone."""
        try:
            self.pveum.token_remove(d.user, d.token)
            return True
        except (P.NoSuchToken, P.NoSuchUser):
            return False
