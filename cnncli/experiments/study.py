"""The study behind `cnncli tune`: Optuna's TPE sampler and a pruner, in a database that outlives
the process.

The study lives in OUT/study.db (SQLite), or in the database a --storage URL names, which
several machines can share (Optuna's RDB storage). Workers on one machine ask for their next
trial under a lock, so together they run exactly the trials asked for. Before each trial the
sampler is seeded again, from the recipe's train.seed and the number of trials before it: a
study resumed after a crash asks for the same trials as one that never stopped, since the trial
the crash cut short is run again first (its parameters queued) and its half is marked failed.
The first trial is the recipe's own settings, where they lie in the space: the search starts
from what the recipe would give. A recipe that averages an ensemble is searched one network at a
time: each trial trains the first network alone, so twenty trials of a five-network recipe cost
four of its runs, and the chosen settings are trained once more as the recipe says (result.py).
"""

from __future__ import annotations

import hashlib
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnncli.errors import CnncliError
from cnncli.experiments.space import Dimension, read_space
from cnncli.recipe.keys import get_key

STUDY_FILE = "study.db"
TRIALS_FOLDER = "trials"
LOCK_FILE = ".ask.lock"
PRUNERS = ("median", "halving", "none")


@dataclass
class Plan:
    """Everything a worker needs to run trials; plain data, so parallel workers get a copy."""

    recipe: dict  # the resolved recipe the trials vary
    space: dict  # the tune section, as dotted keys
    out: str  # the study's folder: trial bundles, the lock, the result
    storage: str  # the database URL
    name: str  # the study's name in it
    trials: int  # trials to finish (completed or pruned), all workers and sessions together
    deadline: float  # no trial starts after this time.time()
    pruner: str
    threads: int | None = None  # torch threads per worker (None: torch's default)

    @property
    def seed(self) -> int:
        return self.recipe["train"]["seed"]

    def dimensions(self) -> list[Dimension]:
        return read_space(self.space, self.recipe, "tune")

    @property
    def members(self) -> int:
        """The networks the recipe averages; a trial trains the first alone (unless the search
        varies train.ensemble), and the chosen settings are then trained as the recipe says."""
        return 1 if "train.ensemble" in self.space else self.recipe["train"]["ensemble"]

    @property
    def warmup_epochs(self) -> int:
        """Epochs a trial runs before the median pruner may stop it: a quarter of the recipe's.
        Early validation accuracy says little of the end under a cosine schedule or mixup: at
        epoch 1 of FSDD's 60 it ranged 0.16 to 0.39 among trials that ended at 0.88 to 0.94, and
        pruning there stopped fifteen of twenty trials at their first epoch (docs/BENCHMARKS.md)."""
        epochs = (self.recipe.get("train") or {}).get("epochs")
        return epochs // 4 if isinstance(epochs, int) else 0

    def trial_values(self, values: dict[str, Any]) -> dict[str, Any]:
        """A trial's settings as it trains them: one network of an ensemble."""
        return {**values, "train.ensemble": 1} if self.members > 1 else values


def quiet_optuna():
    """Optuna, with its per-trial log lines and experimental-feature warnings off (tune prints its own)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def storage_of(url: str):
    """Optuna's RDB storage at `url`; SQLite waits up to a minute for a parallel worker's write."""
    optuna = quiet_optuna()
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine)


def pruner_of(name: str, trials: int, warmup: int = 0):
    """median: stop a trial whose validation accuracy at an epoch (`warmup` or later) is below
    the median of the finished trials' at that epoch (once a few have finished); halving:
    successive halving, which keeps the best quarter at each rung; none."""
    optuna = quiet_optuna()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=max(1, min(5, trials // 4)), n_warmup_steps=warmup)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def find_study(plan: Plan):
    """The study named `plan.name` in its storage, or None."""
    optuna = quiet_optuna()
    if plan.storage.startswith("sqlite:///") and not Path(plan.storage[len("sqlite:///"):]).exists():
        return None  # no database file yet: do not create one by looking
    storage = storage_of(plan.storage)
    if plan.name not in optuna.get_all_study_names(storage):
        return None
    pruner = pruner_of(plan.pruner, plan.trials, plan.warmup_epochs)
    return optuna.load_study(study_name=plan.name, storage=storage, pruner=pruner)


def create_study(plan: Plan, dimensions: list[Dimension]):
    """A new study that remembers its recipe and space, its first trial the recipe's own settings."""
    optuna = quiet_optuna()
    study = optuna.create_study(storage=storage_of(plan.storage), study_name=plan.name, direction="maximize",
                                pruner=pruner_of(plan.pruner, plan.trials, plan.warmup_epochs))
    for setting in ("recipe", "space", "trials", "pruner"):
        study.set_user_attr(setting, getattr(plan, setting))
    own = {}
    for dimension in dimensions:
        value = get_key(plan.recipe, dimension.key)
        if dimension.holds(value):
            own[dimension.key] = dimension.stored(value)
    if own:
        study.enqueue_trial(own, user_attrs={"first": "the recipe's own settings"})
    return study


