"""user.cfg / token.cfg parsing and writing (pveum.md §4)."""
import os
import stat

from pvesim import usercfg
from pvesim.privileges import PVE8, PVE9
from pvesim.testing import MONITORING_CFG



def parse(text, privs=PVE9):
    warnings = []
    return usercfg.parse_user_config(text, privs, warnings.append), warnings


def test_reference_example_round_trips_byte_for_byte():
    cfg, warnings = parse(MONITORING_CFG)
    assert warnings == []
    assert usercfg.write_user_config(cfg) == MONITORING_CFG


def test_parsed_values_are_numbers_and_split_quirk_defines_email():
    cfg, _ = parse(MONITORING_CFG)
    monitor = cfg.users["monitor@pve"]
    assert monitor["enable"] == 1 and monitor["expire"] == 0
    assert monitor["email"] == ""  # a later field (comment) is set
    assert monitor["comment"] == "PVE monitoring"
    assert cfg.users["root@pam"]["email"] == "root@example.com" and "comment" not in cfg.users["root@pam"]
    assert cfg.token("monitor@pve", "monitoring") == {"privsep": 1, "expire": 0}
    assert cfg.acl["/"]["users"]["monitor@pve"] == {"Monitoring": 1}
    bare, _ = parse("user:x@pve:1:0::::::\n")
    assert "email" not in bare.users["x@pve"]  # all later fields empty: undefined


def test_root_pam_and_builtin_roles_always_exist():
    cfg, _ = parse("")
    assert "root@pam" in cfg.users and "Administrator" in cfg.roles
    assert usercfg.write_user_config(cfg) == "user:root@pam:1:0::::::\n\n\n\n\n"


def test_sections_sorted_and_in_order():
    text = (
        "user:b@pve:1:0::::::\nuser:a@pve:0:1700000000::::::\nrole:Zed:VM.Audit:\nrole:Alpha:Sys.Audit:\n"
        "group:ops:b@pve,a@pve:Operators:\nacl:1:/vms:@ops:PVEAuditor:\n"
        "pool:p1::101,100:local:\nacl:0:/:a@pve:Alpha:\n"
    )
    cfg, warnings = parse(text)
    assert warnings == []
    assert usercfg.write_user_config(cfg) == (
        "user:a@pve:0:1700000000::::::\nuser:b@pve:1:0::::::\nuser:root@pam:1:0::::::\n\n"
        "group:ops:a@pve,b@pve:Operators:\n\n"
        "pool:p1::100,101:local:\n\n"
        "role:Alpha:Sys.Audit:\nrole:Zed:VM.Audit:\n\n"
        "acl:0:/:a@pve:Alpha:\nacl:1:/vms:@ops:PVEAuditor:\n"
    )


def test_acl_members_with_same_propagate_and_rolelist_share_a_line():
    cfg, _ = parse("user:a@pve:1:0::::::\nuser:b@pve:1:0::::::\nuser:c@pve:1:0::::::\n")
    node = cfg.acl_node("/")
    node["users"]["b@pve"] = {"R1": 1, "R2": 1}
    node["users"]["a@pve"] = {"R2": 1, "R1": 1}
    node["users"]["c@pve"] = {"R1": 0}
    node["users"]["root@pam"] = {"Administrator": 1}  # never written
    cfg.roles.update({"R1": set(), "R2": set()})
    lines = [l for l in usercfg.write_user_config(cfg).splitlines() if l.startswith("acl:")]
    assert lines == ["acl:0:/:c@pve:R1:", "acl:1:/:a@pve,b@pve:R1,R2:"]


def test_acl_tree_order_is_depth_first_with_sorted_children():
    cfg, _ = parse(
        "user:a@pve:1:0::::::\nacl:1:/vms/100:a@pve:PVEAuditor:\nacl:1:/storage:a@pve:PVEAuditor:\n"
        "acl:1:/nodes/pve1:a@pve:PVEAuditor:\nacl:1:/nodes:a@pve:PVEAuditor:\nacl:1:/:a@pve:PVEAuditor:\n"
    )
    paths = [l.split(":")[2] for l in usercfg.write_user_config(cfg).splitlines() if l.startswith("acl:")]
    assert paths == ["/", "/nodes", "/nodes/pve1", "/storage", "/vms/100"]


