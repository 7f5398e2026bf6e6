"""`augment: auto`: how hard to regularise, chosen on validation folds, never on test.

Settings tuned for one data set transfer badly: sentiment's random spans with 30% of words hidden
remove the very words that say what a question asks. So a modality declares a small grid of
candidates (`Modality.regularisation_grid`: augmentation strength and the dropout that goes with
it), and before the ensemble trains, its first `train.auto_members` members are trained once per
candidate, each on its own training data and validated on its own fold, as they would be anyway.
The candidate with the best mean validation accuracy (then loss) of its kept epochs wins; its
networks are kept as those members, and the rest of the ensemble trains with its settings.

The cost, stated: (candidates - 1) x auto_members extra networks, e.g. 2 more networks beside a
five-network ensemble for the text grid of three (about 40% more time). Test data are not read.

With train.auto_share below 1 (images: 0.1) each trial costs that share of a member, spent on
`trial_rows`: a seeded share of the training rows (at least TRIAL_ROWS, all of them when there
are fewer) trained for as many epochs as the member will be, fewer only where the rows had to be
more than the share. Not all the rows for a share of the epochs: augmentation pays off only once
the network has seen its pictures many times, so short trials crown no augmentation at all (on
CIFAR-10, two epochs of every row each: none 0.781, flip 0.752; docs/BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnncli.bundle.io import read_info
from cnncli.bundle.resume_state import TrainState
from cnncli.nn.model import member_seed
from cnncli.recipe.config import config_from_dict, config_to_dict
from cnncli.recipe.schema import Config
from cnncli.runtime.progress import Progress
from cnncli.training.budget import MIN_EPOCHS
from cnncli.training.encoding import Rows
from cnncli.training.engine import FitResult, fit
from cnncli.training.transfer import fresh_network

TRIAL_ROWS = 2_000  # the fewest training rows a short trial (train.auto_share < 1) trains on


@dataclass
class Choice:
    """The outcome of `choose`: the settings chosen and the networks already trained with them."""

    config: Config  # the recipe with the winner's values
    record: dict  # for the bundle: the grid, each candidate's validation score, the winner
    members: list[torch.nn.Module] = field(default_factory=list)  # the winner's first members, trained
    results: list[FitResult] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # the winner's epoch records


def choose(run: Any, member_data, progress: Progress = Progress()) -> Choice:
    """Train the first members under each candidate of `run.modality`'s grid and keep the best.

    `run` is train.Prepared; `member_data(run, index)` gives member `index`'s (train, val) data.
    Leaves `run.config` and the modality's augment settings at the winner's."""
    grid = run.modality.regularisation_grid(run.config)
    if not grid:
        return Choice(run.config, {"grid": [], "chosen": None, "reason": "the modality has nothing to choose"})
    count = max(1, min(run.config.train.auto_members, run.config.train.ensemble))
    validation_rows = {index: len(member_data(run, index)[1]) for index in range(count)}
    judged = [index for index, rows in validation_rows.items() if rows]
    if judged and run.short_budget:  # cnncli.training.budget.BackboneFit.none_fit; the plan has no trials
        name, values = grid[0]
        apply(run, with_values(run.config, values))
        progress.note(f"augment: auto: train.budget {run.config.train.budget} is too short to compare settings (the "
                      f"smallest network would not train {MIN_EPOCHS} epochs in its share of it); using {name} "
                      f"({describe(values)})")
        return Choice(run.config, {"grid": [n for n, _ in grid], "chosen": name, "values": values,
                                   "reason": "train.budget too short to compare settings"})
    if not judged:
        name, values = grid[0]
        apply(run, with_values(run.config, values))
        progress.note(f"augment: auto: no validation data to choose on; using {name} ({describe(values)})")
        return Choice(run.config, {"grid": [n for n, _ in grid], "chosen": name, "values": values,
                                   "reason": "no validation data"})
    started = time.perf_counter()
    share = run.config.train.auto_share
    cost = f" costing {share:.0%} of one (on {share:.0%} of the rows, at least {TRIAL_ROWS:,})" if share < 1 else ""
    progress.note(f"augment: auto: trying {len(grid)} settings ({', '.join(n for n, _ in grid)}) with "
                  f"{len(judged)} network(s) each{cost}, judged on their validation folds")
    trials, steps = [], None
    for name, values in grid:
        trials.append(_try(run, member_data, name, values, judged, progress, steps))
        if run.clock.seconds:  # under a budget, every trial takes the steps the first had time for
            if len(trials) == 1 and trials[0][0]["epochs"] < 1:  # too short to compare settings
                return _untried(run, grid, trials[0], len(judged), progress)
            steps = steps or trials[0][0]["steps"]
    tried = [summary for summary, _ in trials]
    rows = sum(validation_rows[index] for index in judged)
    margin = noise_margin(tried[0]["val_accuracy"], rows) if share < 1 else 0.0
    position = best_candidate(tried, margin)
    best, winner = trials[position]
    apply(run, winner.config)
    record = {"grid": [n for n, _ in grid], "chosen": best["name"], "values": best["values"],
              "members": len(judged), "candidates": tried, "seconds": round(time.perf_counter() - started, 2),
              **({"margin": round(margin, 5)} if margin else {})}
    kept = "" if best_candidate(tried, 0.0) == position else (
        f" (kept: no other led it by more than the trials' noise, {margin:.4f} on {rows:,} validation rows)")
    progress.note(f"augment: auto chose {best['name']} ({describe(best['values'])}){kept}: validation accuracy "
                  + ", ".join(f"{t['name']} {t['val_accuracy']:.4f}" for t in tried))
    winner.record = record
    if share < 1:  # short trials: the members train afresh, as long as the recipe says
        winner.members, winner.results, winner.history = [], [], []
    return winner


def settle(run: Any, out: Path, progress: Progress, resume: TrainState | None, member_data) -> TrainState | None:
    """augment: auto for a training run (`run`: train.Prepared): choose the settings on
    validation, keep the networks trained for it as the first members (train.auto_share 1), and
    return the state the ensemble continues from. A resumed run takes its bundle's choice."""
    if resume is not None:
        run.choice = read_info(out)["training"].get("auto") or {}
        apply(run, chosen_config(run.config, run.choice))
        return resume
    choice = choose(run, member_data, progress)
    run.choice = choice.record
    if not choice.members:
        return None
    run.network = choice.members[0]
    return TrainState(member=len(choice.members), finished=[member.state_dict() for member in choice.members],
                      finished_results=[dataclasses.asdict(result) for result in choice.results],
                      history=choice.history)


