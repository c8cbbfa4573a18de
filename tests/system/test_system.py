"""System ring: the built .deb, installed with apt from the signed repository into booted Debian 12
(PVE 8's base) and Debian 13 (PVE 9's base) containers, run by systemd with its hardening, driven
through a simulated Proxmox VE node, then removed and purged; plus piuparts.

One container per suite walks through the steps in order (TestNode); a failed step fails the
steps after it at once. Secrets printed by pvemond-bootstrap are never shown in a failure.
"""
from __future__ import annotations

import json
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

import debroot
import harness
from debroot import SUITES, Container, SystemRingError

pytestmark = pytest.mark.system

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
REPO_IN = "/srv/pvemond-repo"          # where the repository is bind-mounted (read-only)
PVESIM_IN = "/opt/pvesim-src"          # PYTHONPATH of the simulator inside the container
SOCKET = "/run/pvemond/pvemond.sock"
# Used only when README.md has no "## Install" section yet; keep it equal to that section.
README_FALLBACK = f"""\
install -D -m 0644 {REPO_IN}/pvemond-archive-keyring.gpg /etc/apt/keyrings/pvemond.gpg
echo "deb [signed-by=/etc/apt/keyrings/pvemond.gpg] file:{REPO_IN} ./" > /etc/apt/sources.list.d/pvemond.list
apt update
apt install pvemond
"""
CLIENT_MODULES = {"__init__.py", "cli/__init__.py", "cli/claim.py", "cli/claim_base.py",
                  "cli/claim_check.py", "cli/claim_prom.py", "codes.py", "formats.py",
                  "files.py", "http1.py", "tlspin.py", "names.py", "contract.py", "pveyml.py", "hostfiles.py",
                  "prometheus.py", "records.py", "pve/__init__.py", "pve/api.py"}
# GET one path of the daemon's API over its unix socket: python3 -c API_GET SOCKET PATH.
API_GET = r"""
import http.client, json, socket, sys
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(sys.argv[1])
conn = Unix("localhost")
conn.request("GET", sys.argv[2])
resp = conn.getresponse()
print(json.dumps({"status": resp.status, "body": json.loads(resp.read())}))
"""
TOKEN_ID = "monitoring@pve!monitoring"
# A runtime drop-in that holds the daemon's start back, so a restart has a window to claim in.
SLOW_START = "/run/systemd/system/pvemond.service.d/ring-slow-start.conf"

# What pveum does on a node, at the system-call level (see the test using it).
PERL_PROBE = r"""
use strict;
use warnings;
use Fcntl;
use Socket;
die "probe: not uid 0\n" if $> != 0;
mkdir "/etc/pve/priv/lock" unless -d "/etc/pve/priv/lock";
mkdir "/etc/pve/priv/lock/file-probe" or die "probe: cfs lock mkdir: $!\n";
rmdir "/etc/pve/priv/lock/file-probe" or die "probe: cfs unlock: $!\n";
my $tmp = "/etc/pve/priv/probe.cfg.tmp.$$";
sysopen(my $fh, $tmp, O_WRONLY | O_CREAT | O_EXCL, 0600) or die "probe: write /etc/pve/priv: $!\n";
print $fh "probe\n";
close($fh) or die "probe: close: $!\n";
rename($tmp, "/etc/pve/priv/probe.cfg") or die "probe: rename: $!\n";
unlink("/etc/pve/priv/probe.cfg") or die "probe: unlink: $!\n";
sysopen(my $rb, "/dev/shm/qb-pvemond-probe-data", O_RDWR) or die "probe: /dev/shm ring buffer: $!\n";
close($rb);
socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die "probe: socket: $!\n";
connect($s, pack_sockaddr_un("\0pvemond-probe")) or die "probe: abstract socket (pmxcfs IPC): $!\n";
send($s, "x", 0);
close($s);
socket(my $log, AF_UNIX, SOCK_DGRAM, 0) or die "probe: socket: $!\n";
connect($log, pack_sockaddr_un("/dev/log")) or die "probe: /dev/log: $!\n";
print "probe: all done\n";
"""


