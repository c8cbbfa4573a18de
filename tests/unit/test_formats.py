"""formats: every rendering read back by its consumer's own parser (PyYAML, tomllib, sh/dash/bash,
the Python AST) and checked field by field, hostile values included; pve.yml merges checked
byte for byte."""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from pvemond.contract import PayloadError, check_text
from pvemond.formats import FORMATS, HEADER, FormatError, module_name, render, render_files

if sys.version_info >= (3, 11):
    import tomllib  # part of the stdlib from 3.11 on: a missing one must fail, not skip
else:  # pragma: no cover - Python 3.9/3.10
    tomllib = None

CA = "/etc/prometheus/pve-root-ca.pem"
SECRET = "5f3c2b1a-0d9e-4c8b-a7f6-e5d4c3b2a190"
# Everything a quoting bug mangles: both quotes, bash history `!`, `$` expansion, backslash,
# command substitution, a YAML comment and mapping indicator, TOML/JSON escapes, non-ASCII.
HOSTILE = "a'b!c$d\"e\\f g#h: i{j}`k`$(l)ü"
HOSTILE_NO_DOLLAR = HOSTILE.replace("$", "%")  # Telegraf refuses `$` (env substitution)
HOSTILE_CA = "/etc/pve mon/it's \"the\" ca!.pem"
HOSTILE_USER = "mon'i!t\"or@pve"


def node(i: int, address: str | None = None) -> dict:
    address = address or f"192.0.2.{10 + i}"
    host = f"[{address}]" if ":" in address else address
    return {"name": f"pve{i + 1}", "address": address, "url": f"https://{host}:8006/api2/json"}


def make_payload(*, secret: str = SECRET, cluster: str | None = "prod", nodes: int | list = 3,
                 user: str = "monitoring@pve", token_name: str = "monitoring") -> dict:
    token_id = f"{user}!{token_name}"
    return {
        "version": 1, "user": user, "token_name": token_name, "token_id": token_id,
        "secret": secret, "token_string": f"{token_id}={secret}", "privsep": 0,
        "cluster": cluster, "node": "pve1",
        "nodes": [node(i) for i in range(nodes)] if isinstance(nodes, int) else nodes,
        "pve_version": "9.1.1",
        "ca_pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "fingerprint": "AA:BB:CC", "privileges": {"Sys.Audit": 1, "VM.Audit": 1},
    }


def hostile_payload(secret: str = HOSTILE) -> dict:
    return make_payload(secret=secret, user=HOSTILE_USER, token_name="t-1_x.y")


# ---------------------------------------------------------------------------------------------
# API surface and payload checks

def test_formats_are_the_documented_seven():
    assert FORMATS == ("pve-exporter", "env", "telegraf", "zabbix", "proxmoxer", "json", "curl")


def test_unknown_format_lists_the_valid_ones():
    with pytest.raises(FormatError) as err:
        render("grafana", make_payload(), ca_path=CA)
    assert "'grafana'" in str(err.value)
    assert all(fmt in str(err.value) for fmt in FORMATS)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("cluster, expected", [
    ("prod", "prod"), (None, "pve1"), ("", "pve1"), ("my cluster/ä:1", "my_cluster___1"),
    ("a.b-c_D9", "a.b-c_D9"),
])
def test_module_name(cluster, expected):
    assert module_name(make_payload(cluster=cluster)) == expected


def test_module_name_needs_a_cluster_or_a_node():
    with pytest.raises(FormatError, match="neither a cluster nor a node"):
        module_name({"cluster": None, "node": ""})


def _mutated(change) -> dict:
    payload = make_payload()
    change(payload)
    return payload


@pytest.mark.parametrize("change, message", [
    (lambda p: p.pop("secret"), "'secret' must be a non-empty string"),
    (lambda p: p.update(secret=SECRET + "\n"), "'secret' contains a control character"),
    (lambda p: p.update(node=7), "'node' must be a non-empty string, got int"),
    (lambda p: p.update(token_name=""), "'token_name' must be a non-empty string, got an empty"),
    (lambda p: p.update(cluster=["prod"]), "'cluster' must be"),
    (lambda p: p.update(token_string="monitoring@pve!monitoring:" + SECRET), "token_string"),
    (lambda p: p.update(token_id="monitoring@pve!other"), "token_id"),
    (lambda p: p.update(nodes=[]), "'nodes' must be a non-empty list"),
    (lambda p: p["nodes"][1].pop("url"), r"'nodes\[1\]\.url'"),
    (lambda p: p["nodes"].append("pve9"), r"'nodes\[3\]' must be an object"),
    (lambda p: p.update(version=3), "payload version 3 is not supported"),
])
@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_payload_is_refused_by_every_format(fmt, change, message):
    with pytest.raises(FormatError, match=message):
        render(fmt, _mutated(change), ca_path=CA)


