"""Named timm backbones, pretrained weights and fine-tuning from a bundle (issue 27, points 2-5).

Every test builds what it loads: timm's tiny `test_resnet` saved as safetensors in a temporary
folder (there is no network here, and none is needed), bundles trained in the test itself.
"""

from __future__ import annotations

import hashlib
import json
import sys

import pytest
import torch
from conftest import REPO
from safetensors.torch import save_file
from typer.testing import CliRunner

from cnncli.bundle.export import export_bundle
from cnncli.bundle.io import load_bundle, read_resume_state
from cnncli.cli.app import app
from cnncli.nn.pretrained import adapt_input_channels
from cnncli.recipe.config import load_config
from cnncli.runtime.progress import Progress
from cnncli.training.train import train

timm = pytest.importorskip("timm", reason="needs the timm extra: pip install '.[timm]'")

runner = CliRunner()
BACKBONE = "test_resnet"  # timm's own test model: 370,000 parameters, a deep stem and four stages
IMAGES = REPO / "sample_data" / "images"
AUDIO = REPO / "sample_data" / "audio"


def cli(*args, **env):
    return runner.invoke(app, [str(a) for a in args], env=env or None)


def timm_weights(path, **options) -> dict[str, torch.Tensor]:
    """A test_resnet for 3-channel pictures and 5 classes, saved as safetensors at `path`."""
    torch.manual_seed(1)
    model = timm.create_model(BACKBONE, num_classes=5, **options)
    with torch.no_grad():  # batch norm statistics that are not the defaults, to tell them apart
        for name, tensor in model.state_dict().items():
            if name.endswith(("running_mean", "running_var")):
                tensor.uniform_(0.5, 1.5)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(path))
    return state


def image_recipe(tmp_path, model: str = "", train: str = "") -> str:
    """MNIST digits (sample_data/images, 28 x 28 gray) on test_resnet for an epoch, and `model`
    and `train` keys ("key: value, ...") besides."""
    recipe = tmp_path / "backbone.yaml"
    recipe.write_text(f"data: {{root: {IMAGES}, image: {{size: [28, 28], color: grayscale}}, "
                      "split: {test_fraction: 0.2, val_fraction: 0.15, seed: 0}}\n"
                      f"model: {{backbone: {BACKBONE}, {model}}}\n"
                      f"train: {{epochs: 1, batch_size: 32, lr: 0.003, {train}}}\n")
    return str(recipe)


def backbone_state(bundle) -> dict[str, torch.Tensor]:
    return load_bundle(bundle).network.backbone.model.state_dict()


# -- pretrained weights ------------------------------------------------------------------------


