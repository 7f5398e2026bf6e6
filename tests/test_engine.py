import math

import pytest
import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook

from cnncli.data.sample import Sample
from cnncli.modalities.text import TextModality, TextOptions
from cnncli.nn.model import Mix, network_for
from cnncli.recipe.config import load_config
from cnncli.recipe.schema import Config, TrainConfig
from cnncli.training.engine import draw_mix, fit, training_step
from cnncli.training.optim import build_schedule
from cnncli.training.train import prepare


@pytest.fixture
def prepared_config(tiny_image_folder, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{root: {tiny_image_folder}, image: {{size: [8, 8]}}, split: {{val_fraction: 0.25}}}}\n"
                      "model: {blocks: [{conv: {channels: 4, batch_norm: true}}, {pool: {size: global}}]}\n"
                      "train: {epochs: 4, batch_size: 4, lr: 0.01}\n")
    return lambda *overrides: load_config(recipe, list(overrides))


def weights_after_training(config: Config):
    run = prepare(config)
    fit(run.network, run.modality, run.train, run.val, config.train, torch.device("cpu"))
    return torch.cat([p.detach().flatten() for p in run.network.parameters()])


def test_the_same_seed_gives_the_same_weights(prepared_config):
    first = weights_after_training(prepared_config("train.seed=1"))
    assert torch.equal(first, weights_after_training(prepared_config("train.seed=1")))
    assert not torch.equal(first, weights_after_training(prepared_config("train.seed=2")))


def test_keep_best_restores_the_best_validation_epoch(prepared_config):
    config = prepared_config("train.keep=best", "train.epochs=6")
    run = prepare(config)
    result = fit(run.network, run.modality, run.train, run.val, config.train, torch.device("cpu"))
    scores = [(r["val_accuracy"], -r["val_loss"]) for r in result.history]
    assert result.kept == "best" and result.kept_epoch == scores.index(max(scores)) + 1
    run.network.eval()
    with torch.no_grad():
        accuracy = (run.network(run.val.inputs).argmax(1) == run.val.targets).float().mean().item()
    assert accuracy == pytest.approx(result.history[result.kept_epoch - 1]["val_accuracy"], abs=1e-4)


def test_early_stopping_ends_a_run_that_stops_improving(prepared_config):
    config = prepared_config("train.lr=1e-12", "train.early_stopping=2", "train.epochs=20")
    run = prepare(config)
    result = fit(run.network, run.modality, run.train, run.val, config.train, torch.device("cpu"))
    assert result.stopped_early and len(result.history) == 3


def test_steps_override_epochs(prepared_config):
    config = prepared_config("train.steps=5")
    run = prepare(config)
    result = fit(run.network, run.modality, run.train, run.val, config.train, torch.device("cpu"))
    assert result.history[-1]["step"] == 5


def learning_rates(train: TrainConfig, total_steps: int, steps: list[int]) -> list[float]:
    """The learning rate the schedule named in `train` gives at each of `steps`."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=train.lr)
    schedule, rates = build_schedule(optimizer, train, total_steps), {}
    for step in range(max(steps) + 1):
        rates[step] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        schedule.step()
    return [rates[step] for step in steps]


def test_exponential_schedule_is_the_lectures_formula():
    train = TrainConfig(lr=0.02, lr_min=0.0001, schedule="exponential", decay_steps=2000)
    steps = [0, 2000, 9000]
    assert learning_rates(train, 10_000, steps) == pytest.approx(
        [0.0001 + (0.02 - 0.0001) * math.exp(-step / 2000) for step in steps])


def test_cosine_schedule_ends_at_its_floor():
    train = TrainConfig(lr=0.1, lr_min=0.001, schedule="cosine")
    assert learning_rates(train, 100, [0, 50, 100]) == pytest.approx([0.1, 0.0505, 0.001])


def test_constant_schedule_keeps_the_rate():
    assert learning_rates(TrainConfig(lr=0.01, schedule="constant"), 10, [0, 5, 9]) == pytest.approx([0.01] * 3)


def test_lookahead_pulls_the_network_back_to_its_slow_weights_every_five_steps():
    from torch import nn

    from cnncli.training.averaging import Lookahead

    network = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    start = {name: value.clone() for name, value in network.state_dict().items()}
    lookahead = Lookahead(network)
    with torch.no_grad():
        for value in network.parameters():
            value.add_(1.0)
        moved = {name: value.clone() for name, value in network.state_dict().items()}
        lookahead.update(network, 4, 10)  # not a fifth step: nothing happens
        assert all(torch.equal(network.state_dict()[name], moved[name]) for name in moved)
        lookahead.update(network, 5, 10)  # halfway: the slow weights keep 0.95^5 x 0.5^3 of themselves
    decay = 0.95 ** 5 * 0.5 ** 3
    for name, value in network.state_dict().items():
        if value.is_floating_point():
            expected = decay * start[name] + (1 - decay) * moved[name]
            assert torch.allclose(value, expected) and torch.allclose(lookahead.slow[name], expected), name
    assert network.state_dict()["1.num_batches_tracked"] == start["1.num_batches_tracked"]  # counts are not averaged


def test_ema_keeps_the_moving_average_of_the_weights(prepared_config):
    """With train.ema the kept network is the average of the steps' weights, not the last step's:
    replaying the same run without it and averaging by hand must give the same numbers."""
    decay = 0.5
    config = prepared_config("train.keep=last", "train.epochs=2", f"train.ema={decay}")
    run = prepare(config)
    fit(run.network, run.modality, run.train, run.val, config.train, torch.device("cpu"))
    averaged = run.network.state_dict()

    plain = prepared_config("train.keep=last", "train.epochs=2")
    replay = prepare(plain)
    by_hand: dict[str, torch.Tensor] = {}

    def record_step():
        for name, value in replay.network.state_dict().items():
            if not value.is_floating_point():
                by_hand[name] = value.clone()
            elif name not in by_hand:
                by_hand[name] = value.clone()
            else:
                by_hand[name] = decay * by_hand[name] + (1 - decay) * value

    handle = register_optimizer_step_post_hook(lambda optimizer, args, kwargs: record_step())
    try:
        fit(replay.network, replay.modality, replay.train, replay.val, plain.train, torch.device("cpu"))
    finally:
        handle.remove()
    for name, value in averaged.items():
        if value.is_floating_point():
            assert torch.allclose(value, by_hand[name], atol=1e-6), name
    last = replay.network.state_dict()
    assert any(not torch.allclose(averaged[n], last[n]) for n in last if last[n].is_floating_point())


# -- train.mixup: batches blended after the stem, labels blended alike, every draw seeded ----------


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
    mixed = weights_after_training(prepared_config("train.mixup=0.4", "train.seed=1", "train.epochs=2"))
    assert torch.equal(mixed, weights_after_training(prepared_config("train.mixup=0.4", "train.seed=1", "train.epochs=2")))
    assert not torch.equal(mixed, weights_after_training(prepared_config("train.seed=1", "train.epochs=2")))


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
