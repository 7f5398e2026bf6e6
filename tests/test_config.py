from pathlib import Path

import pytest

from cnncli.errors import CnncliError
from cnncli.recipe.config import config_from_dict, config_to_dict, load_config

MINIMAL = "data:\n  root: somewhere\nmodel:\n  blocks:\n    - conv: {channels: 4}\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = write(tmp_path, MINIMAL + "train:\n  epoch: 3\n")
    with pytest.raises(CnncliError, match=r"recipe\.yaml: train\.epoch: unknown key"):
        load_config(path)


def test_wrong_type_names_the_key(tmp_path):
    path = write(tmp_path, MINIMAL + "train:\n  batch_size: many\n")
    with pytest.raises(CnncliError, match=r"train\.batch_size: expected a whole number, got 'many'"):
        load_config(path)


def test_literal_choices_are_listed(tmp_path):
    path = write(tmp_path, MINIMAL.replace("data:\n", "data:\n  image: {color: sepia}\n"))
    with pytest.raises(CnncliError, match="data.image.color: expected one of grayscale, rgb"):
        load_config(path)


def test_registered_names_are_listed(tmp_path):
    path = write(tmp_path, MINIMAL + "train:\n  optimizer: adagrad\n")
    with pytest.raises(CnncliError, match=r"train.optimizer: unknown optimizer 'adagrad' \(known: adam, adamw, sgd\)"):
        load_config(path)


def test_missing_blocks_is_an_error(tmp_path):
    with pytest.raises(CnncliError, match="model.blocks: must list at least one block"):
        load_config(write(tmp_path, "data: {root: x}\n"))


def test_invalid_yaml_names_the_line(tmp_path):
    with pytest.raises(CnncliError, match=r"recipe\.yaml: line 3 is not valid YAML"):
        load_config(write(tmp_path, "data:\n  root: x\n    nested: y\n"))


def test_set_overrides_are_typed_from_the_schema(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), [
        "train.epochs=3", "train.lr=0.5", "augment.hflip=true", "data.split.test_range=[10, 20]",
        "data.label_regex=^(\\d)_", "data.train=007",
    ])
    assert config.train.epochs == 3 and isinstance(config.train.epochs, int)
    assert config.train.lr == 0.5
    assert config.augment.hflip is True
    assert config.data.split.test_range == [10, 20]
    assert config.data.label_regex == "^(\\d)_"
    assert config.data.train == "007"  # a str field keeps the text as typed


def test_set_reaches_into_block_lists(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), ["model.blocks.0.conv.channels=9"])
    assert config.model.blocks[0]["conv"]["channels"] == 9


def test_set_unknown_key_is_an_error(tmp_path):
    with pytest.raises(CnncliError, match=r"--set train\.epoc: unknown key"):
        load_config(write(tmp_path, MINIMAL), ["train.epoc=3"])


def test_set_bad_type_is_an_error(tmp_path):
    with pytest.raises(CnncliError, match="train.epochs: expected a whole number"):
        load_config(write(tmp_path, MINIMAL), ["train.epochs=three"])


def test_relative_root_is_resolved_against_the_recipe_folder(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert Path(config.data.root) == tmp_path / "somewhere"


def test_resolved_recipe_round_trips(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), ["train.epochs=7"])
    assert config_from_dict(config_to_dict(config)) == config


@pytest.mark.parametrize("recipe", sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml")))
def test_every_shipped_recipe_is_valid(recipe):
    load_config(recipe)


def test_exponent_notation_is_a_number(tmp_path):
    config = load_config(write(tmp_path, MINIMAL + "train:\n  lr: 3e-4\n"), ["train.lr_min=1e-6"])
    assert config.train.lr == 3e-4 and config.train.lr_min == 1e-6


def test_test_offset_must_name_one_of_the_folds(tmp_path):
    recipe = write(tmp_path, MINIMAL)
    assert load_config(recipe, ["data.split.test_every=10", "data.split.test_offset=9"]).data.split.test_offset == 9
    with pytest.raises(CnncliError, match="data.split.test_offset: must be from 0 to data.split.test_every - 1"):
        load_config(recipe, ["data.split.test_every=10", "data.split.test_offset=10"])


@pytest.mark.parametrize("overrides, message", [
    (["data.text.subword_sizes=[5, 3]"], r"data.text.subword_sizes: must be \[shortest, longest\]"),
    (["data.text.subword_buckets=100", "data.text.embeddings=static", "data.text.vectors=v.txt"],
     "data.text.subword_buckets: needs learned embeddings"),
])
def test_subword_settings_are_checked(tmp_path, overrides, message):
    recipe = write(tmp_path, MINIMAL)
    assert load_config(recipe, ["data.text.subword_buckets=100"]).data.text.subword_sizes == [3, 5]
    with pytest.raises(CnncliError, match=message):
        load_config(recipe, overrides)
