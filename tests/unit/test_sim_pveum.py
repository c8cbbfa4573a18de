"""The fake pveum against pveum.md §1, §2 and §4 (run in-process for speed)."""
import json
import os
import re

import pytest

from pvesim.testing import MONITORING_CFG, MONITORING_SETUP, make_node, pveum_call

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="the fake pveum, like the real one, runs as root only")
pytestmark = requires_root


@pytest.fixture
def node(tmp_path):
    return make_node(tmp_path / "node")


def ok(node, *args):
    res = pveum_call(node, *args)
    assert (res.rc, res.err) == (0, ""), res
    return res.out


def fails(node, *args):
    res = pveum_call(node, *args)
    assert res.rc == 255 and res.out == "", res
    return res.err


def as_json(node, *args):
    return json.loads(ok(node, *args, "--output-format", "json"))


# -- the canonical set-up -------------------------------------------------------------
def test_monitoring_setup_writes_exactly_the_reference_user_cfg(node):
    outputs = [ok(node, *cmd) for cmd in MONITORING_SETUP]
    assert outputs[0] == outputs[1] == outputs[3] == ""  # mutating commands are silent
    token = json.loads(outputs[2])
    assert node.user_cfg() == MONITORING_CFG
    assert node.token_cfg() == f"monitor@pve!monitoring {token['value']}\n"


# -- user -----------------------------------------------------------------------------
def test_user_add_and_its_errors(node):
    assert ok(node, "user", "add", "monitor@pve", "--comment", "PVE monitoring") == ""
    assert fails(node, "user", "add", "monitor@pve") == "create user failed: user 'monitor@pve' already exists\n"
    assert fails(node, "user", "add", "monitor") == (
        "400 Parameter verification failed.\n"
        "userid: invalid format - value 'monitor' does not look like a valid user name\n\n"
        "pveum user add <userid> [OPTIONS]\n")
    assert fails(node, "user", "add", "ab") == (
        "400 Parameter verification failed.\nuserid: invalid format - user name 'ab' is too short\n\n"
        "pveum user add <userid> [OPTIONS]\n")
    long_id = "u" * 62 + "@pve"
    assert f"userid: invalid format - user name '{long_id}' is too long (66 > 64)\n" in fails(node, "user", "add", long_id)
    assert fails(node, "user", "add", "x@pve", "--groups", "g") == "create user failed: no such group 'g'\n"
    assert fails(node, "user", "add", "x@pve", "--password", "short") == (
        "400 Parameter verification failed.\npassword: value must be at least 8 characters long\n"
        "pveum user add <userid> [OPTIONS]\n")
    assert fails(node, "user", "add", "x@nowhere", "--password", "long enough") == (
        "create user failed: auth domain 'nowhere' does not exist\n")


def test_user_add_in_unknown_realm_succeeds(node):
    ok(node, "user", "add", "someone@nowhere")
    assert "user:someone@nowhere:1:0::::::\n" in node.user_cfg()


def test_user_add_fields_and_disabled(node):
    ok(node, "user", "add", "a@pve", "--enable", "0", "--expire", "4102444800", "--firstname", "Ann",
       "--lastname", "Lee", "--email", "ann@example.com", "--comment", "ops: on call")
    assert "user:a@pve:0:4102444800:Ann:Lee:ann@example.com:ops%3A on call::\n" in node.user_cfg()
    assert fails(node, "user", "add", "b@pve", "--email", "not-an-email") == (
        "400 Parameter verification failed.\n"
        "email: invalid format - value does not look like a valid email address\n\n"
        "pveum user add <userid> [OPTIONS]\n")


def test_user_modify(node):
    ok(node, "user", "add", "a@pve", "--comment", "old")
    ok(node, "user", "modify", "a@pve", "--enable", "no", "--comment", "new", "--expire", "0")
    assert "user:a@pve:0:0::::new::\n" in node.user_cfg()
    assert fails(node, "user", "modify", "ghost@pve", "--enable", "1") == (
        "update user failed: no such user ('ghost@pve')\n")
    assert fails(node, "user", "modify", "a@pve", "--append") == (
        "400 Parameter verification failed.\ngroups: missing property - 'append' requires this property\n"
        "pveum user modify <userid> [OPTIONS]\n")


