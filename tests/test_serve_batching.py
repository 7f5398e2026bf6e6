"""When `cnncli serve`'s batcher sends inputs through the network (issue 29): an idle server never
waits for inputs that may not come, however long --max-wait-ms is; inputs queued together share
one forward pass, and those that arrive while a batch is in the network gather until it ends
(--max-wait-ms bounds that wait; 0 starts the next batch alongside at once). Each row equals
the row of its input alone. The batcher runs in this process on a real bundle and real files."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import REPO

from cnncli.serve.batcher import Batcher
from cnncli.serve.metrics import Metrics
from cnncli.serve.models import load_models
from cnncli.serve.spool import Spool, Upload

BUNDLE = REPO / "tests" / "fixtures" / "bundles-v1" / "image"
IMAGES = sorted((REPO / "sample_data" / "images").rglob("*.png"))


@pytest.fixture(scope="module")
def model():
    return load_models([BUNDLE], 64)["image"]


def uploads(*indexes: int) -> list[Upload]:
    return [Upload(IMAGES[index].name, IMAGES[index].read_bytes(), ".png") for index in indexes]


def run(model, max_wait_ms: float, scenario, inline: bool = False) -> tuple[object, tuple[int, int]]:
    """(what `scenario(batcher)` returns, (forward passes, inputs)), on a batcher of its own
    (`inline`: its batches on the event loop, as on the CPU; else on its threads)."""

    async def main():
        metrics, spool = Metrics([model.name], 64), Spool()
        batcher = Batcher(model, spool, metrics, 64, max_wait_ms, inline=inline)
        batcher.start()
        try:
            result = await asyncio.wait_for(scenario(batcher), 60)
            passes = metrics.batches[model.name]
            return result, (passes.count, int(passes.total))
        finally:
            await batcher.stop()
            spool.close()

    return asyncio.run(main())


async def in_the_network(batcher: Batcher) -> None:
    while not batcher.working:
        await asyncio.sleep(0)


async def queued(batcher: Batcher, inputs: list[Upload]) -> asyncio.Future:
    """A request for `inputs`, once its job is on the queue."""
    request = asyncio.ensure_future(batcher.predict(inputs, 1, None))
    await asyncio.sleep(0)
    return request


async def taken(batcher: Batcher) -> None:
    """Until the batcher has taken every queued job in hand or into the batch it gathers."""
    while not batcher.queue.empty():
        await asyncio.sleep(0)


@pytest.mark.parametrize("inline", [False, True])
def test_an_idle_batcher_sends_one_input_at_once_however_long_max_wait_is(model, inline):
    async def alone(batcher):
        started = time.monotonic()
        rows = await batcher.predict(uploads(0), 1, None)
        return rows, time.monotonic() - started

    (rows, seconds), passes = run(model, 10_000, alone, inline)
    assert rows[0].error is None and rows[0].input == IMAGES[0].name
    assert passes == (1, 1) and seconds < 5  # not the 10 s it might have waited for company


@pytest.mark.parametrize("inline", [False, True])
def test_inputs_queued_together_share_one_pass_and_each_gets_the_row_it_gets_alone(model, inline):
    async def together(batcher):
        return await asyncio.gather(*(batcher.predict(uploads(index), 3, None) for index in range(12)))

    async def one_by_one(batcher):
        return [await batcher.predict(uploads(index), 3, None) for index in range(12)]

    shared, passes = run(model, 0, together, inline)
    alone, single = run(model, 0, one_by_one, inline)
    assert passes == (1, 12) and single == (12, 12)
    for [got], [expected] in zip(shared, alone):
        assert (got.input, got.label, [label for label, _ in got.top]) == \
            (expected.input, expected.label, [label for label, _ in expected.top])
        assert got.score == pytest.approx(expected.score, abs=2e-6)  # a pass of 12 may sum in another order


def test_inputs_arriving_while_a_batch_is_in_the_network_gather_until_it_ends(model):
    async def staggered(batcher):
        first = asyncio.ensure_future(batcher.predict(uploads(*range(len(IMAGES))), 1, None))
        await in_the_network(batcher)
        second = await queued(batcher, uploads(0))
        await taken(batcher)  # the second is in a batch of its own: the third joins it, or goes after it
        third = await queued(batcher, uploads(1))
        started = time.monotonic()
        await asyncio.gather(first, second, third)
        return time.monotonic() - started

    seconds, passes = run(model, 10_000, staggered)
    assert passes == (2, len(IMAGES) + 2) and seconds < 5  # gathered until the first batch ended, not for 10 s
    _, passes = run(model, 0, staggered)
    assert passes == (3, len(IMAGES) + 2)  # with --max-wait-ms 0 the second started alongside the first at once


def test_each_job_gets_its_own_scores_and_errors_from_the_batch():
    import numpy as np

    from cnncli.serve.answers import slice_scored
    from cnncli.verbs.predict import Scored

    # inputs 0..6 of three jobs (0-1, 2-4, 5-6); 1, 3 and 4 could not be decoded
    batch = Scored([0, 2, 5, 6], {1: "one", 3: "three", 4: "four"}, np.arange(8.0).reshape(4, 2))
    first, second, third = (slice_scored(batch, start, stop) for start, stop in ((0, 2), (2, 5), (5, 7)))
    assert (first.index, first.failures, first.values.tolist()) == ([0], {1: "one"}, [[0.0, 1.0]])
    assert (second.index, second.failures, second.values.tolist()) == ([0], {1: "three", 2: "four"}, [[2.0, 3.0]])
    assert (third.index, third.failures, third.values.tolist()) == ([0, 1], {}, [[4.0, 5.0], [6.0, 7.0]])
    empty = slice_scored(Scored([0], {1: "x"}, np.zeros((1, 2))), 1, 2)
    assert (empty.index, empty.failures, empty.values.shape) == ([], {0: "x"}, (0, 2))
