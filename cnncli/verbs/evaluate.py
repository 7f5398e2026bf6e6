"""`cnncli eval`: a bundle's metrics on its recipe's test split, or on other data.

Other data is read with the bundle's own data rules (format, label regex, columns, encoding,
preprocessing), so `eval BUNDLE NEW_FOLDER` needs no other flag. The report includes the expected
calibration error before and after the bundle's temperature (cnncli.nn.calibration).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cnncli.bundle.io import Bundle
from cnncli.data.sample import Sample
from cnncli.data.sources import read_sources
from cnncli.data.split import check_known_labels, load_splits
from cnncli.errors import CnncliError
from cnncli.nn.adaptation import adapted_to
from cnncli.nn.calibration import expected_calibration_error, scaled_probabilities
from cnncli.nn.inference import for_inference, network_outputs
from cnncli.nn.metrics import classification_report
from cnncli.runtime.device import pick_device
from cnncli.runtime.progress import Progress
from cnncli.training.encoding import encode_split


@dataclass
class Evaluation:
    """An evaluation and what it was computed from, for a report that looks closer."""

    report: dict  # what `cnncli eval` prints: classification_report + bundle, data, skipped, notes
    samples: list[Sample]  # the samples that could be read, in the order of the rows below
    inputs: torch.Tensor  # encoded
    targets: torch.Tensor
    probabilities: torch.Tensor  # calibrated by the bundle's temperature, as predict scores


def evaluate(bundle: Bundle, data: Sequence[str] = (), batch_size: int = 512, device=None,
             progress: Progress = Progress(), adapt: bool = False) -> dict:
    """Classification report of `bundle` on `data` (paths) or, when empty, its recipe's test split;
    with `adapt`, by the network with its batch norm statistics measured on that data first
    (cnncli.nn.adaptation)."""
    return run_evaluation(bundle, data, batch_size, device, progress, adapt).report


def run_evaluation(bundle: Bundle, data: Sequence[str] = (), batch_size: int = 512, device=None,
                   progress: Progress = Progress(), adapt: bool = False) -> Evaluation:
    """`evaluate`, keeping the samples, their encodings and the predicted probabilities."""
    device = device or pick_device("auto")
    samples, source, notes = evaluation_samples(bundle, data)
    split = encode_split(bundle.modality, samples, bundle.labels, "evaluating", progress)
    encoded, failures = split.data, split.failures
    notes += split.notes
    if len(encoded) == 0:
        raise CnncliError(f"{source}: no sample could be read ({failures[0] if failures else 'empty'})")
    network = bundle.network
    if adapt:
        network = adapted_to(network, bundle.modality, encoded.inputs, device)
    outputs = network_outputs(for_inference(network, device), bundle.modality, encoded.inputs, batch_size, device)
    report = classification_report(encoded.targets.tolist(), outputs.argmax(1).tolist(), bundle.labels)
    report.update(bundle=str(bundle.path), data=source, skipped=failures, notes=notes,
                  calibration=calibration_report(bundle, outputs, encoded.targets))
    if adapt:
        report["adapted_on"] = len(encoded)  # batch norm statistics measured on these inputs (--adapt)
    probabilities = scaled_probabilities(outputs, bundle.temperature)  # the scores predict gives
    return Evaluation(report, [samples[i] for i in split.index], encoded.inputs, encoded.targets, probabilities)


def evaluation_samples(bundle: Bundle, data: Sequence[str]) -> tuple[list[Sample], str, list[str]]:
    """(labelled samples, where they came from, notes): `data` read with the bundle's rules, or
    its recipe's test split."""
    config = bundle.config
    notes = []
    if data:
        data_config = dataclasses.replace(config.data, root=str(Path.cwd()))
        samples = read_sources(list(data), data_config, bundle.modality)
        source = ", ".join(data)
    else:
        splits = load_splits(config, bundle.modality)
        samples, source = splits.test, f"test split of the recipe ({splits.record['test_rule']})"
        if not samples:
            raise CnncliError(f"{bundle.path}: its recipe has no test split; give data to evaluate on")
        trained_digest = bundle.info.get("split", {}).get("test_digest")
        if trained_digest and trained_digest != splits.record["test_digest"]:
            notes.append("the test split differs from the one recorded at training (the data changed)")
    unlabelled = next((sample for sample in samples if sample.label is None), None)
    if unlabelled:
        raise CnncliError(f"{unlabelled.locator}: has no label, so it cannot be evaluated (use predict)")
    check_known_labels(samples, bundle.labels)
    return samples, source, notes


def calibration_report(bundle: Bundle, outputs, targets) -> dict:
    """How well the scores match accuracy on this data: the expected calibration error of the
    plain softmax and of the bundle's calibrated scores (the same when it has no temperature)."""
    fitted = bundle.info.get("calibration") or {}
    temperature = bundle.temperature
    return {"temperature": temperature, "fitted_on": fitted.get("fitted_on"),
            "ece_before": round(expected_calibration_error(scaled_probabilities(outputs), targets), 4),
            "ece_after": round(expected_calibration_error(scaled_probabilities(outputs, temperature), targets), 4)}
