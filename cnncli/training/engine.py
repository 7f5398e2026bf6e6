"""The training loop: one readable loop, as fast as a hand-written one, in one process or several.

Shaped like torchvision's classification reference: `training_step` (one optimiser step, which
the learning-rate finder reuses), `train_one_epoch`, `evaluate`, and a short `fit` that calls
them, keeps the best epoch and stops early. A split is read a batch at a time (`data.batches`): index
slices of tensors held in memory (on the GPU when it is one), or files read by DataLoader workers
(cnncli.training.loading). Augmentation runs batched on the device; the forward pass in the recipe's
precision (autocast to bf16 or fp16 on GPUs). Under torchrun each process trains on its
share of every global batch and DistributedDataParallel averages the gradients, so the ranks
step as one process would; metrics are summed over the ranks. Each epoch ends with a validation
pass and one log record (loss, accuracy, learning rate, samples/s); the caller decides what to do
with it (the trainer writes it to the bundle's log and checkpoints).
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy
import torch
import torch.nn.functional as F
from torch import nn

from cnncli.bundle.resume_state import FitState
from cnncli.errors import CnncliError
from cnncli.nn.data_init import fit_layers_to_data
from cnncli.nn.model import Mix
from cnncli.runtime.device import FP32, Precision, channels_last_helps, pick_precision
from cnncli.runtime.distributed import SINGLE, Cluster
from cnncli.runtime.progress import Progress
from cnncli.training.averaging import Lookahead, WeightAverage
from cnncli.training.encoding import TensorData
from cnncli.training.freezing import hold_backbone, release_backbone
from cnncli.training.low_res import check_low_res, input_size, shrunk
from cnncli.training.optim import build_optimizer, build_schedule

__all__ = ["FitResult", "Loop", "TensorData", "TrainingDiverged", "evaluate", "fit", "split_outputs",
           "train_one_epoch", "training_step"]


# A mean cross-entropy this high puts e^-10000 on the right class: no run comes back from it
# (a run that starts near ln(classes) and learns stays below 20).
DIVERGED_LOSS = 10_000.0


class TrainingDiverged(CnncliError):
    """The loss stopped being a finite number: the weights are lost to NaN, so training stops
    rather than spend its remaining epochs on them (and the run is never marked complete)."""


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    kept_epoch: int = 0  # the epoch whose weights the network holds at the end
    kept: str = "last"
    stopped_early: bool = False
    seconds: float = 0.0


def training_step(network: nn.Module, modality: Any, inputs: torch.Tensor, targets: torch.Tensor,
                  optimizer: torch.optim.Optimizer, settings: Any, generator: torch.Generator,
                  precision: Precision = FP32, scaler: torch.amp.GradScaler | None = None,
                  loss_scale: float | None = None, size: tuple[int, int] | None = None) -> tuple:
    """Augment a batch, forward, backward, one optimiser step; (loss, logits), both detached.
    A recipe's `max_norm` (Kim's constraint on the classifier's rows) is applied after the step.

    In one process the loss is the batch's mean. With `loss_scale` (one of several processes) it
    is the sum over this process's share times world size / global batch size: DDP averages the
    processes' gradients, which then add up to the global batch mean's. `size`: see low_res."""
    augmented = shrunk(modality.augment(inputs, generator), size)
    mix = draw_mix(len(targets), settings.mixup, generator) if settings.mixup else None
    with precision.autocast():
        logits = network(augmented, mix=mix) if mix else network(augmented)
        reduction = "mean" if loss_scale is None else "sum"
        loss = F.cross_entropy(logits, targets, reduction=reduction, label_smoothing=settings.label_smoothing)
        if mix:  # the blend's loss is the same blend of the two rows' losses
            loss = mix.weight * loss + (1 - mix.weight) * F.cross_entropy(
                logits, targets[mix.order], reduction=reduction, label_smoothing=settings.label_smoothing)
        if loss_scale is not None:
            loss = loss * loss_scale
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:  # fp16: the loss scaled up so that small gradients survive; a step that overflowed is skipped
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    if settings.max_norm:
        with torch.no_grad():
            weight = getattr(network, "module", network).classifier.linear.weight  # DDP wraps the network
            weight.data = torch.renorm(weight.data, 2, 0, settings.max_norm)
    return loss.detach(), logits.detach()


def draw_mix(rows: int, alpha: float, generator: torch.Generator) -> Mix:
    """mixup (Zhang et al. 2018) for one batch: a partner for each row (a shuffle of the batch)
    and one weight from Beta(alpha, alpha), both from the augmentation stream, so a seeded or
    resumed fit draws the same blends. Teaching the network the blend of two examples' labels on
    the blend of their pictures keeps it from staking everything on the few cues of the voices
    or photos it was trained on. torch's Beta sampler takes no generator, so numpy draws the
    weight from a seed the stream gives."""
    seed = int(torch.randint(2 ** 62, (1,), generator=generator, device=generator.device))
    weight = float(numpy.random.default_rng(seed).beta(alpha, alpha))
    return Mix(torch.randperm(rows, generator=generator, device=generator.device), weight)


class Loop:
    """What a fit carries from step to step: the optimiser, the schedule, the three random
    streams (dropout via torch's global generator, augmentation, batch order), the weight average,
    the gradient scaler and the step count. `state()` and `restore()` make a resumed fit continue
    bit for bit. Under torchrun every rank draws the same batch order, and dropout and
    augmentation of its own (rank 0 those of one process); `model` is the network DDP wraps."""

    def __init__(self, network: nn.Module, settings: Any, device: torch.device, samples: int,
                 cluster: Cluster = SINGLE, pace: Any = None):
        torch.manual_seed(cluster.seed(settings.seed))
        self.network, self.settings, self.device, self.cluster = network.to(device), settings, device, cluster
        if channels_last_helps(network, device):
            network.to(memory_format=torch.channels_last)
        self.precision = pick_precision(settings.precision, device)
        self.scaler = self.precision.scaler()
        self.model = cluster.parallel(network, device, settings.sync_batch_norm)
        self.augment_generator = torch.Generator(device=device).manual_seed(cluster.seed(settings.seed))
        self.order_generator = torch.Generator().manual_seed(settings.seed)
        self.batch_size = min(settings.batch_size, samples)
        # batch norm cannot train on one sample, and under DDP every rank needs at least one
        self.smallest_batch = max(2, cluster.world_size) if samples > 1 else 1
        self.steps_per_epoch = max(1, math.ceil(samples / self.batch_size))
        self.total_steps = settings.steps or settings.epochs * self.steps_per_epoch
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.optimizer = build_optimizer(network.parameters(), settings, network.backbone.parameters())
        self.schedule = build_schedule(self.optimizer, settings, self.total_steps)
        # the weight average, or lookahead's slow weights (train.ema and train.lookahead exclude each other)
        self.average = WeightAverage(network, settings.ema) if settings.ema else None
        self.lookahead = Lookahead(network) if settings.lookahead else None
        self.step = 0
        self.pace = pace  # cnncli.training.budget.Pace, or None

    def refit(self, total_steps: int) -> None:
        """Train `total_steps` steps in all (no fewer than those taken): a time budget's plan. The
        schedule is rebuilt for that length and set to the current step (every schedule here is
        a closed form of the step)."""
        self.total_steps = max(total_steps, self.step, 1)
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.schedule = build_schedule(self.optimizer, self.settings, self.total_steps)
        if self.step:
            self.schedule.last_epoch = self.step - 1
            self.schedule.step()

    @property
    def scored(self) -> nn.Module:
        """What is validated, checkpointed and kept: the weight average when there is one."""
        return self.average.network if self.average else self.network

    @property
    def averages(self) -> WeightAverage | Lookahead | None:
        """What a checkpoint keeps beside the network: the weight average or the slow weights."""
        return self.average or self.lookahead

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps

    def state(self) -> dict:
        """Everything `restore` needs; under torchrun every rank's random streams (so every rank
        must call it: it gathers them)."""
        own = {"torch": torch.get_rng_state(), "augment": self.augment_generator.get_state()}
        if self.device.type == "cuda":
            own["cuda"] = torch.cuda.get_rng_state(self.device)
        random = {**own, "order": self.order_generator.get_state()}
        for rank, streams in enumerate(self.cluster.gather(own)):
            if rank:
                random.update({f"rank{rank}.{name}": value for name, value in streams.items()})
        return {"step": self.step, "network": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "random": random,
                "average": self.averages.state_dict() if self.averages else None,
                "scaler": self.scaler.state_dict() if self.scaler else None}

    def restore(self, saved: FitState) -> None:
        self.network.load_state_dict(saved.network)
        self.optimizer.load_state_dict(saved.optimizer)
        self.schedule.load_state_dict({**self.schedule.state_dict(), **saved.schedule})
        prefix = f"rank{self.cluster.rank}."
        random = saved.random if not self.cluster.rank else {
            name[len(prefix):]: value for name, value in saved.random.items() if name.startswith(prefix)}
        torch.set_rng_state(random["torch"])
        self.augment_generator.set_state(random["augment"])
        if self.device.type == "cuda" and "cuda" in random:
            torch.cuda.set_rng_state(random["cuda"], self.device)
        self.order_generator.set_state(saved.random["order"])
        if self.averages:
            self.averages.load_state_dict(saved.average)
        if self.scaler and saved.scaler:
            self.scaler.load_state_dict(saved.scaler)
        self.step = saved.step


def train_one_epoch(loop: Loop, modality: Any, data: Any, epoch: int, progress: Progress = Progress()) -> dict:
    """One pass over the training data in a seeded order; the epoch's log record so far."""
    settings, device, cluster = loop.settings, loop.device, loop.cluster
    loop.model.train()
    hold_backbone(loop, epoch)  # train.freeze_epochs
    if loop.pace:
        loop.pace.epoch_started(loop, epoch)
    started = time.perf_counter()
    order = torch.randperm(len(data), generator=loop.order_generator)
    batches = [batch for batch in order.split(loop.batch_size) if len(batch) >= loop.smallest_batch]
    shares = (cluster.share(batch) for batch in batches)
    loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
    with progress.task(f"epoch {epoch}/{loop.epochs}", loop.steps_per_epoch, log=False) as advance:
        for (inputs, batch_targets), batch in zip(data.batches(shares, device), batches):
            scale = cluster.world_size / len(batch) if cluster.distributed else None
            loss, logits = training_step(loop.model, modality, inputs, batch_targets, loop.optimizer, settings,
                                         loop.augment_generator, loop.precision, loop.scaler, scale,
                                         input_size(loop, inputs.shape))
            loop.schedule.step()
            if loop.average:
                loop.average.update(loop.network)
            loss_sum += loss * len(batch_targets) if scale is None else loss / scale
            correct += (logits.argmax(1) == batch_targets).sum()
            seen += len(batch_targets)
            loop.step += 1
            if loop.lookahead:
                loop.lookahead.update(loop.network, loop.step, loop.total_steps)
            if loop.pace:
                loop.pace.stepped(loop)
            advance(1)
            if loop.finished:
                break
    if cluster.distributed:
        counted = torch.tensor(float(seen), dtype=torch.float64, device=device)
        totals = cluster.sum(torch.stack([loss_sum.double(), correct.double(), counted]))
        loss_sum, correct, seen = totals[0], totals[1], int(totals[2])
        for network in (loop.network, loop.average.network if loop.average else None):
            if network is not None:
                cluster.broadcast_buffers(network)
    mean_loss = float(loss_sum) / max(seen, 1)  # waits for the GPU's queued steps: the clock then counts them
    seconds = time.perf_counter() - started
    if not mean_loss <= DIVERGED_LOSS:
        what = "not a finite number" if not math.isfinite(mean_loss) else f"above {DIVERGED_LOSS:,.0f}"
        raise TrainingDiverged(f"epoch {epoch}: the training loss is {mean_loss:.4g}, {what}: training diverged "
                               f"and was stopped (train.lr {settings.lr:g} may be too high)")
    return {"epoch": epoch, "step": loop.step, "lr": round(loop.optimizer.param_groups[0]["lr"], 8),
            "train_loss": round(mean_loss, 5),
            "train_accuracy": round(float(correct) / max(seen, 1), 5),
            "samples_per_second": round(seen / seconds, 1)}