@pytest.mark.parametrize("ca_path", ["", "/etc/ca\n.pem"])
def test_bad_ca_path_is_refused(ca_path):
    with pytest.raises(FormatError, match="ca_path"):
        render("env", make_payload(), ca_path=ca_path)


def test_payload_that_is_not_an_object_is_refused():
    with pytest.raises(FormatError, match="must be a JSON object"):
        render("json", ["not", "a", "dict"], ca_path=CA)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# pve-exporter: pve.yml

def exporter(payload: dict | None = None, existing: str | None = None, ca: str = CA) -> str:
    return render("pve-exporter", payload or make_payload(), ca_path=ca, existing=existing)


def test_exporter_fresh_file():
    text = exporter()
    assert yaml.safe_load(text) == {"prod": {
        "user": "monitoring@pve", "token_name": "monitoring", "token_value": SECRET,
        "verify_ssl": CA}}
    first = text.splitlines()[0]
    assert first.startswith("# written by pvemond-claim for cluster prod")
    assert "/pve?module=prod&target=HOST (HOST: 192.0.2.10 192.0.2.11 192.0.2.12)" in first


def test_exporter_standalone_node_is_its_own_module():
    text = exporter(make_payload(cluster=None, nodes=1))
    assert list(yaml.safe_load(text)) == ["pve1"]
    assert "standalone node pve1" in text and "/pve?module=pve1&target=HOST" in text


@pytest.mark.parametrize("existing", ["", "\n  \n"])
def test_exporter_blank_existing_file_is_a_fresh_one(existing):
    assert exporter(existing=existing) == exporter()


def test_exporter_hostile_values_read_back_exactly():
    doc = yaml.safe_load(exporter(hostile_payload(), ca=HOSTILE_CA))
    assert doc == {"prod": {"user": HOSTILE_USER, "token_name": "t-1_x.y",
                            "token_value": HOSTILE, "verify_ssl": HOSTILE_CA}}


@pytest.mark.parametrize("name", ["yes", "No", "true", "null", "123", "1e3", "0x1F", ".inf", "-x"])
def test_exporter_module_names_yaml_would_retype_stay_strings(name):
    text = exporter(make_payload(cluster=name))
    assert list(yaml.safe_load(text)) == [name]
    assert exporter(make_payload(cluster=name), existing=text) == text  # found again when quoted


EXISTING = """\
# Prometheus PVE exporter modules
# maintained by hand

default:
    user: prometheus@pve
    password: "s3cr#t: x"   # inline comment
    verify_ssl: false

lab:
   user: lab@pve
   token_name: "lab"
   token_value: 'it''s'
   verify_ssl: true
   # commented out: timeout: 5

# prod cluster (old, hand-written)
prod:
  user: old@pve
  token_name: old
  token_value: 00000000-0000-0000-0000-000000000000
  verify_ssl: false
  # a comment inside prod

# the DR site, keep last
dr:
  user: dr@pve
  notes: |
    multi-line
    prod: not a key, deeper in a block scalar

      with a blank line
  verify_ssl: true
"""
HEAD = EXISTING[:EXISTING.index("prod:\n")]           # ends with the user's own comment on prod
TAIL = EXISTING[EXISTING.index("\n# the DR site"):]   # blank line + the next module's comment
WITHOUT_PROD = HEAD[:-len("# prod cluster (old, hand-written)\n")] + TAIL[1:]


def test_merge_replaces_our_module_and_keeps_every_other_byte():
    out = exporter(existing=EXISTING)
    assert out.startswith(HEAD) and out.endswith(TAIL)
    # the fresh block between, with the user's comment inside prod kept (see test_pveyml.py)
    assert out[len(HEAD):len(out) - len(TAIL)] == exporter() + "  # a comment inside prod\n"
    expected = yaml.safe_load(EXISTING)
    expected["prod"] = yaml.safe_load(exporter())["prod"]
    assert yaml.safe_load(out) == expected
    assert "00000000" not in out and "old@pve" not in out


