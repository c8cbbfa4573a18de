"""The simulator's API routes hold to upstream's permission checks (api-permissions.md §1, §2):
the 4-privilege monitoring token gets what §1 says, a token without VM.Audit on a guest gets
filtered lists and 403s where upstream refuses, replication refuses on PVE 8 and filters on 9.
In-process (the route table), plus the wire format over HTTPS on loopback."""
from __future__ import annotations

import http.client
import json
import ssl
import sys

import pytest

from pvesim.privileges import for_major
from pvesim.request import ApiError, Request
from pvesim.routes import dispatch
from pvesim.testing import make_node, pveum_call
from pvesim.usercfg import read_user_config

MON = "mon@pve!tok"  # Datastore.Audit, SDN.Audit, Sys.Audit, VM.Audit on /
PART = "part@pve!tok"  # the same role on /vms/100 and /storage only: no Sys.Audit, no VM.Audit on 101
GUESTS = [{"vmid": 100, "name": "web", "type": "qemu", "node": "pve1", "onboot": 1},
          {"vmid": 101, "name": "db", "type": "lxc", "node": "pve1", "config": {"env": "A=1"}}]
REPLICATION = [{"guest": 101, "target": "pve2"}, {"guest": 100, "target": "pve2"}]
# Every GET of §1 the exporter, Telegraf and the Zabbix templates call, that the role may read.
ALLOWED = ["/version", "/cluster/status", "/cluster/resources", "/cluster/backup-info/not-backed-up",
           "/cluster/config/qdevice", "/nodes", "/nodes/pve1/subscription", "/nodes/pve1/qemu",
           "/nodes/pve1/qemu/100/config", "/nodes/pve1/lxc", "/nodes/pve1/lxc/101/config",
           "/nodes/pve1/replication", "/nodes/pve1/replication/100-0/status", "/nodes/pve1/dns",
           "/nodes/pve1/qemu/100/status/current", "/nodes/pve1/lxc/101/status/current",
           "/nodes/pve1/status", "/nodes/pve1/rrddata?timeframe=hour&cf=AVERAGE", "/nodes/pve1/time",
           "/nodes/pve1/version", "/nodes/pve1/certificates/info", "/nodes/pve1/storage",
           "/nodes/pve1/disks/list", "/nodes/pve1/disks/smart?disk=/dev/sda", "/nodes/pve1/hardware/pci",
           "/access/users", "/access/permissions"]


def pveum(node, *args):
    res = pveum_call(node, *args)
    assert res.rc == 0, res.err


def site(tmp_path, pve: int):
    node = make_node(tmp_path / f"pve{pve}", pve=pve, cluster="prod", all_online=True)
    node.set(guests=GUESTS, replication=REPLICATION,
             storages=[{"storage": "local", "node": "pve1"}, {"storage": "nfs", "node": "pve1", "shared": 1}])
    pveum(node, "role", "add", "monitoring", "--privs", "Datastore.Audit,SDN.Audit,Sys.Audit,VM.Audit")
    for user, paths in (("mon@pve", ["/"]), ("part@pve", ["/vms/100", "/storage"])):
        pveum(node, "user", "add", user)
        pveum(node, "user", "token", "add", user, "tok", "--privsep", "0")
        for path in paths:
            pveum(node, "acl", "modify", path, "--roles", "monitoring", "--users", user)
    return node


@pytest.fixture(params=[9, 8], ids=["pve9", "pve8"])
def node(request, tmp_path):
    return site(tmp_path, request.param)


def call(node, who: str, path: str, local: str = "pve1"):
    """(status, data or error message) of GET path as `who`, answered by node `local`."""
    rel, _, query = path.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&") if p)
    major = int(node.settings()["pve_version"].split(".")[0])
    cfg = read_user_config(node.state.user_cfg, for_major(major), sys.stderr.write)
    try:
        return 200, dispatch("GET", rel, Request(node.state, who, cfg, params, local))
    except ApiError as err:
        return err.status, err.message


def major(node) -> int:
    return int(node.settings()["pve_version"].split(".")[0])


def test_the_monitoring_role_reads_every_monitoring_endpoint(node):
    for path in ALLOWED:
        status, data = call(node, MON, path)
        assert status == 200, (path, data)


@pytest.mark.parametrize("path, pve8, pve9", [
    ("/nodes/pve1/hardware/usb", "(/, Sys.Modify)", "(/, Sys.Modify)"),
    ("/nodes/pve1/apt/update", "(/nodes/pve1, Sys.Modify)", "(/nodes/pve1, Sys.Modify)"),
    ("/nodes/pve1/qemu/100/agent/get-fsinfo", "(/vms/100, VM.Monitor)",
     "(/vms/100, VM.GuestAgent.Audit|VM.GuestAgent.Unrestricted)"),
])
def test_the_monitoring_role_is_refused_where_upstream_refuses(node, path, pve8, pve9):
    assert call(node, MON, path) == (403, f"Permission check failed {pve9 if major(node) >= 9 else pve8}\n")


