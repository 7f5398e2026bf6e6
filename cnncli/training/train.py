"""`cnncli train`: recipe -> data -> fitted preprocessing -> trained network -> bundle.

After every epoch the bundle is rewritten (atomically, status "partial"), so a crash or ^C
loses at most one epoch. Test metrics are computed once, on the final model, at the end, and a
temperature is fitted on the validation rows (out-of-fold rows for a cross-validation ensemble)
so that the bundle's scores match its accuracy (cnncli.nn.calibration). Before any data are read,
the output folder must be writable (and hold no bundle unless `overwrite`) and the network must
fit cnncli.limits; a loss that stops being finite stops the run, whose bundle then stays partial.
Under torchrun every process prepares the data and trains its share, and only rank 0 writes:
every write of a run goes through `write_bundle`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnncli.bundle.io import MODEL_FILE, read_info, save_bundle
from cnncli.bundle.resume_state import TrainState, to_files
from cnncli.data.split import Splits, load_splits, with_training_samples
from cnncli.errors import CnncliError
from cnncli.files.atomic import check_writable
from cnncli.files.lock import writer_lock
from cnncli.modalities import modality_class
from cnncli.modalities.base import Modality
from cnncli.nn.calibration import calibrate
from cnncli.nn.layers import layer_table
from cnncli.nn.metrics import classification_report
from cnncli.nn.model import Ensemble, check_network_size, member_seed
from cnncli.recipe.defaults import fitted_model
from cnncli.recipe.schema import Config
from cnncli.runtime.device import measure_peak_gflops, pick_device, pick_precision, set_threads
from cnncli.runtime.distributed import SINGLE, Cluster, from_environment, joined
from cnncli.runtime.progress import Progress
from cnncli.training import autotune
from cnncli.training.budget import BackboneFit, RunClock, network_weights
from cnncli.training.encoding import Rows, rows_of
from cnncli.training.engine import FitResult, TrainingDiverged, fit, split_outputs
from cnncli.training.loading import DataPlan, load_split, plan_data
from cnncli.training.tracking import Tracker, check_tracker, tracking
from cnncli.training.transfer import Start, fresh_network, read_start


@dataclass
class TrainOutcome:
    bundle: Path
    metrics: dict  # {"val": {...}, "test": {...}} of the final model
    history: list[dict]
    training: dict
    calibration: dict | None = None  # the temperature fitted on held-out rows (cnncli.nn.calibration)
    rank: int = 0  # under torchrun, only rank 0's outcome carries the metrics (and is printed)

    def summary(self) -> dict:
        """What `cnncli train` reports: the bundle, each split's accuracy and count, the calibration, the run."""
        keep = ("accuracy", "n", "out_of_fold", "members")
        return {"bundle": str(self.bundle),
                "metrics": {part: {key: m[key] for key in keep if key in m} for part, m in self.metrics.items()},
                "calibration": self.calibration, "training": self.training}


@dataclass
class Prepared:
    """Everything a training run starts from: fitted preprocessing, encoded splits, a fresh network."""

    config: Config
    splits: Splits
    modality: Modality
    train: Any  # TensorData held in memory, or cnncli.training.loading.StreamedData
    val: Any
    test: Any
    network: torch.nn.Module
    device: torch.device
    skipped: dict[str, list[str]]
    seconds: float
    plan: DataPlan
    cluster: Cluster = SINGLE
    folds: torch.Tensor | None = None  # with train.rotate_val: the validation fold of each row of `train`
    history: list[dict] = field(default_factory=list)  # every epoch record so far, all members
    train_flops: float | None = None  # per training sample; None when the work varies by batch
    peak_gflops: float = 0.0  # this machine's matrix-multiply rate, the yardstick for training speed
    choice: dict | None = None  # with augment: auto, what was chosen and how each candidate scored
    short_budget: bool = False  # train.budget too short for the smallest auto backbone: no time for augment trials
    recipe: Config | None = None  # the recipe as given, which bundles record (`config` may hold auto's choice)
    tracker: Tracker = field(default_factory=Tracker)  # train.track: where the epochs go besides the bundle
    start: Start = field(default_factory=Start)  # the weights every network of the run starts from
    on_epoch: Callable[[dict], None] | None = None  # the caller's, after each epoch's checkpoint; may raise to stop
    clock: RunClock = field(default_factory=RunClock)  # the run's time: train.budget, or the estimate shown

    def info(self, **more) -> dict:
        """The bundle's `training` record: where and how the run went, plus `more`."""
        read = self.splits.record.get("read", {})
        extra = {"auto": self.choice} if self.choice is not None else {}
        if read.get("skipped_lines"):
            extra["skipped_lines"] = {"count": read["skipped_lines"], "lines": read["skipped"]}
        if read.get("encodings"):
            extra["encodings"] = read["encodings"]
        extra.update({"start": self.start.record()} if self.start.record() else {})  # model.pretrained, model.init
        return {"device": str(self.device), "threads": torch.get_num_threads(), "world_size": self.cluster.world_size,
                "precision": pick_precision(self.config.train.precision, self.device).name,
                "in_memory": self.plan.in_memory, "workers": self.plan.workers, "encode_seconds": self.seconds,
                "train_flops_per_sample": self.train_flops, "peak_gflops": round(self.peak_gflops, 1),
                "skipped": {name: len(failures) for name, failures in self.skipped.items()}, **extra, **more}


