"""Certificate pins, fingerprints and TLS connections, stdlib only: the one TLS module of both
hosts (the claim client runs on any monitoring host; the node uses it to reach pveproxy).

Two different hashes identify a node (reference/node.md §2.3):
- the pin, sha256 of the SubjectPublicKeyInfo (kubeadm's `sha256:<hex>`, curl's
  `sha256//<base64>`): it survives PVE's renewals of pve-ssl.pem, which keep the key, so the
  client checks it;
- PVE's fingerprint, sha256 of the whole certificate DER, uppercase and colon-separated as the
  web UI and `pvenode cert info` show it: printed beside the pin for a human cross-check.

`ssl` only hands out the whole DER certificate (`getpeercert(binary_form=True)`), so the SPKI is
found with a small DER walk, the equivalent of
`openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum`.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
import socket
import ssl

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays unloaded: pvemond/records.py says why
    from typing import Any, List, Optional, Tuple

PIN_FORM = "sha256:<64 hex digits> (or sha256:AA:BB:... with 32 colon-separated bytes)"

_SEQUENCE, _INTEGER, _BIT_STRING, _VERSION = 0x30, 0x02, 0x03, 0xA0
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)


# ---------------------------------------------------------------------------------------------
# DER walk

def _tlv(data: bytes, pos: int, end: int) -> Tuple[int, int, int]:
    """(tag, content start, content end) of the element at `pos`, which must end by `end`."""
    if pos + 2 > end:
        raise ValueError(f"DER: truncated element at offset {pos}")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError(f"DER: high tag number form at offset {pos} is not used in X.509")
    start = pos + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0:
            raise ValueError(f"DER: indefinite length at offset {pos} (BER, not DER)")
        if count > 4 or start + count > end:
            raise ValueError(f"DER: bad length of {count} bytes at offset {pos}")
        length = int.from_bytes(data[start:start + count], "big")
        start += count
    if start + length > end:
        raise ValueError(f"DER: element at offset {pos} runs past its container")
    return tag, start, start + length


def _expect(data: bytes, pos: int, end: int, tag: int, what: str) -> Tuple[int, int]:
    got, start, stop = _tlv(data, pos, end)
    if got != tag:
        raise ValueError(f"DER: expected {what} (tag 0x{tag:02x}) at offset {pos}, got 0x{got:02x}")
    return start, stop


def spki_der(cert_der: bytes) -> bytes:
    """The SubjectPublicKeyInfo element (tag and length included) of an X.509 certificate."""
    data = bytes(cert_der)
    cert_start, cert_end = _expect(data, 0, len(data), _SEQUENCE, "Certificate SEQUENCE")
    if cert_end != len(data):
        raise ValueError("DER: trailing bytes after the certificate")
    pos, tbs_end = _expect(data, cert_start, cert_end, _SEQUENCE, "tbsCertificate SEQUENCE")
    tag, _, version_end = _tlv(data, pos, tbs_end)
    if tag == _VERSION:  # [0] EXPLICIT version, absent in v1 certificates
        pos = version_end
    for tag, what in ((_INTEGER, "serialNumber"), (_SEQUENCE, "signature AlgorithmIdentifier"),
                      (_SEQUENCE, "issuer Name"), (_SEQUENCE, "validity"),
                      (_SEQUENCE, "subject Name")):
        pos = _expect(data, pos, tbs_end, tag, what)[1]
    key_start, key_end = _expect(data, pos, tbs_end, _SEQUENCE, "SubjectPublicKeyInfo")
    # An SPKI is { AlgorithmIdentifier, BIT STRING }: checking it catches a mis-walk.
    alg_end = _expect(data, key_start, key_end, _SEQUENCE, "SPKI algorithm")[1]
    if _expect(data, alg_end, key_end, _BIT_STRING, "SPKI public key")[1] != key_end:
        raise ValueError("DER: SubjectPublicKeyInfo has extra elements")
    return data[pos:key_end]


# ---------------------------------------------------------------------------------------------
# Pins and fingerprints

def pin_of_der(cert_der: bytes) -> str:
    """kubeadm-style pin: `sha256:<64 lowercase hex>` of the SPKI."""
    return "sha256:" + hashlib.sha256(spki_der(cert_der)).hexdigest()


def curl_pin(cert_der: bytes) -> str:
    """The same pin in curl's --pinnedpubkey form: `sha256//<base64>`."""
    digest = hashlib.sha256(spki_der(cert_der)).digest()
    return "sha256//" + base64.b64encode(digest).decode("ascii")


def normalize_pin(text: str) -> str:
    """`sha256:HEX`, `sha256:AA:BB:...` (any case, either form) or curl's `sha256//BASE64` ->
    canonical `sha256:<64 lowercase hex>`."""
    value = text.strip()
    if value.lower().startswith("sha256//"):
        return "sha256:" + _curl_digest(value[8:]).hex()
    if not value.lower().startswith("sha256:"):
        raise ValueError(f"a pin looks like {PIN_FORM}; it must start with 'sha256:'")
    digits = value[7:]
    if ":" in digits:
        pairs = digits.split(":")
        if len(pairs) != 32 or not all(re.fullmatch(r"[0-9A-Fa-f]{2}", p) for p in pairs):
            raise ValueError(f"a pin looks like {PIN_FORM}; got {len(pairs)} colon-separated "
                             "parts, expected 32 pairs of hex digits")
        digits = "".join(pairs)
    if not re.fullmatch(r"[0-9A-Fa-f]{64}", digits):
        raise ValueError(f"a pin looks like {PIN_FORM}; got {len(digits)} characters after "
                         "'sha256:', expected 64 hex digits")
    return "sha256:" + digits.lower()


