"""Name grammars and ACL paths (pveum.md §2.3, AccessControl.pm check_path)."""
import pytest

from pvesim import names


@pytest.mark.parametrize("userid, message", [
    ("monitor", "value 'monitor' does not look like a valid user name\n"),
    ("ab", "user name 'ab' is too short\n"),
    ("a" * 60 + "@pve1", "user name '" + "a" * 60 + "@pve1' is too long (65 > 64)\n"),
    ("mon:itor@pve", "value 'mon:itor@pve' does not look like a valid user name\n"),
    ("monitor@p", "value 'monitor@p' does not look like a valid user name\n"),  # realm >= 2 chars
    ("monitor@1pve", "value 'monitor@1pve' does not look like a valid user name\n"),  # realm starts with a letter
])
def test_invalid_userids(userid, message):
    with pytest.raises(names.Invalid) as err:
        names.verify_username(userid)
    assert str(err.value) == message


def test_valid_userid_splits_user_and_realm():
    assert names.verify_username("monitor@pve") == ("monitor@pve", "monitor", "pve")
    assert names.verify_username("a.b-c@my-realm.1") == ("a.b-c@my-realm.1", "a.b-c", "my-realm.1")


@pytest.mark.parametrize("sub", ["1abc", "x", "a!b", "a b", "_x"])
def test_token_subid_grammar_rejects(sub):
    assert not names.TOKEN_SUBID_RE.fullmatch(sub)


def test_token_subid_grammar_accepts():
    for sub in ("ab", "monitoring", "A1.b-c_d"):
        assert names.TOKEN_SUBID_RE.fullmatch(sub)


def test_split_tokenid_and_its_errors():
    assert names.split_tokenid("monitor@pve!monitoring") == ("monitor@pve", "monitoring")
    with pytest.raises(names.Invalid) as err:
        names.split_tokenid("monitor@pve")
    assert str(err.value) == "'monitor@pve' is not a valid token ID - not able to split into user and token parts\n"
    with pytest.raises(names.Invalid) as err:
        names.verify_tokenid("monitor@pve!1x")
    assert str(err.value) == "value 'monitor@pve!1x' does not look like a valid token ID\n"


def test_role_and_group_names():
    assert names.verify_rolename("Monitoring.v2-x_y") == "Monitoring.v2-x_y"
    with pytest.raises(names.Invalid) as err:
        names.verify_rolename("a b")
    assert str(err.value) == "role name 'a b' contains invalid characters\n"
    with pytest.raises(names.Invalid) as err:
        names.verify_groupname("g/1")
    assert str(err.value) == "group name 'g/1' contains invalid characters\n"


def test_split_list_treats_comma_and_semicolon_as_whitespace():
    assert names.split_list("VM.Audit Sys.Audit") == ["VM.Audit", "Sys.Audit"]
    assert names.split_list("VM.Audit,Sys.Audit;Pool.Audit") == ["VM.Audit", "Sys.Audit", "Pool.Audit"]
    assert names.split_list("") == [] and names.split_list(None) == []


@pytest.mark.parametrize("raw, normal", [
    ("/", "/"), ("//vms//100/", "/vms/100"), ("vms", "/vms"), ("/foo bar", None), ("", None),
])
def test_normalize_path(raw, normal):
    assert names.normalize_path(raw) == normal


@pytest.mark.parametrize("path", [
    "/", "/access", "/access/groups", "/access/groups/admins", "/access/realm", "/access/realm/pve",
    "/nodes", "/nodes/pve1", "/vms", "/vms/100", "/storage", "/storage/local", "/pool", "/pool/p1",
    "/sdn", "/sdn/zones", "/sdn/zones/z1", "/mapping", "/mapping/pci", "/mapping/pci/gpu0",
])
def test_check_path_accepts(path):
    assert names.check_path(path)


@pytest.mark.parametrize("path", ["/foo", "/vms/99", "/vms/abc", "/nodes/pve1/qemu", "/storage/a/b", "/access/users"])
def test_check_path_refuses(path):
    assert not names.check_path(path)


def test_perl_truthiness():
    assert not names.perl_true(None) and not names.perl_true("") and not names.perl_true("0")
    assert not names.perl_true(0)
    assert names.perl_true("0.0") and names.perl_true("a") and names.perl_true(1)
