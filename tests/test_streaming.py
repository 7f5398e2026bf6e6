"""Data bigger than memory: splits streamed from their files train the same network as splits held
in memory, the choice follows the memory budget and is printed, and up-front decoding in worker
processes fills the same tensor as decoding in the training process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image
from typer.testing import CliRunner

from cnncli.bundle.io import load_bundle, read_info
from cnncli.cli.app import app
from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.modalities.image import ImageModality, ImageOptions
from cnncli.recipe.config import load_config
from cnncli.training.encoding import encode_split
from cnncli.training.loading import SampleDataset
from cnncli.training.train import train


@pytest.fixture
def recipe(tiny_image_folder, tmp_path):
    """Every random stream in play: dropout, batch norm, shift and flip augmentation."""
    path = tmp_path / "r.yaml"
    path.write_text(
        f"data: {{root: {tiny_image_folder}, image: {{size: [8, 8]}}, split: {{val_fraction: 0.25, test_fraction: 0.2}}}}\n"
        "model: {blocks: [{conv: {channels: 4, batch_norm: true}}, {dropout: 0.3}, {pool: {size: global}}]}\n"
        "train: {epochs: 3, batch_size: 4, lr: 0.01, keep: best}\naugment: {shift: 0.1, hflip: true}\n")
    return path


def weights(bundle) -> dict[str, torch.Tensor]:
    return load_bundle(bundle).network.state_dict()


@pytest.mark.parametrize("overrides", [[], ["train.ensemble=2", "train.rotate_val=true"]])
def test_streaming_from_files_trains_exactly_what_memory_does(recipe, tmp_path, overrides):
    held = train(load_config(recipe, [*overrides, "data.in_memory=true"]), tmp_path / "held")
    streamed = train(load_config(recipe, [*overrides, "data.in_memory=false", "data.workers=2"]),
                     tmp_path / "streamed")
    for (name, ours), theirs in zip(weights(tmp_path / "streamed").items(), weights(tmp_path / "held").values()):
        assert torch.equal(ours, theirs), name
    assert streamed.metrics == held.metrics and streamed.history[-1]["val_loss"] == held.history[-1]["val_loss"]
    assert streamed.training["in_memory"] is False and held.training["in_memory"] is True


def test_auto_streams_when_the_encoded_splits_exceed_the_budget_and_says_so(recipe, tmp_path):
    result = CliRunner().invoke(app, ["train", str(recipe), "--out", str(tmp_path / "run"), "--format", "json",
                                      "--set", "data.memory_budget=1e-6", "--set", "data.workers=1"])
    assert result.exit_code == 0, result.output
    assert ("data: 24 samples, 0.00 GB encoded, streamed from their files a batch at a time by 1 worker process "
            "(over the memory budget of 0.0 GB)") in result.stderr
    assert json.loads(result.stdout)["training"]["in_memory"] is False
    roomy = CliRunner().invoke(app, ["train", str(recipe), "--out", str(tmp_path / "run2"), "--set", "train.epochs=1"])
    assert "decoded up front into memory" in roomy.stderr and "within the memory budget" in roomy.stderr


def test_streaming_skips_and_reports_unreadable_files(recipe, tiny_image_folder, tmp_path):
    for index in range(3):
        (tiny_image_folder / "left" / f"broken{index}.png").write_bytes(b"not a png")
    streamed = train(load_config(recipe, ["data.in_memory=false", "data.workers=0"]), tmp_path / "streamed")
    held = train(load_config(recipe, ["data.in_memory=true"]), tmp_path / "held")
    info = read_info(tmp_path / "streamed")
    assert info["status"] == "complete" and sum(info["training"]["skipped"].values()) == 3
    assert info["training"]["skipped"] == held.training["skipped"]
    assert {part: m["n"] for part, m in streamed.metrics.items()} == {part: m["n"] for part, m in held.metrics.items()}


def test_text_is_always_held_in_memory(tmp_path):
    recipe = REPO / "recipes" / "text-quickstart.yaml"
    with pytest.raises(CnncliError, match="data.in_memory: text samples are always held in memory"):
        train(load_config(recipe, ["data.in_memory=false", "train.epochs=1"]), tmp_path / "run")


def test_audio_streams_through_the_feature_cache_and_trains_what_memory_does(tmp_path):
    recipe = REPO / "recipes" / "audio-quickstart.yaml"
    common = ["train.epochs=2", "data.workers=2"]
    held = train(load_config(recipe, [*common, "data.in_memory=true"]), tmp_path / "held", cache=tmp_path / "cache")
    streamed = train(load_config(recipe, [*common, "data.in_memory=false"]), tmp_path / "streamed",
                     cache=tmp_path / "cache")
    for (name, ours), theirs in zip(weights(tmp_path / "streamed").items(), weights(tmp_path / "held").values()):
        assert torch.equal(ours, theirs), name
    assert streamed.metrics == held.metrics


def test_worker_processes_decode_into_the_same_tensor(tmp_path):
    generator = np.random.default_rng(0)
    samples = []
    for index in range(600):  # three chunks of 256
        path = tmp_path / f"{index:03d}.png"
        if index in (7, 300):
            path.write_bytes(b"broken")
        else:
            Image.fromarray(generator.integers(0, 255, size=(6, 5, 3)).astype("uint8")).save(path)
        samples.append(Sample(str(path), label="a" if index % 2 else "b"))
    modality = ImageModality(ImageOptions(size=[6, 5], color="rgb"))
    alone = encode_split(modality, samples, ["a", "b"], "train", workers=0)
    helped = encode_split(modality, samples, ["a", "b"], "train", workers=2)
    assert torch.equal(alone.data.inputs, helped.data.inputs) and torch.equal(alone.data.targets, helped.data.targets)
    assert alone.index == helped.index and len(helped.index) == 598
    assert helped.failures == alone.failures and "007.png" in helped.failures[0] and "300.png" in helped.failures[1]


def test_a_streamed_sample_that_decodes_to_nan_counts_as_unreadable():
    class Broken(ImageModality):
        def encode(self, sample):
            return torch.full((1, 2, 2), float("nan"))

    dataset = SampleDataset(Broken(ImageOptions(size=[2, 2])), [Sample("x.png", label="a")], [0])
    position, tensor, error = dataset[0]
    assert position == 0 and tensor is None and error == "x.png: decodes to values that are not finite (NaN or infinity)"
