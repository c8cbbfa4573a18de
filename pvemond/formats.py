"""Consumer renderings of a claimed token: the exact text each monitoring tool reads.

Stdlib only: `pvemond-claim` imports this on any monitoring host (Python >= 3.9), so YAML and
TOML are emitted by hand, every value quoted for the consumer's own parser. The formats follow
shared/reference/consumers.md.
"""
from __future__ import annotations

import json
import re
from typing import Callable, NamedTuple

FORMATS: tuple[str, ...] = (
    "pve-exporter", "env", "telegraf", "zabbix", "proxmoxer", "json", "curl")
PAYLOAD_VERSION = 1  # the node's certificate is the cluster CA's: ca_pem holds that CA
# Version 2 adds "trust": "system" and ca_pem null: pveproxy serves a custom (e.g. ACME)
# certificate, which the consumer's own trust store verifies. A node writes 1 whenever it can.
SYSTEM_TRUST_VERSION = 2
PVE_PORT = 8006  # pveproxy's port is fixed
# Who writes the file: the claim client on the monitoring host, or pvemond-bootstrap --format -o
# on the node. "# written by W" heads every rendering; a re-run finds its own pve.yml comment by it.
WRITERS = ("pvemond-claim", "pvemond-bootstrap")
HEADER = f"# written by {WRITERS[0]}"
_HEADERS = tuple(f"# written by {w}" for w in WRITERS)


class FormatError(ValueError):
    """The payload, the format or an existing output file cannot be rendered; says how to fix it."""


# ---------------------------------------------------------------------------------------------
# The payload, checked once

# C0/C1 controls and YAML's extra line breaks: none belongs in a name, an address or a secret, and
# refusing them keeps every comment line and HTTP header single-line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


# NamedTuples, not dataclasses: importing dataclasses (and inspect with it) would cost
# pvemond-claim a tenth of its start-up.
class Node(NamedTuple):
    name: str
    address: str
    url: str


class Token(NamedTuple):
    user: str
    token_name: str
    token_id: str
    secret: str
    token_string: str
    cluster: str | None
    node: str
    nodes: tuple[Node, ...]
    ca_path: str | None  # None: verify with the system's trust store (system_trust)
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


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        # the type only: the value may be a secret, and error messages end up in logs
        got = "an empty string" if value == "" else type(value).__name__
        raise FormatError(f"payload field {field!r} must be a non-empty string, got {got}")
    if _CONTROL.search(value):
        raise FormatError(f"payload field {field!r} contains a control character or line break")
    return value


def _nodes(raw: object) -> tuple[Node, ...]:
    if not isinstance(raw, list) or not raw:
        raise FormatError("payload field 'nodes' must be a non-empty list of nodes")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise FormatError(f"payload field 'nodes[{i}]' must be an object")
        out.append(Node(*(_text(item.get(k), f"nodes[{i}].{k}")
                          for k in ("name", "address", "url"))))
    return tuple(out)


def _check_version(payload: dict) -> None:
    version = payload.get("version")
    if version not in (PAYLOAD_VERSION, SYSTEM_TRUST_VERSION):
        raise FormatError(f"payload version {version!r} is not supported (this pvemond-claim "
                          f"reads versions {PAYLOAD_VERSION} and {SYSTEM_TRUST_VERSION}); install "
                          "the pvemond-claim that matches the node's pvemond")


def system_trust(payload: dict) -> bool:
    """The node's certificate is verified by the consumer's trust store, not by a CA we ship."""
    return payload.get("version") == SYSTEM_TRUST_VERSION and payload.get("trust") == "system"


def _token(payload: object, ca_path: str | None, writer: str = WRITERS[0]) -> Token:
    if not isinstance(payload, dict):
        raise FormatError(f"payload must be a JSON object, got {type(payload).__name__}")
    _check_version(payload)
    tok = Token(
        **{k: _text(payload.get(k), k) for k in ("user", "token_name", "token_id", "secret",
                                                  "token_string", "node")},
        cluster=None if payload.get("cluster") is None else _text(payload["cluster"], "cluster"),
        nodes=_nodes(payload.get("nodes")),
        ca_path=None if system_trust(payload) else _text(ca_path, "ca_path"),
        writer=writer,
    )
    _check_consistent(tok)
    return tok