def check_same(study, plan: Plan, where: str) -> None:
    """A study continues only with the recipe (wherever its data are) and space it started with;
    more trials or another pruner from now on are its new settings."""
    for what in ("recipe", "space"):
        if placeless(study.user_attrs.get(what)) != placeless(getattr(plan, what)):
            raise CnncliError(f"{where}: this study was started with another {what}; continue it without a "
                              f"recipe (cnncli tune --resume --out {where}), or start a new one in another --out")
    for setting in ("trials", "pruner"):
        study.set_user_attr(setting, getattr(plan, setting))


def placeless(recipe: dict | None) -> dict | None:
    """A recipe without its data.root: machines sharing a study may keep the data in different places."""
    if not recipe or not isinstance(recipe.get("data"), dict):
        return recipe
    return {**recipe, "data": {key: value for key, value in recipe["data"].items() if key != "root"}}


def take_over_interrupted(study, out: Path) -> list[int]:
    """--resume: the trials a crash left running are marked failed and their parameters queued to
    run again first; their partial bundles go. Returns their numbers."""
    optuna = quiet_optuna()
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        folder = out / TRIALS_FOLDER / f"{trial.number:03d}"
        if folder.is_dir():
            shutil.rmtree(folder)
    return [trial.number for trial in running]


def sampler_seed(seed: int, index: int) -> int:
    """The sampler's seed for the trial that follows `index` others: fixed by the two alone."""
    return int.from_bytes(hashlib.sha256(f"cnncli tune {seed} {index}".encode()).digest()[:4], "big")


@contextmanager
def asking(out: Path) -> Iterator[None]:
    """One worker of this machine at a time counts the trials and asks for the next."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; parallel workers may then run a trial or two more
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def next_trial(study, plan: Plan):
    """The next trial to run, or None when the study has its trials, too many failed, or time is up."""
    optuna = quiet_optuna()
    states = optuna.trial.TrialState
    with asking(Path(plan.out)):
        started = len(study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.RUNNING)))
        failed = len(study.get_trials(deepcopy=False, states=(states.FAIL,)))
        if started >= plan.trials or failed >= plan.trials or time.time() >= plan.deadline:
            return None
        study.sampler = optuna.samplers.TPESampler(seed=sampler_seed(plan.seed, started),
                                                   n_startup_trials=max(2, min(10, plan.trials // 3)))
        return study.ask()


def trial_rows(study) -> list[dict[str, Any]]:
    """One row per trial that ran: its number, state, validation accuracy, settings and bundle."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if "bundle" not in trial.user_attrs:
            continue  # queued, never started
        attrs = trial.user_attrs
        value = trial.value if trial.state.name == "COMPLETE" else (
            trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None)
        rows.append({"trial": trial.number, "state": trial.state.name.lower(), "val_accuracy": value,
                     "epochs": attrs.get("epochs", len(trial.intermediate_values)), "seconds": attrs.get("seconds"),
                     "values": attrs.get("values", {}), "bundle": attrs["bundle"], "host": attrs.get("host"),
                     "note": attrs.get("note") or ("interrupted, run again" if trial.state.name == "FAIL" else "")})
    return rows