def test_user_delete_is_silent_for_a_missing_user(node):
    before = node.user_cfg()
    assert ok(node, "user", "delete", "ghost@pve") == ""
    assert node.user_cfg() == before


def test_user_delete_drops_acls_but_not_token_cfg_lines(node):
    for cmd in MONITORING_SETUP:
        ok(node, *cmd)
    ok(node, "user", "delete", "monitor@pve")
    cfg = node.user_cfg()
    assert "monitor@pve:" not in cfg and "acl:1:/:monitor@pve,monitor@pve!monitoring" not in cfg
    assert "acl:1:/:monitor@pve!monitoring:Monitoring:\n" in cfg  # the token's ACL is written back ...
    assert node.token_cfg().startswith("monitor@pve!monitoring ")  # ... and its secret stays, inert
    res = pveum_call(node, "acl", "list", "--output-format", "json")
    assert res.rc == 0 and json.loads(res.out) == []
    assert res.err == "user config - ignore invalid acl token 'monitor@pve!monitoring'\n"


def test_user_list_sorted_with_exact_shape(node):
    for cmd in MONITORING_SETUP:
        ok(node, *cmd)
    assert ok(node, "user", "list", "--output-format", "json") == (
        '[{"comment":"PVE monitoring","email":"","enable":1,"expire":0,"realm-type":"pve","userid":"monitor@pve"},'
        '{"email":"root@example.com","enable":1,"expire":0,"realm-type":"pam","userid":"root@pam"}]\n')
    full = as_json(node, "user", "list", "--full", "1")
    assert full[0]["groups"] == "" and full[0]["tokens"] == [{"expire": 0, "privsep": 1, "tokenid": "monitoring"}]
    ok(node, "user", "add", "off@nowhere", "--enable", "0")
    assert [u["userid"] for u in as_json(node, "user", "list", "--enabled", "0")] == ["off@nowhere"]
    assert "realm-type" not in as_json(node, "user", "list", "--enabled", "0")[0]  # realm not in domains.cfg


def test_user_permissions_of_root_ghost_and_with_path(node):
    root = as_json(node, "user", "permissions")
    assert set(root) == {"/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms"}
    assert len(root["/"]) == 47 and set(root["/"].values()) == {1}
    assert ok(node, "user", "permissions", "ghost@pve", "--output-format", "json") == "{}\n"
    assert ok(node, "user", "permissions", "ghost@pve", "--path", "/", "--output-format", "json") == '{"/":{}}\n'
    assert fails(node, "user", "permissions", "not a user") == (
        "400 Parameter verification failed.\nuserid: value does not match the regex pattern\n"
        "pveum user permissions [<userid>] [OPTIONS] [FORMAT_OPTIONS]\n")


def test_user_permissions_text_format(node):
    for cmd in MONITORING_SETUP:
        ok(node, *cmd)
    out = ok(node, "user", "permissions", "monitor@pve", "--path", "/")
    assert "Datastore.Audit (*)" in out and "ACL path" in out
    assert out.endswith("Permissions marked with '(*)' have the 'propagate' flag set.\n")


# -- tokens ---------------------------------------------------------------------------
def test_token_add_shapes_numbers_versus_strings(node):
    ok(node, "user", "add", "monitor@pve")
    out = ok(node, "user", "token", "add", "monitor@pve", "monitoring", "--output-format", "json")
    value = json.loads(out)["value"]
    assert UUID_RE.fullmatch(value)
    assert out == f'{{"full-tokenid":"monitor@pve!monitoring","info":{{"privsep":1}},"value":"{value}"}}\n'
    out = ok(node, "user", "token", "add", "monitor@pve", "second", "--privsep", "0", "--comment", "x",
             "--expire", "1700000000", "--output-format", "json")
    value2 = json.loads(out)["value"]
    assert out == ('{"full-tokenid":"monitor@pve!second","info":{"comment":"x","expire":"1700000000","privsep":"0"},'
                   f'"value":"{value2}"}}\n')
    assert value2 != value
    assert "token:monitor@pve!second:1700000000:0:x:\n" in node.user_cfg()


