"""The pveproxy stand-in over real HTTPS (pveum.md §6, node.md §2)."""
import http.client
import json
import os
import signal
import socket
import ssl
import time
import urllib.request
from dataclasses import dataclass
from typing import Dict, Optional

import pytest

from pvesim import certs
from pvesim.testing import make_node, pveum_call

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the set-up uses the fake pveum, which runs as root only")
STATS = {"cpu", "maxcpu", "mem", "maxmem", "disk", "maxdisk", "uptime"}
GUESTS = [{"vmid": 100, "name": "web", "type": "qemu", "node": "pve1"},
          {"vmid": 101, "name": "db", "type": "lxc", "node": "pve1"}]
STORAGES = [{"storage": "local", "node": "pve1"}, {"storage": "nfs", "node": "pve1"}]


@dataclass
class Response:
    status: int
    reason: str
    headers: Dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class Site:
    """A node with monitoring users and tokens, served by its proxy."""

    def __init__(self, node, proxy, secrets):
        self.node, self.proxy, self.secrets = node, proxy, secrets
        self.ctx = ssl.create_default_context(cafile=str(node.ca_pem))

    def get(self, path, token: Optional[str] = None, header: Optional[str] = None, method="GET", base="/api2/json"):
        conn = http.client.HTTPSConnection("127.0.0.1", self.proxy.port, context=self.ctx, timeout=10)
        headers = {}
        if header is not None:
            headers["Authorization"] = header
        elif token is not None:
            headers["Authorization"] = f"PVEAPIToken={token}={self.secrets[token]}"
        conn.request(method, base + path, headers=headers)
        resp = conn.getresponse()
        result = Response(resp.status, resp.reason, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        conn.close()
        return result


def pveum(node, *args):
    res = pveum_call(node, *args)
    assert res.rc == 0, res.err
    return res.out


def add_token(node, userid, tokenid, *extra):
    out = pveum(node, "user", "token", "add", userid, tokenid, *extra, "--output-format", "json")
    return f"{userid}!{tokenid}", json.loads(out)["value"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    node = make_node(tmp_path_factory.mktemp("proxy") / "node")
    node.set(auth_fail_delay=0.02, guests=GUESTS, storages=STORAGES)
    pveum(node, "role", "add", "Monitoring", "--privs", "Datastore.Audit,Sys.Audit,VM.Audit")
    pveum(node, "user", "add", "monitor@pve")
    pveum(node, "acl", "modify", "/", "--roles", "Monitoring", "--users", "monitor@pve")
    pveum(node, "user", "add", "scoped@pve")
    pveum(node, "acl", "modify", "/vms/100", "--roles", "PVEAuditor", "--users", "scoped@pve")
    pveum(node, "acl", "modify", "/storage/local", "--roles", "PVEAuditor", "--users", "scoped@pve")
    for user in ("off@pve", "old@pve"):
        pveum(node, "user", "add", user)
    secrets = dict([
        add_token(node, "monitor@pve", "full", "--privsep", "0"),
        add_token(node, "monitor@pve", "sep"),
        add_token(node, "monitor@pve", "paired"),
        add_token(node, "monitor@pve", "expired", "--privsep", "0", "--expire", "1000"),
        add_token(node, "scoped@pve", "tk", "--privsep", "0"),
        add_token(node, "off@pve", "tk", "--privsep", "0"),
        add_token(node, "old@pve", "tk", "--privsep", "0"),
    ])
    pveum(node, "acl", "modify", "/", "--roles", "Monitoring", "--tokens", "monitor@pve!paired")
    pveum(node, "user", "modify", "off@pve", "--enable", "0")
    pveum(node, "user", "modify", "old@pve", "--expire", "1000")
    with node.start_proxy() as proxy:
        yield Site(node, proxy, secrets)


@pytest.fixture
def raw_errors(site):
    site.node.set(auth_errors="raw")
    yield site
    site.node.set(auth_errors="unified")


# -- TLS ------------------------------------------------------------------------------
def test_tls_verifies_against_the_sim_ca_on_127_0_0_1(site):
    with urllib.request.urlopen(site.proxy.url + "/", context=site.ctx) as resp:
        assert resp.status == 200 and resp.headers["Server"] == "pve-api-daemon/3.0"
    assert site.proxy.url == f"https://127.0.0.1:{site.proxy.port}"


def test_tls_fails_for_a_name_not_in_the_san_and_without_the_ca(site):
    with socket.create_connection(("127.0.0.1", site.proxy.port)) as sock:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch|doesn't match"):
            site.ctx.wrap_socket(sock, server_hostname="wrong.example.org")
    with socket.create_connection(("127.0.0.1", site.proxy.port)) as sock:
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(sock, server_hostname="127.0.0.1")


def test_keep_alive_serves_several_requests_on_one_connection(site):
    conn = http.client.HTTPSConnection("127.0.0.1", site.proxy.port, context=site.ctx)
    header = {"Authorization": f"PVEAPIToken=monitor@pve!full={site.secrets['monitor@pve!full']}"}
    for _ in range(3):
        conn.request("GET", "/api2/json/version", headers=header)
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["data"]["version"] == "9.1.1"
    conn.close()


# -- routes ---------------------------------------------------------------------------
def test_version_comes_from_pvecfg(site):
    resp = site.get("/version", "monitor@pve!sep")
    assert resp.status == 200 and resp.headers["content-type"] == "application/json;charset=UTF-8"
    assert resp.json() == {"data": site.node.version_info()}
    assert set(resp.json()["data"]) == {"release", "repoid", "version"}


def test_permissions_per_privsep(site):
    audit = {"Datastore.Audit": 1, "Sys.Audit": 1, "VM.Audit": 1}
    assert site.get("/access/permissions", "monitor@pve!sep").json() == {"data": {}}
    assert site.get("/access/permissions?path=/", "monitor@pve!sep").json() == {"data": {"/": {}}}
    assert site.get("/access/permissions?path=/", "monitor@pve!paired").json() == {"data": {"/": audit}}
    full = site.get("/access/permissions", "monitor@pve!full").json()["data"]
    assert full["/"] == audit and set(full) >= {"/", "/access", "/nodes", "/storage", "/vms"}


def test_permissions_of_others_need_sys_audit(site):
    resp = site.get("/access/permissions?userid=monitor@pve", "monitor@pve!sep")
    assert (resp.status, resp.reason) == (403, "Permission check failed (/access, Sys.Audit)")
    assert site.get("/access/permissions?userid=root@pam&path=/", "monitor@pve!full").status == 200


def test_nodes_stats_only_with_sys_audit(site):
    fp = certs.fingerprint(site.node.local_dir / "pve-ssl.pem")
    [entry] = site.get("/nodes", "monitor@pve!full").json()["data"]
    assert STATS <= set(entry)
    assert {k: entry[k] for k in ("id", "node", "type", "status", "level", "ssl_fingerprint")} == {
        "id": "node/pve1", "node": "pve1", "type": "node", "status": "online", "level": "", "ssl_fingerprint": fp}
    [bare] = site.get("/nodes", "monitor@pve!sep").json()["data"]
    assert bare == {"id": "node/pve1", "node": "pve1", "type": "node", "status": "online", "level": "",
                    "ssl_fingerprint": fp}
    assert fp == fp.upper() and len(fp) == 95


def test_cluster_resources_filtering(site):
    def ids(token, query=""):
        return sorted(e["id"] for e in site.get("/cluster/resources" + query, token).json()["data"])

    assert ids("monitor@pve!full") == ["lxc/101", "node/pve1", "qemu/100", "storage/pve1/local", "storage/pve1/nfs"]
    assert ids("scoped@pve!tk") == ["node/pve1", "qemu/100", "storage/pve1/local"]
    assert ids("monitor@pve!sep") == ["node/pve1"]
    assert ids("monitor@pve!full", "?type=vm") == ["lxc/101", "qemu/100"]
    [node] = site.get("/cluster/resources?type=node", "monitor@pve!sep").json()["data"]
    assert not STATS & set(node)
    [guest] = [e for e in site.get("/cluster/resources", "scoped@pve!tk").json()["data"] if e["type"] == "qemu"]
    assert (guest["vmid"], guest["name"], guest["node"]) == (100, "web", "pve1")
    bad = site.get("/cluster/resources?type=bogus", "monitor@pve!full")
    assert bad.status == 400 and bad.json()["errors"] == {
        "type": "value 'bogus' does not have a value in the enumeration 'vm, storage, node, sdn'"}


def test_node_status_needs_sys_audit(site):
    denied = site.get("/nodes/pve1/status", "monitor@pve!sep")
    assert (denied.status, denied.reason) == (403, "Permission check failed (/nodes/pve1, Sys.Audit)")
    assert denied.json() == {"data": None, "message": "Permission check failed (/nodes/pve1, Sys.Audit)\n"}
    data = site.get("/nodes/pve1/status", "monitor@pve!full").json()["data"]
    info = site.node.version_info()
    assert data["pveversion"] == f"pve-manager/{info['version']}/{info['repoid']}"


def test_unknown_routes(site):
    resp = site.get("/nodes/pve1/ceph/status", "monitor@pve!full")
    assert (resp.status, resp.reason) == (501, "Method 'GET /nodes/pve1/ceph/status' not implemented")
    assert site.get("/version", "monitor@pve!full", method="POST").status == 501
    assert site.get("/nodes/pve1/ceph/status").status == 401  # authentication comes first
    assert site.get("/favicon.ico", base="").status == 404


# -- authentication -------------------------------------------------------------------
FAILURES = {
    "wrong secret": ("PVEAPIToken=monitor@pve!full=00000000-0000-4000-8000-000000000000", "invalid token value!"),
    "unknown token": ("PVEAPIToken=monitor@pve!nope=x", "no such token 'nope' for user 'monitor@pve'"),
    "unknown user": ("PVEAPIToken=ghost@pve!tk=x", "no such user ('ghost@pve')"),
    "disabled user": (None, "user 'off@pve' is disabled"),
    "expired user": (None, "user 'old@pve' access expired"),
    "expired token": (None, "token 'expired' access expired"),
    "malformed id": ("PVEAPIToken=monitor@pve=x", "'monitor@pve' is not a valid token ID - not able to split into "
                                                 "user and token parts"),
    "no '='": ("PVEAPIToken=monitor@pve!full", "no tokenid specified"),
    "':' as separator": ("PVEAPIToken=monitor@pve!full:secret", "no tokenid specified"),
}
REAL_TOKENS = {"disabled user": "off@pve!tk", "expired user": "old@pve!tk", "expired token": "monitor@pve!expired"}


def _fail(site, case):
    header, _ = FAILURES[case]
    if header is None:
        token = REAL_TOKENS[case]
        header = f"PVEAPIToken={token}={site.secrets[token]}"
    return site.get("/version", header=header)


def assert_401(resp, reason):
    assert (resp.status, resp.reason, resp.body) == (401, reason, b"")
    assert "content-length" not in resp.headers and resp.headers["connection"] == "close"


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_unified_401_reason(site, case):
    assert_401(_fail(site, case), "Authentication failed!")


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_raw_401_reasons(raw_errors, case):
    assert_401(_fail(raw_errors, case), FAILURES[case][1])


@pytest.mark.parametrize("header", [None, "PVEAPIToken=", "pveapitoken=monitor@pve!full=x", "Bearer abc",
                                    "PVEAPIToken=0"])
def test_no_ticket_in_both_styles(site, header):
    for style in ("unified", "raw"):
        site.node.set(auth_errors=style)
        try:
            assert_401(site.get("/version", header=header), "No ticket")
        finally:
            site.node.set(auth_errors="unified")


def test_header_variants_that_authenticate(site):
    secret = site.secrets["monitor@pve!full"]
    for header in (f"PVEAPIToken monitor@pve!full={secret}",
                   f"PVEAPIToken=monitor@pve!full={secret}; other=1",
                   f"PVEAPIToken=monitor@pve%21full={secret}",
                   f"Other x PVEAPIToken=monitor@pve!full={secret}"):
        assert site.get("/version", header=header).status == 200, header


def test_failures_are_delayed(site):
    site.node.set(auth_fail_delay=0.4)
    try:
        started = time.monotonic()
        assert site.get("/version", header="PVEAPIToken=monitor@pve!full=bad").status == 401
        assert time.monotonic() - started >= 0.4
        started = time.monotonic()
        assert site.get("/version", "monitor@pve!full").status == 200
        assert time.monotonic() - started < 0.4
    finally:
        site.node.set(auth_fail_delay=0.02)


def test_changes_are_seen_without_restart(site):
    assert site.get("/version", "scoped@pve!tk").status == 200
    pveum(site.node, "user", "modify", "scoped@pve", "--enable", "0")
    try:
        assert site.get("/version", "scoped@pve!tk").status == 401
    finally:
        pveum(site.node, "user", "modify", "scoped@pve", "--enable", "1")
    assert site.get("/version", "scoped@pve!tk").status == 200


def test_regenerated_secret_replaces_the_old_one(site):
    token, old = add_token(site.node, "monitor@pve", "rotating")
    site.secrets[token] = old
    assert site.get("/version", token).status == 200
    out = pveum(site.node, "user", "token", "modify", "monitor@pve", "rotating", "--regenerate", "1",
                "--output-format", "json")
    new = json.loads(out)["value"]
    assert site.get("/version", token).status == 401
    site.secrets[token] = new
    assert site.get("/version", token).status == 200


def test_deleted_token_stops_working(site):
    token, secret = add_token(site.node, "monitor@pve", "shortlived")
    site.secrets[token] = secret
    assert site.get("/version", token).status == 200
    pveum(site.node, "user", "token", "delete", "monitor@pve", "shortlived")
    assert site.get("/version", token).status == 401


# -- cluster, custom certificate, process ---------------------------------------------
def test_cluster_nodes(tmp_path):
    node = make_node(tmp_path / "c", cluster="prod")
    node.set(auth_fail_delay=0.0)
    token, secret = add_token(node, "root@pam", "mon", "--privsep", "0")  # root: everything
    with node.start_proxy() as proxy:
        site = Site(node, proxy, {token: secret})
        entries = {e["node"]: e for e in site.get("/nodes", token).json()["data"]}
        assert set(entries) == {"pve1", "pve2", "pve3"}
        assert STATS <= set(entries["pve2"]) and entries["pve2"]["status"] == "online"
        assert entries["pve3"]["status"] == "offline" and not STATS & set(entries["pve3"])
        for name, entry in entries.items():
            assert entry["ssl_fingerprint"] == certs.fingerprint(node.pve_dir / "nodes" / name / "pve-ssl.pem")
        assert site.get("/nodes/pve3/status", token).status == 595
        assert site.get("/nodes/pve9/status", token).status == 500


def test_custom_certificate_is_served_when_installed(tmp_path):
    node = make_node(tmp_path / "acme")
    node.install_custom_cert()
    token, secret = add_token(node, "root@pam", "mon")
    with node.start_proxy() as proxy:
        custom = ssl.create_default_context(cafile=str(node.custom_ca_pem))
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            with custom.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                served = tls.getpeercert(binary_form=True)
        assert certs.fingerprint_der(served) == certs.fingerprint(node.local_dir / "pveproxy-ssl.pem")
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            with pytest.raises(ssl.SSLCertVerificationError):
                ssl.create_default_context(cafile=str(node.ca_pem)).wrap_socket(sock, server_hostname="127.0.0.1")
        site = Site(node, proxy, {token: secret})
        site.ctx = custom
        [entry] = site.get("/nodes", token).json()["data"]
        assert entry["ssl_fingerprint"] == certs.fingerprint(node.local_dir / "pveproxy-ssl.pem")


def test_custom_cert_needs_both_files(tmp_path):
    node = make_node(tmp_path / "half")
    node.install_custom_cert()
    (node.local_dir / "pveproxy-ssl.key").unlink()
    with node.start_proxy() as proxy:
        ctx = ssl.create_default_context(cafile=str(node.ca_pem))
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                served = tls.getpeercert(binary_form=True)
    assert certs.fingerprint_der(served) == certs.fingerprint(node.local_dir / "pve-ssl.pem")


def test_proxy_process_prints_its_url_and_stops_on_sigterm(site):
    proc = site.proxy.proc
    assert proc.poll() is None
    node = site.node
    with node.start_proxy(port=0) as second:
        assert second.url.startswith("https://127.0.0.1:") and second.port != site.proxy.port
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(5) == 0


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_listen(site):
    try:
        proxy = site.node.start_proxy(host="::1")
    except RuntimeError:
        pytest.skip("cannot bind ::1 here")
    with proxy:
        assert proxy.url == f"https://[::1]:{proxy.port}"
        with socket.create_connection(("::1", proxy.port)) as sock:
            with site.ctx.wrap_socket(sock, server_hostname="::1") as tls:
                assert tls.version()