class BestEpoch:
    """Which epoch scored best on validation (accuracy, then loss), its weights when they are to
    be kept, and how many epochs have passed without a better one (for early stopping)."""

    def __init__(self, keep_weights: bool):
        self.keep_weights = keep_weights
        self.score: tuple[float, float] | None = None
        self.weights: dict | None = None
        self.epoch = 0
        self.epochs_without_gain = 0

    def update(self, epoch: int, val_accuracy: float, val_loss: float, scored: nn.Module) -> None:
        score = (val_accuracy, -val_loss)
        if self.score is None or score > self.score:
            self.score, self.epochs_without_gain = score, 0
            if self.keep_weights:
                self.weights, self.epoch = copy.deepcopy(scored.state_dict()), epoch
        else:
            self.epochs_without_gain += 1

    def restore(self, saved: FitState) -> None:
        self.weights = saved.best
        self.score = tuple(saved.best_score) if saved.best_score is not None else None
        self.epoch, self.epochs_without_gain = saved.kept_epoch, saved.epochs_without_gain


def fit(network: nn.Module, modality: Any, train_data: Any, val_data: Any | None,
        settings: Any, device: torch.device, progress: Progress = Progress(),
        on_epoch_end: Callable[[dict, nn.Module, Callable[[], FitState]], None] | None = None,
        resume: FitState | None = None, cluster: Cluster = SINGLE, pace: Any = None) -> FitResult:
    """Train `network` in place; returns the per-epoch history and which epoch's weights it keeps.
    The data are TensorData, Rows of it, or cnncli.training.loading.StreamedData. `pace`
    (cnncli.training.budget.Pace) times the network and, with a budget, fits its steps to it.

    `on_epoch_end(record, network_to_keep, capture)` runs after every epoch, on every rank;
    `capture()` returns the state from which `fit(..., resume=state)` continues as if it had
    never stopped."""
    loop = Loop(network, settings, device, len(train_data), cluster, pace)
    validating = val_data is not None and len(val_data) > 0
    best = BestEpoch(keep_weights=settings.keep == "best" and validating)
    result = FitResult(kept="best" if best.keep_weights else "last")
    first_epoch = 1
    if resume is not None:
        restore_fit(loop, best, resume)
        result.history, first_epoch = list(resume.history), resume.epoch + 1
    train_data = train_data.to(device)
    if resume is None:  # the whiten block's filters, from this network's own training rows
        fit_layers_to_data(network, train_data, device, settings.seed)
    check_low_res(network, tuple(modality.input_shape), settings, device)

    def capture() -> FitState:
        return FitState(epoch=result.history[-1]["epoch"], history=list(result.history),
                        best_score=list(best.score) if best.score is not None else None, kept_epoch=best.epoch,
                        epochs_without_gain=best.epochs_without_gain, best=best.weights, **loop.state())

    def stopping() -> bool:
        return bool(settings.early_stopping) and best.epochs_without_gain >= settings.early_stopping

    result.stopped_early = resume is not None and stopping()  # it had stopped; only the ending is left
    started = time.perf_counter()
    for epoch in itertools.count(first_epoch):  # a budget's plan may change loop.epochs on the way
        if result.stopped_early or loop.finished or epoch > loop.epochs:
            break
        epoch_started = time.perf_counter()
        record = train_one_epoch(loop, modality, train_data, epoch, progress)
        if validating:
            validate(loop, val_data, record, best, cluster)
        record["seconds"] = round(time.perf_counter() - epoch_started, 2)
        result.history.append(record)
        if on_epoch_end:
            on_epoch_end(record, loop.scored, capture)
        result.stopped_early = stopping()
    release_backbone(network, settings)
    if loop.pace:
        loop.pace.finished()
    keep_weights(network, loop, best, result)
    result.seconds = round(time.perf_counter() - started, 2)
    return result