def _check_consistent(tok: Token) -> None:
    # The three encodings (consumers.md) must agree, or some consumer gets a wrong credential.
    if tok.token_id != f"{tok.user}!{tok.token_name}":
        raise FormatError(f"payload token_id {tok.token_id!r} is not user!token_name "
                          f"({tok.user}!{tok.token_name})")
    if tok.token_string != f"{tok.token_id}={tok.secret}":
        raise FormatError("payload token_string is not token_id=secret")


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

def _exporter_lines(tok: Token, module: str) -> list[str]:
    hosts = " ".join(n.address for n in tok.nodes)
    return [
        f"{tok.header} for {tok.where}; scrape: /pve?module={module}&target=HOST (HOST: {hosts})",
        f"{yaml_scalar(module)}:",
        f"  user: {yaml_scalar(tok.user)}",
        f"  token_name: {yaml_scalar(tok.token_name)}",
        f"  token_value: {yaml_scalar(tok.secret)}",
        f"  verify_ssl: {yaml_scalar(tok.ca_path) if tok.ca_path else 'true'}",
    ]


def render_pve_exporter(tok: Token, module: str, existing: str | None) -> str:
    lines = _exporter_lines(tok, module)
    if existing is None or not existing.strip():
        return "".join(line + "\n" for line in lines)
    return merge_module(existing, module, lines)


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


def zabbix_macros(tok: Token) -> list[dict[str, str]]:
    """The macros of the template "Proxmox VE by HTTP", in Zabbix's import (YAML) vocabulary."""
    return [
        {"macro": "{$PVE.URL.HOST}", "value": url_host(tok.primary.address), "type": "TEXT"},
        {"macro": "{$PVE.URL.PORT}", "value": str(PVE_PORT), "type": "TEXT"},
        {"macro": "{$PVE.TOKEN.ID}", "value": tok.token_id, "type": "TEXT"},
        {"macro": "{$PVE.TOKEN.SECRET}", "value": tok.secret, "type": "SECRET_TEXT"},
    ]


_ZABBIX_TRUST = "/usr/local/share/ca-certificates"  # Debian's update-ca-certificates


def _zabbix_comments(tok: Token) -> list[str]:
    others = ", ".join(n.address for n in tok.nodes[1:])
    out = [
        f"{tok.header} for {tok.where}: macros of the template \"Proxmox VE by HTTP\"",
        "# Set them in the Macros tab of the host that links the template, or pass the list",
        "# to the API host.update or a host import (API types: TEXT=0, SECRET_TEXT=1).",
    ]
    if others:
        out.append(f"# Other nodes, if {{$PVE.URL.HOST}} goes down: {others}")
    if not tok.ca_path:
        return out + ["# The node's certificate is publicly trusted: keep \"SSL verify peer\" and",
                      "# \"SSL verify host\" on in the template's HTTP items; no CA to install."]
    return out + [
        "# Zabbix has no CA macro. To keep TLS verified, trust the cluster CA on the Zabbix",
        "# server/proxy that polls the node, e.g. on Debian:",
        f"#   cp {sh_quote(tok.ca_path)} {_ZABBIX_TRUST}/pve-{module_name_of(tok)}.crt",
        "#   update-ca-certificates   (or point SSLCALocation in zabbix_server.conf at the CA)",
        "# and turn on \"SSL verify peer\" / \"SSL verify host\" on the template's HTTP items.",
    ]


def module_name_of(tok: Token) -> str:
    return module_name({"cluster": tok.cluster, "node": tok.node})


def render_zabbix(tok: Token) -> str:
    out = _zabbix_comments(tok) + ["macros:"]
    for m in zabbix_macros(tok):
        out += [f"  - macro: {yaml_scalar(m['macro'])}",
                f"    value: {yaml_scalar(m['value'])}",
                f"    type: {m['type']}"]
    return "\n".join(out) + "\n"


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


def render_curl(tok: Token) -> str:
    header = sh_quote(f"Authorization: PVEAPIToken={tok.token_string}")
    cacert = f"--cacert {sh_quote(tok.ca_path)} " if tok.ca_path else ""
    out = [f"{tok.header} for {tok.where}: the token against each node, TLS verified"]
    out += [f"curl {cacert}-H {header} "
            f"{sh_quote(node.url.rstrip('/') + '/version')}" for node in tok.nodes]
    return "\n".join(out) + "\n"


_RENDERERS: dict[str, Callable[[dict, Token, str | None], str]] = {
    "pve-exporter": lambda p, t, e: render_pve_exporter(t, module_name(p), e),
    "env": lambda p, t, e: render_env(t),
    "telegraf": lambda p, t, e: render_telegraf(t),
    "zabbix": lambda p, t, e: render_zabbix(t),
    "proxmoxer": lambda p, t, e: render_proxmoxer(t),
    "json": lambda p, t, e: render_json(p, t),
    "curl": lambda p, t, e: render_curl(t),
}


