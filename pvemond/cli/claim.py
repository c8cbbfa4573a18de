"""pvemond-claim: redeem a claim code on the monitoring host and write the consumer's config.

Stdlib only, Python >= 3.9: it runs on any monitoring host, as any user. The node's certificate is
signed by a cluster CA this host does not have yet, so TLS is checked against the pin printed by
pvemond-bootstrap (sha256 of the certificate's public key) before the code leaves this host.
The token secret goes into the file the user named (mode 0600) or onto stdout when asked for,
and nowhere else: not stderr, not an error message.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import ssl
import sys
import time

from pvemond import codes, files, formats, hostfiles, http1, prometheus, tlspin
# every exit code is importable from here, the module that documents them (EPILOG)
from pvemond.cli.claim_base import (  # noqa: F401  (EXIT_CHECK: only re-exported)
    EXIT_BURNED, EXIT_CHECK, EXIT_CLAIMED, EXIT_EXPIRED, EXIT_INTERRUPTED, EXIT_NETWORK,
    EXIT_NOT_ALLOWED, EXIT_OK, EXIT_OUTPUT, EXIT_PIN, EXIT_RATE, EXIT_UNEXPECTED, EXIT_USAGE,
    EXIT_WRONG_CODE, Failure, Written, _clean, _why, _write_kept, say)
from pvemond.cli.claim_check import check, check_readable
from pvemond.cli.claim_prom import check_prometheus, file_sd_dir, prom_preflight, setup_prometheus
from pvemond.codes import normalize_code
from pvemond.contract import CLAIM_PORT, CLAIM_ROUTE, Refusal

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays unloaded: pvemond/records.py says why
    from typing import Any, Dict, List, NoReturn, Optional, Tuple

MAX_PAYLOAD = 1 << 20
# Seconds a claim keeps retrying while the node cannot record the hand-out (a daemon restart).
RETRY_FOR = 45.0

EPILOG = """\
exit codes:
  0   claimed; the config was written
  1   unexpected answer: not a pvemond claim listener, or a payload this version cannot read
  2   usage error, or no pin (pass the --pin that pvemond-bootstrap printed, or --tofu)
  3   the node's key does not match the pin (or was not trusted): the code was NOT sent
  4   wrong claim code
  5   the code expired (the node said so, or its listener is gone after the code's expiry),
      or the claim was cancelled on the node
  6   ALREADY CLAIMED: someone else took this token; on the node run `pvemond rotate NAME`
      (a new secret, revoking the taken one) and find out who did
  7   burned: too many wrong codes, the node revoked the token
  8   this host's address is not allowed to claim (pvemond-bootstrap --allow)
  9   network or TLS failure: node unreachable, port blocked, listener gone
  10  the output (or the Prometheus target file or job) could not be written
  11  --check failed: the token does not work from this host, the consumer's user cannot read
      the config, or Prometheus does not scrape the new targets
  12  rate limited by the node: wait a few seconds and retry
"""


_NEXT = {
    "pve-exporter": "(re)start prometheus-pve-exporter with --config.file {file}: it reads "
                    "its modules only when it starts",
    "env": "load it with `set -a; . {file}; set +a`, or as env_file: in docker compose",
    "telegraf": "put {file} into /etc/telegraf/telegraf.d/ and try "
                "`telegraf --config {file} --input-filter proxmox --test`",
    "zabbix": "import {file} in the Zabbix frontend (Data collection > Hosts > Import), turn "
              "on the template's SSL verify peer/host and trust the CA on the Zabbix server "
              "(see the comments in {file})",
    "proxmoxer": "pip install proxmoxer requests, then run or import {file}",
    "json": "feed {file} to your tooling; its \"secret\" member is the token secret",
    "curl": "sh {file} prints OK or FAILED for every node and exits non-zero on a failure; "
            "the token is in pve-{module}-token.header beside it (0600)",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pvemond-claim", epilog=EPILOG, formatter_class=_help_formatter,
        description="Redeem the claim code printed by pvemond-bootstrap on a Proxmox VE node and "
                    "write the monitoring tool's config, with the cluster CA so TLS stays verified.")
    p.add_argument("target", metavar="HOST[:PORT]",
                   help=f"the node running pvemond-bootstrap (port {CLAIM_PORT} by default; "
                        "https://HOST[:PORT] is read the same)")
    p.add_argument("code", metavar="CODE", help="the claim code, e.g. K7QM-2PXW-9DFT")
    p.add_argument("--pin", help="the node's key pin printed with the code: sha256:HEX")
    p.add_argument("--tofu", action="store_true",
                   help="no pin: show the node's pin and fingerprint and ask on the terminal")
    p.add_argument("--format", choices=formats.FORMATS, default="pve-exporter",
                   help="what to write (default pve-exporter)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the config here (mode 0600; pve-exporter merges into an existing "
                        "file) and the cluster CA beside it; default: config on stdout, CA in "
                        "the current directory")
    p.add_argument("--check", action="store_true",
                   help="afterwards, call the node's API with the token (TLS verified by the CA)")
    p.add_argument("--timeout", type=float, default=15.0, metavar="S",
                   help="network timeout in seconds (default 15)")
    p.add_argument("--owner", metavar="USER",
                   help="owner of the written config (the user the consumer runs as); "
                        "default: kept from the file it replaces, else this user")
    p.add_argument("--group", metavar="GROUP",
                   help="group of the written config (it gets group read)")
    prom = p.add_argument_group("Prometheus (--format pve-exporter with -o or --file-sd)")
    prom.add_argument("--exporter", metavar="HOST:PORT", default=prometheus.EXPORTER,
                      help=f"where Prometheus reaches prometheus-pve-exporter (default "
                           f"{prometheus.EXPORTER})")
    prom.add_argument("--file-sd", metavar="DIR",
                      help="write the cluster's file_sd target file DIR/MODULE.yml (default: "
                           "file_sd/pvemond beside -o, i.e. " + prometheus.FILE_SD_DIR +
                           " for -o /etc/prometheus/pve.yml)")
    prom.add_argument("--prometheus-config", metavar="FILE",
                      help=f"add the scrape job {prometheus.JOB_NAME} reading those files to "
                           "this prometheus.yml unless one reads them (appended: the rest stays "
                           "byte for byte), check it with promtool and reload Prometheus; "
                           "without it, the job is printed")
    prom.add_argument("--prometheus-pid", metavar="PID", type=int,
                      help="reload this Prometheus process (SIGHUP); default: systemd's "
                           "prometheus.service, else the process reading --prometheus-config")
    prom.add_argument("--prometheus-url", metavar="URL",
                      help=f"Prometheus's HTTP API for --check (default {prometheus.PROMETHEUS_URL})")
    prom.add_argument("--check-wait", metavar="S", type=float, default=60.0,
                      help="--check waits this long for Prometheus's first scrape (default 60)")
    return p


def _help_formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's formatter, told the width: left to itself it imports shutil (with bz2 and
    lzma) to ask the terminal, over a millisecond of every claim's start-up."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 80
    return argparse.RawDescriptionHelpFormatter(prog, width=max(columns, 40) - 2)


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except Failure as exc:
        say(f"pvemond-claim: {exc}")
        return exc.rc
    except KeyboardInterrupt:
        say("pvemond-claim: interrupted")
        return EXIT_INTERRUPTED


def run(args: argparse.Namespace) -> int:
    host, port = parse_target(args.target)
    code = _code(args.code)
    pin = _pin(args)
    sd_dir = file_sd_dir(args)
    # a claim is single use: fail before spending it
    preflight(args.format, args.output)
    owner_preflight(args.owner, args.group, args.output)
    prom_preflight(sd_dir, args.prometheus_config)
    if pin is None:
        pin = tofu(host, port, code, args.timeout)
    payload = redeem_patiently(host, port, pin, code, args.timeout)
    written = write_output(args.format, args.output, payload, args.owner, args.group)
    report(args.format, payload, written, f"{host}:{port}")
    groups = setup_prometheus(args, sd_dir, payload) if sd_dir else None
    if not args.check:
        return EXIT_OK
    rc = check(payload, written.ca_path, args.timeout)
    rc = check_readable(written, args.owner, args.group) or rc
    if groups is not None:
        rc = check_prometheus(args, groups, formats.module_name(payload)) or rc
    return rc


# ---------------------------------------------------------------------------------------------
# Arguments

def parse_target(text: str) -> Tuple[str, int]:
    """HOST, HOST:PORT, [V6] or [V6]:PORT; a bare IPv6 address takes the default port.
    https://HOST[:PORT] (what a browser shows) is read the same."""
    if "://" in text or text.lower().startswith("https:"):
        return _url_target(text)
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text)
    if m:
        host, port = m.group(1), m.group(2)
    elif text.startswith("["):
        host, port = "", None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, None
    if not host or (port is not None and not port.isdigit()):
        raise Failure(EXIT_USAGE, f"{text!r} is not HOST[:PORT] (IPv6: [ADDRESS]:PORT)")
    number = int(port) if port else CLAIM_PORT
    if not 1 <= number <= 65535:
        raise Failure(EXIT_USAGE, f"port {number} is out of range 1-65535")
    return host, number


