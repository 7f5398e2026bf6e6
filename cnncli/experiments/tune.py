"""`cnncli tune`: search a recipe's settings on validation, in a study that survives a crash.

    cnncli tune recipes/fsdd.yaml --trials 20 --budget 2h --out runs/fsdd-study
    cnncli tune --resume --out runs/fsdd-study          # after a crash or ^C: the same trials follow
    cnncli tune recipes/fsdd.yaml --workers 2           # two trials at a time on this machine

What is searched: the recipe's tune section (cnncli.experiments.space); how: Optuna's TPE and a
pruner, every trial a cnncli run judged on validation (cnncli.experiments.study, .trial); what
it leaves: the best bundle scored once on test, its recipe and the table of trials
(cnncli.experiments.result). Needs the tune extra (`pip install 'cnncli[tune]'`).
"""

from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path

from cnncli.errors import CnncliError
from cnncli.experiments.result import study_result
from cnncli.experiments.space import GENERAL_SPACE, dotted, read_space
from cnncli.experiments.study import (
    PRUNERS,
    STUDY_FILE,
    Plan,
    check_same,
    create_study,
    find_study,
    take_over_interrupted,
)
from cnncli.experiments.workers import run_trials, run_workers
from cnncli.files.atomic import check_writable
from cnncli.limits import MAX_THREADS
from cnncli.runtime.durations import parse_duration
from cnncli.runtime.progress import Progress

MAX_TRIALS = 100_000
DEFAULT_TRIALS = 20


def parse_budget(text: str | None) -> float:
    """--budget: '2h', '90m', '1h30m', '45s' or plain seconds -> seconds (no budget: no limit)."""
    return math.inf if text is None else parse_duration(text, key="--budget")


def check_request(trials: int | None, workers: int, pruner: str | None) -> None:
    if trials is not None and not 1 <= trials <= MAX_TRIALS:
        raise CnncliError(f"--trials {trials}: must be from 1 to {MAX_TRIALS:,}")
    if not 1 <= workers <= MAX_THREADS:
        raise CnncliError(f"--workers {workers}: must be from 1 to {MAX_THREADS:,}")
    if pruner is not None and pruner not in PRUNERS:
        raise CnncliError(f"--pruner {pruner}: unknown (use {', '.join(PRUNERS)})")
    if importlib.util.find_spec("optuna") is None:
        raise CnncliError("tune needs optuna, which is not installed: pip install 'cnncli[tune]'")


def recipe_and_space(target: str, overrides: list[str]) -> tuple[dict, dict]:
    """The resolved recipe of `target` (a recipe, or data with the default recipe) and its search
    space: its tune section, else its modality's space, else the general one; checked here."""
    from cnncli.modalities import modality_class
    from cnncli.recipe.config import config_to_dict, load_config
    from cnncli.recipe.defaults import recipe_source

    source, _ = recipe_source(target)
    config = load_config(source, overrides)
    recipe = config_to_dict(config)
    section = recipe["tune"] or modality_class(config.data.modality).tune_space or GENERAL_SPACE
    recipe["tune"] = {}
    space = dotted(section) if isinstance(section, dict) else section
    read_space(space, recipe, target)
    return recipe, space


def tune(target: str | None, overrides: list[str], out: str | Path, trials: int | None = None,
         budget: str | None = None, resume: bool = False, workers: int = 1, pruner: str | None = None,
         storage: str | None = None, progress: Progress = Progress()) -> dict:
    """Run (or continue, with `resume`) the study in `out` until it has `trials` finished trials or
    `budget` is spent; returns the result (cnncli.experiments.result). `storage`: a database URL
    several machines can share [default: SQLite in `out`]; `workers`: trials at a time here. A
    study continues with the recipe, trials and pruner it started with unless they are given."""
    from cnncli.runtime.device import usable_cores

    check_request(trials, workers, pruner)
    out = Path(out)
    plan = Plan(recipe={}, space={}, out=str(out), storage=storage or f"sqlite:///{(out / STUDY_FILE).resolve()}",
                name=out.resolve().name, trials=trials or DEFAULT_TRIALS, deadline=time.time() + parse_budget(budget),
                pruner=pruner or PRUNERS[0], threads=max(1, usable_cores() // workers) if workers > 1 else None)
    study = find_study(plan)
    if study is not None and not resume and storage is None:
        raise CnncliError(f"--out {out}: holds a study; continue it with --resume, or choose another --out")
    if study is None and (resume or target is None):
        raise CnncliError(f"--out {out}: no study to resume there" if resume else
                          "tune: give a recipe or a data folder (or --resume --out STUDY)")
    started = study.user_attrs if study is not None else {}
    plan.trials = trials or started.get("trials", plan.trials)
    plan.pruner = pruner or started.get("pruner", plan.pruner)
    plan.recipe, plan.space = recipe_and_space(target, overrides) if target else (started["recipe"], started["space"])
    if study is None:
        check_writable(out, "--out", folder=True)
        if out.is_dir() and any(path.name != STUDY_FILE for path in out.iterdir()):
            raise CnncliError(f"--out {out}: exists and holds no study; choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        study = create_study(plan, plan.dimensions())
    check_same(study, plan, str(out))
    if resume:
        for number in take_over_interrupted(study, out):
            progress.note(f"trial {number} was cut short: it runs again first")
    if workers == 1:
        run_trials(plan, progress)
    else:
        run_workers(plan, workers, type(progress))
    return study_result(find_study(plan), plan, progress)
