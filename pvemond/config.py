"""The configuration file (/etc/pvemond/pvemond.yaml) -> frozen dataclasses.

Every problem is collected and reported at once, each naming its field and the rule, so an admin
fixes the file in one pass instead of one error per restart.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from pvemond import names
from pvemond.contract import CLAIM_PORT
from pvemond.pve import node

DEFAULT_PATH = "/etc/pvemond/pvemond.yaml"
ENV_VAR = "PVEMOND_CONFIG"
# A claim code should not outlive a coffee break; an hour is the documented ceiling.
MAX_CLAIM_TTL = 3600
# Ports Proxmox VE or PBS use on a node (node.md §5): the claim port must avoid all of them.
RESERVED_PORTS = {22, 25, 80, 85, 111, 3128, 8006, 8007}
RESERVED_RANGES = ((5900, 5999), (60000, 60050), (61000, 61999), (5405, 5412))


class ConfigError(Exception):
    """One or more invalid settings; `problems` lists each as 'field: what is wrong'."""

    def __init__(self, source: str, problems: List[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration in {source}:\n{lines}")


@dataclass(frozen=True)
class AccessConfig:
    """The monitoring access pvemond converges to (defaults follow the seed guide)."""

    user: str = "monitoring@pve"
    user_comment: str = "PVE monitoring (managed by pvemond)"
    role: str = "monitoring"
    privileges: Tuple[str, ...] = ("Datastore.Audit", "SDN.Audit", "Sys.Audit", "VM.Audit")
    allow_write_privileges: bool = False
    acl_path: str = "/"
    propagate: bool = True
    token: str = "monitoring"
    token_comment: str = "managed by pvemond"
    privsep: bool = False
    token_expire: int = 0


@dataclass(frozen=True)
class NodeConfig:
    """Where the Proxmox VE node's tools and files are (settings, so tests can point at a simulator)."""

    pveum: str = "/usr/sbin/pveum"
    pveum_timeout: float = 60.0
    pve_dir: str = "/etc/pve"
    pvecfg: str = "/usr/share/perl5/PVE/pvecfg.pm"
    dpkg_status: str = "/var/lib/dpkg/status"
    pveproxy_url: str = "https://127.0.0.1:8006"
    verify_https: bool = True


@dataclass(frozen=True)
class DaemonConfig:
    socket: str = "/run/pvemond/pvemond.sock"
    tcp: str = ""
    tcp_key_file: str = "/etc/pvemond/api.key"
    state_dir: str = "/var/lib/pvemond"
    log_level: str = "info"
    # How long a minted secret may wait for its hand-off before the daemon revokes the token.
    handout_timeout: int = 3900