def test_weights_saved_as_safetensors_start_a_run_and_a_frozen_backbone_keeps_them(tmp_path):
    weights = timm_weights(tmp_path / "resnet.safetensors")
    recipe = image_recipe(tmp_path, f"pretrained: {tmp_path / 'resnet.safetensors'}", "freeze_epochs: 1")
    result = cli("train", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "conv1.0.weight: made for 3 input channel(s), adapted to 1" in result.output
    state = backbone_state(tmp_path / "run")
    for name, tensor in state.items():  # everything, batch norm statistics included, as the file holds it
        expected = timm.models.adapt_input_conv(1, weights[name]) if name == "conv1.0.weight" else weights[name]
        assert torch.equal(tensor, expected), name
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    start = info["training"]["start"]
    assert start["sha256"] == hashlib.sha256((tmp_path / "resnet.safetensors").read_bytes()).hexdigest()
    assert start["pretrained"] == str(tmp_path / "resnet.safetensors")
    # no config.json beside the file: timm's defaults for the architecture (mean and std 0.5), averaged to gray
    assert info["modality"]["state"]["mean"] == [0.5] and info["modality"]["state"]["std"] == [0.5]


def test_a_folder_in_the_hubs_layout_sets_the_preprocessing_and_backbone_lr_0_keeps_the_weights(tmp_path):
    folder = tmp_path / "test_resnet.r160_in1k"
    folder.mkdir()
    weights = timm_weights(folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"architecture": BACKBONE, "num_classes": 5, "pretrained_cfg": {
        "mean": [0.2, 0.3, 0.4], "std": [0.6, 0.5, 0.4], "input_size": [3, 24, 24], "classifier": "fc"}}))
    recipe = tmp_path / "rgb.yaml"
    recipe.write_text(f"data: {{root: {IMAGES}, image: {{color: rgb}}, split: {{test_fraction: 0.2, seed: 0}}}}\n"
                      f"model: {{backbone: {BACKBONE}, pretrained: {folder}}}\n"
                      "train: {epochs: 1, batch_size: 32, backbone_lr: 0, optimizer: adamw, weight_decay: 0.1}\n")
    result = cli("train", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    assert info["input_shape"] == [3, 24, 24]  # the weights' input size: the recipe sets none
    assert info["modality"]["state"]["mean"] == [0.2, 0.3, 0.4] and info["modality"]["state"]["std"] == [0.6, 0.5, 0.4]
    assert info["training"]["start"]["preprocessing"]["input_size"] == [3, 24, 24]
    trained = load_bundle(tmp_path / "run").network
    for name, parameter in trained.backbone.model.named_parameters():  # batch norm's statistics move; weights not
        assert torch.equal(parameter, weights[name]), name


def test_a_hub_name_offline_without_a_cached_copy_says_which_files_to_get_and_where(tmp_path):
    recipe = image_recipe(tmp_path, "pretrained: 'hf-hub:timm/resnet18.a1_in1k'")
    result = cli("train", recipe, "--set", "model.backbone=resnet18", "--out", tmp_path / "run",
                 HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    line = " ".join(result.output.split())
    assert "hf-hub:timm/resnet18.a1_in1k: not in the Hugging Face cache" in line and "HF_HUB_OFFLINE is set" in line
    assert "get model.safetensors and config.json from https://huggingface.co/timm/resnet18.a1_in1k" in line
    assert "set model.pretrained to that folder" in line and not (tmp_path / "run").exists()


def test_a_hub_name_offline_is_read_from_the_cache_when_a_copy_is_there(tmp_path):
    repository = tmp_path / "hub" / "models--timm--test_resnet.r160_in1k"  # huggingface_hub's cache layout
    snapshot = repository / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text("0" * 40)
    timm_weights(snapshot / "model.safetensors")
    recipe = image_recipe(tmp_path, "pretrained: 'hf-hub:timm/test_resnet.r160_in1k'")
    result = cli("train", recipe, "--out", tmp_path / "run", HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    assert result.exit_code == 0, result.output
    start = json.loads((tmp_path / "run" / "model.json").read_text())["training"]["start"]
    assert start["pretrained"] == "hf-hub:timm/test_resnet.r160_in1k"
    assert start["file"] == str(snapshot / "model.safetensors")


@pytest.mark.parametrize("source", ["resnet18.pth", "weights/pytorch_model.bin"])
def test_pickled_weights_are_refused_when_the_recipe_is_read(source, tmp_path):
    result = cli("train", image_recipe(tmp_path), "--set", f"model.pretrained={source}", "--out", tmp_path / "run")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "a pickled checkpoint, which can run code when loaded" in result.output


def test_weights_of_another_shape_are_one_line_naming_the_layer_and_both_shapes(tmp_path):
    weights = timm_weights(tmp_path / "w.safetensors")
    weights["layer1.0.conv2.weight"] = weights["layer1.0.conv2.weight"][:, :16].contiguous()
    save_file(weights, str(tmp_path / "w.safetensors"))
    result = cli("train", image_recipe(tmp_path), "--set", f"model.pretrained={tmp_path / 'w.safetensors'}",
                 "--out", tmp_path / "run")
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and errors[0] == result.output.strip().splitlines()[-1]
    line = " ".join(result.output.split())
    assert "layer layer1.0.conv2.weight has shape [32, 16, 3, 3] there; this network's is [32, 32, 3, 3]" in line


def test_the_first_convolution_adapts_to_other_channels_as_timm_does():
    weight = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    for channels in (1, 2, 3, 5):
        assert torch.allclose(adapt_input_channels(weight, channels), timm.models.adapt_input_conv(channels, weight))


# -- names and options ---------------------------------------------------------------------------


def test_an_unknown_backbone_is_one_line_with_close_names(tmp_path):
    result = cli("train", image_recipe(tmp_path), "--set", "model.backbone=resnt18", "--out", tmp_path / "run")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "model.backbone: unknown timm model 'resnt18' (close: resnet18" in " ".join(result.output.split())


def test_options_that_would_load_weights_behind_the_recipe_are_refused(tmp_path):
    result = cli("train", image_recipe(tmp_path), "--set", "model.backbone_options.pretrained=true",
                 "--out", tmp_path / "run")
    assert result.exit_code == 2 and "model.backbone_options.pretrained: set by cnncli itself" in result.output


def test_without_timm_a_recipe_naming_a_backbone_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if it were not installed: `import timm` fails
    result = cli("train", image_recipe(tmp_path), "--out", tmp_path / "run")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "install cnncli[timm]" in result.output


# -- fine-tuning from a bundle ---------------------------------------------------------------------


def test_a_bundle_of_photos_starts_a_network_of_spectrograms_whose_frozen_backbone_stays_as_it_was(tmp_path):
    photos = cli("train", image_recipe(tmp_path), "--set", "data.image.color=rgb", "--out", tmp_path / "photos")
    assert photos.exit_code == 0, photos.output
    sounds = cli("train", REPO / "recipes" / "audio-quickstart.yaml", "--set", f"model.init={tmp_path / 'photos'}",
                 "--set", "train.epochs=2", "--set", "train.freeze_epochs=2", "--out", tmp_path / "sounds")
    assert sounds.exit_code == 0, sounds.output
    assert f"model.init: started from {tmp_path / 'photos'} (90 backbone tensors); the classifier is new, for 10 " \
           "labels" in " ".join(sounds.output.split())
    before, after = load_bundle(tmp_path / "photos"), load_bundle(tmp_path / "sounds")
    assert after.config.model.backbone == BACKBONE and after.modality.name == "audio"  # the bundle's architecture
    theirs = before.network.backbone.state_dict()
    for name, tensor in after.network.backbone.state_dict().items():
        expected = adapt_input_channels(theirs[name], 1) if name == "model.conv1.0.weight" else theirs[name]
        assert torch.equal(tensor, expected), name
    assert not torch.equal(after.network.classifier.linear.weight, before.network.classifier.linear.weight)
    record = json.loads((tmp_path / "sounds" / "model.json").read_text())["training"]["start"]
    assert record["init"] == str(tmp_path / "photos") and record["sha256"] == before.weights_sha256


class Crash(Exception):
    pass


class CrashAtEpoch(Progress):
    """Fails as epoch `at` is about to be logged, before its checkpoint (as tests/test_resume.py does)."""

    def __init__(self, at: int):
        self.at = at

    def epoch(self, record: dict, members: int = 1) -> None:
        if record["epoch"] == self.at:
            raise Crash(str(record))


def test_a_resumed_run_that_freezes_then_releases_its_backbone_ends_bit_identical(tiny_image_folder, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{root: {tiny_image_folder}, image: {{size: [16, 16]}}, split: {{val_fraction: 0.25}}}}\n"
                      f"model: {{backbone: {BACKBONE}}}\n"
                      "train: {epochs: 3, batch_size: 4, lr: 0.01, freeze_epochs: 1, backbone_lr: 0.5, "
                      "schedule: onecycle}\naugment: {shift: 0.1}\n")
    config = load_config(recipe)
    train(config, tmp_path / "whole", Progress())
    with pytest.raises(Crash):
        train(config, tmp_path / "cut", CrashAtEpoch(3))
    saved, state = read_resume_state(tmp_path / "cut")
    train(saved, tmp_path / "cut", resume=state)
    whole, cut = (load_bundle(tmp_path / name).network.state_dict() for name in ("whole", "cut"))
    assert all(torch.equal(cut[name], tensor) for name, tensor in whole.items())


# -- every command on a named backbone, for images and spectrograms ---------------------------------


@pytest.mark.parametrize("kind", ["image", "audio"])
def test_a_named_backbone_trains_evaluates_predicts_explains_and_exports(kind, tmp_path):
    recipe, sample = (image_recipe(tmp_path), sorted(IMAGES.glob("*/*.png"))[0]) if kind == "image" else \
        (REPO / "recipes" / "audio-quickstart.yaml", sorted(AUDIO.glob("*.wav"))[0])
    bundle = tmp_path / "run"
    trained = cli("train", recipe, "--set", f"model.backbone={BACKBONE}", "--set", "model.blocks=[]",
                  "--set", "train.epochs=1", "--out", bundle, "--format", "json")
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout)
    evaluated = cli("eval", bundle, "--format", "json")
    assert evaluated.exit_code == 0 and json.loads(evaluated.stdout)["accuracy"] == \
        summary["metrics"]["test"]["accuracy"]
    predicted = cli("predict", bundle, sample, "--format", "jsonl")
    assert predicted.exit_code == 0 and "label" in json.loads(predicted.stdout.splitlines()[0])
    inspected = cli("inspect", bundle, "--input", sample, "--out", tmp_path / "seen", "--format", "json")
    assert inspected.exit_code == 0, inspected.output
    table = json.loads(inspected.stdout)
    names = [row["name"] for row in table["layers"]]
    assert names[2] == "conv1.0" and "layer1.0" in names and "layer4.0" in names and names[-1] == "classifier.linear"
    assert table["input"]["gradcam"]["layers"] == ["layer4.0"]  # the last stage
    assert (tmp_path / "seen" / "gradcam.png").exists() and (tmp_path / "seen" / "features-layer4-0.png").exists()
    pytest.importorskip("onnxruntime", reason="needs the export extra: pip install '.[export]'")
    assert export_bundle(bundle, tmp_path / "run.onnx")["max_difference"] < 1e-4  # onnxruntime against cnncli

