"""One trial of `cnncli tune`: the recipe with the trial's settings, trained into its own bundle,
judged on validation only (the trial never looks at test), stopped early by the pruner when its
validation curve falls behind the other trials'."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from cnncli.errors import CnncliError
from cnncli.experiments.space import Dimension, trial_recipe
from cnncli.experiments.study import TRIALS_FOLDER, Plan, quiet_optuna
from cnncli.recipe.typed import show
from cnncli.runtime.progress import Progress
from cnncli.training.engine import TrainingDiverged
from cnncli.training.train import train


class Pruning:
    """The trainer's per-epoch hook: report each validation accuracy, stop when the pruner says so."""

    def __init__(self, trial):
        self.trial, self.epochs = trial, 0

    def __call__(self, record: dict) -> None:
        self.epochs += 1
        if "val_accuracy" in record:
            self.trial.report(record["val_accuracy"], self.epochs)
            if self.trial.should_prune():
                raise quiet_optuna().TrialPruned(f"at epoch {record['epoch']}: val accuracy "
                                                 f"{record['val_accuracy']:.4f}, behind the other trials'")


def run_trial(study, trial, plan: Plan, dimensions: list[Dimension], progress: Progress = Progress()) -> None:
    """Train trial `trial` and tell the study how it went. A trial that fails (its settings make an
    invalid recipe, its training diverges) is marked so and the study goes on, unless no trial
    has finished yet and it failed otherwise (unreadable data): then every trial would fail."""
    optuna = quiet_optuna()
    states = optuna.trial.TrialState
    values = {dimension.key: dimension.suggest(trial) for dimension in dimensions}
    folder = f"{TRIALS_FOLDER}/{trial.number:03d}"
    trial.set_user_attr("bundle", folder)
    trial.set_user_attr("values", values)
    trial.set_user_attr("process", os.getpid())  # which worker ran it, and on which machine
    trial.set_user_attr("host", socket.gethostname())
    progress.note(f"trial {trial.number}: " + "  ".join(f"{key}={show(value)}" for key, value in values.items()))
    started, hook = time.perf_counter(), Pruning(trial)
    try:
        config = trial_recipe(plan.recipe, plan.trial_values(values), f"trial {trial.number}")
    except CnncliError as error:  # settings that do not go together (lr_min above lr): the next ones may
        return finish(study, trial, states.FAIL, started, hook.epochs, str(error), progress)
    try:
        outcome = train(config, Path(plan.out) / folder, progress, overwrite=True, on_epoch=hook, score_test=False)
        if "val" not in outcome.metrics:
            raise CnncliError("tune: the recipe has no validation split to judge trials on; set "
                              "data.split.val_fraction (or data.val)")
    except optuna.TrialPruned as pruned:
        return finish(study, trial, states.PRUNED, started, hook.epochs, f"pruned {pruned}", progress)
    except CnncliError as error:
        finish(study, trial, states.FAIL, started, hook.epochs, str(error), progress)
        if not isinstance(error, TrainingDiverged) and not study.get_trials(deepcopy=False, states=(states.COMPLETE,)):
            raise
        return None
    accuracy = outcome.metrics["val"]["accuracy"]
    return finish(study, trial, states.COMPLETE, started, hook.epochs, f"val accuracy {accuracy:.4f}", progress,
                  accuracy)


def finish(study, trial, state, started: float, epochs: int, note: str, progress: Progress,
           value: float | None = None) -> None:
    """Record how a trial ended, tell the study, and say it in one line."""
    seconds = round(time.perf_counter() - started, 1)
    trial.set_user_attr("seconds", seconds)
    trial.set_user_attr("epochs", epochs)
    trial.set_user_attr("note", note)
    study.tell(trial, value, state=state)
    progress.note(f"trial {trial.number}: {state.name.lower()} after {epochs} epoch(s), {seconds:.1f}s: {note}")
