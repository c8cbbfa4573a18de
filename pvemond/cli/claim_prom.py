"""pvemond-claim's Prometheus steps (--format pve-exporter with -o or --file-sd): the file_sd
target file, the scrape job, the reload, and --check's look at the new targets. The work itself
is in pvemond/prometheus.py. Stdlib only, Python >= 3.9."""
from __future__ import annotations

import argparse
import os

from pvemond import formats, prometheus
from pvemond.cli.claim_base import (EXIT_CHECK, EXIT_OK, EXIT_OUTPUT, EXIT_USAGE, Failure,
                                    _check_failed, _why, _write_kept, say)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays unloaded: pvemond/records.py says why
    from typing import Any, Dict, List, Optional


def file_sd_dir(args: argparse.Namespace) -> Optional[str]:
    """Where the target file goes: --file-sd, else file_sd/pvemond beside -o; None when no
    target file is written (another format, or the config on stdout)."""
    if args.format != "pve-exporter":
        for opt in ("file_sd", "prometheus_config", "prometheus_pid", "prometheus_url"):
            if getattr(args, opt) is not None:
                raise Failure(EXIT_USAGE, f"--{opt.replace('_', '-')} goes with --format "
                              "pve-exporter")
        return None
    try:
        prometheus.check_exporter(args.exporter)
    except prometheus.PrometheusError as exc:
        raise Failure(EXIT_USAGE, str(exc)) from None
    if args.file_sd:
        return os.path.abspath(args.file_sd)
    if args.output:
        return os.path.join(os.path.dirname(os.path.abspath(args.output)), "file_sd", "pvemond")
    if args.prometheus_config:
        raise Failure(EXIT_USAGE, "--prometheus-config needs -o or --file-sd: the job reads the "
                      "target files written there")
    return None


def prom_preflight(sd_dir: Optional[str], config: Optional[str]) -> None:
    """The target directory can be made and the Prometheus config edited; the code is not sent
    otherwise."""
    if sd_dir is None:
        return
    existing = sd_dir
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise Failure(EXIT_OUTPUT, f"cannot write into {existing} (the file_sd target file goes "
                      f"to {sd_dir}); the code was NOT sent")
    if config is None:
        return
    try:
        with open(config, encoding="utf-8", newline="") as f:
            prometheus.add_job(f.read(), sd_dir)
    except (OSError, UnicodeDecodeError) as exc:
        raise Failure(EXIT_OUTPUT, f"cannot read {config}: {_why(exc)}; the code was NOT sent") \
            from None
    except prometheus.PrometheusError as exc:
        raise Failure(EXIT_OUTPUT, f"{config}: {exc}; the code was NOT sent") from None
    if not os.access(config, os.W_OK):
        raise Failure(EXIT_OUTPUT, f"cannot write {config}; the code was NOT sent")


def setup_prometheus(args: argparse.Namespace, sd_dir: str,
                     payload: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The cluster's target file, then the job (added or printed) and the reload; the target
    groups for --check."""
    done = "the exporter's config is written; fix that and run pvemond-claim --help for the " \
           "Prometheus steps, or add them by hand"
    module = formats.module_name(payload)
    try:
        groups = prometheus.target_groups(payload, module, args.exporter)
        path = prometheus.file_sd_path(sd_dir, module)
        os.makedirs(sd_dir, mode=0o755, exist_ok=True)
        fresh = not os.path.exists(path)
        _write_kept(path, prometheus.file_sd_text(groups).encode("utf-8"))
        if fresh:  # targets hold no secret, and Prometheus runs as its own user
            os.chmod(path, 0o644)
        say(f"  wrote the Prometheus targets of its {len(groups)} node(s) to {path}")
        if args.prometheus_config:
            add_job(args.prometheus_config, sd_dir, args.prometheus_pid)
        else:
            say(f"  Prometheus: add this job to scrape_configs in prometheus.yml once (every "
                f"cluster's target file in {sd_dir} is read by it), then reload Prometheus:\n" +
                prometheus.job_stanza(sd_dir).rstrip("\n"))
    except prometheus.PrometheusError as exc:
        raise Failure(EXIT_OUTPUT, f"{exc}; {done}") from None
    except OSError as exc:
        raise Failure(EXIT_OUTPUT, f"cannot write the Prometheus targets in {sd_dir}: "
                      f"{_why(exc)}; {done}") from None
    return groups


def add_job(config: str, sd_dir: str, pid: Optional[int]) -> None:
    with open(config, encoding="utf-8", newline="") as f:
        old = f.read()
    new = prometheus.add_job(old, sd_dir)
    if new is None:
        say(f"  Prometheus: a job in {config} reads {sd_dir} already; nothing added")
        return
    _write_kept(config, new.encode("utf-8"))
    complaint = prometheus.promtool_check(config)
    if complaint is not None:
        _write_kept(config, old.encode("utf-8"))
        raise prometheus.PrometheusError(
            f"promtool check config rejects {config} with the {prometheus.JOB_NAME} job, so the "
            f"file is back as it was:\n{complaint}")
    say(f"  Prometheus: added the job {prometheus.JOB_NAME} to {config}" +
        (" (promtool check config passes)" if _which("promtool") else ""))
    say("  Prometheus: " + prometheus.reload(config, pid))


def _which(name: str) -> bool:
    import shutil
    return shutil.which(name) is not None


def check_prometheus(args: argparse.Namespace, groups: List[Dict[str, Any]], module: str) -> int:
    """Prometheus's view of the new targets, after its first scrape."""
    url = args.prometheus_url or prometheus.PROMETHEUS_URL
    asked = args.prometheus_url is not None or args.prometheus_config is not None
    try:
        targets = prometheus.wait_for_targets(url, groups, args.check_wait,
                                              timeout=min(args.timeout, 10.0))
    except prometheus.PrometheusError as exc:
        if not asked:  # no Prometheus was named: it may run elsewhere
            say(f"  check: Prometheus targets not checked: {exc}")
            return EXIT_OK
        return _check_failed(str(exc))
    down = [t for t in targets if t.health != "up"]
    for t in down:
        _check_failed("Prometheus: " + prometheus.target_advice(t, args.exporter, module))
    if down:
        return EXIT_CHECK
    say(f"  check: Prometheus at {url} scrapes all {len(targets)} node(s) of {module}: up")
    return EXIT_OK