def render(fmt: str, payload: dict, *, ca_path: str | None, existing: str | None = None,
           writer: str = WRITERS[0]) -> str:
    """The text for `fmt`. `existing` (the output file's current text) matters to pve-exporter
    only, which merges its module into it. `writer` names the program in the header comment."""
    if fmt not in _RENDERERS:
        raise FormatError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    if writer not in WRITERS:
        raise FormatError(f"unknown writer {writer!r}; one of {', '.join(WRITERS)}")
    return _RENDERERS[fmt](payload, _token(payload, ca_path, writer), existing)


# ---------------------------------------------------------------------------------------------
# pve.yml merge: text level, so every other module stays byte-for-byte what the user wrote

_DOC_START = re.compile(r"---(?:[ \t]+(?:#.*)?)?")
_ANCHOR = re.compile(r"(?:^|[\s\[{,])&([^\s,\[\]{}]+)")
_FIX = "fix pve.yml by hand, or write to a new file with -o"


def _fail(lineno: int, problem: str) -> FormatError:
    return FormatError(f"existing pve.yml, line {lineno}: {problem}; {_FIX}")


class _Layout(NamedTuple):
    indent: int                     # column of the top-level keys (normally 0)
    keys: list[tuple[int, str]]     # (line index, decoded key) of each top-level key


def merge_module(existing: str, module: str, block: list[str]) -> str:
    """`existing` with module `module` replaced by (or appended as) `block`, rest untouched."""
    bom = "\ufeff" if existing.startswith("\ufeff") else ""
    text = existing[len(bom):]
    _check_line_breaks(text)
    nl = "\r\n" if "\r\n" in text else "\n"
    lines = _split_lines(text)
    layout = _scan(lines)
    ours = [i for i, key in layout.keys if key == module]
    if len(ours) > 1:
        raise _fail(ours[1] + 1, f"module {module!r} is defined twice (also line {ours[0] + 1}); "
                    "delete one")
    new = "".join(" " * layout.indent + line + nl for line in block)
    if not ours:
        return bom + _append(text, new, nl)
    start, end = _module_span(lines, layout, ours[0])
    _check_anchors(lines, start, end)
    return bom + "".join(lines[:start]) + new + "".join(lines[end:])


def _check_line_breaks(text: str) -> None:
    # YAML also breaks lines at a lone CR, NEL, LS and PS; the scan below only knows LF and CRLF.
    m = re.search("\r(?!\n)|[\x85\u2028\u2029]", text)
    if m:
        raise _fail(text.count("\n", 0, m.start()) + 1,
                    "line break other than LF or CRLF (lone CR, NEL, LS or PS)")


def _split_lines(text: str) -> list[str]:
    """Lines with their endings; "".join() gives `text` back exactly."""
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def _append(text: str, new: str, nl: str) -> str:
    if not text.endswith("\n"):
        text += nl
    if text.strip() and not text.endswith(nl + nl):
        text += nl  # a blank line between the last module and ours
    return text + new


def _scan(lines: list[str]) -> _Layout:
    """Find the top-level keys, refusing what a line scan cannot map safely."""
    indent: int | None = None
    keys: list[tuple[int, str]] = []
    for i, raw in enumerate(lines):
        line = raw.rstrip("\r\n")
        body = line.lstrip(" ")
        if not body.strip(" \t") or body.startswith("#"):
            continue  # blank or comment: belongs to no module's data
        if body.startswith("\t"):
            raise _fail(i + 1, "tab in the indentation (YAML allows spaces only); "
                        "replace the tabs with spaces")
        if _is_doc_marker(line, indent, i):
            continue
        col = len(line) - len(body)
        indent = col if indent is None else indent
        if col < indent:
            raise _fail(i + 1, f"indented less than the first module (column {indent + 1})")
        if col == indent:
            keys.append((i, _top_key(body, i + 1)))
    return _Layout(indent or 0, keys)


def _is_doc_marker(line: str, indent: int | None, i: int) -> bool:
    """A leading `%YAML`/`---` is fine; a second document or `...` is not."""
    if indent is None and (line.startswith("%") or _DOC_START.fullmatch(line)):
        return True
    if re.match(r"(---|\.\.\.)(\s|$)", line):
        raise _fail(i + 1, "a second YAML document or a document end marker ('---' or '...'); "
                    "pve.yml must be one mapping of modules")
    return False