def test_invalid_privilege_for_the_version_is_dropped_with_the_warning():
    cfg, warnings = parse("role:Old:VM.Monitor,VM.Audit:\n", PVE9)
    assert warnings == ["user config - ignore invalid privilege 'VM.Monitor'\n"]
    assert cfg.roles["Old"] == {"VM.Audit"}
    cfg8, warnings8 = parse("role:New:VM.GuestAgent.Audit,VM.Monitor:\n", PVE8)
    assert warnings8 == ["user config - ignore invalid privilege 'VM.GuestAgent.Audit'\n"]
    assert cfg8.roles["New"] == {"VM.Monitor"}


def test_references_are_resolved_in_file_order():
    """A group line before its users: members are kept but warned about (Perl parses top-down)."""
    cfg, warnings = parse("group:ops:a@pve::\nuser:a@pve:1:0::::::\n")
    assert warnings == ["user config - ignore invalid group member 'a@pve'\n"]
    assert cfg.groups["ops"]["users"] == {"a@pve"} and cfg.users["a@pve"]["groups"] == set()


def test_dangling_references_warn():
    _, warnings = parse(
        "user:a@pve:1:0::::::\nacl:1:/:a@pve!gone:PVEAuditor:\nacl:1:/:a@pve:Deleted:\n"
        "token:x@pve!tk:0:1::\nbogus:line\nacl:1:/:@nogroup:PVEAuditor:\nuser:bad:1:0::::::\n"
    )
    assert warnings == [
        "user config - ignore invalid acl token 'a@pve!gone'\n",
        "user config - ignore invalid acl role 'Deleted'\n",
        "user config - ignore token 'x@pve!tk' - user does not exist\n",
        "user config - ignore config line: bogus:line\n",
        "user config - ignore invalid acl group 'nogroup'\n",
        "user config - ignore user 'bad' - invalid user name\n",
    ]


def test_token_without_privsep_field_parses_as_zero_and_is_written_as_zero():
    cfg, _ = parse("user:a@pve:1:0::::::\ntoken:a@pve!tk\n")
    assert cfg.token("a@pve", "tk") == {"privsep": 0, "expire": 0}
    assert "token:a@pve!tk:0:0::\n" in usercfg.write_user_config(cfg)


def test_encode_text_escapes_colon_percent_controls_and_high_bytes():
    assert usercfg.encode_text("a b:c%d\n\x7fé") == "a b%3Ac%25d%0A%7F%C3%A9"
    assert usercfg.decode_text("a b%3Ac%25d%0A%7F%C3%A9") == "a b:c%d\n\x7fé"
    cfg, _ = parse("")
    cfg.users["a@pve"] = usercfg.new_user(enable=1, comment="ops: team", firstname="Zoë")
    line = usercfg.write_user_config(cfg).splitlines()[0]
    assert line == "user:a@pve:1:0:Zo%C3%AB:::ops%3A team::"
    again, _ = parse(usercfg.write_user_config(cfg))
    assert again.users["a@pve"]["comment"] == "ops: team" and again.users["a@pve"]["firstname"] == "Zoë"


def test_cli_strings_are_normalised_when_written():
    cfg, _ = parse("")
    cfg.users["a@pve"] = usercfg.new_user(enable="0", expire="1700000000")
    cfg.users["a@pve"]["tokens"]["t"] = {"privsep": "0", "expire": "5", "comment": "0"}
    text = usercfg.write_user_config(cfg)
    assert "user:a@pve:0:1700000000::::::\n" in text
    assert "token:a@pve!t:5:0::\n" in text  # Perl: comment '0' is false


def test_token_cfg_written_sorted_mode_0600_and_atomically(tmp_path):
    path = tmp_path / "priv" / "token.cfg"
    usercfg.write_token_cfg(path, {"b@pve!t": "2222", "a@pve!t": "1111"})
    assert path.read_text() == "a@pve!t 1111\nb@pve!t 2222\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert usercfg.read_token_cfg(path) == {"a@pve!t": "1111", "b@pve!t": "2222"}
    assert [p.name for p in path.parent.iterdir()] == ["token.cfg"]  # no temp file left behind
    warnings = []
    assert usercfg.parse_token_cfg("garbage\na@pve!t s\n", warnings.append) == {"a@pve!t": "s"}
    assert warnings == ["skipping invalid token.cfg entry\n"]


def test_user_cfg_saved_with_mode_0640(tmp_path):
    cfg, _ = parse(MONITORING_CFG)
    path = tmp_path / "user.cfg"
    usercfg.save_user_config(path, cfg)
    assert path.read_text() == MONITORING_CFG
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