def _curl_digest(b64: str) -> bytes:
    try:
        digest = base64.b64decode(b64, validate=True)
    except binascii.Error:
        digest = b""
    if len(digest) != 32:
        raise ValueError(f"a pin looks like {PIN_FORM} or sha256//<base64 of 32 bytes>")
    return digest


def fingerprint_of_der(der: bytes) -> str:
    """PVE's `ssl_fingerprint`: SHA-256 of the whole DER, `AB:CD:...` uppercase."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def pem_to_der(pem_text: str) -> bytes:
    """The first certificate of a PEM text (a chain file starts with the leaf)."""
    match = _PEM.search(pem_text)
    if not match:
        raise ValueError("no '-----BEGIN CERTIFICATE-----' block found")
    try:
        return base64.b64decode("".join(match.group(1).split()), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"the certificate's base64 is damaged: {exc}") from None


def fingerprint_of_pem(pem_text: str) -> str:
    """PVE's fingerprint of the first certificate in a PEM text (a chain starts with the leaf)."""
    return fingerprint_of_der(pem_to_der(pem_text))


# ---------------------------------------------------------------------------------------------
# Connections

def context(cafile: Optional[str] = None, *, verify: bool = True,
            check_name: bool = True) -> ssl.SSLContext:
    """A client context: verified against `cafile` (None: the system's CAs) and, with
    check_name, the server name; verify=False only to look at what a server presents."""
    ctx = ssl.create_default_context(cafile=cafile if verify else None)
    ctx.check_hostname = verify and check_name
    if not verify:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _ip_family(host: str) -> Optional[int]:
    """AF_INET or AF_INET6 for an address literal (an IPv6 one may name its %zone), None for a
    name. inet_pton, not ipaddress: that module is a millisecond of pvemond-claim's start-up."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host.partition("%")[0] if family == socket.AF_INET6 else host)
            return family
        except OSError:
            continue
    return None


def tcp_connect(host: str, port: int, timeout: float) -> socket.socket:
    """socket.create_connection, which an address literal does not need: its getaddrinfo
    IDNA-encodes every host (a millisecond of codec imports for a claim). A name still goes
    through it."""
    family = _ip_family(host)
    if family is None:
        return socket.create_connection((host, port), timeout=timeout)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        return sock
    except BaseException:
        sock.close()
        raise


def connect(host: str, port: int, ctx: ssl.SSLContext, *, timeout: float,
            tls_name: Optional[str] = None) -> ssl.SSLSocket:
    """TCP to host:port, TLS with SNI and name check against `tls_name` (default: host, no SNI
    for an IP). Connecting to one address while verifying another name is how a node reaches
    its own pveproxy on 127.0.0.1 under an ACME certificate that names only its FQDN."""
    raw = tcp_connect(host, port, timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=tls_name or host)
    except BaseException:
        raw.close()
        raise


def peer_sans(tls: ssl.SSLSocket) -> List[Tuple[str, str]]:
    """The verified peer certificate's subjectAltName entries, e.g. ("DNS", "pve1.example.com")."""
    cert: Any = tls.getpeercert() or {}
    return [(k, v) for k, v in cert.get("subjectAltName", ())]


# ---------------------------------------------------------------------------------------------
# Pinned connections (the claim: the node's key is checked before the code leaves this host)

class HandshakeFailed(Exception):
    """TCP connected but TLS did not complete; `cause` is the ssl or socket error (a reset
    here is the claim listener refusing the source at accept)."""

    def __init__(self, cause: BaseException):
        super().__init__(f"TLS handshake failed: {type(cause).__name__}")
        self.cause = cause


class PinMismatch(Exception):
    """The peer's key is not the pinned one: the caller has sent nothing."""

    def __init__(self, expected: str, got: str, fingerprint: str):
        super().__init__(f"expected {expected}, got {got}")
        self.expected, self.got, self.fingerprint = expected, got, fingerprint


def open_unverified(host: str, port: int, timeout: float) -> ssl.SSLSocket:
    """TLS 1.2+ without CA verification, for a caller that checks the pin before it sends
    anything. Connecting raises what tcp_connect raises (refused, timeout,
    unresolvable: the caller names each); the handshake raises HandshakeFailed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    raw = tcp_connect(host, port, timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=None if _ip_family(host) else host)
    except OSError as exc:  # ssl.SSLError included
        raw.close()
        raise HandshakeFailed(exc) from exc


def peer_identity(tls: ssl.SSLSocket) -> Tuple[bytes, str]:
    """(certificate DER, pin) of the peer; ValueError when it sent none or an unreadable one."""
    der = tls.getpeercert(binary_form=True)
    if not der:
        raise ValueError("the peer presented no certificate")
    return der, pin_of_der(der)


def connect_pinned(host: str, port: int, pin: str, timeout: float) -> ssl.SSLSocket:
    """A TLS connection whose peer key matches `pin` (canonical form, see normalize_pin);
    PinMismatch or ValueError otherwise, the connection closed and nothing sent."""
    tls = open_unverified(host, port, timeout)
    try:
        der, got = peer_identity(tls)
        if got != pin:
            raise PinMismatch(pin, got, fingerprint_of_der(der))
    except BaseException:
        tls.close()
        raise
    return tls
