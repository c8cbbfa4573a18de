"""Consumer renderings of a claimed token: the exact text each monitoring tool reads.

Stdlib only: `pvemond-claim` imports this on any monitoring host (Python >= 3.9), so YAML and
TOML are emitted by hand, every value quoted for the consumer's own parser. The formats follow
shared/reference/consumers.md. The payload is contract.Payload; pve.yml merging is pveyml.
"""
from __future__ import annotations

import json
import os
import re

from pvemond import pveyml
from pvemond.contract import (PAYLOAD_VERSION, PVE_PORT, SYSTEM_TRUST_VERSION, Node, Payload,
                              PayloadError, check_text, system_trust)
from pvemond.records import record

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays unloaded: pvemond/records.py says why
    from typing import Callable, Dict, List, Optional, Tuple

__all__ = ["FORMATS", "WRITERS", "HEADER", "FormatError", "OutputFile", "Token", "Node",
           "PAYLOAD_VERSION", "SYSTEM_TRUST_VERSION", "PVE_PORT", "system_trust", "module_name",
           "render", "render_files", "companions"]

FORMATS: Tuple[str, ...] = (
    "pve-exporter", "env", "telegraf", "zabbix", "proxmoxer", "json", "curl")
# Who writes the file: the claim client on the monitoring host, or pvemond-bootstrap --format -o
# on the node. "# written by W" heads every rendering; a re-run finds its own pve.yml comment by it.
WRITERS = ("pvemond-claim", "pvemond-bootstrap")
HEADER = f"# written by {WRITERS[0]}"
_HEADERS = tuple(f"# written by {w}" for w in WRITERS)


class FormatError(ValueError):
    """The payload, the format or an existing output file cannot be rendered; says how to fix it."""


@record
class OutputFile:
    """One file of a rendering. `path` None is the output the user named (-o FILE, or stdout);
    any other file (curl's token header) goes where `path` says, beside it."""
    path: Optional[str]
    text: str
    mode: int  # for a new file; an existing one keeps its own (hostfiles.write_kept)


# ---------------------------------------------------------------------------------------------
# The payload (contract.Payload checks it), as the renderers see it

@record
class Token:
    user: str
    token_name: str
    token_id: str
    secret: str
    token_string: str
    cluster: Optional[str]
    node: str
    nodes: Tuple[Node, ...]
    ca_path: Optional[str]  # None: verify with the system's trust store (system_trust)
    writer: str = WRITERS[0]

    @property
    def header(self) -> str:
        return f"# written by {self.writer}"

    @property
    def primary(self) -> Node:
        """The node single-host consumers talk to (the payload lists it first)."""
        return self.nodes[0]

    @property
    def verify(self) -> str:
        """What a consumer's verify setting says: the CA file, or plain "true"."""
        return self.ca_path or "true"

    @property
    def where(self) -> str:
        return f"cluster {self.cluster}" if self.cluster else f"standalone node {self.node}"


def _token(payload: object, ca_path: Optional[str], writer: str = WRITERS[0]) -> Token:
    try:
        p = Payload.from_json(payload)
        ca = None if p.system_trust else check_text(ca_path, "ca_path")
    except PayloadError as exc:
        raise FormatError(str(exc)) from None
    return Token(p.user, p.token_name, p.token_id, p.secret or "", p.token_string, p.cluster,
                 p.node, p.nodes, ca, writer)


def module_name(payload: dict) -> str:
    """The pve.yml module: the cluster name, else the node name, as [A-Za-z0-9_.-]."""
    raw = payload.get("cluster") or payload.get("node")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", raw) if isinstance(raw, str) else ""
    if not name:
        raise FormatError("payload names neither a cluster nor a node: no module name")
    return name


# ---------------------------------------------------------------------------------------------
# Quoting, one function per consumer syntax

_YAML_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./@-]*")
# YAML 1.1 (PyYAML, the exporter's parser) reads these plain words as booleans or null.
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}
_YAML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"}


def yaml_scalar(value: str) -> str:
    """A YAML string reading back as exactly `value`: plain when unambiguous, else double-quoted."""
    if _YAML_PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS:
        return value
    return '"' + "".join(_yaml_char(c) for c in value) + '"'


def _yaml_char(c: str) -> str:
    if c in _YAML_ESCAPES:
        return _YAML_ESCAPES[c]
    code = ord(c)
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return f"\\x{code:02x}"
    if c in "\u2028\u2029\ufeff\ufffe\uffff" or 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return c


def toml_string(value: str) -> str:
    """A TOML basic string."""
    return '"' + "".join(_toml_char(c) for c in value) + '"'


def _toml_char(c: str) -> str:
    if c in '\\"':
        return "\\" + c
    code = ord(c)
    return f"\\u{code:04X}" if code < 0x20 or code == 0x7F else c