def test_types_and_local_as_upstream(node):
    _, status = call(node, MON, "/cluster/status", local="pve2")
    assert status[0] == {"type": "cluster", "id": "cluster", "name": "prod", "nodes": 3, "version": 3, "quorate": 1}
    assert [(e["name"], e["local"], e["online"], e["nodeid"]) for e in status[1:]] == \
        [("pve1", 0, 1, 1), ("pve2", 1, 1, 2), ("pve3", 0, 1, 3)]
    _, vms = call(node, MON, "/cluster/resources?type=vm")
    assert [(v["id"], v["vmid"]) for v in vms] == [("qemu/100", 100), ("lxc/101", 101)]
    assert ("memhost" in vms[0]) == (major(node) >= 9)
    _, lxc = call(node, MON, "/nodes/pve1/lxc/101/config")
    assert ("env" in lxc) == (major(node) < 9)  # PVE 9 hides env without VM.Config.Options
    _, sub = call(node, MON, "/nodes/pve1/subscription")
    assert sub["status"] == "notfound" and "serverid" in sub


def test_lists_are_filtered_without_vm_audit(node):
    assert [g["vmid"] for g in call(node, PART, "/nodes/pve1/qemu")[1]] == [100]
    assert call(node, PART, "/nodes/pve1/lxc") == (200, [])
    _, resources = call(node, PART, "/cluster/resources")
    assert [r["id"] for r in resources if r["type"] in ("qemu", "lxc", "storage")] == \
        ["qemu/100", "storage/pve1/local", "storage/pve1/nfs"]
    nodes = [r for r in resources if r["type"] == "node"]
    assert len(nodes) == 3 and all("maxmem" not in r and "uptime" not in r for r in nodes)  # no Sys.Audit
    assert call(node, PART, "/nodes/pve1/subscription") == (200, {
        "status": "notfound", "message": "There is no subscription key",
        "url": "https://www.proxmox.com/en/proxmox-virtual-environment/pricing"})


def test_checked_endpoints_answer_403_without_the_privilege(node):
    assert call(node, PART, "/nodes/pve1/lxc/101/config") == (403, "Permission check failed (/vms/101, VM.Audit)\n")
    assert call(node, PART, "/nodes/pve1/lxc/101/status/current")[0] == 403
    assert call(node, PART, "/cluster/status") == (403, "Permission check failed (/, Sys.Audit)\n")
    assert call(node, PART, "/cluster/backup-info/not-backed-up")[0] == 403
    assert call(node, PART, "/nodes/pve1/disks/list") == (403, "Permission check failed\n")  # 'or': bare
    assert call(node, PART, "/nodes/pve1/hardware/pci") == (403, "Permission check failed (/, Sys.Audit|Sys.Modify)\n")
    assert call(node, PART, "/nodes/pve1/qemu/100/config")[0] == 200


def test_replication_refuses_on_pve8_and_filters_on_pve9(node):
    result = call(node, PART, "/nodes/pve1/replication")
    if major(node) >= 9:
        assert result[0] == 200 and [j["id"] for j in result[1]] == ["100-0"]
    else:  # the first job (guest 101) is not auditable: the whole list is refused
        assert result == (403, "Permission check failed (/vms/101, VM.Audit)\n")
    assert call(node, PART, "/nodes/pve1/replication/101-0/status")[0] == 403
    assert call(node, PART, "/nodes/pve1/replication/100-0/status")[1]["vmtype"] == "qemu"


def test_the_wire_403_and_a_proxy_answering_as_another_node(tmp_path):
    node = site(tmp_path, 9)
    secret = json.loads(pveum_call(node, "user", "token", "add", "mon@pve", "wire", "--privsep", "0",
                                   "--output-format", "json").out)["value"]
    ctx = ssl.create_default_context(cafile=str(node.ca_pem))
    with node.start_proxy(node="pve2") as proxy:
        conn = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=ctx, timeout=10)
        headers = {"Authorization": f"PVEAPIToken=mon@pve!wire={secret}"}
        conn.request("GET", "/api2/json/nodes/pve1/hardware/usb", headers=headers)
        resp = conn.getresponse()
        assert (resp.status, resp.reason) == (403, "Permission check failed (/, Sys.Modify)")
        assert json.loads(resp.read()) == {"data": None, "message": "Permission check failed (/, Sys.Modify)\n"}
        conn.request("GET", "/api2/json/cluster/status", headers=headers)
        local = [e["name"] for e in json.loads(conn.getresponse().read())["data"] if e.get("local")]
        assert local == ["pve2"]
        sans = [v for _, v in conn.sock.getpeercert()["subjectAltName"]]
        assert "pve2" in sans and "192.0.2.11" in sans  # pve2's own certificate
        conn.close()
