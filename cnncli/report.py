"""`cnncli eval BUNDLE --report DIR`: an evaluation a person can read, as files in one folder.

    metrics.json              the object `cnncli eval --format json` prints, as it prints it
    confusion.png             counts; confusion-normalised.png: each row divided by its count
    per-class.png             precision, recall and F1 of each class
    mistakes.png              the most confident mistakes, drawn by their modality; mistakes.json
    curves.png                training curves from the bundle's log
    reliability.png           calibration: accuracy against confidence; calibration.json (ECE, bins)
    walkthrough/              the most confident mistake's way through the network (cnncli.explain)
"""

from __future__ import annotations

import json
from pathlib import Path

from cnncli.atomic import write_file
from cnncli.bundle import LOG_FILE, Bundle
from cnncli.calibration import ECE_BINS, expected_calibration_error, reliability_bins
from cnncli.errors import CnncliError
from cnncli.evaluate import Evaluation
from cnncli.explain import explain_sample
from cnncli.layers import layer_table

MISTAKES = 12  # in the gallery


def write_report(bundle: Bundle, evaluation: Evaluation, out_dir: Path, layer: str | None = None) -> dict:
    """Write the report's files to `out_dir`; returns what they show, for the report page."""
    from cnncli.plots import confusion_png, curves_png, per_class_png, reliability_png

    out_dir = Path(out_dir)
    report = evaluation.report
    bins = reliability_bins(evaluation.probabilities, evaluation.targets, ECE_BINS)
    calibration = {"expected_calibration_error": round(expected_calibration_error(
        evaluation.probabilities, evaluation.targets, ECE_BINS), 6), "bins": bins}
    mistakes = confident_mistakes(evaluation, bundle.labels)
    files = {"metrics.json": json.dumps(report, indent=2).encode() + b"\n",
             "confusion.png": confusion_png(report),
             "confusion-normalised.png": confusion_png(report, normalised=True),
             "per-class.png": per_class_png(report),
             "reliability.png": reliability_png(bins, calibration["expected_calibration_error"]),
             "calibration.json": json.dumps(calibration, indent=2).encode() + b"\n",
             "mistakes.json": json.dumps(mistakes, indent=2).encode() + b"\n"}
    history = read_log(bundle)
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
    from cnncli.plots import thumbnail_grid_png

    modality, network = bundle.modality, bundle.network
    cells = [(lambda axis, sample=evaluation.samples[m["row"]]: modality.draw_thumbnail(sample, axis, network),
              f"{m['true']} -> {m['predicted']} ({m['confidence']:.2f})") for m in mistakes]
    columns = min(6, max(2, int(8 / modality.thumbnail_aspect)))  # a page wide: 6 images, 4 sounds, 3 sentences
    rows = [("", cells[start:start + columns]) for start in range(0, len(cells), columns)]
    return thumbnail_grid_png(rows, modality.thumbnail_aspect, "most confident mistakes (true -> predicted)")


def read_log(bundle: Bundle) -> list[dict]:
    """The bundle's epoch records (empty when it has no log)."""
    path = Path(bundle.path) / LOG_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise CnncliError(f"{path}: unreadable training log ({error})") from None
    try:
        return [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as error:
        raise CnncliError(f"{path}:{error.lineno}: not a JSON line ({error.msg})") from None
