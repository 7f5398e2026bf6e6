"""Rows and pictures for uploads, made by the code `predict` and `inspect` run, so a server's
answer for an input is the command's answer for the same bytes.

`Staged` is a request's inputs as samples: files written to the spool (a modality reads a
path), sentences as they are. Its rows get each upload's own name back in place of the spooled
path, in the input column and in error messages alike.
"""

from __future__ import annotations

import base64
import bisect
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnncli.data.inputs import Inputs, Item
from cnncli.data.sample import Sample
from cnncli.files.jsontext import dumps
from cnncli.nn.gradcam import grad_cam
from cnncli.output.pages import explainer_page
from cnncli.output.rows import Layout, json_row, record
from cnncli.serve.models import Model
from cnncli.serve.spool import Spool, Upload, named, remove
from cnncli.verbs.explain import explain_sample
from cnncli.verbs.inspection import describe_target
from cnncli.verbs.predict import Prediction, Scored, chunk_rows, predict_batches


@dataclass
class Staged:
    """A request's inputs as samples, with the spooled path of each file (None for a sentence)."""

    uploads: list[Upload]
    samples: list[Sample]
    paths: list[Path | None]

    @classmethod
    def of(cls, uploads: list[Upload], spool: Spool) -> "Staged":
        samples, paths = [], []
        for index, upload in enumerate(uploads):
            if upload.text is not None:
                samples.append(Sample(f"inputs[{index}]", content=upload.text, position=index))
                paths.append(None)
            else:
                paths.append(spool.write(upload))
                samples.append(Sample(str(paths[-1]), position=index))
        return cls(uploads, samples, paths)

    def done(self) -> None:
        """Remove the spooled files (each request's, once decoded)."""
        remove([path for path in self.paths if path is not None])

    def renamed(self, rows: list[Prediction], position: int) -> list[Prediction]:
        """`rows` of the input at `position`, named as the request named it."""
        path, name = self.paths[position], self.uploads[position].name
        if path is not None:
            for row in rows:
                row.input, row.error = named(row.input, path, name), named(row.error, path, name)
        return rows


def rows_of(model: Model, staged: Staged, scored: Scored, top_k: int, threshold: float | None) -> list[Prediction]:
    """One row per staged input, from its slice of a batch's scores, as predict writes it (top_k
    past the number of labels lists them all)."""
    items, labels = [Item(sample) for sample in staged.samples], model.bundle.labels
    rows = chunk_rows(items, scored, labels, min(top_k, len(labels)), threshold)
    return [staged.renamed([row], position)[0] for position, row in enumerate(rows)]


def slice_scored(scored: Scored, start: int, stop: int) -> Scored:
    """The part of a batch's scores that belongs to inputs start..stop-1, positions counted from start."""
    first, last = bisect.bisect_left(scored.index, start), bisect.bisect_left(scored.index, stop)  # index ascends
    return Scored([position - start for position in scored.index[first:last]],
                  {position - start: message for position, message in scored.failures.items()
                   if start <= position < stop},
                  scored.values[first:last] if last > first else
                  np.empty((0,) + scored.values.shape[1:], scored.values.dtype))


def segment_rows(model: Model, staged: Staged, top_k: int, threshold: float | None) -> list[Prediction]:
    """Rows for the spans the modality finds in each input (`predict --segment`), in order."""
    rows = []
    for position, sample in enumerate(staged.samples):
        found = predict_batches(model.bundle, Inputs([Item(sample)]), top_k, device=model.predictor.device,
                                threshold=threshold, segment=True)
        rows += staged.renamed([row for batch in found for row in batch], position)
    return rows


def json_rows(rows: list[Prediction]) -> str:
    """The rows as `predict --format json` writes them: a JSON array of row objects."""
    return "[" + ",\n".join(json_row(row, Layout()) for row in rows) + "]\n"


def prediction_header(row: Prediction) -> str:
    """The row as ASCII JSON, for the header of a PNG answer (X-Cnncli-Prediction)."""
    return dumps(record(row, Layout()), "the prediction")


def gradcam_picture(model: Model, staged: Staged, layer: str | None) -> tuple[bytes, dict]:
    """(PNG of Grad-CAM over the first input as the network sees it, what it shows)."""
    modality, network, labels = model.modality, model.bundle.network, model.bundle.labels
    sample = staged.samples[0]
    with model.explaining:
        cam = grad_cam(network, modality.encode(sample), layer)
        caption = f"Grad-CAM for {labels[cam.target]} at {', '.join(cam.layers)}"
        png = modality.draw_heatmap(sample, cam.heat, network, caption)
    return png, cam.describe(labels)


def explained_json(row: Prediction, png: bytes, described: dict) -> dict:
    """GET /explain?format=json: the row, what Grad-CAM shows, and its picture as base64."""
    return {"prediction": record(row, Layout()), "gradcam": {**described, "png": base64.b64encode(png).decode()}}


def explainer_html(model: Model, staged: Staged, layer: str | None) -> str:
    """`inspect BUNDLE --input X --html`'s page for the first input (its pictures made in a
    temporary folder, embedded in the page, then removed)."""
    summary = describe_target(str(model.bundle.path), [], False)
    with tempfile.TemporaryDirectory(prefix="cnncli-explain-") as folder, model.explaining:
        explained = explain_sample(model.bundle, staged.samples[0], Path(folder), layer)
        path, name = staged.paths[0], staged.uploads[0].name
        explained["input"] = named(explained["input"], path, name) if path else staged.uploads[0].text
        return explainer_page({**summary, "input": explained})