def test_token_add_errors(node):
    ok(node, "user", "add", "monitor@pve")
    ok(node, "user", "token", "add", "monitor@pve", "monitoring")
    assert fails(node, "user", "token", "add", "monitor@pve", "monitoring") == (
        "400 Parameter verification failed.\ntokenid: Token already exists.\n"
        "pveum user token add <userid> <tokenid> [OPTIONS] [FORMAT_OPTIONS]\n")
    assert fails(node, "user", "token", "add", "ghost@pve", "monitoring") == "no such user ('ghost@pve')\n"
    for bad in ("1abc", "x", "a!b"):
        assert fails(node, "user", "token", "add", "monitor@pve", bad) == (
            "400 Parameter verification failed.\ntokenid: value does not match the regex pattern\n"
            "pveum user token add <userid> <tokenid> [OPTIONS] [FORMAT_OPTIONS]\n")


def test_token_add_text_output_shows_the_secret_once(node):
    ok(node, "user", "add", "monitor@pve")
    out = ok(node, "user", "token", "add", "monitor@pve", "monitoring")
    secret = node.token_cfg().split()[1]
    assert secret in out and "full-tokenid" in out
    assert secret not in ok(node, "user", "token", "list", "monitor@pve", "--output-format", "json")


def test_token_list_is_unsorted_and_varies(node):
    ok(node, "user", "add", "monitor@pve")
    assert ok(node, "user", "token", "list", "monitor@pve", "--output-format", "json") == "[]\n"
    assert ok(node, "user", "token", "list", "monitor@pve") == ""  # empty array prints nothing as text
    for tok in ("alpha", "bravo", "charlie", "delta"):
        ok(node, "user", "token", "add", "monitor@pve", tok, "--comment", f"c-{tok}")
    orders = set()
    for _ in range(8):
        listing = as_json(node, "user", "token", "list", "monitor@pve")
        ids = [t["tokenid"] for t in listing]
        assert ids != sorted(ids)
        orders.add(tuple(ids))
    assert len(orders) > 1
    assert sorted(listing, key=lambda t: t["tokenid"])[0] == {
        "comment": "c-alpha", "expire": 0, "privsep": 1, "tokenid": "alpha"}
    assert fails(node, "user", "token", "list", "ghost@pve") == "no such user ('ghost@pve')\n"


def test_token_modify(node):
    ok(node, "user", "add", "monitor@pve")
    ok(node, "user", "token", "add", "monitor@pve", "monitoring")
    assert ok(node, "user", "token", "modify", "monitor@pve", "monitoring", "--privsep", "0",
              "--output-format", "json") == '{"expire":0,"privsep":"0"}\n'
    assert "token:monitor@pve!monitoring:0:0::\n" in node.user_cfg()
    assert fails(node, "user", "token", "modify", "monitor@pve", "nope", "--privsep", "1") == (
        "no such token 'nope' for user 'monitor@pve'\n")


def test_token_delete_and_remove(node):
    for cmd in MONITORING_SETUP:
        ok(node, *cmd)
    ok(node, "user", "token", "add", "monitor@pve", "other")
    assert fails(node, "user", "token", "delete", "monitor@pve", "nope") == (
        "no such token 'nope' for user 'monitor@pve'\n")
    assert ok(node, "user", "token", "delete", "monitor@pve", "monitoring", "--output-format", "json") == ""
    assert "monitor@pve!monitoring " not in node.token_cfg()
    assert "token:monitor@pve!monitoring:" not in node.user_cfg()
    assert "acl:1:/:monitor@pve,monitor@pve!monitoring:Monitoring:\n" in node.user_cfg()  # ACL not removed
    res = pveum_call(node, "user", "token", "remove", "monitor@pve", "other")
    assert (res.rc, res.out) == (0, "")
    assert res.err == "user config - ignore invalid acl token 'monitor@pve!monitoring'\n"  # dropped on parse
    assert node.token_cfg() == ""
    assert "acl:1:/:monitor@pve:Monitoring:\n" in node.user_cfg()  # ... and gone after the next write


