"""Dynamic batching: the inputs of concurrent requests go through the network together.

A request puts its inputs on the model's queue as one job and awaits its rows. The batcher
takes the first job waiting, then more until the batch holds `max_batch` inputs or `max_wait_ms`
have passed, and hands the batch on: decoding in a pool of threads (off the event loop, which
keeps accepting), then the network in one forward pass on a thread of its own (torch lets go of
the GIL), then each job's rows. Two batches are in hand at a time, one decoding while the other
runs the network; the next one gathers meanwhile (its wait overlaps their work), and while both
are busy arriving jobs wait in the queue and the next batch takes them all as it is taken in
hand, so the busier the server the larger its batches. A job is never split: its rows come
from one forward pass, and each is predict's for that input (a pass of N inputs may round the
sixth decimal of a score otherwise than a pass of one, as predict's chunks do).
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

IN_HAND = 2  # batches decoding or in the network at once


@dataclass
class Job:
    uploads: list[Upload]
    top_k: int
    threshold: float | None
    answer: asyncio.Future = field(repr=False)
    staged: Staged | None = None


class Batcher:
    """One model's queue and the task that empties it (started and stopped by the app's lifespan)."""

    def __init__(self, model: Model, spool: Spool, metrics: Metrics, decoders: ThreadPoolExecutor,
                 max_batch: int, max_wait_ms: float):
        self.model, self.spool, self.metrics, self.decoders = model, spool, metrics, decoders
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.network_thread = ThreadPoolExecutor(1, thread_name_prefix=f"network-{model.name}")
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.held: Job | None = None  # a job that did not fit the last batch: first in the next
        self.in_hand = asyncio.Semaphore(IN_HAND)
        self.task: asyncio.Task | None = None
        self.running: set[asyncio.Task] = set()

    async def predict(self, uploads: list[Upload], top_k: int, threshold: float | None) -> list[Prediction]:
        """The rows of one request's inputs, in order."""
        job = Job(uploads, top_k, threshold, asyncio.get_running_loop().create_future())
        self.metrics.queue(self.model.name, len(uploads))
        self.queue.put_nowait(job)
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
        self.network_thread.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            jobs = await self._collect()
            task = asyncio.get_running_loop().create_task(self._answer(jobs))
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    async def _collect(self) -> list[Job]:
        """The first job waiting, then others until max_batch inputs or max_wait_ms; then, once a
        batch may be taken in hand, those that arrived while the others were busy."""
        jobs = [self.held or await self.queue.get()]
        self.held = None
        deadline = time.monotonic() + self.max_wait
        await self._add(jobs, deadline)
        await self.in_hand.acquire()
        await self._add(jobs, 0.0)
        return jobs

    async def _add(self, jobs: list[Job], deadline: float) -> None:
        """Jobs from the queue onto `jobs` until max_batch inputs, waiting for them until `deadline`."""
        size = sum(len(job.uploads) for job in jobs)
        while size < self.max_batch and self.held is None:
            try:
                job = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    job = await asyncio.wait_for(self.queue.get(), remaining)
                except asyncio.TimeoutError:
                    return
            if size + len(job.uploads) > self.max_batch:
                self.held = job  # first in the next batch
                return
            jobs.append(job)
            size += len(job.uploads)

    async def _answer(self, jobs: list[Job]) -> None:
        loop = asyncio.get_running_loop()
        size = sum(len(job.uploads) for job in jobs)
        try:
            scored = await loop.run_in_executor(self.decoders, self._decode, jobs)
            if scored.index:
                scored.values = await loop.run_in_executor(self.network_thread, self._forward, scored.values)
            errors = 0
            start = 0
            for job in jobs:
                stop = start + len(job.uploads)
                rows = rows_of(self.model, job.staged, slice_scored(scored, start, stop), job.top_k, job.threshold)
                errors += sum(row.error is not None for row in rows)
                if not job.answer.done():  # its client may have gone
                    job.answer.set_result(rows)
                start = stop
            self.metrics.batch(self.model.name, size, errors)
        except BaseException as error:  # a bug, or cancelled at shutdown: every waiting request hears it
            for job in jobs:
                if not job.answer.done():
                    job.answer.set_exception(error)
            raise
        finally:
            self.metrics.queue(self.model.name, -size)
            self.in_hand.release()

    def _decode(self, jobs: list[Job]) -> Scored:
        """Every job's inputs encoded as one batch (a thread of the decoding pool)."""
        try:
            for job in jobs:
                job.staged = Staged.of(job.uploads, self.spool)
            return self.model.predictor.encode([sample for job in jobs for sample in job.staged.samples])
        finally:
            for job in jobs:
                if job.staged is not None:
                    job.staged.done()

    def _forward(self, values):
        return self.model.predictor.probabilities(torch.from_numpy(values)).numpy()
