"""`cnncli predict`: one row per input, streamed in input order, bad inputs as rows with an error.

Inputs come lazily (arguments, a file of lines, a manifest; cnncli.data.inputs) and are cut into
chunks. The first chunk is predicted here at once, so a handful of inputs gets its rows without
waiting for anything; from the second chunk on, worker processes decode and predict (on the CPU)
or decode while this process runs the network (on a GPU), a few chunks in flight at a time, so
every core is busy and memory stays flat over any number of inputs (cnncli.runtime.workers). Rows come
back in input order, and each equals the prediction of its input alone. Scores are the bundle's
calibrated probabilities (its temperature, when training fitted one); with a threshold, a top
score below it gives the label `unknown`. A modality may cut one long input into spans (audio:
windows slid over a recording, or with `segment` the sounds found in it), each span a row of its
own (Modality.spans), as they come.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any

import numpy as np
import torch

from cnncli.bundle.io import Bundle
from cnncli.data.inputs import Inputs, Item, argument_inputs, line_inputs, manifest_inputs
from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.nn.adaptation import MAX_ADAPT_INPUTS, adapted_to
from cnncli.nn.inference import for_inference, probabilities
from cnncli.output import row_format
from cnncli.output.rows import cell_text, escape_formula
from cnncli.runtime.device import pick_device
from cnncli.runtime.workers import default_workers, ordered_map

CHUNK = 512  # inputs per piece of work: enough to amortise a hand-over, few enough to start fast
GPU_BATCH = 64  # inputs per forward pass on a GPU unless asked (on a CPU: the modality's choice)
UNKNOWN = "unknown"  # the label of a row whose top score is below --threshold


@dataclass
class Prediction:
    input: str
    label: str | None = None
    score: float | None = None
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None
    start: float | None = None  # seconds, for a span of a long input (a window, a sound)
    end: float | None = None
    columns: dict[str, Any] | None = None  # a manifest row's cells, passed through unchanged


@dataclass
class Scored:
    """What a worker sends back for a chunk: plain arrays, cheap to pickle."""

    index: list[int]  # positions in the chunk of the rows of `values`
    failures: dict[int, str]
    values: np.ndarray  # probabilities, or (encode only) the encoded rows


@dataclass
class Predictor:
    """The work on one chunk of samples; a forked worker runs it on its copy of the bundle."""

    bundle: Bundle
    network: torch.nn.Module
    batch_size: int
    device: torch.device

    def encode(self, samples: Sequence[Sample]) -> Scored:
        encoded = self.bundle.modality.encode_many(samples)
        return Scored(encoded.index, encoded.failures, encoded.tensor.numpy())

    def score(self, samples: Sequence[Sample]) -> Scored:
        scored = self.encode(samples)
        scored.values = self.probabilities(torch.from_numpy(scored.values)).numpy()
        return scored

    def probabilities(self, encoded: torch.Tensor) -> torch.Tensor:
        return probabilities(self.network, self.bundle.modality, encoded, self.batch_size, self.device,
                             self.bundle.temperature)


def prediction_inputs(bundle: Bundle, arguments: Sequence[str] = (), manifest: str | None = None,
                      lines: str | None = None, stream: str | None = None) -> Inputs:
    """The inputs of one of four sources: arguments (files, folders, globs, '-', sentences), a
    file of one input per line, a manifest (read with the bundle's column names and encoding), or
    one input read as it arrives (`stream`: '-' for standard input, or a file)."""
    given = [name for name, value in (("inputs", list(arguments)), ("--manifest", manifest), ("--lines", lines),
                                      ("--stream", stream)) if value]
    if len(given) != 1:
        raise CnncliError("predict: give inputs, --manifest FILE, --lines FILE or --stream SOURCE (one of them)"
                          + (f", not {' and '.join(given)}" if given else ""))
    if stream:
        return Inputs([Item(Sample(stream))])
    if manifest:
        return manifest_inputs(manifest, bundle.modality, bundle.config.data)
    if lines:
        return line_inputs(lines, bundle.modality, bundle.config.data.encoding)
    return argument_inputs(bundle.modality, arguments)


def predict(bundle: Bundle, arguments: Iterable[str] | Inputs, top_k: int = 1, batch_size: int | None = None,
            device=None, window: float | None = None, hop: float | None = None, *, workers: int | None = None,
            threshold: float | None = None, done: Sequence[str] = (), chunk_size: int = CHUNK,
            segment: bool = False, adapt: bool = False, latency: float | None = None) -> Iterator[Prediction]:
    """Predictions for every input, in order; never raises for one bad input. With `window`, rows
    for windows slid over each input; with `segment`, rows for the spans the modality finds in it."""
    for rows in predict_batches(bundle, arguments, top_k, batch_size, device, window, hop, workers=workers,
                                threshold=threshold, done=done, chunk_size=chunk_size, segment=segment,
                                adapt=adapt, latency=latency):
        yield from rows


def predict_batches(bundle: Bundle, arguments: Iterable[str] | Inputs, top_k: int = 1, batch_size: int | None = None,
                    device=None, window: float | None = None, hop: float | None = None, *,
                    workers: int | None = None, threshold: float | None = None, done: Sequence[str] = (),
                    chunk_size: int = CHUNK, segment: bool = False, adapt: bool = False,
                    latency: float | None = None, stream: bool = False,
                    raw: str | None = None) -> Iterator[list[Prediction]]:
    """The rows of `predict` as they come, a list at a time (one per chunk, or per input with
    windows). Settings are checked at once; inputs are read as the rows are asked for.

    `batch_size`: inputs per forward pass (None: the modality's choice on a CPU, 64 elsewhere);
    `workers`: processes that decode and predict (None: one per CPU, 0: none); `done`: the keys of
    inputs a previous run already wrote (--resume), which are checked against the first inputs and
    skipped; `adapt`: measure the network's batch norm statistics on the first MAX_ADAPT_INPUTS
    inputs before predicting any (cnncli.nn.adaptation), so every row depends on those inputs;
    `latency`: with `segment`, seconds from a span's end to its decision (None: the modality's);
    `stream`: the one input is read as it arrives (`raw`: how its bytes hold it when they have no
    header), and each span's row comes as soon as the span is decided."""
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise CnncliError(f"--threshold: a probability between 0 and 1, got {threshold}")
    if workers is not None and workers < 0:
        raise CnncliError(f"--workers: 0 (all in this process) or more, got {workers}")
    if segment and window is not None:
        raise CnncliError("--segment finds its own spans; give it without --window/--hop")
    if adapt and window is not None:
        raise CnncliError("--adapt measures whole inputs or the sounds found in them; give it without --window/--hop")
    if segment and not bundle.modality.finds_spans:
        raise CnncliError(f"--segment: finds sounds in recordings; this bundle is {bundle.modality.name}")
    _check_stream_options(segment, adapt, latency, stream, raw)
    device = device or pick_device("auto")
    if batch_size is None:
        batch_size = bundle.modality.inference_batch_size if device.type == "cpu" else GPU_BATCH
    inputs = arguments if isinstance(arguments, Inputs) else argument_inputs(bundle.modality, arguments)
    top_k = max(1, min(top_k, len(bundle.labels)))
    if segment:  # with adapt: each input's own spans adapt the network for that input
        found = _Finding(latency, stream, raw)
        return _found(bundle, None if adapt else for_inference(bundle.network, device), inputs, top_k, batch_size,
                      device, threshold, found)
    network = bundle.network
    if adapt:
        network, inputs = _adapted(bundle, inputs, device)
    network = for_inference(network, device)
    if window is not None:
        return _windows(bundle, network, inputs, window, hop or window, top_k, batch_size, device, threshold)
    workers = default_workers() if workers is None else workers
    return _batches(Predictor(bundle, network, batch_size, device), inputs, top_k, workers, threshold, done,
                    chunk_size)


def live_format(asked: str | None, output: str | None, resume: bool) -> str:
    """The row format of --stream (cnncli.output.row_format's choice): rows must come out as they
    are decided, so not a table, which waits for every row (CSV when the table was only the
    terminal's default); and no --resume."""
    if resume:
        raise CnncliError("--resume: a stream cannot be read again; write a new output")
    form = row_format(asked, output)
    if form != "table":
        return form
    if asked is not None:
        raise CnncliError("--format table prints once every row is in; with --stream use csv, jsonl or json")
    return "csv"


def _check_stream_options(segment: bool, adapt: bool, latency: float | None, stream: bool, raw: str | None) -> None:
    if latency is not None and not segment:
        raise CnncliError("--latency: how long after a sound's end it is decided; give it with --segment")
    if stream and not segment:
        raise CnncliError("--stream: reads one recording as it arrives and finds its sounds; give it with --segment")
    if stream and adapt:
        raise CnncliError("--adapt measures the first sounds of the whole input before the first row; "
                          "not with --stream")
    if raw is not None and not stream:
        raise CnncliError("--raw: describes the samples of --stream; give it with --stream")


@dataclass
class _Finding:
    """How `segment` finds the spans of an input: the latency, and whether it streams (how)."""

    latency: float | None = None
    stream: bool = False
    raw: str | None = None

    def spans(self, modality, locator: str, batch_size: int):
        if self.stream:
            return modality.stream_spans(locator, self.raw, self.latency)
        if self.latency is None:  # as a modality written before `latency` declares `spans`
            return modality.spans(locator, batch_size)
        return modality.spans(locator, batch_size, latency=self.latency)


def _batches(predictor: Predictor, inputs: Inputs, top_k: int, workers: int, threshold: float | None,
             done: Sequence[str], chunk_size: int) -> Iterator[list[Prediction]]:
    """One list of rows per chunk of inputs, in order (see the module's docstring)."""
    device = predictor.device
    on_cpu = device.type == "cpu"
    chunks = _chunks(_skip_done(inputs, done), max(chunk_size, 1))
    sent: deque[list[Item]] = deque()

    def work(chunk: list[Item]) -> list[Sample]:
        sent.append(chunk)
        return [item.sample for item in chunk if item.error is None]

    job = predictor.score if on_cpu else predictor.encode
    for scored in ordered_map(job, map(work, chunks), workers, describe=_span):
        if not on_cpu and scored.index:  # the workers decoded; the network runs here, on the GPU
            scored.values = predictor.probabilities(torch.from_numpy(scored.values)).numpy()
        yield chunk_rows(sent.popleft(), scored, predictor.bundle.labels, top_k, threshold)


def _adapted(bundle: Bundle, inputs: Inputs, device) -> tuple[torch.nn.Module, Inputs]:
    """The network adapted to the first MAX_ADAPT_INPUTS inputs, and the inputs, those first ones
    put back in front (they are read once, from a pipe too, and decoded again for their rows)."""
    items = iter(inputs.items)
    head = list(islice(items, MAX_ADAPT_INPUTS))
    encoded = bundle.modality.encode_many([item.sample for item in head if item.error is None])
    network = adapted_to(bundle.network, bundle.modality, encoded.tensor, device)
    return network, dataclasses.replace(inputs, items=chain(head, items))


def _chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    items = iter(items)
    while chunk := list(islice(items, size)):
        yield chunk


def _skip_done(inputs: Inputs, done: Sequence[str]) -> Iterator[Item]:
    """The inputs after the first len(done), each of which must be the one a previous run wrote."""
    items = iter(inputs.items)
    for number, key in enumerate(done):
        item = next(items, None)
        if item is None:
            raise CnncliError(f"--resume: the output has {len(done)} rows but there are only {number} inputs; "
                              "are these the same inputs?")
        if key not in (_key(item, inputs.key), escape_formula(_key(item, inputs.key))):  # as CSV may write it
            raise CnncliError(f"--resume: row {number + 1} of the output is for {key!r} but input {number + 1} is "
                              f"{_key(item, inputs.key)!r}; give the same inputs, or start a new output")
    return items


def _key(item: Item, column: str) -> str:
    """What the output holds in the input's key column (--resume compares it)."""
    if item.columns is not None:
        return cell_text(item.columns.get(column))
    return _display(item.sample) if item.sample is not None else ""


def _span(samples: list[Sample]) -> str:
    if len(samples) < 2:
        return samples[0].locator if samples else "a chunk of unreadable inputs"
    return f"{samples[0].locator} ... {samples[-1].locator}"


def chunk_rows(chunk: list[Item], scored: Scored, labels: list[str], top_k: int,
               threshold: float | None) -> list[Prediction]:
    """One row per item of the chunk: an error, or the top-k labels and scores (`cnncli serve`
    builds its rows here too, so that they equal predict's)."""
    rows, sent = [], []
    for item in chunk:
        rows.append(Prediction(_display(item.sample) if item.sample else "", error=item.error, columns=item.columns))
        if item.error is None:
            sent.append(rows[-1])
    for position, message in scored.failures.items():
        sent[position].error = message
    if scored.index:
        scores, indices = torch.from_numpy(scored.values).topk(top_k, dim=1)
        for position, row_scores, row_indices in zip(scored.index, scores.tolist(), indices.tolist()):
            _fill(sent[position], row_scores, row_indices, labels, threshold)
    return rows


def _fill(row: Prediction, scores: list[float], indices: list[int], labels: list[str],
          threshold: float | None) -> None:
    if not all(map(math.isfinite, scores)):  # inputs are finite, but extreme ones can overflow a layer
        row.error = f"{row.input}: the network's output is not a finite number for this input"
        return
    row.top = [(labels[index], round(score, 6)) for score, index in zip(scores, indices)]
    row.label, row.score = row.top[0]
    if threshold is not None and row.score < threshold:
        row.label = UNKNOWN


def _windows(bundle: Bundle, network, inputs: Inputs, window: float, hop: float, top_k: int, batch_size: int,
             device, threshold: float | None) -> Iterator[list[Prediction]]:
    """Rows for each window of each long input, then one row for the whole input (the mean)."""
    for item in inputs.items:
        if item.error is not None:
            yield [Prediction(_display(item.sample) if item.sample else "", error=item.error, columns=item.columns)]
            continue
        yield list(_input_windows(bundle, network, item.sample.locator, window, hop, top_k, batch_size, device,
                                  threshold))


def _input_windows(bundle: Bundle, network, locator: str, window: float, hop: float, top_k: int,
                   batch_size: int, device, threshold: float | None) -> Iterator[Prediction]:
    total, count = None, 0
    try:
        spans = bundle.modality.spans(locator, batch_size, window=(window, hop))
        for rows, scores in _span_rows(bundle, network, locator, spans, top_k, batch_size, device, threshold):
            yield from rows
            total = scores.sum(0) if total is None else total + scores.sum(0)
            count += len(scores)
    except CnncliError as error:
        yield Prediction(locator, error=str(error))
        return
    if count:
        row = Prediction(locator)
        _fill(row, *_top(total / count, top_k), bundle.labels, threshold)
        yield row


def _found(bundle: Bundle, network, inputs: Inputs, top_k: int, batch_size: int, device,
           threshold: float | None, finding: _Finding | None = None) -> Iterator[list[Prediction]]:
    """Rows for the spans the modality finds in each input, in order, a batch of spans at a time,
    less those it does not keep for the label they get (Modality.keeps_found_span). Without a
    network, each input's network is adapted to its first MAX_ADAPT_INPUTS spans (a first pass
    over the input), then the spans are found again and predicted. A stream's rows come a span
    at a time, each as soon as it is decided."""
    modality, finding = bundle.modality, finding or _Finding()
    for item in inputs.items:
        locator = item.sample.locator if item.sample else ""
        if item.error is not None:
            yield [Prediction(locator, error=item.error, columns=item.columns)]
            continue
        try:
            input_network = network if network is not None else \
                for_inference(_adapted_to_spans(bundle, locator, batch_size, device, finding), device)
            spans = finding.spans(modality, locator, batch_size)
            for rows, _ in _span_rows(bundle, input_network, locator, spans, top_k, batch_size, device,
                                      threshold, item.columns):
                yield [row for row in rows if row.error or modality.keeps_found_span(row.label)]
        except CnncliError as error:
            yield [Prediction(locator, error=str(error), columns=item.columns)]


def _adapted_to_spans(bundle: Bundle, locator: str, batch_size: int, device, finding: _Finding) -> torch.nn.Module:
    """The bundle's network adapted to the first MAX_ADAPT_INPUTS spans found in one input."""
    found, count = [], 0
    for _, batch in finding.spans(bundle.modality, locator, batch_size):
        found.append(batch)
        count += len(batch)
        if count >= MAX_ADAPT_INPUTS:
            break
    encoded = torch.cat(found)[:MAX_ADAPT_INPUTS] if found else torch.empty(0)
    return adapted_to(bundle.network, bundle.modality, encoded, device)


def _span_rows(bundle: Bundle, network, locator: str, batches, top_k: int, batch_size: int, device,
               threshold: float | None, columns: dict | None = None) -> Iterator[tuple[list[Prediction], torch.Tensor]]:
    """(a row per span, the probabilities) for each ([(start_s, end_s), ...], encoded batch) of one
    long input: windows or found spans alike."""
    for spans, batch in batches:
        scores = probabilities(network, bundle.modality, batch, batch_size, device, bundle.temperature)
        rows = []
        for (start, end), row_scores in zip(spans, scores):
            rows.append(Prediction(locator, start=round(start, 3), end=round(end, 3), columns=columns))
            _fill(rows[-1], *_top(row_scores, top_k), bundle.labels, threshold)
        yield rows, scores


def _top(scores: torch.Tensor, top_k: int) -> tuple[list[float], list[int]]:
    values, indices = scores.topk(top_k)
    return values.tolist(), indices.tolist()


def _display(sample: Sample) -> str:
    return sample.content if isinstance(sample.content, str) else sample.locator
