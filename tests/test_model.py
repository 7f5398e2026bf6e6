"""The backbone builder reproduces the lecture's networks exactly; counts are done by hand here."""

from pathlib import Path

import pytest
import torch

from cnncli.errors import CnncliError
from cnncli.modalities.image import Normalize
from cnncli.modalities.text import TextModality, TextOptions, TokenEmbedding
from cnncli.nn.layers import layer_table
from cnncli.nn.model import build_network
from cnncli.recipe.config import load_config

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def network_for(recipe: str, classes: int = 10):
    config = load_config(RECIPES / recipe)
    return build_network(config.model.blocks, Normalize([0.0], [1.0]), (1, 28, 28), classes)


def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def test_lecture_1_parameters_match_a_hand_count():
    # 28x28 -> 28 (s1) -> 14 (s2) -> 7 (s2) with 'same' padding; 7*7*12 = 588 inputs to FC 200.
    expected = conv(5, 1, 4) + conv(5, 4, 8) + conv(4, 8, 12) + (588 * 200 + 200) + (200 * 10 + 10)
    assert expected == 122_270
    assert sum(p.numel() for p in network_for("lecture-1.yaml").parameters()) == expected


def test_lecture_2_parameters_match_a_hand_count():
    expected = conv(6, 1, 6) + conv(5, 6, 12) + conv(4, 12, 24) + (7 * 7 * 24 * 200 + 200) + 2010
    assert sum(p.numel() for p in network_for("lecture-2.yaml").parameters()) == expected


def test_lecture_3_parameters_match_a_hand_count():
    # Batch norm replaces the convolution and FC biases: gamma and beta per channel / feature.
    expected = (conv(6, 1, 24, False) + 2 * 24 + conv(5, 24, 48, False) + 2 * 48 + conv(4, 48, 64, False) + 2 * 64
                + 7 * 7 * 64 * 200 + 2 * 200 + 2010)
    assert sum(p.numel() for p in network_for("lecture-3.yaml").parameters()) == expected


def test_same_padding_follows_tensorflow_shapes():
    table = layer_table(network_for("lecture-1.yaml"), (1, 28, 28))
    shapes = {row["name"]: row["output_shape"] for row in table["layers"]}
    assert shapes["conv1.conv"] == [4, 28, 28]
    assert shapes["conv2.conv"] == [8, 14, 14]
    assert shapes["conv3.conv"] == [12, 7, 7]


def test_lenet5_c1_counts_as_lecun_does():
    table = layer_table(network_for("lenet5.yaml"), (1, 28, 28))
    c1 = next(row for row in table["layers"] if row["name"] == "conv1.conv")
    assert (c1["parameters"], c1["connections"]) == (156, 122_304)
    assert c1["receptive_field"] == "5x5"


def test_parallel_branches_with_full_width_kernels_concatenate():
    blocks = [{"parallel": [[{"conv": {"channels": 5, "kernel": [w, "full"]}}, {"pool": {"type": "max", "size": "global"}}]
                            for w in (3, 4, 5)]}]
    network = build_network(blocks, torch.nn.Identity(), (1, 20, 16), 2)
    assert network(torch.randn(3, 1, 20, 16)).shape == (3, 2)
    assert network.classifier.linear.in_features == 15
    assert network.backbone.parallel1.branches[1].conv1.conv.kernel_size == (4, 16)


@pytest.mark.parametrize("blocks, message", [
    ([{"conv": {"kernel": 3}}], r"model\.blocks\[0\]\.conv\.channels: required"),
    ([{"convolution": {}}], r"model\.blocks\[0\]: unknown block type 'convolution'"),
    ([{"conv": {"channels": 4, "stride": 0}}], r"model\.blocks\[0\]\.conv\.stride"),
    ([{"conv": {"channels": 4, "kernel": 40}}], r"model\.blocks\[0\]: does not fit its input"),
    ([{"linear": {"features": 4}}, {"conv": {"channels": 4}}], r"model\.blocks\[1\]: conv needs"),
    ([{"conv": {"channels": 4, "colour": 1}}], r"model\.blocks\[0\]\.conv\.colour: unknown option"),
])
def test_bad_blocks_name_the_block(blocks, message):
    with pytest.raises(CnncliError, match=message):
        build_network(blocks, torch.nn.Identity(), (1, 28, 28), 10)


