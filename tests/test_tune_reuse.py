"""tune's chosen trial as the first member of the ensemble trained at the end: the same bundle as
training every member, and refused where member 1 would train otherwise than the trial did."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import tiny_image_recipe, write_two_class_images
from safetensors.torch import load_file

from cnncli.experiments.reuse import trial_as_first_member, why_not_reused
from cnncli.recipe.config import load_config
from cnncli.training import train as training
from cnncli.training.train import fit, train


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_two_class_images(tmp_path_factory.mktemp("reuse") / "images")


def recipe(photos, **train):
    return load_config(tiny_image_recipe(photos, epochs=2, lr=0.01, keep="best", **train))


def test_the_trial_as_member_one_gives_the_bundle_that_training_every_member_gives(photos, tmp_path, monkeypatch):
    fits = []
    monkeypatch.setattr(training, "fit", lambda *args, **kwargs: fits.append(1) or fit(*args, **kwargs))
    ensemble = recipe(photos, ensemble=2)
    train(ensemble, tmp_path / "whole")
    train(recipe(photos), tmp_path / "trial")  # what a trial trains: one network of these settings
    first, why_not = trial_as_first_member(tmp_path / "trial", ensemble)
    assert why_not is None and first.trained_in == str(tmp_path / "trial")
    fits.clear()
    outcome = train(ensemble, tmp_path / "reused", resume=first)
    assert len(fits) == 1  # member 2 alone was trained
    whole, reused = load_file(tmp_path / "whole" / "weights.safetensors"), \
        load_file(tmp_path / "reused" / "weights.safetensors")
    assert whole.keys() == reused.keys() and any(name.startswith("members.1.") for name in whole)
    for name, tensor in whole.items():
        assert reused[name].equal(tensor), name
    before = json.loads((tmp_path / "whole" / "model.json").read_text())
    after = json.loads((tmp_path / "reused" / "model.json").read_text())
    assert after["metrics"] == before["metrics"] and after["members"] == 2
    assert [record["member"] for record in outcome.history] == [1, 1, 2, 2]


@pytest.mark.parametrize("change, reason", [
    ({"lr": 0.02}, "not the chosen one with one network"),
    ({"rotate_val": True}, "train.rotate_val"),
    ({"budget": "5m"}, "train.budget"),
])
def test_a_trial_that_trained_otherwise_than_member_one_is_not_taken(photos, tmp_path, change, reason):
    train(recipe(photos), tmp_path / "trial")
    info = json.loads((tmp_path / "trial" / "model.json").read_text())
    final = recipe(photos, ensemble=2)
    assert why_not_reused(info, final) is None
    changed = dataclasses.replace(final, train=dataclasses.replace(final.train, **change))
    assert reason in why_not_reused(info, changed)
    assert trial_as_first_member(tmp_path / "trial", changed)[0] is None