def _url_target(text: str) -> Tuple[str, int]:
    usage = (f"{text!r} is not HOST[:PORT] or https://HOST[:PORT] (the claim listener's "
             "address, no path; IPv6: [ADDRESS]:PORT)")
    from urllib.parse import urlsplit  # here: most targets are HOST[:PORT]
    parts = urlsplit(text)
    if parts.scheme.lower() != "https" or parts.path not in ("", "/") or parts.query or \
            parts.fragment or "@" in parts.netloc or not parts.hostname:
        raise Failure(EXIT_USAGE, usage)
    try:
        port = parts.port
    except ValueError:
        raise Failure(EXIT_USAGE, usage) from None
    return parts.hostname, port or CLAIM_PORT


def _code(text: str) -> str:
    try:
        return normalize_code(text)
    except ValueError as exc:
        raise Failure(EXIT_USAGE, str(exc)) from None


def _pin(args: argparse.Namespace) -> Optional[str]:
    if args.pin is not None:
        if args.tofu:
            raise Failure(EXIT_USAGE, "--pin and --tofu exclude each other")
        try:
            return tlspin.normalize_pin(args.pin)
        except ValueError as exc:
            raise Failure(EXIT_USAGE, f"--pin: {exc}") from None
    if not args.tofu:
        raise Failure(EXIT_USAGE, "no --pin given: pass the pin that pvemond-bootstrap printed "
                      "with the code (--pin sha256:...), so the code goes only to that node; "
                      "--tofu shows the node's key and asks instead")
    return None


