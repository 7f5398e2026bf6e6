"""train.mixup: batches blended after the stem, labels blended alike, every draw seeded."""

import pytest
import torch
import torch.nn.functional as F

from cnncli.config import load_config
from cnncli.data.sample import Sample
from cnncli.engine import draw_mix, fit, training_step
from cnncli.model import Mix, network_for
from cnncli.modalities.text import TextModality, TextOptions
from cnncli.train import prepare


@pytest.fixture
def prepared_config(tiny_image_folder, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{root: {tiny_image_folder}, image: {{size: [8, 8]}}, split: {{val_fraction: 0.25}}}}\n"
                      "model: {blocks: [{conv: {channels: 4, batch_norm: true}}, {pool: {size: global}}]}\n"
                      "train: {epochs: 2, batch_size: 4, lr: 0.01}\n")
    return lambda *overrides: load_config(recipe, list(overrides))


def trained_weights(config) -> torch.Tensor:
    run = prepare(config)
    fit(run.network, run.modality, run.train, run.val, config.train, torch.device("cpu"))
    return torch.cat([p.detach().flatten() for p in run.network.parameters()])


def test_the_draw_is_a_shuffle_and_a_weight_fixed_by_the_stream():
    first = draw_mix(16, 0.4, torch.Generator().manual_seed(3))
    again = draw_mix(16, 0.4, torch.Generator().manual_seed(3))
    other = draw_mix(16, 0.4, torch.Generator().manual_seed(4))
    assert sorted(first.order.tolist()) == list(range(16)) and 0 <= first.weight <= 1
    assert torch.equal(first.order, again.order) and first.weight == again.weight
    assert not torch.equal(first.order, other.order) and first.weight != other.weight


def test_a_small_alpha_draws_weights_near_zero_or_one():
    """Beta(alpha, alpha): a small alpha mostly keeps one row of the pair, a large one blends halves."""
    generator = torch.Generator().manual_seed(0)
    small = torch.tensor([draw_mix(2, 0.1, generator).weight for _ in range(400)])
    large = torch.tensor([draw_mix(2, 50.0, generator).weight for _ in range(400)])
    assert ((small - 0.5).abs() > 0.4).float().mean() > 0.6
    assert ((large - 0.5).abs() < 0.1).float().mean() > 0.8


def test_the_network_blends_the_stems_pictures(prepared_config):
    network = prepare(prepared_config()).network.eval()
    inputs = prepare(prepared_config()).train.inputs[:6]
    order, weight = torch.tensor([5, 4, 3, 2, 1, 0]), 0.3
    with torch.no_grad():
        pictures = network.stem(inputs)
        by_hand = network.classifier(network.backbone(weight * pictures + (1 - weight) * pictures[order]))
        assert torch.allclose(network(inputs, mix=Mix(order, weight)), by_hand, atol=1e-6)
        assert torch.allclose(network(inputs, mix=Mix(order, 1.0)), network(inputs), atol=1e-6)


def test_the_loss_is_the_same_blend_of_both_rows_losses(prepared_config):
    config = prepared_config("train.mixup=0.4")
    run = prepare(config)
    rows = torch.cat([(run.train.targets == label).nonzero().flatten()[:4] for label in (0, 1)])
    inputs, targets = run.train.inputs[rows], run.train.targets[rows]
    generator = torch.Generator().manual_seed(7)
    replay = torch.Generator().manual_seed(7)
    optimizer = torch.optim.SGD(run.network.parameters(), lr=0.0)
    loss, logits = training_step(run.network, run.modality, inputs, targets, optimizer, config.train, generator)
    run.modality.augment(inputs, replay)
    mix = draw_mix(len(targets), 0.4, replay)
    expected = mix.weight * F.cross_entropy(logits, targets) + (1 - mix.weight) * F.cross_entropy(logits, targets[mix.order])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert not torch.equal(targets, targets[mix.order])  # the pairs really cross labels here


def test_mixup_training_is_seeded_and_is_not_plain_training(prepared_config):
    mixed = trained_weights(prepared_config("train.mixup=0.4", "train.seed=1"))
    assert torch.equal(mixed, trained_weights(prepared_config("train.mixup=0.4", "train.seed=1")))
    assert not torch.equal(mixed, trained_weights(prepared_config("train.seed=1")))


def test_text_blends_token_embeddings_not_token_ids():
    modality = TextModality(TextOptions(max_length=5, embedding_dim=4))
    samples = [Sample(f"s{i}", label, text) for i, (label, text) in
               enumerate([("1", "a good film"), ("0", "a bad film"), ("1", "good good plot"), ("0", "bad plot")])]
    modality.fit(samples)
    network = network_for(modality, [{"conv": {"channels": 3, "kernel": [2, "full"]}}, {"pool": {"size": "global"}}], 2)
    inputs = modality.encode_many(samples).tensor
    logits = network(inputs, mix=Mix(torch.tensor([1, 0, 3, 2]), 0.5))
    pictures = network.stem(inputs)
    blended = 0.5 * pictures + 0.5 * pictures[torch.tensor([1, 0, 3, 2])]
    assert torch.allclose(logits, network.classifier(network.backbone(blended)), atol=1e-6)
    F.cross_entropy(logits, torch.tensor([1, 0, 1, 0])).backward()  # gradients reach the embeddings
    assert network.stem.tuned.weight.grad.abs().sum() > 0
