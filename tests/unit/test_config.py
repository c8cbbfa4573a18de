import textwrap

import pytest
import yaml

from pvemond import config


def parse(text: str) -> config.Config:
    return config.parse(textwrap.dedent(text), "test.yaml")


def problems(text: str) -> list:
    with pytest.raises(config.ConfigError) as err:
        parse(text)
    return err.value.problems


def test_defaults_follow_the_seed_guide():
    c = config.Config()
    assert c.access.user == "monitoring@pve"
    assert c.access.role == "monitoring"
    assert set(c.access.privileges) == {"VM.Audit", "Datastore.Audit", "Sys.Audit", "SDN.Audit"}
    assert (c.access.acl_path, c.access.propagate, c.access.token) == ("/", True, "monitoring")
    assert c.access.privsep is False and c.access.token_expire == 0
    assert c.access.user_comment


def test_shipped_file_parses_to_the_defaults():
    shipped = config.parse(open("etc/pvemond/pvemond.yaml").read(), "shipped")
    assert shipped.access == config.AccessConfig()
    assert shipped.node == config.NodeConfig()
    assert shipped.daemon == config.DaemonConfig()
    assert shipped.claim == config.ClaimConfig()


def test_empty_file_means_defaults():
    assert parse("").access == config.AccessConfig()


def test_values_are_read():
    c = parse("""
        access: {user: prom@pve, token: prometheus, privsep: true, privileges: [VM.Audit]}
        node: {pveum: /opt/pveum, pveum_timeout: 5}
        claim: {port: 9443, ttl: 120, allow: [192.0.2.0/24]}
    """)
    assert c.access.user == "prom@pve" and c.access.privsep is True
    assert c.access.privileges == ("VM.Audit",)
    assert c.node.pveum_timeout == 5.0
    assert c.claim.allow == ("192.0.2.0/24",)


def test_every_error_is_listed_at_once_with_its_field():
    found = problems("""
        access: {user: nobody, role: PVEMonitor, token: 1x, privileges: [VM.Audit, notapriv]}
        node: {pveum: relative/pveum, pveproxy_url: http://x}
        daemon: {tcp: "192.0.2.1:8117", log_level: loud}
        claim: {port: 8006, ttl: 99999, max_attempts: 0, allow: [nope]}
        extra: {}
    """)
    fields = [p.split(":")[0] for p in found]
    assert fields == ["access.user", "access.role", "access.privileges", "access.token",
                      "node.pveum", "node.pveproxy_url", "daemon.tcp", "daemon.log_level",
                      "claim.port", "claim.ttl", "claim.max_attempts", "claim.allow", "extra"]
    assert any("reserved for Proxmox VE" in p for p in found)
    assert any("not a loopback address" in p for p in found)


@pytest.mark.parametrize("port", [8006, 8007, 3128, 85, 5900, 5999, 60000, 60050])
def test_claim_port_must_not_collide_with_proxmox(port):
    assert problems(f"claim: {{port: {port}}}")[0].startswith("claim.port:")


@pytest.mark.parametrize("tcp", ["127.0.0.1:8117", "[::1]:8117"])
def test_loopback_tcp_is_accepted(tcp):
    assert parse(f'daemon: {{tcp: "{tcp}"}}').daemon.tcp == tcp


@pytest.mark.parametrize("tcp", ["0.0.0.0:8117", "192.0.2.5:8117", "localhost:8117"])
def test_non_loopback_tcp_is_refused(tcp):
    assert problems(f'daemon: {{tcp: "{tcp}"}}')[0].startswith("daemon.tcp:")


def test_types_are_checked():
    found = problems("access: {privsep: 'no', propagate: 1, privileges: 5}\nclaim: {ttl: true}")
    assert "access.privsep: must be true or false, not 'no'" in found
    assert any(p.startswith("access.propagate:") for p in found)
    assert any(p.startswith("access.privileges: must be a list") for p in found)
    assert any(p.startswith("claim.ttl: must be a whole number") for p in found)


def test_write_privileges_need_an_explicit_yes():
    assert "VM.PowerMgmt" in problems("access: {privileges: [VM.Audit, VM.PowerMgmt]}")[0]
    c = parse("access: {privileges: [VM.Audit, VM.PowerMgmt], allow_write_privileges: true}")
    assert "VM.PowerMgmt" in c.access.privileges


def test_unknown_setting_and_bad_yaml():
    assert problems("access: {usr: x}")[0].startswith("access.usr: unknown setting")
    assert "line 2" in problems("access:\n  user: a: b\n")[0]
    assert problems("- a\n- b\n")[0].startswith("the file must be a mapping")


