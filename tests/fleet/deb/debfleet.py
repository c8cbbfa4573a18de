"""The fleet ring against the .deb: every host of fleet.Fleet is a booted Debian container
(debroot.Container, systemd as PID 1) in that host's network namespace, reached over its own
sshd. Each cluster's node is the simulator's PVE node (pvesim at /, its pveproxy stand-in on
0.0.0.0:8006) of the major its suite carries (bookworm: PVE 8, trixie: PVE 9); pvemond itself
comes only through the playbook: the signed test repository is bind-mounted read-only and the
pvemond_repo role adds it and runs `apt install`. The monitoring host is a bookworm container
that gets pvemond-client the same way."""
from __future__ import annotations

import concurrent.futures
import subprocess
import time
from pathlib import Path
from typing import Dict, Sequence

import debroot
import fleetbase
from debroot import SUITES, Container
from fleet import MON, REPO, Fleet, Host

REPO_IN = "/srv/pvemond-repo"   # the pvemond_repo role's default repository URL is file: this
PVESIM_IN = "/opt/pvesim-src"
MON_SUITE = "bookworm"
SUITE_OF = {major: suite for suite, major in SUITES.items()}
# Every container, before the playbook: no Debian archive to reach (see fleetbase), a resolver
# that fails at once, its own name resolvable (slow getfqdn otherwise), root's key for Ansible.
PREPARE = """\
rm -f /etc/apt/sources.list /etc/resolv.conf
echo 'nameserver 127.0.0.1' > /etc/resolv.conf
echo "127.0.1.1 $(hostname)" >> /etc/hosts
install -d -m 0700 /root/.ssh
cat > /root/.ssh/authorized_keys
systemctl start ssh
"""
# A node: the simulated PVE node at /, before pvemond is installed. The simulator keeps its call
# log and lock in /var/lib/pvesim: a drop-in opens that path to pvemond's hardened unit.
PVE_NODE = """\
PYTHONPATH={sim} python3 -m pvesim init / --pve {major} --hostname {name} --ip {ip} --ca-bits 2048
mkdir -p /etc/systemd/system/pvemond.service.d
printf '[Service]\\nReadWritePaths=/var/lib/pvesim\\n' \\
    > /etc/systemd/system/pvemond.service.d/pvesim.conf
systemd-run --unit=pvesim-proxy --setenv=PYTHONPATH={sim} \\
    /usr/bin/python3 -m pvesim proxy / --listen 0.0.0.0:8006
python3 -c 'import socket, time
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", 8006), 1).close()
        break
    except OSError:
        time.sleep(0.1)
else:
    raise SystemExit("the pveproxy stand-in does not answer on 127.0.0.1:8006")'
"""


class DebFleet(Fleet):
    """DebFleet(workdir, majors, repo): Fleet's network, keys and controller, with containers as
    hosts; pve_yml and file_sd are paths inside the monitoring host's container."""

    def __init__(self, workdir: Path, majors: Sequence[int], repo: Path, forks: int = 5):
        super().__init__(workdir, majors, forks)
        self.repo = repo
        self.pve_yml = Path("/etc/prometheus/pve.yml")
        self.file_sd = Path("/etc/prometheus/file_sd/pvemond")
        self.containers: Dict[str, Container] = {}

    def suite(self, host: Host) -> str:
        return SUITE_OF[host.major] if host.major else MON_SUITE

    def _start_hosts(self) -> None:
        images = {s: fleetbase.image(s, self.repo) for s in {self.suite(h) for h in self.hosts}}
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(len(self.hosts)) as pool:
            done = [pool.submit(self._boot, h, images[self.suite(h)]) for h in self.hosts]
            for f in done:
                f.result()
        debroot.log(f"fleet: {len(self.hosts)} containers booted and set up in "
                    f"{time.monotonic() - started:.1f} s")

    def _boot(self, host: Host, image: Path) -> None:
        # Not pvemond-ci-<suite>: the system ring's names; the tag keeps two runs apart too.
        c = Container(image, f"pvemond-fleet-{self.tag}-{host.name}", binds=[f"{self.repo}:{REPO_IN}"],
                      log_path=host.dir / "console.log",
                      nspawn_args=[f"--network-namespace-path=/run/netns/{host.ns}", "--resolv-conf=off"])
        self._stack.callback(c.shutdown)
        c.boot()
        self.containers[host.name] = c
        c.sh(PREPARE, input=(self.keys / "controller.pub").read_text())
        if host.major is not None:
            c.put_tree(REPO / "tests" / "pvesim", PVESIM_IN)
            c.sh(PVE_NODE.format(sim=PVESIM_IN, major=host.major, name=host.name, ip=host.ip), timeout=180)

    def inventory(self) -> Dict:
        return {"all": {
            "vars": {"ansible_user": "root",
                     "ansible_ssh_private_key_file": str(self.keys / "controller"),
                     "pvemond_repo_url": f"file:{REPO_IN}",
                     "pvemond_repo_key": str(self.repo / "pvemond-archive-keyring.gpg")},
            "children": {"pvemond_clusters": {"hosts": {n.name: {"ansible_host": n.ip} for n in self.nodes}},
                         "pvemond_monitor": {"hosts": {MON: {"ansible_host": self.mon.ip}}}}}}

    def run_on(self, host: Host, *cmd: str, **kw) -> subprocess.CompletedProcess:
        """`cmd` inside the host's container; env= becomes the command's environment there."""
        env = kw.pop("env", None)
        argv = ["/usr/bin/env", *(f"{k}={v}" for k, v in (env or {}).items()), *cmd]
        return self.containers[host.name].exec(argv, check=False, timeout=60, **kw)

    def read(self, host: Host, path: Path) -> str:
        r = self.run_on(host, "cat", str(path))
        assert r.returncode == 0, f"{host.name}:{path}: {r.stderr}"
        return r.stdout