def test_full_width_convolution_computes_what_a_2d_one_does():
    network = build_network([{"conv": {"channels": 6, "kernel": [3, "full"]}}], torch.nn.Identity(), (2, 9, 7), 2)
    layer = network.backbone.conv1.conv
    plain = torch.nn.Conv2d(2, 6, (3, 7))
    plain.load_state_dict(layer.state_dict())  # the same parameters, so bundles are unchanged
    x = torch.randn(4, 2, 9, 7, requires_grad=True)
    torch.testing.assert_close(layer(x), plain(x))
    (grad_ours,) = torch.autograd.grad(layer(x).square().sum(), x)
    (grad_plain,) = torch.autograd.grad(plain(x).square().sum(), x)
    torch.testing.assert_close(grad_ours, grad_plain)


KIM = [{"parallel": [[{"conv": {"channels": 8, "kernel": [w, "full"]}}, {"pool": {"type": "max", "size": "global"}}]
                     for w in (2, 3, 5)]}, {"dropout": 0.5}]


def text_network(blocks, length=30):
    network = build_network(blocks, TokenEmbedding(40, 6, "rand"), (length,), 3, torch.long)
    network.trims_batches = TextModality(TextOptions()).adapt_stem(network.stem, network.backbone)
    return network


def test_text_training_batches_keep_as_many_padding_rows_as_the_widest_filter_needs():
    network = text_network([{"dropout": 0.3}, *KIM])
    assert network.stem.padding_margin == 5
    ids = torch.zeros(2, 30, dtype=torch.long)
    ids[0, :7], ids[1, :4] = 5, 6
    network.stem.train()
    assert network.stem(ids).shape[2] == 7 + 5
    network.stem.eval()  # evaluation and prediction see the full height
    assert network.stem(ids).shape[2] == 30


@pytest.mark.parametrize("blocks", [
    [{"conv": {"channels": 4, "kernel": [3, "full"], "batch_norm": True}}, {"pool": {"type": "max", "size": "global"}}],
    [{"conv": {"channels": 4, "kernel": [3, "full"]}}, {"pool": {"type": "avg", "size": "global"}}],
    [{"conv": {"channels": 4, "kernel": [3, "full"], "padding": "same"}}, {"pool": {"type": "max", "size": "global"}}],
    [{"conv": {"channels": 4, "kernel": [3, 1]}}, {"conv": {"channels": 4, "kernel": [3, "full"], "padding": [2, 0]}},
     {"pool": {"type": "max", "size": "global"}}],
    [{"conv": {"channels": 4, "kernel": [3, "full"], "dropout": 0.2}}, {"pool": {"type": "max", "size": "global"}}],
    [{"conv": {"channels": 4, "kernel": [3, "full"]}}, {"pool": {"type": "max", "size": [2, 1]}}],
])
def test_backbones_whose_output_depends_on_the_padding_keep_every_row(blocks):
    assert text_network(blocks).stem.padding_margin is None


def test_stacked_convolutions_need_the_sum_of_their_reaches():
    blocks = [{"conv": {"channels": 4, "kernel": [3, 1]}}, {"conv": {"channels": 4, "kernel": [4, "full"]}},
              {"pool": {"type": "max", "size": "global"}}]
    assert text_network(blocks).stem.padding_margin == 1 + 2 + 3


def test_trimmed_padding_changes_neither_outputs_nor_gradients():
    """Weights chosen so that windows of padding alone win max over time: the one kept must
    stand in for all of them, in the forward pass and in where the gradient goes."""
    torch.manual_seed(0)
    blocks = [{"conv": {"channels": 4, "kernel": [3, 1], "padding": [2, 0]}}, *KIM[:1]]  # stacked, padded, parallel
    trimmed = text_network(blocks)
    with torch.no_grad():  # real tokens lower the first layer's output, padding leaves it at its bias
        trimmed.stem.tuned.weight.abs_()
        trimmed.backbone.conv1.conv.weight.abs_().neg_()
        trimmed.backbone.conv1.conv.bias.fill_(2.0)
        for branch in trimmed.backbone.parallel1.branches:
            branch.conv1.conv.weight.abs_()
    full = text_network(blocks)
    full.load_state_dict(trimmed.state_dict())
    full.stem.padding_margin = None
    ids = torch.randint(2, 40, (5, 30))
    for row, length in enumerate((3, 9, 1, 6, 9)):
        ids[row, length:] = 0
    for network in (trimmed, full):
        network.train()
        torch.nn.functional.cross_entropy(network(ids), torch.tensor([0, 1, 2, 0, 1])).backward()
    torch.testing.assert_close(trimmed(ids), full(ids))
    for (name, a), b in zip(trimmed.named_parameters(), full.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=f"gradient of {name}")
