"""A simulated fleet for the Ansible collection: one network namespace per host (a node of each
simulated cluster, the monitoring host) with its own sshd, joined by a bridge in a controller
namespace where ansible-playbook runs. Each node host runs the pveproxy stand-in and the pvemond
daemon against its own simulated /etc/pve; pvemond's commands run from the source tree (sshd's
SetEnv gives every session PATH, PYTHONPATH and PVEMOND_CONFIG). Needs root, iproute2, sshd."""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import yaml

from harness import REPO, Daemon, proxy_on, write_config
from pvesim.testing import make_node

SSHD = "/usr/sbin/sshd"
SUBNET = "192.0.2"
CONTROLLER_IP = f"{SUBNET}.1"
MON_IP = f"{SUBNET}.250"
MON = "mon"  # the monitoring host's inventory name, hence the token's name
COMMANDS = {"pvemond-bootstrap": "bootstrap", "pvemond-claim": "claim", "pvemond": "admin"}
RECAP = re.compile(r"^(\S+)\s*: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
PLAYBOOK = REPO / "ansible" / "playbooks" / "site.yml"

# Reads pve.yml and the file_sd targets on the monitoring host and calls each cluster's node
# with its module's token, TLS verified by the CA the claim wrote: {module: HTTP status}. The
# secrets stay inside this process (never on a command line).
TOKENS_ANSWER = """\
import json, ssl, sys, urllib.error, urllib.request, yaml
pve_yml, file_sd = sys.argv[1], sys.argv[2]
answers = {}
for module, m in yaml.safe_load(open(pve_yml)).items():
    target = yaml.safe_load(open(f"{file_sd}/{module}.yml"))[0]["labels"]["__param_target"]
    ctx = ssl.create_default_context(cafile=m["verify_ssl"])
    req = urllib.request.Request(f"https://{target}:8006/api2/json/version", headers={
        "Authorization": f"PVEAPIToken={m['user']}!{m['token_name']}={m['token_value']}"})
    try:
        answers[module] = urllib.request.urlopen(req, context=ctx, timeout=10).status
    except urllib.error.HTTPError as exc:
        answers[module] = exc.code
print(json.dumps(answers))
"""


def ansible_bin() -> Path:
    """The folder holding ansible-playbook (fleet.mk's venv): PVEMOND_ANSIBLE."""
    return Path(os.environ["PVEMOND_ANSIBLE"])


@dataclass
class Host:
    name: str
    ip: str
    ns: str
    dir: Path
    major: Optional[int] = None  # a cluster node's PVE major; None for the monitoring host
    config: Optional[Path] = None  # a node's pvemond.yaml

    @property
    def prefix(self) -> List[str]:
        return ["ip", "netns", "exec", self.ns]


@dataclass
class Run:
    rc: int
    output: str
    seconds: float
    recap: Dict[str, Dict[str, int]] = field(default_factory=dict)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Fleet:
    """Fleet(workdir, majors): one single-node cluster per entry of `majors` (8 or 9) and the
    monitoring host; a context manager that builds and tears down everything."""

    def __init__(self, workdir: Path, majors: Sequence[int], forks: int = 5):
        self.work = workdir
        self.tag = uuid.uuid4().hex[:6]
        self.ctl_ns = f"pvf-{self.tag}-ctl"
        self.ctl = workdir / "controller"  # everything ansible-playbook keeps: grepped for secrets
        self.forks = forks
        self.nodes = [Host(f"c{i}-pve{m}", f"{SUBNET}.{10 + i}", f"pvf-{self.tag}-{i}",
                           workdir / f"c{i}", m) for i, m in enumerate(majors, 1)]
        self.mon = Host(MON, MON_IP, f"pvf-{self.tag}-mon", workdir / MON)
        self.pve_yml = self.mon.dir / "etc" / "prometheus" / "pve.yml"
        self.file_sd = self.mon.dir / "etc" / "prometheus" / "file_sd" / "pvemond"
        self._stack = contextlib.ExitStack()
        self.runs = 0

    @property
    def hosts(self) -> List[Host]:
        return [*self.nodes, self.mon]

    def __enter__(self) -> "Fleet":
        try:
            self._stack.callback(self._remove_namespaces)
            self._network()
            self._keys()
            for host in self.hosts:
                host.dir.mkdir(parents=True, exist_ok=True)
            self._start_hosts()
            self._wait_for_sshd()
            self._controller()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    # -- the network: a bridge in the controller namespace, a veth to each host ----------------
    def _network(self) -> None:
        _ip("netns", "add", self.ctl_ns)
        _ip("-n", self.ctl_ns, "link", "set", "lo", "up")
        _ip("-n", self.ctl_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.ctl_ns, "addr", "add", f"{CONTROLLER_IP}/24", "dev", "br0")
        _ip("-n", self.ctl_ns, "link", "set", "br0", "up")
        for i, host in enumerate(self.hosts):
            _ip("netns", "add", host.ns)
            _ip("-n", host.ns, "link", "set", "lo", "up")
            _ip("link", "add", f"v{i}", "netns", self.ctl_ns, "type", "veth", "peer", "name",
                "eth0", "netns", host.ns)
            _ip("-n", self.ctl_ns, "link", "set", f"v{i}", "master", "br0", "up")
            _ip("-n", host.ns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
            _ip("-n", host.ns, "link", "set", "eth0", "up")

    def _remove_namespaces(self) -> None:
        for ns in [self.ctl_ns, *(h.ns for h in self.hosts)]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    # -- ssh: the controller's key, one host key shared by every sshd ------------------------------
    def _keys(self) -> None:
        self.keys = self.work / "keys"
        self.keys.mkdir(parents=True)
        for name in ("controller", "host"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f",
                            str(self.keys / name)], check=True)
        (self.keys / "authorized_keys").write_text((self.keys / "controller.pub").read_text())

    def _start_hosts(self) -> None:
        """The simulated clusters and every host's sshd (a subclass may start them otherwise)."""
        bin_dir = self._commands()
        for node in self.nodes:
            self._serve(node)
        for host in self.hosts:
            self._sshd(host, bin_dir)

    def _commands(self) -> Path:
        """pvemond's commands from the source tree, on this test's interpreter."""
        bin_dir = self.work / "bin"
        bin_dir.mkdir()
        for command, module in COMMANDS.items():
            script = bin_dir / command
            script.write_text(f'#!/bin/sh\nexec {sys.executable} -m pvemond.cli.{module} "$@"\n')
            script.chmod(0o755)
        return bin_dir

    def _serve(self, node: Host) -> None:
        """The node's simulated cluster, its pveproxy stand-in and the pvemond daemon."""
        sim = make_node(node.dir / "sim", pve=node.major, hostname=node.name, ip=node.ip)
        sim.set(auth_fail_delay=0.0, storages=[{"storage": "local", "node": node.name}],
                guests=[{"vmid": 100, "name": "web", "type": "qemu", "node": node.name}])
        url = self._stack.enter_context(proxy_on(node.prefix, sim.root))
        node.config = write_config(node.dir / "pvemond.yaml", sim, url, node.dir)
        self._stack.enter_context(Daemon(node.config, node.dir / "daemon.log", prefix=node.prefix))

    def _sshd(self, host: Host, bin_dir: Path) -> None:
        env = {"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO)}
        if host.major is not None:
            env["PVEMOND_CONFIG"] = str(host.config)
        config = host.dir / "sshd_config"
        config.write_text("\n".join([
            f"ListenAddress {host.ip}", f"HostKey {self.keys / 'host'}",
            f"PidFile {host.dir / 'sshd.pid'}", f"AuthorizedKeysFile {self.keys / 'authorized_keys'}",
            "StrictModes no", "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "UseDNS no",
            "Subsystem sftp internal-sftp",
            "SetEnv " + " ".join(f"{k}={v}" for k, v in env.items()), ""]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation
        with open(host.dir / "sshd.log", "wb") as log:
            proc = subprocess.Popen([*host.prefix, SSHD, "-D", "-e", "-f", str(config)],
                                    stdout=log, stderr=log, start_new_session=True)
        self._stack.callback(self._stop_sshd, proc)

    @staticmethod
    def _stop_sshd(proc: subprocess.Popen) -> None:
        """The listener and the sessions it forked (they share its process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        proc.wait(timeout=10)

    def _wait_for_sshd(self, timeout: float = 20) -> None:
        probe = ("import socket, sys, time\n"
                 "deadline = time.monotonic() + float(sys.argv[1])\n"
                 "for ip in sys.argv[2:]:\n"
                 "    while True:\n"
                 "        try:\n"
                 "            socket.create_connection((ip, 22), timeout=1).close(); break\n"
                 "        except OSError:\n"
                 "            if time.monotonic() > deadline: sys.exit(f'no sshd on {ip}')\n"
                 "            time.sleep(0.05)\n")
        r = subprocess.run(["ip", "netns", "exec", self.ctl_ns, sys.executable, "-c", probe,
                            str(timeout), *(h.ip for h in self.hosts)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr + "".join((h.dir / "sshd.log").read_text() for h in self.hosts)

    # -- the controller: ansible.cfg, the inventory, the collection ---------------------------------
    def _controller(self) -> None:
        for sub in ("home", "tmp", "facts", "collections/ansible_collections/pvemond"):
            (self.ctl / sub).mkdir(parents=True)
        (self.ctl / "collections/ansible_collections/pvemond/fleet").symlink_to(REPO / "ansible")
        self.control_path = Path(f"/tmp/pvf-{self.tag}")  # short: sockets have a 108-byte limit
        self.control_path.mkdir(mode=0o700)
        self._stack.callback(lambda: subprocess.run(["rm", "-rf", str(self.control_path)]))
        (self.ctl / "ansible.cfg").write_text(f"""\
[defaults]
inventory = {self.ctl / 'inventory.yml'}
collections_path = {self.ctl / 'collections'}
home = {self.ctl / 'home'}
local_tmp = {self.ctl / 'tmp'}
forks = {self.forks}
host_key_checking = False
interpreter_python = /usr/bin/python3
fact_caching = jsonfile
fact_caching_connection = {self.ctl / 'facts'}
log_path = {self.ctl / 'ansible.log'}

[ssh_connection]
ssh_args = -F /dev/null -o ControlMaster=auto -o ControlPersist=120s -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR
control_path_dir = {self.control_path}
pipelining = True
""")
        (self.ctl / "inventory.yml").write_text(yaml.safe_dump(self.inventory(), sort_keys=False))

    def inventory(self) -> Dict:
        def host_vars(host: Host) -> Dict:  # each host keeps its own remote files
            return {"ansible_host": host.ip, "ansible_remote_tmp": str(host.dir / "ansible-tmp"),
                    "ansible_async_dir": str(host.dir / "ansible-async")}
        nodes = {n.name: {**host_vars(n), "pvemond_node_run_dir": str(n.dir / "run")} for n in self.nodes}
        mon = {**host_vars(self.mon), "pvemond_monitor_pve_yml": str(self.pve_yml),
               "pvemond_monitor_file_sd_dir": str(self.file_sd)}
        return {"all": {
            "vars": {"ansible_user": "root",
                     "ansible_ssh_private_key_file": str(self.keys / "controller"),
                     # the ring runs pvemond from the source tree (see _commands), not from apt
                     "pvemond_node_install": "skip", "pvemond_monitor_install": "skip"},
            "children": {"pvemond_clusters": {"hosts": nodes},
                         "pvemond_monitor": {"hosts": {MON: mon}}}}}

    def playbook(self, *extra: str, timeout: float = 600) -> Run:
        """ansible-playbook site.yml -vvv in the controller namespace; its output and recap."""
        env = {"PATH": f"{ansible_bin()}:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "ANSIBLE_CONFIG": str(self.ctl / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
               "HOME": str(self.ctl / "home"), "TMPDIR": str(self.ctl / "tmp")}
        started = time.monotonic()
        r = subprocess.run(["ip", "netns", "exec", self.ctl_ns, str(ansible_bin() / "ansible-playbook"),
                            "-vvv", str(PLAYBOOK), *extra], env=env, cwd=self.ctl,
                           capture_output=True, text=True, timeout=timeout)
        seconds = time.monotonic() - started
        output = r.stdout + r.stderr
        self.runs += 1
        (self.work / f"playbook-{self.runs}.log").write_text(output)  # for the failing test's reader
        recap = {m[1]: dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups()[1:])))
                 for m in RECAP.finditer(output)}
        return Run(r.returncode, output, seconds, recap)

    def controller_files(self) -> Iterator[Path]:
        """Every file the controller side holds: ansible's home, temp files, fact cache, log."""
        for root in (self.ctl, self.control_path):
            for path in root.rglob("*"):
                if path.is_file() and not path.is_symlink():
                    yield path

    def run_on(self, host: Host, *cmd: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([*host.prefix, *cmd], capture_output=True, text=True, timeout=60, **kw)


# -- what the tests check, whatever runs the hosts ------------------------------------------------

def secrets_on_controller(fleet, secrets, *outputs: str) -> list:
    """(where, secret) for every secret found in the playbook outputs or any controller file."""
    found = [(f"output {i}", s) for i, out in enumerate(outputs) for s in secrets if s in out]
    for path in fleet.controller_files():
        data = path.read_bytes()
        found += [(str(path), s) for s in secrets if s.encode() in data]
    return found


def changed_tasks(output: str) -> list:
    """The task headers of the results that reported a change."""
    task, out = None, []
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line
        elif line.startswith("changed: "):
            out.append(f"{task} {line[:120]}")
    return out