# ---------------------------------------------------------------------------------------------
# Before anything is sent

_PROBE = {
    "version": 1, "user": "probe@pve", "token_name": "probe", "token_id": "probe@pve!probe",
    "secret": "probe", "token_string": "probe@pve!probe=probe", "privsep": 0,
    "cluster": "pvemond-claim-probe", "node": "probe",
    "nodes": [{"name": "probe", "address": "192.0.2.1", "url": "https://192.0.2.1:8006/api2/json"}],
}


def preflight(fmt: str, output: Optional[str]) -> None:
    """Refuse an output that cannot be written before the single-use code is spent."""
    directory = os.path.dirname(os.path.abspath(output)) if output else os.getcwd()
    if not os.path.isdir(directory):
        raise Failure(EXIT_OUTPUT, f"{directory} is not a directory; the code was NOT sent")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise Failure(EXIT_OUTPUT, f"cannot write into {directory} (the config and the CA go "
                      "there); the code was NOT sent")
    if output is None:
        return
    if os.path.exists(output) and not os.path.isfile(output):
        raise Failure(EXIT_OUTPUT, f"{output} exists and is not a regular file; the code was NOT sent")
    try:
        existing = files.read_optional(output)
        formats.render(fmt, _PROBE, ca_path="/probe-ca.pem", existing=existing)
    except (OSError, UnicodeDecodeError) as exc:
        raise Failure(EXIT_OUTPUT, f"cannot read {output}: {_why(exc)}; the code was NOT sent") from None
    except formats.FormatError as exc:
        raise Failure(EXIT_OUTPUT, f"{exc}; the code was NOT sent") from None