def test_merge_keeps_keys_the_user_added_to_our_module():
    first = exporter(existing=EXISTING.replace("  # a comment inside prod\n",
                                               "  timeout: 20  # slow link\n"))
    assert yaml.safe_load(first)["prod"]["timeout"] == 20 and "  timeout: 20  # slow link\n" in first
    rotated = exporter(make_payload(secret="11111111-2222-3333-4444-555555555555"), existing=first)
    assert yaml.safe_load(rotated)["prod"] == {**yaml.safe_load(first)["prod"],
                                               "token_value": "11111111-2222-3333-4444-555555555555"}


def test_merge_is_idempotent_and_rotation_changes_one_line():
    first = exporter(existing=EXISTING)
    assert exporter(existing=first) == first
    assert first.count(HEADER) == 1 and first.count("\nprod:\n") == 1
    rotated = exporter(make_payload(secret="11111111-2222-3333-4444-555555555555"), existing=first)
    changed = [(a, b) for a, b in zip(first.splitlines(), rotated.splitlines()) if a != b]
    assert len(first.splitlines()) == len(rotated.splitlines())
    assert changed == [(f'  token_value: "{SECRET}"',
                        '  token_value: "11111111-2222-3333-4444-555555555555"')]


def test_merge_appends_when_our_module_is_absent():
    out = exporter(existing=WITHOUT_PROD)
    assert out == WITHOUT_PROD + "\n" + exporter()
    assert list(yaml.safe_load(out)) == ["default", "lab", "dr", "prod"]
    assert exporter(existing=out) == out


@pytest.mark.parametrize("existing, glue", [
    ("default:\n  user: a@pve", "\n\n"),      # no final newline
    ("default:\n  user: a@pve\n", "\n"),      # blank line added between modules
    ("default:\n  user: a@pve\n\n", ""),      # already separated
    ("# nothing here yet\n", "\n"),           # comments only
])
def test_merge_append_glue(existing, glue):
    out = exporter(existing=existing)
    assert out == existing + glue + exporter()
    assert yaml.safe_load(out)["prod"]["token_value"] == SECRET


def test_merge_keeps_crlf_files_crlf():
    existing = EXISTING.replace("\n", "\r\n")
    out = exporter(existing=existing)
    assert out.startswith(HEAD.replace("\n", "\r\n")) and out.endswith(TAIL.replace("\n", "\r\n"))
    assert "\n" not in out.replace("\r\n", "")
    assert yaml.safe_load(out)["prod"]["token_value"] == SECRET


def test_merge_keeps_a_byte_order_mark():
    existing = "\ufeffdefault:\n  user: a@pve\n"
    out = exporter(existing=existing)
    assert out == existing + "\n" + exporter()
    assert list(yaml.safe_load(out)) == ["default", "prod"]
    replaced = exporter(existing="\ufeffprod:\n  user: old@pve\n")  # our key right after the BOM
    assert replaced == "\ufeff" + exporter()


@pytest.mark.parametrize("existing", [
    "  default:\n    user: a@pve\n",
    "  default:\n    user: a@pve\n  prod:\n    user: old@pve\n",
])
def test_merge_follows_an_indented_top_level(existing):
    out = exporter(existing=existing)
    assert out.startswith("  default:\n    user: a@pve\n")
    assert "\n  prod:\n    user: monitoring@pve\n" in out and "old@pve" not in out
    assert yaml.safe_load(out)["prod"]["verify_ssl"] == CA


def test_merge_keeps_leading_directive_and_document_start():
    existing = "%YAML 1.1\n--- # modules\ndefault:\n  user: a@pve\n"
    out = exporter(existing=existing)
    assert out == existing + "\n" + exporter()
    assert list(yaml.safe_load(out)) == ["default", "prod"]


@pytest.mark.parametrize("key", ['"prod"', "'prod'", '"pr\\x6fd"', "prod  "])
def test_merge_finds_our_module_however_its_key_is_written(key):
    existing = f"{key}:\n  user: old@pve\nother:\n  user: o@pve\n"
    out = exporter(existing=existing)
    assert "old@pve" not in out and out.endswith("other:\n  user: o@pve\n")
    assert yaml.safe_load(out)["prod"]["user"] == "monitoring@pve"


