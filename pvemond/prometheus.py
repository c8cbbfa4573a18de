"""Prometheus for a claimed pve-exporter token, with no hand edit: a file_sd target file per
cluster, one scrape job reading those files appended to prometheus.yml, a reload, and a look at
the targets through Prometheus's HTTP API.

Stdlib only (the monitoring host may have no YAML library): the target file is JSON, which YAML
reads as it is, and the job is appended as text, so every byte of the admin's prometheus.yml
stays as it was.
"""
from __future__ import annotations

import json
import os
import re
import time

from pvemond.records import record

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays unloaded: pvemond/records.py says why
    from typing import Any, Dict, List, Optional

JOB_NAME = "pvemond-pve"
FILE_SD_DIR = "/etc/prometheus/file_sd/pvemond"  # Debian's prometheus reads /etc/prometheus
EXPORTER = "127.0.0.1:9221"                     # prometheus-pve-exporter's default
PROMETHEUS_URL = "http://127.0.0.1:9090"
HEADER = "# written by pvemond-claim"


class PrometheusError(Exception):
    """What cannot be done, with the cause and the fix in one sentence."""


# ---------------------------------------------------------------------------------------------
# The file_sd target file

def target_groups(payload: Dict[str, Any], module: str, exporter: str = EXPORTER) -> List[Dict]:
    """One group per node: the exporter scraped with ?target=<node>&module=<module>, labelled
    by node so the nodes' series do not collide. The target is the node's address, the host of
    its URL: a name its certificate covers, else its IP."""
    cluster = payload.get("cluster") or payload["node"]
    return [{"targets": [exporter],
             "labels": {"__param_target": node["address"], "__param_module": module,
                        "cluster": cluster, "instance": node["name"]}}
            for node in payload["nodes"]]


def file_sd_text(groups: List[Dict]) -> str:
    """JSON with a comment line on top: valid YAML, so the file may end in .yml."""
    return f"{HEADER}: Prometheus file_sd targets of job {JOB_NAME}\n" + \
        json.dumps(groups, indent=2, sort_keys=True) + "\n"


def file_sd_path(directory: str, module: str) -> str:
    return os.path.join(directory, f"{module}.yml")


def check_exporter(text: str) -> str:
    """HOST:PORT of the exporter (IPv6 in brackets)."""
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})", text)
    if not m or not 1 <= int(m.group(2)) <= 65535:
        raise PrometheusError(f"--exporter {text!r} is not HOST:PORT (e.g. {EXPORTER})")
    return text


# ---------------------------------------------------------------------------------------------
# The scrape job, appended to prometheus.yml

def _glob(directory: str) -> str:
    return os.path.join(directory, "*.yml")


def job_stanza(directory: str, indent: str = "  ", newline: str = "\n") -> str:
    """The scrape_configs item reading the file_sd files (params: the exporter's cluster and
    node collectors, as its documentation scrapes them)."""
    inner = indent + "  "
    lines = [f"{indent}# added by pvemond-claim: the Proxmox VE clusters in {directory}",
             f"{indent}- job_name: {JOB_NAME}",
             f"{inner}metrics_path: /pve",
             f"{inner}params:",
             f"{inner}  cluster: ['1']",
             f"{inner}  node: ['1']",
             f"{inner}file_sd_configs:",
             f"{inner}  - files:",
             f"{inner}      - {json.dumps(_glob(directory))}"]
    return newline.join(lines) + newline


# compiled (and cached by re) on first use: only --prometheus-config reads prometheus.yml
_TOP_KEY = r"""(?:"([^"]*)"|'([^']*)'|([A-Za-z_][\w.-]*))[ \t]*:(?=[ \t]|$)(.*)$"""


@record
class _Line:
    start: int  # byte offset in the text
    text: str   # without its line break


def _lines(text: str) -> List[_Line]:
    out, pos = [], 0
    for raw in text.splitlines(keepends=True):
        out.append(_Line(pos, raw.rstrip("\r\n")))
        pos += len(raw)
    return out


def _content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def reads_files(config_text: str, directory: str) -> bool:
    """A job already reads the file_sd files (the glob, quoted or not, on a live line)."""
    glob = _glob(directory)
    return any(glob in ln.split(" #")[0] and not ln.lstrip().startswith("#")
               for ln in config_text.splitlines())