def test_token_permissions_follow_privsep(node):
    ok(node, "role", "add", "Monitoring", "--privs", "Sys.Audit,VM.Audit")
    ok(node, "user", "add", "monitor@pve")
    ok(node, "acl", "modify", "/", "--roles", "Monitoring", "--users", "monitor@pve")
    ok(node, "user", "token", "add", "monitor@pve", "sep")
    ok(node, "user", "token", "add", "monitor@pve", "full", "--privsep", "0")
    audit = {"Sys.Audit": 1, "VM.Audit": 1}
    assert ok(node, "user", "token", "permissions", "monitor@pve", "sep", "--output-format", "json") == "{}\n"
    assert as_json(node, "user", "token", "permissions", "monitor@pve", "sep", "--path", "/") == {"/": {}}
    assert as_json(node, "user", "token", "permissions", "monitor@pve", "full", "--path", "/") == {"/": audit}
    ok(node, "acl", "modify", "/", "--roles", "Monitoring", "--tokens", "monitor@pve!sep")
    assert as_json(node, "user", "token", "permissions", "monitor@pve", "sep", "--path", "/vms") == {"/vms": audit}
    assert as_json(node, "user", "token", "permissions", "ghost@pve", "tk") == {}
    assert as_json(node, "user", "permissions", "monitor@pve!sep", "--path", "/") == {"/": audit}


# -- roles ----------------------------------------------------------------------------
def test_role_add_and_errors(node):
    assert ok(node, "role", "add", "Monitoring", "--privs", "VM.Audit Sys.Audit") == ""
    assert "role:Monitoring:Sys.Audit,VM.Audit:\n" in node.user_cfg()
    assert fails(node, "role", "add", "Monitoring") == "create role failed: role 'Monitoring' already exists\n"
    assert fails(node, "role", "add", "Administrator") == "create role failed: role 'Administrator' already exists\n"
    for name in ("PVEMonitoring", "pveX"):
        assert fails(node, "role", "add", name) == (
            "400 Parameter verification failed.\n"
            "roleid: cannot use role ID starting with the (case-insensitive) 'PVE' namespace\n"
            "pveum role add <roleid> [OPTIONS]\n")
    assert fails(node, "role", "add", "a b") == (
        "400 Parameter verification failed.\nroleid: invalid format - role name 'a b' contains invalid characters\n\n"
        "pveum role add <roleid> [OPTIONS]\n")
    assert fails(node, "role", "add", "X", "--privs", "Foo.Bar") == (
        "400 Parameter verification failed.\nprivs: invalid format - invalid privilege 'Foo.Bar'\n\n"
        "pveum role add <roleid> [OPTIONS]\n")


def test_role_modify_replaces_appends_and_empties(node):
    ok(node, "role", "add", "R", "--privs", "VM.Audit")
    ok(node, "role", "modify", "R", "--privs", "Sys.Audit")
    assert "role:R:Sys.Audit:\n" in node.user_cfg()
    ok(node, "role", "modify", "R", "--privs", "VM.Audit", "--append", "1")
    assert "role:R:Sys.Audit,VM.Audit:\n" in node.user_cfg()
    ok(node, "role", "modify", "R")
    assert "role:R::\n" in node.user_cfg()
    assert fails(node, "role", "modify", "Nope", "--privs", "VM.Audit") == (
        "update role failed: role 'Nope' does not exist\n")
    assert fails(node, "role", "modify", "PVEAuditor", "--privs", "VM.Audit") == (
        "auto-generated role 'PVEAuditor' cannot be modified\n")
    assert fails(node, "role", "modify", "R", "--append", "1") == (
        "400 Parameter verification failed.\nprivs: missing property - 'append' requires this property\n"
        "pveum role modify <roleid> [OPTIONS]\n")


