"""Issue 25, point 4: a block kind is one entry in cnncli.nn.blocks.BLOCKS, written once. The size
check, `inspect` and training read everything else off what the entry builds."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import SAMPLE_IMAGES
from torch import nn
from typer.testing import CliRunner

from cnncli.bundle.io import load_bundle
from cnncli.cli.app import app
from cnncli.errors import CnncliError
from cnncli.nn.blocks import BLOCKS, BlockKind, build_blocks, estimate_blocks, output_shape
from cnncli.nn.layers import layer_table
from cnncli.nn.model import build_network, network_size

runner = CliRunner()


# -- a toy kind, defined and registered here alone -------------------------------------------------


class Scale(nn.Module):
    """A learnable factor per channel, starting at `factor`."""

    def __init__(self, channels: int, factor: float):
        super().__init__()
        self.factor = nn.Parameter(torch.full((channels,), float(factor)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor.view(-1, *[1] * (x.dim() - 2))

    def connections(self, output_shape: tuple[int, ...]) -> int:
        return math.prod(output_shape)  # one multiplication per value


def build_scale(options: dict, shape: tuple[int, ...], where: str) -> nn.Module:
    factor = options.get("factor", 1.0)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)):
        raise CnncliError(f"{where}.scale.factor: expected a number, got {factor!r}")
    return Scale(shape[0], factor)  # no output shape given: the size check finds it on the meta device


@pytest.fixture
def scale_kind():
    BLOCKS.register("scale", BlockKind(build_scale, options=("factor",)))
    yield
    BLOCKS.unregister("scale")


def scaled_recipe(tmp_path):
    recipe = tmp_path / "scaled.yaml"
    recipe.write_text(
        f"data: {{root: {SAMPLE_IMAGES}, image: {{size: [28, 28], color: grayscale}},\n"
        "       split: {test_fraction: 0.2, val_fraction: 0.15, seed: 0}}\n"
        "model: {blocks: [{conv: {channels: 6, kernel: 3}}, {scale: {factor: 2}}, {pool: {type: max, size: 2}}]}\n"
        "train: {epochs: 1, batch_size: 32}\n")
    return recipe


def test_a_toy_block_kind_registered_from_a_test_file_trains_is_inspected_and_sized(scale_kind, tmp_path):
    bundle = tmp_path / "bundle"
    trained = runner.invoke(app, ["train", str(scaled_recipe(tmp_path)), "--out", str(bundle),
                                  "--set", "train.epochs=1", "--format", "json"])
    assert trained.exit_code == 0, trained.output
    inspected = runner.invoke(app, ["inspect", str(bundle), "--format", "json"])
    assert inspected.exit_code == 0, inspected.output
    rows = {row["name"]: row for row in json.loads(inspected.stdout)["layers"]}
    assert rows["scale1"]["type"] == "Scale" and rows["scale1"]["output_shape"] == [6, 26, 26]
    assert (rows["scale1"]["parameters"], rows["scale1"]["connections"]) == (6, 6 * 26 * 26)
    loaded = load_bundle(bundle)
    assert loaded.network.backbone.scale1.factor.shape == (6,)
    estimate = network_size(loaded.modality, loaded.config.model.blocks, len(loaded.labels))
    assert estimate.parameters == sum(p.numel() for p in loaded.network.parameters())
    assert estimate.shape == (len(loaded.labels),)


def test_a_toy_block_kind_checks_its_option_names_from_its_entry(scale_kind, tmp_path):
    result = runner.invoke(app, ["train", str(scaled_recipe(tmp_path)), "--set", "model.blocks.1.scale.colour=1",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "model.blocks[1].scale.colour: unknown option (known: factor)" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_kind_unregistered_is_unknown_again():
    with pytest.raises(CnncliError, match=r"model\.blocks\[0\]: unknown block type 'scale' \(known: conv, pool, "):
        build_network([{"scale": {}}], nn.Identity(), (1, 8, 8), 2)


@pytest.fixture
def liar_kind():
    """A kind that says its output has 99 values whatever it is given, as a wrong formula would."""
    BLOCKS.register("liar", BlockKind(lambda options, shape, where: (nn.Identity(), (99,))))
    yield
    BLOCKS.unregister("liar")


def test_a_kind_whose_claimed_output_shape_is_wrong_fails_its_first_real_build(liar_kind):
    with pytest.raises(RuntimeError, match=r"model\.blocks\[0\]: the block says its output is \(99,\)"):
        build_blocks([{"liar": {}}], (1, 4, 4), "model.blocks")


# -- the built-in kinds: the size check agrees with what is built ----------------------------------


EXAMPLES = [
    ({"conv": {"channels": 5, "kernel": 3}}, (2, 9, 8)),
    ({"conv": {"channels": 5, "kernel": 4, "stride": 2, "padding": "same", "batch_norm": True}}, (3, 9, 8)),
    ({"conv": {"channels": 4, "kernel": [3, "full"], "padding": [1, 0], "dropout": 0.2, "bias": False}}, (2, 10, 7)),
    ({"conv": {"channels": 3, "kernel": [2, 3], "stride": [1, 2], "padding": 1, "activation": "gelu"}}, (1, 6, 9)),
    ({"pool": {"type": "max", "size": 2}}, (3, 9, 8)),
    ({"pool": {"type": "avg", "size": [3, 2], "stride": 1}}, (3, 9, 8)),
    ({"pool": {"type": "max", "size": "global"}}, (3, 9, 8)),
    ({"dropout": 0.3}, (3, 4, 4)),
    ({"dropout": 0}, (5,)),
    ("flatten", (3, 4, 4)),
    ({"linear": {"features": 7}}, (3, 4, 4)),
    ({"linear": {"features": 7, "batch_norm": True, "dropout": 0.1, "activation": "tanh"}}, (12,)),
    ({"parallel": [[{"conv": {"channels": 4, "kernel": [w, "full"]}}, {"pool": {"type": "max", "size": "global"}}]
                   for w in (2, 3)]}, (1, 12, 6)),
    ({"parallel": [[{"conv": {"channels": 2, "kernel": 3, "padding": "same"}}],
                   [{"parallel": [[{"pool": {"size": 1}}], [{"conv": {"channels": 3, "kernel": 1}}]]}]]}, (2, 5, 5)),
    ({"conv": {"channels": 6, "kernel": 3, "batch_norm": True, "se": True, "dropout": 0.1}}, (2, 7, 7)),
    ({"residual": {"channels": 4}}, (4, 6, 5)),
    ({"residual": {"channels": 6, "stride": 2, "se": True}}, (3, 7, 6)),
    ({"residual": {"channels": 8, "bottleneck": True, "width": 3, "stride": [1, 2], "se": True, "se_ratio": 0.5}},
     (4, 5, 6)),
    ({"separable": {"channels": 5, "kernel": [3, 5], "stride": 2, "se": True}}, (3, 9, 8)),
    ({"separable": {"channels": 3, "expand": 4}}, (3, 6, 6)),
    ({"separable": {"channels": 4, "expand": 1, "activation": "gelu"}}, (3, 6, 6)),
    ({"whiten": {"kernel": 2}}, (3, 7, 6)),
    ({"whiten": {"kernel": 3, "stride": 3, "activation": "none"}}, (1, 9, 7)),
    ({"conv": {"channels": 4, "padding": "same", "pool": 2, "batch_norm": True, "activation": "gelu"}}, (3, 7, 6)),
]


def kind_of(spec) -> str:
    return spec if isinstance(spec, str) else next(iter(spec))


def test_every_built_in_kind_has_an_example_here():
    assert {kind_of(spec) for spec, _ in EXAMPLES} == set(BLOCKS)


@pytest.mark.parametrize("spec, shape", EXAMPLES, ids=[f"{kind_of(spec)}-{i}" for i, (spec, _) in enumerate(EXAMPLES)])
def test_the_size_check_counts_what_each_built_in_kind_builds(spec, shape):
    built, built_shape = build_blocks([spec], shape, "model.blocks")
    estimate = estimate_blocks([spec], shape, "model.blocks")
    assert estimate.shape == built_shape == output_shape(built, shape)
    assert estimate.parameters == sum(p.numel() for p in built.parameters())
    assert estimate.values >= math.prod(built_shape)


@pytest.mark.parametrize("spec, shape", EXAMPLES, ids=[f"{kind_of(spec)}-{i}" for i, (spec, _) in enumerate(EXAMPLES)])
def test_the_layer_table_of_a_network_built_on_the_meta_device_is_the_real_ones(spec, shape):
    """So inspect's shapes, parameters and connections can be had without allocating a weight."""
    real = layer_table(build_network([spec], nn.Identity(), shape, 3), shape)
    with torch.device("meta"):
        meta = build_network([spec], nn.Identity(), shape, 3)
    assert all(parameter.is_meta for parameter in meta.parameters())
    assert layer_table(meta, shape) == real


def test_a_network_of_a_million_million_parameters_is_counted_without_being_allocated():
    estimate = estimate_blocks([{"linear": {"features": 10 ** 6}}], (1, 1000, 1000), "model.blocks")
    assert estimate.parameters == 10 ** 12 + 10 ** 6 and estimate.shape == (10 ** 6,)


def test_the_values_counted_follow_each_branch_of_a_parallel_block():
    # Kim's CNN on 56 x 300 token embeddings: each branch outputs 100 x (57 - w) x 1 twice (conv,
    # relu), then 100 after its pool; the dropout block 300.
    kim = [{"parallel": [[{"conv": {"channels": 100, "kernel": [w, "full"]}}, {"pool": {"type": "max", "size": "global"}}]
                         for w in (3, 4, 5)]}, {"dropout": 0.5}]
    estimate = estimate_blocks(kim, (1, 56, 300), "model.blocks")
    assert estimate.values == sum(2 * 100 * (57 - w) + 100 for w in (3, 4, 5)) + 300
    assert estimate.parameters == sum(100 * w * 300 + 100 for w in (3, 4, 5))
