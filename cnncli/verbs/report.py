"""`cnncli eval BUNDLE --report DIR`: an evaluation a person can read, as files in one folder.

    metrics.json              the object `cnncli eval --format json` prints, as it prints it
    confusion.png             counts; confusion-normalised.png: each row divided by its count
    per-class.png             precision, recall and F1 of each class
    mistakes.png              the most confident mistakes, drawn by their modality; mistakes.json
    curves.png                training curves from the bundle's log
    reliability.png           calibration of the scores predict gives (the bundle's temperature
                              applied): accuracy against confidence; calibration.json (ECE, bins)
    walkthrough/              the most confident mistake's way through the network (cnncli.verbs.explain)
"""

from __future__ import annotations

import math
from pathlib import Path

from cnncli.bundle.io import LOG_FILE, Bundle
from cnncli.errors import CnncliError
from cnncli.files.atomic import write_file
from cnncli.files.jsontext import dumps, loads
from cnncli.files.reading import read_limited
from cnncli.limits import MAX_LOG_BYTES
from cnncli.nn.calibration import ECE_BINS, expected_calibration_error, reliability_bins
from cnncli.nn.layers import layer_table
from cnncli.verbs.evaluate import Evaluation
from cnncli.verbs.explain import explain_sample

MISTAKES = 12  # in the gallery


def write_report(bundle: Bundle, evaluation: Evaluation, out_dir: Path, layer: str | None = None) -> dict:
    """Write the report's files to `out_dir`; returns what they show, for the report page."""
    from cnncli.output.plots import confusion_png, curves_png, per_class_png, reliability_png

    out_dir = Path(out_dir)
    history = read_log(bundle)  # first: a damaged log fails before anything is drawn
    report = evaluation.report
    bins = reliability_bins(evaluation.probabilities, evaluation.targets, ECE_BINS)
    calibration = {"temperature": bundle.temperature,  # the scores binned are divided by it, as predict's
                   "expected_calibration_error": round(expected_calibration_error(
                       evaluation.probabilities, evaluation.targets, ECE_BINS), 6), "bins": bins}
    mistakes = confident_mistakes(evaluation, bundle.labels)
    files = {"metrics.json": _json(report, out_dir / "metrics.json"),
             "confusion.png": confusion_png(report),
             "confusion-normalised.png": confusion_png(report, normalised=True),
             "per-class.png": per_class_png(report),
             "reliability.png": reliability_png(bins, calibration["expected_calibration_error"]),
             "calibration.json": _json(calibration, out_dir / "calibration.json"),
             "mistakes.json": _json(mistakes, out_dir / "mistakes.json")}
    if history:
        files["curves.png"] = curves_png(history)
    if mistakes:
        files["mistakes.png"] = mistakes_png(bundle, evaluation, mistakes)
    for name, content in files.items():
        write_file(out_dir / name, content)
    shown = evaluation.samples[mistakes[0]["row"]] if mistakes else evaluation.samples[0]
    walkthrough = explain_sample(bundle, shown, out_dir / "walkthrough", layer)
    walkthrough["why"] = (f"the most confident mistake, a {mistakes[0]['true']} taken for a {mistakes[0]['predicted']}"
                          if mistakes else "the first sample (there are no mistakes)")
    return {"report": str(out_dir), "metrics": report, "calibration": calibration, "mistakes": mistakes,
            "files": [str(out_dir / name) for name in files] + walkthrough["files"], "walkthrough": walkthrough,
            "layers": layer_table(bundle.network, tuple(bundle.modality.input_shape), bundle.modality.describe())}


def confident_mistakes(evaluation: Evaluation, labels: list[str], count: int = MISTAKES) -> list[dict]:
    """The wrongly predicted samples the network was surest of, surest first."""
    confidence, predicted = evaluation.probabilities.max(dim=1)
    wrong = (predicted != evaluation.targets).nonzero().flatten().tolist()
    wrong.sort(key=lambda row: -float(confidence[row]))
    return [{"row": row, "input": evaluation.samples[row].locator, "true": labels[int(evaluation.targets[row])],
             "predicted": labels[int(predicted[row])], "confidence": round(float(confidence[row]), 6)}
            for row in wrong[:count]]


def mistakes_png(bundle: Bundle, evaluation: Evaluation, mistakes: list[dict]) -> bytes:
    """The mistakes as a gallery, each drawn by the modality with what the network made of it."""
    from cnncli.output.plots import thumbnail_grid_png

    modality, network = bundle.modality, bundle.network
    cells = [(lambda axis, sample=evaluation.samples[m["row"]]: modality.draw_thumbnail(sample, axis, network),
              f"{m['true']} -> {m['predicted']} ({m['confidence']:.2f})") for m in mistakes]
    columns = min(6, max(2, int(8 / modality.thumbnail_aspect)))  # a page wide: 6 images, 4 sounds, 3 sentences
    rows = [("", cells[start:start + columns]) for start in range(0, len(cells), columns)]
    return thumbnail_grid_png(rows, modality.thumbnail_aspect, "most confident mistakes (true -> predicted)")


def _json(value, path: Path) -> bytes:
    return (dumps(value, str(path), indent=2) + "\n").encode()


CURVE_KEYS = ("train_loss", "train_accuracy")  # what every epoch record must hold to be drawn


def read_log(bundle: Bundle) -> list[dict]:
    """The bundle's epoch records (empty when it has no log), each checked to hold what the
    curves draw: a bundle is the user's file, so a damaged log is one line naming its line."""
    path = Path(bundle.path) / LOG_FILE
    if not path.exists():
        return []
    content = read_limited(path, MAX_LOG_BYTES, "training log")
    try:
        lines = content.decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise CnncliError(f"{path}: byte {error.start} is not UTF-8; not a training log") from None
    records = [(number, loads(line, f"{path}:{number}")) for number, line in enumerate(lines, start=1)
               if line.strip()]
    for number, record in records:
        if not isinstance(record, dict):
            raise CnncliError(f"{path}:{number}: expected an epoch record (a JSON object)")
    # validation curves are drawn when the first record has them, so then every record needs them
    wanted = ("epoch",) + CURVE_KEYS + tuple(key for key in ("val_loss", "val_accuracy")
                                             if records and key in records[0][1])
    for number, record in records:
        wrong = next((key for key in wanted + ("member",) if (key in wanted or key in record) and
                      not _number(record.get(key))), None)
        if wrong:
            raise CnncliError(f"{path}:{number}: {wrong}: expected a finite number in each epoch record")
    return [record for _, record in records]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
