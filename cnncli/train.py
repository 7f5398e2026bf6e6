"""`cnncli train`: recipe -> data -> fitted preprocessing -> trained network -> bundle.

After every epoch the bundle is rewritten (atomically, status "partial"), so a crash or ^C
loses at most one epoch. Test metrics are computed once, on the final model, at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from cnncli.bundle import save_bundle
from cnncli.config import Config
from cnncli.data.split import Splits, load_splits
from cnncli.errors import CnncliError
from cnncli.modalities import modality_class
from cnncli.modalities.base import Modality, check_augment_keys
from cnncli.progress import Progress


@dataclass
class TrainOutcome:
    bundle: Path
    metrics: dict  # {"val": {...}, "test": {...}} of the final model
    history: list[dict]
    training: dict


def train(config: Config, out: str | Path, progress: Progress = Progress()) -> TrainOutcome:
    """Train the recipe's network and write the bundle to `out`."""
    import torch

    from cnncli.device import pick_device, set_threads
    from cnncli.engine import TensorData, fit, predict_probabilities
    from cnncli.metrics import classification_report
    from cnncli.model import build_network

    started = time.perf_counter()
    out = Path(out)
    set_threads(config.train.threads)
    device = pick_device(config.train.device)
    modality_type = modality_class(config.data.modality)
    check_augment_keys(modality_type, config)
    splits = load_splits(config, modality_type.extensions)
    if len(splits.labels) < 2:
        raise CnncliError(f"data.train: found only the label {splits.labels} in the training data; need at least two")
    modality = modality_type.from_config(config)
    modality.fit(splits.train)
    parts = {name: encode_part(modality, samples, splits.labels, name, progress)
             for name, samples in (("train", splits.train), ("val", splits.val), ("test", splits.test))}
    skipped = {name: failures for name, (_, failures) in parts.items() if failures}
    for name, failures in skipped.items():
        progress.note(f"warning: skipped {len(failures)} unreadable {name} sample(s), e.g. {failures[0]}")
    train_data, val_data, test_data = (parts[name][0] for name in ("train", "val", "test"))
    if len(train_data) == 0:
        raise CnncliError("data.train: no training sample could be read")
    modality.fit_encoded(train_data.inputs)
    torch.manual_seed(config.train.seed)
    network = build_network(config.model.blocks, modality.build_stem(), modality.input_shape, len(splits.labels))
    encode_seconds = round(time.perf_counter() - started, 2)

    history: list[dict] = []

    def training_info(**more) -> dict:
        return {"device": str(device), "threads": torch.get_num_threads(), "encode_seconds": encode_seconds,
                "skipped": {name: len(failures) for name, failures in skipped.items()}, **more}

    def checkpoint(record: dict, trained) -> None:
        history.append(record)
        progress.note(format_epoch(record))
        save_bundle(out, trained, config, splits.labels, modality, status="partial", split=splits.record,
                    metrics={}, training=training_info(epochs_run=record["epoch"]), log=history)

    result = fit(network, modality, train_data, val_data, config.train, device, progress, checkpoint)
    metrics = {}
    for name, data in (("val", val_data), ("test", test_data)):
        if len(data):
            probabilities = predict_probabilities(network, data.inputs, config.train.eval_batch_size, device)
            metrics[name] = classification_report(data.targets.tolist(), probabilities.argmax(1).tolist(),
                                                  splits.labels)
    training = training_info(
        epochs_run=len(result.history), kept=result.kept, kept_epoch=result.kept_epoch,
        stopped_early=result.stopped_early, fit_seconds=result.seconds,
        total_seconds=round(time.perf_counter() - started, 2),
    )
    network.cpu()
    save_bundle(out, network, config, splits.labels, modality, status="complete", split=splits.record,
                metrics=metrics, training=training, log=result.history, extra_files=training_plots(result.history, metrics))
    return TrainOutcome(out, metrics, result.history, training)


def encode_part(modality: Modality, samples, labels: list[str], name: str, progress: Progress):
    """Encode one split; returns its TensorData and the error messages of samples that failed."""
    import torch

    from cnncli.engine import TensorData

    if not samples:
        return TensorData(torch.empty((0, *modality.input_shape)), torch.empty(0, dtype=torch.long)), []
    with progress.task(f"preparing {name} ({len(samples)})", len(samples)) as advance:
        encoded = modality.encode_many(samples, advance)
    index_of = {label: i for i, label in enumerate(labels)}
    targets = torch.tensor([index_of[samples[i].label] for i in encoded.index], dtype=torch.long)
    return TensorData(encoded.tensor, targets), list(encoded.failures.values())


def format_epoch(record: dict) -> str:
    text = (f"epoch {record['epoch']:>3}  loss {record['train_loss']:.4f}  acc {record['train_accuracy']:.4f}")
    if "val_loss" in record:
        text += f"  val_loss {record['val_loss']:.4f}  val_acc {record['val_accuracy']:.4f}"
    return text + f"  lr {record['lr']:.2e}  {record['samples_per_second']:.0f} samples/s  {record['seconds']:.1f}s"


def training_plots(history: list[dict], metrics: dict) -> dict[str, bytes]:
    """curves.png and confusion.png for the bundle (empty when matplotlib is missing)."""
    try:
        from cnncli.plots import confusion_png, curves_png
    except ImportError:
        return {}
    files = {"curves.png": curves_png(history)}
    if "test" in metrics:
        files["confusion.png"] = confusion_png(metrics["test"])
    return files