def test_merge_may_drop_an_anchor_nobody_else_uses_and_keep_one_we_used():
    existing = "default: &d\n  verify_ssl: false\nprod: &mine\n  <<: *d\n  user: old@pve\n"
    out = exporter(existing=existing)
    assert out.startswith("default: &d\n  verify_ssl: false\n")
    assert yaml.safe_load(out)["prod"] == yaml.safe_load(exporter())["prod"]


@pytest.mark.parametrize("existing, line, problem", [
    ("- a\n- b\n", 1, "a list item"),
    ("# modules\ndefault:\n\tuser: a\n", 3, "tab in the indentation"),
    ("{default: {user: a}}\n", 1, "flow collection"),
    ("default:\n  user: a\n---\nother:\n  user: b\n", 3, "second YAML document"),
    ("default:\n  user: a\n...\n", 3, "document end marker"),
    ("prod:\n  user: a\nother: 1\nprod:\n  user: b\n", 4, "'prod' is defined twice"),
    ("  default:\n    user: a\nother:\n  x: 1\n", 3, "indented less than the first module"),
    ("default:\n  password: first part\ncontinued here\n", 3, "expected a 'name:' line"),
    ("? complex\n: value\n", 1, "a complex key"),
    ("&a default:\n  x: 1\n", 1, "unsupported syntax '&'"),
    ("default:\r  user: a\r", 1, "line break other than LF or CRLF"),
    ('"prod\n  user: a\n', 1, "quoted key that does not close"),
    ("prod: &base\n  user: old\nother:\n  <<: *base\n", 4, "anchor &base"),
])
def test_merge_refuses_what_it_cannot_map_safely(existing, line, problem):
    with pytest.raises(FormatError) as err:
        exporter(existing=existing)
    msg = str(err.value)
    assert f"line {line}: " in msg and problem in msg
    assert "fix pve.yml by hand, or write to a new file with -o" in msg


def test_only_pve_exporter_reads_the_existing_file():
    assert render("env", make_payload(), ca_path=CA, existing="- not\n- yaml: [") == \
        render("env", make_payload(), ca_path=CA)


# ---------------------------------------------------------------------------------------------
# env: sourced by sh, dash and bash; pasted into an interactive bash

def env_expected(payload: dict, ca: str) -> dict[str, str]:
    user, name, secret = payload["user"], payload["token_name"], payload["secret"]
    return {
        "PVE_USER": user, "PVE_TOKEN_NAME": name, "PVE_TOKEN_VALUE": secret,
        "PVE_VERIFY_SSL": "true", "REQUESTS_CA_BUNDLE": ca,
        "PROXMOX_HOST": payload["nodes"][0]["address"], "PROXMOX_USER": user,
        "PROXMOX_TOKEN_NAME": name, "PROXMOX_TOKEN_VALUE": secret, "PROXMOX_VERIFY_SSL": ca,
    }


def _environ(stdout: bytes) -> dict[str, str]:
    return dict(item.split("=", 1) for item in stdout.decode().split("\0") if "=" in item)


def _shell(argv: list[str]) -> list[str]:
    if not shutil.which(argv[0]):
        pytest.skip(f"{argv[0]} is not installed")
    return argv


SHELLS = [["sh"], ["dash"], ["bash"], ["bash", "--posix"]]


@pytest.mark.parametrize("shell", SHELLS, ids=" ".join)
@pytest.mark.parametrize("hostile", [False, True], ids=["plain", "hostile"])
def test_env_sourced_with_set_a(tmp_path: Path, shell, hostile):
    payload, ca = (hostile_payload(), HOSTILE_CA) if hostile else (make_payload(), CA)
    path = tmp_path / "pve.env"
    path.write_text(render("env", payload, ca_path=ca), encoding="utf-8")
    proc = subprocess.run(_shell(shell) + ["-c", 'set -a; . "$1"; env -0', "sh", str(path)],
                          env={"PATH": os.environ["PATH"]}, capture_output=True, check=True)
    environ = _environ(proc.stdout)
    expected = env_expected(payload, ca)
    assert {k: environ.get(k) for k in expected} == expected


def test_env_assigns_exactly_the_documented_variables_single_quoted():
    lines = [line for line in render("env", hostile_payload(), ca_path=CA).splitlines()
             if line and not line.startswith("#")]
    assert [line.split("=", 1)[0] for line in lines] == list(env_expected(make_payload(), CA))
    assert all(line.split("=", 1)[1].startswith("'") and line.endswith("'") for line in lines)


