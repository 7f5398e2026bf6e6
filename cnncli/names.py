"""The registries of names a recipe is checked against before the code behind them is loaded.

The recipe schema sits below training, yet `train.optimizer`, `train.schedule` and `train.track` must be
refused when the recipe is read, not when training starts. So the names live here, on the ground
floor, each pointing at its builder as a "module:attr" string that is imported on first use
(tests/test_structure.py checks every string resolves). A recipe's other names (modalities,
blocks, tokenizers, output formats) have registries in the package that owns them, below every
package that reads them.
"""

from __future__ import annotations

from cnncli.registry import Registry

OPTIMIZERS = Registry("optimizer", "train.optimizer")
for _name in ("adam", "adamw", "sgd"):
    OPTIMIZERS.register(_name, f"cnncli.training.optim:{_name}")

SCHEDULES = Registry("schedule", "train.schedule")
for _name in ("constant", "exponential", "cosine", "onecycle"):
    SCHEDULES.register(_name, f"cnncli.training.optim:{_name}")

TRACKERS = Registry("tracker", "train.track")  # where a run's curves go besides its bundle (the track extra)
for _name, _class in (("off", "Tracker"), ("tensorboard", "TensorBoardTracker"), ("mlflow", "MlflowTracker")):
    TRACKERS.register(_name, f"cnncli.training.tracking:{_class}")
