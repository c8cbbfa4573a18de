"""Desired monitoring access -> plan (steps, in a PVE admin's words) -> apply through pveum.

Converge, not create: the plan is computed from user.cfg as it is, so a converged node needs no
write but the token's new secret, and every drift found is named with its symptom.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple, Union

from pvemond import names
from pvemond.config import AccessConfig
from pvemond.pve import dpkg
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

    def __reduce__(self):  # a str subclass pickles by its value alone; it has three parts
        return Finding, (self.subject, self.what, self.symptom)


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
class Mint:
    """A new secret for the token. `regenerate`: whether this pveum has `token modify
    --regenerate` (Capabilities); None: unknown, so the applier tries it once."""

    desired: Desired
    exists: bool
    regenerate: Optional[bool] = None

    def commands(self, regenerate: Optional[bool] = None) -> Tuple[P.Command, ...]:
        """The pveum runs that make the secret (the first that mints carries it)."""
        d, regen = self.desired, self.regenerate if regenerate is None else regenerate
        if self.exists and regen is not False:
            return (P.Command.token_regenerate(d.user, d.token, privsep=d.privsep,
                                               expire=d.token_expire),)
        add = P.Command.token_add(d.user, d.token, privsep=d.privsep, expire=d.token_expire,
                                  comment=d.token_comment)
        if not self.exists:
            return (add,)
        # pveum drops the old token's ACL on the next parse (the add): a privsep token without
        # it authenticates and sees nothing, so it gets it back.
        acl = (P.Command.acl_modify(d.acl_path, d.role, tokens=[d.token_id], propagate=d.propagate),)
        return (P.Command.token_remove(d.user, d.token), add, *(acl if d.privsep else ()))


Op = Union[P.Command, Mint]


@dataclass(frozen=True)
class Step:
    part: str  # role | user | acl | token
    subject: str
    change: str  # create | repair | mint | ok
    findings: Tuple["Finding", ...] = ()
    ops: Tuple[Op, ...] = ()

    @property
    def commands(self) -> Tuple[P.Command, ...]:
        """Every pveum run of this step, as the applier runs them."""
        return tuple(c for op in self.ops for c in (op.commands() if isinstance(op, Mint) else (op,)))

    def describe(self) -> Dict:
        return {"part": self.part, "subject": self.subject, "change": self.change,
                "findings": list(self.findings), "commands": [str(c) for c in self.commands]}


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

def plan(state: AccessState, desired: Desired, *, mint: bool, now: Optional[float] = None,
         regenerate: Optional[bool] = None) -> Plan:
    """`regenerate`: whether pveum has `token modify --regenerate` (Capabilities.regenerate)."""
    now = time.time() if now is None else now
    token = _token(state, desired)
    acl = _acl_step(state, desired, token_ready=bool(token) or mint)
    tok = _token_step(desired, token, mint, now, regenerate)
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
                    (P.Command.role_add(d.role, d.privileges),))
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
                (P.Command.role_set_privs(d.role, d.privileges),))


def _user_step(state: AccessState, d: Desired, now: float) -> Step:
    subject = f"user {d.user}"
    user = state.users.get(d.user)
    if user is None:
        return Step("user", subject, CREATE,
                    (Finding(d.user, f"user {d.user} does not exist", "every token of it gets 401"),),
                    (P.Command.user_add(d.user, d.user_comment),))
    findings = []
    if not user.enable:
        findings.append(Finding(d.user, f"user {d.user} is disabled", "every token of it gets 401"))
    if user.expire and user.expire < now:
        findings.append(Finding(d.user, f"user {d.user} expired on {_date(user.expire)}",
                                "every token of it gets 401"))
    if not findings:
        return Step("user", subject, OK)
    return Step("user", subject, REPAIR, tuple(findings), (P.Command.user_enable(d.user),))


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
    op = P.Command.acl_modify(d.acl_path, d.role, users=users, tokens=tokens, propagate=d.propagate)
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


def _token_step(d: Desired, token: Optional[Token], mint: bool, now: float,
                regenerate: Optional[bool]) -> Step:
    subject = f"token {d.token_id} (privsep {int(d.privsep)})"
    if token is None:
        if not mint:
            return Step("token", subject, OK, (Finding(d.token_id, "token does not exist yet",
                                                       "none until pvemond-bootstrap mints it"),))
        return Step("token", subject, CREATE, (), (Mint(d, False, regenerate),))
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
                    (Mint(d, True, regenerate),))
    if not findings:
        return Step("token", subject, OK)
    return Step("token", subject, REPAIR, tuple(findings),
                (P.Command.token_modify(d.user, d.token, privsep=d.privsep, expire=d.token_expire),))


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
                     (P.Command.user_delete(d.user),)) if user else gone
    return Plan(d, (*tokens, user_step, _role_teardown(state, d)))


def token_teardown(state: AccessState, d: Desired) -> Step:
    token = _token(state, d)
    if token is None:
        return Step("token", f"token {d.token_id}", ABSENT)
    acl_ops = tuple(P.Command.acl_delete(a.path, a.role, tokens=[d.token_id])
                    for a in state.acl_for(d.token_id))
    return Step("token", f"token {d.token_id}", REMOVE, (),
                (*acl_ops, P.Command.token_remove(d.user, d.token)))


def _role_teardown(state: AccessState, d: Desired) -> Step:
    subject = f"role {d.role}"
    if d.role not in state.roles:
        return Step("role", subject, ABSENT)
    others = sorted({a.ugid for a in state.acls if a.role == d.role
                     and a.ugid != d.user and not a.ugid.startswith(d.user + "!")})
    if others:
        return Step("role", subject, KEEP, (Finding(d.role, f"still granted to {', '.join(others)}",
                                                    "left in place"),))
    return Step("role", subject, REMOVE, (), (P.Command.role_delete(d.role),))


# --- applying ---------------------------------------------------------------------------------

REGENERATE_SINCE = (9, 1, 0)  # libpve-access-control's `token modify --regenerate`


@dataclass
class Capabilities:
    """What this node's pveum can do, known before the first call: `token modify --regenerate`
    comes with libpve-access-control 9.1.0, whose installed version dpkg records. Without that
    record, PVE 8 never has it (its access-control stays 8.x) and a PVE 9 node is tried once."""

    regenerate: Optional[bool] = None

    def know(self, version: Optional[PveVersion], access_control: Optional[str]) -> None:
        if access_control:
            self.regenerate = dpkg.version_tuple(access_control) >= REGENERATE_SINCE
        elif self.regenerate is None and version is not None and version.major <= 8:
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
            if self.minted:
                self.revoke(plan.desired)
            raise
        return done

    def _run(self, op: Op, done: Applied) -> None:
        if isinstance(op, Mint):
            self.before_mint()
            self.minting = True
            self.minted, done.how = self._mint(op)
            done.minted = self.minted
        else:
            self.pveum.execute(op)

    def _mint(self, mint: Mint) -> Tuple[P.MintedToken, str]:
        regenerate = self.caps.regenerate if mint.regenerate is None else mint.regenerate
        if mint.exists and regenerate is not False:
            try:
                minted = self._run_mint(mint.commands(True), mint.desired)
                self.caps.regenerate = True
                return minted, "regenerated"
            except P.UnknownOption as exc:  # only where the capability was unknown
                if exc.option != "regenerate":
                    raise
                self.caps.regenerate = False
        minted = self._run_mint(mint.commands(False), mint.desired)
        return minted, "re-created" if mint.exists else "added"

    def _run_mint(self, commands: Tuple[P.Command, ...], d: Desired) -> P.MintedToken:
        minted = None
        for cmd in commands:
            if cmd.mints:  # known at once: a later failure (the ACL) must revoke it
                minted = self.minted = self.pveum.mint(cmd, d.user, d.token, d.privsep)
            else:
                self.pveum.execute(cmd)
        assert minted is not None, "a mint's commands include the one that mints"
        return minted

    def revoke(self, d: Desired) -> bool:
        """Remove the token; False if it was already gone."""
        try:
            self.pveum.token_remove(d.user, d.token)
            return True
        except (P.NoSuchToken, P.NoSuchUser):
            return False
