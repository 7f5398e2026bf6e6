"""A folder laid out the usual way, train/ val/ test/ each of class folders, is read as those splits."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_image_recipe, write_two_class_images
from typer.testing import CliRunner

from cnncli.bundle.io import read_info
from cnncli.cli.app import app
from cnncli.data.split import load_splits
from cnncli.errors import CnncliError
from cnncli.modalities.image import ImageModality
from cnncli.recipe.config import load_config

runner = CliRunner()


def split_layout(root: Path, parts: dict[str, int]) -> Path:
    """root/<part>/{left,right}/*.png with `count` images per class in each part."""
    for part, count in parts.items():
        write_two_class_images(root / part, count=count)
    return root


def splits_of(root: Path, **data):
    recipe = tiny_image_recipe(root)
    recipe["data"].update(train=".", **data)
    return load_splits(load_config(recipe), ImageModality)


def test_train_val_and_test_folders_are_those_splits_and_the_labels_are_the_class_folders(tmp_path):
    splits = splits_of(split_layout(tmp_path / "photos", {"train": 6, "val": 3, "test": 2}))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 6, 4)
    assert splits.labels == ["left", "right"]
    assert {sample.label for sample in splits.val + splits.test} == {"left", "right"}
    assert splits.record["test_rule"] == f"source {tmp_path / 'photos' / 'test'}"
    assert splits.record["val_rule"] == f"source {tmp_path / 'photos' / 'val'}"
    assert splits.notes[0].startswith(f"data.train: {tmp_path / 'photos'} is split into folders: reading train/ as "
                                      "train, val/ as val, test/ as test")


@pytest.mark.parametrize("names", [("TRAIN", "Valid", "Test"), ("Train", "validation", "TEST")])
def test_the_split_folders_are_found_in_any_case_and_by_every_name_of_validation(tmp_path, names):
    train, val, test = names
    splits = splits_of(split_layout(tmp_path / "photos", {train: 5, val: 2, test: 3}))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (10, 4, 6)
    assert splits.labels == ["left", "right"]


def test_with_only_train_and_test_validation_is_held_out_of_train_as_before(tmp_path):
    splits = splits_of(split_layout(tmp_path / "photos", {"train": 10, "test": 4}), split={"val_fraction": 0.2})
    assert (len(splits.train), len(splits.val), len(splits.test)) == (16, 4, 8)
    assert splits.record["val_rule"].startswith("seeded stratified fraction 0.2")
    assert not {sample.locator for sample in splits.val} & {sample.locator for sample in splits.test}


def test_a_test_source_the_recipe_names_wins_over_the_test_folder(tmp_path):
    split_layout(tmp_path / "photos", {"train": 4, "test": 2})
    own = write_two_class_images(tmp_path / "mine", count=3)
    splits = splits_of(tmp_path / "photos", test=str(own))
    assert len(splits.test) == 6 and splits.record["test_rule"] == f"source {own}"


def test_classes_named_train_and_test_that_hold_the_images_stay_classes(tmp_path):
    splits = splits_of(write_two_class_images(tmp_path / "photos", labels=("train", "test"), count=10))
    assert splits.labels == ["test", "train"] and not splits.notes


def test_both_val_and_valid_folders_is_an_error_naming_them(tmp_path):
    split_layout(tmp_path / "photos", {"train": 2, "val": 2, "valid": 2})
    with pytest.raises(CnncliError, match="holds both val/ and valid/ as the val split; keep one"):
        splits_of(tmp_path / "photos")


def test_cnncli_train_on_a_split_folder_says_so_and_records_the_split(tmp_path):
    data = split_layout(tmp_path / "photos", {"Train": 6, "Val": 2, "Test": 3})
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(data), "--set", "train.epochs=1", "--set", "augment.auto=false",
                                 "--set", "data.workers=0", "--set", "train.threads=1",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"data.train: {data} is split into folders: reading Train/ as train, Val/ as val, Test/ as test" \
        in result.stderr
    info = read_info(out)
    assert info["labels"] == ["left", "right"]
    assert info["split"]["counts"] == {"train": 12, "val": 4, "test": 6}
    assert info["split"]["test_rule"] == f"source {data / 'Test'}"