def prepare(config: Config, progress: Progress = Progress(), cache: Path | None = None, cluster: Cluster = SINGLE,
            device: torch.device | None = None) -> Prepared:
    """Read and split the data, fit the preprocessing, encode every split (or plan to stream
    them), build the network. `cache`: the folder where the modality may keep what it recomputes
    (cnncli.files.cache), or None; `cluster`: this process's place under torchrun."""

    started = time.perf_counter()
    set_threads(config.train.threads)
    device = device or pick_device(config.train.device)
    modality_type = modality_class(config.data.modality)
    modality = modality_type.from_config(config)
    modality.use_cache(cache)
    config, start = read_start(config, modality, progress)  # model.pretrained, model.init: where weights start
    check_size(modality, config, classes=2, before_data=True)
    splits = load_splits(config, modality_type)
    for note in splits.notes:
        progress.note(note)
    if len(splits.labels) < 2:
        raise CnncliError(f"data.train: found only the label {splits.labels} in the training data; need at least two")
    modality.fit(splits.train)
    splits = with_training_samples(splits, modality.extra_training_samples(splits.train))
    fits_budget = BackboneFit(config, modality, len(splits.train), device)
    config, chosen = fitted_model(config, modality, len(splits.train), fits_budget)  # model.blocks: auto
    check_size(modality, config, classes=len(splits.labels))
    for note in modality.fitted_notes() + chosen:
        progress.note(note)
    plan = plan_data(config.data, modality, sum(splits.record["counts"].values()), cluster)
    progress.note(plan.message)
    parts = {name: load_split(modality, samples, splits.labels, name, plan, progress, fit=name == "train")
             for name, samples in (("train", splits.train), ("val", splits.val), ("test", splits.test))}
    folds = None
    if splits.folds is not None:
        folds = torch.tensor([splits.folds[i] for i in parts["train"].index], dtype=torch.long)
    skipped = {name: part.failures for name, part in parts.items() if part.failures}
    for name, failures in skipped.items():
        progress.note(f"warning: skipped {len(failures)} unreadable {name} sample(s), e.g. {failures[0]}")
    for note in dict.fromkeys(note for part in parts.values() for note in part.notes):
        progress.note(f"warning: {note}")
    if len(parts["train"].data) == 0:
        raise CnncliError("data.train: no training sample could be read")
    torch.manual_seed(config.train.seed)
    network = fresh_network(modality, config, len(splits.labels), start, progress)
    return Prepared(config, splits, modality, parts["train"].data, parts["val"].data, parts["test"].data, network,
                    device, skipped, round(time.perf_counter() - started, 2), plan, cluster, folds,
                    recipe=config, start=start, short_budget=fits_budget.none_fit)


def check_size(modality: Modality, config: Config, classes: int, before_data: bool = False) -> None:
    """The network and a batch fit cnncli.limits: before the data are read when the recipe alone
    fixes the shapes, and always once the modality is fitted."""
    if before_data and (not modality.shape_from_recipe or config.model.blocks == "auto"):
        return
    check_network_size(modality, config.model, classes, max(config.train.batch_size,
                       config.train.eval_batch_size), config.train.ensemble)