def test_env_survives_paste_into_interactive_bash(tmp_path: Path):
    # Interactive bash history-expands `!` even inside double quotes; single quotes stop it.
    payload = hostile_payload()
    script = "set -a\n" + render("env", payload, ca_path=HOSTILE_CA) + "env -0\n"
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-i"], input=script.encode(),
                          env={"PATH": os.environ["PATH"], "HOME": str(tmp_path),
                               "HISTFILE": "/dev/null"}, capture_output=True, timeout=30)
    assert b"event not found" not in proc.stderr
    environ = _environ(proc.stdout)
    expected = env_expected(payload, HOSTILE_CA)
    assert {k: environ.get(k) for k in expected} == expected


# ---------------------------------------------------------------------------------------------
# telegraf: TOML

def load_toml(text: str) -> dict:
    if tomllib is None:  # pragma: no cover - only before Python 3.11
        pytest.skip("tomllib needs Python 3.11")
    return tomllib.loads(text)


def test_telegraf_one_block_per_node():
    payload = make_payload()
    doc = load_toml(render("telegraf", payload, ca_path=CA))
    assert doc == {"inputs": {"proxmox": [
        {"base_url": n["url"], "api_token": payload["token_string"], "node_name": n["name"],
         "tls_ca": CA} for n in payload["nodes"]]}}
    assert [n["base_url"] for n in doc["inputs"]["proxmox"]][0] == \
        "https://192.0.2.10:8006/api2/json"


def test_telegraf_hostile_values_read_back_exactly():
    payload = hostile_payload(HOSTILE_NO_DOLLAR)
    (block,) = load_toml(render("telegraf", {**payload, "nodes": [node(0)]},
                                ca_path=HOSTILE_CA))["inputs"]["proxmox"]
    assert block["api_token"] == f"{HOSTILE_USER}!t-1_x.y={HOSTILE_NO_DOLLAR}"
    assert block["tls_ca"] == HOSTILE_CA


@pytest.mark.parametrize("secret, ca, field", [
    (HOSTILE, CA, "the token"), (SECRET, "/etc/$HOME/ca.pem", "the CA path")])
def test_telegraf_refuses_dollar_which_it_would_substitute(secret, ca, field):
    with pytest.raises(FormatError, match=rf"^{field} contains '\$', which Telegraf") as err:
        render("telegraf", make_payload(secret=secret), ca_path=ca)
    assert secret not in str(err.value)  # error messages reach logs: never the secret


# ---------------------------------------------------------------------------------------------
# zabbix: a zabbix_export document the 6.0/7.0 frontend imports, checked against the format

# The parts of the 6.0 export format (Zabbix manual, "Configuration export/import", hosts) this
# document uses: each key, whether the import requires it, and its type or allowed values.
ZABBIX_SCHEMA = {
    "zabbix_export": (True, {
        "version": (True, {"6.0"}),
        "groups": (True, [{"uuid": (True, "uuid4"), "name": (True, str)}]),
        "hosts": (True, [{
            "host": (True, "hostname"), "name": (False, str),
            "templates": (False, [{"name": (True, str)}]),
            "groups": (True, [{"name": (True, str)}]),
            "interfaces": (False, [{"useip": (False, {"YES", "NO"}), "ip": (False, str),
                                    "dns": (False, str), "interface_ref": (True, str)}]),
            "macros": (False, [{"macro": (True, "macro"), "value": (False, str),
                                "type": (False, {"TEXT", "SECRET_TEXT", "VAULT"})}]),
            "description": (False, str),
            "inventory_mode": (False, {"DISABLED", "MANUAL", "AUTOMATIC"}),
        }]),
    }),
}
_ZABBIX_PATTERNS = {"uuid4": r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}",
                    "hostname": r"[0-9A-Za-z_. -]+", "macro": r"\{\$[A-Z0-9_.]+\}"}


