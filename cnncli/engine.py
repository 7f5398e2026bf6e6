"""The training loop: one readable loop over in-memory tensors, as fast as a hand-written one.

Encoded data sit in memory (on the device when it is a GPU), batches are index slices of them,
and augmentation runs batched on the device. Each epoch ends with a validation pass and one
log record (loss, accuracy, learning rate, samples/s); the caller decides what to do with it
(the trainer writes it to the bundle's log and checkpoints).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cnncli.config import TrainConfig
from cnncli.modalities.base import Modality
from cnncli.optim import build_optimizer, build_schedule
from cnncli.progress import Progress
from cnncli.resume_state import FitState


@dataclass
class TensorData:
    """Encoded inputs and their class indices."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    kept_epoch: int = 0  # the epoch whose weights the network holds at the end
    kept: str = "last"
    stopped_early: bool = False
    seconds: float = 0.0


def fit(network: nn.Module, modality: Modality, train_data: TensorData, val_data: TensorData | None,
        settings: TrainConfig, device: torch.device, progress: Progress = Progress(),
        on_epoch_end: Callable[[dict, nn.Module, Callable[[], FitState]], None] | None = None,
        resume: FitState | None = None) -> FitResult:
    """Train `network` in place; returns the per-epoch history and which epoch's weights it keeps.

    `on_epoch_end(record, network_to_keep, capture)` runs after every epoch; `capture()` returns
    the state from which `fit(..., resume=state)` continues as if it had never stopped."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    order_generator = torch.Generator().manual_seed(settings.seed)
    network.to(device)
    inputs, targets = _to_device(train_data, device)
    batch_size = min(settings.batch_size, len(train_data))
    steps_per_epoch = max(1, math.ceil(len(train_data) / batch_size))
    total_steps = settings.steps or settings.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    optimizer = build_optimizer(network.parameters(), settings)
    schedule = build_schedule(optimizer, settings, total_steps)
    classifier = network.classifier.linear if hasattr(network, "classifier") else None
    average = WeightAverage(network, settings.ema) if settings.ema else None
    scored = average.network if average else network  # what is validated, checkpointed and kept

    result = FitResult(kept="best" if settings.keep == "best" and val_data is not None and len(val_data) else "last")
    best_state, best_score, epochs_without_gain, step, first_epoch = None, None, 0, 0, 1
    if resume is not None:
        network.load_state_dict(resume.network)
        optimizer.load_state_dict(resume.optimizer)
        schedule.load_state_dict({**schedule.state_dict(), **resume.schedule})
        torch.set_rng_state(resume.random["torch"])
        generator.set_state(resume.random["augment"])
        if device.type == "cuda" and "cuda" in resume.random:
            torch.cuda.set_rng_state(resume.random["cuda"], device)
        order_generator.set_state(resume.random["order"])
        if average:
            average.load_state_dict(resume.average)
        best_state = resume.best
        best_score = tuple(resume.best_score) if resume.best_score is not None else None
        result.history, result.kept_epoch = list(resume.history), resume.kept_epoch
        epochs_without_gain, step, first_epoch = resume.epochs_without_gain, resume.step, resume.epoch + 1
        if settings.early_stopping and epochs_without_gain >= settings.early_stopping:
            result.stopped_early, first_epoch = True, epochs + 1  # it had stopped; only the ending is left

    def capture() -> FitState:
        return FitState(
            epoch=result.history[-1]["epoch"], step=step, history=list(result.history),
            best_score=list(best_score) if best_score is not None else None, kept_epoch=result.kept_epoch,
            epochs_without_gain=epochs_without_gain, network=network.state_dict(),
            optimizer=optimizer.state_dict(), schedule=schedule.state_dict(),
            random={"torch": torch.get_rng_state(), "augment": generator.get_state(),
                    "order": order_generator.get_state(),
                    **({"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {})},
            best=best_state, average=average.state_dict() if average else None)

    started = time.perf_counter()
    for epoch in range(first_epoch, epochs + 1):
        network.train()
        epoch_started = time.perf_counter()
        order = torch.randperm(len(train_data), generator=order_generator).to(device)
        loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
        with progress.task(f"epoch {epoch}/{epochs}", steps_per_epoch, log=False) as advance:
            for start in range(0, len(order), batch_size):
                index = order[start:start + batch_size]
                if len(index) < 2 and len(order) > 1:  # batch norm cannot train on one sample
                    continue
                batch = modality.augment(inputs[index], generator)
                batch_targets = targets[index]
                logits = network(batch)
                loss = F.cross_entropy(logits, batch_targets, label_smoothing=settings.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                if settings.max_norm and classifier is not None:
                    with torch.no_grad():
                        classifier.weight.data = torch.renorm(classifier.weight.data, 2, 0, settings.max_norm)
                if average:
                    average.update(network)
                loss_sum += loss.detach() * len(index)
                correct += (logits.detach().argmax(1) == batch_targets).sum()
                seen += len(index)
                step += 1
                advance(1)
                if step >= total_steps:
                    break
        train_seconds = time.perf_counter() - epoch_started
        record = {
            "epoch": epoch,
            "step": step,
            "lr": round(optimizer.param_groups[0]["lr"], 8),
            "train_loss": round(float(loss_sum) / max(seen, 1), 5),
            "train_accuracy": round(float(correct) / max(seen, 1), 5),
            "samples_per_second": round(seen / train_seconds, 1),
        }
        if val_data is not None and len(val_data):
            val_loss, val_accuracy = evaluate_loss(scored, val_data, settings.eval_batch_size, device)
            record.update(val_loss=round(val_loss, 5), val_accuracy=round(val_accuracy, 5))
            score = (val_accuracy, -val_loss)
            if best_score is None or score > best_score:
                best_score, epochs_without_gain = score, 0
                if result.kept == "best":
                    best_state, result.kept_epoch = copy.deepcopy(scored.state_dict()), epoch
            else:
                epochs_without_gain += 1
        record["seconds"] = round(time.perf_counter() - epoch_started, 2)
        result.history.append(record)
        if on_epoch_end:
            on_epoch_end(record, scored, capture)
        if settings.early_stopping and epochs_without_gain >= settings.early_stopping:
            result.stopped_early = True
            break
        if step >= total_steps:
            break
    if result.kept == "best" and best_state is not None:
        network.load_state_dict(best_state)
    else:
        result.kept_epoch = len(result.history)
        if average:
            network.load_state_dict(scored.state_dict())
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


def _to_device(data: TensorData, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return data.inputs.to(device), data.targets.to(device)


@torch.no_grad()
def predict_probabilities(network: nn.Module, inputs: torch.Tensor, batch_size: int,
                          device: torch.device) -> torch.Tensor:
    """Softmax outputs for encoded inputs, in eval mode, batch by batch; returned on the CPU."""
    network.eval()
    outputs = [torch.softmax(network(chunk.to(device)), dim=1).cpu() for chunk in inputs.split(batch_size)]
    return torch.cat(outputs) if outputs else torch.empty(0)


@torch.no_grad()
def evaluate_loss(network: nn.Module, data: TensorData, batch_size: int, device: torch.device) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `network` on `data`."""
    network.eval()
    loss, correct = 0.0, 0
    for chunk, chunk_targets in zip(data.inputs.split(batch_size), data.targets.split(batch_size)):
        logits = network(chunk.to(device))
        chunk_targets = chunk_targets.to(device)
        loss += float(F.cross_entropy(logits, chunk_targets, reduction="sum"))
        correct += int((logits.argmax(1) == chunk_targets).sum())
    return loss / max(len(data), 1), correct / max(len(data), 1)