def _untried(run: Any, grid: list, first: tuple[dict, Choice], judged: int, progress: Progress) -> Choice:
    """The grid's first candidate (tried, it trained less than an epoch), the others left untried:
    in a budget that short, comparing settings would eat the time the network needs."""
    summary, choice = first
    run.clock.skip((len(grid) - 1) * judged)
    apply(run, choice.config)
    progress.note(f"augment: auto: train.budget {run.config.train.budget} is too short to compare settings (a trial "
                  f"trained less than an epoch); using {summary['name']} ({describe(summary['values'])})")
    choice.record = {"grid": [n for n, _ in grid], "chosen": summary["name"], "values": summary["values"],
                     "candidates": [summary], "reason": "train.budget too short to compare settings"}
    if run.config.train.auto_share < 1:
        choice.members, choice.results, choice.history = [], [], []
    return choice


def _try(run: Any, member_data, name: str, values: dict, judged: list[int], progress: Progress,
         steps: int | None = None) -> tuple[dict, Choice]:
    """Train the judged members under one candidate (`steps` each, when given); their mean score
    on their own folds."""
    config = with_values(run.config, values)
    apply(run, config)
    choice = Choice(config, {})
    accuracies, losses = [], []
    for index in judged:
        settings = trial_settings(config.train, member_seed(config.train.seed, index), steps)
        torch.manual_seed(settings.seed)
        network = fresh_network(run.modality, config, len(run.splits.labels), run.start).to(run.device)
        train_data, val_data = member_data(run, index)
        train_data, settings = trial_rows(train_data, settings, config.train.auto_share)
        result = fit(network, run.modality, train_data, val_data, settings, run.device, progress,
                     cluster=run.cluster, pace=run.clock.pace(len(train_data), settings.batch_size, steps))
        kept = result.history[result.kept_epoch - 1]
        accuracies.append(kept["val_accuracy"])
        losses.append(kept["val_loss"])
        for record in result.history:
            choice.history.append({**record, "member": index + 1} if config.train.ensemble > 1 else record)
        choice.members.append(network)
        choice.results.append(result)
    accuracy, loss = sum(accuracies) / len(accuracies), sum(losses) / len(losses)
    progress.note(f"augment: auto: {name} ({describe(values)}): validation accuracy {accuracy:.4f}, loss {loss:.4f}")
    summary = {"name": name, "values": values, "val_accuracy": round(accuracy, 5), "val_loss": round(loss, 5),
               "kept_epochs": [r.kept_epoch for r in choice.results],
               "steps": max(r.history[-1]["step"] for r in choice.results), "epochs": min(
                   r.history[-1]["step"] / math.ceil(len(train_data) / min(settings.batch_size, len(train_data)))
                   for r in choice.results),
               "seconds": round(sum(r.seconds for r in choice.results), 2)}
    return summary, choice


