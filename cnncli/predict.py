"""`cnncli predict`: one row per input, streamed in input order, bad inputs as rows with an error.

Inputs are enumerated lazily (files, folders, globs, `-` for a list of paths on stdin; modalities
such as text may read arguments their own way) and processed in chunks, so memory stays flat
over any number of inputs. Long recordings can be cut into windows (audio).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

from cnncli.bundle import Bundle
from cnncli.data.sample import Sample
from cnncli.data.sources import expand_paths
from cnncli.device import pick_device
from cnncli.engine import predict_probabilities
from cnncli.errors import CnncliError


@dataclass
class Prediction:
    input: str
    label: str | None = None
    score: float | None = None
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None
    start: float | None = None  # seconds, for a window of a long recording
    end: float | None = None

    def as_dict(self) -> dict:
        row = {"input": self.input, "label": self.label, "score": self.score}
        if self.start is not None or self.end is not None:
            row.update(start=self.start, end=self.end)
        row["top"] = [{"label": label, "score": score} for label, score in self.top]
        row["error"] = self.error
        return row


def predict(bundle: Bundle, arguments: Iterable[str], top_k: int = 1, batch_size: int = 256,
            device=None, window: float | None = None, hop: float | None = None) -> Iterator[Prediction]:
    """Predictions for every input, in order; never raises for one bad input."""
    device = device or pick_device("auto")
    bundle.network.to(device).eval()
    top_k = max(1, min(top_k, len(bundle.labels)))
    if window is not None:
        for sample in expand_paths(arguments, bundle.modality.extensions):
            yield from predict_windows(bundle, sample.locator, window, hop or window, top_k, batch_size, device)
        return
    samples = iter(bundle.modality.expand_inputs(arguments))
    while chunk := list(islice(samples, batch_size)):
        yield from predict_chunk(bundle, chunk, top_k, device)


def predict_chunk(bundle: Bundle, chunk: list[Sample], top_k: int, device) -> list[Prediction]:
    encoded = bundle.modality.encode_many(chunk)
    rows: list[Prediction] = [Prediction(_display(sample), error=encoded.failures.get(i))
                              for i, sample in enumerate(chunk)]
    if encoded.index:
        probabilities = predict_probabilities(bundle.network, encoded.tensor, len(encoded.index), device)
        for position, row_probabilities in zip(encoded.index, probabilities):
            _fill(rows[position], row_probabilities, bundle.labels, top_k)
    return rows


def predict_windows(bundle: Bundle, locator: str, window: float, hop: float, top_k: int,
                    batch_size: int, device) -> Iterator[Prediction]:
    """Rows for each window of a long recording, then one row for the whole file (mean of windows)."""
    total, count = None, 0
    try:
        for spans, batch in bundle.modality.encode_windows(locator, window, hop, batch_size):
            probabilities = predict_probabilities(bundle.network, batch, batch_size, device)
            for (start, end), row_probabilities in zip(spans, probabilities):
                row = Prediction(locator, start=round(start, 3), end=round(end, 3))
                _fill(row, row_probabilities, bundle.labels, top_k)
                yield row
            total = probabilities.sum(0) if total is None else total + probabilities.sum(0)
            count += len(probabilities)
    except CnncliError as error:
        yield Prediction(locator, error=str(error))
        return
    if count:
        row = Prediction(locator)
        _fill(row, total / count, bundle.labels, top_k)
        yield row


def _fill(row: Prediction, probabilities, labels: list[str], top_k: int) -> None:
    if not bool(probabilities.isfinite().all()):  # inputs are finite, but extreme ones can overflow a layer
        row.error = f"{row.input}: the network's output is not a finite number for this input"
        return
    scores, indices = probabilities.topk(top_k)
    row.top = [(labels[int(i)], round(float(s), 6)) for s, i in zip(scores, indices)]
    row.label, row.score = row.top[0]


def _display(sample: Sample) -> str:
    return sample.content if isinstance(sample.content, str) else sample.locator
