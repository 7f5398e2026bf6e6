"""`cnncli train`: recipe -> data -> fitted preprocessing -> trained network -> bundle.

After every epoch the bundle is rewritten (atomically, status "partial"), so a crash or ^C
loses at most one epoch. Test metrics are computed once, on the final model, at the end.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cnncli.bundle import save_bundle
from cnncli.config import Config
from cnncli.data.split import Splits, fold_count, load_splits
from cnncli.errors import CnncliError
from cnncli.modalities import modality_class
from cnncli.modalities.base import Modality, check_augment_keys
from cnncli.progress import Progress

if TYPE_CHECKING:
    import torch

    from cnncli.engine import TensorData
    from cnncli.resume_state import TrainState


@dataclass
class TrainOutcome:
    bundle: Path
    metrics: dict  # {"val": {...}, "test": {...}} of the final model
    history: list[dict]
    training: dict


@dataclass
class Prepared:
    """Everything a training run starts from: fitted preprocessing, encoded splits, a fresh network."""

    config: Config
    splits: Splits
    modality: Modality
    train: "TensorData"
    val: "TensorData"
    test: "TensorData"
    network: "torch.nn.Module"
    device: "torch.device"
    skipped: dict[str, list[str]]
    seconds: float
    folds: "torch.Tensor | None" = None  # with train.rotate_val: the validation fold of each row of `train`


def prepare(config: Config, progress: Progress = Progress()) -> Prepared:
    """Read and split the data, fit the preprocessing, encode every split, build the network."""
    import torch

    from cnncli.device import pick_device, set_threads
    from cnncli.model import build_network

    started = time.perf_counter()
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
    folds = None
    if splits.folds is not None:
        folds = torch.tensor([splits.folds[i] for i in parts["train"][2]], dtype=torch.long)
    skipped = {name: failures for name, (_, failures, _) in parts.items() if failures}
    for name, failures in skipped.items():
        progress.note(f"warning: skipped {len(failures)} unreadable {name} sample(s), e.g. {failures[0]}")
    if len(parts["train"][0]) == 0:
        raise CnncliError("data.train: no training sample could be read")
    modality.fit_encoded(parts["train"][0].inputs)
    torch.manual_seed(config.train.seed)
    network = build_network(config.model.blocks, modality.build_stem(), modality.input_shape, len(splits.labels))
    return Prepared(config, splits, modality, parts["train"][0], parts["val"][0], parts["test"][0], network, device,
                    skipped, round(time.perf_counter() - started, 2), folds)


def train(config: Config, out: str | Path, progress: Progress = Progress(),
          resume: "TrainState | None" = None) -> TrainOutcome:
    """Train the recipe's network and write the bundle to `out`; with `resume` (read from a
    partial bundle by `read_resume_state`), continue that run where its last epoch ended."""
    import torch

    from cnncli.engine import FitResult, fit, predict_probabilities
    from cnncli.metrics import classification_report

    from cnncli.device import measure_peak_gflops
    from cnncli.inspection import layer_table
    from cnncli.model import member_seed
    from cnncli.resume_state import TrainState, to_files

    started = time.perf_counter()
    out = Path(out)
    run = prepare(config, progress)
    if resume is not None and run.splits.record.get("test_digest") != resume_split(out).get("test_digest"):
        raise CnncliError(f"{out}: the data have changed since this run started (another test split); "
                          "start a new run instead of resuming")
    state = resume or TrainState(member=0)
    history: list[dict] = state.history
    # Training costs about 3x the forward pass (forward, and backward for inputs and weights);
    # one connection is one multiply-add, i.e. 2 FLOPs. A text stem that cuts batches to the
    # padding they need does less than that, by an amount that varies: no rate is claimed for it.
    trims = getattr(run.network.stem, "padding_margin", None) is not None
    train_flops = None if trims else 6 * layer_table(run.network, run.modality.input_shape)["total_connections"]
    peak_gflops = measure_peak_gflops(run.device)

    def training_info(**more) -> dict:
        return {"device": str(run.device), "threads": torch.get_num_threads(), "encode_seconds": run.seconds,
                "train_flops_per_sample": train_flops, "peak_gflops": round(peak_gflops, 1),
                "skipped": {name: len(failures) for name, failures in run.skipped.items()}, **more}

    members: list = []  # the ensemble's members trained so far
    results = []
    count = config.train.ensemble
    for index in range(count):
        network = run.network if index == 0 else build_member(config, run, index)
        if index < state.member:  # trained before the run was interrupted
            network.load_state_dict(state.finished[index])
            members.append(network)
            results.append(FitResult(**state.finished_results[index]))
            continue
        settings = dataclasses.replace(config.train, seed=member_seed(config.train.seed, index))

        def checkpoint(record: dict, trained, capture, index=index) -> None:
            if train_flops:
                gflops = record["samples_per_second"] * train_flops / 1e9
                record.update(gflops=round(gflops, 2), peak_share=round(gflops / peak_gflops, 4))
            if count > 1:
                record["member"] = index + 1
            history.append(record)
            progress.note(format_epoch(record, count))
            snapshot = TrainState(member=index, finished=[m.state_dict() for m in members],
                                  finished_results=[dataclasses.asdict(r) for r in results], history=history,
                                  fit=capture())
            save_bundle(out, assemble(members + [trained]), config, run.splits.labels, run.modality,
                        status="partial", split=run.splits.record, metrics={}, log=history,
                        training=training_info(epochs_run=record["epoch"], members_done=index),
                        extra_files=to_files(snapshot))

        resume_fit = state.fit if index == state.member else None
        member_train, member_val = member_data(run, index)
        results.append(fit(network, run.modality, member_train, member_val, settings, run.device, progress,
                           checkpoint, resume_fit))
        members.append(network)
    run.network = assemble(members)
    metrics = {}
    if run.folds is not None:  # each fold scored by the members that did not train on it
        probabilities, targets = out_of_fold_probabilities(run, members)
        metrics["val"] = {**classification_report(targets.tolist(), probabilities.argmax(1).tolist(),
                                                  run.splits.labels), "out_of_fold": True}
    for name, data in (("val", run.val), ("test", run.test)):
        if len(data):
            probabilities = predict_probabilities(run.network, data.inputs, config.train.eval_batch_size, run.device)
            metrics[name] = classification_report(data.targets.tolist(), probabilities.argmax(1).tolist(),
                                                  run.splits.labels)
    result = results[0]
    training = training_info(
        epochs_run=per_member_value(results, "epochs_run"), kept=result.kept,
        kept_epoch=per_member_value(results, "kept_epoch"),
        stopped_early=per_member_value(results, "stopped_early"),
        fit_seconds=round(sum(r.seconds for r in results), 2), members=count,
        total_seconds=round(time.perf_counter() - started, 2),
    )
    run.network.cpu()
    save_bundle(out, run.network, config, run.splits.labels, run.modality, status="complete",
                split=run.splits.record, metrics=metrics, training=training, log=history,
                extra_files=training_plots(history, metrics))
    return TrainOutcome(out, metrics, history, training)


def read_resume_state(path: str | Path, overrides: list[str] = ()) -> "tuple[Config, TrainState]":
    """The recipe and training state saved in a partial bundle, for `train --resume`. Only where
    and how fast it runs may change (train.threads, train.device, the audio cache)."""
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from cnncli.bundle import read_info
    from cnncli.config import config_to_dict, load_config
    from cnncli.resume_state import STATE_FILE, TENSORS_FILE, from_files

    path = Path(path)
    info = read_info(path)
    if info["status"] == "complete":
        raise CnncliError(f"{path}: this run finished; there is nothing to resume")
    if not (path / STATE_FILE).exists() or not (path / TENSORS_FILE).exists():
        raise CnncliError(f"{path}: has no resume state ({STATE_FILE}); it was written by an older cnncli")
    config = load_config(info["recipe"], list(overrides))
    changed = _changed_keys(config_to_dict(config), info["recipe"]) - RESUME_MAY_CHANGE
    if changed:
        raise CnncliError(f"--set {sorted(changed)[0]}: cannot change when resuming (only "
                          f"{', '.join(sorted(RESUME_MAY_CHANGE))}); start a new run instead")
    try:
        tensors = load_file(str(path / TENSORS_FILE))
        meta = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        return config, from_files(tensors, meta)
    except (OSError, SafetensorError, json.JSONDecodeError, KeyError) as error:
        raise CnncliError(f"{path}: unreadable resume state ({error})") from None


RESUME_MAY_CHANGE = {"train.threads", "train.device", "data.audio.cache"}


def _changed_keys(new: dict, old: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key in set(new) | set(old):
        a, b, name = new.get(key), old.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            keys |= _changed_keys(a, b, f"{name}.")
        elif a != b:
            keys.add(name)
    return keys


def resume_split(path: Path) -> dict:
    from cnncli.bundle import read_info

    return read_info(path)["split"]


def build_member(config: Config, run: Prepared, index: int):
    """A fresh network for ensemble member `index`, initialised from its own seed."""
    import torch

    from cnncli.model import build_network, member_seed

    torch.manual_seed(member_seed(config.train.seed, index))
    return build_network(config.model.blocks, run.modality.build_stem(), run.modality.input_shape,
                         len(run.splits.labels)).to(run.device)


def member_data(run: Prepared, index: int) -> "tuple[TensorData, TensorData]":
    """Ensemble member `index`'s training and validation data: the shared split, or with
    train.rotate_val every training row outside the member's own fold, which it validates on."""
    if run.folds is None:
        return run.train, run.val
    held = run.folds == index % fold_count(run.config.data.split.val_fraction)
    return subset(run.train, ~held), subset(run.train, held)


