"""The cluster CA as strict TLS clients accept it.

PVE makes its cluster CA once, at install; before pve-cluster 9.1.2 it has no keyUsage. Python
3.13+ verifies with VERIFY_X509_STRICT and refuses such a CA ("CA cert does not include key usage
extension"), and so does `openssl verify -x509_strict`. The node holds the CA key, so it can sign
the same certificate again (same subject, key, serial and dates; hence the same subject key
identifier) with the extensions strict clients need, and hand that out instead: every node
certificate the old one signed verifies against it unchanged, and the cluster is not touched.
The openssl CLI does it (always on a PVE node); nothing here needs a Python crypto library.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from pvemond import tlspin

_EXTENSIONS = """\
[ strict_ca ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
"""
STRICT_NAME = "pve-root-ca-strict.pem"


def _openssl(*args: str, stdin: Optional[str] = None) -> str:
    proc = subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True,
                          timeout=30)
    if proc.returncode != 0:
        raise OSError(f"openssl {args[0]} failed: {proc.stderr.strip()}")
    return proc.stdout


def lacks_key_usage(ca_pem: Path) -> bool:
    """A CA certificate without keyUsage: strict clients (Python 3.13+) reject it. Read from the
    DER here (an openssl run costs ~25 ms of a bootstrap); openssl only for what that walk
    cannot read."""
    try:
        return _KEY_USAGE not in _extension_oids(tlspin.pem_to_der(ca_pem.read_text(encoding="ascii")))
    except (ValueError, IndexError, UnicodeDecodeError):
        return "Key Usage" not in _openssl("x509", "-in", str(ca_pem), "-noout", "-ext", "keyUsage")


_KEY_USAGE = bytes((0x55, 0x1D, 0x0F))  # OID 2.5.29.15, as DER content


def _extension_oids(der: bytes) -> List[bytes]:
    """The extension OIDs (DER content) of a certificate: Certificate -> tbsCertificate ->
    [3] extensions -> SEQUENCE OF Extension -> its first element."""
    _, cert, _ = _tlv(der, 0)
    _, tbs, tbs_end = _tlv(der, cert)
    for tag, start, _ in _children(der, tbs, tbs_end):
        if tag == 0xA3:
            _, seq, seq_end = _tlv(der, start)
            firsts = (_tlv(der, ext) for _, ext, _ in _children(der, seq, seq_end))
            return [der[s:e] for t, s, e in firsts if t == 0x06]
    return []


def _children(der: bytes, start: int, end: int) -> Iterator[Tuple[int, int, int]]:
    while start < end:
        tag, content, nxt = _tlv(der, start)
        yield tag, content, nxt
        start = nxt


def _tlv(der: bytes, i: int) -> Tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at i; ValueError if it overruns."""
    tag, length, head = der[i], der[i + 1], i + 2
    if length & 0x80:
        size = length & 0x7F
        length, head = int.from_bytes(der[head:head + size], "big"), head + size
    if head + length > len(der):
        raise ValueError("truncated DER")
    return tag, head, head + length


def reissue(ca_pem: Path, ca_key: Path) -> str:
    """The CA certificate signed again by its own key with keyUsage, as PEM."""
    with tempfile.TemporaryDirectory(prefix="pvemond-ca-") as tmp:
        ext = Path(tmp) / "ext.cnf"
        ext.write_text(_EXTENSIONS, encoding="ascii")
        return _openssl("x509", "-in", str(ca_pem), "-key", str(ca_key), "-preserve_dates",
                        "-clrext", "-extfile", str(ext), "-extensions", "strict_ca")


def strict_ca(pve_dir: str, state_dir: str) -> Path:
    """The CA file to verify the cluster's certificates with and to hand to consumers: the
    cluster CA itself when it has keyUsage (or its key is out of reach), else its strict copy
    in the state directory, re-made when the cluster CA changes."""
    ca = Path(pve_dir) / "pve-root-ca.pem"
    key = Path(pve_dir) / "priv" / "pve-root-ca.key"
    try:
        stamp = hashlib.sha256(ca.read_bytes()).hexdigest()
        if not _legacy(ca, stamp) or not os.access(key, os.R_OK):
            return ca
        out = Path(state_dir) / STRICT_NAME
        if _stamp_of(out) == stamp:
            return out
        text = f"# re-issued by pvemond from {ca} sha256 {stamp}\n" + reissue(ca, key)
        _write(out, text)
        return out
    except OSError:
        return ca  # the plain CA still serves every client but the strict ones


_LEGACY: Dict[str, bool] = {}  # CA digest -> lacks keyUsage: one openssl run per CA, not per call


def _legacy(ca: Path, stamp: str) -> bool:
    if stamp not in _LEGACY:
        _LEGACY[stamp] = lacks_key_usage(ca)
    return _LEGACY[stamp]


def is_reissued(path: Path) -> bool:
    return path.name == STRICT_NAME


def _stamp_of(path: Path) -> Optional[str]:
    try:
        first = path.read_text(encoding="ascii").split("\n", 1)[0]
    except (OSError, UnicodeDecodeError):
        return None
    return first.rsplit(" ", 1)[-1] if first.startswith("# re-issued by pvemond") else None


def _write(path: Path, text: str) -> None:
    """Atomically; a file of its own per writer, as two daemon threads may re-issue at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # a public certificate
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
