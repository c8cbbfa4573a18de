"""pvemond-claim's reading of its target and its words for a failed connection: refused (the
listener is gone: the code expired, or was claimed, burned or stopped), dropped (a firewall),
answered (the listener's own refusals), and which options go together."""
from __future__ import annotations

import socket
import time

import pytest

from harness import free_port
from pvemond import codes, tlspin
from pvemond.cli import claim as cli
from pvemond.cli import claim_prom
from pvemond.contract import CLAIM_PORT, Refusal

PIN = "sha256:" + "ab" * 32


def code_expiring(at: float) -> str:
    return codes.new_code(at)


@pytest.mark.parametrize("text,expected", [
    ("https://192.0.2.10:8116", ("192.0.2.10", 8116)),
    ("https://192.0.2.10:9000/", ("192.0.2.10", 9000)),
    ("HTTPS://pve1.example.com", ("pve1.example.com", CLAIM_PORT)),
    ("https://[2001:db8::5]:8116", ("2001:db8::5", 8116)),
    ("192.0.2.10:8116", ("192.0.2.10", 8116)),
])
def test_a_url_with_https_is_read_as_host_and_port(text, expected):
    assert cli.parse_target(text) == expected


@pytest.mark.parametrize("text", [
    "http://192.0.2.10:8116", "https://192.0.2.10:8116/v1/claim", "https://192.0.2.10:8116?x=1",
    "https://user@192.0.2.10:8116", "https://192.0.2.10:99999", "ftp://192.0.2.10", "https://",
    "https:192.0.2.10"])
def test_other_url_shapes_are_usage_errors_naming_the_form(text):
    with pytest.raises(cli.Failure) as info:
        cli.parse_target(text)
    assert info.value.rc == cli.EXIT_USAGE
    assert "https://HOST[:PORT]" in str(info.value)


def test_refused_with_an_expired_code_says_it_expired_and_when():
    expired_at = time.time() - 600
    code = code_expiring(expired_at)
    with pytest.raises(cli.Failure) as info:
        cli.open_tls("127.0.0.1", free_port(), code, 5.0, pin=PIN)
    text = str(info.value)
    assert info.value.rc == cli.EXIT_EXPIRED == 5
    assert text.startswith(f"the claim code expired at {time.strftime('%H:%M', time.localtime(expired_at))} "
                           "(this host's clock, ")
    assert "run pvemond-bootstrap on the node again" in text and "firewall" not in text


def test_refused_with_a_live_code_says_bootstrap_no_longer_waits():
    code = code_expiring(time.time() + 600)
    port = free_port()
    with pytest.raises(cli.Failure) as info:
        cli.open_tls("127.0.0.1", port, code, 5.0, pin=PIN)
    assert info.value.rc == cli.EXIT_NETWORK
    assert str(info.value).startswith(f"nothing listens on 127.0.0.1:{port}: pvemond-bootstrap "
                                      "is no longer waiting there (the code was claimed, burned, "
                                      "or bootstrap was stopped")
    assert "firewall" not in str(info.value)


def test_a_refused_connection_within_the_clock_skew_is_not_called_expired():
    code = code_expiring(time.time() - 30)  # the node's clock may be behind
    with pytest.raises(cli.Failure) as info:
        cli.open_tls("127.0.0.1", free_port(), code, 5.0)
    assert info.value.rc == cli.EXIT_NETWORK and "no longer waiting" in str(info.value)


@pytest.mark.parametrize("raised", [socket.timeout("timed out"), TimeoutError()])
def test_a_timeout_blames_a_firewall(monkeypatch, raised):
    def drop(*args, **kwargs):
        raise raised
    monkeypatch.setattr(tlspin, "tcp_connect", drop)
    code = code_expiring(time.time() - 600)  # expired, yet a drop is a firewall, not the code
    with pytest.raises(cli.Failure) as info:
        cli.open_tls("192.0.2.10", 8116, code, 3.0, pin=PIN)
    assert info.value.rc == cli.EXIT_NETWORK
    assert str(info.value).startswith("no answer from 192.0.2.10:8116 within 3 s: a firewall drops "
                                      "port 8116")