@dataclass(frozen=True)
class ClaimConfig:
    listen: str = "0.0.0.0"
    port: int = CLAIM_PORT
    ttl: int = 600
    max_attempts: int = 5
    allow: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    access: AccessConfig = field(default_factory=AccessConfig)
    node: NodeConfig = field(default_factory=NodeConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    claim: ClaimConfig = field(default_factory=ClaimConfig)
    source: str = "(defaults)"


# --- value rules: each returns an error text, or None when the value is fine -------------------

Rule = Callable[[Any], Optional[str]]


def _absolute_path(value: str) -> Optional[str]:
    return None if value.startswith("/") else "must be an absolute path"


def _https_url(value: str) -> Optional[str]:
    return None if re.fullmatch(r"https://[^/\s]+(:\d+)?/?", value) else (
        "must look like https://HOST:PORT (pveproxy, usually https://127.0.0.1:8006)")


def _privileges(value: Tuple[str, ...]) -> Optional[str]:
    if not value:
        return "must list at least one privilege"
    bad = [p for p in value if not names.PRIV_SYNTAX.fullmatch(p)]
    if bad:
        return f"{', '.join(map(repr, bad))}: not a privilege name like VM.Audit"
    # Any Proxmox VE version's list: the node's own version is checked before each write.
    return names.unknown_privileges(value, node.ALL_PRIVILEGES)


def tcp_address(value: str) -> Tuple[str, int]:
    """`daemon.tcp` as the OS will bind it: (canonical loopback address, port).

    Strict on purpose: gunicorn splits an unbracketed IPv6 address at its first colon (it read
    0:0:0:0:0:0:0:1:8117 as host 0, port 0: every interface), and the C resolver takes 127.1,
    0 or a host name for addresses that ipaddress would never call loopback. So: a dotted quad
    or a bracketed IPv6 address, a port, and the address exactly loopback. ValueError says why.
    """
    m = re.fullmatch(r"\[([^\[\]]*)\]:([0-9]{1,5})|([0-9.]*):([0-9]{1,5})", value)
    if not m:
        raise ValueError(f"{value!r} is not ADDRESS:PORT (use 127.0.0.1:PORT or [::1]:PORT; "
                         "an IPv6 address goes in brackets)")
    host, port = (m.group(1), m.group(2)) if m.group(2) else (m.group(3), m.group(4))
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address written out in full "
                         "(use 127.0.0.1 or ::1; no host names, no short forms)") from None
    if m.group(1) is not None and ip.version == 4:
        raise ValueError(f"'[{host}]': brackets are for IPv6 only (use {host}:{port})")
    _require_loopback(ip, host)
    if not 0 < int(port) < 65536:
        raise ValueError(f"port {port} is not 1-65535")
    return str(ip), int(port)


def _require_loopback(ip: Any, host: str) -> None:
    if getattr(ip, "scope_id", None):
        raise ValueError(f"'{host}' has a zone id: the API listens on ::1 or 127.0.0.1 only")
    if getattr(ip, "ipv4_mapped", None) is not None:
        raise ValueError(f"'{host}' is an IPv4-mapped IPv6 address; write 127.0.0.1")
    if not ip.is_loopback:
        raise ValueError(f"'{host}' is not a loopback address: the API must never listen on the "
                         "network; use 127.0.0.1 (or leave it empty for the unix socket only)")


def tcp_bind(value: str) -> str:
    """The gunicorn bind string for a valid `daemon.tcp`, normalised (IPv6 in brackets)."""
    host, port = tcp_address(value)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _loopback_tcp(value: str) -> Optional[str]:
    if not value:
        return None
    try:
        tcp_address(value)
    except ValueError as exc:
        return str(exc)
    return None


def _claim_port(value: int) -> Optional[str]:
    if not 1 <= value <= 65535:
        return "must be 1-65535"
    if value in RESERVED_PORTS or any(lo <= value <= hi for lo, hi in RESERVED_RANGES):
        return f"{value} is used by Proxmox VE or PBS on a node; pick another (default {CLAIM_PORT})"
    return None


def _cidrs(value: Tuple[str, ...]) -> Optional[str]:
    bad = []
    for cidr in value:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            bad.append(cidr)
    return f"{', '.join(bad)}: not an address or CIDR like 192.0.2.0/24" if bad else None


def _between(lo: float, hi: float) -> Rule:
    return lambda v: None if lo <= v <= hi else f"must be between {lo:g} and {hi:g}"


def _one_of(*choices: str) -> Rule:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


RULES: Dict[str, Rule] = {
    "access.user": names.userid_problem,
    "access.role": names.roleid_problem,
    "access.privileges": _privileges,
    "access.acl_path": lambda v: None if names.ACL_PATH.fullmatch(v) else "must be an ACL path like / or /vms",
    "access.token": names.tokenid_problem,
    "access.token_expire": lambda v: None if v >= 0 else "must be 0 (never) or a Unix time",
    "node.pveum": _absolute_path,
    "node.pveum_timeout": _between(1, 600),
    "node.pve_dir": _absolute_path,
    "node.pvecfg": _absolute_path,
    "node.dpkg_status": _absolute_path,
    "node.pveproxy_url": _https_url,
    "daemon.socket": _absolute_path,
    "daemon.tcp": _loopback_tcp,
    "daemon.tcp_key_file": _absolute_path,
    "daemon.state_dir": _absolute_path,
    "daemon.log_level": _one_of("debug", "info", "warning", "error"),
    "daemon.handout_timeout": _between(60, 86400),
    "claim.port": _claim_port,
    "claim.ttl": _between(30, MAX_CLAIM_TTL),
    "claim.max_attempts": _between(1, 20),
    "claim.allow": _cidrs,
}