def validate(loop: Loop, val_data: Any, record: dict, best: BestEpoch, cluster: Cluster) -> None:
    """Score the epoch's network on validation into `record`, and let `best` see it."""
    val_loss, val_accuracy = evaluate(loop.scored, val_data, loop.settings.eval_batch_size, loop.device, cluster)
    if loop.pace:
        loop.pace.validated(len(val_data))
    if not math.isfinite(val_loss):
        raise TrainingDiverged(f"epoch {record['epoch']}: the validation loss is {val_loss}, not a finite number: "
                               "training diverged and was stopped")
    record.update(val_loss=round(val_loss, 5), val_accuracy=round(val_accuracy, 5))
    best.update(record["epoch"], val_accuracy, val_loss, loop.scored)


def keep_weights(network: nn.Module, loop: Loop, best: BestEpoch, result: FitResult) -> None:
    """Leave in `network` the weights the run keeps: the best epoch's, or the last (averaged) ones."""
    result.kept_epoch = best.epoch
    if best.keep_weights and best.weights is not None:
        network.load_state_dict(best.weights)
    else:
        result.kept_epoch = len(result.history)
        if loop.average:
            network.load_state_dict(loop.scored.state_dict())


def restore_fit(loop: Loop, best: BestEpoch, saved: FitState) -> None:
    """Continue from `saved`; a state that does not fit this run's network is the user's error."""
    try:
        loop.restore(saved)
        best.restore(saved)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
        raise CnncliError(f"the resume state does not fit this run's network and optimiser "
                          f"({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__})"
                          ) from None