def check_output(out: Path, resuming: bool, overwrite: bool) -> None:
    """Fail before any work if the bundle could not be written to `out`, or would replace a
    bundle the user did not ask to replace."""
    check_writable(out, "--out", folder=True)
    if resuming or not out.is_dir():
        return
    if (out / MODEL_FILE).is_file():
        if not overwrite:
            status = "a partial run (continue it with --resume)" if read_info(out)["status"] == "partial" else \
                "a trained bundle"
            raise CnncliError(f"--out {out}: holds {status}; pass --overwrite to replace it, or choose another --out")
    elif any(out.iterdir()):
        raise CnncliError(f"--out {out}: exists and is not a cnncli bundle; choose another --out")


def train(config: Config, out: str | Path, progress: Progress = Progress(), resume: TrainState | None = None,
          cache: Path | None = None, overwrite: bool = False, on_epoch=None, score_test: bool = True,
          started: float | None = None) -> TrainOutcome:
    """Train the recipe's network and write the bundle to `out`; with `resume` (read from a
    partial bundle by `read_resume_state`, or members trained elsewhere: cnncli.experiments.reuse),
    continue that run where its last epoch ended.
    `cache`: see `prepare`; `overwrite`: replace a bundle already at `out`. Started by torchrun,
    train as one of its processes (only rank 0 prints and writes). `on_epoch`: see Prepared;
    `score_test=False` leaves the test split alone (tune's trials are judged on validation only).
    `started`: when train.budget's clock started (time.monotonic(); default: now)."""
    out = Path(out)
    place = from_environment()
    with writer_lock(out if place.writes else None, "--out"):  # one writer per bundle (cnncli.files.lock)
        if place.writes:  # the one process that will write checks that it can
            check_output(out, resume is not None and resume.trained_in is None, overwrite)
            check_tracker(config.train.track)
        device = pick_device(config.train.device, place.local_rank if place.distributed else None)
        try:
            with joined(device, config.train.sync_batch_norm) as cluster:
                return train_as(cluster, device, config, out, progress if cluster.writes else Progress(), resume,
                                cache, on_epoch, score_test, started)
        except TrainingDiverged as error:
            kept = "; the bundle there stays partial, at its last finite epoch" if (out / MODEL_FILE).is_file() \
                and read_info(out)["status"] == "partial" else "; no bundle was written"
            raise TrainingDiverged(f"{error} ({out}{kept})") from None


def train_as(cluster: Cluster, device: torch.device, config: Config, out: Path, progress: Progress,
             resume: TrainState | None, cache: Path | None, on_epoch=None, score_test: bool = True,
             started: float | None = None) -> TrainOutcome:
    """`train`, as process `cluster.rank` of `cluster.world_size`."""
    clock = RunClock(config.train.budget, progress, cluster.distributed, started=started)
    started = time.perf_counter()
    run = prepare(config, progress, cache, cluster, device)
    run.on_epoch, run.clock = on_epoch, clock
    run.train_flops, run.peak_gflops = training_flops(run.network, run.modality), measure_peak_gflops(run.device)
    if resume is not None and resume.trained_in is None:
        check_resumable(read_info(out), run, out)
    clock.plan(network_weights(run), len(run.val) + len(run.test))
    with tracking(config.train.track, out, dataclasses.asdict(config), cluster.writes) as run.tracker:
        if config.augment.auto:
            resume = autotune.settle(run, out, progress, resume, member_data)
        members, results = train_members(run, out, progress, resume)
        run.network = assemble(members)
        if not cluster.writes:
            return TrainOutcome(out, {}, run.history, {}, rank=cluster.rank)
        metrics, calibration = final_metrics(run, members, score_test)
        run.tracker.finish(metrics)
        training = run.info(
            epochs_run=per_member_value([len(r.history) for r in results]), kept=results[0].kept,
            kept_epoch=per_member_value([r.kept_epoch for r in results]),
            stopped_early=per_member_value([r.stopped_early for r in results]),
            fit_seconds=round(sum(r.seconds for r in results), 2), members=config.train.ensemble,
            total_seconds=round(time.perf_counter() - started, 2),
        )
        write_bundle(run, out, run.network.cpu(), status="complete", metrics=metrics, training=training,
                     files=lambda: training_plots(run.history, metrics), calibration=calibration)
        return TrainOutcome(out, metrics, run.history, training, calibration)


