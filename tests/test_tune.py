"""cnncli tune: a search space read from the recipe (errors name the key), trials judged on
validation and pruned when they fall behind, a study that resumes after kill -9 with the same
trials, parallel workers, and a result whose best bundle was scored on test once."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SAMPLE_IMAGES, tiny_image_recipe, write_two_class_images
from safetensors.torch import load_file
from typer.testing import CliRunner

from cnncli.cli.app import app
from cnncli.errors import CnncliError
from cnncli.experiments.space import read_space
from cnncli.experiments.tune import parse_budget
from cnncli.recipe.config import config_to_dict, load_config

pytest.importorskip("optuna")
runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def digits_recipe(tmp_path: Path, tune: dict | None = None, **train) -> Path:
    """A tiny network on the 200 digits of sample_data/images, one epoch a trial (a second or two)."""
    data = {"modality": "image", "root": str(SAMPLE_IMAGES), "image": {"size": [8, 8], "color": "grayscale"},
            "split": {"test_fraction": 0.2, "val_fraction": 0.2}, "workers": 0}
    blocks = [{"conv": {"channels": 4, "kernel": 3}}, {"pool": {"type": "max", "size": "global"}}]
    recipe = {"data": data, "model": {"blocks": blocks},
              "train": {"epochs": 1, "batch_size": 32, "threads": 1, "lr": 0.01, **train},
              "tune": tune or {"train.lr": {"log": [1e-3, 1e-1]}, "model.blocks.0.conv.channels": {"int": [2, 6]}}}
    path = tmp_path / "digits.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def trials_table(study: Path) -> list[dict]:
    with open(study / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# -- the search space ------------------------------------------------------------------------------


def resolved(tmp_path: Path) -> dict:
    return config_to_dict(load_config(digits_recipe(tmp_path)))


@pytest.mark.parametrize("section, message", [
    ({"train.lrr": {"log": [1e-4, 1e-2]}}, "tune.train.lrr: not a key of the recipe"),
    ({"train.lr": {"log": [0, 1e-2]}}, "tune.train.lr: log needs a positive low end"),
    ({"train.lr": {"log": [1e-2, 1e-4]}}, "tune.train.lr: log needs low < high"),
    ({"train.lr": {"uniform": [1e-4]}}, "tune.train.lr: uniform needs [low, high], two numbers"),
    ({"train.lr": {"normal": [0, 1]}}, "tune.train.lr.normal: not a key of the recipe"),
    ({"train.lr": 0.1}, "tune.train.lr: expected {log: [low, high]}"),
    ({"train.batch_size": {"int": [8, 16.5]}}, "tune.train.batch_size: int needs whole numbers"),
    ({"train.batch_size": [32]}, "tune.train.batch_size: a list of choices needs at least two"),
    ({"train.optimizer": ["adam", "adagrad"]}, "tune.train.optimizer: 'adagrad' does not make a valid recipe"),
    ({"train.lr": {"uniform": [-1, 0.1]}}, "tune.train.lr: -1.0 does not make a valid recipe (the recipe: train.lr: "
                                           "must be positive)"),
    ({"train.batch_size": {"uniform": [8, 16]}}, "tune.train.batch_size: 8.0 does not make a valid recipe"),
])
def test_a_search_space_error_names_the_key(section, message, tmp_path):
    with pytest.raises(CnncliError) as error:
        read_space(section, resolved(tmp_path), "digits.yaml")
    assert str(error.value).startswith("digits.yaml: ") and message in str(error.value)


def test_a_search_space_reads_ranges_choices_and_nested_keys(tmp_path):
    section = {"train": {"lr": {"log": ["1e-4", "1e-2"]}, "batch_size": {"int": [8, 32]}},
               "train.mixup": [0, 0.2], "model.blocks.0.conv.channels": [2, 4],
               "model.blocks": [[{"conv": {"channels": 2}}, {"pool": {"size": "global"}}],
                                [{"conv": {"channels": 8}}, {"pool": {"size": "global"}}]]}
    dimensions = {d.key: d for d in read_space(section, resolved(tmp_path), "digits.yaml")}
    assert (dimensions["train.lr"].kind, dimensions["train.lr"].low, dimensions["train.lr"].high) == ("log", 1e-4, 1e-2)
    assert dimensions["train.batch_size"].extremes() == [8, 32]
    assert dimensions["train.mixup"].choices == (0, 0.2) and dimensions["model.blocks"].kind == "choice"


def test_the_search_space_is_also_set_on_the_command_line(tmp_path):
    config = load_config(digits_recipe(tmp_path), ["tune.train.weight_decay={uniform: [0, 0.1]}"])
    assert config.tune["train"] == {"weight_decay": {"uniform": [0, 0.1]}}
    assert "train.weight_decay" in {d.key for d in read_space(config.tune, config_to_dict(config), "x")}


def test_train_ignores_the_tune_section_and_refuses_an_unknown_tracker(tmp_path):
    assert cli("train", digits_recipe(tmp_path), "--out", tmp_path / "run").exit_code == 0
    result = cli("train", digits_recipe(tmp_path), "--set", "train.track=wandb", "--out", tmp_path / "other")
    assert result.exit_code == 2 and "train.track: unknown tracker 'wandb' (known: off, tensorboard, mlflow)" in \
        result.output


@pytest.mark.parametrize("text, seconds", [("2h", 7200), ("90m", 5400), ("1h30m", 5400), ("45s", 45), ("600", 600)])
def test_a_budget_reads_hours_minutes_and_seconds(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "2 days", "0m", "h"])
def test_a_budget_that_is_no_duration_is_refused(text):
    with pytest.raises(CnncliError, match="--budget"):
        parse_budget(text)


# -- a study ---------------------------------------------------------------------------------------


def test_a_study_judges_on_validation_keeps_the_best_bundle_and_scores_it_on_test_once(tmp_path):
    study = tmp_path / "study"
    result = cli("tune", digits_recipe(tmp_path), "--trials", 3, "--out", study, "--pruner", "none",
                 "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    rows = trials_table(study)
    assert [row["state"] for row in rows] == ["complete"] * 3
    assert rows[0]["train.lr"] == "0.01" and rows[0]["model.blocks.0.conv.channels"] == "4"  # the recipe's own first
    best = max(rows, key=lambda row: (float(row["val_accuracy"]), -int(row["trial"])))
    assert summary["best"]["trial"] == int(best["trial"])
    for row in rows:  # no trial looked at test
        assert "test" not in json.loads((study / row["bundle"] / "model.json").read_text())["metrics"]
    chosen = json.loads((study / "best" / "model.json").read_text())
    assert chosen["metrics"]["test"]["accuracy"] == summary["best"]["test"]["accuracy"]
    assert chosen["metrics"]["val"]["accuracy"] == float(best["val_accuracy"])
    again = load_config(study / "best.yaml")  # the chosen recipe, as a file to commit and train again
    assert again.train.lr == pytest.approx(float(best["train.lr"])) and again.tune == {}
    assert cli("eval", study / "best").exit_code == 0
    assert "holds a study; continue it with --resume" in cli("tune", digits_recipe(tmp_path), "--out", study).output


def test_an_ensemble_recipe_is_searched_one_network_a_trial_and_the_choice_trained_as_the_recipe_says(tmp_path):
    study = tmp_path / "study"
    result = cli("tune", digits_recipe(tmp_path, ensemble=3), "--trials", 2, "--out", study, "--pruner", "none",
                 "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    for row in trials_table(study):
        assert json.loads((study / row["bundle"] / "model.json").read_text())["members"] == 1
    chosen = json.loads((study / "best" / "model.json").read_text())
    assert chosen["members"] == 3 and chosen["recipe"]["train"]["ensemble"] == 3
    assert chosen["metrics"]["test"]["accuracy"] == summary["best"]["test"]["accuracy"]
    assert load_config(study / "best.yaml").train.ensemble == 3
    assert "one of its 3 networks" in (study / "best.yaml").read_text()
    trial = study / trials_table(study)[summary["best"]["trial"]]["bundle"]
    chosen_weights = load_file(study / "best" / "weights.safetensors")
    for name, tensor in load_file(trial / "weights.safetensors").items():  # the trial's network is member 1
        assert chosen_weights[f"members.0.{name}"].equal(tensor), name


@pytest.mark.parametrize("epochs, pruned_at", [(2, 1), (8, 2)])  # not before a quarter of the epochs
def test_a_trial_whose_validation_curve_is_below_the_median_is_pruned(tmp_path, epochs, pruned_at):
    images = write_two_class_images(tmp_path / "images", count=20)
    recipe = tiny_image_recipe(images, epochs=epochs, lr=0.05)
    recipe["data"]["split"] = {"test_fraction": 0.2, "val_fraction": 0.3}
    recipe["tune"] = {"train.lr": [0.05, 1e-9]}  # 1e-9 leaves the network as it started: chance
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = cli("tune", path, "--trials", 4, "--out", tmp_path / "study")
    assert result.exit_code == 0, result.output
    rows = trials_table(tmp_path / "study")
    assert rows[0]["state"] == "complete" and float(rows[0]["val_accuracy"]) > 0.9
    stalled = [row for row in rows if row["train.lr"] == "1e-09"]
    assert stalled and all(row["state"] == "pruned" and row["epochs"] == str(pruned_at) for row in stalled)
    assert all(row["state"] == "complete" for row in rows if row["train.lr"] == "0.05")
    assert json.loads((tmp_path / "study" / stalled[0]["bundle"] / "model.json").read_text())["status"] == "partial"


def test_a_killed_study_resumes_and_ends_with_the_trials_of_one_that_never_stopped(tmp_path):
    recipe = digits_recipe(tmp_path)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert cli("tune", recipe, "--trials", 3, "--out", whole).exit_code == 0
    process = subprocess.Popen([sys.executable, "-m", "cnncli", "tune", str(recipe), "--trials", "3", "--out",
                                str(killed)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = killed / "trials" / "000" / "model.json"
    deadline = time.monotonic() + 240
    while not (first.exists() and '"status": "complete"' in first.read_text()) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "trials.csv").exists()
    result = cli("tune", "--resume", "--out", killed)
    assert result.exit_code == 0, result.output

    def ran(study: Path) -> list[dict]:
        return [{key: value for key, value in row.items() if key not in ("trial", "seconds", "bundle")}
                for row in trials_table(study) if row["state"] != "fail"]

    assert ran(killed) == ran(whole) and len(ran(whole)) == 3


def test_workers_run_trials_side_by_side_in_their_own_processes(tmp_path):
    study = tmp_path / "study"
    result = cli("tune", digits_recipe(tmp_path), "--trials", 4, "--workers", 2, "--out", study,
                 "--format", "json")
    assert result.exit_code == 0, result.output
    trials = json.loads(result.stdout)["trials"]
    assert len(trials) == 4 and {trial["state"] for trial in trials} <= {"complete", "pruned"}
    import optuna

    stored = optuna.load_study(study_name="study", storage=f"sqlite:///{study / 'study.db'}").trials
    processes = {trial.user_attrs["process"] for trial in stored}
    assert os.getpid() not in processes and 1 <= len(processes) <= 2
    assert all((study / trial["bundle"] / "model.json").is_file() for trial in trials)
