"""Issue 13, item 5: a malformed or tampered bundle is one line naming the file and the key, found
before anything is built from it; the bundles of format 1 written before keep loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from cnncli.cli.app import app

runner = CliRunner()
FIXTURES = REPO / "tests" / "fixtures" / "bundles-v1"


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def text_bundle(tmp_path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(FIXTURES / "text", copy)
    return copy


def edit_info(bundle: Path, change) -> None:
    info = json.loads((bundle / "model.json").read_text())
    change(info)
    (bundle / "model.json").write_text(json.dumps(info))


def assert_refused(bundle: Path, *expected: str) -> None:
    result = cli("predict", bundle, "a fine film", "--format", "jsonl")
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and result.stderr.count("\n") == 1 and "Traceback" not in result.output
    for text in expected:
        assert text in result.stderr, result.stderr


@pytest.mark.parametrize("change, expected", [
    (lambda info: info.pop("recipe"), "recipe: missing"),
    (lambda info: info.pop("labels"), "labels: missing"),
    (lambda info: info.pop("modality"), "modality: missing"),
    (lambda info: info.pop("input_shape"), "input_shape: missing"),
    (lambda info: info.update(labels=5), "labels: expected a list"),
    (lambda info: info.update(labels=["good", "good"]), "labels: a label is listed twice"),
    (lambda info: info.update(format_version="1"), "format_version: expected a whole number"),
    (lambda info: info.update(format_version=2), "made by a newer cnncli"),
    (lambda info: info.update(status="done"), "status: expected partial or complete"),
    (lambda info: info.update(surprise=1), "surprise: unknown key"),
    (lambda info: info.update(input_shape=[-24]), "input_shape: expected 1 to 4 whole numbers >= 1"),
    (lambda info: info.update(input_shape=[10 ** 12]), "input_shape: [1000000000000] holds more than"),
    (lambda info: info.update(input_shape=[25]), "input_shape: [25] is not the [24] its modality encodes"),
    (lambda info: info.update(members=10_000_000), "members: expected 1 to 100"),
    (lambda info: info["modality"].update(name="smell"), "modality.name: unknown modality 'smell'"),
    (lambda info: info["modality"]["state"]["options"].update(surprise=1), "modality.state.options.surprise: unknown"),
    (lambda info: info["modality"]["state"]["options"].update(max_length=-3), "modality.state.options.max_length"),
    (lambda info: info["modality"]["state"].update(vocabulary="abc"), "modality.state.vocabulary"),
    (lambda info: info["modality"]["state"].pop("encoding"), "modality.state: not readable"),
    (lambda info: info["recipe"]["train"].update(ensemble=10 ** 9), "recipe: train.ensemble: must be from 1 to 100"),
    (lambda info: info["recipe"]["model"]["blocks"][0]["parallel"][0][0]["conv"].update(channels=10 ** 9),
     "model.blocks: the network would have"),
])
def test_a_malformed_model_json_names_the_file_and_key(text_bundle, change, expected):
    edit_info(text_bundle, change)
    assert_refused(text_bundle, "model.json", expected)


@pytest.mark.parametrize("content, expected", [
    (b"[1, 2]", "expected a JSON object, got a list"),
    (b'"text"', "expected a JSON object, got text"),
    (b"null", "expected a JSON object, got null"),
    (b'{"format": "cnncli-bundle", \xff}', "is not UTF-8"),
    (b'{"format": NaN}', "not valid JSON (NaN is not a JSON value)"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"{" * 3, "not valid JSON"),
])
def test_a_model_json_that_is_not_an_object_is_refused(text_bundle, content, expected):
    (text_bundle / "model.json").write_bytes(content)
    assert_refused(text_bundle, "model.json", expected)


def rewrite_weights(bundle: Path, change) -> None:
    tensors = load_file(str(bundle / "weights.safetensors"))
    change(tensors)
    save_file(tensors, str(bundle / "weights.safetensors"))


@pytest.mark.parametrize("change, expected", [
    (lambda tensors: tensors.pop("classifier.linear.bias"), "lacks the tensor classifier.linear.bias"),
    (lambda tensors: tensors.update(extra=torch.zeros(1)), "holds an unexpected tensor extra"),
    (lambda tensors: tensors.update({"classifier.linear.bias": torch.zeros(3)}),
     "tensor classifier.linear.bias has shape [3]; the recipe's network needs [2]"),
    (lambda tensors: tensors["classifier.linear.weight"].fill_(float("nan")),
     "tensor classifier.linear.weight holds values that are not finite"),
])
def test_weights_that_do_not_fit_the_network_are_named(text_bundle, change, expected):
    rewrite_weights(text_bundle, change)
    assert_refused(text_bundle, "weights.safetensors", expected)


@pytest.mark.parametrize("kind, values", [("image", [None]), ("image", [0.1, 0.2]), ("audio", ["x"] * 40)])
def test_fitted_statistics_that_are_not_numbers_are_named(tmp_path, kind, values):
    bundle = tmp_path / kind
    shutil.copytree(FIXTURES / kind, bundle)
    edit_info(bundle, lambda info: info["modality"]["state"].update(mean=values))
    result = cli("predict", bundle, "x.png")
    assert result.exit_code == 2 and "modality.state.mean: expected" in result.stderr, result.output


def test_weights_that_are_not_safetensors_are_refused(text_bundle):
    (text_bundle / "weights.safetensors").write_bytes(b"\x80\x04pickle, not tensors")
    assert_refused(text_bundle, "weights.safetensors", "unreadable weights")


def test_an_old_bundle_with_the_retired_cache_key_still_loads(tmp_path):
    info = json.loads((FIXTURES / "audio" / "model.json").read_text())
    assert "cache" in info["modality"]["state"]["options"] and "cache" in info["recipe"]["data"]["audio"]
    from cnncli.bundle.io import load_bundle

    assert load_bundle(FIXTURES / "audio").modality.input_shape == (1, 40, 126)


# -- resume.json ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def partial_bundle(tmp_path_factory):
    """A partial bundle with its resume state: a 3-epoch run interrupted after epoch 2."""
    from conftest import tiny_image_recipe, write_two_class_images

    from cnncli.recipe.config import load_config
    from cnncli.training.train import train

    root = tmp_path_factory.mktemp("partial")
    images = write_two_class_images(root / "images")
    out = root / "bundle"

    class StopAfterTwo(Exception):
        pass

    from cnncli.runtime.progress import Progress

    class Interrupting(Progress):
        def epoch(self, record, members=1):
            if record["epoch"] == 2:
                raise StopAfterTwo

    with pytest.raises(StopAfterTwo):
        train(load_config(tiny_image_recipe(images, epochs=3)), out, Interrupting())
    return out


@pytest.mark.parametrize("change, expected", [
    (lambda meta: meta["fit"].update(epoch="x"), "fit.epoch: expected int"),
    (lambda meta: meta["fit"].update(epoch=10 ** 30), "fit.epoch: 1000000000000000000000000000000 is out of range"),
    (lambda meta: meta.update(member=-1), "member: -1 is out of range"),
    (lambda meta: meta.pop("history"), "history: expected list"),
    (lambda meta: meta["fit"]["optimizer"].update(param_groups="x"), "fit.optimizer: expected param_groups"),
    (lambda meta: meta["fit"].update(best_score=["a", 1]), "fit.best_score"),
])
def test_a_tampered_resume_json_is_one_line_naming_it(partial_bundle, tmp_path, change, expected):
    copy = tmp_path / "bundle"
    shutil.copytree(partial_bundle, copy)
    meta = json.loads((copy / "resume.json").read_text())
    change(meta)
    (copy / "resume.json").write_text(json.dumps(meta))
    result = cli("train", "--resume", copy)
    assert result.exit_code == 2, result.output
    assert "resume.json" in result.stderr and expected in result.stderr and result.stderr.count("\n") == 1


def test_resume_tensors_that_do_not_fit_the_network_are_one_line(partial_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(partial_bundle, copy)
    tensors = load_file(str(copy / "resume.safetensors"))
    name = next(name for name in tensors if name.startswith("network/"))
    tensors[name] = torch.zeros(7, 7)
    save_file(tensors, str(copy / "resume.safetensors"))
    result = cli("train", "--resume", copy)
    assert result.exit_code == 2 and "resume state does not fit" in result.stderr, result.output