def out_of_fold_probabilities(run: Prepared, members: list) -> "tuple[torch.Tensor, torch.Tensor]":
    """(probabilities, targets) of the training rows in the folds some member held out, each row
    scored by the members that held it out: a validation figure no member has trained on."""
    import torch

    from cnncli.engine import predict_probabilities

    count = fold_count(run.config.data.split.val_fraction)
    scored, parts = [], []
    for fold in range(count):
        held = (run.folds == fold).nonzero().flatten()
        judges = [member for index, member in enumerate(members) if index % count == fold]
        if judges and len(held):
            inputs = run.train.inputs[held]
            parts.append(torch.stack([predict_probabilities(member, inputs, run.config.train.eval_batch_size,
                                                            run.device) for member in judges]).mean(0))
            scored.append(held)
    rows = torch.cat(scored)
    return torch.cat(parts), run.train.targets[rows]


def subset(data: "TensorData", mask: "torch.Tensor") -> "TensorData":
    from cnncli.engine import TensorData

    return TensorData(data.inputs[mask], data.targets[mask])


def assemble(members: list):
    from cnncli.model import Ensemble

    return members[0] if len(members) == 1 else Ensemble(members)


def per_member_value(results: list, name: str):
    """One value for a single network, the list of the members' values for an ensemble."""
    values = [len(r.history) if name == "epochs_run" else getattr(r, name) for r in results]
    return values[0] if len(values) == 1 else values