def sh_quote(value: str) -> str:
    """Single quotes: nothing expands inside them, not `$`, not bash history `!`."""
    return "'" + value.replace("'", "'\\''") + "'"


def url_host(address: str) -> str:
    """An address as the host part of a URL: IPv6 goes in brackets."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


# ---------------------------------------------------------------------------------------------
# Renderers

def _exporter_block(tok: Token, module: str) -> pveyml.Block:
    hosts = " ".join(n.address for n in tok.nodes)
    return pveyml.Block(
        [f"{tok.header} for {tok.where}; scrape: /pve?module={module}&target=HOST (HOST: {hosts})"],
        f"{yaml_scalar(module)}:",
        [("user", yaml_scalar(tok.user)), ("token_name", yaml_scalar(tok.token_name)),
         ("token_value", yaml_scalar(tok.secret)),
         ("verify_ssl", yaml_scalar(tok.ca_path) if tok.ca_path else "true")])


def render_pve_exporter(tok: Token, module: str, existing: Optional[str]) -> str:
    block = _exporter_block(tok, module)
    if existing is None or not existing.strip():
        return "".join(line + "\n" for line in pveyml.render(block))
    try:
        return pveyml.merge(existing, module, block, _HEADERS)
    except pveyml.MergeError as exc:
        raise FormatError(str(exc)) from None


def render_env(tok: Token) -> str:
    pairs = [
        ("PVE_USER", tok.user), ("PVE_TOKEN_NAME", tok.token_name),
        ("PVE_TOKEN_VALUE", tok.secret), ("PVE_VERIFY_SSL", "true"),
        *([("REQUESTS_CA_BUNDLE", tok.ca_path)] if tok.ca_path else []),
        None,
        ("PROXMOX_HOST", tok.primary.address), ("PROXMOX_USER", tok.user),
        ("PROXMOX_TOKEN_NAME", tok.token_name), ("PROXMOX_TOKEN_VALUE", tok.secret),
        ("PROXMOX_VERIFY_SSL", tok.verify),
    ]
    head = [
        f"{tok.header} for {tok.where}",
        "# load: set -a; . ./FILE; set +a   (docker compose env_file reads it too;",
        "# `docker run --env-file` keeps quotes literally, so use compose or the shell there)",
        "# prometheus-pve-exporter, environment mode; " + ("REQUESTS_CA_BUNDLE makes it trust the CA"
                                                           if tok.ca_path else "the system's CAs verify"),
    ]
    body = ["# proxmoxer scripts and MCP servers" if p is None else f"{p[0]}={sh_quote(p[1])}"
            for p in pairs]
    return "\n".join(head + body) + "\n"


def _telegraf_value(value: str, field: str) -> str:
    # Telegraf replaces environment variables in the config text before TOML sees it, and how a
    # literal `$` is escaped changed between releases: no quoting makes it safe.
    if "$" in value:
        raise FormatError(f"{field} contains '$', which Telegraf would take for an environment "
                          "variable ($VAR, ${VAR}); use a value without '$'")
    return toml_string(value)


def render_telegraf(tok: Token) -> str:
    out = [f"{tok.header} for {tok.where}: one [[inputs.proxmox]] per node "
           "(node_name is required when Telegraf runs off the node)"]
    for node in tok.nodes:
        out += [
            "",
            "[[inputs.proxmox]]",
            f"  base_url = {_telegraf_value(node.url, 'the node URL')}",
            f"  api_token = {_telegraf_value(tok.token_string, 'the token')}",
            f"  node_name = {_telegraf_value(node.name, 'the node name')}",
        ]
        if tok.ca_path:  # else Telegraf verifies with the system's CAs
            out.append(f"  tls_ca = {_telegraf_value(tok.ca_path, 'the CA path')}")
    return "\n".join(out) + "\n"



# ---------------------------------------------------------------------------------------------
# zabbix: a host for the Zabbix 6.0/7.0 frontend's import (Data collection > Hosts > Import)

ZABBIX_TEMPLATE = "Proxmox VE by HTTP"
ZABBIX_GROUP = "Hypervisors"  # a host group every Zabbix install has
ZABBIX_EXPORT_VERSION = "6.0"  # 7.0 imports 6.0 documents (and converts them)
_ZABBIX_TRUST = "/usr/local/share/ca-certificates"  # Debian's update-ca-certificates


def zabbix_macros(tok: Token) -> List[Dict[str, str]]:
    """The host macros the template "Proxmox VE by HTTP" reads, typed as the import expects."""
    return [
        {"macro": "{$PVE.TOKEN.ID}", "type": "TEXT", "value": tok.token_id},
        {"macro": "{$PVE.TOKEN.SECRET}", "type": "SECRET_TEXT", "value": tok.secret},
        {"macro": "{$PVE.URL.HOST}", "type": "TEXT", "value": url_host(tok.primary.address)},
        {"macro": "{$PVE.URL.PORT}", "type": "TEXT", "value": str(PVE_PORT)},
    ]


def _zabbix_uuid(name: str) -> str:
    """A fixed version-4-shaped UUID per name: a re-import finds the same group."""
    import hashlib  # here: only this format needs it
    h = hashlib.sha256(f"pvemond:{name}".encode()).hexdigest()
    return h[:12] + "4" + h[13:16] + "8" + h[17:32]


def _zabbix_interface(address: str) -> Dict[str, str]:
    # The 6.0 template addresses the node as {HOST.CONN}, the host's main interface; later
    # ones use {$PVE.URL.HOST}. The interface serves the first, the macro the second.
    import ipaddress  # here: only this format needs it
    try:
        ipaddress.ip_address(address)
        return {"useip": "YES", "ip": address, "interface_ref": "if1"}
    except ValueError:
        return {"useip": "NO", "dns": address, "interface_ref": "if1"}


def zabbix_document(tok: Token) -> dict:
    """The `zabbix_export` document: one host in "Hypervisors" linked to the template."""
    return {"zabbix_export": {
        "version": ZABBIX_EXPORT_VERSION,
        "groups": [{"uuid": _zabbix_uuid(ZABBIX_GROUP), "name": ZABBIX_GROUP}],
        "hosts": [{
            "host": f"pve-{module_name_of(tok)}",
            "name": f"Proxmox VE {tok.where}",
            "templates": [{"name": ZABBIX_TEMPLATE}],
            "groups": [{"name": ZABBIX_GROUP}],
            "interfaces": [_zabbix_interface(tok.primary.address)],
            "macros": zabbix_macros(tok),
            "description": f"{tok.header[2:]} with token {tok.token_id}",
            "inventory_mode": "DISABLED",
        }],
    }}


def yaml_block(value: object, indent: int = 0) -> List[str]:
    """Block-style YAML for nested dicts and lists of dicts with string leaves."""
    pad = " " * indent
    out: List[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                out += [f"{pad}{key}:", *yaml_block(item, indent + 2)]
            else:
                out.append(f"{pad}{key}: {yaml_scalar(str(item))}")
        return out
    for item in value:  # type: ignore[attr-defined]
        lines = yaml_block(item, indent + 2)
        out += [f"{pad}- {lines[0][indent + 2:]}", *lines[1:]]
    return out


def _zabbix_comments(tok: Token) -> List[str]:
    others = ", ".join(n.address for n in tok.nodes[1:])
    out = [
        f"{tok.header} for {tok.where}: a host for the Zabbix template \"{ZABBIX_TEMPLATE}\"",
        "# Import it in the Zabbix 6.0/7.0 frontend (Data collection > Hosts > Import) once the",
        "# template is there; {$PVE.TOKEN.SECRET} is a secret macro, shown by no page or export.",
    ]
    if others:
        out.append(f"# Other nodes, if {{$PVE.URL.HOST}} goes down: {others}")
    out += ["# TLS: the template has no verification macro; in its HTTP agent items set",
            "# \"SSL verify peer\" and \"SSL verify host\" on (verify_peer/verify_host: 'YES')"]
    if not tok.ca_path:
        return out + ["# The node's certificate is publicly trusted: no CA to install."]
    return out + [
        "# and trust the cluster CA on the Zabbix server/proxy that polls the node, on Debian:",
        f"#   cp {sh_quote(tok.ca_path)} {_ZABBIX_TRUST}/pve-{module_name_of(tok)}.crt",
        "#   update-ca-certificates   (or point SSLCALocation in zabbix_server.conf at the CA)",
    ]


def module_name_of(tok: Token) -> str:
    return module_name({"cluster": tok.cluster, "node": tok.node})


def render_zabbix(tok: Token) -> str:
    return "\n".join(_zabbix_comments(tok) + yaml_block(zabbix_document(tok))) + "\n"


def render_proxmoxer(tok: Token) -> str:
    others = ", ".join(repr(n.address) for n in tok.nodes[1:])
    out = [
        f"{tok.header} for {tok.where}",
        "# verify_ssl is the cluster CA, so TLS stays verified against the node's certificate"
        if tok.ca_path else "# verify_ssl=True: the system's CAs verify the node's certificate",
    ]
    if others:
        out.append(f"# the other nodes answer the same API: {others}")
    out += [
        "from proxmoxer import ProxmoxAPI",
        "",
        "proxmox = ProxmoxAPI(",
        f"    {tok.primary.address!r},",
        f"    user={tok.user!r},",
        f"    token_name={tok.token_name!r},",
        f"    token_value={tok.secret!r},",
        f"    verify_ssl={tok.ca_path or True!r},",
        f"    port={PVE_PORT},",
        ")",
        "# e.g. proxmox.cluster.resources.get(type=\"vm\")",
    ]
    return "\n".join(out) + "\n"


def render_json(payload: dict, tok: Token) -> str:
    return json.dumps({**payload, "ca_path": tok.ca_path}, indent=2, sort_keys=True) + "\n"



# ---------------------------------------------------------------------------------------------
# curl: a script that checks the token on every node; the token itself is in a 0600 file

# `-H @FILE` (curl >= 7.55; Debian 12 has 7.88, Debian 13 8.14) reads header lines from a
# file, so the token is on no command line; unlike a `-K` config file it takes nothing but
# headers and needs no quoting of its own.
CURL_HEADER_SUFFIX = "-token.header"


def curl_header_path(payload: dict, directory: str) -> str:
    """Where the curl script's token header lives: beside the script, named after the module."""
    return os.path.join(os.path.abspath(directory), f"pve-{module_name(payload)}{CURL_HEADER_SUFFIX}")