@torch.no_grad()
def split_outputs(network: nn.Module, data: Any, batch_size: int, device: torch.device) -> tuple:
    """(raw outputs, class indices) of the rows of `data` that could be read, in eval mode, batch
    by batch, both on the CPU. Outputs are logits (an ensemble's log averaged probabilities)."""
    network.eval()
    outputs, targets = [], []
    for inputs, batch_targets in data.batches(torch.arange(len(data)).split(batch_size), device, skip_unreadable=True):
        outputs.append(network(inputs).cpu())
        targets.append(batch_targets.cpu())
    if not outputs:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(outputs), torch.cat(targets)


@torch.no_grad()
def evaluate(network: nn.Module, data: Any, batch_size: int, device: torch.device,
             cluster: Cluster = SINGLE) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `network` on the readable rows of `data`. Under torchrun
    each rank scores a contiguous part and the sums are added up, so every rank gets the same."""
    network.eval()
    loss, correct, count = 0.0, 0, 0
    shares = cluster.share(torch.arange(len(data))).split(batch_size)
    for inputs, targets in data.batches(shares, device, skip_unreadable=True):
        logits = network(inputs)
        loss += float(F.cross_entropy(logits, targets, reduction="sum"))
        correct += int((logits.argmax(1) == targets).sum())
        count += len(targets)
    if cluster.distributed:
        totals = cluster.sum(torch.tensor([loss, correct, count], dtype=torch.float64, device=device))
        loss, correct, count = float(totals[0]), int(totals[1]), int(totals[2])
    return loss / max(count, 1), correct / max(count, 1)