def owner_preflight(owner: Optional[str], group: Optional[str], output: Optional[str]) -> None:
    """--owner/--group name existing accounts, and this user may give files away."""
    if not (owner or group):
        return
    import grp
    import pwd
    if output is None:
        raise Failure(EXIT_USAGE, "--owner and --group apply to the file -o writes")
    for name, lookup, what in ((owner, pwd.getpwnam, "user"), (group, grp.getgrnam, "group")):
        if name is None:
            continue
        try:
            lookup(name)
        except KeyError:
            raise Failure(EXIT_USAGE, f"there is no {what} {name!r} on this host; the code was "
                          "NOT sent") from None
    if os.geteuid() != 0:
        raise Failure(EXIT_OUTPUT, "--owner and --group need root (only root gives a file "
                      "away); the code was NOT sent")


# ---------------------------------------------------------------------------------------------
# TLS and the pin

def open_tls(host: str, port: int, code: str, timeout: float,
             pin: Optional[str] = None) -> "ssl.SSLSocket":
    """tlspin's connection to the claim listener (pinned when `pin` is given), each failure
    named for what it means here; on any failure nothing has been sent."""
    where = f"{host}:{port}"
    try:
        if pin is None:
            return tlspin.open_unverified(host, port, timeout)
        return tlspin.connect_pinned(host, port, pin, timeout)
    except tlspin.PinMismatch as exc:
        raise Failure(EXIT_PIN, (
            f"{where} presents a different key than the pin:\n"
            f"  expected  {exc.expected}\n"
            f"  got       {exc.got}\n"
            f"  (certificate fingerprint {exc.fingerprint})\n"
            "The claim code was NOT sent. Check that this is the node where pvemond-bootstrap "
            "runs and that the pin was copied whole; if both are right, something between this "
            "host and the node is intercepting TLS.")) from None
    except tlspin.HandshakeFailed as exc:
        if isinstance(exc.cause, ConnectionResetError):
            raise _refused_at_accept(where) from None
        raise Failure(EXIT_NETWORK, f"TLS handshake with {where} failed ({_why(exc.cause)}): is "
                      "this the pvemond claim listener?") from None
    except ValueError as exc:  # no certificate, or one whose key cannot be read
        raise Failure(EXIT_PIN, f"cannot read the node's certificate ({exc}); the code was NOT "
                      "sent") from None
    except socket.gaierror as exc:
        raise Failure(EXIT_NETWORK, f"cannot resolve {host}: {exc.strerror}") from None
    except ConnectionRefusedError:
        raise _nothing_listens(where, code) from None
    except (socket.timeout, TimeoutError):
        raise Failure(EXIT_NETWORK, f"no answer from {where} within {timeout:g} s: a firewall "
                      f"drops port {port} on the way to the node (open it there for this host), "
                      "or the node is down") from None
    except ConnectionResetError:
        raise _refused_at_accept(where) from None
    except OSError as exc:
        raise Failure(EXIT_NETWORK, f"cannot connect to {where}: {_why(exc)}") from None


def _nothing_listens(where: str, code: str) -> Failure:
    """A refused connection: the host answered, so no firewall drops the port; the listener
    is gone. An expired code says why."""
    now = time.time()
    since = codes.expired_since(code, now)
    if since is not None:
        # since counts from the end of the expiry minute; bootstrap printed that minute
        at = time.strftime("%H:%M", time.localtime(now - since - 60))
        return Failure(EXIT_EXPIRED, f"the claim code expired at {at} (this host's clock, "
                       f"{_ago(since)} ago), and pvemond-bootstrap no longer listens on {where}; "
                       "run pvemond-bootstrap on the node again for a new code")
    return Failure(EXIT_NETWORK, f"nothing listens on {where}: pvemond-bootstrap is no longer "
                   "waiting there (the code was claimed, burned, or bootstrap was stopped; or it "
                   "listens on another --port); run pvemond-bootstrap on the node again for a "
                   "new code")