def check_schema(doc, schema, where="") -> None:
    import re
    if isinstance(schema, dict):
        assert isinstance(doc, dict), where
        assert set(doc) <= set(schema), f"{where}: unknown keys {set(doc) - set(schema)}"
        for key, (required, sub) in schema.items():
            assert key in doc or not required, f"{where}.{key} is required"
            if key in doc:
                check_schema(doc[key], sub, f"{where}.{key}")
    elif isinstance(schema, list):
        assert isinstance(doc, list) and doc, where
        for i, item in enumerate(doc):
            check_schema(item, schema[0], f"{where}[{i}]")
    elif isinstance(schema, set):
        assert doc in schema, f"{where}: {doc!r} not one of {schema}"
    elif schema is str:
        assert isinstance(doc, str) and doc, where
    else:
        assert isinstance(doc, str) and re.fullmatch(_ZABBIX_PATTERNS[schema], doc), where


def zabbix_host(text: str) -> dict:
    doc = yaml.safe_load(text)
    check_schema(doc, ZABBIX_SCHEMA)
    (host,) = doc["zabbix_export"]["hosts"]
    return host


def macros(text: str) -> dict[str, tuple[str, str]]:
    return {m["macro"]: (m["value"], m["type"]) for m in zabbix_host(text)["macros"]}


def test_zabbix_is_an_export_document_with_a_host_linked_to_the_template():
    text = render("zabbix", make_payload(), ca_path=CA)
    host = zabbix_host(text)
    assert host["host"] == "pve-prod" and host["templates"] == [{"name": "Proxmox VE by HTTP"}]
    assert host["interfaces"] == [{"useip": "YES", "ip": "192.0.2.10", "interface_ref": "if1"}]
    assert macros(text) == {
        "{$PVE.URL.HOST}": ("192.0.2.10", "TEXT"),
        "{$PVE.URL.PORT}": ("8006", "TEXT"),
        "{$PVE.TOKEN.ID}": ("monitoring@pve!monitoring", "TEXT"),
        "{$PVE.TOKEN.SECRET}": (SECRET, "SECRET_TEXT"),
    }
    assert "update-ca-certificates" in text and "verify_peer/verify_host: 'YES'" in text
    assert "192.0.2.11, 192.0.2.12" in text  # the other nodes, for failover
    assert render("zabbix", make_payload(), ca_path=CA) == text  # the same uuid every time


def test_zabbix_schema_check_can_fail():
    doc = yaml.safe_load(render("zabbix", make_payload(), ca_path=CA))
    doc["zabbix_export"]["hosts"][0]["macros"][1]["type"] = "SECRET"
    with pytest.raises(AssertionError, match="not one of"):
        check_schema(doc, ZABBIX_SCHEMA)
    del doc["zabbix_export"]["hosts"][0]["groups"]
    with pytest.raises(AssertionError, match="groups is required"):
        check_schema(doc, ZABBIX_SCHEMA)


def test_zabbix_hostile_values_and_the_trust_command():
    text = render("zabbix", hostile_payload(), ca_path=HOSTILE_CA)
    got = macros(text)
    assert got["{$PVE.TOKEN.ID}"] == (f"{HOSTILE_USER}!t-1_x.y", "TEXT")
    assert got["{$PVE.TOKEN.SECRET}"] == (HOSTILE, "SECRET_TEXT")
    (cp,) = [line[1:].strip() for line in text.splitlines() if line.startswith("#   cp ")]
    proc = subprocess.run(["sh", "-c", 'cp() { printf "%s\\0" "$@"; }; eval "$1"', "sh", cp],
                          capture_output=True, check=True)
    assert proc.stdout.decode().split("\0")[:2] == [
        HOSTILE_CA, "/usr/local/share/ca-certificates/pve-prod.crt"]


def test_zabbix_ipv6_and_dns_names():
    payload = make_payload(cluster=None, nodes=[node(0, "2001:db8::10")])
    text = render("zabbix", payload, ca_path=CA)
    assert macros(text)["{$PVE.URL.HOST}"][0] == "[2001:db8::10]"
    assert zabbix_host(text)["interfaces"][0]["ip"] == "2001:db8::10"
    assert "Other nodes" not in text and "/pve-pve1.crt" in text  # standalone: named by node
    named = render("zabbix", make_payload(nodes=[node(0, "pve1.example.org")]), ca_path=CA)
    assert zabbix_host(named)["interfaces"] == [
        {"useip": "NO", "dns": "pve1.example.org", "interface_ref": "if1"}]


# ---------------------------------------------------------------------------------------------
# proxmoxer: Python

