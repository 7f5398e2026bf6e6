"""The range of every recipe value the types alone cannot express, checked when a recipe is read.

A value out of range is refused with one line naming the key before any data are read, rather
than failing after training (`eval_batch_size: 0`), training nothing (`steps: -5`) or hanging
(`epochs: 1e12`). Modalities check their own `data.<name>` and augment keys (Modality.check_options,
Modality.check_augment). The network is checked here too, so that its refusals name the recipe:
every block's kind and options (or the named backbone, and where its weights come from), and
where the recipe alone fixes the input's shape, the blocks built on it and the network's size
(cnncli.nn.model.check_network_size, as training checks it before reading data; otherwise
training checks it once the data have fixed the shape).
"""

from __future__ import annotations

import re
from typing import Any

from cnncli.errors import CnncliError
from cnncli.files.reading import is_text_encoding
from cnncli.limits import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_MEMBERS, MAX_SEED, MAX_STEPS, MAX_THREADS
from cnncli.modalities import MODALITIES
from cnncli.nn.backbones import check_backbone
from cnncli.nn.blocks import parse_block
from cnncli.nn.model import check_network_size
from cnncli.nn.pretrained import check_weights_source
from cnncli.runtime.durations import parse_duration

DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_values(config: Any, origin: str) -> None:
    """Raise CnncliError for the first value of `config` out of its range, naming `origin` and the key."""
    scaled = config.train.low_res_scale < 1 and config.train.low_res_share > 0  # as training.low_res.scaling
    for key, ok, message in _train_checks(config.train) + _data_checks(config.data) + [
            ("train.low_res_scale", not scaled or config.data.modality == "image",
             f"scales pictures: images only (data.modality is {config.data.modality})")]:
        if not ok:
            raise CnncliError(f"{origin}: {key}: {message}")
    model = config.model
    if not (model.blocks or model.backbone or model.init):
        raise CnncliError(f"{origin}: model.blocks: must list at least one block (or set model.backbone)")
    for name, modality in MODALITIES.items():
        for key, message in modality.check_options(getattr(config.data, name)):
            raise CnncliError(f"{origin}: data.{name}.{key}: {message}")
        for key, message in modality.check_augment(config.augment):
            raise CnncliError(f"{origin}: augment.{key}: {message}")
    try:
        _check_network(config)
    except CnncliError as error:
        raise CnncliError(f"{origin}: {error}") from None


def _check_network(config: Any) -> None:
    """The recipe's blocks, each kind and option name, or its named backbone and where its weights
    come from; built and sized where the recipe fixes the input (with model.init, the network is
    the bundle's, checked when training reads it)."""
    model = config.model
    automatic = model.blocks == "auto"  # the modality's, sized to the data (cnncli.recipe.defaults.fitted_model)
    if not (automatic or isinstance(model.blocks, list)):
        raise CnncliError(f"model.blocks: expected a list of blocks, or auto; got {model.blocks!r:.40}")
    for index, spec in enumerate([] if automatic else model.blocks):
        parse_block(spec, f"model.blocks[{index}]")
    check_weights_source(model.pretrained, model.init, model.backbone)
    if model.init or (automatic and not model.backbone):
        return
    if model.backbone:
        check_backbone(model.backbone, model.backbone_options)
    modality = MODALITIES.get(config.data.modality).from_config(config)
    if modality.shape_from_recipe:  # two classes, the fewest a run can have
        check_network_size(modality, model, 2, max(config.train.batch_size,
                           config.train.eval_batch_size), config.train.ensemble)


def _between(value: int | None, low: int, high: int, optional: bool = False) -> tuple[bool, str]:
    ok = (optional and value is None) or (value is not None and low <= value <= high)
    return ok, f"must be from {low:,} to {high:,}" + (" (or null)" if optional else "")


