"""The general image recipe: size, backbone and augmentation read from the photos, never from test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image
from typer.testing import CliRunner

from cnncli.bundle.io import load_bundle, read_info
from cnncli.cli.app import app
from cnncli.data.sample import Sample
from cnncli.modalities.image import ImageModality, ImageOptions
from cnncli.modalities.image_augment import erase, flip, translate
from cnncli.modalities.image_backbone import (
    auto_backbones,
    backbone_shapes,
    conv_group_backbone,
    conv_group_shapes,
    residual_backbone,
    size_rule,
)
from cnncli.modalities.image_options import GENERAL_RECIPE, auto_size
from cnncli.nn.blocks import build_blocks
from cnncli.recipe.config import config_to_dict, load_config
from cnncli.recipe.defaults import recipe_source

runner = CliRunner()
QUICK = [item for value in ("train.epochs=2", "train.batch_size=8", "data.workers=0", "train.threads=1")
         for item in ("--set", value)]


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def write_stripes(root: Path, count: int, size: tuple[int, int] = (12, 12), seed: int = 0) -> Path:
    """Class folders of colour pictures a small net learns in a few epochs: horizontal or
    vertical stripes, at random phases; width x height `size`."""
    generator = np.random.default_rng(seed)
    width, height = size
    for label, axis in (("across", 0), ("down", 1)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            wave = (np.arange(height if axis == 0 else width) + generator.integers(0, 4)) % 4 < 2
            pixels = np.repeat(wave[:, None], width, 1) if axis == 0 else np.repeat(wave[None, :], height, 0)
            noise = generator.integers(0, 40, size=(height, width, 3))
            Image.fromarray((pixels[..., None] * 180 + noise).astype("uint8")).save(root / label / f"{index:03d}.png")
    return root


def test_the_general_image_recipe_file_is_the_one_cnncli_train_uses_for_photos():
    from_file = config_to_dict(load_config(REPO / "recipes" / "image.yaml"))
    built_in = config_to_dict(load_config(GENERAL_RECIPE))
    for section in ("model", "train", "augment"):
        assert from_file[section] == built_in[section], section
    assert from_file["data"]["image"] == built_in["data"]["image"]
    assert from_file["data"]["split"] == built_in["data"]["split"]


def test_a_folder_of_photos_gets_the_general_recipe(tmp_path):
    source, name = recipe_source(str(write_stripes(tmp_path / "photos", 2)))
    assert source["model"] == {"blocks": "auto"} and source["augment"] == "auto"
    assert source["data"]["image"]["size"] == "auto" and name == "photos"


@pytest.mark.parametrize("sizes, expected", [
    ([(32, 32)] * 5, [32, 32]),  # CIFAR stays itself
    ([(28, 28)] * 3, [28, 28]),  # MNIST
    ([(30, 40), (31, 41), (29, 39)], [30, 40]),  # the medians
    ([(3000, 4000)] * 2 + [(600, 800)], [168, 224]),  # phone photos: capped at 224, multiples of the stride 4
    ([(3000, 500)], [224, 68]),  # a strip: its short side widened until the four pools leave maps
    ([(5, 3)], [9, 9]),  # large enough for three pools after the whiten block
])
def test_size_auto_is_the_median_capped_and_rounded_for_the_backbone(sizes, expected):
    size = auto_size(sizes)
    assert size == expected
    stride, smallest = size_rule(max(size))
    assert all(side % stride == 0 and side >= smallest for side in size)
    build_blocks(auto_backbones(size, 100)[0][0], (3, *size), "model.blocks")  # every pool has maps left


def test_the_conv_groups_widen_with_the_training_images_and_stride_for_large_photos():
    assert [conv_group_shapes(32, count)[0].widths for count in (1_000, 10_000, 45_000)] == [
        [32, 128, 128], [48, 192, 192], [64, 256, 256]]
    assert [shape.width for shape in conv_group_shapes(32, 45_000)] == [64, 48, 32, 24, 16]  # narrower: a budget
    large = conv_group_shapes(224, 300)[0]
    assert (large.whiten_stride, large.groups) == (4, 4)
    blocks = conv_group_backbone(large)
    assert blocks[0] == {"whiten": {"kernel": 4, "stride": 4}} and blocks[-1]["pool"]["size"] == "global"
    assert [b["conv"]["channels"] for b in blocks if "conv" in b] == [32, 32] + [128] * 6
    assert [b["conv"].get("pool") for b in blocks if "conv" in b] == [2, None] * 4


def test_the_residual_nets_deepen_with_the_training_images_and_stride_for_large_photos():
    assert [backbone_shapes(32, count)[0].depth for count in (1_000, 10_000, 45_000)] == [8, 14, 20]
    assert [shape.depth for shape in backbone_shapes(32, 45_000)] == [20, 14, 8]  # smaller ones for a budget
    large = backbone_shapes(224, 300)[0]
    assert (large.stem_stride, large.stages, large.stride) == (4, 4, 32)
    blocks = residual_backbone(large)
    assert blocks[0]["conv"]["stride"] == 2 and blocks[1] == {"pool": {"type": "max", "size": 2}}
    assert [b["residual"]["channels"] for b in blocks if "residual" in b] == [32, 64, 128, 256]


def test_size_auto_reads_the_training_images_and_their_turn(tmp_path):
    for index, (width, height) in enumerate([(40, 30), (44, 30), (40, 34)]):
        Image.new("RGB", (width, height)).save(tmp_path / f"{index}.png")
    turned = Image.new("RGB", (30, 40))  # stored 30 wide, shown 40 wide (EXIF orientation 6)
    exif = turned.getexif()
    exif[0x0112] = 6
    turned.save(tmp_path / "turned.jpg", exif=exif)
    modality = ImageModality(ImageOptions(size="auto", color="rgb"))
    modality.fit([Sample(str(path)) for path in sorted(tmp_path.iterdir())])
    assert modality.input_shape == (3, 30, 40)  # median 30 x 40 (the turned photo counted upright)
    assert modality.fitted_notes()[0].startswith("data.image.size auto: 30 x 40 (the median height and width of 4")


def test_color_auto_is_grayscale_only_when_every_training_image_is_stored_gray(tmp_path):
    for index in range(3):
        Image.new("L", (12, 10), 40 * index).save(tmp_path / f"gray{index}.png")
    gray = [Sample(str(path)) for path in sorted(tmp_path.iterdir())]
    modality = ImageModality(ImageOptions(size="auto", color="auto"))
    modality.fit(gray)
    assert modality.input_shape == (1, 10, 12) and len(modality.mean) == 1
    assert modality.fitted_notes()[0].startswith("data.image.color auto: grayscale (every one is stored in gray")
    Image.new("RGB", (12, 10), (200, 10, 10)).save(tmp_path / "red.png")
    modality = ImageModality(ImageOptions(size="auto", color="auto"))
    modality.fit(gray + [Sample(str(tmp_path / "red.png"))])
    assert modality.input_shape == (3, 10, 12) and modality.state_dict()["options"]["color"] == "rgb"
    idx = ImageModality(ImageOptions(size="auto", color="auto"))
    idx.fit([Sample("t10k#0", content=torch.zeros(28, 28, dtype=torch.uint8))])  # an idx file's image: gray
    assert idx.input_shape == (1, 28, 28)


def test_size_and_backbone_chosen_from_the_data_are_printed_and_kept_in_the_bundle(tmp_path):
    data = write_stripes(tmp_path / "photos", 10, size=(20, 12))
    out = tmp_path / "run"
    result = cli("train", data, *QUICK, "--set", "augment.auto=false", "--out", out)
    assert result.exit_code == 0, result.output
    assert "data.image.size auto: 12 x 20" in result.stderr
    assert "model.blocks auto: 3 conv groups of 32, 128, 128 channels after a whiten block" in result.stderr
    info = read_info(out)
    assert info["recipe"]["model"]["blocks"][1]["conv"]["channels"] == 32  # the blocks chosen, not "auto"
    assert info["modality"]["state"]["options"]["size"] == [12, 20]
    bundle = load_bundle(out)
    assert bundle.modality.input_shape == (3, 12, 20)
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "other.png")  # another size: resized as trained
    predicted = cli("predict", out, tmp_path / "other.png", "--format", "json")
    assert predicted.exit_code == 0, predicted.output


def test_the_augmentation_is_chosen_without_the_test_split(tmp_path):
    """Two runs whose test folders differ make the same choice with the same scores: the test
    split is never read by augment: auto."""
    choices = []
    for run, test_seed in (("a", 1), ("b", 2)):
        root = tmp_path / run
        write_stripes(root / "train", 8)
        write_stripes(root / "val", 3, seed=5)
        write_stripes(root / "test", 3 + test_seed, seed=test_seed)
        out = tmp_path / f"run-{run}"
        result = cli("train", root, *QUICK, "--out", out, "--format", "json")
        assert result.exit_code == 0, result.output
        assert "augment: auto chose" in result.stderr
        choices.append(read_info(out)["training"]["auto"])
        assert json.loads(result.stdout)["training"]["auto"]["chosen"] == choices[-1]["chosen"]
    assert choices[0]["chosen"] == choices[1]["chosen"] and choices[0]["chosen"] in choices[0]["grid"]
    assert [c["val_accuracy"] for c in choices[0]["candidates"]] == \
        [c["val_accuracy"] for c in choices[1]["candidates"]]
    assert choices[0]["grid"] == ["flip", "shift", "none", "strong"]


def test_short_trials_keep_the_default_unless_another_leads_it_beyond_their_noise():
    from cnncli.training.autotune import best_candidate, noise_margin

    def tried(*accuracies):
        return [{"val_accuracy": a, "val_loss": 1.0} for a in accuracies]

    margin = noise_margin(0.64, 4500)  # the CIFAR-10 hour's trials: 4,500 validation rows
    assert 0.019 < margin < 0.021 and noise_margin(0.64, 450) > 3 * margin  # fewer rows, more noise
    assert best_candidate(tried(0.6393, 0.6322, 0.6573, 0.5098), margin) == 0  # none's 1.8 points: noise
    assert best_candidate(tried(0.60, 0.65, 0.62), margin) == 1  # 5 points: a real lead
    assert best_candidate(tried(0.6393, 0.6322, 0.6573, 0.5098)) == 2  # without a margin the best wins
    assert best_candidate([{"val_accuracy": 0.6, "val_loss": 1.0}, {"val_accuracy": 0.6, "val_loss": 0.9}]) == 1


def test_translate_shifts_by_whole_pixels_and_pads_with_zeros():
    batch = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    moved = translate(batch, 0.25, torch.Generator().manual_seed(0))
    for original, shifted in zip(batch, moved):
        found = [(dy, dx) for dy in range(-1, 2) for dx in range(-1, 2)
                 if torch.equal(shifted, torch.roll(torch.nn.functional.pad(original, (1, 1, 1, 1)),
                                                    (dy, dx), (1, 2))[:, 1:5, 1:5])]
        assert found  # a whole-pixel shift of at most one pixel, the rest zeros


def test_flip_mirrors_about_half_the_images_and_erase_fills_rectangles_with_one_colour():
    batch = torch.arange(64 * 3 * 8 * 8, dtype=torch.float32).view(64, 3, 8, 8) % 255
    flipped = flip(batch, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(f, b.flip(-1)) for f, b in zip(flipped, batch)]
    assert 16 < sum(mirrored) < 48 and all(m or torch.equal(f, b) for m, f, b in zip(mirrored, flipped, batch))
    assert torch.equal(erase(batch, 0.0, torch.Generator().manual_seed(0)), batch)
    erased = erase(batch, 1.0, torch.Generator().manual_seed(0))
    changed = (erased != batch).any(dim=1)  # (N, H, W): where the rectangle is
    assert changed.flatten(1).any(dim=1).all() and not changed.flatten(1).all(dim=1).any()
    for image, where in zip(erased, changed):
        inside = image[:, where]  # (C, pixels of the rectangle)
        assert torch.equal(inside, inside[:, :1].expand_as(inside))  # one colour: no per-pixel noise


@pytest.mark.parametrize("rows, expected_rows, expected_epochs", [
    (50_000, 10_000, 30),  # a fifth of the rows, every epoch the member will train
    (3_000, 2_000, 9),  # at least TRIAL_ROWS: fewer epochs, the same cost
    (500, 500, 6),  # all the rows, a fifth of the epochs
])
def test_a_short_trial_trains_a_share_of_the_rows_for_the_members_epochs(rows, expected_rows, expected_epochs):
    from cnncli.recipe.schema import TrainConfig
    from cnncli.training.autotune import trial_rows
    from cnncli.training.encoding import TensorData

    data = TensorData(torch.zeros(rows, 1), torch.arange(rows) % 3)
    picked, settings = trial_rows(data, TrainConfig(epochs=30, seed=4), 0.2)
    assert (len(picked), settings.epochs) == (expected_rows, expected_epochs)
    assert settings.epochs * len(picked) == pytest.approx(0.2 * 30 * rows, rel=0.1)  # a fifth of the member's cost
    again, _ = trial_rows(data, TrainConfig(epochs=30, seed=4), 0.2)
    assert torch.equal(again.targets, picked.targets)  # seeded
    if expected_rows < rows:
        assert len(set(picked.rows.tolist())) == expected_rows
        assert picked.rows.max() > rows // 2  # spread over the split, not its first rows
    assert trial_rows(data, TrainConfig(epochs=30), 1.0)[0] is data
