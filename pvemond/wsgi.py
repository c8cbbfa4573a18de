"""The WSGI entry point gunicorn loads: logging to stderr (journald timestamps it), the app, and
the sweeper that revokes tokens whose hand-out was never finished.

gunicorn loads this in its worker, never in the master (gunicorn_conf.preload_app says why); the
worker starts the sweeper thread (start_sweeper, from gunicorn_conf's post_worker_init), so it
runs where the requests are served and dies with them."""
import logging
import sys
import threading
import time

from pvemond import config
from pvemond.rest import create_app
from pvemond.service import NodeService

# Seconds between sweeps: a dead bootstrap's token is revoked within about this long. A sweep
# that finds nothing to do reads one small file and looks at /proc.
SWEEP_EVERY = 1.0


def _load() -> config.Config:
    """The configuration gunicorn's master read and checked at start (gunicorn_conf), so master
    and worker run on the same settings and the worker loads no YAML parser. Imported without
    that master, the file itself; a bad one: one `Error:` paragraph, no traceback, and gunicorn's
    "worker failed to boot" exit (3)."""
    checked = getattr(sys.modules.get("pvemond.gunicorn_conf"), "pvemond_config", None)
    if checked is not None:
        return config.from_dict(checked)
    try:
        return config.load()
    except config.ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(3) from None


_cfg = _load()
logging.basicConfig(stream=sys.stderr, level=_cfg.daemon.log_level.upper(),
                    format="%(name)s: %(levelname)s: %(message)s")
# Every change runs in a child of this worker (changes.py says why).
app = create_app(_cfg, NodeService(_cfg, apart=True))


def _sweep_forever() -> None:
    """The first sweep runs at start: it reconciles what a killed daemon left behind."""
    service = app.config["SERVICE"]
    failing = False
    while True:
        try:
            service.sweep()
            failing = False
        except Exception:  # the next round retries; the daemon stays up; one log line per outage
            if not failing:
                logging.getLogger("pvemond").exception("sweeping hand-outs failed")
            failing = True
        time.sleep(SWEEP_EVERY)


def start_sweeper() -> None:
    threading.Thread(target=_sweep_forever, name="sweeper", daemon=True).start()
