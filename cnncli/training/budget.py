"""`train.budget`: a run sized to the wall-clock time it is given; without one, its length foretold.

A run trains one or more networks (augment: auto's trials, then the ensemble's members), each
weighted by its share of the time (a trial: train.auto_share of a member). What the end of the
run takes is set aside first: scoring the final network on val and test and writing the bundle
and its plots, estimated from the validation speed and the checkpoint time measured on the way.
Each network then gets its weight's share of what is left from its start (`RunClock.pace`).
Inside that share, `Pace` measures the seconds per optimiser step from the first steps on (the
very first is warm-up), the seconds each epoch's validation and checkpoint take, and fits the
number of steps to what remains (`steps_within`): the schedule is rebuilt for that number
(Loop.refit), again every few percent of the share as the machine speeds up or slows down, and
the clock is read after every step, so that a machine that slows down ends the network early
rather than the run late. Without a budget the same measurements give the estimate printed after
the first epoch and the time left on the progress bar.

The arithmetic reads a clock it is given (`time.monotonic` by default): tests run it on a fake one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from cnncli.errors import CnncliError
from cnncli.nn.model import network_for
from cnncli.runtime.device import channels_last_helps
from cnncli.runtime.durations import format_duration, parse_duration
from cnncli.runtime.progress import Progress
from cnncli.training.low_res import low_res_steps

WARMUP_STEPS = 1  # a network's first steps are slow (allocations, thread pools): not measured
MEASURED_STEPS = 3  # steps timed before the first plan
REPLAN_SHARE = 0.05  # the plan is refitted each time this share of the network's time has passed
EVAL_STEP_SHARE = 0.5  # before validation is timed: scoring a row costs this share of training on it
WRITING_SECONDS = 2.5  # the final bundle's two plots (matplotlib imported before training, with a budget)
MARGIN_SHARE = 0.01  # of the budget kept in hand for what is not measured (the summary, the exit)
# blocks: auto under a budget: the largest backbone that trains this many epochs in the final
# network's share of the budget (what augment: auto's trials leave it: BackboneFit.member_share), at
# its speed timed over this many steps
MIN_EPOCHS = 10
PLAN_ROUNDS = 3  # with scaled-down steps (low_res): fit the steps, count those scaled down, fit again
TIMED_STEPS = 2


def steps_within(seconds: float, step_seconds: float, left_in_epoch: int, steps_per_epoch: int,
                 epoch_overhead: float) -> int:
    """The most optimiser steps that fit in `seconds` when each takes `step_seconds`, the current
    epoch has `left_in_epoch` steps to go, and each epoch that ends (the current one included: a
    network's last epoch may be cut short) costs `epoch_overhead` (validation, checkpoint).

    With e epoch ends, the steps are at most (seconds - e * overhead) / step_seconds, and at most
    left_in_epoch + (e - 1) * steps_per_epoch: the best e is where the two meet."""
    step_seconds = max(step_seconds, 1e-9)
    epoch_seconds = steps_per_epoch * step_seconds + epoch_overhead
    meeting = (seconds + (steps_per_epoch - left_in_epoch) * step_seconds) / epoch_seconds
    ends = {1, max(1, math.floor(meeting)), max(1, math.ceil(meeting))}
    return max(0, max(min(math.floor((seconds - count * epoch_overhead) / step_seconds),
                          left_in_epoch + (count - 1) * steps_per_epoch) for count in ends))


class RunClock:
    """The whole run's time: its budget (None: none), the networks still to train, the
    measurements that estimate the end of the run, and the estimate shown without a budget."""

    def __init__(self, budget: str | None = None, progress: Progress = Progress(), distributed: bool = False,
                 clock: Callable[[], float] = time.monotonic, started: float | None = None):
        if budget and distributed:
            raise CnncliError("train.budget: not under torchrun yet (each process would fit its own number of "
                              "steps); give train.epochs instead")
        self.seconds = parse_duration(budget) if budget else None
        if self.seconds is not None:  # the bundle's plots need matplotlib: its import (seconds) now, not at the end
            import cnncli.output.plots  # noqa: F401
        self.progress, self.clock = progress, clock
        self.started = clock() if started is None else started  # the CLI's: when the process started
        self.weights: list[float] = [1.0]  # of the networks still to train, the next first
        self.final_rows = 0  # rows the final network is scored on (val and test)
        self.eval_seconds_per_row: float | None = None
        self.checkpoint_seconds = 0.0
        self.foretold = False  # the estimate of the whole run is printed once

    @property
    def deadline(self) -> float | None:
        if self.seconds is None:
            return None
        return self.started + self.seconds - MARGIN_SHARE * self.seconds

    def plan(self, weights: list[float], final_rows: int) -> None:
        """The networks the run will train, in order, by their share of the time, and the rows
        the final network is scored on."""
        self.weights, self.final_rows = list(weights) or [1.0], final_rows

    def ending_seconds(self, step_seconds: float | None = None, batch_size: int = 1) -> float:
        """What the end of the run takes: scoring the final rows, and writing the bundle."""
        per_row = self.eval_seconds_per_row
        if per_row is None:
            per_row = (step_seconds or 0.0) / max(batch_size, 1) * EVAL_STEP_SHARE
        return self.final_rows * per_row + WRITING_SECONDS + self.checkpoint_seconds

    def pace(self, samples: int, batch_size: int, most_steps: int | None = None) -> "Pace":
        """The pace of the next network, trained on `samples` rows in batches of `batch_size` (as
        the engine's Loop cuts them), in at most `most_steps` steps when given (augment: auto's
        trials after the first take its steps); it takes its weight off the plan when it finishes."""
        batch_size = max(1, min(batch_size, samples))
        return Pace(self, max(1, math.ceil(samples / batch_size)), batch_size, most_steps)

    def skip(self, networks: int) -> None:
        """The next `networks` networks of the plan will not be trained (augment: auto gave up)."""
        self.weights = self.weights[networks:] or self.weights[-1:]

    def finished_network(self) -> None:
        if len(self.weights) > 1:
            self.weights.pop(0)


class BackboneFit:
    """With a budget, whether a backbone (`model.blocks: auto`'s candidates) would train
    MIN_EPOCHS epochs of `samples` rows in the final network's share of it, at the speed of a few
    steps timed here; without one, every backbone fits. `none_fit` says that every candidate
    asked about was too slow (the smallest is then trained: the budget is short)."""

    def __init__(self, config: Any, modality: Any, samples: int, device,
                 clock: Callable[[], float] = time.perf_counter):
        self.budget = parse_duration(config.train.budget) if config.train.budget else None
        self.modality, self.device, self.clock = modality, device, clock
        self.batch_size = max(1, min(config.train.batch_size, samples))
        self.steps = math.ceil(samples / self.batch_size) * MIN_EPOCHS
        self.member_share = member_share(config, modality)
        self.verdicts: list[bool] = []

    def __call__(self, blocks: list) -> bool:
        if self.budget is None:
            return True
        seconds = step_seconds(self.modality, blocks, self.batch_size, self.device, self.clock)
        self.verdicts.append(self.steps * seconds <= self.budget * self.member_share)
        return self.verdicts[-1]

    @property
    def none_fit(self) -> bool:
        return bool(self.verdicts) and not any(self.verdicts)


def step_seconds(modality: Any, blocks: list, batch_size: int, device, clock: Callable[[], float]) -> float:
    """Seconds a training step of a fresh network of `blocks` takes on this machine (forward,
    backward, update, on a batch of zeros), timed over TIMED_STEPS after one that is not.
    Measured, not worked out from the FLOPs: a CPU runs wide convolutions on small maps at 60%
    of its matrix-multiply rate and narrow residual ones at 30%."""
    network = network_for(modality, blocks, 2).to(device)
    if channels_last_helps(network, device):
        network.to(memory_format=torch.channels_last)
    inputs = torch.zeros((batch_size, *modality.input_shape), dtype=modality.input_dtype, device=device)
    targets = torch.zeros(batch_size, dtype=torch.long, device=device)
    optimizer = torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=0.0)

    def step() -> None:
        loss = F.cross_entropy(network(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()
    started = clock()
    for _ in range(TIMED_STEPS):
        step()
    return (clock() - started) / TIMED_STEPS


def network_weights(run: Any) -> list[float]:
    """The networks a run (train.Prepared) trains, in order, by their share of the time: augment:
    auto's trials (train.auto_share of a member each; at 1 they are the first members), then the
    ensemble's members."""
    validated = len(run.val) > 0 or run.folds is not None
    compared = run.config.augment.auto and validated and not run.short_budget
    return planned_weights(run.config, len(run.modality.regularisation_grid(run.config)) if compared else 0)


def member_share(config: Any, modality: Any) -> float:
    """The share of the time one ensemble member will get when augment: auto's trials run (known
    before the network is chosen: the trials' cost is a share of the member's)."""
    candidates = len(modality.regularisation_grid(config)) if config.augment.auto else 0
    return 1 / sum(planned_weights(config, candidates))


def planned_weights(config: Any, candidates: int) -> list[float]:
    """network_weights for `candidates` augment settings compared (0: none)."""
    train = config.train
    judged = max(1, min(train.auto_members, train.ensemble)) if candidates else 0
    if train.auto_share < 1:
        return [train.auto_share] * (candidates * judged) + [1.0] * train.ensemble
    return [1.0] * (candidates * judged + train.ensemble - judged)


class Pace:
    """One network's clock: measures its steps, validations and checkpoints; with a budget,
    fits its number of steps to its share of the time (`Loop.refit`)."""

    def __init__(self, run: RunClock, steps_per_epoch: int, batch_size: int, most_steps: int | None = None):
        self.run, self.steps_per_epoch, self.batch_size = run, steps_per_epoch, batch_size
        self.most_steps = most_steps
        self.started = run.clock()
        self.steps = 0  # steps this network has taken
        self.timed = {False: [0, 0.0], True: [0, 0.0]}  # full-size and scaled-down steps: [count, seconds]
        self.scale = 1.0  # train.low_res_scale of the network timed (cnncli.training.low_res)
        self.last_step_at: float | None = None
        self.epoch, self.epoch_first_step = 1, 0
        self.validation_seconds: float | None = None
        self.validated_at: float | None = None
        self.planned_at: float | None = None

    @property
    def timed_steps(self) -> int:
        return self.timed[False][0] + self.timed[True][0]

    @property
    def step_seconds(self) -> float | None:
        """Seconds a full-size step takes: measured, or until then a scaled-down one's / scale^2."""
        return self.mean_seconds(low=False)

    def mean_seconds(self, low: bool) -> float | None:
        """A step's seconds, full-size or scaled down (low), estimated from the other kind by the
        pixels' ratio until this kind is measured."""
        steps, seconds = self.timed[low]
        if steps:
            return seconds / steps
        steps, seconds = self.timed[not low]
        ratio = self.scale ** 2 if low else 1 / self.scale ** 2
        return seconds / steps * ratio if steps else None

    def plan_seconds(self, loop, total_steps: int) -> float | None:
        """The mean seconds of the steps from `loop`'s to `total_steps`, those scaled down and the
        others each at their own pace."""
        full, low = self.mean_seconds(low=False), self.mean_seconds(low=True)
        if full is None:
            return None
        scaled = max(0, low_res_steps(loop.settings, total_steps) - loop.step)
        return (scaled * low + (total_steps - loop.step - scaled) * full) / max(1, total_steps - loop.step)

    @property
    def deadline(self) -> float | None:
        """When this network should be done: its weight's share of the run's time from its start,
        less what the end of the run takes."""
        run = self.run
        if run.deadline is None:
            return None
        left = run.deadline - self.started - run.ending_seconds(self.step_seconds, self.batch_size)
        return self.started + left * run.weights[0] / sum(run.weights)

    def epoch_overhead(self) -> float:
        """Seconds an epoch's end takes: its validation and its checkpoint."""
        validation = self.validation_seconds
        if validation is None:
            validation = 0.0 if self.step_seconds is None else self.step_seconds * EVAL_STEP_SHARE
        return validation + self.run.checkpoint_seconds

    def epoch_started(self, loop, epoch: int) -> None:
        """Before epoch `epoch` (from 1) of `loop` (cnncli.training.engine.Loop); after the run's
        first epoch without a budget, the estimate of its length is printed."""
        now = self.run.clock()
        if self.validated_at is not None:  # the previous epoch's checkpoint ran since
            self.run.checkpoint_seconds = now - self.validated_at
            self.validated_at = None
        self.epoch, self.epoch_first_step, self.last_step_at = epoch, loop.step, now
        if self.steps:
            self.foretell(loop)

    def stepped(self, loop) -> None:
        """After every optimiser step of `loop` (cnncli.training.engine.Loop)."""
        now = self.run.clock()
        this_step = now - self.last_step_at if self.last_step_at is not None else 0.0
        self.steps += 1
        self.scale = loop.settings.low_res_scale
        if self.steps > WARMUP_STEPS:
            timed = self.timed[loop.step - 1 < low_res_steps(loop.settings, loop.total_steps)]
            timed[0] += 1
            timed[1] += this_step
        self.last_step_at = now
        deadline = self.deadline
        if deadline is None:
            self.run.progress.time_left(self.seconds_left(loop, now))
            return
        self.run.progress.time_left(max(0.0, self.run.started + self.run.seconds - now))
        measured = self.timed_steps >= MEASURED_STEPS
        next_low = loop.step < low_res_steps(loop.settings, loop.total_steps)
        step_seconds = self.mean_seconds(next_low) if measured else this_step
        if now + step_seconds + self.epoch_overhead() > deadline:  # no time for another step
            loop.refit(loop.step)
        elif measured and (
                self.planned_at is None or now - self.planned_at >= REPLAN_SHARE * (deadline - self.started)):
            self.planned_at = now
            left_in_epoch = max(0, self.steps_per_epoch - (loop.step - self.epoch_first_step))
            fitting = loop.total_steps
            for _ in range(PLAN_ROUNDS):  # the share of scaled-down steps follows the number fitted
                fitting = loop.step + steps_within(deadline - now, self.plan_seconds(loop, fitting), left_in_epoch,
                                                   self.steps_per_epoch, self.epoch_overhead())
            loop.refit(min(fitting, self.most_steps or fitting))

    def validated(self, rows: int) -> None:
        """After an epoch's validation of `rows` rows."""
        now = self.run.clock()
        if self.last_step_at is not None and rows:
            self.validation_seconds = now - self.last_step_at
            self.run.eval_seconds_per_row = self.validation_seconds / rows
        self.validated_at = now

    def finished(self) -> None:
        if self.validated_at is not None:
            self.run.checkpoint_seconds = self.run.clock() - self.validated_at
        self.run.finished_network()

    def seconds_left(self, loop, now: float) -> float | None:
        """Without a budget: this network's steps to go at the measured pace, its epochs' ends, the
        networks after it (by weight), and the end of the run."""
        if self.step_seconds is None:
            return None
        mine = ((loop.total_steps - loop.step) * self.plan_seconds(loop, loop.total_steps)
                + (loop.epochs - self.epoch + 1) * self.epoch_overhead())  # this epoch's end to come
        whole = (now - self.started) + mine  # this network from start to end
        later = whole * sum(self.run.weights[1:]) / self.run.weights[0]
        return mine + later + self.run.ending_seconds(self.step_seconds, self.batch_size)

    def foretell(self, loop) -> None:
        """After the first epoch of a run without a budget: one line with its estimated length."""
        if self.run.foretold or self.run.seconds is not None:
            return
        now = self.run.clock()
        left = self.seconds_left(loop, now)
        if left is not None:
            self.run.foretold = True
            whole = format_duration(now - self.run.started + left)
            self.run.progress.note(f"estimate: the whole run takes about {whole} ({format_duration(left)} from now); "
                                   "train.budget (--budget) sets it")