def proxmox_call(text: str) -> tuple[list, dict]:
    tree = ast.parse(text)
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert [(i.module, [a.name for a in i.names]) for i in imports] == [
        ("proxmoxer", ["ProxmoxAPI"])]
    (call,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
               and isinstance(n.func, ast.Name) and n.func.id == "ProxmoxAPI"]
    return ([ast.literal_eval(a) for a in call.args],
            {k.arg: ast.literal_eval(k.value) for k in call.keywords})


@pytest.mark.parametrize("hostile", [False, True], ids=["plain", "hostile"])
def test_proxmoxer_call(hostile):
    payload, ca = (hostile_payload(), HOSTILE_CA) if hostile else (make_payload(), CA)
    args, kwargs = proxmox_call(render("proxmoxer", payload, ca_path=ca))
    assert args == ["192.0.2.10"]
    assert kwargs == {"user": payload["user"], "token_name": payload["token_name"],
                      "token_value": payload["secret"], "verify_ssl": ca, "port": 8006}


def test_proxmoxer_snippet_runs(monkeypatch):
    calls = []
    fake = types.ModuleType("proxmoxer")
    fake.ProxmoxAPI = lambda *a, **kw: calls.append((a, kw))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "proxmoxer", fake)
    exec(compile(render("proxmoxer", hostile_payload(), ca_path=HOSTILE_CA), "snippet", "exec"), {})
    assert calls == [(("192.0.2.10",), {"user": HOSTILE_USER, "token_name": "t-1_x.y",
                                        "token_value": HOSTILE, "verify_ssl": HOSTILE_CA,
                                        "port": 8006})]


# ---------------------------------------------------------------------------------------------
# json

def test_json_is_the_payload_plus_ca_path_sorted():
    payload = make_payload()
    text = render("json", payload, ca_path=CA)
    assert json.loads(text) == {**payload, "ca_path": CA}
    assert "ca_path" not in payload  # the caller's dict is left alone
    order = json.loads(text, object_pairs_hook=lambda pairs: [k for k, _ in pairs])
    assert order == sorted(order) and text.startswith('{\n  "ca_path"') and text.endswith("}\n")


# ---------------------------------------------------------------------------------------------
# curl: a script and a 0600 token header, run against a stand-in curl (real curl: integration)

def curl_files(payload: dict, ca: str | None, directory: Path) -> tuple[str, str, str]:
    (header, script) = render_files("curl", payload, ca_path=ca, directory=str(directory))
    assert header.mode == 0o600 and script.path is None
    assert header.path == str(directory / "pve-prod-token.header")
    return header.path, header.text, script.text


FAKE_CURL = """#!/bin/sh
printf '%s\\0' "$@" >> "$CALLS"; printf '\\1\\0' >> "$CALLS"
case "$*" in *192.0.2.11*) printf 401; exit 22;; esac
printf 200
"""


def run_curl_script(tmp_path: Path, script: str, shell: str = "sh"):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "curl").write_text(FAKE_CURL)
    (bin_dir / "curl").chmod(0o755)
    (tmp_path / "check.sh").write_text(script)
    calls = tmp_path / "calls"
    proc = subprocess.run([shell, str(tmp_path / "check.sh")], capture_output=True, text=True,
                          env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls)})
    words = calls.read_text().split("\0")[:-1] if calls.exists() else []
    argv, out = [], []
    for w in words:
        if w == "\1":
            out.append(argv)
            argv = []
        else:
            argv.append(w)
    return proc, out


@pytest.mark.parametrize("shell", ["sh", "bash"])
@pytest.mark.parametrize("hostile", [False, True], ids=["plain", "hostile"])
def test_curl_script_reads_the_token_from_its_file(tmp_path: Path, shell, hostile):
    payload, ca = (hostile_payload(), HOSTILE_CA) if hostile else (make_payload(), CA)
    header_path, header, script = curl_files(payload, ca, tmp_path)
    assert header == f"Authorization: PVEAPIToken={payload['token_string']}\n"
    Path(header_path).write_text(header)
    proc, calls = run_curl_script(tmp_path, script, shell)
    assert calls == [["-fsS", "--cacert", ca, "-H", f"@{header_path}", "-o", "/dev/null",
                      "-w", "%{http_code}", n["url"] + "/version"] for n in payload["nodes"]]
    assert payload["secret"] not in script
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"OK      pve1 HTTP 200 {payload['nodes'][0]['url']}/version",
        f"FAILED  pve2 HTTP 401 {payload['nodes'][1]['url']}/version",
        f"OK      pve3 HTTP 200 {payload['nodes'][2]['url']}/version"]


