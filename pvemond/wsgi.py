"""The WSGI entry point gunicorn loads: logging to stderr (journald timestamps it), the app, and
the sweeper that revokes tokens whose hand-out was never finished."""
import logging
import sys
import threading
import time

from pvemond import config
from pvemond.rest import create_app

SWEEP_EVERY = 15.0

_cfg = config.load()
logging.basicConfig(stream=sys.stderr, level=_cfg.daemon.log_level.upper(),
                    format="%(name)s: %(levelname)s: %(message)s")
app = create_app(_cfg)


def _sweep_forever() -> None:
    service = app.config["SERVICE"]
    while True:
        try:
            service.sweep()
        except Exception:  # the next round retries; the daemon stays up
            logging.getLogger("pvemond").exception("sweeping expired hand-outs failed")
        time.sleep(SWEEP_EVERY)


threading.Thread(target=_sweep_forever, name="sweeper", daemon=True).start()
