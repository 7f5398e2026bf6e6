"""Issue 27, point 1: residual, separable and squeeze-and-excitation blocks in the recipe
vocabulary. Networks of them train on digits and on spectrograms, and every verb works with
them: eval, predict, inspect (layer table, feature maps, Grad-CAM, the explainer page), ONNX
export; inference folding and the size check agree with the network as trained."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO
from typer.testing import CliRunner

from cnncli.bundle.export import export_bundle
from cnncli.bundle.io import load_bundle
from cnncli.cli.app import app
from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.nn.inference import for_inference, network_outputs, probabilities
from cnncli.nn.layers import cell_centres, layer_table
from cnncli.nn.model import build_network, network_size
from cnncli.recipe.config import load_config
from cnncli.training.train import train

runner = CliRunner()
SAMPLES = REPO / "sample_data"

RESIDUAL = [{"conv": {"channels": 8, "kernel": 3, "padding": "same", "batch_norm": True}},
            {"residual": {"channels": 8}},
            {"residual": {"channels": 16, "stride": 2, "se": True}},
            {"residual": {"channels": 16, "bottleneck": True, "width": 8}},
            {"pool": {"type": "avg", "size": "global"}}]
SEPARABLE = [{"conv": {"channels": 8, "kernel": 3, "padding": "same", "batch_norm": True, "se": True}},
             {"separable": {"channels": 16, "stride": 2}},
             {"separable": {"channels": 16, "expand": 4, "se": True}},
             {"pool": {"type": "avg", "size": "global"}}]
NETWORKS = {"residual": (RESIDUAL, "res3"), "separable": (SEPARABLE, "sep2")}  # blocks, last convolution block

DATA = {
    "image": {"root": str(SAMPLES / "images"), "image": {"size": [28, 28], "color": "grayscale"},
              "split": {"test_fraction": 0.2, "val_fraction": 0.15, "seed": 0}},
    "audio": {"modality": "audio", "root": str(SAMPLES / "audio"), "format": "files", "label_regex": r"^(\d)_",
              "split": {"test_pattern": r"_[0-4]\.wav$", "val_fraction": 0.1, "seed": 0},
              "audio": {"sample_rate": 8000, "features": "logmel", "n_fft": 256, "hop_length": 64, "n_mels": 40,
                        "duration": 1.0}},
}
INPUTS = {"image": sorted((SAMPLES / "images" / "7").glob("*.png"))[:7],
          "audio": sorted((SAMPLES / "audio").glob("*.wav"))[::11][:7]}


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def write_recipe(folder: Path, kind: str, blocks: list, **train) -> Path:
    recipe = folder / f"{kind}.yaml"
    settings = {"epochs": 1, "batch_size": 16, "optimizer": "adam", "lr": 0.003, "threads": 1, **train}
    recipe.write_text(yaml.safe_dump({"data": DATA[kind], "model": {"blocks": blocks}, "train": settings}))
    return recipe


@pytest.fixture(scope="module", params=[(kind, net) for kind in DATA for net in NETWORKS],
                ids=lambda case: "-".join(case))
def trained(request, tmp_path_factory):
    kind, net = request.param
    folder = tmp_path_factory.mktemp(f"{kind}-{net}")
    result = cli("train", write_recipe(folder, kind, NETWORKS[net][0]), "--out", folder / "bundle", "--format", "json")
    assert result.exit_code == 0, result.output
    return kind, net, folder / "bundle"


def encoded(bundle) -> torch.Tensor:
    result = bundle.modality.encode_many([Sample(str(path)) for path in INPUTS[bundle.modality.name]])
    assert not result.failures
    return result.tensor


def test_a_trained_network_of_new_blocks_evaluates_and_predicts(trained):
    kind, _, bundle = trained
    evaluated = cli("eval", bundle, "--format", "json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["n"] > 0
    predicted = cli("predict", bundle, *INPUTS[kind][:2], "--format", "jsonl")
    assert predicted.exit_code == 0, predicted.output
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert len(rows) == 2 and all(row["error"] is None for row in rows)


def test_inspect_counts_every_parameter_and_explains_an_input_at_the_last_block(trained, tmp_path):
    kind, net, bundle = trained
    result = cli("inspect", bundle, "--input", INPUTS[kind][0], "--out", tmp_path / "seen", "--html",
                 tmp_path / "page.html", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    network = load_bundle(bundle).network
    assert summary["total_parameters"] == sum(row["parameters"] for row in summary["layers"]) == sum(
        parameter.numel() for parameter in network.parameters())
    rows = {row["name"]: row for row in summary["layers"]}
    inner = {"residual": "res2.shortcut.conv", "separable": "sep2.depthwise"}[net]
    assert rows[inner]["connections"] > 0 and rows[f"{NETWORKS[net][1]}.add"]["connections"] > 0
    explained = summary["input"]
    assert explained["gradcam"]["layers"] == [NETWORKS[net][1]]
    assert (tmp_path / "seen" / "gradcam.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "seen" / f"features-{NETWORKS[net][1]}.png").exists()
    assert f"<code>{NETWORKS[net][1]}</code>" in (tmp_path / "page.html").read_text()
    layer = {"residual": "res2.conv1", "separable": "sep1.depthwise"}[net]  # a layer inside a block
    inside = cli("inspect", bundle, "--input", INPUTS[kind][0], "--layer", layer, "--out", tmp_path / "inside",
                 "--format", "json")
    assert inside.exit_code == 0, inside.output
    assert json.loads(inside.stdout)["input"]["gradcam"]["layers"] == [layer]


def test_onnxruntime_predicts_what_cnncli_does(trained, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime", reason="needs the export extra: pip install '.[export]'")
    kind, _, bundle = trained
    result = export_bundle(bundle, tmp_path / "net.onnx")
    assert result["max_difference"] < 1e-4
    loaded = load_bundle(bundle)
    inputs = encoded(loaded)
    session = onnxruntime.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    graph_input = loaded.modality.featurize(inputs) if kind == "audio" else inputs  # a graph starts at the dB picture
    theirs = torch.from_numpy(session.run(["probabilities"], {"input": graph_input.numpy()})[0])
    ours = probabilities(loaded.network, loaded.modality, inputs, 64, torch.device("cpu"))
    assert torch.allclose(theirs, ours, atol=1e-4, rtol=0)


def test_folding_for_inference_keeps_the_outputs_and_the_size_check_counts_the_network(trained):
    bundle = trained[2]
    loaded = load_bundle(bundle)
    network, inputs = loaded.network.eval(), encoded(loaded)
    fast = for_inference(network, torch.device("cpu"))
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in fast.modules())  # all folded
    with torch.no_grad():
        expected = network(inputs)
    folded = network_outputs(fast, loaded.modality, inputs, 64, torch.device("cpu"))
    assert torch.allclose(folded, expected, atol=1e-5, rtol=0)
    estimate = network_size(loaded.modality, loaded.config.model.blocks, len(loaded.labels))
    assert estimate.parameters == sum(parameter.numel() for parameter in network.parameters())


def test_a_residual_block_adds_its_shortcut_to_the_receptive_field_and_the_counts():
    network = build_network([{"residual": {"channels": 4}}, {"residual": {"channels": 8, "stride": 2}}],
                            torch.nn.Identity(), (1, 16, 16), 2)
    rows = {row["name"]: row for row in layer_table(network, (1, 16, 16))["layers"]}
    # 3x3 convolutions: 3, then 5; the second block strides, so its second conv adds 2 x 2
    fields = {name: rows[name]["receptive_field"] for name in
              ("res1.conv1", "res1.conv2", "res1.add", "res2.conv1", "res2.conv2", "res2.shortcut.conv", "res2.act")}
    assert fields == {"res1.conv1": "3x3", "res1.conv2": "5x5", "res1.add": "5x5", "res2.conv1": "7x7",
                      "res2.conv2": "11x11", "res2.shortcut.conv": "5x5", "res2.act": "11x11"}
    # 1 -> 4 channels: conv1 36 + bn1 8 + conv2 144 + bn2 8, and a 1x1 projection 4 + its bn 8
    assert sum(row["parameters"] for name, row in rows.items() if name.startswith("res1.")) == 208
    assert rows["res1.shortcut.conv"]["connections"] == 4 * 16 * 16
    assert rows["res2.add"]["output_shape"] == [8, 8, 8] and rows["res2.add"]["connections"] == 8 * 8 * 8
    assert cell_centres(network.backbone, "res2.shortcut.conv") == ([0.0, 0.0], [2.0, 2.0])


def test_a_squeeze_and_excitation_gate_scales_channels_without_moving_the_cells():
    network = build_network([{"conv": {"channels": 8, "kernel": 3, "se": True, "se_ratio": 0.5}}],
                            torch.nn.Identity(), (1, 9, 9), 2)
    rows = {row["name"]: row for row in layer_table(network, (1, 9, 9))["layers"]}
    assert rows["conv1.se.pool"]["receptive_field"] == "all" and rows["conv1.se.scale"]["receptive_field"] == "3x3"
    assert rows["conv1.se.reduce"]["parameters"] == 8 * 4 + 4 and rows["conv1.se.pool"]["connections"] == 8 * 7 * 7
    assert cell_centres(network.backbone, "conv1") == ([1.0, 1.0], [1.0, 1.0])
    assert cell_centres(network.backbone, "conv1.se.reduce") is None  # the gate's cells are not anywhere


def test_a_network_of_new_blocks_trains_in_bf16(tmp_path):
    config = load_config(write_recipe(tmp_path, "image", RESIDUAL + [{"dropout": 0.1}], precision="bf16"))
    train(config, tmp_path / "bf16")
    record = json.loads((tmp_path / "bf16" / "log.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(record["train_loss"]) and record["epoch"] == 1


@pytest.mark.parametrize("block, message", [
    ({"residual": {"channels": 8, "width": 2}},
     r"model\.blocks\[0\]\.residual\.width: only means something with bottleneck: true"),
    ({"separable": {"channels": 8, "kernel": 4}}, r"model\.blocks\[0\]\.separable\.kernel: expected odd sizes"),
    ({"conv": {"channels": 8, "se_ratio": 0.5}}, r"model\.blocks\[0\]\.conv\.se_ratio: only means something"),
    ({"residual": {"channels": 8, "se": True, "se_ratio": 2}}, r"model\.blocks\[0\]\.residual\.se_ratio: expected"),
    ({"residual": {"channels": 8, "kernel": 5}}, r"model\.blocks\[0\]\.residual\.kernel: unknown option"),
])
def test_a_wrong_option_is_one_line_naming_its_key(block, message):
    with pytest.raises(CnncliError, match=message):
        build_network([block], torch.nn.Identity(), (1, 8, 8), 2)


def bench_module(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_plain_pytorch_reference_is_the_network_the_speed_benchmark_trains():
    """bench/residual_speed.py times cnncli against bench/reference/residual.py: the same weights
    from the same seed, the same outputs."""
    blocks = bench_module("bench/residual_speed.py").BLOCKS
    torch.manual_seed(0)
    ours = build_network(blocks, torch.nn.Identity(), (3, 32, 32), 10).eval()
    torch.manual_seed(0)
    theirs = bench_module("bench/reference/residual.py").build_model(10).eval()
    ours_parameters, theirs_parameters = list(ours.parameters()), list(theirs.parameters())
    assert [p.shape for p in ours_parameters] == [p.shape for p in theirs_parameters]
    assert all(torch.equal(a, b) for a, b in zip(ours_parameters, theirs_parameters))
    pictures = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(pictures), theirs(pictures))
