"""doctor on the certificates the field has: an ACME certificate naming only the node's FQDN,
and a cluster CA without keyUsage (PVE 8, or PVE 9 installed before pve-cluster 9.1.2)."""
from __future__ import annotations

import pytest

from test_doctor import Site, assert_passes, check


@pytest.fixture
def site_for(tmp_path):
    made = []

    def make(pve: int = 9, **create) -> Site:
        s = Site(tmp_path, pve, **create)
        made.append(s)
        return s
    yield make
    for s in made:
        s.proxy.stop()


def test_acme_certificate_passes_by_its_name(site_for, monkeypatch):
    site = site_for()
    site.node.install_acme_cert()
    monkeypatch.setenv("SSL_CERT_FILE", str(site.node.public_ca_pem))
    site.restart_proxy()
    site.bootstrap()  # verified over TLS against pve1.example.com while connecting to 127.0.0.1
    report = site.doctor()
    assert_passes(report)  # token_auth included: the probe verifies by the FQDN too
    assert "system trust store" in check(report, "certificate")["what"]


@pytest.mark.parametrize("kind", [dict(pve=8), dict(pve=9, ca_key_usage=False)],
                         ids=["pve8", "pve9-upgraded"])
def test_legacy_cluster_ca_is_named_with_what_it_means(site_for, kind):
    site = site_for(**kind)
    site.bootstrap()
    report = site.doctor()
    assert_passes(report)
    what = check(report, "certificate")["what"]
    assert "predates pve-cluster 9.1.2 (no keyUsage)" in what and "Python 3.13+" in what
    assert "pve-root-ca-strict.pem" in what


def test_a_ca_with_key_usage_gets_no_note(site_for):
    site = site_for()
    site.bootstrap()
    assert "keyUsage" not in check(site.doctor(), "certificate")["what"]