def _top_key(body: str, lineno: int) -> str:
    """The decoded key of a top-level `key: ...` line."""
    if re.match(r"[-?](\s|$)", body):
        what = "a list item ('- ')" if body[0] == "-" else "a complex key ('? ')"
        raise _fail(lineno, f"{what} at the top level; pve.yml must map module names to settings")
    if body[0] in "[{":
        raise _fail(lineno, "a flow collection ('[' or '{') at the top level; write the modules "
                    "in block style, one 'name:' line each")
    if body[0] in "\"'":
        key, rest = _quoted(body, lineno)
    elif body[0] in "&*!|>%@`":
        raise _fail(lineno, f"unsupported syntax {body[0]!r} at the top level; "
                    "expected a 'name:' line")
    else:
        key, rest = _plain(body, lineno)
    if not re.match(r"\s*:(\s|$)", rest):
        raise _fail(lineno, "expected a 'name:' line for a module")
    return key


def _plain(body: str, lineno: int) -> tuple[str, str]:
    m = re.search(r":(?=\s|$)", body)
    key = body[:m.start()].rstrip(" \t") if m else ""
    if not m or not key or re.search(r"\s#", key):
        raise _fail(lineno, "expected a 'name:' line for a module (is a value continued "
                    "at the left margin?)")
    return key, body[m.start():]


_DQ_ESCAPES = {"0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v",
               "f": "\f", "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\",
               "N": "\x85", "_": "\xa0", "L": "\u2028", "P": "\u2029"}
_DQ_HEX = {"x": 2, "u": 4, "U": 8}


def _quoted(body: str, lineno: int) -> tuple[str, str]:
    """A quoted key on one line: (decoded key, text after the closing quote)."""
    decode = _double_quoted if body[0] == '"' else _single_quoted
    result = decode(body)
    if result is None:
        raise _fail(lineno, "a quoted key that does not close on its line")
    return result


def _double_quoted(body: str) -> tuple[str, str] | None:
    out, i = [], 1
    while i < len(body):
        c = body[i]
        if c == '"':
            return "".join(out), body[i + 1:]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        esc = body[i + 1:i + 2]
        if esc in _DQ_HEX:
            digits = body[i + 2:i + 2 + _DQ_HEX[esc]]
            if len(digits) != _DQ_HEX[esc] or not re.fullmatch(r"[0-9A-Fa-f]+", digits):
                return None
            out.append(chr(int(digits, 16)))
            i += 2 + len(digits)
        elif esc in _DQ_ESCAPES:
            out.append(_DQ_ESCAPES[esc])
            i += 2
        else:
            return None
    return None


def _single_quoted(body: str) -> tuple[str, str] | None:
    m = re.match(r"'((?:[^']|'')*)'", body)
    return (m.group(1).replace("''", "'"), body[m.end():]) if m else None


def _module_span(lines: list[str], layout: _Layout, key_index: int) -> tuple[int, int]:
    """[start, end) of our module: its own header comment, the key line and everything indented
    under it; left-margin comments and blank lines after it belong to what follows."""
    following = [i for i, _ in layout.keys if i > key_index]
    end = following[0] if following else len(lines)
    while end > key_index + 1 and not _inside(lines[end - 1], layout.indent):
        end -= 1
    start = key_index
    while start > 0 and lines[start - 1].strip().startswith(_HEADERS):
        start -= 1
    return start, end


def _inside(raw: str, indent: int) -> bool:
    """A line that belongs to the module above it: data, or a comment indented under the key."""
    line = raw.rstrip("\r\n")
    body = line.lstrip(" ")
    if not body.strip(" \t"):
        return False
    return not body.startswith("#") or len(line) - len(body) > indent


def _check_anchors(lines: list[str], start: int, end: int) -> None:
    # Another module may reuse ours through an anchor (`*name`, `<<: *name`); replacing ours
    # would leave it dangling and the whole file unloadable.
    anchors = {a for line in lines[start:end] for a in _ANCHOR.findall(line)}
    for i, line in enumerate(lines):
        if start <= i < end:
            continue
        for a in anchors:
            if re.search(r"\*" + re.escape(a) + r"(?![^\s,\[\]{}])", line):
                raise _fail(i + 1, f"uses the anchor &{a} of the module being replaced; "
                            "move the shared settings into another module")