def test_role_delete(node):
    ok(node, "role", "add", "R")
    ok(node, "user", "add", "a@pve")
    ok(node, "acl", "modify", "/", "--roles", "R", "--users", "a@pve")
    assert ok(node, "role", "delete", "R") == ""
    assert "role:R" not in node.user_cfg() and "acl:1:/:a@pve:R:\n" in node.user_cfg()  # ACL stays
    assert pveum_call(node, "acl", "list").err == "user config - ignore invalid acl role 'R'\n"
    assert fails(node, "role", "delete", "R") == (
        "user config - ignore invalid acl role 'R'\n"  # every new process parses and warns again
        "delete role failed: role 'R' does not exist\n")
    assert fails(node, "role", "delete", "Administrator").endswith(
        "\nauto-generated role 'Administrator' cannot be deleted\n")


def test_role_list_shape_and_order(node):
    ok(node, "role", "add", "Monitoring", "--privs", "Datastore.Audit,Sys.Audit,VM.Audit")
    roles = as_json(node, "role", "list")
    by_id = {r["roleid"]: r for r in roles}
    assert len(roles) == 18
    assert by_id["Monitoring"] == {"privs": "Datastore.Audit,Sys.Audit,VM.Audit", "roleid": "Monitoring", "special": 0}
    assert by_id["NoAccess"] == {"privs": "", "roleid": "NoAccess", "special": 1}
    assert len(by_id["Administrator"]["privs"].split(",")) == 47
    assert by_id["PVEAuditor"]["privs"] == (
        "Datastore.Audit,Mapping.Audit,Pool.Audit,SDN.Audit,Sys.Audit,VM.Audit,VM.GuestAgent.Audit")
    ids = [r["roleid"] for r in roles]
    assert ids != sorted(ids)
    assert len({tuple(r["roleid"] for r in as_json(node, "role", "list")) for _ in range(3)} | {tuple(ids)}) > 1


# -- ACLs -----------------------------------------------------------------------------
def test_acl_modify_errors(node):
    ok(node, "user", "add", "a@pve")
    assert fails(node, "acl", "modify", "/foo", "--roles", "PVEAuditor", "--users", "a@pve") == (
        "400 Parameter verification failed.\npath: invalid ACL path '/foo'\n"
        "pveum acl modify <path> --roles <string> [OPTIONS]\n")
    assert fails(node, "acl", "modify", "/", "--roles", "PVEAuditor") == (
        "400 Parameter verification failed.\n"
        "groups: either 'users', 'groups' or 'tokens' is required.\n"
        "tokens: either 'users', 'groups' or 'tokens' is required.\n"
        "users: either 'users', 'groups' or 'tokens' is required.\n"
        "pveum acl modify <path> --roles <string> [OPTIONS]\n")
    assert fails(node, "acl", "modify", "/", "--users", "a@pve") == (
        "400 Parameter verification failed.\nroles: property is missing and it is not optional\n"
        "pveum acl modify <path> --roles <string> [OPTIONS]\n")
    cases = {
        ("--roles", "Nope", "--users", "a@pve"): "ACL update failed: role 'Nope' does not exist\n",
        ("--roles", "PVEAuditor", "--users", "b@pve"): "ACL update failed: user 'b@pve' does not exist\n",
        ("--roles", "PVEAuditor", "--tokens", "a@pve!tk"): "ACL update failed: no such token 'tk' for user 'a@pve'\n",
        ("--roles", "PVEAuditor", "--tokens", "b@pve!tk"): "ACL update failed: no such user ('b@pve')\n",
        ("--roles", "PVEAuditor", "--groups", "g"): "ACL update failed: group 'g' does not exist\n",
    }
    for args, message in cases.items():
        assert fails(node, "acl", "modify", "/", *args) == message
    assert fails(node, "acl", "modify", "/", "--roles", "PVEAuditor", "--tokens", "a@pve") == (
        "400 Parameter verification failed.\n"
        "tokens: invalid format - value 'a@pve' does not look like a valid token ID\n\n"
        "pveum acl modify <path> --roles <string> [OPTIONS]\n")
    assert "acl:" not in node.user_cfg()


