"""train.low_res_scale / low_res_share: the first steps see scaled-down pictures, the rest and
every evaluation the pictures as they are; refused for networks that need their size and for
data that are not pictures; and a budget counts the cheaper steps (on a fake clock)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_image_recipe
from test_budget import FakeClock, a_loop, simulate

from cnncli.errors import CnncliError
from cnncli.modalities.image import ImageModality, ImageOptions
from cnncli.nn.model import network_for
from cnncli.recipe.config import load_config
from cnncli.training.budget import RunClock
from cnncli.training.encoding import TensorData
from cnncli.training.engine import fit
from cnncli.training.low_res import low_res_steps


def settings(tmp_path, **train):
    return load_config(tiny_image_recipe(tmp_path, batch_size=16, lr=0.01, **train))


def pictures(count=64, side=16):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 256, (count, 1, side, side), dtype=torch.uint8, generator=generator)
    return TensorData(inputs, torch.arange(count) % 2)


def test_the_first_share_of_steps_sees_scaled_pictures_and_evaluation_the_whole(tmp_path):
    config = settings(tmp_path, epochs=4, low_res_scale=0.5, low_res_share=0.5)
    modality = ImageModality(ImageOptions(size=[16, 16], color="grayscale"))
    network = network_for(modality, config.model, 2)
    seen = []
    network.register_forward_pre_hook(lambda module, args: seen.append((module.training, tuple(args[0].shape[-2:]))))
    fit(network, modality, pictures(), pictures(16), config.train, torch.device("cpu"))
    assert seen.pop(0) == (False, (8, 8))  # fit's check that the network takes the smaller pictures
    trained = [size for training, size in seen if training]
    assert len(trained) == 16 and low_res_steps(config.train, 16) == 8
    assert trained == [(8, 8)] * 8 + [(16, 16)] * 8
    assert {size for training, size in seen if not training} == {(16, 16)}  # validation: full size


def test_a_network_that_needs_its_input_size_is_refused_before_the_first_step(tmp_path):
    config = settings(tmp_path, low_res_scale=0.5)
    blocks = [{"conv": {"channels": 4, "kernel": 3}}, {"flatten": {}}, {"linear": {"features": 8}}]
    modality = ImageModality(ImageOptions(size=[16, 16], color="grayscale"))
    network = network_for(modality, blocks, 2)
    with pytest.raises(CnncliError, match=r"train.low_res_scale: 0.5 gives 8 x 8 pictures, which this network "
                                          r"cannot take .*global pool"):
        fit(network, modality, pictures(), None, config.train, torch.device("cpu"))


@pytest.mark.parametrize("data, train, message", [
    ({"modality": "audio"}, {"low_res_scale": 0.5}, "train.low_res_scale: scales pictures: images only "
                                                    r"\(data.modality is audio\)"),
    ({}, {"low_res_scale": 0.1}, "train.low_res_scale: must be from 0.25 to 1"),
    ({}, {"low_res_share": 1.0}, r"train.low_res_share: must be in \[0, 1\)"),
])
def test_low_res_settings_out_of_range_name_the_key(tmp_path, data, train, message):
    recipe = tiny_image_recipe(tmp_path, **train)
    recipe["data"].update(data)
    with pytest.raises(CnncliError, match=message):
        load_config(recipe)


def test_a_budget_counts_scaled_steps_at_their_own_pace_and_still_ends_in_time(tmp_path):
    """Scaled-down steps take a quarter of the time here: the run fits more steps in its two
    minutes than at full size, ends within them, and the schedule ends at its last step."""
    taken = {}
    for scale in (1.0, 0.5):
        clock = FakeClock()
        run = RunClock("2m", clock=clock)
        run.plan([1.0], final_rows=128)
        pace = run.pace(640, 64)
        loop = a_loop(tmp_path, pace, low_res_scale=scale, low_res_share=0.5)
        low = lambda step, loop=loop: step < low_res_steps(loop.settings, loop.total_steps)  # noqa: E731
        simulate(loop, pace, clock, lambda step: 0.025 if low(step) else 0.1, validation=0.0625, checkpoint=0.0625)
        spent = clock.now - run.started + run.ending_seconds(pace.step_seconds, 64)
        assert 0.93 * 120 <= spent <= 120, (scale, spent)
        assert loop.total_steps == loop.step and loop.schedule.total_steps == loop.total_steps
        taken[scale] = loop.step
    assert taken[0.5] > 1.4 * taken[1.0]  # half the steps at a quarter of the cost: about 1.5x as many fit


def test_a_budget_estimates_full_size_steps_from_scaled_ones_by_their_pixels(tmp_path):
    clock = FakeClock()
    run = RunClock("2m", clock=clock)
    pace = run.pace(640, 64)
    loop = a_loop(tmp_path, pace, low_res_scale=0.5, low_res_share=0.9)
    for _ in range(6):
        clock.now += 0.02
        loop.step += 1
        pace.stepped(loop)
    assert pace.mean_seconds(low=True) == pytest.approx(0.02)
    assert pace.step_seconds == pytest.approx(0.08)  # not yet measured: 0.02 / 0.5^2
