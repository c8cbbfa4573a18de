"""gunicorn settings for pvemond (`gunicorn -c python:pvemond.gunicorn_conf pvemond.wsgi:app`).

Read by gunicorn 20.1 (PVE 8), 23 (PVE 9) and PyPI's newest: settings an older gunicorn does not
know are ignored, so newer-only ones are safe here.

The master holds gunicorn and little else: it reads the configuration in a short-lived child
(_checked), so the YAML parser and pvemond's modules never load in it. Every module the master
holds and the worker also uses ends up held twice, since the worker's first touch of a shared
page (a refcount, a specialised instruction) copies it. Measured by make bench on Debian 12,
with the worker taking the checked configuration from the master instead of parsing the file
again: the heaps' PSS (Pss_Anon, both processes) 34.8 -> 32.5 MiB, the master's PSS 13.1 -> 10.7.
"""
import ipaddress as _ipaddress
import json as _json
import os as _os
import socket as _socket
import sys as _sys


def _checked() -> dict:
    """The daemon's settings, read and checked in a short-lived child process (the module
    docstring says why). A bad file: the child's one `Error:` paragraph in the journal, and
    exit 1."""
    for stream in (_sys.stdout, _sys.stderr):
        stream.flush()  # nothing buffered before the fork is written twice
    read_end, write_end = _os.pipe()
    pid = _os.fork()
    if pid == 0:
        _os.close(read_end)
        _os._exit(_check_in_child(write_end))
    _os.close(write_end)
    with open(read_end, "rb") as pipe:
        answer = pipe.read()
    _, status = _os.waitpid(pid, 0)
    if status != 0:
        if _os.WIFSIGNALED(status):
            print(f"Error: reading the configuration was stopped by signal {_os.WTERMSIG(status)}",
                  file=_sys.stderr, flush=True)
        raise SystemExit(1)
    return _json.loads(answer)


def _check_in_child(fd: int) -> int:
    """Load and check the config (and the TCP key file: refuse to start with an unsafe one); write
    what the master needs to `fd` as JSON. The exit status: 0 when written."""
    try:
        from dataclasses import asdict

        from pvemond import apikey, config
        try:
            cfg = config.load()
            if cfg.daemon.tcp:
                apikey.read(cfg.daemon.tcp_key_file)
        except (config.ConfigError, apikey.KeyFileError) as exc:
            print(f"Error: {exc}", file=_sys.stderr, flush=True)
            return 1
        # daemon.tcp normalised (IPv6 in brackets), so gunicorn binds exactly the checked address.
        tcp = config.tcp_bind(cfg.daemon.tcp) if cfg.daemon.tcp else None
        answer = {"bind": ["unix:" + cfg.daemon.socket] + ([tcp] if tcp else []),
                  "socket": cfg.daemon.socket, "log_level": cfg.daemon.log_level,
                  "config": asdict(cfg)}
        with open(fd, "wb") as pipe:
            pipe.write(_json.dumps(answer).encode("utf-8"))
        return 0
    except BaseException:  # a bug: its traceback, and the master stops
        import traceback
        traceback.print_exc()
        _sys.stderr.flush()
        return 1


_settings = _checked()
# The checked configuration, for the worker (wsgi._load): master and worker run on the same
# settings, and the worker needs no YAML parser either. A changed file takes effect at restart.
pvemond_config = _settings["config"]  # gunicorn ignores names it has no setting for

bind = _settings["bind"]
# gunicorn's defaults, said here: every pvemond request line is far shorter; a longer one (and a
# header over 8190 bytes) gets a JSON 400/414/431 from gunicorn_errors, not an HTML page.
limit_request_line = 4094
limit_request_field_size = 8190
# Only root may talk to the daemon or read what it keeps (sockets come out 0700 under this
# umask; when_ready trims the socket to 0600).
umask = 0o077
# One process keeps the memory small; threads keep status answering while pveum runs.
workers = 1
# The app is imported in the worker only (gunicorn's default, said here). Preloaded in the master,
# every shared page the worker then writes (CPython's refcounts touch every object a request uses)
# is held twice, once in each process. Measured after bootstraps (PSS, RSS sum): Debian 12
# 38.9 -> 37.3 MiB, 72 -> 61 MiB; PyPI's newest 42.3 -> 41.3, 77 -> 65. A restarted worker
# answers after ~0.2-0.4 s of imports.
preload_app = False
worker_class = "gthread"
threads = 4
# A mint runs several pveum calls; each may wait ~10 s for a cluster lock.
timeout = 180
graceful_timeout = 15
loglevel = _settings["log_level"]
errorlog = "-"
# stderr without timestamps: journald stamps every line itself.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(name)s: %(levelname)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                            "stream": "ext://sys.stderr"}},
    "loggers": {"gunicorn.error": {"level": _settings["log_level"].upper(),
                                   "handlers": ["stderr"], "propagate": False}},
    "root": {"level": "WARNING", "handlers": []},
}
proc_name = "pvemond"
# gunicorn >= 25 opens a control socket by default; ProtectSystem=strict would make it fail.
control_socket_disable = True


def when_ready(server) -> None:
    """Check what was really bound (a --bind or GUNICORN_CMD_ARGS overrides the file) before any
    worker serves a request: anything but the unix socket and loopback halts the daemon."""
    for listener in server.LISTENERS:
        problem = _listener_problem(listener.sock)
        if problem:
            server.log.error("Error: %s", problem)
            server.halt(reason="a listener is not loopback", exit_status=1)
    _os.chmod(_settings["socket"], 0o600)


def _listener_problem(sock) -> "str | None":
    if sock.family == _socket.AF_UNIX:
        return None
    host, port = sock.getsockname()[:2]
    ip = _ipaddress.ip_address(host)
    if ip.is_loopback and getattr(ip, "ipv4_mapped", None) is None:
        return None
    return (f"listening on {host} port {port}, which is not a loopback address: the API must "
            "never be reachable from the network (daemon.tcp: 127.0.0.1:PORT, and no --bind)")


def pre_fork(server, worker) -> None:
    """What the master holds (gunicorn, the config) stays out of the collector's sight, so the
    worker's collections do not write to (and so copy) the pages it shares with the master."""
    import gc
    gc.freeze()


def post_worker_init(worker) -> None:
    from pvemond import gunicorn_errors, wsgi
    gunicorn_errors.install()
    wsgi.start_sweeper()