def test_acl_modify_propagate_delete_and_list(node):
    ok(node, "user", "add", "a@pve")
    ok(node, "acl", "modify", "/vms/100", "--roles", "PVEAuditor", "--users", "a@pve", "--propagate", "0")
    ok(node, "acl", "modify", "/", "--roles", "PVEVMUser,PVEAuditor", "--users", "a@pve")
    assert node.user_cfg().endswith("acl:1:/:a@pve:PVEAuditor,PVEVMUser:\nacl:0:/vms/100:a@pve:PVEAuditor:\n")
    listing = as_json(node, "acl", "list")
    assert [e["path"] for e in listing] == ["/", "/", "/vms/100"]
    assert listing[2] == {"path": "/vms/100", "propagate": 0, "roleid": "PVEAuditor", "type": "user", "ugid": "a@pve"}
    assert ok(node, "acl", "delete", "/", "--roles", "PVEVMUser", "--users", "a@pve") == ""
    assert ok(node, "acl", "delete", "/storage", "--roles", "PVEVMUser", "--users", "a@pve") == ""  # nothing there
    assert ok(node, "acl", "delete", "/not-checked", "--roles", "PVEVMUser", "--users", "a@pve") == ""  # delete skips check_path
    assert node.user_cfg().endswith("acl:1:/:a@pve:PVEAuditor:\nacl:0:/vms/100:a@pve:PVEAuditor:\n")


def test_acl_list_types_and_group_ugid(node):
    (node.root / "etc/pve/user.cfg").write_text(
        "user:a@pve:1:0::::::\ntoken:a@pve!tk:0:1::\n\ngroup:ops:a@pve::\n\n\n\n"
        "acl:1:/:@ops,a@pve,a@pve!tk:PVEAuditor:\n")
    listing = as_json(node, "acl", "list")
    assert [(e["type"], e["ugid"]) for e in listing] == [("user", "a@pve"), ("group", "ops"), ("token", "a@pve!tk")]


# -- aliases and the command line -----------------------------------------------------
def test_aliases(node):
    ok(node, "useradd", "a@pve", "--comment", "x")
    ok(node, "usermod", "a@pve", "--comment", "y")
    ok(node, "roleadd", "R", "--privs", "VM.Audit")
    ok(node, "rolemod", "R", "--privs", "Sys.Audit")
    ok(node, "aclmod", "/", "-role", "R", "-user", "a@pve")
    assert node.user_cfg() == (
        "user:a@pve:1:0::::y::\nuser:root@pam:1:0:::root@example.com:::\n\n\n\nrole:R:Sys.Audit:\n\n"
        "acl:1:/:a@pve:R:\n")
    ok(node, "acldel", "/", "-role", "R", "-user", "a@pve")
    ok(node, "roledel", "R")
    ok(node, "userdel", "a@pve")
    assert node.user_cfg() == "user:root@pam:1:0:::root@example.com:::\n\n\n\n\n"
    # alias errors show the canonical command
    assert fails(node, "aclmod", "/foo", "-role", "R", "-user", "a@pve").endswith(
        "pveum acl modify <path> --roles <string> [OPTIONS]\n")


def test_command_prefix_expansion(node):
    assert ok(node, "user", "li", "--output-format", "json").startswith('[{"email":"root@example.com"')


def test_unknown_incomplete_and_missing_commands(node):
    err = fails(node, "user", "token", "lst", "x")
    assert err.startswith("ERROR: unknown command 'pveum user token lst'\nUSAGE: pveum <COMMAND> [ARGS] [OPTIONS]\n")
    assert "       pveum user token add <userid> <tokenid> [OPTIONS] [FORMAT_OPTIONS]\n" in err
    assert fails(node, "user", "token").startswith("ERROR: incomplete command 'pveum user token'\n")
    assert fails(node).startswith("ERROR: no command specified\nUSAGE: pveum <COMMAND> [ARGS] [OPTIONS]\n")
    assert fails(node, "frobnicate").startswith("ERROR: unknown command 'pveum frobnicate'\n")


def test_argument_count_errors(node):
    assert fails(node, "user", "add") == "400 not enough arguments\npveum user add <userid> [OPTIONS]\n"
    assert fails(node, "user", "token", "add", "a@pve") == (
        "400 not enough arguments\npveum user token add <userid> <tokenid> [OPTIONS] [FORMAT_OPTIONS]\n")
    assert fails(node, "user", "delete", "a@pve", "b@pve") == "400 too many arguments\npveum user delete <userid>\n"