def test_a_reset_at_accept_names_allow(monkeypatch):
    def reset(*args, **kwargs):
        raise ConnectionResetError()
    monkeypatch.setattr(tlspin, "tcp_connect", reset)
    with pytest.raises(cli.Failure) as info:
        cli.open_tls("192.0.2.10", 8116, code_expiring(time.time() + 60), 3.0)
    assert "--allow" in str(info.value)


def test_a_reset_during_the_handshake_names_allow_too(monkeypatch):
    def handshake_reset(*args, **kwargs):
        raise tlspin.HandshakeFailed(ConnectionResetError())
    monkeypatch.setattr(tlspin, "connect_pinned", handshake_reset)
    with pytest.raises(cli.Failure) as info:
        cli.open_tls("192.0.2.10", 8116, code_expiring(time.time() + 60), 3.0, pin=PIN)
    assert info.value.rc == cli.EXIT_NETWORK and "--allow" in str(info.value)


def test_a_pin_mismatch_is_named_and_nothing_sent(monkeypatch):
    def mismatch(*args, **kwargs):
        raise tlspin.PinMismatch(PIN, "sha256:" + "cd" * 32, "AA:BB")
    monkeypatch.setattr(tlspin, "connect_pinned", mismatch)
    with pytest.raises(cli.Failure) as info:
        cli.open_tls("192.0.2.10", 8116, code_expiring(time.time() + 60), 3.0, pin=PIN)
    assert info.value.rc == cli.EXIT_PIN
    assert "expected  " + PIN in str(info.value) and "NOT sent" in str(info.value)


@pytest.mark.parametrize("error,rc", [
    (Refusal.EXPIRED, cli.EXIT_EXPIRED), (Refusal.BURNED, cli.EXIT_BURNED),
    (Refusal.ALREADY_CLAIMED, cli.EXIT_CLAIMED), (Refusal.CANCELLED, cli.EXIT_EXPIRED)])
def test_the_listeners_answers_keep_their_codes(error, rc):
    with pytest.raises(cli.Failure) as info:
        cli.server_failure(410, f'{{"error": "{error}", "detail": "d"}}'.encode(), "n:8116")
    assert info.value.rc == rc and "firewall" not in str(info.value)


# -- the exchange's failures, in pvemond-claim's words (the reading itself: test_http1) -------

def test_a_malformed_answer_fails_the_claim_naming_it(monkeypatch):
    ours, peer = socket.socketpair()
    peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}")
    peer.shutdown(socket.SHUT_WR)
    monkeypatch.setattr(cli, "open_tls", lambda *a, **k: ours)
    with peer, pytest.raises(cli.Failure) as info:
        cli.redeem("192.0.2.10", 8116, PIN, "2222-2222-2222", 3.0)
    assert info.value.rc == cli.EXIT_NETWORK and "the answer ended early" in str(info.value)
    assert ours.fileno() == -1  # closed


def args(*argv: str):
    return cli.parser().parse_args(["pve1", "2222-2222-2222", *argv])


def test_file_sd_goes_beside_the_output_or_where_told(tmp_path):
    assert claim_prom.file_sd_dir(args("-o", "/etc/prometheus/pve.yml")) == \
        "/etc/prometheus/file_sd/pvemond"
    assert claim_prom.file_sd_dir(args("-o", "x.yml", "--file-sd", str(tmp_path))) == \
        str(tmp_path)
    assert claim_prom.file_sd_dir(args()) is None  # the config on stdout: nothing else written
    assert claim_prom.file_sd_dir(args("--format", "env", "-o", "/x/pve.env")) is None


@pytest.mark.parametrize("argv,message", [
    (("--format", "env", "--prometheus-config", "p.yml"), "goes with --format pve-exporter"),
    (("--prometheus-config", "p.yml"), "needs -o or --file-sd"),
    (("-o", "x.yml", "--exporter", "9221"), "HOST:PORT"),
])
def test_options_that_do_not_go_together(argv, message):
    with pytest.raises(cli.Failure) as info:
        claim_prom.file_sd_dir(args(*argv))
    assert info.value.rc == cli.EXIT_USAGE and message in str(info.value)


