"""Precision: float32 on a CPU trains exactly the weights cnncli trained before mixed precision
existed; bf16 and fp16 (with its gradient scaler) train through autocast and keep float32 weights."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import REPO

from cnncli.bundle.io import load_bundle
from cnncli.recipe.config import config_from_dict, load_config
from cnncli.runtime.device import channels_last_helps, pick_precision
from cnncli.training.train import train

FIXTURES = REPO / "tests" / "fixtures" / "bundles-v1"


def fixture_recipe(kind: str):
    info = json.loads((FIXTURES / kind / "model.json").read_text())
    config = config_from_dict(info["recipe"])
    config.data.root = str(REPO / "sample_data" / ("images" if kind == "image" else kind))
    config.train = dataclasses.replace(config.train, threads=info["training"]["threads"])
    return config


def assert_same_weights(bundle, other, tolerance: float = 0.0) -> None:
    before = load_bundle(other).network.state_dict()
    for name, weight in load_bundle(bundle).network.state_dict().items():
        torch.testing.assert_close(weight, before[name], rtol=tolerance, atol=tolerance, msg=name)


# The v1 fixtures were trained on another CPU, whose SIMD kernels round sums in another order: on
# a different processor the same run lands within a few float32 ulps of each weight (seen: 5e-8)
# and 3e-4 on a batch norm's running mean after three epochs. Any change to what training computes
# (data order, augmentation, initialisation, the schedule) moves weights by far more than that.
ACROSS_CPUS = 1e-3


# Audio is not here: since issue 15 its bundles encode waveforms and augment the sound, so a run
# of a v1 audio recipe trains other weights by design (v1 audio bundles still predict as they
# did: test_structure.py); below, two audio runs must still agree to the bit.
@pytest.mark.parametrize("kind", ["image", "text"])
def test_a_cpu_run_trains_the_very_weights_of_a_bundle_made_before(kind, tmp_path):
    train(fixture_recipe(kind), tmp_path / "again")
    assert_same_weights(tmp_path / "again", FIXTURES / kind, ACROSS_CPUS)


def test_two_cpu_runs_of_an_audio_recipe_train_the_very_same_weights(tmp_path):
    for name in ("first", "second"):
        train(fixture_recipe("audio"), tmp_path / name)
    assert_same_weights(tmp_path / "first", tmp_path / "second")


def test_auto_precision_is_float32_on_a_cpu():
    cpu = torch.device("cpu")
    assert pick_precision("auto", cpu).name == "fp32" and pick_precision("auto", cpu).dtype is None
    assert not channels_last_helps(torch.nn.Conv2d(1, 1, 1), cpu)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_keeps_float32_weights(precision, tiny_image_folder, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"data: {{root: {tiny_image_folder}, image: {{size: [8, 8]}}, split: {{val_fraction: 0.25}}}}\n"
        "model: {blocks: [{conv: {channels: 4, batch_norm: true}}, {pool: {size: global}}]}\n"
        f"train: {{epochs: 6, batch_size: 4, lr: 0.05, precision: {precision}}}\n")
    outcome = train(load_config(recipe), tmp_path / "run")
    assert outcome.training["precision"] == precision
    assert outcome.history[-1]["train_loss"] < outcome.history[0]["train_loss"]
    tensors = load_bundle(tmp_path / "run").network.state_dict()
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
