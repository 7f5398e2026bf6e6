"""The chosen trial's network, taken as the first member of the ensemble tune trains at the end.

A trial of an ensemble recipe trains one network (study.Plan.trial_values): with the same seed,
rows and settings, that is member 1 of the ensemble the chosen settings give, since each member
trains from its own seed (cnncli.nn.model.member_seed) and member 1's is the recipe's. Training the
choice as the recipe says would train it a second time, a network's worth of the study's time (a
third of it for FSDD's three networks); it is taken from the trial's bundle instead.

Only where the trial trained exactly that network: its recipe is the final one with one network,
and nothing makes member 1 of an ensemble differ from a network trained alone: augment: auto's
trials (they run before the members), validation folds that rotate by member, a time budget
shared among the members.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cnncli.bundle.io import load_bundle, read_info
from cnncli.bundle.resume_state import TrainState
from cnncli.recipe.config import config_from_dict, config_to_dict
from cnncli.verbs.report import read_log


def why_not_reused(trial_info: dict, config: Any) -> str | None:
    """Why the trial's network cannot stand as member 1 of `config`'s ensemble (None: it can)."""
    train = config.train
    if trial_info["status"] != "complete" or trial_info.get("members", 1) != 1:
        return "the trial's bundle is not one finished network"
    if config.augment.auto or train.rotate_val or train.budget:
        return "augment: auto, train.rotate_val or train.budget train member 1 otherwise than a network alone"
    alone = dataclasses.replace(config, train=dataclasses.replace(train, ensemble=1))
    trained = config_to_dict(config_from_dict(trial_info["recipe"], origin="the trial's recipe"))
    if trained != config_to_dict(alone):
        return "the trial's recipe is not the chosen one with one network"
    return None


def trial_as_first_member(trial: Path, config: Any) -> tuple[TrainState | None, str | None]:
    """(the state `train` continues from, with the trial's network as member 1 of `config`'s
    ensemble, and None) where it can; else (None, why not)."""
    reason = why_not_reused(read_info(trial), config)
    if reason is not None:  # its weights are not read
        return None, reason
    bundle = load_bundle(trial)
    training = bundle.info["training"]
    history = [{**record, "member": 1} for record in read_log(bundle)]
    result = {"history": history, "kept_epoch": training["kept_epoch"], "kept": training["kept"],
              "stopped_early": training["stopped_early"], "seconds": float(training["fit_seconds"])}
    state = TrainState(member=1, finished=[bundle.network.state_dict()], finished_results=[result],
                       history=list(history), trained_in=str(trial))
    return state, None
