"""gunicorn settings for pvemond (`gunicorn -c python:pvemond.gunicorn_conf pvemond.wsgi:app`).

Read by gunicorn 20.1 (PVE 8), 23 (PVE 9) and PyPI's newest: settings an older gunicorn does not
know are ignored, so newer-only ones are safe here.
"""
from pvemond import config as _config  # a bare name "config" would be read as a setting

_cfg = _config.load()

bind = ["unix:" + _cfg.daemon.socket] + ([_cfg.daemon.tcp] if _cfg.daemon.tcp else [])
# Only root may talk to the daemon or read what it keeps (sockets come out 0700 under this
# umask; when_ready trims the socket to 0600).
umask = 0o077
# One process keeps the memory small; threads keep status answering while pveum runs.
workers = 1
worker_class = "gthread"
threads = 4
# A mint runs several pveum calls; each may wait ~10 s for a cluster lock.
timeout = 180
graceful_timeout = 15
loglevel = _cfg.daemon.log_level
errorlog = "-"
# stderr without timestamps: journald stamps every line itself.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(name)s: %(levelname)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                            "stream": "ext://sys.stderr"}},
    "loggers": {"gunicorn.error": {"level": _cfg.daemon.log_level.upper(),
                                   "handlers": ["stderr"], "propagate": False}},
    "root": {"level": "WARNING", "handlers": []},
}
proc_name = "pvemond"
# gunicorn >= 25 opens a control socket by default; ProtectSystem=strict would make it fail.
control_socket_disable = True


def when_ready(server) -> None:
    import os
    os.chmod(_cfg.daemon.socket, 0o600)
