"""train.track: the curves of a run in TensorBoard's event files (read back by TensorBoard's own
reader) or in an MLflow run (in a local store made for the test); off by default."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from conftest import tiny_image_recipe, write_two_class_images

from cnncli.bundle.io import read_resume_state
from cnncli.errors import CnncliError
from cnncli.recipe.config import load_config
from cnncli.training.train import train


def recipe(tmp_path: Path, *overrides: str):
    images = write_two_class_images(tmp_path / "images", count=10)
    return load_config(tiny_image_recipe(images, epochs=2), list(overrides))


def event_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("events.out.tfevents.*"))


def test_a_run_tracks_nothing_by_default(tmp_path):
    config = recipe(tmp_path)
    assert config.train.track == "off"
    train(config, tmp_path / "run")
    assert not event_files(tmp_path / "run")


def test_tensorboard_reads_the_epochs_final_metrics_and_confusion_matrix_from_the_bundle(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    outcome = train(recipe(tmp_path, "train.track=tensorboard"), tmp_path / "run")
    assert len(event_files(tmp_path / "run")) == 1
    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr"} <= set(tags["scalars"])
    assert [(event.step, round(event.value, 5)) for event in events.Scalars("val/accuracy")] == \
        [(index + 1, record["val_accuracy"]) for index, record in enumerate(outcome.history)]
    assert events.Scalars("final/test_accuracy")[0].value == pytest.approx(outcome.metrics["test"]["accuracy"])
    assert tags["images"] == ["confusion/test"]
    picture = events.Images("confusion/test")[0]
    assert picture.width > 100 and picture.encoded_image_string.startswith(b"\x89PNG")


def test_a_resumed_run_keeps_its_earlier_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cnncli.runtime.progress import Progress

    class StopAfterFirstEpoch(Progress):
        def epoch(self, record, members=1):
            if record["epoch"] == 2:
                raise KeyboardInterrupt

    config = recipe(tmp_path, "train.track=tensorboard")
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "run", StopAfterFirstEpoch())
    assert len(event_files(tmp_path / "run")) == 1  # the partial bundle carries epoch 1's events
    resumed, state = read_resume_state(tmp_path / "run")
    train(resumed, tmp_path / "run", resume=state)
    assert len(event_files(tmp_path / "run")) == 2
    events = EventAccumulator(str(tmp_path / "run")).Reload()
    assert [event.step for event in events.Scalars("val/accuracy")] == [1, 2]


def test_mlflow_records_the_recipe_the_epochs_and_the_bundle_in_a_local_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store = f"file:{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps file stores for cases like this one
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "digits")
    outcome = train(recipe(tmp_path, "train.track=mlflow", "train.lr=0.02"), tmp_path / "run")
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["train.lr"] == "0.02" and run.data.params["train.track"] == "mlflow"
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [(metric.step, metric.value) for metric in history] == \
        [(index + 1, record["val_accuracy"]) for index, record in enumerate(outcome.history)]
    assert run.data.metrics["final.test_accuracy"] == pytest.approx(outcome.metrics["test"]["accuracy"])
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id, "bundle")}
    assert {"bundle/model.json", "bundle/weights.safetensors", "bundle/log.jsonl"} <= artifacts


def test_a_tracker_whose_package_is_missing_is_refused_before_any_work(tmp_path, monkeypatch):
    config = recipe(tmp_path, "train.track=mlflow")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "mlflow" else real(name, *rest))
    with pytest.raises(CnncliError, match=r"train.track: mlflow needs mlflow, which is not installed; pip install "
                                          r"'cnncli\[track\]'"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