def write_bundle(run: Prepared, out: Path, network, status: str, metrics: dict, training: dict,
                 files: Callable[[], dict[str, bytes]], calibration: dict | None = None) -> None:
    """The one place a training run writes (the bundle, its log, its resume state, plots and tracked
    files), and only rank 0 reaches it; `files` are made only there."""
    if run.cluster.writes:
        save_bundle(out, network, run.recipe or run.config, run.splits.labels, run.modality, status=status,
                    split=run.splits.record, calibration=calibration, metrics=metrics, training=training,
                    log=run.history, extra_files={**files(), **run.tracker.files()})


def check_resumable(info: dict, run: Prepared, out: Path) -> None:
    """A resumed run must see the same test split and run as many processes as before."""
    if run.splits.record.get("test_digest") != info["split"].get("test_digest"):
        raise CnncliError(f"{out}: the data have changed since this run started (another test split); "
                          "start a new run instead of resuming")
    before = info.get("training", {}).get("world_size", 1)
    if before != run.cluster.world_size:
        raise CnncliError(f"{out}: this run trained in {before} process(es) and now has {run.cluster.world_size}; "
                          f"resume it with torchrun --nproc-per-node (and --nnodes) giving {before} in all")


def final_metrics(run: Prepared, members: list, score_test: bool = True) -> tuple[dict, dict | None]:
    """The final model's metrics per split (a cross-validation ensemble's val: out-of-fold; test
    only with `score_test`), and the temperature fitted on its validation rows (None when the
    recipe turns calibration off). Samples a streamed split could not read are counted as skipped."""
    config = run.config
    metrics, held_out = {}, (torch.empty(0, len(run.splits.labels)), torch.empty(0, dtype=torch.long), "val")
    if run.folds is not None:  # each fold scored by the members that did not train on it
        scores, targets = out_of_fold_probabilities(run, members)
        metrics["val"] = {**classification_report(targets.tolist(), scores.argmax(1).tolist(),
                                                  run.splits.labels), "out_of_fold": True}
        held_out = (scores.clamp_min(torch.finfo(scores.dtype).tiny).log(), targets, "out_of_fold")
    for name, data in (("val", run.val), ("test", run.test))[:2 if score_test else 1]:
        if len(data):
            outputs, targets = split_outputs(run.network, data, config.train.eval_batch_size, run.device)
            predicted = torch.softmax(outputs, dim=1).argmax(1)  # as before calibration: same ties, same figures
            metrics[name] = classification_report(targets.tolist(), predicted.tolist(), run.splits.labels)
            if len(members) > 1:  # each network alone, beside the ensemble
                metrics[name]["members"] = [member_accuracy(member, data, run) for member in members]
            if name == "val" and run.folds is None:
                held_out = (outputs, targets, "val")
            unread = list(getattr(data, "failures", {}).values())
            if unread:
                run.skipped[name] = run.skipped.get(name, []) + unread
    return metrics, calibrate(*held_out) if config.train.calibrate else None


