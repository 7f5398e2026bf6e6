"""--workers N: N server processes, each on a listening socket of its own bound to the one port.

With SO_REUSEPORT the kernel spreads new connections evenly over the sockets of one port. One
socket shared by every process (uvicorn's own supervisor) lets whichever process wakes first
take a burst of the waiting connections: 32 keep-alive clients then all went to one of two
workers in some runs, and the other core idled. Where SO_REUSEPORT is missing, the processes
share the one socket as before.

The sockets are bound and listening before the processes start, so a connection made while
they load the models waits in the kernel's queue; the server is announced once every process
serves. SIGTERM or ^C stops every process as it
stops one server (requests in flight finish), and the supervisor returns once they have; a
process that dies is started again on its socket, unless it failed while starting (then the
others are stopped and the error is raised: it would fail the same way again).
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable

from cnncli.errors import CnncliError

multiprocessing.allow_connection_pickling()  # a listening socket travels to a spawned process
SPAWN = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads or locks forked mid-use
STARTUP_FAILURE = 3  # uvicorn's exit status for a process that could not start serving
CHECK_SECONDS = 0.5


def sockets_per_process(first: socket.socket, count: int,
                        another: Callable[[], socket.socket]) -> list[socket.socket]:
    """`first` and count-1 more listening sockets on its address, each made by `another()`, where
    `first` was bound with SO_REUSEPORT; else `first` count times."""
    if not (hasattr(socket, "SO_REUSEPORT") and first.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)):
        return [first] * count
    return [first] + [another() for _ in range(count - 1)]


def supervise(sockets: list[socket.socket], run: Callable, ready: Callable[[], None]) -> None:
    """`run(sock, started)` in a spawned process per socket until SIGTERM or ^C, then each is
    stopped gracefully and waited for; `ready()` once every process has called `started()`
    (it is serving). `run` must be a module-level function (it is pickled). A process that
    fails before it serves stops them all, and its error is raised here (one line)."""
    stopping = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stopping.set()) for number in (signal.SIGINT, signal.SIGTERM)}
    serving, failures = SPAWN.Value("i", 0), SPAWN.SimpleQueue()  # processes serving; why one could not

    def start(listening: socket.socket):
        process = SPAWN.Process(target=_process, args=(run, listening, serving, failures), name="cnncli-serve-worker")
        process.start()
        return process

    processes = [start(listening) for listening in sockets]
    failed, announced = False, False
    try:
        while not stopping.wait(CHECK_SECONDS if announced else CHECK_SECONDS / 5):
            if not announced and serving.value >= len(processes):
                ready()
                announced = True
            for index, process in enumerate(processes):
                if process.is_alive():
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    failed = True
                    stopping.set()
                    break
                processes[index] = start(sockets[index])
    finally:
        for listening in sockets:  # from now on only the processes hold them, and they stop accepting
            listening.close()
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: the process's server finishes what is in flight
        for process in processes:
            process.join()
        for number, handler in previous.items():
            signal.signal(number, handler)
    if failed:
        raise CnncliError(failures.get() if not failures.empty() else "serve: a worker process could not start")


def _process(run: Callable, listening: socket.socket, serving, failures) -> None:
    """A spawned process: `run` until it returns; failing before it serves, its error goes to the
    supervisor and it exits STARTUP_FAILURE (it would fail the same way again: no restart)."""
    started = False

    def count() -> None:
        nonlocal started
        started = True
        with serving.get_lock():
            serving.value += 1

    try:
        run(listening, count)
    except Exception as error:
        if started:
            raise
        if not isinstance(error, CnncliError):
            traceback.print_exc()
        failures.put(str(error) if isinstance(error, CnncliError) else
                     f"serve: a worker process could not start ({type(error).__name__}: {error})")
        sys.exit(STARTUP_FAILURE)