def test_format_options_only_where_accepted(node):
    assert fails(node, "user", "add", "a@pve", "--output-format", "json") == (
        "Unknown option: output-format\n400 unable to parse option\npveum user add <userid> [OPTIONS]\n")
    assert fails(node, "role", "list", "--output-format", "xml") == (
        "400 Parameter verification failed.\n"
        "output-format: value 'xml' does not have a value in the enumeration 'text, json, json-pretty, yaml'\n"
        "pveum role list  [FORMAT_OPTIONS]\n")  # upstream's usage: two spaces where no argument is
    assert fails(node, "user", "add", "a@pve", "--enable", "maybe") == (
        "400 unable to parse boolean option\npveum user add <userid> [OPTIONS]\n")


def test_output_formats(node):
    ok(node, "user", "add", "monitor@pve")
    out = ok(node, "user", "token", "add", "monitor@pve", "monitoring", "--output-format", "json-pretty")
    value = json.loads(out)["value"]
    assert out == ('{\n   "full-tokenid" : "monitor@pve!monitoring",\n   "info" : {\n      "privsep" : 1\n   },\n'
                   f'   "value" : "{value}"\n}}\n')
    assert ok(node, "user", "token", "list", "monitor@pve", "--output-format", "yaml") == (
        "---\n- expire: 0\n  privsep: 1\n  tokenid: monitoring\n")
    assert ok(node, "user", "list", "--quiet") == ""
    table = ok(node, "user", "list", "--noborder", "1", "--noheader", "1")
    assert "userid" not in table and "root@pam" in table and "|" not in table
    assert "| userid" in ok(node, "user", "list")


def test_not_root_is_refused(node, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    res = pveum_call(node, "user", "list")
    assert (res.rc, res.out, res.err) == (255, "", "please run as root\n")


def test_parse_warnings_then_write_drops_the_invalid_privilege(node):
    with open(node.root / "etc/pve/user.cfg", "a") as fh:
        fh.write("role:Legacy:VM.Monitor,VM.Audit:\n")
    res = pveum_call(node, "role", "add", "Other")
    assert res.rc == 0 and res.err == "user config - ignore invalid privilege 'VM.Monitor'\n"  # once, not per read
    assert "role:Legacy:VM.Audit:\n" in node.user_cfg()
    assert pveum_call(node, "role", "list").err == ""


# -- as the genuine pveum answers (tests/upstream/test_differential.py) ------------------
def test_usage_listing_is_upstreams_layout(node):
    err = fails(node, "frobnicate")
    assert "\n\n       pveum group add <groupid> [OPTIONS]\n" in err  # groups apart, unmodelled too
    assert "       pveum acl list  [FORMAT_OPTIONS]\n" in err
    assert err.endswith("\n       pveum passwd <userid> [OPTIONS]\n       pveum ticket <username> [OPTIONS]\n"
                        "\n       pveum help [<extra-args>] [OPTIONS]\n")
    assert fails(node, "user", "token") == (
        "ERROR: incomplete command 'pveum user token'\nUSAGE: pveum <COMMAND> [ARGS] [OPTIONS]\n\n"
        "       pveum user token add <userid> <tokenid> [OPTIONS] [FORMAT_OPTIONS]\n"
        "       pveum user token delete <userid> <tokenid> [FORMAT_OPTIONS]\n"
        "       pveum user token list <userid> [FORMAT_OPTIONS]\n"
        "       pveum user token modify <userid> <tokenid> [OPTIONS] [FORMAT_OPTIONS]\n"
        "       pveum user token permissions <userid> <tokenid> [OPTIONS] [FORMAT_OPTIONS]\n")


def test_full_user_list_has_null_tokens_for_a_user_without_any(node):
    ok(node, "user", "add", "a@pve")
    ok(node, "user", "token", "add", "a@pve", "t1")
    users = {u["userid"]: u for u in as_json(node, "user", "list", "--full", "1")}
    assert users["root@pam"]["tokens"] is None
    assert users["a@pve"]["tokens"] == [{"expire": 0, "privsep": 1, "tokenid": "t1"}]