def _train_checks(train: Any) -> list[tuple[str, bool, str]]:
    return [
        ("train.epochs", *_between(train.epochs, 1, MAX_EPOCHS)),
        ("train.budget", _is_duration(train.budget), "must be a duration such as 90s, 20m or 1h30m (or null)"),
        ("train.steps", *_between(train.steps, 1, MAX_STEPS, optional=True)),
        ("train.batch_size", *_between(train.batch_size, 1, MAX_BATCH_SIZE)),
        ("train.eval_batch_size", *_between(train.eval_batch_size, 1, MAX_BATCH_SIZE)),
        ("train.lr", train.lr > 0, "must be positive"),
        ("train.weight_decay", train.weight_decay >= 0, "must be 0 or more"),
        ("train.momentum", 0 <= train.momentum < 1, "must be in [0, 1)"),
        ("train.nesterov", not train.nesterov or train.momentum > 0, "needs train.momentum above 0"),
        ("train.lr_min", 0 <= train.lr_min <= train.lr, "must be from 0 to train.lr"),
        ("train.decay_steps", train.decay_steps > 0, "must be positive"),
        ("train.label_smoothing", 0 <= train.label_smoothing < 1, "must be in [0, 1)"),
        ("train.mixup", 0 <= train.mixup <= 100, "must be 0 (off) or the alpha of its Beta weights, e.g. 0.2"),
        ("train.max_norm", train.max_norm is None or train.max_norm > 0, "must be positive (or null)"),
        ("train.ensemble", *_between(train.ensemble, 1, MAX_MEMBERS)),
        ("train.auto_share", 0 < train.auto_share <= 1, "must be in (0, 1]: a share of a member's epochs"),
        ("train.low_res_scale", 0.25 <= train.low_res_scale <= 1, "must be from 0.25 to 1 (1: off)"),
        ("train.low_res_share", 0 <= train.low_res_share < 1, "must be in [0, 1): a share of the steps"),
        ("train.freeze_epochs", *_between(train.freeze_epochs, 0, MAX_EPOCHS)),
        ("train.backbone_lr", 0 <= train.backbone_lr <= 1e6, "must be 0 (backbone fixed) or more: train.lr x it"),
        ("train.ema", train.ema is None or 0 < train.ema < 1, "must be in (0, 1), e.g. 0.999 (or null)"),
        ("train.lookahead", not (train.lookahead and train.ema), "cannot be used with train.ema: choose one average"),
        ("train.early_stopping", *_between(train.early_stopping, 1, MAX_EPOCHS, optional=True)),
        ("train.seed", *_between(train.seed, 0, MAX_SEED)),
        ("train.device", bool(DEVICE_NAME.fullmatch(train.device)), "must be auto, cpu, mps, cuda or cuda:N"),
        ("train.threads", *_between(train.threads, 1, MAX_THREADS, optional=True)),
    ]


def _data_checks(data: Any) -> list[tuple[str, bool, str]]:
    split = data.split
    every = split.test_every
    test_range = split.test_range
    return [
        ("data.encoding", data.encoding == "auto" or is_text_encoding(data.encoding),
         "unknown text encoding (e.g. utf-8, latin-1, cp1252, or auto: detected per file)"),
        ("data.label_regex", _is_regex(data.label_regex), "not a valid regular expression"),
        ("data.split.test_pattern", _is_regex(split.test_pattern), "not a valid regular expression"),
        ("data.split.test_fraction", 0 <= split.test_fraction < 1, "must be in [0, 1)"),
        ("data.split.val_fraction", 0 <= split.val_fraction < 1, "must be in [0, 1)"),
        ("data.split.test_every", *_between(every, 2, MAX_STEPS, optional=True)),
        ("data.split.test_offset", 0 <= split.test_offset < (every or 1), "must be from 0 to data.split.test_every - 1"),
        ("data.split.test_range", test_range is None or (len(test_range) == 2 and 0 <= test_range[0] < test_range[1]),
         "must be [start, end) with 0 <= start < end"),
        ("data.split.seed", *_between(split.seed, 0, MAX_SEED)),
        ("data.workers", *_between(data.workers, 0, MAX_THREADS, optional=True)),
        ("data.memory_budget", data.memory_budget is None or data.memory_budget > 0, "must be positive, in GB (or null)"),
        *[(f"data.{key}", _is_column(getattr(data, key)), "must be a column's name, or its number from 0")
          for key in ("text_column", "label_column", "path_column")],
    ]


def _is_column(column: str | int) -> bool:
    return (column >= 0) if isinstance(column, int) else bool(str(column))


def _is_duration(text: str | None) -> bool:
    if text is None:
        return True
    try:
        parse_duration(text)
    except CnncliError:
        return False
    return True


def _is_regex(pattern: str | None) -> bool:
    if pattern is None:
        return True
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        return False
    return True