def render_curl_header(tok: Token) -> str:
    return f"Authorization: PVEAPIToken={tok.token_string}\n"


def render_curl(tok: Token, header_path: str) -> str:
    cacert = ' --cacert "$cacert"' if tok.ca_path else ""
    out = [
        "#!/bin/sh",
        f"{tok.header} for {tok.where}: GET /version on each node with the token, TLS verified.",
        "# The token is read from the header file (curl -H @FILE), never put on a command line.",
        "# Prints OK or FAILED with the HTTP status per node; exits 1 if any node failed.",
        "set -eu",
        f"header={sh_quote(header_path)}",
        *([f"cacert={sh_quote(tok.ca_path)}"] if tok.ca_path else []),
        '[ -r "$header" ] || { echo "cannot read $header (the token header this script sends);'
        ' run as its owner, or claim the token again" >&2; exit 2; }',
        "failed=0",
        "check() {",
        f"    if status=$(curl -fsS{cacert} -H \"@$header\" -o /dev/null -w '%{{http_code}}' \"$2\"); then",
        '        echo "OK      $1 HTTP $status $2"',
        "    else",
        '        echo "FAILED  $1 HTTP $status $2"',
        "        failed=1",
        "    fi",
        "}",
        *(f"check {sh_quote(n.name)} {sh_quote(n.url.rstrip('/') + '/version')}" for n in tok.nodes),
        'exit "$failed"',
    ]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# The entry points

