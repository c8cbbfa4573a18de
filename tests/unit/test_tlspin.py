"""tlspin: the stdlib DER walk checked against the openssl CLI on real certificates (RSA 2048 as
pve-ssl.pem, RSA 4096 as ACME and the CA, EC P-256, Ed25519, a v1 certificate, long-form lengths),
and refusing malformed input with ValueError only."""
from __future__ import annotations

import base64
import hashlib
import random
import re
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from pvemond import tlspin
from pvemond.tlspin import (curl_pin, fingerprint_of_der, normalize_pin, pem_to_der, pin_of_der,
                            spki_der)

KEYS = {
    "rsa2048": ["-newkey", "rsa:2048"],
    "rsa4096": ["-newkey", "rsa:4096"],
    "ec-p256": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "ed25519": ["-newkey", "ed25519"],
}
# Five 64-byte OUs: subject and issuer exceed 255 bytes, so their lengths take the 0x82 form.
LONG_SUBJECT = "/CN=pve1.example.com" + "".join(f"/OU={c * 64}" for c in "abcde")


def openssl(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], input=stdin, check=True,
                          capture_output=True).stdout


def self_signed(directory: Path, name: str, key: list[str], subject: str = "/CN=pve1") -> Path:
    cert = directory / f"{name}.pem"
    openssl("req", "-x509", *key, "-nodes", "-keyout", str(directory / f"{name}.key"),
            "-out", str(cert), "-days", "2", "-subj", subject, "-set_serial",
            "0x" + "7f" * 20)  # a 20-byte serial, the maximum RFC 5280 allows
    return cert


def v1_cert(directory: Path) -> Path:
    key, csr, cert = (directory / f"v1.{ext}" for ext in ("key", "csr", "pem"))
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", "/CN=v1")
    openssl("x509", "-req", "-in", str(csr), "-signkey", str(key), "-out", str(cert), "-days", "2")
    return cert


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tlspin")
    out = {name: self_signed(d, name, key) for name, key in KEYS.items()}
    out["long-form"] = self_signed(d, "long", KEYS["ec-p256"], LONG_SUBJECT)
    out["v1"] = v1_cert(d)
    return out


def openssl_spki(cert: Path) -> bytes:
    pub = openssl("x509", "-in", str(cert), "-pubkey", "-noout")
    return openssl("pkey", "-pubin", "-outform", "der", stdin=pub)


def der_of(cert: Path) -> bytes:
    return pem_to_der(cert.read_text())


# ---------------------------------------------------------------------------------------------
# Against openssl

@pytest.mark.parametrize("name", [*KEYS, "long-form", "v1"])
def test_spki_and_pin_match_openssl(certs, name):
    der, spki = der_of(certs[name]), openssl_spki(certs[name])
    assert spki_der(der) == spki
    assert pin_of_der(der) == "sha256:" + hashlib.sha256(spki).hexdigest()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", pin_of_der(der))
    assert curl_pin(der) == "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_premises_long_form_and_v1(certs):
    """The special certificates really are special, or their tests prove nothing."""
    parsed = openssl("asn1parse", "-in", str(certs["long-form"])).decode()
    assert len(re.findall(r"d=2 +hl=4 .*SEQUENCE", parsed)) >= 2  # issuer and subject, 0x82
    text = openssl("x509", "-in", str(certs["v1"]), "-noout", "-text").decode()
    assert "Version: 1" in text


def test_fingerprint_matches_openssl_and_pve_format(certs):
    der = der_of(certs["rsa2048"])
    line = openssl("x509", "-in", str(certs["rsa2048"]), "-noout", "-fingerprint", "-sha256")
    assert fingerprint_of_der(der) == line.decode().strip().split("=", 1)[1]
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fingerprint_of_der(der))  # PVE schema


def test_pin_differs_from_fingerprint_and_survives_reissue(certs, tmp_path):
    # pve-ssl.pem renewals keep the key: the pin stays, the fingerprint changes (node.md §2.1).
    key = certs["ec-p256"].with_suffix(".key")
    again = tmp_path / "again.pem"
    openssl("req", "-x509", "-new", "-key", str(key), "-out", str(again), "-days", "3",
            "-subj", "/CN=pve1")
    a, b = der_of(certs["ec-p256"]), der_of(again)
    assert pin_of_der(a) == pin_of_der(b)
    assert fingerprint_of_der(a) != fingerprint_of_der(b)
    assert pin_of_der(a)[7:] != fingerprint_of_der(a).replace(":", "").lower()


def test_pem_to_der_takes_the_first_certificate(certs):
    chain = certs["ec-p256"].read_text() + certs["rsa2048"].read_text()
    assert pem_to_der("junk before\n" + chain) == ssl.PEM_cert_to_DER_cert(
        certs["ec-p256"].read_text())
    with pytest.raises(ValueError, match="BEGIN CERTIFICATE"):
        pem_to_der(certs["ec-p256"].with_suffix(".key").read_text())
    with pytest.raises(ValueError, match="base64"):
        pem_to_der("-----BEGIN CERTIFICATE-----\nMII*B\n-----END CERTIFICATE-----\n")


# ---------------------------------------------------------------------------------------------
# Long-form lengths that DER would not use (BER): still walked correctly

