"""ordered_map: the first chunk here, the rest on forked workers, results in order, a bounded
number of chunks in flight, one torch thread everywhere, errors and dead workers reported."""

from __future__ import annotations

import os
import time

import pytest
import torch

from cnncli.errors import CnncliError
from cnncli.runtime.workers import ordered_map


def where_and_how(chunk: list[int]) -> tuple[list[int], int, int]:
    time.sleep(0.02 * (len(chunk) % 3))  # chunks finish out of order
    return [value * value for value in chunk], os.getpid(), torch.get_num_threads()


def test_results_come_in_input_order_from_here_then_from_the_workers():
    chunks = [list(range(start, start + size)) for start, size in zip(range(0, 200, 10), [1, 2, 3, 4, 5] * 4)]
    results = list(ordered_map(where_and_how, chunks, workers=2))
    assert [values for values, _, _ in results] == [[value * value for value in chunk] for chunk in chunks]
    processes = [pid for _, pid, _ in results]
    assert processes[0] == os.getpid() and os.getpid() not in processes[1:] and len(set(processes[1:])) == 2
    assert {threads for _, _, threads in results} == {1}  # here too, while a chunk runs


def test_a_single_chunk_starts_no_worker_and_none_means_all_here():
    assert [pid for _, pid, _ in ordered_map(where_and_how, [[1, 2]], workers=2)] == [os.getpid()]
    assert {pid for _, pid, _ in ordered_map(where_and_how, [[1], [2], [3]], workers=0)} == {os.getpid()}


def test_only_a_few_chunks_are_read_ahead():
    pulled = []

    def chunks():
        for index in range(100):
            pulled.append(index)
            yield [index]

    results = ordered_map(lambda chunk: chunk, chunks(), workers=2)
    assert next(results) == [0] and next(results) == [1]
    assert len(pulled) <= 2 + 2 * 2  # the first chunk, then at most two per worker in flight
    results.close()


def fail_on_seven(chunk: list[int]) -> list[int]:
    if 7 in chunk:
        raise ValueError("seven")
    return chunk


def die_on_seven(chunk: list[int]) -> list[int]:
    if 7 in chunk:
        os._exit(3)  # as a decoder crash or the out-of-memory killer would end it
    return chunk


def test_an_error_in_a_worker_is_raised_here():
    with pytest.raises(ValueError, match="seven"):
        list(ordered_map(fail_on_seven, [[index] for index in range(10)], workers=2))


def test_a_worker_that_dies_is_a_one_line_error_naming_its_chunk():
    with pytest.raises(CnncliError, match=r"a worker process died while reading chunk \[7\]"):
        list(ordered_map(die_on_seven, [[index] for index in range(10)], workers=2,
                         describe=lambda chunk: f"chunk {chunk}"))
