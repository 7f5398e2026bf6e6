"""Dynamic batching: the inputs of concurrent requests go through the network together.

A request puts its inputs on the model's queue as one job and awaits its rows. A batch is the
jobs queued when it is taken in hand (up to `max_batch` inputs): its inputs are decoded, run
through the network in one forward pass, and each job gets its rows.

On the CPU a batch runs on the event loop itself, one at a time, and the next takes every job
that arrived meanwhile: no hand-over between threads, whose cost (the GIL passed back and forth
for each batch) was most of a single-image request's overhead; the cores are used by --workers
processes instead (one per core by default). One process on 2 cores, exploratory runs: 1,230
one-sentence requests/s against 909 with threads, 762 single images/s against 650 (docs/BENCHMARKS.md).

On a GPU the work runs on threads of the batcher's own, two batches in hand at most, so that
one decodes while the other is in the network. While none is in hand a batch goes at once with
whatever is queued, so an idle server never waits for inputs that may not come. While one is in
hand, the next gathers arriving jobs until that one ends, it is full, or its first input has
waited `max_wait_ms`, and then starts alongside (0: at once). So the busier the server the
larger its batches.

A job is never split: its rows come from one forward pass, and each is predict's for that input
(a pass of N inputs may round the sixth decimal of a score otherwise than a pass of one, as
predict's chunks do).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from cnncli.serve.answers import Staged, rows_of, slice_scored
from cnncli.serve.metrics import Metrics
from cnncli.serve.models import Model
from cnncli.serve.spool import Spool, Upload
from cnncli.verbs.predict import Prediction, Scored

IN_HAND = 2  # batches in hand at once on threads: one decoding while the other is in the network


@dataclass
class Job:
    uploads: list[Upload]
    top_k: int
    threshold: float | None
    answer: asyncio.Future = field(repr=False)
    arrived: float = field(default_factory=time.monotonic)
    staged: Staged | None = None


class Batcher:
    """One model's queue and the task that empties it (started and stopped by the app's lifespan)."""

    def __init__(self, model: Model, spool: Spool, metrics: Metrics, max_batch: int, max_wait_ms: float,
                 inline: bool = False):
        self.model, self.spool, self.metrics = model, spool, metrics
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.inline = inline  # batches run on the event loop, one at a time (the CPU)
        self.workers = None if inline else ThreadPoolExecutor(IN_HAND, thread_name_prefix=f"batch-{model.name}")
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.held: Job | None = None  # a job that did not fit the last batch: first in the next
        self.in_hand = asyncio.Semaphore(1 if inline else IN_HAND)
        self.working = 0  # batches in hand
        self.changed = asyncio.Event()  # a job arrived or a batch ended (for a batch gathering more)
        self.task: asyncio.Task | None = None
        self.running: set[asyncio.Task] = set()

    async def predict(self, uploads: list[Upload], top_k: int, threshold: float | None) -> list[Prediction]:
        """The rows of one request's inputs, in order."""
        job = Job(uploads, top_k, threshold, asyncio.get_running_loop().create_future())
        self.metrics.queue(self.model.name, len(uploads))
        self.queue.put_nowait(job)
        self.changed.set()
        return await job.answer

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """After the server's last request: let the batches in hand end, then stop."""
        if self.running:
            await asyncio.gather(*self.running, return_exceptions=True)
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.workers is not None:
            self.workers.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            jobs = await self._collect()
            task = asyncio.get_running_loop().create_task(self._answer(jobs))
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    async def _collect(self) -> list[Job]:
        """The first job waiting, then (once a slot is free) every job queued, and while the other
        batch is in hand those that arrive until it ends or the first job has waited max_wait_ms."""
        jobs = [self.held or await self.queue.get()]
        self.held = None
        await self.in_hand.acquire()
        if self.inline:  # let the requests read in this turn of the loop queue their jobs too
            await asyncio.sleep(0)
        self._take(jobs)
        deadline = jobs[0].arrived + self.max_wait
        while self.working and self._room(jobs) and (remaining := deadline - time.monotonic()) > 0:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                break
            self._take(jobs)
        self.working += 1
        return jobs

    def _room(self, jobs: list[Job]) -> bool:
        return self.held is None and sum(len(job.uploads) for job in jobs) < self.max_batch

    def _take(self, jobs: list[Job]) -> None:
        """Queued jobs onto `jobs` while they fit in max_batch inputs (one that does not: held for the next)."""
        size = sum(len(job.uploads) for job in jobs)
        while size < self.max_batch and self.held is None and not self.queue.empty():
            job = self.queue.get_nowait()
            if size + len(job.uploads) > self.max_batch:
                self.held = job
                return
            jobs.append(job)
            size += len(job.uploads)

    async def _answer(self, jobs: list[Job]) -> None:
        size = sum(len(job.uploads) for job in jobs)
        try:
            if self.inline:
                answers = self._work(jobs)
            else:
                answers = await asyncio.get_running_loop().run_in_executor(self.workers, self._work, jobs)
            for job, rows in zip(jobs, answers):
                if not job.answer.done():  # its client may have gone
                    job.answer.set_result(rows)
            self.metrics.batch(self.model.name, size, sum(row.error is not None for rows in answers for row in rows))
        except BaseException as error:  # a bug, or cancelled at shutdown: every waiting request hears it
            for job in jobs:
                if not job.answer.done():
                    job.answer.set_exception(error)
            raise
        finally:
            self.metrics.queue(self.model.name, -size)
            self.working -= 1
            self.in_hand.release()
            self.changed.set()

    def _work(self, jobs: list[Job]) -> list[list[Prediction]]:
        """Each job's rows: every input decoded, then one forward pass (on a thread it lets go of
        the GIL while it runs, so the other batch in hand decodes meanwhile)."""
        scored = self._decode(jobs)
        if scored.index:
            scored.values = self.model.predictor.probabilities(torch.from_numpy(scored.values)).numpy()
        answers, start = [], 0
        for job in jobs:
            stop = start + len(job.uploads)
            answers.append(rows_of(self.model, job.staged, slice_scored(scored, start, stop), job.top_k,
                                   job.threshold))
            start = stop
        return answers

    def _decode(self, jobs: list[Job]) -> Scored:
        """Every job's inputs encoded as one batch."""
        try:
            for job in jobs:
                job.staged = Staged.of(job.uploads, self.spool)
            return self.model.predictor.encode([sample for job in jobs for sample in job.staged.samples])
        finally:
            for job in jobs:
                if job.staged is not None:
                    job.staged.done()
