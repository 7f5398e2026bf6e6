"""ONNX export: onnxruntime gives cnncli's probabilities (within 1e-4) on the same encoded inputs,
for an image, an audio and a text bundle and an ensemble, at batch sizes 1 and 7; the sidecar
states the preprocessing a server must apply."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO
from typer.testing import CliRunner

from cnncli.bundle.export import export_bundle
from cnncli.bundle.io import load_bundle
from cnncli.cli.app import app
from cnncli.data.sample import Sample
from cnncli.nn.inference import probabilities
from cnncli.recipe.config import load_config
from cnncli.training.train import train

onnxruntime = pytest.importorskip("onnxruntime", reason="needs the export extra: pip install '.[export]'")

FIXTURES = REPO / "tests" / "fixtures" / "bundles-v1"
SAMPLES = {"image": sorted((REPO / "sample_data" / "images").glob("*/*.png"))[::20],
           "audio": sorted((REPO / "sample_data" / "audio").glob("*.wav"))[::8],
           "text": ["a gripping, funny film", "dull and overlong", "not bad at all", "the plot drags",
                    "wonderful", "an utter bore from start to finish", "quietly moving"]}


def encoded(bundle, kind: str) -> torch.Tensor:
    samples = [Sample(s, content=s) if kind == "text" else Sample(str(s)) for s in SAMPLES[kind][:7]]
    result = bundle.modality.encode_many(samples)
    assert not result.failures and len(result.index) == 7
    return result.tensor


def agree(onnx_file, bundle, inputs: torch.Tensor) -> None:
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    for count in (1, 7):
        theirs = session.run(["probabilities"], {"input": inputs[:count].numpy()})[0]
        ours = probabilities(bundle.network, bundle.modality, inputs[:count], 64, torch.device("cpu"))
        assert theirs.shape == tuple(ours.shape)
        assert torch.allclose(torch.from_numpy(theirs), ours, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["image", "audio", "text"])
def test_onnxruntime_predicts_what_cnncli_does(kind, tmp_path):
    bundle = load_bundle(FIXTURES / kind)
    result = export_bundle(FIXTURES / kind, tmp_path / f"{kind}.onnx")
    assert result["max_difference"] < 1e-4
    agree(tmp_path / f"{kind}.onnx", bundle, encoded(bundle, kind))
    sidecar = json.loads((tmp_path / f"{kind}.onnx.json").read_text())
    assert sidecar["labels"] == bundle.labels and sidecar["input"]["shape"] == ["batch", *bundle.modality.input_shape]
    assert sidecar["input"]["dtype"] == {"image": "uint8", "audio": "float32", "text": "int64"}[kind]
    preprocessing = sidecar["preprocessing"]
    state = bundle.modality.state_dict()
    if kind == "text":
        assert preprocessing["vocabulary"] == state["vocabulary"]
        assert preprocessing["max_length"] == state["options"]["max_length"]
    else:
        assert (preprocessing["mean"], preprocessing["std"]) == (state["mean"], state["std"])
    if kind == "image":
        assert (preprocessing["size"], preprocessing["color"]) == (state["options"]["size"], "grayscale")
    if kind == "audio":
        assert preprocessing["sample_rate"] == 8000 and preprocessing["spectrogram"]["n_mels"] == 40


def test_an_ensemble_exports_its_averaged_probabilities_and_subwords_export_too(tmp_path):
    config = load_config(REPO / "recipes" / "text-quickstart.yaml",
                         ["train.ensemble=2", "train.epochs=2", "data.text.subword_buckets=64"])
    train(config, tmp_path / "pair")
    bundle = load_bundle(tmp_path / "pair")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "pair"), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    assert "onnxruntime agrees with cnncli" in result.stdout
    assert json.loads((tmp_path / "pair.onnx.json").read_text())["members"] == 2
    agree(tmp_path / "pair.onnx", bundle, encoded(bundle, "text"))


def test_an_unknown_export_format_lists_the_known_ones():
    result = CliRunner().invoke(app, ["export", str(FIXTURES / "image"), "--format", "tflite"])
    assert result.exit_code == 2 and "--format: unknown export format 'tflite' (known: onnx)" in result.output
    assert not list(FIXTURES.glob("image.*"))
