"""Node certificates made with the openssl CLI, the way pve-cluster's Setup.pm makes them.

CA:   /CN=Proxmox Virtual Environment/OU=<uuid>/O=PVE Cluster Manager CA/, ~10 years.
Node: /OU=PVE Cluster Node/O=Proxmox Virtual Environment/CN=<fqdn>, RSA 2048, ~2 years,
      SAN IP:127.0.0.1, IP:::1, DNS:localhost, IP:<ip>, DNS:<node>[, DNS:<fqdn>].
Both start "yesterday" (upstream issues them under `faketime yesterday`); `openssl ca`
is used because it is the 3.0 tool that can set notBefore.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import ssl
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import List, Optional

CA_SUBJECT = "/CN=Proxmox Virtual Environment/OU={uuid}/O=PVE Cluster Manager CA/"
NODE_SUBJECT = "/OU=PVE Cluster Node/O=Proxmox Virtual Environment/CN={fqdn}"

_CA_CONFIG = """\
[ ca ]
default_ca = sim
[ sim ]
database = {tmp}/index.txt
new_certs_dir = {tmp}
serial = {tmp}/serial
default_md = sha256
policy = anything
unique_subject = no
email_in_dn = no
[ anything ]
commonName = optional
organizationalUnitName = optional
organizationName = optional
countryName = optional
[ v3_ca ]
basicConstraints = critical,CA:TRUE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always,issuer
{ca_key_usage}
[ v3_leaf ]
basicConstraints = CA:FALSE
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
subjectAltName = {san}
"""


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y%m%d%H%M%SZ")


def _yesterday() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(days=1)


def node_san(nodename: str, ip: str, domain: Optional[str]) -> List[str]:
    san = ["IP:127.0.0.1", "IP:::1", "DNS:localhost", f"IP:{ip}", f"DNS:{nodename}"]
    if domain:
        san.append(f"DNS:{nodename}.{domain}")
    return san


def _sign(csr: Path, out: Path, *, ca_cert: Optional[Path], ca_key: Path, section: str,
          san: List[str], days: int, ca_key_usage: bool = False) -> None:
    with tempfile.TemporaryDirectory(prefix="pvesim-ca-") as tmp:
        (Path(tmp) / "index.txt").write_text("")
        (Path(tmp) / "serial").write_text(secrets.token_hex(8).upper() + "\n")
        config = Path(tmp) / "ca.cnf"
        config.write_text(_CA_CONFIG.format(
            tmp=tmp, san=", ".join(san or ["DNS:localhost"]),
            ca_key_usage="keyUsage = critical,keyCertSign,cRLSign" if ca_key_usage else "",
        ))
        start = _yesterday()
        issuer = ["-selfsign"] if ca_cert is None else ["-cert", str(ca_cert)]
        _openssl("ca", "-batch", "-config", str(config), "-preserveDN", "-notext", *issuer,
                 "-keyfile", str(ca_key), "-in", str(csr), "-out", str(out),
                 "-startdate", _stamp(start), "-enddate", _stamp(start + dt.timedelta(days=days)),
                 "-extensions", section)


def create_ca(cert: Path, key: Path, *, bits: int = 4096, subject: Optional[str] = None,
              key_usage: bool = True) -> None:
    """Self-signed CA; key_usage mirrors pve-cluster >= 9.1 (March 2026) CAs."""
    _openssl("genrsa", "-out", str(key), str(bits))
    with tempfile.TemporaryDirectory(prefix="pvesim-csr-") as tmp:
        csr = Path(tmp) / "ca.csr"
        _openssl("req", "-new", "-key", str(key), "-subj", subject or CA_SUBJECT.format(uuid=uuid.uuid4()),
                 "-out", str(csr))
        _sign(csr, cert, ca_cert=None, ca_key=key, section="v3_ca", san=[], days=3650, ca_key_usage=key_usage)


def issue_cert(ca_cert: Path, ca_key: Path, cert: Path, key: Path, *, subject: str, san: List[str],
               bits: int = 2048, days: int = 730) -> None:
    """A serverAuth leaf; an existing key is kept (pve-ssl.key is never rotated)."""
    if not key.exists():
        _openssl("genrsa", "-out", str(key), str(bits))
    with tempfile.TemporaryDirectory(prefix="pvesim-csr-") as tmp:
        csr = Path(tmp) / "leaf.csr"
        _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
        _sign(csr, cert, ca_cert=ca_cert, ca_key=ca_key, section="v3_leaf", san=san, days=days)


def first_pem_cert(pem_text: str) -> str:
    m = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem_text, re.S)
    if not m:
        raise ValueError("no certificate in PEM text")
    return m.group(0) + "\n"


def fingerprint_der(der: bytes) -> str:
    """PVE's ssl_fingerprint: SHA-256 of the DER, uppercase, colon-separated (95 chars)."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def fingerprint(pem_path: Path) -> str:
    """Of the first (leaf) certificate in the file, like Net::SSLeay's X509_get_fingerprint."""
    return fingerprint_der(ssl.PEM_cert_to_DER_cert(first_pem_cert(pem_path.read_text())))