def add_job(config_text: str, directory: str) -> Optional[str]:
    """The config with the job appended to scrape_configs, every other byte unchanged; None when
    a job already reads the files. PrometheusError for a file this cannot edit safely."""
    if reads_files(config_text, directory):
        return None
    newline = "\r\n" if "\r\n" in config_text else "\n"
    lines = _lines(config_text)
    _refuse_unusual(lines)
    if re.search(rf"^\s*-?\s*job_name:\s*['\"]?{re.escape(JOB_NAME)}['\"]?\s*(#.*)?$",
                 config_text, re.M):
        raise PrometheusError(f"the job {JOB_NAME} is already in the config but does not read "
                              f"{_glob(directory)}: add that path to its file_sd_configs, or "
                              "pass the --file-sd directory it reads")
    found = [(i, m) for i, m in ((i, re.fullmatch(_TOP_KEY, ln.text)) for i, ln in enumerate(lines))
             if m and "scrape_configs" in (m.group(1), m.group(2), m.group(3))]
    if len(found) > 1:
        raise PrometheusError("the config has scrape_configs twice; fix that first")
    body = config_text if not config_text or config_text.endswith(("\n", "\r")) \
        else config_text + newline
    if not found:
        return body + "scrape_configs:" + newline + job_stanza(directory, newline=newline)
    index, match = found[0]
    value = match.group(4).split(" #")[0].strip()
    if value == "[]":  # the only line rewritten: a flow list cannot take a block item
        line = lines[index]
        rest = config_text[line.start + len(line.text):]
        brk = _break(rest, newline)
        return (config_text[:line.start] + "scrape_configs:" + (brk or newline) +
                job_stanza(directory, newline=newline) + rest[len(brk):])
    if value:
        raise PrometheusError(f"scrape_configs is written as {value[:40]!r} on one line (a flow "
                              "list, an anchor or an alias): pvemond-claim only appends to a block "
                              "list; add the job by hand (pvemond-claim prints it without "
                              "--prometheus-config)")
    return _insert_into_block(config_text, lines, index, directory, newline)


def _refuse_unusual(lines: List[_Line]) -> None:
    for ln in lines:
        if "\t" in ln.text[:len(ln.text) - len(ln.text.lstrip())]:
            raise PrometheusError("the config indents with tabs, which YAML forbids; fix that first")
    content = [ln.text for ln in lines if _content(ln.text)]
    if content and content[0].lstrip().startswith(("{", "[")):
        raise PrometheusError("the config is one YAML flow mapping ({...}); pvemond-claim appends "
                              "to block-style YAML only: add the job by hand")
    if sum(1 for t in content if t.startswith("---")) > (1 if content and
                                                        content[0].startswith("---") else 0):
        raise PrometheusError("the config holds several YAML documents; Prometheus reads one: "
                              "fix that first")


def _break(rest: str, newline: str) -> str:
    """The line break `rest` starts with ("" at the end of a file without one)."""
    return newline if rest.startswith(newline) else ("\n" if rest.startswith("\n") else "")


def _insert_into_block(text: str, lines: List[_Line], index: int, directory: str,
                       newline: str) -> str:
    """After the last content line of the scrape_configs block, its items' indentation kept."""
    last, indent = index, None
    for i in range(index + 1, len(lines)):
        line = lines[i].text
        if not _content(line):
            continue
        if line[0] not in " -":  # the next top-level key (or a document marker) ends the block
            break
        if indent is None:
            m = re.match(r"( *)- ", line + " ")
            if not m:
                raise PrometheusError("scrape_configs is not a list of jobs (no '- ' item at "
                                      "its first line); fix that first")
            indent = m.group(1)
        last = i
    at = lines[last].start + len(lines[last].text)
    brk = _break(text[at:], newline)
    stanza = job_stanza(directory, indent if indent is not None else "  ", newline)
    if not brk:  # the block's last line ends the file without a line break
        return text + newline + stanza
    return text[:at + len(brk)] + stanza + text[at + len(brk):]


# ---------------------------------------------------------------------------------------------
# promtool, reload