def train_members(run: Prepared, out: Path, progress: Progress, resume: TrainState | None) -> tuple[list, list]:
    """Train each ensemble member in turn (one for a single network), checkpointing the partial
    bundle after every epoch; members a resumed run had finished are loaded, not trained."""
    config = run.config
    state = resume or TrainState(member=0)
    run.history = state.history
    members: list = []
    results: list = []
    count = config.train.ensemble
    for index in range(count):
        network = run.network if index == 0 else fresh_network(  # each member from its own seed
            run.modality, config, len(run.splits.labels), run.start, seed=member_seed(config.train.seed, index),
            device=run.device)
        if index < state.member:  # trained before the run was interrupted
            try:
                network.load_state_dict(state.finished[index])
            except RuntimeError as error:
                raise CnncliError(f"{out}: the resume state of member {index + 1} does not fit the recipe's network "
                                  f"({str(error).splitlines()[0]})") from None
            members.append(network)
            results.append(FitResult(**state.finished_results[index]))
            if state.trained_in:
                progress.note(f"member {index + 1}: trained in {state.trained_in}, taken from there")
            continue

        def checkpoint(record: dict, trained, capture, index=index) -> None:
            if run.train_flops:
                gflops = record["samples_per_second"] * run.train_flops / 1e9
                record.update(gflops=round(gflops, 2), peak_share=round(gflops / run.peak_gflops, 4))
            if count > 1:
                record["member"] = index + 1
            run.history.append(record)
            progress.epoch(record, count)
            run.tracker.epoch(len(run.history), record)
            snapshot = TrainState(member=index, finished=[m.state_dict() for m in members],
                                  finished_results=[dataclasses.asdict(r) for r in results], history=run.history,
                                  fit=capture())  # on every rank: it gathers their random streams
            write_bundle(run, out, assemble(members + [trained]), status="partial", metrics={},
                         training=run.info(epochs_run=record["epoch"], members_done=index),
                         files=lambda: to_files(snapshot))
            if run.on_epoch:
                run.on_epoch(record)

        settings = dataclasses.replace(config.train, seed=member_seed(config.train.seed, index))
        member_train, member_val = member_data(run, index)
        results.append(fit(network, run.modality, member_train, member_val, settings, run.device, progress,
                           checkpoint, state.fit if index == state.member else None, run.cluster,
                           run.clock.pace(len(member_train), settings.batch_size)))
        members.append(network)
    return members, results


def member_accuracy(member, data: Any, run: Prepared) -> float:
    """One ensemble member's accuracy on a split held in memory or streamed."""
    outputs, targets = split_outputs(member, data, run.config.train.eval_batch_size, run.device)
    return round(float((outputs.argmax(1) == targets).float().mean()), 5)


def training_flops(network, modality: Modality) -> float | None:
    """FLOPs to train on one sample: about 3x the forward pass (forward, and backward for inputs
    and weights), one connection being one multiply-add, i.e. 2 FLOPs. None when the stem cuts
    batches to the padding they need: the work then varies, so no rate is claimed for it."""
    if network.trims_batches:
        return None
    return 6 * layer_table(network, modality.input_shape)["total_connections"]


def member_data(run: Prepared, index: int) -> tuple:
    """Ensemble member `index`'s training and validation data: the shared split, or with
    train.rotate_val every training row outside the member's own fold, which it validates on
    (rows of the shared split, not copies)."""
    if run.folds is None:
        return run.train, run.val
    held = run.folds == index % run.splits.fold_count
    return rows_of(run.train, ~held), rows_of(run.train, held)


def out_of_fold_probabilities(run: Prepared, members: list) -> "tuple[torch.Tensor, torch.Tensor]":
    """(probabilities, targets) of the training rows in the folds some member held out, each row
    scored by the members that held it out: a validation figure no member has trained on."""
    count = run.splits.fold_count
    scores, targets = [], []
    for fold in range(count):
        held = Rows(run.train, (run.folds == fold).nonzero().flatten())
        judges = [member for index, member in enumerate(members) if index % count == fold]
        if judges and len(held):
            outputs = [split_outputs(member, held, run.config.train.eval_batch_size, run.device) for member in judges]
            scores.append(torch.stack([torch.softmax(logits, dim=1) for logits, _ in outputs]).mean(0))
            targets.append(outputs[0][1])
    return torch.cat(scores), torch.cat(targets)


def assemble(members: list):
    return members[0] if len(members) == 1 else Ensemble(members)


def per_member_value(values: list):
    """One value for a single network, the list of the members' values for an ensemble."""
    return values[0] if len(values) == 1 else values


def training_plots(history: list[dict], metrics: dict) -> dict[str, bytes]:
    """curves.png and confusion.png for the bundle."""
    from cnncli.output.plots import confusion_png, curves_png

    files = {"curves.png": curves_png(history)}
    if "test" in metrics:
        files["confusion.png"] = confusion_png(metrics["test"])
    return files
