"""The training loop: one readable loop over in-memory tensors, as fast as a hand-written one.

Shaped like torchvision's classification reference: `training_step` (one optimiser step, which
the learning-rate finder reuses), `train_one_epoch`, `evaluate`, and a short `fit` that calls
them, keeps the best epoch and stops early. Encoded data sit in memory (on the device when it is
a GPU), batches are index slices of them, and augmentation runs batched on the device. Each epoch
ends with a validation pass and one log record (loss, accuracy, learning rate, samples/s); the
caller decides what to do with it (the trainer writes it to the bundle's log and checkpoints).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnncli.encoding import TensorData
from cnncli.errors import CnncliError
from cnncli.optim import build_optimizer, build_schedule
from cnncli.progress import Progress
from cnncli.resume_state import FitState

__all__ = ["FitResult", "Loop", "TensorData", "TrainingDiverged", "evaluate", "fit", "predict_probabilities",
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
                  optimizer: torch.optim.Optimizer, settings: Any, generator: torch.Generator) -> tuple:
    """Augment a batch, forward, backward, one optimiser step; (loss, logits), both detached.
    A recipe's `max_norm` (Kim's constraint on the classifier's rows) is applied after the step."""
    logits = network(modality.augment(inputs, generator))
    loss = F.cross_entropy(logits, targets, label_smoothing=settings.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if settings.max_norm:
        with torch.no_grad():
            weight = network.classifier.linear.weight
            weight.data = torch.renorm(weight.data, 2, 0, settings.max_norm)
    return loss.detach(), logits.detach()


class Loop:
    """What a fit carries from step to step: the optimiser, the schedule, the three random
    streams (dropout via torch's global generator, augmentation, batch order), the weight average
    and the step count. `state()` and `restore()` make a resumed fit continue bit for bit."""

    def __init__(self, network: nn.Module, settings: Any, device: torch.device, samples: int):
        torch.manual_seed(settings.seed)
        self.network, self.settings, self.device = network.to(device), settings, device
        self.augment_generator = torch.Generator(device=device).manual_seed(settings.seed)
        self.order_generator = torch.Generator().manual_seed(settings.seed)
        self.batch_size = min(settings.batch_size, samples)
        self.steps_per_epoch = max(1, math.ceil(samples / self.batch_size))
        self.total_steps = settings.steps or settings.epochs * self.steps_per_epoch
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.optimizer = build_optimizer(network.parameters(), settings)
        self.schedule = build_schedule(self.optimizer, settings, self.total_steps)
        self.average = WeightAverage(network, settings.ema) if settings.ema else None
        self.step = 0

    @property
    def scored(self) -> nn.Module:
        """What is validated, checkpointed and kept: the weight average when there is one."""
        return self.average.network if self.average else self.network

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps

    def state(self) -> dict:
        random = {"torch": torch.get_rng_state(), "augment": self.augment_generator.get_state(),
                  "order": self.order_generator.get_state()}
        if self.device.type == "cuda":
            random["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"step": self.step, "network": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "random": random,
                "average": self.average.state_dict() if self.average else None}

    def restore(self, saved: FitState) -> None:
        self.network.load_state_dict(saved.network)
        self.optimizer.load_state_dict(saved.optimizer)
        self.schedule.load_state_dict({**self.schedule.state_dict(), **saved.schedule})
        torch.set_rng_state(saved.random["torch"])
        self.augment_generator.set_state(saved.random["augment"])
        if self.device.type == "cuda" and "cuda" in saved.random:
            torch.cuda.set_rng_state(saved.random["cuda"], self.device)
        self.order_generator.set_state(saved.random["order"])
        if self.average:
            self.average.load_state_dict(saved.average)
        self.step = saved.step


def train_one_epoch(loop: Loop, modality: Any, inputs: torch.Tensor, targets: torch.Tensor,
                    epoch: int, progress: Progress = Progress()) -> dict:
    """One pass over the training tensors in a seeded order; the epoch's log record so far."""
    network, settings, device = loop.network, loop.settings, loop.device
    network.train()
    started = time.perf_counter()
    order = torch.randperm(len(targets), generator=loop.order_generator).to(device)
    loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
    with progress.task(f"epoch {epoch}/{loop.epochs}", loop.steps_per_epoch, log=False) as advance:
        for start in range(0, len(order), loop.batch_size):
            index = order[start:start + loop.batch_size]
            if len(index) < 2 and len(order) > 1:  # batch norm cannot train on one sample
                continue
            batch_targets = targets[index]
            loss, logits = training_step(network, modality, inputs[index], batch_targets, loop.optimizer,
                                         settings, loop.augment_generator)
            loop.schedule.step()
            if loop.average:
                loop.average.update(network)
            loss_sum += loss * len(index)
            correct += (logits.argmax(1) == batch_targets).sum()
            seen += len(index)
            loop.step += 1
            advance(1)
            if loop.finished:
                break
    seconds = time.perf_counter() - started
    mean_loss = float(loss_sum) / max(seen, 1)
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


def fit(network: nn.Module, modality: Any, train_data: TensorData, val_data: TensorData | None,
        settings: Any, device: torch.device, progress: Progress = Progress(),
        on_epoch_end: Callable[[dict, nn.Module, Callable[[], FitState]], None] | None = None,
        resume: FitState | None = None) -> FitResult:
    """Train `network` in place; returns the per-epoch history and which epoch's weights it keeps.

    `on_epoch_end(record, network_to_keep, capture)` runs after every epoch; `capture()` returns
    the state from which `fit(..., resume=state)` continues as if it had never stopped."""
    loop = Loop(network, settings, device, len(train_data))
    validating = val_data is not None and len(val_data) > 0
    best = BestEpoch(keep_weights=settings.keep == "best" and validating)
    result = FitResult(kept="best" if best.keep_weights else "last")
    first_epoch = 1
    if resume is not None:
        try:
            loop.restore(resume)
            best.restore(resume)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
            raise CnncliError(f"the resume state does not fit this run's network and optimiser "
                              f"({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__})"
                              ) from None
        result.history, first_epoch = list(resume.history), resume.epoch + 1
    inputs, targets = train_data.inputs.to(device), train_data.targets.to(device)

    def capture() -> FitState:
        return FitState(epoch=result.history[-1]["epoch"], history=list(result.history),
                        best_score=list(best.score) if best.score is not None else None, kept_epoch=best.epoch,
                        epochs_without_gain=best.epochs_without_gain, best=best.weights, **loop.state())

    def stopping() -> bool:
        return bool(settings.early_stopping) and best.epochs_without_gain >= settings.early_stopping

    result.stopped_early = resume is not None and stopping()  # it had stopped; only the ending is left
    started = time.perf_counter()
    for epoch in range(first_epoch, loop.epochs + 1):
        if result.stopped_early or loop.finished:
            break
        epoch_started = time.perf_counter()
        record = train_one_epoch(loop, modality, inputs, targets, epoch, progress)
        if validating:
            val_loss, val_accuracy = evaluate(loop.scored, val_data, settings.eval_batch_size, device)
            if not math.isfinite(val_loss):
                raise TrainingDiverged(f"epoch {epoch}: the validation loss is {val_loss}, not a finite number: "
                                       "training diverged and was stopped")
            record.update(val_loss=round(val_loss, 5), val_accuracy=round(val_accuracy, 5))
            best.update(epoch, val_accuracy, val_loss, loop.scored)
        record["seconds"] = round(time.perf_counter() - epoch_started, 2)
        result.history.append(record)
        if on_epoch_end:
            on_epoch_end(record, loop.scored, capture)
        result.stopped_early = stopping()
    result.kept_epoch = best.epoch
    if best.keep_weights and best.weights is not None:
        network.load_state_dict(best.weights)
    else:
        result.kept_epoch = len(result.history)
        if loop.average:
            network.load_state_dict(loop.scored.state_dict())
    result.seconds = round(time.perf_counter() - started, 2)
    return result


class WeightAverage:
    """An exponential moving average of a network's weights (and batch-norm statistics), updated
    after every optimiser step. The average generalises better than the last step's weights,
    the way an ensemble of the recent steps would, at no cost at prediction time."""

    def __init__(self, network: nn.Module, decay: float):
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self._averaged = AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    @property
    def network(self) -> nn.Module:
        return self._averaged.module

    def update(self, network: nn.Module) -> None:
        self._averaged.update_parameters(network)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._averaged.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._averaged.load_state_dict(state)


@torch.no_grad()
def predict_outputs(network: nn.Module, inputs: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Raw outputs (logits; an ensemble's log averaged probabilities) for encoded inputs, in eval
    mode, batch by batch; returned on the CPU."""
    network.eval()
    outputs = [network(chunk.to(device)).cpu() for chunk in inputs.split(batch_size)]
    return torch.cat(outputs) if outputs else torch.empty(0)


def predict_probabilities(network: nn.Module, inputs: torch.Tensor, batch_size: int,
                          device: torch.device) -> torch.Tensor:
    """Softmax outputs for encoded inputs, in eval mode, batch by batch; returned on the CPU."""
    outputs = predict_outputs(network, inputs, batch_size, device)
    return torch.softmax(outputs, dim=1) if len(outputs) else outputs


@torch.no_grad()
def evaluate(network: nn.Module, data: TensorData, batch_size: int, device: torch.device) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `network` on `data`."""
    network.eval()
    loss, correct = 0.0, 0
    for chunk, chunk_targets in zip(data.inputs.split(batch_size), data.targets.split(batch_size)):
        logits = network(chunk.to(device))
        chunk_targets = chunk_targets.to(device)
        loss += float(F.cross_entropy(logits, chunk_targets, reduction="sum"))
        correct += int((logits.argmax(1) == chunk_targets).sum())
    return loss / max(len(data), 1), correct / max(len(data), 1)