def test_curl_script_shape():
    script = render("curl", make_payload(), ca_path=CA, directory="/etc/pvemond-test")
    assert script.startswith("#!/bin/sh\n# written by pvemond-claim for cluster prod")
    assert "\nset -eu\n" in script and script.endswith('exit "$failed"\n')
    assert "header='/etc/pvemond-test/pve-prod-token.header'" in script


def test_curl_script_without_its_header_file_says_so(tmp_path: Path):
    _, _, script = curl_files(make_payload(), CA, tmp_path)
    proc, calls = run_curl_script(tmp_path, script)
    assert proc.returncode == 2 and calls == []
    assert "cannot read" in proc.stderr and "pve-prod-token.header" in proc.stderr


# ---------------------------------------------------------------------------------------------
# A custom (e.g. ACME) certificate on 8006: payload version 2, verified by the system's CAs

def system_payload() -> dict:
    return dict(make_payload(), version=2, trust="system", ca_pem=None)


def test_system_trust_keeps_verification_on_without_a_ca_file():
    p = system_payload()
    assert yaml.safe_load(render("pve-exporter", p, ca_path=None))["prod"]["verify_ssl"] is True
    env = render("env", p, ca_path=None)
    assert "REQUESTS_CA_BUNDLE" not in env and "PROXMOX_VERIFY_SSL='true'" in env
    assert "PVE_VERIFY_SSL='true'" in env
    blocks = load_toml(render("telegraf", p, ca_path=None))["inputs"]["proxmox"]
    assert len(blocks) == 3 and not any("tls_ca" in b for b in blocks)
    assert "no CA to install" in render("zabbix", p, ca_path=None)
    assert "verify_ssl=True," in render("proxmoxer", p, ca_path=None)
    assert json.loads(render("json", p, ca_path=None))["ca_path"] is None
    curl = render("curl", p, ca_path=None)
    assert "--cacert" not in curl and "--insecure" not in curl and "-k" not in curl.split()
    assert curl.count("\ncheck '") == 3


def test_a_ca_path_is_ignored_only_under_system_trust():
    with pytest.raises(FormatError, match="ca_path"):
        render("curl", make_payload(), ca_path=None)
    assert "--cacert" not in render("curl", system_payload(), ca_path=CA)
    not_system = dict(system_payload(), trust="cluster-ca")
    with pytest.raises(FormatError, match="ca_path"):
        render("curl", not_system, ca_path=None)


# ---------------------------------------------------------------------------------------------
# Who wrote it: pvemond-bootstrap --format -o on the node, pvemond-claim on the monitoring host

@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "json"])
def test_the_header_names_the_writer(fmt):
    text = render(fmt, make_payload(), ca_path=CA, writer="pvemond-bootstrap")
    if fmt == "curl":  # a script: its shebang comes first
        text = text.split("\n", 1)[1]
    assert text.startswith("# written by pvemond-bootstrap for cluster prod")
    assert "pvemond-claim" not in text.splitlines()[0]
    assert "\n# written by pvemond-claim" in "\n" + render(fmt, make_payload(), ca_path=CA)


def test_a_claim_replaces_the_module_bootstrap_wrote():
    by_node = render("pve-exporter", make_payload(), ca_path=CA, writer="pvemond-bootstrap")
    by_claim = exporter(existing=by_node)
    assert by_claim == exporter() and "pvemond-bootstrap" not in by_claim


def test_an_unknown_writer_is_refused():
    with pytest.raises(FormatError, match="unknown writer"):
        render("env", make_payload(), ca_path=CA, writer="someone")


@pytest.mark.parametrize("char, refused", [
    ("\x00", True), ("\x1f", True), (" ", False), ("~", False), ("\x7f", True), ("\x85", True),
    ("\x9f", True), ("\xa0", False), ("é", False), ("\u2027", False), ("\u2028", True),
    ("\u2029", True), ("\u202a", False)])
def test_control_characters_and_line_breaks_are_refused_and_nothing_else(char, refused):
    if refused:
        with pytest.raises(PayloadError, match="'cluster' contains a control character"):
            check_text(f"prod{char}east", "cluster")
    else:
        assert check_text(f"prod{char}east", "cluster") == f"prod{char}east"
