"""Effective permissions (pveum.md §3): privsep, propagation, NoAccess, groups, dump shape."""
import pytest

from pvesim import perms, usercfg
from pvesim.privileges import PVE8, PVE9

AUDIT4 = {"Datastore.Audit": 1, "SDN.Audit": 1, "Sys.Audit": 1, "VM.Audit": 1}
BASE = (
    "user:mon@pve:1:0::::::\n"
    "token:mon@pve!sep:0:1::\ntoken:mon@pve!full:0:0::\ntoken:mon@pve!paired:0:1::\n"
    "role:Mon:Datastore.Audit,SDN.Audit,Sys.Audit,VM.Audit:\n"
    "acl:1:/:mon@pve,mon@pve!full,mon@pve!paired:Mon:\n"
)


def cfg_of(text, privs=PVE9):
    return usercfg.parse_user_config(text, privs, lambda w: None)


def test_user_with_propagated_role_has_it_on_every_default_path():
    dump = perms.permission_dump(cfg_of(BASE), "mon@pve")
    assert set(dump) == set(perms.DEFAULT_PATHS)
    assert all(privs == AUDIT4 for privs in dump.values())


def test_privsep_token_without_its_own_acl_has_nothing():
    cfg = cfg_of(BASE)
    assert perms.permission_dump(cfg, "mon@pve!sep") == {}
    assert perms.permission_dump(cfg, "mon@pve!sep", "/") == {"/": {}}


def test_privsep_token_with_paired_acl_gets_the_privileges():
    assert perms.permission_dump(cfg_of(BASE), "mon@pve!paired", "/vms") == {"/vms": AUDIT4}


def test_privsep0_token_is_its_user_and_ignores_token_acls():
    cfg = cfg_of(BASE.replace("acl:1:/:mon@pve,", "acl:1:/:mon@pve!sep,mon@pve,") +
                 "acl:1:/:mon@pve!full:PVEAdmin:\n")
    assert perms.permission_dump(cfg, "mon@pve!full") == perms.permission_dump(cfg, "mon@pve")


def test_privsep_token_is_intersected_with_its_user():
    cfg = cfg_of(
        "user:u@pve:1:0::::::\ntoken:u@pve!tk:0:1::\nrole:R:Sys.Audit,VM.Audit:\n"
        "acl:1:/:u@pve:R:\nacl:1:/:u@pve!tk:PVEAdmin:\n"
    )
    assert perms.permissions(cfg, "u@pve!tk", "/") == {"Sys.Audit": 1, "VM.Audit": 1}


def test_propagate_is_the_and_of_user_and_token():
    cfg = cfg_of(
        "user:u@pve:1:0::::::\ntoken:u@pve!tk:0:1::\nrole:R:Sys.Audit:\n"
        "acl:0:/:u@pve:R:\nacl:1:/:u@pve!tk:R:\n"
    )
    assert perms.permissions(cfg, "u@pve!tk", "/") == {"Sys.Audit": 0}
    assert perms.permissions(cfg, "u@pve!tk", "/nodes") == {}  # user's ACL does not propagate


def test_root_tokens_are_not_intersected():
    cfg = cfg_of("token:root@pam!sp:0:1::\ntoken:root@pam!full:0:0::\nrole:R:Sys.Audit:\nacl:1:/:root@pam!sp:R:\n")
    assert perms.permissions(cfg, "root@pam!sp", "/") == {"Sys.Audit": 1}
    assert perms.permissions(cfg, "root@pam!full", "/") == {p: 1 for p in PVE9.valid}


def test_unknown_users_and_tokens_get_nothing():
    cfg = cfg_of(BASE)
    assert perms.permission_dump(cfg, "ghost@pve") == {}
    assert perms.permission_dump(cfg, "mon@pve!ghost") == {}
    assert perms.permission_dump(cfg, "ghost@pve!t", "/") == {"/": {}}


