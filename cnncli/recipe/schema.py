"""The recipe schema: the sections a recipe may hold, completed by the registries (`schema`).

Each registered modality adds its `data.<name>` section and its `augment` keys, and names such as
optimizers and schedules are checked against their registry. Fields are the only keys a recipe may
use, their types decide how a `--set` value is read, and their defaults are what a resolved recipe
prints.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from cnncli.data.schema import DataConfig
from cnncli.modalities import MODALITIES
from cnncli.names import OPTIMIZERS, SCHEDULES, TRACKERS


@dataclass
class ModelConfig:
    """The shared backbone as a list of block specs, or a timm architecture by name; the
    classifier layer is appended for you. Weights start at random unless `pretrained` or `init`."""

    # a list of block specs, or auto: the modality's own backbone, sized to the training data (images:
    # a residual net; cnncli.recipe.defaults.fitted_model). Typed Any so that --set reaches into the list.
    blocks: Any = field(default_factory=list)
    backbone: str | None = None  # a timm model (e.g. resnet18) instead of `blocks`: the timm extra
    backbone_options: dict[str, Any] = field(default_factory=dict)  # passed through to timm.create_model
    # weights for the backbone: a .safetensors file, a folder holding model.safetensors and config.json
    # (the hub's layout), or hf-hub:ORG/NAME (e.g. hf-hub:timm/resnet18.a1_in1k, fetched into the cache)
    pretrained: str | None = None
    init: str | None = None  # a bundle (e.g. runs/x) whose network this run starts from, with a new classifier


@dataclass
class TrainConfig:
    epochs: int = 10
    # wall-clock time for the whole run (90s, 20m, 1h30m): epochs and schedule are fitted to it (training/budget.py)
    budget: str | None = None
    steps: int | None = None  # when set, train this many optimiser steps instead of `epochs`
    batch_size: int = 64
    eval_batch_size: int = 512
    optimizer: str = field(default="adam", metadata={"choices": OPTIMIZERS})
    lr: float = 0.001
    weight_decay: float = 0.0
    decay_norm_and_bias: bool = True  # false: weight decay on conv and linear weights only, as residual nets want
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd: Nesterov's momentum (the gradient taken where the momentum is heading)
    schedule: str = field(default="constant", metadata={"choices": SCHEDULES})
    lr_min: float = 0.0  # floor of the exponential and cosine schedules
    decay_steps: float = 2000.0  # exponential: lr_min + (lr - lr_min) * exp(-step / decay_steps)
    label_smoothing: float = 0.0
    mixup: float = 0.0  # alpha of mixup: each batch blended with a shuffled copy by a Beta(alpha, alpha) weight; 0 = off
    max_norm: float | None = None  # clip each output unit's weight norm of the last layer (Kim)
    ensemble: int = 1  # train this many networks (seeds seed, seed+1000, ...) and average their probabilities
    rotate_val: bool = False  # member i validates on its own fold (data.val joins the training data): all data trains
    auto_members: int = 1  # augment: auto judges each candidate by this many members, each on its own fold
    # below 1: augment: auto trains each candidate for this share of a member's epochs (or time), then the
    # members afresh with the winner; 1: the candidates' networks are kept as the first members (text)
    auto_share: float = 1.0
    # images: the first low_res_share of the steps see pictures scaled by low_res_scale (1: off); faster early
    # steps, and the rest at full size (cnncli.training.low_res)
    low_res_scale: float = 1.0
    low_res_share: float = 0.5
    freeze_epochs: int = 0  # train only the classifier for this many epochs (backbone fixed, batch norm too)
    backbone_lr: float = 1.0  # the backbone's learning rate is train.lr times this (0: fixed; 0.1: fine-tuning)
    ema: float | None = None  # decay of a moving average of the weights (e.g. 0.999), used to validate and keep
    lookahead: bool = False  # every 5 steps the network is pulled back to slow weights (training/averaging.py)
    keep: Literal["best", "last"] = "best"  # best on validation, or the last epoch's weights
    calibrate: bool = True  # fit a temperature on validation (rotate_val: out-of-fold rows): scores match accuracy
    early_stopping: int | None = None  # stop after this many epochs without a better val loss
    seed: int = 0
    device: str = "auto"  # auto = cuda when present, else cpu
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto = bf16 (older GPUs: fp16) on CUDA, fp32 on CPU
    sync_batch_norm: bool = False  # under torchrun on GPUs: batch norm statistics over the whole global batch
    threads: int | None = None  # CPU threads for torch; None = torch's default
    # off, or tensorboard (event files in the bundle) or mlflow (a run in MLFLOW_TRACKING_URI): the track extra
    track: str = field(default="off", metadata={"choices": TRACKERS})


@dataclass
class AugmentConfig:
    """Training-time randomness; never applied at evaluation or prediction. Its keys are those
    of every registered modality (see `schema`); a recipe may set only its own modality's."""

    auto: bool = False  # `augment: auto`: validation chooses them among the modality's candidates (autotune.py)


@dataclass
class Config:
    """One resolved recipe: everything `train` needs, printed back in full in the bundle."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    description: str = ""
    # what `cnncli tune` searches: recipe keys -> {log: [a, b]}, {uniform: [a, b]}, {int: [a, b]} or a
    # list of choices (cnncli.experiments.space reads it); `cnncli train` ignores it
    tune: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# The schema the registered modalities complete

_SCHEMA: dict[int, type] = {}


def schema() -> type[Config]:
    """Config with a `data.<name>` section per registered modality and the union of their augment
    keys (rebuilt when a modality is registered). A key two modalities share must agree on its
    type and default, since a recipe's `augment` section has one value per key."""
    if MODALITIES.version not in _SCHEMA:
        classes = [modality for _, modality in MODALITIES.items()]
        data = dataclasses.make_dataclass("DataConfig", [
            ("modality", str, field(default="image", metadata={"choices": MODALITIES})),
            *[(modality.name, modality.options_type, field(default_factory=modality.options_type))
              for modality in classes]], bases=(DataConfig,))
        augment_fields: dict[str, tuple] = {}
        for modality in classes:
            hints = typing.get_type_hints(modality.augment_type)
            for item in dataclasses.fields(modality.augment_type):
                entry = (item.name, hints[item.name], field(default=item.default))
                known = augment_fields.setdefault(item.name, entry)
                if (known[1], known[2].default) != (entry[1], item.default):
                    raise TypeError(f"augment.{item.name}: modalities disagree on its type or default")
        augment = dataclasses.make_dataclass("AugmentConfig", list(augment_fields.values()), bases=(AugmentConfig,))
        _SCHEMA.clear()
        _SCHEMA[MODALITIES.version] = dataclasses.make_dataclass("Config", [
            ("data", data, field(default_factory=data)),
            ("augment", augment, field(default_factory=augment))], bases=(Config,))
    return _SCHEMA[MODALITIES.version]