def children(der: bytes) -> list[bytes]:
    """The complete TLVs inside one constructed element (an independent, tiny parser)."""
    def length_at(i: int) -> tuple[int, int]:
        first = der[i + 1]
        if first < 0x80:
            return first, i + 2
        n = first & 0x7F
        return int.from_bytes(der[i + 2:i + 2 + n], "big"), i + 2 + n

    size, i = length_at(0)
    out, end = [], i + size
    while i < end:
        size, start = length_at(i)
        out.append(der[i:start + size])
        i = start + size
    return out


def long_form(tag: int, content: bytes) -> bytes:
    return bytes([tag, 0x84]) + len(content).to_bytes(4, "big") + content


def reencode_long(tlv: bytes) -> bytes:
    """The same element with a 4-byte long-form length, whatever its size."""
    content = tlv[2 + (tlv[1] & 0x7F if tlv[1] & 0x80 else 0):]
    return long_form(tlv[0], content)


def test_non_minimal_long_form_lengths(certs):
    der = der_of(certs["ec-p256"])
    tbs, alg, sig = children(der)
    parts = children(tbs)
    spki = spki_der(der)
    assert spki in parts  # the premise: the element we keep verbatim
    tbs2 = long_form(0x30, b"".join(p if p == spki else reencode_long(p) for p in parts))
    der2 = long_form(0x30, tbs2 + alg + sig)
    assert der2 != der and spki_der(der2) == spki
    assert pin_of_der(der2) == "sha256:" + hashlib.sha256(openssl_spki(certs["ec-p256"])).hexdigest()


# ---------------------------------------------------------------------------------------------
# Malformed input: ValueError, never an IndexError or a wrong answer

def test_malformed_inputs_raise_value_error(certs):
    der = der_of(certs["rsa2048"])
    bad = {
        "empty": b"",
        "truncated": der[:-1],
        "trailing bytes": der + b"\x00",
        "not a sequence": b"\x04" + der[1:],
        "indefinite length": b"\x30\x80" + der[4:],
        "length runs past the end": b"\x30\x84\x7f\xff\xff\xff" + der[4:],
        "a bare public key": openssl_spki(certs["rsa2048"]),
    }
    for what, data in bad.items():
        with pytest.raises(ValueError):
            spki_der(data)
            pytest.fail(f"accepted {what}")


def test_fuzzed_certificates_never_raise_anything_else(certs):
    der = der_of(certs["ec-p256"])
    rng = random.Random(1)
    samples = [der[:n] for n in range(0, len(der), 7)]
    for _ in range(400):
        data = bytearray(der)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        samples.append(bytes(data))
    for data in samples:
        try:
            spki = spki_der(data)
        except ValueError:
            continue
        assert spki[0] == 0x30 and spki in data


# ---------------------------------------------------------------------------------------------
# normalize_pin

def test_normalize_pin_accepts_every_printed_form(certs):
    der = der_of(certs["rsa4096"])
    pin = pin_of_der(der)
    hexdigits = pin[7:]
    colons = ":".join(hexdigits[i:i + 2] for i in range(0, 64, 2))
    for form in (pin, pin.upper(), "SHA256:" + colons.upper(), "sha256:" + colons,
                 f"  {pin}\n", curl_pin(der)):
        assert normalize_pin(form) == pin


@pytest.mark.parametrize("text", [
    "", "3fa2" * 16, "sha1:" + "ab" * 20, "sha256:" + "ab" * 31, "sha256:" + "ab" * 33,
    "sha256:" + "zz" * 32, "sha256:" + ":".join(["ab"] * 31), "sha256:" + ":".join(["abc"] * 32),
    "sha256//" + base64.b64encode(b"x" * 31).decode(), "sha256//not base64!",
])
def test_normalize_pin_refuses_with_the_expected_form(text):
    with pytest.raises(ValueError, match=r"sha256:<64 hex digits>"):
        normalize_pin(text)


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"),
                                          (socket.AF_INET, "localhost")])
def test_tcp_connect_reaches_literals_directly_and_names_by_lookup(monkeypatch, family, host):
    looked_up = []
    real = socket.create_connection
    monkeypatch.setattr(socket, "create_connection",
                        lambda *a, **k: looked_up.append(a[0][0]) or real(*a, **k))
    with socket.socket(family) as server:
        server.bind(("127.0.0.1" if host == "localhost" else host, 0))
        server.listen()
        with tlspin.tcp_connect(host, server.getsockname()[1], 5.0) as sock:
            assert sock.family == family and sock.gettimeout() == 5.0
            assert sock.getpeername()[:2] == server.getsockname()[:2]
    # an address literal needs no getaddrinfo (whose IDNA codec a claim would load)
    assert looked_up == ([host] if host == "localhost" else [])


@pytest.mark.parametrize("host, family", [
    ("192.0.2.1", socket.AF_INET), ("2001:db8::1", socket.AF_INET6),
    ("fe80::1%eth0", socket.AF_INET6),  # a link-local address with its zone: no SNI either
    ("pve1.example.com", None), ("192.0.2", None), ("", None)])
def test_address_literals_are_told_from_names(host, family):
    assert tlspin._ip_family(host) == family


def test_tcp_connect_to_a_closed_port_is_refused():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(ConnectionRefusedError):
            tlspin.tcp_connect("127.0.0.1", port, 5.0)
