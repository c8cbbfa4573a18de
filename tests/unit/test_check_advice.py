"""pvemond-claim --check's one-sentence advice for the field's TLS and name problems (no network:
the failures are built as the ssl and socket modules raise them)."""
from __future__ import annotations

import socket
import ssl

from pvemond.cli import claim_check
from pvemond.pve import api

URL = "https://pve1.example.com:8006/api2/json"


def unreachable(cause: BaseException) -> api.ApiUnreachable:
    try:
        try:
            raise cause
        except BaseException:
            raise api.ApiUnreachable("cannot reach pveproxy") from None
    except api.ApiUnreachable as exc:
        return exc


def strict_refusal() -> ssl.SSLCertVerificationError:
    err = ssl.SSLCertVerificationError(1, "certificate verify failed")
    err.verify_message = "CA cert does not include key usage extension"
    return err


def test_legacy_ca_on_a_strict_client_says_to_update_the_node():
    text = claim_check._unreachable(unreachable(strict_refusal()), URL, "/x/pve-prod-ca.pem",
                                    5.0)
    assert "predates pve-cluster 9.1.2" in text and "update pvemond on the node" in text


def test_an_unresolvable_certificate_name_says_what_to_add():
    exc = unreachable(socket.gaierror(-2, "Name or service not known"))
    text = claim_check._unreachable(exc, URL, None, 5.0, ip="192.0.2.10")
    assert text == ("this host cannot resolve pve1.example.com, the name the node's certificate "
                    "covers: add it to DNS or add the line '192.0.2.10 pve1.example.com' to "
                    "/etc/hosts")


def test_a_refused_certificate_name_says_where_it_should_point():
    text = claim_check._unreachable(unreachable(ConnectionRefusedError()), URL, None, 5.0,
                                    ip="192.0.2.10")
    assert "cannot reach pve1.example.com port 8006" in text
    assert "point pve1.example.com at 192.0.2.10 in DNS or /etc/hosts" in text