def promtool_check(path: str) -> Optional[str]:
    """promtool's complaint about the config, None when it passes or promtool is absent."""
    import shutil
    import subprocess
    promtool = shutil.which("promtool")
    if promtool is None:
        return None
    try:
        run = subprocess.run([promtool, "check", "config", path], capture_output=True,
                             text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "promtool check config did not finish within 60 s"
    if run.returncode == 0:
        return None
    return (run.stderr.strip() or run.stdout.strip() or f"exit {run.returncode}")[-1500:]


def _cmdline(pid: int) -> List[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def prometheus_pids(config_path: str) -> List[int]:
    """Running prometheus processes reading `config_path` (its --config.file, or Debian's
    default when none is given)."""
    want = os.path.realpath(config_path)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or _comm(int(entry)) != "prometheus":
            continue
        args = _cmdline(int(entry))
        files = [a.split("=", 1)[1] for a in args if a.startswith("--config.file=")]
        files += [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config.file"]
        if not files:
            files = ["/etc/prometheus/prometheus.yml"]
        if any(os.path.realpath(f) == want for f in files):
            pids.append(int(entry))
    return pids


def _systemd_runs_prometheus() -> bool:
    import shutil
    import subprocess
    if not os.path.isdir("/run/systemd/system") or not shutil.which("systemctl"):
        return False
    return subprocess.run(["systemctl", "is-active", "--quiet", "prometheus.service"],
                          capture_output=True).returncode == 0


def reload(config_path: str, pid: Optional[int] = None) -> str:
    """Make Prometheus read its config again; a sentence saying what was done."""
    import signal
    import subprocess
    if pid is not None:
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError as exc:
            raise PrometheusError(f"cannot signal Prometheus pid {pid} ({exc.strerror}): "
                                  "reload it yourself (kill -HUP PID)") from None
        return f"sent SIGHUP to Prometheus (pid {pid})"
    if _systemd_runs_prometheus():
        run = subprocess.run(["systemctl", "reload", "prometheus.service"], capture_output=True,
                             text=True)
        if run.returncode:
            raise PrometheusError(f"systemctl reload prometheus failed: {run.stderr.strip()}")
        return "reloaded Prometheus (systemctl reload prometheus)"
    pids = prometheus_pids(config_path)
    for p in pids:
        os.kill(p, signal.SIGHUP)
    if pids:
        return "sent SIGHUP to Prometheus (pid " + ", ".join(map(str, pids)) + ")"
    return "Prometheus is not running with this config: it reads the job when it starts"


# ---------------------------------------------------------------------------------------------
# Prometheus's view of the targets

@record
class Target:
    instance: str
    health: str  # up, down, unknown; "missing": Prometheus has no such target
    last_error: str
    scrape_url: str


def active_targets(url: str, timeout: float) -> List[Dict[str, Any]]:
    """Prometheus's active targets, asked directly: never through an http_proxy from the
    environment, which would carry a request for 127.0.0.1 to another host (or nowhere)."""
    import http.client
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname or "", parts.port, timeout=timeout)
        try:
            conn.request("GET", f"{parts.path.rstrip('/')}/api/v1/targets?state=active")
            resp = conn.getresponse()
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status} {resp.reason}")
            doc = json.loads(resp.read().decode("utf-8"))
        finally:
            conn.close()
    except (OSError, ValueError, http.client.HTTPException) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise PrometheusError(f"Prometheus's API at {url} does not answer ({why}); pass "
                              "--prometheus-url if it listens elsewhere") from None
    return list(doc.get("data", {}).get("activeTargets", []))


def targets_of(active: List[Dict[str, Any]], groups: List[Dict]) -> List[Target]:
    out = []
    for group in groups:
        labels = group["labels"]
        hit = next((t for t in active if t.get("labels", {}).get("job") == JOB_NAME
                    and t["labels"].get("cluster") == labels["cluster"]
                    and t["labels"].get("instance") == labels["instance"]), None)
        out.append(Target(labels["instance"], hit.get("health", "unknown") if hit else "missing",
                          (hit or {}).get("lastError", ""), (hit or {}).get("scrapeUrl", "")))
    return out


def wait_for_targets(url: str, groups: List[Dict], wait: float,
                     timeout: float = 5.0) -> List[Target]:
    """The targets once all are up, or as they are when `wait` seconds have passed (a first
    scrape needs file_sd to notice the file and one scrape interval)."""
    end = time.monotonic() + wait
    while True:
        targets = targets_of(active_targets(url, timeout), groups)
        if all(t.health == "up" for t in targets) or time.monotonic() >= end:
            return targets
        time.sleep(1.0)


def target_advice(target: Target, exporter: str, module: str) -> str:
    """Why a target is not up, and what to do."""
    if target.health == "missing":
        return (f"Prometheus has no target for node {target.instance}: its config lacks the "
                f"{JOB_NAME} job or it was not reloaded since (kill -HUP its pid)")
    if target.health == "unknown":
        return f"Prometheus has not scraped node {target.instance} yet"
    error = target.last_error or "no error given"
    if "400" in error:
        error += (f" (the exporter has no module {module}: restart prometheus-pve-exporter, it "
                  "reads its config only when it starts)")
    elif "connection refused" in error:
        error += f" (is prometheus-pve-exporter running on {exporter}?)"
    return f"node {target.instance} is down: {error}"


# ---------------------------------------------------------------------------------------------
# Who can read the written files

def unreadable_by(path: str, user: str) -> Optional[str]:
    """Why `user` cannot read `path` (mode bits of the file and its directories), or None."""
    import grp
    import pwd
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return f"there is no user {user}"
    if pw.pw_uid == 0:
        return None
    gids = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    return _unreadable(path, user, pw.pw_uid, gids)


def unreadable_by_group(path: str, group: str) -> Optional[str]:
    """Why a member of `group` who owns none of it cannot read `path` (the file and its
    directories), or None."""
    import grp
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return f"there is no group {group}"
    return _unreadable(path, f"group {group}", -1, {gid})


def _unreadable(path: str, who: str, uid: int, gids: set) -> Optional[str]:
    path = os.path.abspath(path)
    parts = [os.path.dirname(path)]
    while parts[-1] != os.path.dirname(parts[-1]):
        parts.append(os.path.dirname(parts[-1]))
    for directory in reversed(parts):
        if not _may(directory, uid, gids, 0o1):
            return f"{who} cannot enter {directory}"
    if not _may(path, uid, gids, 0o4):
        st = os.stat(path)
        return (f"{who} cannot read {path} (mode {st.st_mode & 0o7777:04o}, owner "
                f"{_name(st.st_uid)}:{_group(st.st_gid)}); pass --owner or --group")
    return None


def _may(path: str, uid: int, gids: set, bit: int) -> bool:
    st = os.stat(path)
    if st.st_uid == uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid in gids:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def _name(uid: int) -> str:
    import pwd
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    import grp
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)

