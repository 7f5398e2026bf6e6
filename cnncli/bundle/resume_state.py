"""Everything a fit needs to continue exactly where an epoch ended, as safetensors + JSON.

After each epoch the trainer writes this beside the partial bundle (resume.safetensors and
resume.json), so `cnncli train --resume BUNDLE` continues a crashed or interrupted run and ends
with the same weights as a run that never stopped: the raw (not averaged) weights, the optimiser
and schedule state, the three random streams (dropout, augmentation, batch order), the weight
average, the best epoch so far, and for an ensemble the members already trained (a run of
several processes keeps each rank's own random streams too, as `rankN.` entries). Tensors go to
safetensors and the rest to JSON, so reading a checkpoint runs no code, like reading a bundle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import save

from cnncli.errors import CnncliError
from cnncli.files.jsontext import dumps
from cnncli.limits import MAX_EPOCHS, MAX_MEMBERS, MAX_STEPS

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
    scaler: dict[str, Any] | None = None  # fp16's gradient scaler (plain numbers)


@dataclass
class TrainState:
    """A whole training run: the ensemble members finished so far and the fit in progress."""

    member: int  # index of the member being trained
    finished: list[dict[str, torch.Tensor]] = field(default_factory=list)  # their weights
    finished_results: list[dict] = field(default_factory=list)  # their FitResult fields
    history: list[dict] = field(default_factory=list)  # every epoch record so far, all members
    fit: FitState | None = None
    trained_in: str | None = None  # where the finished members were trained when not in this run (tune's trial)


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
                       "has_best": fit.best is not None, "has_average": fit.average is not None,
                       "scaler": fit.scaler}
    return {TENSORS_FILE: save(tensors) if tensors else save({"empty": torch.zeros(0)}),
            STATE_FILE: (dumps(meta, STATE_FILE) + "\n").encode()}


def from_files(tensors: dict[str, torch.Tensor], meta: Any, where: str = STATE_FILE) -> TrainState:
    """Rebuild a TrainState from what `to_files` wrote, once `meta` is checked to be that (a
    tampered or damaged resume.json is one error naming `where` and the key)."""
    check_meta(meta, tensors, where)

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
            best=group("best") if fit["has_best"] else None, average=group("average") if fit["has_average"] else None,
            scaler=fit.get("scaler"))
    return state


# What resume.json holds: key -> (type, lowest, highest) for numbers, type alone otherwise.
META = {"member": (int, 0, MAX_MEMBERS - 1), "finished": (int, 0, MAX_MEMBERS), "finished_results": list,
        "history": list}
FIT_META = {"epoch": (int, 1, MAX_EPOCHS), "step": (int, 0, MAX_STEPS), "history": list,
            "kept_epoch": (int, 0, MAX_EPOCHS), "epochs_without_gain": (int, 0, MAX_EPOCHS), "optimizer": dict,
            "schedule": dict, "has_best": bool, "has_average": bool}
RESULT_META = {"history": list, "kept_epoch": (int, 0, MAX_EPOCHS), "kept": str, "stopped_early": bool,
               "seconds": (float, 0, float("inf"))}


def check_meta(meta: Any, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Raise CnncliError naming `where` and the key unless `meta` has the shape `to_files` gives it."""
    _check_fields(meta, META, "", where)
    if meta["member"] != meta["finished"] or len(meta["finished_results"]) != meta["finished"]:
        raise CnncliError(f"{where}: member, finished and finished_results disagree")
    for index, result in enumerate(meta["finished_results"]):
        _check_fields(result, RESULT_META, f"finished_results[{index}].", where)
    fit = meta.get("fit")
    if fit is None:
        return
    _check_fields(fit, FIT_META, "fit.", where)
    score = fit.get("best_score")
    if score is not None and not (isinstance(score, list) and len(score) == 2
                                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in score)):
        raise CnncliError(f"{where}: fit.best_score: expected [accuracy, -loss] or null")
    optimizer = fit["optimizer"]
    if not isinstance(optimizer.get("param_groups"), list) or not isinstance(optimizer.get("scalars"), dict) or \
            not all(isinstance(group, dict) for group in optimizer["param_groups"]) or \
            not all(key.isdigit() and isinstance(values, dict) for key, values in optimizer["scalars"].items()):
        raise CnncliError(f"{where}: fit.optimizer: expected param_groups (a list) and scalars by parameter")
    names = [name for name in tensors if name.startswith("optimizer/")]
    if not all(name[len("optimizer/"):].partition(".")[0].isdigit() for name in names):
        raise CnncliError(f"{where}: the optimizer tensors are not named by parameter")
    if not isinstance(fit.get("scaler"), (dict, type(None))):
        raise CnncliError(f"{where}: fit.scaler: expected the fp16 gradient scaler's state (an object) or null")
    for needed in ("random/torch", "random/augment", "random/order"):
        if needed not in tensors:
            raise CnncliError(f"{where}: the tensor {needed} is missing from {TENSORS_FILE}")


def _check_fields(values: Any, fields: dict, prefix: str, where: str) -> None:
    if not isinstance(values, dict):
        raise CnncliError(f"{where}: {prefix.rstrip('.') or 'the file'}: expected an object")
    for key, rule in fields.items():
        kind, low, high = rule if isinstance(rule, tuple) else (rule, None, None)
        value = values.get(key)
        number_ok = kind is float and isinstance(value, int)
        if key not in values or isinstance(value, bool) != (kind is bool) or not (isinstance(value, kind) or number_ok):
            raise CnncliError(f"{where}: {prefix}{key}: expected {kind.__name__}, got {str(value)[:40]!r}")
        if low is not None and not low <= value <= high:
            raise CnncliError(f"{where}: {prefix}{key}: {value} is out of range")
    for key in ("history",):
        if key in fields and not all(isinstance(record, dict) for record in values[key]):
            raise CnncliError(f"{where}: {prefix}{key}: expected a list of epoch records")


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
            dumps(value, STATE_FILE)
        except TypeError:
            continue
        kept[key] = value
    return kept