def test_an_unknown_owner_is_refused_before_the_code_is_sent(tmp_path):
    with pytest.raises(cli.Failure) as info:
        cli.owner_preflight("no-such-user-here", None, str(tmp_path / "pve.yml"))
    assert info.value.rc == cli.EXIT_USAGE and "NOT sent" in str(info.value)


def test_an_uneditable_prometheus_config_is_refused_before_the_code_is_sent(tmp_path):
    config = tmp_path / "prometheus.yml"
    config.write_text("scrape_configs: [{job_name: a}]\n")
    with pytest.raises(cli.Failure) as info:
        claim_prom.prom_preflight(str(tmp_path / "sd"), str(config))
    assert info.value.rc == cli.EXIT_OUTPUT and "flow list" in str(info.value)
    assert "NOT sent" in str(info.value)


def test_a_rejected_job_puts_the_config_back(tmp_path, monkeypatch, capsys):
    config = tmp_path / "prometheus.yml"
    original = "global:\n  scrape_interval: 15s\n"
    config.write_text(original)
    monkeypatch.setattr(claim_prom.prometheus, "promtool_check", lambda path: "FAILED: something")
    with pytest.raises(claim_prom.prometheus.PrometheusError, match="back as it was"):
        claim_prom.add_job(str(config), str(tmp_path / "sd"), None)
    assert config.read_text() == original


def test_the_curl_format_writes_its_token_header_beside_the_script(tmp_path, capsys):
    """The script names its header file; both land where -o says, the header 0600."""
    from test_formats import SECRET, make_payload
    payload = make_payload()
    payload["ca_pem"] = None  # the system's CAs: no CA file to write beside them
    payload.update(version=2, trust="system")
    written = cli.write_output("curl", str(tmp_path / "check.sh"), payload)
    [header] = written.companions
    assert header == str(tmp_path / "pve-prod-token.header")
    assert (tmp_path / "check.sh").read_text().count(header) >= 1
    assert SECRET not in (tmp_path / "check.sh").read_text()
    assert SECRET in (tmp_path / "pve-prod-token.header").read_text()
    assert (tmp_path / "pve-prod-token.header").stat().st_mode & 0o777 == 0o600
    cli.report("curl", payload, written, "node:8116")
    assert f"wrote {header} (mode 0600" in capsys.readouterr().err


def _durability_log(monkeypatch):
    """(what, path) of every rename and every directory fsync, in order."""
    import os
    log, real_replace, real_fsync = [], os.replace, os.fsync
    monkeypatch.setattr(os, "replace", lambda a, b: log.append(("rename", str(b))) or real_replace(a, b))

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.isdir(path):
            log.append(("sync", path))
        return real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    return log


def test_the_ca_beside_the_config_is_made_durable_by_the_configs_directory_sync(tmp_path,
                                                                                monkeypatch):
    from test_formats import make_payload
    log = _durability_log(monkeypatch)
    cli.write_output("pve-exporter", str(tmp_path / "pve.yml"), make_payload())
    assert log == [("rename", str(tmp_path / "pve-prod-ca.pem")),
                   ("rename", str(tmp_path / "pve.yml")), ("sync", str(tmp_path))]


def test_a_config_linked_elsewhere_gets_the_ca_synced_before_it_is_renamed(tmp_path, monkeypatch):
    from test_formats import make_payload
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "pve.yml").write_text("")
    (tmp_path / "pve.yml").symlink_to(tmp_path / "real" / "pve.yml")
    log = _durability_log(monkeypatch)
    cli.write_output("pve-exporter", str(tmp_path / "pve.yml"), make_payload())
    assert log == [("rename", str(tmp_path / "pve-prod-ca.pem")), ("sync", str(tmp_path)),
                   ("rename", str(tmp_path / "real" / "pve.yml")), ("sync", str(tmp_path / "real"))]
