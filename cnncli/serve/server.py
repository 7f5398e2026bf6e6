"""Listening: the socket bound before anything loads (a port in use is one line, not a traceback),
uvicorn serving the app on it, and a clean end: SIGTERM or ^C stops accepting, lets the
requests in flight finish, and returns, so the command exits 0.

With --workers N, uvicorn's supervisor forks N processes that share the socket, each with the
models and its own batcher; they learn the bundles and settings from one environment variable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
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

WORKER_SETUP = "CNNCLI_SERVE_WORKER"  # the bundles and settings, as JSON, for --workers processes
BACKLOG = 2048  # connections the kernel holds before the server accepts them


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
    listening = bind(settings.host, settings.port)
    address = url(listening)
    options = {"log_level": "warning", "access_log": False, "timeout_graceful_shutdown": None, "backlog": BACKLOG}
    if settings.workers == 1:
        models = load_models(paths, settings.max_batch, settings.device)
        config = uvicorn.Config(Service(models, settings).application(), **options)
        Server(config, lambda: started(address, list(models))).run(sockets=[listening])
        return
    from uvicorn.supervisors import Multiprocess

    names = [Path(path).resolve().name for path in paths]
    os.environ[WORKER_SETUP] = json.dumps({"bundles": [str(path) for path in paths],
                                           "settings": dataclasses.asdict(settings)})
    config = uvicorn.Config(f"{__name__}:worker_application", factory=True, workers=settings.workers, **options)
    started(address, names)
    Multiprocess(config, sockets=[listening]).run()


def worker_application():
    """The app of one --workers process: its share of the CPU's threads, the models, the routes."""
    import torch

    setup = json.loads(os.environ[WORKER_SETUP])
    settings = Settings(**setup["settings"])
    torch.set_num_threads(settings.forward_threads(os.cpu_count() or 1))
    return Service(load_models([Path(path) for path in setup["bundles"]], settings.max_batch, settings.device),
                   settings).application()


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0: a free one) and listening, or a CnncliError saying why
    not. Listening from here on, connections made while the models load (or while --workers
    processes start) wait in the kernel's queue instead of being refused."""
    try:
        family, kind, protocol, _, where = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as error:
        raise CnncliError(f"--host {host}: not a host name or address here ({error})") from None
    listening = socket.socket(family, kind, protocol)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