def readme_install_lines() -> List[str]:
    """The shell lines of README.md's "## Install" block (the fallback while it has none)."""
    text = (REPO_ROOT / "README.md").read_text()
    section = re.search(r"^## Install\b(.*?)(?=^## |\Z)", text, re.M | re.S)
    m = section and re.search(r"^```[a-z]*\n(.*?)^```", section.group(1), re.M | re.S)
    block = m.group(1) if m else README_FALLBACK
    if not m:
        print("README.md has no '## Install' section yet: using the fallback text in test_system.py")
    lines = [ln.strip() for ln in block.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def free_port(preferred: int = 8006) -> int:
    """`preferred` if nothing listens there (the container shares this host's network), else
    any free one outside Proxmox VE's own ports (pvemond refuses those as a claim port)."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", preferred))
        return preferred
    except OSError:
        return harness.free_port()
    finally:
        s.close()


def wait_listening(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemRingError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def redacted(text: str) -> str:
    """Text safe to show: PVE token secrets are UUIDs, and none survives this."""
    return re.sub(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
                  "<secret>", text)


class Node:
    """A booted container plus what the steps learn about it."""

    def __init__(self, suite: str, container: Container):
        self.suite, self.c = suite, container
        self.pve = SUITES[suite]
        self.secrets: List[str] = []
        self.port: Optional[int] = None
        self.before: Set[str] = set()

    def sh(self, script: str, **kw):
        return self.c.sh(script, **kw)

    def installed(self) -> Set[str]:
        out = self.sh("dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n'").stdout
        return {ln.split()[0] for ln in out.splitlines() if len(ln.split()) > 1 and ln.split()[1] == "ii"}

    def api(self, path: str) -> Dict:
        out = self.c.exec(["python3", "-c", API_GET, SOCKET, path], timeout=30).stdout
        return json.loads(out)

    def health(self) -> Dict:
        return self.api("/v1/health")

    def show(self, *props: str) -> Dict[str, str]:
        out = self.sh(f"systemctl show -p {','.join(props)} pvemond").stdout
        return dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)

    def bootstrap(self, *args: str) -> Dict:
        proc = self.c.exec(["pvemond-bootstrap", *args], timeout=120, check=False)
        if proc.returncode != 0:
            pytest.fail(f"pvemond-bootstrap {' '.join(args)} exited {proc.returncode}:\n"
                        f"{redacted(proc.stderr)}\n{redacted(proc.stdout)[-2000:]}", pytrace=False)
        return {"stdout": proc.stdout, "stderr": proc.stderr}

    def secret_nowhere(self, secret: str) -> None:
        """The secret is in neither the journal nor pvemond's state (checked inside, via stdin)."""
        found = self.c.exec(["/bin/sh", "-c", "journalctl --no-pager -o cat | grep -cF -f - ; "
                             "grep -rlF -f /dev/stdin /var/lib/pvemond || true"],
                            input=secret + "\n", timeout=60, check=False).stdout.split()
        assert found[:1] == ["0"] and len(found) == 1, \
            "the token secret appears in the journal or in /var/lib/pvemond"

    def wait_state(self, state: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.show("ActiveState")["ActiveState"] != state:
            if time.monotonic() > deadline:
                raise SystemRingError(f"pvemond did not become {state} in {timeout:g} s")
            time.sleep(0.1)

    def slow_start(self, seconds: Optional[int]) -> None:
        """Hold the daemon's start back `seconds` (None: not any more)."""
        if seconds is None:
            self.sh(f"rm -f {SLOW_START} && systemctl daemon-reload")
            return
        self.sh(f"mkdir -p {Path(SLOW_START).parent} && printf '[Service]\\nExecStartPre="
                f"/bin/sleep {seconds}\\n' > {SLOW_START} && systemctl daemon-reload")

    def check_claimed(self, run: "ClaimRun", rc: int, output: Path, since: float) -> None:
        """Bootstrap saw the claim, the daemon recorded the delivery (at or after `since`), and
        the claimed secret is the token's live secret and nowhere it must not be."""
        assert rc == 0, f"pvemond-bootstrap exited {rc} after the claim:\n" \
                        f"{redacted(run.stderr)}\n{redacted(json.dumps(run.events[-1:]))}"
        assert run.events[-1]["event"] == "claimed" and run.events[-1]["peer"] == "127.0.0.1", \
            redacted(json.dumps(run.events[-1]))
        assert output.stat().st_mode & 0o777 == 0o600, oct(output.stat().st_mode)
        payload = json.loads(output.read_text())
        output.unlink()  # no copy of the secret stays on this host
        secret = payload.pop("secret", None)
        payload.pop("token_string", None)
        fresh = bool(secret) and secret not in self.secrets
        assert fresh, "the claim must hand out a new secret"
        self.secrets.append(secret)
        assert payload["token_id"] == TOKEN_ID, payload["token_id"]
        tokens = {t["token_id"]: t for t in self.api("/v1/tokens")["body"]["tokens"]}
        record = tokens.get(TOKEN_ID, {})
        assert record.get("delivered_to") == "claim from 127.0.0.1" \
            and (record.get("delivered_at") or 0) >= since, record
        live = self.c.exec(["grep", "-cxF", "-f", "-", "/etc/pve/priv/token.cfg"], check=False,
                           input=f"{TOKEN_ID} {secret}\n", timeout=30).stdout.strip()
        assert live == "1", "the claimed secret is not the token's in /etc/pve/priv/token.cfg"
        self.secret_nowhere(secret)


class ClaimRun:
    """`pvemond-bootstrap --json` in claim mode inside the container, listening on 127.0.0.1 (the
    container shares this host's network, so a claim from this host comes from outside it)."""

    def __init__(self, node: Node, ttl: int = 120):
        self.node = node
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.events: List[Dict] = []
        self.stderr = ""
        # The shell prints its PID, then becomes bootstrap: the handle to stop it from here.
        self.proc = node.c.popen(["/bin/sh", "-c", 'echo $$; exec pvemond-bootstrap "$@"', "sh",
                                  "--json", "--rotate", "--listen", "127.0.0.1", "--port",
                                  str(free_port(8116)), "--ttl", str(ttl)])
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.pid = int(self._next(30))

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _next(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=max(timeout, 0.1))
        except queue.Empty:
            raise SystemRingError(f"pvemond-bootstrap said nothing for {timeout:g} s") from None
        if line is None:
            self.finish()
            raise SystemRingError(f"pvemond-bootstrap ended (exit {self.proc.returncode}):\n"
                                  f"{redacted(self.stderr)}\n{redacted(json.dumps(self.events))}")
        return line

    def wait_for(self, event: str, timeout: float = 120) -> Dict:
        deadline = time.monotonic() + timeout
        while True:
            self.events.append(json.loads(self._next(deadline - time.monotonic())))
            if self.events[-1]["event"] == event:
                return self.events[-1]

    def finish(self, timeout: float = 30) -> int:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SystemRingError(f"pvemond-bootstrap still runs {timeout:g} s later") from None
        self.reader.join(timeout=10)
        while not self.lines.empty():
            line = self.lines.get()
            if line is not None:
                self.events.append(json.loads(line))
        self.stderr = self.proc.stderr.read()
        return self.proc.returncode

    def __enter__(self) -> "ClaimRun":
        return self

    def __exit__(self, *exc) -> None:
        """SIGTERM: bootstrap cancels the claim and revokes the token, as on Ctrl-C."""
        if self.proc.poll() is None:
            self.node.c.exec(["kill", str(self.pid)], check=False, timeout=30)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class ThreadResult:
    """Run `fn(*args)` in a thread; `result()` returns its value or raises its exception."""

    def __init__(self, fn, *args):
        self._out: "queue.Queue" = queue.Queue()
        threading.Thread(target=lambda: self._out.put(self._call(fn, args)), daemon=True).start()

    @staticmethod
    def _call(fn, args):
        try:
            return (fn(*args), None)
        except BaseException as exc:  # handed to result(), in the test's thread
            return (None, exc)

    def result(self, timeout: float):
        value, exc = self._out.get(timeout=timeout)
        if exc is not None:
            raise exc
        return value


def claim_from_host(offer: Dict, workdir: Path) -> Path:
    """pvemond-claim from this repository's source on this host, outside the container; the
    json config (with the secret) lands in `workdir`, whose path it returns."""
    output = workdir / "pve.json"
    proc = debroot.run([sys.executable, "-m", "pvemond.cli.claim", f"127.0.0.1:{offer['port']}",
                        offer["code"], "--pin", offer["pin"], "--format", "json", "-o", str(output)],
                       env=dict(debroot.CLEAN_ENV, PYTHONPATH=str(REPO_ROOT)), timeout=60,
                       check=False)
    assert proc.returncode == 0, \
        f"pvemond-claim exited {proc.returncode}:\n{redacted(proc.stderr)}{redacted(proc.stdout)}"
    return output


@pytest.fixture(scope="class")
def node(request, suite: str, repo: Path):
    base = debroot.base(suite)
    name = f"pvemond-ci-{suite}"
    log = REPO_ROOT / "build" / "system" / f"{suite}.console"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with Container(base, name, binds=[f"{repo}:{REPO_IN}"], log_path=log) as c:
        debroot.log(f"{suite}: booted in {time.monotonic() - started:.1f} s")
        yield Node(suite, c)
    debroot.log(f"{suite}: container done in {time.monotonic() - started:.1f} s")


@pytest.mark.incremental
@pytest.mark.parametrize("suite", list(SUITES), scope="class")
class TestNode:
    def test_boots_under_systemd(self, node: Node):
        assert node.sh("systemctl is-system-running").stdout.strip() in ("running", "degraded")
        assert node.sh("stat -c %a /").stdout.strip() == "755"
        release = node.sh(". /etc/os-release && echo $VERSION_CODENAME").stdout.strip()
        assert release == node.suite
        node.before = node.installed()
        assert not {p for p in node.before if p.startswith("pvemond")}

    def test_apt_source_as_the_readme_says(self, node: Node):
        for line in readme_install_lines():
            if re.match(r"^(sudo\s+)?apt(-get)?\s", line):
                continue  # apt update / apt install: done below with -y, as a script must
            node.sh(line)
        update = node.sh("apt-get update 2>&1")
        assert f"file:{REPO_IN} ./ InRelease" in update.stdout, update.stdout
        problems = [ln for ln in update.stdout.splitlines() if re.match(r"^(W|E|Err):", ln)]
        assert not problems, f"apt-get update complained: {problems}"
        policy = node.sh("apt-cache policy pvemond pvemond-client").stdout
        assert policy.count(f"file:{REPO_IN} ./ Packages") == 2, policy

    def test_client_alone_needs_only_python3(self, node: Node):
        sim = node.sh("apt-get install -s pvemond-client").stdout
        assert re.findall(r"^Inst (\S+)", sim, re.M) == ["pvemond-client"], sim
        node.sh("apt-get install -y pvemond-client")
        files = node.sh("dpkg -L pvemond-client").stdout.split()
        prefix = "/usr/lib/python3/dist-packages/pvemond/"
        assert {f[len(prefix):] for f in files if f.startswith(prefix) and f.endswith(".py")} \
            == CLIENT_MODULES
        out = node.sh("pvemond-claim --help").stdout
        assert "claim code" in out

    def test_install_pulls_only_debian_and_ours(self, node: Node):
        sim = node.sh("apt-get install -s pvemond").stdout
        inst = re.findall(r"^Inst (\S+) .*?\((\S+) (\S+?)(?::| )", sim, re.M)
        assert inst and ("pvemond" in [p for p, _, _ in inst]), sim
        ours = {p for p, _, origin in inst if origin.startswith("pvemond")}
        foreign = {(p, origin) for p, _, origin in inst
                   if not origin.startswith("pvemond") and not origin.startswith("Debian")}
        assert ours == {"pvemond"} and not foreign, sim
        install = node.sh("apt-get install -y pvemond 2>&1", timeout=300)
        assert "Setting up pvemond " in install.stdout
        new = node.installed() - node.before
        assert new == {p for p, _, _ in inst} | {"pvemond-client"}, sorted(new)
        # apt-cache policy: every new package's installed version comes from Debian or from us.
        mirror = debroot.host_mirror()
        for pkg in sorted(new):
            pol = node.sh(f"apt-cache policy {pkg}").stdout
            m = re.search(r"\*\*\* \S+ \d+\n((?:\s+\d+ .*\n)+)", pol + "\n")
            assert m, pol
            sources = [s.split()[1] for s in m.group(1).splitlines() if "/var/lib/dpkg/status" not in s]
            assert sources and all(s in (mirror, f"file:{REPO_IN}") for s in sources), (pkg, pol)

    def test_service_runs_hardened(self, node: Node):
        assert node.sh("systemctl is-active pvemond").stdout.strip() == "active"
        assert node.sh("systemctl is-enabled pvemond").stdout.strip() == "enabled"
        props = node.show("Type", "ProtectSystem", "ProtectHome", "PrivateTmp", "NoNewPrivileges",
                          "PrivateDevices",
                          "CapabilityBoundingSet", "RestrictAddressFamilies", "ReadWritePaths",
                          "UMask", "MainPID", "User", "IPAddressDeny", "IPAddressAllow")
        assert props["Type"] == "notify"
        assert props["ProtectSystem"] == "strict" and props["ProtectHome"] == "yes"
        assert props["PrivateTmp"] == props["NoNewPrivileges"] == props["PrivateDevices"] == "yes"
        assert props["CapabilityBoundingSet"] == "" and props["UMask"] == "0077"
        assert props["User"] in ("", "root")
        assert set(props["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
        assert props["IPAddressDeny"] in ("0.0.0.0/0 ::/0", "::/0 0.0.0.0/0"), props
        assert "127.0.0.0/8" in props["IPAddressAllow"] and "::1/128" in props["IPAddressAllow"], props
        status = node.sh(f"cat /proc/{props['MainPID']}/status").stdout
        fields = dict(re.findall(r"^(\w+):\s*(.*)$", status, re.M))
        assert fields["CapEff"] == fields["CapBnd"] == "0000000000000000", fields
        assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2", fields
        modes = node.sh(f"stat -c '%a %U %F' {SOCKET} /run/pvemond /var/lib/pvemond "
                        "/var/cache/pvemond").stdout.splitlines()
        assert modes == ["600 root socket"] + ["700 root directory"] * 3, modes
        journal = node.sh("journalctl -u pvemond --no-pager -o cat").stdout
        assert f"Listening at: unix:{SOCKET}" in journal, journal[-2000:]
        # The unit as installed verifies clean on this suite's own systemd too.
        unit = node.sh("systemctl show -p FragmentPath --value pvemond").stdout.strip()
        verify = node.sh(f"systemd-analyze verify --man=no {unit} 2>&1", check=False)
        assert verify.returncode == 0 and not verify.stdout.strip(), verify.stdout
        security = node.sh("systemd-analyze security --threshold=50 pvemond 2>&1", check=False)
        assert security.returncode == 0, security.stdout[-3000:]
        debroot.log(f"{node.suite}: {security.stdout.strip().splitlines()[-1]}")

    def test_not_a_pve_node_before_the_simulator(self, node: Node):
        health = node.health()
        assert health["status"] == 200, health
        assert health["body"]["pve_node"] is False, health
        assert "not a Proxmox VE node" in health["body"]["problem"], health
        proc = node.c.exec(["pvemond-bootstrap"], check=False, timeout=60)
        assert proc.returncode == 1 and "not a Proxmox VE node" in proc.stderr, \
            (proc.returncode, redacted(proc.stderr))

    def test_simulated_pve_node(self, node: Node):
        node.c.put_tree(REPO_ROOT / "tests" / "pvesim", PVESIM_IN)
        out = node.sh(f"PYTHONPATH={PVESIM_IN} python3 -m pvesim init / --pve {node.pve} "
                      "--ca-bits 2048", timeout=120).stdout
        assert f"pve-manager {node.pve}." in out, out
        # The simulator keeps its call log and lock in /var/lib/pvesim (a real pveum keeps its
        # lock in /etc/pve/priv/lock): an admin-style drop-in opens that path, nothing else.
        node.sh("mkdir -p /etc/systemd/system/pvemond.service.d && printf '[Service]\\n"
                "ReadWritePaths=/var/lib/pvesim\\n' > /etc/systemd/system/pvemond.service.d/pvesim.conf")
        node.port = free_port(8006)
        if node.port != 8006:
            debroot.log(f"{node.suite}: 127.0.0.1:8006 is taken on this host; the proxy uses {node.port}")
            node.sh(f"sed -i 's|pveproxy_url: https://127.0.0.1:8006|pveproxy_url: "
                    f"https://127.0.0.1:{node.port}|' /etc/pvemond/pvemond.yaml")
        node.sh(f"systemd-run --unit=pvesim-proxy --setenv=PYTHONPATH={PVESIM_IN} /usr/bin/python3 "
                f"-m pvesim proxy / --listen 127.0.0.1:{node.port}")
        wait_listening(node.port)
        node.sh("systemctl daemon-reload && systemctl restart pvemond")
        health = node.health()["body"]
        assert health["pve_node"] is True and health["problem"] is None, health
        assert health["pve_version"].startswith(f"{node.pve}."), health

    def test_perl_does_what_pveum_does_under_the_same_hardening(self, node: Node):
        """pveum is Perl; the simulator is Python. Run Perl under the installed unit's own
        settings doing at the system-call level what pveum does on a node: cfs lock by mkdir in
        /etc/pve/priv/lock, a tmp-file-and-rename write under /etc/pve/priv, a libqb ring buffer
        in /dev/shm opened read-write, an abstract unix socket to a server outside the unit
        (pmxcfs's IPC), syslog. It cannot prove the real pmxcfs/libqb, but it fails if the
        sandbox blocks any of those paths."""
        node.c.exec(["/bin/sh", "-c", "cat > /usr/local/lib/pvemond-probe.pl"], input=PERL_PROBE)
        node.sh("touch /dev/shm/qb-pvemond-probe-data && chmod 0600 /dev/shm/qb-pvemond-probe-data")
        node.sh("systemd-run --unit=probe-ipc /usr/bin/python3 -c 'import socket; "
                "s = socket.socket(socket.AF_UNIX); s.bind(\"\\0pvemond-probe\"); s.listen(); "
                "s.accept()[0].recv(1)'")
        unit = node.sh("systemctl show -p FragmentPath --value pvemond").stdout.strip()
        node.sh(f"sed -e 's|^ExecStart=.*|ExecStart=/usr/bin/perl /usr/local/lib/pvemond-probe.pl|' "
                "-e 's|^Type=notify|Type=oneshot|' -e '/^Restart/d' -e '/^NotifyAccess/d' "
                "-e '/^RuntimeDirectory/d' -e '/^StateDirectory/d' -e '/^\\[Install\\]/,$d' "
                f"{unit} > /etc/systemd/system/pvemond-probe.service && systemctl daemon-reload")
        run = node.sh("systemctl start pvemond-probe; journalctl -u pvemond-probe -o cat --no-pager",
                      check=False, timeout=60)
        assert "probe: all done" in run.stdout, run.stdout + run.stderr
        # The probe can fail: without the host's network namespace the abstract socket is gone.
        node.sh("mkdir -p /etc/systemd/system/pvemond-probe.service.d && printf '[Service]\\n"
                "PrivateNetwork=yes\\n' > /etc/systemd/system/pvemond-probe.service.d/control.conf "
                "&& systemctl daemon-reload")
        run = node.sh("systemctl start pvemond-probe || true; journalctl -u pvemond-probe -o cat "
                      "--no-pager", check=False, timeout=60)
        assert "probe: abstract socket (pmxcfs IPC)" in run.stdout, run.stdout

    def test_bootstrap_creates_and_verifies_the_token(self, node: Node):
        out = node.bootstrap("--format", "json")
        payload = json.loads(out["stdout"])
        # Take the secret out before any assert: pytest prints the values it compares.
        secret = payload.pop("secret", None)
        well_formed = bool(secret) and payload.pop("token_string", None) == \
            f"{payload.get('token_id')}={secret}"
        assert well_formed, "no secret in the payload, or token_string is not TOKENID=SECRET"
        node.secrets.append(secret)
        assert payload["token_id"] == "monitoring@pve!monitoring" and payload["privsep"] == 0
        assert {"Datastore.Audit", "SDN.Audit", "Sys.Audit", "VM.Audit"} <= set(payload["privileges"])
        assert payload["ca_pem"].startswith("-----BEGIN CERTIFICATE-----")
        cfg = node.sh("cat /etc/pve/user.cfg").stdout.splitlines()
        assert any(ln.startswith("user:monitoring@pve:1:") for ln in cfg), cfg
        role = next(ln for ln in cfg if ln.startswith("role:monitoring:"))
        assert set(role.split(":")[2].split(",")) == {"Datastore.Audit", "SDN.Audit", "Sys.Audit",
                                                      "VM.Audit"}, role
        acl = next(ln for ln in cfg if ln.startswith("acl:1:/:"))
        assert "monitoring@pve" in acl and ":monitoring:" in acl, acl
        assert any(ln.startswith("token:monitoring@pve!monitoring:") for ln in cfg), cfg
        node.secret_nowhere(secret)

    def test_survives_restart_and_converges(self, node: Node):
        cached = "find /var/cache/pvemond -type f -printf '%P %T@\\n' | sort"
        before = node.sh(cached).stdout
        node.sh("systemctl restart pvemond")
        assert node.sh("systemctl is-active pvemond").stdout.strip() == "active"
        kept = node.bootstrap("--json", "--format", "json")
        # The daemon's -OO bytecode was kept under ProtectSystem=strict, and a start on it
        # compiles nothing anew (pvemond.daemon.warm_bytecode says why that matters).
        assert re.search(r"/flask/__init__\.cpython-\d+\.opt-2\.pyc ", before), before
        assert node.sh(cached).stdout == before
        events = [json.loads(ln) for ln in kept["stdout"].splitlines() if ln.startswith("{")]
        assert [e["event"] for e in events][-1] == "kept" and events[-1]["delivered_to"] == "stdout", \
            [e["event"] for e in events]
        out = node.bootstrap("--json", "--rotate", "--format", "json")
        events = [json.loads(ln) for ln in out["stdout"].splitlines() if ln.startswith("{")]
        steps = [e for e in events if e.get("event") == "step"]
        assert steps and all(s["change"] == "ok" for s in steps if s["part"] != "token"), \
            [(s["part"], s["change"]) for s in steps]
        delivered = [e for e in events if e.get("event") == "delivered"]
        secret = json.loads(delivered[0]["output"]).get("secret") if delivered else None
        del events, delivered, out  # they hold the secret; nothing below may print them
        fresh = bool(secret) and secret not in node.secrets
        assert fresh, "the second run must hand out a new secret"
        node.secrets.append(secret)
        node.secret_nowhere(secret)

    def test_claim_from_outside_the_container(self, node: Node, tmp_path: Path):
        with ClaimRun(node) as run:
            offer = run.wait_for("claim_open")
            since = time.time()
            output = claim_from_host(offer, tmp_path)
            rc = run.finish()
        node.check_claimed(run, rc, output, since)

    def test_claim_survives_a_restart_in_the_middle(self, node: Node, tmp_path: Path):
        """`systemctl restart pvemond` after the code is shown and before it is redeemed. The
        restart's start is held back 8 s, so the claim arrives while the daemon is down: the
        secret stays in the listener (503, the client retries) until the restarted daemon has
        recorded the delivery."""
        node.slow_start(8)
        try:
            with ClaimRun(node) as run:
                offer = run.wait_for("claim_open")
                before = node.show("MainPID")["MainPID"]
                node.sh("systemctl restart --no-block pvemond")
                node.wait_state("activating")
                since = time.time()
                claim = ThreadResult(claim_from_host, offer, tmp_path)
                time.sleep(3)
                during = (node.show("ActiveState")["ActiveState"], run.proc.poll(),
                          (tmp_path / "pve.json").exists())
                output = claim.result(timeout=90)
                rc = run.finish()
        finally:
            node.slow_start(None)
        assert during == ("activating", None, False), \
            f"3 s after the claim (daemon state, bootstrap exit, secret delivered) were {during}: " \
            "the secret must wait in the listener while the daemon is still starting"
        node.check_claimed(run, rc, output, since)
        after = node.show("ActiveState", "MainPID")
        assert after["ActiveState"] == "active" and after["MainPID"] not in (before, "0"), \
            (before, after)

    def test_claim_with_the_packaged_client_on_this_suites_python(self, node: Node, tmp_path: Path):
        """The monitoring host's side on the suite's own python3 (Debian 13: 3.13, strict TLS):
        the installed pvemond-claim, with only pvemond-client's modules, redeems the claim."""
        with ClaimRun(node) as run:
            offer = run.wait_for("claim_open")
            since = time.time()
            claim = node.c.exec(["pvemond-claim", f"127.0.0.1:{offer['port']}", offer["code"],
                                 "--pin", offer["pin"], "--format", "json", "-o", "/root/pve.json"],
                                check=False, timeout=60)
            rc = run.finish()
        assert claim.returncode == 0, redacted(claim.stderr)
        assert node.sh("stat -c %a /root/pve.json").stdout.strip() == "600"
        output = tmp_path / "pve.json"
        output.touch(mode=0o600)
        output.write_text(node.sh("cat /root/pve.json").stdout)
        node.sh("rm /root/pve.json")  # the one copy inside; check_claimed greps for others
        node.check_claimed(run, rc, output, since)

    def test_admin_command_under_the_hardened_unit(self, node: Node):
        """pvemond doctor runs its checks inside the unit's sandbox: a probe token over HTTPS to
        127.0.0.1, the served certificate, a bind on the claim port. Then uninstall, the way the
        purge message recommends."""
        def admin(*args: str):
            return node.c.exec(["pvemond", *args], timeout=120, check=False)
        doctor = admin("--json", "doctor")
        report = json.loads(doctor.stdout or "{}")
        bad = [(c["id"], c["status"], c["what"]) for c in report.get("checks", ())
               if c["status"] != "pass"]
        assert doctor.returncode == 0 and report["result"] == "pass", \
            (doctor.returncode, bad, redacted(doctor.stderr))
        assert node.sh("test -f /usr/share/bash-completion/completions/pvemond", check=False).returncode == 0
        tokens = json.loads(admin("--json", "tokens").stdout)["tokens"]
        assert [t["delivered_to"] for t in tokens] == ["claim from 127.0.0.1"], tokens
        gone = admin("uninstall", "--yes")
        assert gone.returncode == 0 and "user monitoring@pve (and its ACLs): did remove" in gone.stdout, \
            redacted(gone.stdout + gone.stderr)
        cfg = node.sh("cat /etc/pve/user.cfg").stdout
        assert "monitoring@pve" not in cfg and "role:monitoring:" not in cfg, cfg

    def test_remove_keeps_the_configuration(self, node: Node):
        node.sh("apt-get remove -y pvemond", timeout=120)
        status = node.sh("dpkg-query -W -f='${db:Status-Abbrev}' pvemond").stdout.strip()
        assert status == "rc", status
        assert node.sh("test -f /etc/pvemond/pvemond.yaml", check=False).returncode == 0
        assert node.sh("test -e /var/cache/pvemond", check=False).returncode != 0
        assert node.sh("systemctl is-active pvemond", check=False).stdout.strip() != "active"
        assert node.sh("test -e /lib/systemd/system/pvemond.service || "
                       "test -e /usr/lib/systemd/system/pvemond.service", check=False).returncode != 0

    def test_purge_leaves_nothing(self, node: Node):
        purge = node.sh("apt-get purge -y pvemond 2>&1", timeout=120).stdout
        assert "left in place" in purge and "pveum user delete monitoring@pve" in purge, purge
        gone = ["/etc/pvemond", "/var/lib/pvemond", "/var/cache/pvemond", "/run/pvemond",
                "/usr/bin/pvemond-bootstrap",
                "/lib/systemd/system/pvemond.service", "/usr/lib/systemd/system/pvemond.service",
                "/etc/systemd/system/multi-user.target.wants/pvemond.service",
                "/var/lib/systemd/deb-systemd-helper-enabled/pvemond.service.dsh-also",
                "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/pvemond.service"]
        left = node.sh("for p in " + " ".join(gone) + "; do [ ! -e $p ] || echo $p; done").stdout
        assert not left.strip(), f"left behind after purge: {left.split()}"
        # What stays in dist-packages/pvemond now is exactly pvemond-client's share.
        site = "/usr/lib/python3/dist-packages/pvemond"
        rest = node.sh(f"cd {site} && find . -name '*.py' | sed 's|^./||'").stdout.split()
        assert set(rest) == CLIENT_MODULES, sorted(rest)
        node.sh("apt-get purge -y pvemond-client", timeout=120)
        left = node.sh(f"for p in {site} /usr/bin/pvemond-claim; do [ ! -e $p ] || echo $p; done; "
                       "dpkg -l 'pvemond*' 2>/dev/null | grep -E '^(ii|rc)' || true").stdout
        assert not left.strip(), f"left behind after purging pvemond-client: {left}"


@pytest.mark.parametrize("suite", list(SUITES))
def test_piuparts(suite: str, repo: Path):
    """piuparts: install, remove, purge in a fresh chroot; no leftovers, no errors."""
    mirror = debroot.host_mirror()
    debs = [str(p) for p in sorted(repo.glob("*.deb"))]
    cache = debroot.CACHE / f"piuparts-{suite}.tgz"
    args = ["piuparts", "--distribution", suite, "--mirror", f"{mirror} main"]
    if suite != "bookworm":
        # bookworm's piuparts leaves this debconf temp dir in a trixie chroot (debian.md).
        args += ["-i", "/var/cache/debconf/tmp.ci/"]
    with debroot._locked(debroot.CACHE / f"piuparts-{suite}.lock"):
        if cache.exists():
            ok = debroot.run(["tar", "-tzf", str(cache)], timeout=120, check=False).returncode == 0
            if not ok:
                debroot.log(f"piuparts {suite}: cached base {cache} is broken, rebuilding")
                cache.unlink()
        args += ["--basetgz", str(cache)] if cache.exists() else ["--save", str(cache)]
        started = time.monotonic()
        proc = debroot.run(args + debs, timeout=600, check=False)
    debroot.log(f"piuparts {suite}: {time.monotonic() - started:.0f} s, exit {proc.returncode}")
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, f"piuparts on {suite} failed:\n{tail}"
    assert "PASS: All tests." in proc.stdout + proc.stderr, tail