def best_candidate(tried: list[dict], margin: float = 0.0) -> int:
    """The position of the winner: the best mean accuracy, then loss; on a tie the candidate listed
    first. With a `margin`, the first candidate (the modality's default) stays unless another's
    accuracy exceeds its own by more than the margin."""
    position = max(range(len(tried)), key=lambda i: (tried[i]["val_accuracy"], -tried[i]["val_loss"], -i))
    if not margin:
        return position
    return position if tried[position]["val_accuracy"] - tried[0]["val_accuracy"] > margin else 0


def noise_margin(accuracy: float, rows: int) -> float:
    """Two standard errors of the difference between two accuracies near `accuracy`, each measured
    on `rows` validation rows: what short trials (train.auto_share < 1) must lead the default by.
    A short trial ranks networks trained for a tenth of the steps, where less augmentation learns
    faster: on CIFAR-10 (4,050 rows, 14 epochs) no augmentation led flip by 1.8 points, within
    this margin (2.0 on 4,500 rows), where every published result trains with flips."""
    return 2 * math.sqrt(2 * accuracy * (1 - accuracy) / max(rows, 1))


def trial_settings(train: Any, seed: int, steps: int | None = None) -> Any:
    """A candidate's training settings: the member's seed, and with train.auto_share below 1 that
    share of its steps (with a budget, of its time: cnncli.training.budget), or `steps`."""
    if steps is None and train.steps:
        steps = max(1, round(train.steps * train.auto_share))
    return dataclasses.replace(train, seed=seed, steps=steps)


def trial_rows(data: Any, settings: Any, share: float) -> tuple[Any, Any]:
    """The rows a trial trains on, and its settings: with `share` below 1, a seeded `share` of
    `data`'s rows (at least TRIAL_ROWS; all of them when there are fewer) and the epochs that make
    the trial cost `share` of the member's training (all its epochs when the rows are the share)."""
    if share >= 1:
        return data, settings
    count = min(len(data), max(round(share * len(data)), TRIAL_ROWS))
    epochs = max(1, round(settings.epochs * share * len(data) / max(count, 1)))
    settings = dataclasses.replace(settings, epochs=epochs)
    if count == len(data):
        return data, settings
    picked = torch.randperm(len(data), generator=torch.Generator().manual_seed(settings.seed))[:count]
    return Rows(data, picked.sort().values), settings


def apply(run: Any, config: Config) -> None:
    """Make `config` the run's recipe and its augment settings the modality's."""
    run.config = config
    run.modality.use_augment(config)


def chosen_config(config: Config, record: dict) -> Config:
    """The recipe with a recorded choice applied (a resumed run does not choose again)."""
    return with_values(config, record["values"]) if record.get("values") else config


def describe(values: dict) -> str:
    """The values a candidate sets, augment keys by their own names; those left off are not shown."""
    return ", ".join(f"{key.split('.', 1)[-1] if key.startswith('augment.') else key}={value}"
                     for key, value in values.items() if value) or "nothing"


def with_values(config: Config, values: dict[str, Any]) -> Config:
    """A copy of `config` with dotted keys set (`model.blocks.0.dropout` indexes a list): a
    candidate's recipe, whose augment settings are fixed (augment.auto off)."""
    raw = config_to_dict(config)
    for key, value in {**values, "augment.auto": False}.items():
        node: Any = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(last) if isinstance(node, list) else last] = value
    return config_from_dict(raw, "augment: auto")