def companions(fmt: str, payload: dict, directory: str) -> List[str]:
    """The paths of the files `fmt` writes besides the output the user named."""
    return [curl_header_path(payload, directory)] if fmt == "curl" else []


def render_files(fmt: str, payload: dict, *, ca_path: Optional[str],
                 existing: Optional[str] = None, writer: str = WRITERS[0],
                 directory: Optional[str] = None) -> List[OutputFile]:
    """Every file of `fmt`, in the order to write them: companions first (curl's token header,
    in `directory`: the output's directory, or the current one), the named output last.
    `existing` (the output file's current text) matters to pve-exporter only, which merges its
    module into it. `writer` names the program in the header comment."""
    if fmt not in FORMATS:
        raise FormatError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    if writer not in WRITERS:
        raise FormatError(f"unknown writer {writer!r}; one of {', '.join(WRITERS)}")
    tok = _token(payload, ca_path, writer)
    if fmt == "curl":
        header = curl_header_path(payload, directory or os.getcwd())
        return [OutputFile(header, render_curl_header(tok), 0o600),
                OutputFile(None, render_curl(tok, header), 0o700)]
    return [OutputFile(None, _RENDERERS[fmt](payload, tok, existing), 0o600)]


_RENDERERS: Dict[str, Callable[[dict, Token, Optional[str]], str]] = {
    "pve-exporter": lambda p, t, e: render_pve_exporter(t, module_name(p), e),
    "env": lambda p, t, e: render_env(t),
    "telegraf": lambda p, t, e: render_telegraf(t),
    "zabbix": lambda p, t, e: render_zabbix(t),
    "proxmoxer": lambda p, t, e: render_proxmoxer(t),
    "json": lambda p, t, e: render_json(p, t),
}


def render(fmt: str, payload: dict, *, ca_path: Optional[str], existing: Optional[str] = None,
           writer: str = WRITERS[0], directory: Optional[str] = None) -> str:
    """The text of the output the user named (see render_files for a format's other files)."""
    return render_files(fmt, payload, ca_path=ca_path, existing=existing, writer=writer,
                        directory=directory)[-1].text
