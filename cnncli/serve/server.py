"""Listening: the socket bound before anything loads (a port in use is one line, not a traceback),
uvicorn serving the app on it, and a clean end: SIGTERM or ^C stops accepting, lets the
requests in flight finish, and returns, so the command exits 0.

With --workers N (by default one per core), supervisor.py spawns N processes, each on a socket of
its own on the port, with the models and its own batcher; they learn the bundles and settings
from one environment variable, and share their counters for GET /metrics through a folder made
here (shared_metrics.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import uvicorn

from cnncli.errors import CnncliError
from cnncli.serve.app import Service
from cnncli.serve.models import load_models
from cnncli.serve.settings import Settings
from cnncli.serve.spool import private_folder
from cnncli.serve.supervisor import sockets_per_process, supervise

WORKER_SETUP = "CNNCLI_SERVE_WORKER"  # the bundles and settings, as JSON, for --workers processes
BACKLOG = 2048  # connections the kernel holds before the server accepts them
SERVER_OPTIONS = {"log_level": "warning", "access_log": False, "timeout_graceful_shutdown": None, "backlog": BACKLOG,
                  "proxy_headers": False}  # no proxy in front by default: its headers name nothing served here


class Server(uvicorn.Server):
    """uvicorn's server, but a signal ends it with status 0: after its graceful shutdown uvicorn
    raises the signal again, which would end the process by that signal (143 for SIGTERM)."""

    def __init__(self, config: uvicorn.Config, started: Callable[[], None]):
        super().__init__(config)
        self.started_callback = started

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {number: signal.signal(number, self.handle_exit) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self.started_callback()


def serve(paths: list[Path], settings: Settings, started: Callable[[str, list[str]], None]) -> None:
    """Serve the bundles at `paths` until SIGTERM or ^C; `started(address, names)` once listening."""
    settings.check()
    workers = settings.processes()
    listening = bind(settings.host, settings.port, share=workers > 1)
    address = url(listening)
    if workers == 1:
        import torch

        torch.set_num_threads(settings.forward_threads(1))
        models = load_models(paths, settings.max_batch, settings.device)
        config = uvicorn.Config(Service(models, settings).application(), **SERVER_OPTIONS)
        Server(config, lambda: started(address, list(models))).run(sockets=[listening])
        return
    metrics_folder = private_folder("cnncli-serve-metrics-")
    os.environ[WORKER_SETUP] = json.dumps({"bundles": [str(path) for path in paths], "metrics": str(metrics_folder),
                                           "settings": dataclasses.asdict(settings), "workers": workers})
    names = [Path(path).resolve().name for path in paths]
    try:
        family, kind, protocol, where = listening.family, listening.type, listening.proto, listening.getsockname()
        sockets = sockets_per_process(listening, workers, lambda: _listening(
            family, kind, protocol, where, settings.host, settings.port, reuse_port=True))
        supervise(sockets, run_worker, lambda: started(address, names))
    finally:
        shutil.rmtree(metrics_folder, ignore_errors=True)


def run_worker(listening: socket.socket, started: Callable[[], None]) -> None:
    """One --workers process (spawned): the app on its socket until SIGTERM."""
    config = uvicorn.Config(f"{__name__}:worker_application", factory=True, **SERVER_OPTIONS)
    Server(config, started).run(sockets=[listening])


def worker_application():
    """The app of one --workers process: its share of the CPU's threads, the models, the routes."""
    import torch

    setup = json.loads(os.environ[WORKER_SETUP])
    settings = Settings(**setup["settings"])
    torch.set_num_threads(settings.forward_threads(setup["workers"]))
    return Service(load_models([Path(path) for path in setup["bundles"]], settings.max_batch, settings.device),
                   settings, Path(setup["metrics"])).application()


def bind(host: str, port: int, share: bool = False) -> socket.socket:
    """A socket bound to host:port (port 0: a free one) and listening, or a CnncliError saying why
    not. Listening from here on, connections made while the models load (or while --workers
    processes start) wait in the kernel's queue instead of being refused. `share`: with
    SO_REUSEPORT where the system has it, so that more sockets may join it (supervisor.py); the
    port is first taken alone, so that one already in use is refused, not shared."""
    try:
        family, kind, protocol, _, where = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as error:
        raise CnncliError(f"--host {host}: not a host name or address here ({error})") from None
    listening = _listening(family, kind, protocol, where, host, port, reuse_port=False)
    if not (share and hasattr(socket, "SO_REUSEPORT")):
        return listening
    where = listening.getsockname()  # the port it was given, for port 0
    listening.close()
    return _listening(family, kind, protocol, where, host, port, reuse_port=True)


def _listening(family, kind, protocol, where, host: str, port: int, reuse_port: bool) -> socket.socket:
    listening = socket.socket(family, kind, protocol)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listening.bind(where)
        listening.listen(BACKLOG)
    except OSError as error:
        listening.close()
        raise CnncliError(f"--host {host} --port {port}: cannot listen there ({error.strerror or error})") from None
    listening.set_inheritable(True)
    return listening


def url(listening: socket.socket) -> str:
    host, port = listening.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
