"""Everything a fit needs to continue exactly where an epoch ended, as safetensors + JSON.

After each epoch the trainer writes this beside the partial bundle (resume.safetensors and
resume.json), so `cnncli train --resume BUNDLE` continues a crashed or interrupted run and ends
with the same weights as a run that never stopped: the raw (not averaged) weights, the optimiser
and schedule state, the three random streams (dropout, augmentation, batch order), the weight
average, the best epoch so far, and for an ensemble the members already trained. Tensors go to
safetensors and the rest to JSON, so reading a checkpoint runs no code, like reading a bundle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import save

TENSORS_FILE, STATE_FILE = "resume.safetensors", "resume.json"


@dataclass
class FitState:
    """The state of one fit at the end of `epoch` (tensors keyed by group, then by name)."""

    epoch: int
    step: int
    history: list[dict]
    best_score: list[float] | None
    kept_epoch: int
    epochs_without_gain: int
    network: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    schedule: dict[str, Any]
    random: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor] | None = None
    average: dict[str, torch.Tensor] | None = None


@dataclass
class TrainState:
    """A whole training run: the ensemble members finished so far and the fit in progress."""

    member: int  # index of the member being trained
    finished: list[dict[str, torch.Tensor]] = field(default_factory=list)  # their weights
    finished_results: list[dict] = field(default_factory=list)  # their FitResult fields
    history: list[dict] = field(default_factory=list)  # every epoch record so far, all members
    fit: FitState | None = None


def to_files(state: TrainState) -> dict[str, bytes]:
    """The two files of a checkpoint, as bytes for the bundle writer."""
    tensors: dict[str, torch.Tensor] = {}

    def put(prefix: str, group: dict[str, torch.Tensor] | None) -> None:
        for name, tensor in (group or {}).items():
            tensors[f"{prefix}/{name}"] = tensor.detach().cpu().contiguous()

    for index, weights in enumerate(state.finished):
        put(f"finished.{index}", weights)
    meta: dict[str, Any] = {"member": state.member, "finished": len(state.finished),
                            "finished_results": state.finished_results, "history": state.history}
    fit = state.fit
    if fit is not None:
        optimizer_tensors, optimizer_meta = _split_optimizer(fit.optimizer)
        put("network", fit.network)
        put("optimizer", optimizer_tensors)
        put("random", fit.random)
        put("best", fit.best)
        put("average", fit.average)
        meta["fit"] = {"epoch": fit.epoch, "step": fit.step, "history": fit.history, "best_score": fit.best_score,
                       "kept_epoch": fit.kept_epoch, "epochs_without_gain": fit.epochs_without_gain,
                       "optimizer": optimizer_meta, "schedule": _json_only(fit.schedule),
                       "has_best": fit.best is not None, "has_average": fit.average is not None}
    return {TENSORS_FILE: save(tensors) if tensors else save({"empty": torch.zeros(0)}),
            STATE_FILE: (json.dumps(meta) + "\n").encode()}


def from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> TrainState:
    """Rebuild a TrainState from what `to_files` wrote."""

    def group(prefix: str) -> dict[str, torch.Tensor]:
        start = f"{prefix}/"
        return {name[len(start):]: tensor for name, tensor in tensors.items() if name.startswith(start)}

    state = TrainState(member=meta["member"], finished=[group(f"finished.{i}") for i in range(meta["finished"])],
                       finished_results=meta["finished_results"], history=meta["history"])
    fit = meta.get("fit")
    if fit is not None:
        state.fit = FitState(
            epoch=fit["epoch"], step=fit["step"], history=fit["history"], best_score=fit["best_score"],
            kept_epoch=fit["kept_epoch"], epochs_without_gain=fit["epochs_without_gain"],
            network=group("network"), optimizer=_join_optimizer(group("optimizer"), fit["optimizer"]),
            schedule=fit["schedule"], random=group("random"),
            best=group("best") if fit["has_best"] else None, average=group("average") if fit["has_average"] else None)
    return state


def _split_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """optimizer.state_dict() -> (its tensors by 'param.key', the JSON rest)."""
    tensors, scalars = {}, {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _json_only(values: dict) -> dict:
    """A scheduler's state without what JSON cannot hold (the schedule's functions are rebuilt
    from the recipe on resume, so they need not be saved)."""
    kept = {}
    for key, value in values.items():
        try:
            json.dumps(value)
        except TypeError:
            continue
        kept[key] = value
    return kept