def test_more_specific_path_overrides_and_propagate_0_stays_put():
    cfg = cfg_of(
        "user:u@pve:1:0::::::\nrole:A:Sys.Audit:\nrole:B:VM.Audit:\n"
        "acl:1:/:u@pve:A:\nacl:0:/vms:u@pve:B:\n"
    )
    assert perms.permissions(cfg, "u@pve", "/vms") == {"VM.Audit": 0}
    assert perms.permissions(cfg, "u@pve", "/vms/100") == {"Sys.Audit": 1}  # /vms's entry does not propagate


def test_noaccess_wins_on_its_level():
    cfg = cfg_of("user:u@pve:1:0::::::\nacl:1:/:u@pve:PVEAuditor:\nacl:1:/vms:u@pve:NoAccess,PVEAuditor:\n")
    assert perms.permissions(cfg, "u@pve", "/vms/100") == {}
    assert "Sys.Audit" in perms.permissions(cfg, "u@pve", "/nodes")


def test_group_acls_apply_to_members_and_user_acls_override_groups():
    cfg = cfg_of(
        "user:u@pve:1:0::::::\nuser:v@pve:1:0::::::\ngroup:ops:u@pve,v@pve::\nrole:R:Sys.Audit:\n"
        "acl:1:/:@ops:PVEAuditor:\nacl:1:/:v@pve:R:\n"
    )
    assert perms.permissions(cfg, "u@pve", "/") == {p: 1 for p in PVE9.builtin_roles["PVEAuditor"]}
    assert perms.permissions(cfg, "v@pve", "/") == {"Sys.Audit": 1}


def test_pool_members_inherit_pool_roles_without_propagation():
    cfg = cfg_of("user:u@pve:1:0::::::\npool:p1::100:local:\nacl:1:/pool/p1:u@pve:PVEAuditor:\n")
    assert perms.permissions(cfg, "u@pve", "/vms/100")["VM.Audit"] == 0
    dump = perms.permission_dump(cfg, "u@pve")
    assert {"/pool/p1", "/vms/100", "/storage/local"} <= set(dump)
    assert "/" not in dump


def test_dump_includes_acl_paths_and_their_ancestors():
    cfg = cfg_of("user:u@pve:1:0::::::\nacl:1:/sdn/zones/z1:u@pve:PVEAuditor:\n")
    assert set(perms.permission_dump(cfg, "u@pve")) == {"/sdn/zones/z1"}
    assert "/sdn/zones" in cfg.acl_tree_paths()


def test_root_has_everything_on_the_default_paths():
    dump = perms.permission_dump(cfg_of("", PVE8), "root@pam")
    assert set(dump) == set(perms.DEFAULT_PATHS)
    assert dump["/"] == {p: 1 for p in PVE8.valid}


def test_check_user_enabled_and_token_exist_messages():
    cfg = cfg_of("user:off@pve:0:0::::::\nuser:old@pve:1:1000::::::\nuser:ok@pve:1:0::::::\n")
    cases = [
        ("off@pve", "user 'off@pve' is disabled\n"),
        ("old@pve", "user 'old@pve' access expired\n"),
        ("ghost@pve", "no such user ('ghost@pve')\n"),
    ]
    for userid, message in cases:
        with pytest.raises(perms.AccessError) as err:
            perms.check_user_enabled(cfg, userid)
        assert str(err.value) == message
    perms.check_user_enabled(cfg, "ok@pve")
    with pytest.raises(perms.AccessError) as err:
        perms.check_token_exist(cfg, "ok@pve", "tk")
    assert str(err.value) == "no such token 'tk' for user 'ok@pve'\n"


def test_has_privs_normalizes_the_path():
    cfg = cfg_of(BASE)
    assert perms.has_privs(cfg, "mon@pve", "/nodes/pve1/", ["Sys.Audit"])
    assert not perms.has_privs(cfg, "mon@pve!sep", "/nodes/pve1", ["Sys.Audit"])
