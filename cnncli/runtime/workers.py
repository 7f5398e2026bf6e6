"""Run one job over a stream of chunks on every core, results in order, memory flat.

`ordered_map(job, chunks, workers)` yields `job(chunk)` for each chunk in the order the chunks
came. The first chunk runs in this process, so a handful of inputs never pays for a pool; from
the second chunk on, `workers` processes share the work, at most `2 * workers` chunks in flight,
so memory stays the same over 10,000 or 10 million inputs. Every chunk runs on one torch thread,
here as in a worker, so a chunk's results are the same bits wherever it ran.

Why processes: decoding a small PNG with PIL, a short recording with soundfile and tokenising a
sentence all spend most of their time in Python holding the GIL, so threads barely overlap
(bench/decode_parallel.py measures it). Why 'fork': a forked worker inherits the loaded bundle
(network, vocabulary, preprocessing) as it is, instead of importing torch again (1.5 s) and
unpickling the bundle as 'spawn' and 'forkserver' would. Forking is safe here because the pool
is started from the main thread, before any thread of ours exists, and each worker first sets
torch to one thread (no OpenMP pool inherited half-alive), ignores ^C (the parent alone decides
when to stop) and exits when its parent is gone (a kill -9 of the parent leaves no orphans). The
objects that exist at the fork are frozen out of the garbage collector's reach (gc.freeze), so
the workers' collections do not write to them and their pages stay shared: memory stays flat.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from itertools import chain
from typing import Any

import torch

from cnncli.errors import CnncliError

_JOB: Callable[[Any], Any] | None = None  # in a worker: what it runs (inherited through fork, never pickled)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """One worker per usable CPU; none on a single CPU, where a pool only adds copying."""
    cpus = usable_cpus()
    return cpus if cpus > 1 else 0


def ordered_map(job: Callable[[Any], Any], chunks: Iterable[Any], workers: int,
                describe: Callable[[Any], str] = str) -> Iterator[Any]:
    """job(chunk) for each chunk, in order; the first in this process, the rest on `workers`
    forked processes (none: all here). A chunk whose worker died raises CnncliError naming
    `describe(chunk)`; any other error in a worker is raised here with its traceback."""
    chunks = iter(chunks)
    first = next(chunks, None)
    if first is None:
        return
    if workers < 1:
        yield job(first)
        yield from map(job, chunks)
        return
    with _like_a_worker():
        result = job(first)
    yield result
    following = next(chunks, None)
    if following is None:
        return
    if "fork" not in multiprocessing.get_all_start_methods():
        for chunk in chain([following], chunks):
            with _like_a_worker():
                result = job(chunk)
            yield result
        return
    yield from _pooled(job, chain([following], chunks), workers, describe)


@contextmanager
def _like_a_worker() -> Iterator[None]:
    """Run a chunk here as a worker runs it, on one torch thread: the kernels a thread count
    selects can round differently, and a chunk must give the same bits wherever it ran (so that
    --resume, which may run here a chunk a worker ran before, writes the same file)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _pooled(job, chunks: Iterator[Any], workers: int, describe) -> Iterator[Any]:
    for stream in (sys.stdout, sys.stderr):  # a forked child would write its copy of a buffer again
        stream.flush()
    gc.freeze()  # what exists now stays shared with the workers: their garbage collector never writes to it
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_start_worker, initargs=(job, os.getpid()))
    pending: deque[tuple[Future, Any]] = deque()
    finished = False
    try:
        for chunk in chunks:
            with _signals_to_this_thread():
                pending.append((pool.submit(_run, chunk), chunk))
            while pending and (len(pending) >= 2 * workers or pending[0][0].done()):
                yield _result(*pending.popleft(), describe)
        while pending:
            yield _result(*pending.popleft(), describe)
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:  # an error, ^C or a reader that stopped early (a closed pipe): stop now, leave nothing behind
            _stop(pool)
        gc.unfreeze()


@contextmanager
def _signals_to_this_thread() -> Iterator[None]:
    """Hold ^C and SIGTERM back while the pool starts its threads (on a submit), so that they
    inherit a mask that blocks them and the kernel delivers those signals to the main thread
    alone. Delivered to a pool thread, a signal would leave the main thread asleep in its
    system call (reading more input from a pipe, say) instead of interrupting it: ^C then went
    unanswered for over a minute in CI. Forked workers unblock them first thing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def _result(future: Future, chunk: Any, describe) -> Any:
    try:
        return future.result()
    except BrokenProcessPool:
        raise CnncliError(f"a worker process died while reading {describe(chunk)} (out of memory, or a crash "
                          "in a decoder?); rerun with --workers 0 to find the input") from None


def _stop(pool: ProcessPoolExecutor) -> None:
    # Chunks already handed to the pool's call queue sit in a pipe its feeder thread fills; once the
    # workers are gone nobody reads it, and joining that thread (the pool's manager does, and so
    # does interpreter exit) would wait forever: a ^C under load hung here once in CI.
    call_queue = getattr(pool, "_call_queue", None)
    if call_queue is not None:
        call_queue.cancel_join_thread()
    pool.shutdown(wait=False, cancel_futures=True)
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=5)


def _run(chunk: Any) -> Any:
    return _JOB(chunk)


def _start_worker(job: Callable[[Any], Any], parent: int) -> None:
    global _JOB
    _JOB = job
    torch.set_num_threads(1)  # the workers share the cores; one thread each never oversubscribes
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C reaches the whole process group: the parent stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # whatever handler the parent had is not ours
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # forked while held back
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