def encode_part(modality: Modality, samples, labels: list[str], name: str, progress: Progress):
    """Encode one split; returns its TensorData, the error messages of samples that failed, and
    for each row the position of its sample in `samples`."""
    import torch

    from cnncli.engine import TensorData

    if not samples:
        return TensorData(torch.empty((0, *modality.input_shape)), torch.empty(0, dtype=torch.long)), [], []
    with progress.task(f"preparing {name} ({len(samples)})", len(samples)) as advance:
        encoded = modality.encode_many(samples, advance)
    index_of = {label: i for i, label in enumerate(labels)}
    targets = torch.tensor([index_of[samples[i].label] for i in encoded.index], dtype=torch.long)
    return TensorData(encoded.tensor, targets), list(encoded.failures.values()), encoded.index


def format_epoch(record: dict, members: int = 1) -> str:
    text = f"member {record['member']}/{members}  " if "member" in record else ""
    text += (f"epoch {record['epoch']:>3}  loss {record['train_loss']:.4f}  acc {record['train_accuracy']:.4f}")
    if "val_loss" in record:
        text += f"  val_loss {record['val_loss']:.4f}  val_acc {record['val_accuracy']:.4f}"
    text += f"  lr {record['lr']:.2e}  {record['samples_per_second']:.0f} samples/s"
    if "peak_share" in record:
        text += f" ({record['gflops']:.1f} GFLOP/s, {record['peak_share']:.0%} of matmul peak)"
    return text + f"  {record['seconds']:.1f}s"


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
