"""train.track: a run's curves also go to TensorBoard or MLflow, besides its bundle's log.

Off by default; each backend is an optional extra (`pip install 'cnncli[track]'`), imported only
when a recipe names it, and its absence is refused before any data are read. The trainer calls a
tracker at four points: `epoch` after every epoch, `finish` with the final metrics, `files` for
what goes into the bundle, and `close` once the bundle is written or the run stopped.

- tensorboard: event files in the bundle's folder (`tensorboard --logdir runs/`): the epoch
  records as scalars, the final metrics, the confusion matrix as an image and the recipe as text.
  The bundle folder is replaced whole at every checkpoint, so the writer writes to a folder of
  its own and every save of the bundle carries its files; a resumed run keeps the earlier ones.
- mlflow: one run per training run in the store MLFLOW_TRACKING_URI names (else MLflow's own
  local default), in the experiment MLFLOW_EXPERIMENT_NAME (else "cnncli"): the resolved recipe
  as parameters, the epoch records as metrics, the finished bundle as an artifact.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cnncli.errors import CnncliError
from cnncli.files.jsontext import dumps
from cnncli.names import TRACKERS
from cnncli.recipe.keys import flat_keys

EVENTS_PREFIX = "events.out.tfevents."  # TensorBoard's own name for its event files
UNLOGGED = ("epoch", "step", "member")  # record keys that count epochs rather than measure them


class Tracker:
    """train.track: off. Logs nothing; the interface every tracker implements."""

    needs: tuple[str, ...] = ()  # the packages the backend imports

    def __init__(self, out: Path = Path(), recipe: dict | None = None):
        self.out = Path(out)

    def epoch(self, step: int, record: dict) -> None:
        """One epoch's record (`step`: its place in the run's history, across ensemble members)."""

    def finish(self, metrics: dict) -> None:
        """The final model's metrics per split (val, test)."""

    def files(self) -> dict[str, bytes]:
        """Files the bundle must carry (name -> content)."""
        return {}

    def close(self, status: str) -> None:
        """The run ended: FINISHED (its bundle is written), FAILED or KILLED."""


def check_tracker(name: str) -> None:
    """Refuse a tracker whose package is not installed, before any work."""
    missing = [package for package in TRACKERS.get(name).needs if importlib.util.find_spec(package) is None]
    if missing:
        raise CnncliError(f"train.track: {name} needs {', '.join(missing)}, which is not installed; "
                          f"pip install 'cnncli[track]' (or set train.track: off)")


@contextmanager
def tracking(name: str, out: Path, recipe: dict, writes: bool = True) -> Iterator[Tracker]:
    """The run's tracker (a silent one in a process that does not write), closed with the run's
    outcome: FINISHED when the block ends, KILLED on ^C, FAILED on an error (a pruned trial too)."""
    tracker = TRACKERS.get(name)(out, recipe) if writes else Tracker(out, recipe)
    try:
        yield tracker
    except BaseException as error:
        tracker.close("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    tracker.close("FINISHED")


def numbers(record: dict) -> dict[str, float]:
    """The measurements of an epoch record (loss, accuracy, lr, speed), not its counters."""
    return {key: float(value) for key, value in record.items()
            if key not in UNLOGGED and isinstance(value, (int, float)) and not isinstance(value, bool)}


def final_numbers(metrics: dict) -> dict[str, float]:
    """{"final/val_accuracy": ..., "final/test_macro_f1": ...} of the final model."""
    return {f"final/{part}_{key}": float(report[key]) for part, report in metrics.items()
            for key in ("accuracy", "macro_f1") if key in report}


class TensorBoardTracker(Tracker):
    needs = ("tensorboard",)

    def __init__(self, out: Path, recipe: dict):
        from torch.utils.tensorboard import SummaryWriter

        super().__init__(out, recipe)
        self.folder = Path(tempfile.mkdtemp(prefix="cnncli-tensorboard-"))
        for earlier in sorted(self.out.glob(EVENTS_PREFIX + "*")):  # a resumed run continues its curves
            shutil.copyfile(earlier, self.folder / earlier.name)
        self.writer = SummaryWriter(str(self.folder))
        recipe_text = dumps(recipe, "the recipe", indent=2)
        self.writer.add_text("recipe", "    " + recipe_text.replace("\n", "\n    "))  # markdown: as code

    def epoch(self, step: int, record: dict) -> None:
        for key, value in numbers(record).items():
            self.writer.add_scalar(key.replace("_", "/", 1) if key.startswith(("train_", "val_")) else key,
                                   value, step)
        self.writer.flush()

    def finish(self, metrics: dict) -> None:
        import numpy
        from PIL import Image

        from cnncli.output.plots import confusion_png

        for tag, value in final_numbers(metrics).items():
            self.writer.add_scalar(tag, value, 0)
        part = "test" if "test" in metrics else "val"
        if part in metrics:
            picture = numpy.asarray(Image.open(io.BytesIO(confusion_png(metrics[part]))).convert("RGB"))
            self.writer.add_image(f"confusion/{part}", picture, 0, dataformats="HWC")
        self.writer.flush()

    def files(self) -> dict[str, bytes]:
        return {path.name: path.read_bytes() for path in sorted(self.folder.iterdir()) if path.is_file()}

    def close(self, status: str) -> None:
        self.writer.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class MlflowTracker(Tracker):
    needs = ("mlflow",)
    PARAMETER_LENGTH = 6000  # MLflow's limit on a parameter's value
    BATCH = 100  # MLflow's limit on parameters per call

    def __init__(self, out: Path, recipe: dict):
        from mlflow.exceptions import MlflowException

        super().__init__(out, recipe)
        try:
            self._start(recipe)
        except MlflowException as error:  # a store MLflow refuses (its old file store, a server it cannot reach)
            raise CnncliError(f"train.track: mlflow: {str(error).splitlines()[0]}") from None

    def _start(self, recipe: dict) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()  # MLFLOW_TRACKING_URI, else MLflow's default store
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "cnncli"
        found = self.client.get_experiment_by_name(experiment)
        identity = found.experiment_id if found else self._create(experiment)
        self.run_id = self.client.create_run(identity, run_name=self.out.name,
                                             tags={"cnncli.bundle": str(self.out.resolve())}).info.run_id
        params = [Param(key, (value if isinstance(value, str) else dumps(value, key))[:self.PARAMETER_LENGTH])
                  for key, value in flat_keys(recipe).items()]
        for start in range(0, len(params), self.BATCH):
            self.client.log_batch(self.run_id, params=params[start:start + self.BATCH])

    def _create(self, experiment: str) -> str:
        """A new experiment; when a parallel trial created it first, that one."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(experiment)
        except MlflowException:
            return self.client.get_experiment_by_name(experiment).experiment_id

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key.replace("/", "."), value, now, step)
                                                    for key, value in values.items()])

    def epoch(self, step: int, record: dict) -> None:
        self._log(numbers(record), step)

    def finish(self, metrics: dict) -> None:
        self._log(final_numbers(metrics), 0)

    def close(self, status: str) -> None:
        if status == "FINISHED":
            self.client.log_artifacts(self.run_id, str(self.out), artifact_path="bundle")
        self.client.set_terminated(self.run_id, status)