def test_load_uses_the_environment_variable(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("access: {token: fromenv}\n")
    monkeypatch.setenv(config.ENV_VAR, str(path))
    assert config.load().access.token == "fromenv"
    monkeypatch.setenv(config.ENV_VAR, str(tmp_path / "missing.yaml"))
    with pytest.raises(config.ConfigError, match="file not found"):
        config.load()


# --- daemon.tcp: the address as the OS will bind it ------------------------------------------

@pytest.mark.parametrize("spelling, bind", [
    ("127.0.0.1:8117", "127.0.0.1:8117"),
    ("127.0.0.2:8117", "127.0.0.2:8117"),
    ("[::1]:8117", "[::1]:8117"),
    ("[0:0:0:0:0:0:0:1]:8117", "[::1]:8117"),   # the long spelling, normalised
    ("127.0.0.1:08117", "127.0.0.1:8117"),
])
def test_loopback_spellings_are_normalised_for_gunicorn(spelling, bind):
    assert parse(f"daemon: {{tcp: '{spelling}'}}").daemon.tcp == spelling
    assert config.tcp_bind(spelling) == bind


@pytest.mark.parametrize("spelling, why", [
    ("0:0:0:0:0:0:0:1:8117", "IPv6 address goes in brackets"),  # gunicorn: host 0, port 0
    ("::1:8117", "IPv6 address goes in brackets"),
    ("::1", "IPv6 address goes in brackets"),
    ("[::ffff:127.0.0.1]:8117", "IPv4-mapped"),
    ("::ffff:127.0.0.1", "IPv6 address goes in brackets"),
    ("127.1:8117", "not an IP address written out in full"),
    ("[::]:8117", "not a loopback address"),
    ("0.0.0.0:8117", "not a loopback address"),
    ("192.0.2.10:8117", "not a loopback address"),
    ("localhost:8117", "not ADDRESS:PORT"),
    ("0", "not ADDRESS:PORT"),
    ("0:8117", "not an IP address written out in full"),
    ("[::1%lo]:8117", "zone id"),
    ("[fe80::1%eth0]:8117", "zone id"),
    ("[127.0.0.1]:8117", "brackets are for IPv6 only"),
    ("127.0.0.1", "not ADDRESS:PORT"),
    ("127.0.0.1:0", "not 1-65535"),
    ("127.0.0.1:65536", "not 1-65535"),
    ("tcp://127.0.0.1:8117", "not ADDRESS:PORT"),
    ("127.0.0.1:8117\n", "not ADDRESS:PORT"),
])
def test_anything_not_exactly_loopback_is_refused(spelling, why):
    [problem] = problems(yaml.safe_dump({"daemon": {"tcp": spelling}}))
    assert problem.startswith("daemon.tcp: ") and why in problem


# --- names and privileges, whole-string rules --------------------------------------------------

@pytest.mark.parametrize("setting, value", [
    ("access.user", "a@pve\n"), ("access.role", "monitoring\n"), ("access.token", "nl\n"),
    ("access.acl_path", "/\n"), ("access.privileges", ["VM.Audit\n"]),
    ("node.pveproxy_url", "https://127.0.0.1:8006\n"),
])
def test_a_final_newline_is_refused(setting, value):
    section, key = setting.split(".")
    text = yaml.safe_dump({section: {key: value}})
    assert [p for p in problems(text) if p.startswith(setting)]


def test_a_privilege_typo_is_reported_as_unknown_with_the_nearest_names():
    found = problems("access: {privileges: [VM.Audti, Sys.Audit]}")
    assert found == ["access.privileges: unknown privilege VM.Audti (nearest: VM.Audit)"]


def test_a_real_write_privilege_still_needs_the_loud_setting():
    [found] = problems("access: {privileges: [VM.Audit, VM.Allocate]}")
    assert "VM.Allocate can change the cluster" in found
    assert parse("access: {privileges: [VM.Allocate], allow_write_privileges: true}")


def test_the_checked_config_survives_the_masters_hand_over_unchanged():
    """gunicorn_conf hands the worker the master's checked Config as JSON (asdict)."""
    import dataclasses
    import json
    cfg = parse("""
        access: {privileges: [VM.Audit, Sys.Audit], token: prom}
        daemon: {tcp: "127.0.0.1:8117", log_level: debug}
        claim: {allow: [192.0.2.0/24, "2001:db8::/32"], ttl: 300}
        """)
    again = config.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg and again.claim.allow == ("192.0.2.0/24", "2001:db8::/32")
    assert isinstance(again.access.privileges, tuple) and again.source == "test.yaml"
