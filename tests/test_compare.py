"""cnncli compare: runs side by side, with only the recipe keys that differ, their metrics, time
and size, and one page with every run's curves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_image_recipe, write_two_class_images
from typer.testing import CliRunner

from cnncli.cli.app import app
from cnncli.recipe.config import load_config
from cnncli.training.train import train

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory) -> Path:
    """Three bundles of one recipe: the learning rate differs in two, the epochs in one."""
    root = tmp_path_factory.mktemp("compare")
    images = write_two_class_images(root / "images", count=10)
    for name, overrides in (("a", []), ("b", ["train.lr=0.01"]), ("c", ["train.lr=0.01", "train.epochs=2"])):
        train(load_config(tiny_image_recipe(images), overrides), root / "runs" / name)
    return root / "runs"


def test_compare_lines_up_three_runs_on_the_keys_that_differ(three_runs):
    result = cli("compare", three_runs / "a", three_runs / "b", three_runs / "c", "--format", "json")
    assert result.exit_code == 0, result.output
    compared = json.loads(result.stdout)
    assert compared["keys"] == ["train.epochs", "train.lr"]
    assert [run["recipe"] for run in compared["runs"]] == [
        {"train.epochs": 1, "train.lr": 0.001}, {"train.epochs": 1, "train.lr": 0.01},
        {"train.epochs": 2, "train.lr": 0.01}]
    for run, name in zip(compared["runs"], "abc"):
        info = json.loads((three_runs / name / "model.json").read_text())
        assert run["val"]["accuracy"] == info["metrics"]["val"]["accuracy"]
        assert run["test"]["accuracy"] == info["metrics"]["test"]["accuracy"]
        assert run["seconds"] == info["training"]["total_seconds"] and run["epochs"] == info["training"]["epochs_run"]
        assert run["bytes"] == (three_runs / name / "weights.safetensors").stat().st_size and run["parameters"] > 0
    assert [len(run["history"]) for run in compared["runs"]] == [1, 1, 2]


def test_compare_reads_a_folder_of_runs_and_prints_a_table(three_runs):
    result = cli("compare", three_runs)
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0]
    assert all(column in header for column in ("run", "train.epochs", "train.lr", "val acc", "test acc", "time"))
    assert "data.root" not in header and "model.blocks" not in header  # what the runs share is left out
    assert sum(str(three_runs / name) in result.stdout for name in "abc") == 3


def test_compare_draws_every_run_on_one_page(three_runs, tmp_path):
    page = tmp_path / "compare.html"
    result = cli("compare", three_runs, "--html", page)
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert html.count("<tr>") == 4 and html.count('src="data:image/png;base64,') == 1
    assert "train.lr" in html and str(three_runs / "c") in html and "http" not in html.split("</head>")[1]


def test_compare_names_what_is_not_a_bundle(tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli("compare", tmp_path / "empty")
    assert result.exit_code == 2 and "neither a cnncli bundle nor a folder of bundles" in result.output