def _ago(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{max(minutes, 1)} min"
    return f"{minutes // 60} h {minutes % 60} min"


def _refused_at_accept(where: str) -> Failure:
    return Failure(EXIT_NETWORK, f"{where} reset the connection before TLS: the claim listener "
                   "refuses hosts outside its --allow and hosts with too many connections open; "
                   "check the --allow that pvemond-bootstrap was given")


def _open_tty() -> Any:
    return open("/dev/tty", "r+", encoding="utf-8")


def ask(prompt: str) -> Optional[str]:
    """One line from the user's terminal (not a pipe), or None when there is none."""
    try:
        tty = _open_tty()
    except OSError:
        if not sys.stdin.isatty():
            return None
        sys.stderr.write(prompt)
        sys.stderr.flush()
        return sys.stdin.readline()
    with tty:
        tty.write(prompt)
        tty.flush()
        return tty.readline()


def tofu(host: str, port: int, code: str, timeout: float) -> str:
    """Show the node's key and let the user accept it (first use, no pin)."""
    tls = open_tls(host, port, code, timeout)
    try:
        der, pin = tlspin.peer_identity(tls)
    except ValueError as exc:
        raise Failure(EXIT_PIN, f"cannot read the node's certificate ({exc}); the code was NOT "
                      "sent") from None
    finally:
        tls.close()  # a person may take longer to answer than the listener waits on a connection
    answer = ask(f"{host}:{port} presents\n"
                 f"  pin          {pin}\n"
                 f"  fingerprint  {tlspin.fingerprint_of_der(der)}\n"
                 "Compare with what pvemond-bootstrap printed (the fingerprint is also in the PVE "
                 "web UI: node > System > Certificates).\nTrust this node? [y/N] ")
    if answer is None:
        raise Failure(EXIT_USAGE, "--tofu needs a terminal to confirm the node's key; pass "
                      f"--pin {pin} only if you checked it against the node's output")
    if answer.strip().lower() not in ("y", "yes"):
        raise Failure(EXIT_PIN, "the node's key was not trusted; the code was NOT sent")
    say(f"pvemond-claim: trusting {pin}; next time pass --pin {pin}")
    return pin


# ---------------------------------------------------------------------------------------------
# The claim

class _Later(Exception):
    """The node took the code but cannot record the hand-out yet (its daemon restarts)."""

    def __init__(self, after: float, failure: Failure):
        super().__init__(str(failure))
        self.after, self.failure = after, failure


def redeem_patiently(host: str, port: int, pin: str, code: str, timeout: float) -> Dict[str, Any]:
    """Redeem, retrying while the node answers 503 not_recorded: the secret leaves the node only
    once pvemond there has recorded where it goes, and the code stays valid meanwhile."""
    end = time.monotonic() + RETRY_FOR
    while True:
        try:
            return redeem(host, port, pin, code, timeout)
        except _Later as later:
            if time.monotonic() + later.after > end:
                raise later.failure from None
            say(f"pvemond-claim: the node cannot record the hand-out yet; retrying in "
                f"{later.after:g} s")
            time.sleep(later.after)


def redeem(host: str, port: int, pin: str, code: str, timeout: float) -> Dict[str, Any]:
    """POST the code over the pinned connection; the payload, or a Failure per server error."""
    tls = open_tls(host, port, code, timeout, pin=pin)  # the very connection whose key was checked
    body = json.dumps({"code": code}).encode()
    request = (f"POST {CLAIM_ROUTE} HTTP/1.1\r\nHost: {_authority(host)}\r\nContent-Type: application/json\r\n"
               f"Accept: application/json\r\nContent-Length: {len(body)}\r\n"
               "Connection: close\r\n\r\n").encode() + body
    try:
        answer = http1.exchange(tls, request, MAX_PAYLOAD)
    except (OSError, http1.BadAnswer) as exc:
        why = _why(exc) if isinstance(exc, OSError) else str(exc)
        raise Failure(EXIT_NETWORK, f"the claim request to {host}:{port} failed "
                      f"({why}); the node may have closed the claim") from None
    finally:
        tls.close()
    if answer.status != 200:
        try:
            server_failure(answer.status, answer.body, f"{host}:{port}")
        except Failure as failure:
            if answer.status == 503:
                raise _Later(_retry_after(answer.headers.get("retry-after")), failure) from None
            raise
    return _payload(answer.body)


def _authority(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _retry_after(value: Optional[str]) -> float:
    try:
        return min(max(float(value or 2), 0.5), 10.0)
    except ValueError:
        return 2.0


def _payload(body: bytes) -> Dict[str, Any]:
    try:
        payload = json.loads(body.decode("utf-8")) if len(body) <= MAX_PAYLOAD else None
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise Failure(EXIT_UNEXPECTED, "the node's answer is not a pvemond payload; the claim "
                      "is used up: run pvemond-bootstrap on the node again")
    return payload


def server_failure(status: int, body: bytes, where: str) -> NoReturn:
    """Raise the Failure for an error answer of the claim listener."""
    try:
        doc = json.loads(body.decode("utf-8"))
        error, detail = _clean(doc["error"]), _clean(doc.get("detail", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        error, detail = "", ""
    known = _FAILURES.get(error)
    if known is None:
        said = " ".join(part for part in (error, detail) if part)
        raise Failure(EXIT_UNEXPECTED, f"{where} answered HTTP {status}{': ' + said if said else ''}"
                      f"; is this pvemond's claim listener (port {CLAIM_PORT} by default)?")
    rc, sentence = known
    raise Failure(rc, sentence.format(detail=detail, where=where))


_FAILURES: Dict[str, Tuple[int, str]] = {
    Refusal.WRONG_CODE: (EXIT_WRONG_CODE, "the node refused the code ({detail}); check the code "
                   "pvemond-bootstrap printed"),
    Refusal.EXPIRED: (EXIT_EXPIRED, "the claim code expired; run pvemond-bootstrap on the node again "
                "for a new code"),
    Refusal.CANCELLED: (EXIT_EXPIRED, "the claim was cancelled on the node (pvemond-bootstrap stopped); "
                  "run it again for a new code"),
    Refusal.ALREADY_CLAIMED: (EXIT_CLAIMED, "WARNING: this token was {detail}. If that was not you, "
                        "someone else claimed this token: treat its secret as stolen, run "
                        "`pvemond rotate NAME` on the node (a new secret, which revokes the "
                        "stolen one) and find out who that address is."),
    Refusal.IN_PROGRESS: (EXIT_CLAIMED, "WARNING: someone else is redeeming this code right now "
                          "({detail}). If that is not you, run `pvemond rotate NAME` on the node "
                          "once it is done, and find out who it was."),
    Refusal.NOT_RECORDED: (EXIT_NETWORK, "the node could not record the hand-out ({detail}); the code "
                     "stays valid until it expires: check pvemond on the node (systemctl status "
                     "pvemond), then run this again"),
    Refusal.BURNED: (EXIT_BURNED, "the claim is burned ({detail}); run pvemond-bootstrap on the node "
               "again for a new code"),
    Refusal.NOT_ALLOWED: (EXIT_NOT_ALLOWED, "{detail}; run pvemond-bootstrap with an --allow "
                           "that includes this host's address"),
    Refusal.RATE_LIMITED: (EXIT_RATE, "{where} is rate limiting this host; wait a few seconds and retry"),
}


# ---------------------------------------------------------------------------------------------
# Output

def write_output(fmt: str, output: Optional[str], payload: Dict[str, Any],
                 owner: Optional[str] = None, group: Optional[str] = None) -> Written:
    """The CA (0644) beside the config, then the config (0600, or the owner, group and mode of
    the file it replaces) or stdout."""
    lost = "the claim is used up: fix that, then run pvemond-bootstrap on the node again"
    target = os.path.abspath(output) if output else None
    try:
        module = formats.module_name(payload)
        ca_pem = payload.get("ca_pem")
        ca_path = None  # system trust: the host's own CAs verify the node, no file to write
        if not formats.system_trust(payload):
            tlspin.pem_to_der(ca_pem if isinstance(ca_pem, str) else "")
            ca_path = os.path.join(os.path.dirname(target) if target else os.getcwd(),
                                   f"pve-{module}-ca.pem")
        formats.render(fmt, payload, ca_path=ca_path)  # the payload itself is sound
    except (formats.FormatError, ValueError) as exc:
        raise Failure(EXIT_UNEXPECTED, f"the node's payload cannot be used ({exc}); {lost}") from None
    try:
        *companions, main = formats.render_files(
            fmt, payload, ca_path=ca_path, existing=files.read_optional(target) if target else None,
            directory=os.path.dirname(target) if target else os.getcwd())
        if ca_path:  # beside the config, the config's directory sync makes its rename durable too
            beside = target is not None and \
                os.path.dirname(hostfiles.real_target(target)) == os.path.dirname(ca_path)
            files.write_private(ca_path, ca_pem, mode=0o644, sync_dir=not beside)
        for f in companions:
            _write_kept(f.path, f.text.encode("utf-8"), owner=owner, group=group)
        text = main.text
        if target:
            _write_kept(target, text.encode("utf-8"), owner=owner, group=group)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
    except formats.FormatError as exc:
        raise Failure(EXIT_OUTPUT, f"{exc}; {lost}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise Failure(EXIT_OUTPUT, f"cannot write {target or ca_path}: {_why(exc)}; {lost}") from None
    except LookupError as exc:  # an unknown --owner or --group (preflight checks them first)
        raise Failure(EXIT_OUTPUT, f"cannot write {target}: {_clean(exc)}; {lost}") from None
    return Written(target, ca_path, tuple(f.path for f in companions))


def _mode(path: str) -> str:
    """How the file ended up: its own mode and owner when it replaced one, else the new ones."""
    import grp
    import pwd
    st = os.stat(path)
    try:
        who = f"{pwd.getpwuid(st.st_uid).pw_name}:{grp.getgrgid(st.st_gid).gr_name}"
    except KeyError:
        who = f"{st.st_uid}:{st.st_gid}"
    return f"mode {st.st_mode & 0o7777:04o}, {who}"


def _privileges(payload: Dict[str, Any]) -> str:
    privs = payload.get("privileges") or ()
    return ", ".join(sorted(str(p) for p in privs)) or "(none listed)"


def report(fmt: str, payload: Dict[str, Any], written: Written, where: str) -> None:
    """What was written where, on stderr; never the secret."""
    module = formats.module_name(payload)
    place = f"cluster {payload['cluster']}" if payload.get("cluster") else f"node {payload['node']}"
    out = [f"pvemond-claim: claimed the token of {place} from {where}"]
    if written.config:
        out.append(f"  wrote {fmt} config to {written.config} ({_mode(written.config)})")
    else:
        out.append(f"  printed the {fmt} config on stdout")
    out += [f"  wrote {path} ({_mode(path)})" for path in written.companions]
    out += [f"  wrote the cluster CA to {written.ca_path}" if written.ca_path else
            "  no CA file: the node's certificate is verified by this host's system CAs",
            f"  token       {_clean(payload['token_id'])} (privsep {payload.get('privsep', 0)})",
            f"  privileges  {_clean(_privileges(payload))}",
            "  next: " + _NEXT[fmt].format(file=written.config or "FILE", module=module,
                                           address=payload["nodes"][0]["address"])]
    say("\n".join(out))


def command() -> NoReturn:
    """The pvemond-claim command: main(), then out without the interpreter's teardown. By then
    every file is written, synced and closed; freeing each module's objects one by one (and
    OpenSSL's clean-up) would add about 3.5 ms, a tenth of a claim (measured)."""
    rc = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # what was said could not all be said (a closed pipe)
        rc = rc or EXIT_OUTPUT
    os._exit(rc)


if __name__ == "__main__":
    command()
