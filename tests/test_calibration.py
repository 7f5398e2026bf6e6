"""Temperature scaling: fitted on held-out rows at training time, stored in the bundle, applied by
predict and eval; the expected calibration error before and after."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cnncli.bundle.io import load_bundle
from cnncli.cli.app import app
from cnncli.data.sample import Sample
from cnncli.nn.calibration import calibrate, expected_calibration_error, fit_temperature, scaled_probabilities
from cnncli.nn.inference import network_outputs
from cnncli.verbs.predict import predict

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures" / "bundles-v1"


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def calibrated_outputs(count: int = 6000, classes: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels drawn from those logits' own softmax: perfectly calibrated outputs."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(count, classes, generator=generator) * 2
    targets = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator).flatten()
    return logits, targets


def test_the_fitted_temperature_undoes_a_known_over_confidence():
    logits, targets = calibrated_outputs()
    fitted = fit_temperature(logits * 3, targets)  # a network three times too sure of itself
    assert fitted == pytest.approx(3.0, rel=0.08)
    before = expected_calibration_error(scaled_probabilities(logits * 3), targets)
    after = expected_calibration_error(scaled_probabilities(logits * 3, fitted), targets)
    assert before > 0.1 and after < 0.03
    assert fit_temperature(logits / 2, targets) == pytest.approx(0.5, rel=0.08)  # under-confident: T < 1


def test_expected_calibration_error_by_hand():
    probabilities = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    targets = torch.tensor([0, 1, 0, 1])
    # bins: 0.9 (two rows, half right): |0.5 - 0.9|; 0.6 (right): |1 - 0.6|; 0.7 (right): |1 - 0.7|
    assert expected_calibration_error(probabilities, targets) == pytest.approx((2 * 0.4 + 0.4 + 0.3) / 4)


def test_a_temperature_of_one_is_the_plain_softmax_bit_for_bit():
    logits, _ = calibrated_outputs(100)
    assert torch.equal(scaled_probabilities(logits), torch.softmax(logits, dim=1))


def test_nothing_is_fitted_without_a_mistake_to_learn_from():
    logits = torch.tensor([[4.0, 0.0], [0.0, 3.0]])
    record = calibrate(logits, torch.tensor([0, 1]), "val")
    assert record["temperature"] == 1.0 and record["fitted_on"] is None and "nothing to fit" in record["note"]


def noisy_digits(root: Path, count: int, seed: int) -> Path:
    """Two classes (bright top vs bright bottom) of 8x8 images with a fifth of the labels flipped:
    a network that learns the training labels by heart is sure of itself and often wrong."""
    generator = np.random.default_rng(seed)
    for index in range(count):
        side = index % 2
        pixels = generator.integers(0, 90, size=(8, 8)).astype("uint8")
        pixels[side * 4:side * 4 + 4] += 100
        label = ("top", "bottom")[side if generator.random() > 0.2 else 1 - side]
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / label / f"{index:03d}.png")
    return root


@pytest.fixture(scope="module")
def over_confident(tmp_path_factory):
    root = tmp_path_factory.mktemp("noisy")
    noisy_digits(root / "train", 160, seed=1)
    noisy_digits(root / "val", 120, seed=2)
    recipe = root / "recipe.yaml"
    recipe.write_text(
        "data: {root: ., train: train, val: val, image: {size: [8, 8]}, split: {test_fraction: 0.0}}\n"
        "model: {blocks: [{conv: {channels: 16, kernel: 3}}, flatten, {linear: {features: 64}}]}\n"
        "train: {epochs: 15, batch_size: 16, lr: 0.01, keep: last, seed: 0, threads: 1}\n")
    result = cli("train", recipe, "--out", root / "bundle", "--format", "json")
    assert result.exit_code == 0, result.output
    return root


def test_calibration_lowers_the_validation_ece_of_an_over_confident_bundle(over_confident):
    bundle = load_bundle(over_confident / "bundle")
    record = json.loads((over_confident / "bundle" / "model.json").read_text())["calibration"]
    assert record["fitted_on"] == "val" and record["n"] == 120
    assert record["temperature"] > 1.5  # softer: the network was too sure
    assert record["ece_after"] < record["ece_before"] / 2 and record["nll_after"] < record["nll_before"]
    evaluated = cli("eval", bundle.path, over_confident / "val", "--format", "json")
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)["calibration"]
    assert report["temperature"] == record["temperature"]
    assert (report["ece_before"], report["ece_after"]) == (record["ece_before"], record["ece_after"])
    table = cli("eval", bundle.path, over_confident / "val").stdout
    assert f"expected calibration error {record['ece_before']:.4f} before, {record['ece_after']:.4f} after" in table


def test_predict_scores_are_the_calibrated_probabilities(over_confident):
    bundle = load_bundle(over_confident / "bundle")
    files = sorted(str(path) for path in (over_confident / "val").rglob("*.png"))[:20]
    rows = list(predict(bundle, files, top_k=2, workers=0))
    encoded = bundle.modality.encode_many([Sample(file) for file in files]).tensor
    plain = scaled_probabilities(network_outputs(bundle.network, bundle.modality, encoded, 64, torch.device("cpu")))
    calibrated = scaled_probabilities(torch.log(plain), bundle.temperature)
    assert [row.score for row in rows] == pytest.approx(calibrated.max(1).values.tolist(), abs=2e-6)
    assert [row.label for row in rows] == [bundle.labels[i] for i in plain.argmax(1).tolist()]
    assert max(row.score for row in rows) < plain.max().item()  # softer than the raw softmax


def test_inspect_shows_the_calibrated_scores_predict_gives(over_confident, tmp_path):
    image = sorted((over_confident / "val" / "top").glob("*.png"))[0]
    row, = predict(load_bundle(over_confident / "bundle"), [str(image)], top_k=2, workers=0)
    inspected = cli("inspect", over_confident / "bundle", "--input", image, "--out", tmp_path, "--format", "json")
    summary = json.loads(inspected.stdout)
    assert summary["calibration"]["temperature"] > 1
    shown = summary["input"]["top"][:2]
    assert [t["label"] for t in shown] == [label for label, _ in row.top]
    assert [t["score"] for t in shown] == pytest.approx([score for _, score in row.top], abs=2e-6)


@pytest.mark.parametrize("temperature", [0, -1.0, 1e9, "warm", True, None])
def test_a_temperature_training_could_not_have_fitted_is_refused_on_loading(tmp_path, temperature):
    bundle = tmp_path / "bundle"
    shutil.copytree(FIXTURES / "image", bundle)
    info = json.loads((bundle / "model.json").read_text())
    (bundle / "model.json").write_text(json.dumps({**info, "calibration": {"temperature": temperature}}))
    result = cli("predict", bundle, "whatever.png")
    assert result.exit_code == 2 and "calibration.temperature: expected a number from 0.05 to 20" in result.output
