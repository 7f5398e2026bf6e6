"""Issue 13, item 6: every recipe value in its range and the network within its size, checked before
any data are read; YAML without duplicate keys or alias bombs."""

from __future__ import annotations

import pytest
from conftest import REPO
from typer.testing import CliRunner

from cnncli.cli.app import app
from cnncli.errors import CnncliError
from cnncli.recipe.config import load_config

runner = CliRunner()
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
# A data root that does not exist: a value refused before the data are read names the value, not this.
NO_DATA = "data.root=/nonexistent/cnncli-data"


@pytest.mark.parametrize("override, message", [
    ("train.steps=-5", "train.steps: must be from 1 to"),
    ("train.eval_batch_size=0", "train.eval_batch_size: must be from 1 to"),
    ("train.ema=2", "train.ema: must be in (0, 1)"),
    ("train.label_smoothing=5", "train.label_smoothing: must be in [0, 1)"),
    ("train.mixup=-0.2", "train.mixup: must be 0 (off) or the alpha"),
    ("train.weight_decay=-1", "train.weight_decay: must be 0 or more"),
    ("train.lr=.nan", "train.lr: expected a finite number"),
    ("train.lr=1e400", "train.lr: expected a finite number"),
    ("train.epochs=1000000000000", "train.epochs: must be from 1 to 1,000,000"),
    ("train.momentum=1", "train.momentum: must be in [0, 1)"),
    ("train.ensemble=1000", "train.ensemble: must be from 1 to 100"),
    ("train.device=toaster", "train.device: must be auto, cpu, mps, cuda or cuda:N"),
    ("train.seed=-1", "train.seed: must be from 0"),
    ("data.encoding=rot13", "data.encoding: unknown text encoding"),
    ("data.label_regex=(", "data.label_regex: not a valid regular expression"),
    ("data.split.test_range=[5, 2]", "data.split.test_range: must be [start, end)"),
    ("data.image.size=[100000, 100000]", "data.image.size: must be [height, width], each from 1 to 65,536"),
    ("data.image.size=[60000, 60000]", "data.image: one encoded sample of shape [1, 60000, 60000]"),
    ("model.blocks.0.conv.channels=1000000000", "model.blocks: the network would have"),
    ("model.blocks.0.conv.channels=200000", "model.blocks: the layers would output"),
    ("augment.rotate=720", "augment.rotate: must be from 0 to 180 degrees"),
    ("data.audio.duration=1e9", "data.audio.duration: must be from 0 to 1,800 seconds"),
    ("data.text.embedding_dim=0", "data.text.embedding_dim: must be from 1 to 10,000"),
    ("data.audio.cache=/tmp/x", "--set data.audio.cache: no longer a recipe key; the feature cache folder is "
                                "--cache-dir or CNNCLI_CACHE_DIR"),
])
def test_a_value_out_of_range_is_refused_before_any_data_are_read(override, message, tmp_path):
    result = runner.invoke(app, ["train", str(QUICKSTART), "--set", NO_DATA, "--set", override,
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_network_too_large_for_its_inputs_is_refused_once_the_image_size_is_learned(tmp_path):
    from conftest import write_two_class_images

    images = write_two_class_images(tmp_path / "images", size=64)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{root: {images}}}\nmodel: {{blocks: [{{conv: {{channels: 100000}}}}]}}\n")
    result = runner.invoke(app, ["train", str(recipe), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "model.blocks: the" in result.stderr, result.output


def test_a_recipe_that_is_not_utf8_names_the_line_and_byte(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(b"model: {blocks: [flatten]}\ndescription: caf\xe9\n")
    with pytest.raises(CnncliError, match=r"r\.yaml: line 2 column 17: byte 0xe9 is not UTF-8"):
        load_config(recipe)


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {blocks: [flatten]}\ntrain:\n  epochs: 3\n  lr: 0.1\n  epochs: 30\n")
    with pytest.raises(CnncliError, match=r"line 5 is not valid YAML \(found the key 'epochs' twice"):
        load_config(recipe)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {blocks: [flatten]}\nbase: &base {epochs: 3, lr: 0.1}\n"
                      "train: {<<: *base, epochs: 5}\n".replace("base: &base", "description: &base"))
    with pytest.raises(CnncliError, match="description: expected text"):  # the anchor's home is checked too
        load_config(recipe)
    recipe.write_text("model: {blocks: [flatten]}\ntrain: {<<: {epochs: 3, lr: 0.1}, epochs: 5}\n")
    config = load_config(recipe)
    assert (config.train.epochs, config.train.lr) == (5, 0.1)


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("\n".join(lines) + "\nmodel: {blocks: [flatten]}\n")
    with pytest.raises(CnncliError, match="expands to more than 100,000 values"):
        load_config(recipe)


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    recipe = tmp_path / "loop.yaml"
    recipe.write_text("model: &m {blocks: [flatten], more: *m}\n")
    with pytest.raises(CnncliError, match="refers to the node that contains it"):
        load_config(recipe)


def test_a_recipe_nested_too_deeply_is_one_error(tmp_path):
    recipe = tmp_path / "deep.yaml"
    recipe.write_text("model: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(CnncliError, match="nested too deeply|not valid"):
        load_config(recipe)


def test_old_recipes_with_the_retired_cache_key_still_load(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {modality: audio, audio: {cache: .cache/cnncli/audio}}\nmodel: {blocks: [flatten]}\n")
    assert load_config(recipe).data.modality == "audio"


def test_nesterov_momentum_needs_momentum_and_reaches_the_optimiser(tmp_path):
    from types import SimpleNamespace

    from torch import nn

    from cnncli.training.optim import build_optimizer

    result = runner.invoke(app, ["train", str(QUICKSTART), "--set", NO_DATA, "--set", "train.nesterov=true",
                                 "--set", "train.momentum=0", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "train.nesterov: needs train.momentum above 0" in result.stderr
    train = SimpleNamespace(optimizer="sgd", lr=0.1, momentum=0.85, weight_decay=0.0, nesterov=True,
                            backbone_lr=1.0, decay_norm_and_bias=True)
    optimizer = build_optimizer(nn.Linear(2, 2).parameters(), train)
    assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == 0.85
