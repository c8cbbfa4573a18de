from pvemond.pve import usercfg

REAL = """\
user:monitoring@pve:1:0::::PVE monitoring%3A read-only::
token:monitoring@pve!monitoring:0:1::
token:monitoring@pve!zabbix:1700000000:0:for zabbix:
user:root@pam:1:0:::root@example.com:::
user:old@pve:0:1600000000:::::

group:ops:old@pve,root@pam::


role:monitoring:Datastore.Audit,Sys.Audit,VM.Audit:
role:Empty::

acl:1:/:@ops,monitoring@pve,monitoring@pve!monitoring:monitoring:
acl:0:/vms/100:old@pve:PVEAuditor,monitoring:
"""


def test_parses_the_real_format():
    s = usercfg.parse(REAL)
    mon = s.users["monitoring@pve"]
    assert mon.enable and mon.expire == 0
    assert mon.comment == "PVE monitoring: read-only"  # encode_text escapes ':'
    assert [t.name for t in mon.tokens] == ["monitoring", "zabbix"]
    assert mon.token("monitoring").privsep is True
    z = mon.token("zabbix")
    assert (z.privsep, z.expire, z.comment, z.full_id) == (False, 1700000000, "for zabbix",
                                                          "monitoring@pve!zabbix")
    old = s.users["old@pve"]
    assert (old.enable, old.expire) == (False, 1600000000)
    assert s.roles["monitoring"] == {"Datastore.Audit", "Sys.Audit", "VM.Audit"}
    assert s.roles["Empty"] == frozenset()
    assert s.groups["ops"] == {"old@pve", "root@pam"}


def test_acl_lines_expand_per_member_and_role():
    s = usercfg.parse(REAL)
    kinds = {(a.kind, a.ugid) for a in s.acls if a.path == "/"}
    assert kinds == {("group", "ops"), ("user", "monitoring@pve"),
                     ("token", "monitoring@pve!monitoring")}
    sub = s.acl_for("old@pve")
    assert {(a.path, a.role, a.propagate) for a in sub} == {
        ("/vms/100", "PVEAuditor", False), ("/vms/100", "monitoring", False)}


def test_missing_privsep_field_parses_as_zero_and_junk_is_ignored():
    s = usercfg.parse("user:a@pve:1:0:\ntoken:a@pve!t:0:\nnonsense\n\nacl:1:/\n")
    assert s.users["a@pve"].token("t").privsep is False
    assert s.acls == ()


def test_missing_file_is_an_empty_state(tmp_path):
    assert usercfg.read(str(tmp_path)).users == {}