# --- loading ----------------------------------------------------------------------------------

def load(path: Optional[str] = None) -> Config:
    """Read the config named by `path`, else $PVEMOND_CONFIG, else the default file.

    A missing default file means "all defaults"; a missing file someone named is an error.
    """
    named = path or os.environ.get(ENV_VAR)
    source = named or DEFAULT_PATH
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        if named:
            raise ConfigError(source, [f"file not found (set by {'--config' if path else ENV_VAR})"])
        return Config()
    except OSError as exc:
        raise ConfigError(source, [f"cannot read: {exc.strerror}"])
    return parse(text, source)


def parse(text: str, source: str = "<string>") -> Config:
    import yaml  # here, not at the top: the daemon's worker takes a checked Config (from_dict)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(source, [f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"])
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["the file must be a mapping of sections (access, node, daemon, claim)"])
    problems: List[str] = []
    sections = {}
    for f in dataclasses.fields(Config):
        if f.name == "source":
            continue
        sections[f.name] = _section(f.name, f.default_factory, data.pop(f.name, None), problems)
    problems += [f"{key}: unknown section (known: access, node, daemon, claim)" for key in data]
    problems += _write_privilege_problems(sections["access"])
    if problems:
        raise ConfigError(source, problems)
    return Config(source=source, **sections)


def from_dict(data: Dict[str, Any]) -> Config:
    """The Config that `dataclasses.asdict` made of a checked one (the daemon's master hands it to
    its worker that way): the values are trusted, only lists come back as tuples."""
    # each section's default_factory is its class
    sections = {f.name: f.default_factory(**{k: tuple(v) if isinstance(v, list) else v
                                             for k, v in data[f.name].items()})
                for f in dataclasses.fields(Config) if f.name != "source"}
    return Config(source=data["source"], **sections)


def _write_privilege_problems(access: AccessConfig) -> List[str]:
    """A monitoring token is read-only unless the admin says otherwise, loudly."""
    known = node.ALL_PRIVILEGES  # a typo is reported as unknown (by _privileges), not as a write
    writes = [p for p in access.privileges if p in known and not p.endswith(".Audit")]
    if writes and not access.allow_write_privileges:
        return [f"access.privileges: {', '.join(writes)} can change the cluster; a monitoring token "
                "needs only *.Audit privileges (set access.allow_write_privileges: true to insist)"]
    return []


def _section(name: str, cls: Any, raw: Any, problems: List[str]) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{name}: must be a mapping of settings")
        return cls()
    values = {}
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in raw.items():
        fq = f"{name}.{key}"
        if key not in known:
            problems.append(f"{fq}: unknown setting (known: {', '.join(known)})")
            continue
        coerced = _coerce(fq, value, known[key].default, problems)
        if coerced is not None:
            values[key] = coerced
    section = cls(**values)
    for key in known:
        rule = RULES.get(f"{name}.{key}")
        problem = rule(getattr(section, key)) if rule and key in values else None
        if problem:
            problems.append(f"{name}.{key}: {problem}")
    return section


def _coerce(fq: str, value: Any, default: Any, problems: List[str]) -> Any:
    """Check the YAML type against the default's type; YAML gives real bools, ints and lists."""
    expected = type(default)
    if expected is tuple:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        problems.append(f"{fq}: must be a list of strings")
        return None
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    word = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}[expected]
    problems.append(f"{fq}: must be {word}, not {value!r}")
    return None
