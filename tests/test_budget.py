"""train.budget (--budget): the arithmetic that fits a run to the time given, on a fake clock."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_image_recipe, write_two_class_images

from cnncli.errors import CnncliError
from cnncli.modalities.image import ImageModality, ImageOptions
from cnncli.nn.model import network_for
from cnncli.recipe.config import load_config
from cnncli.runtime.durations import format_duration, parse_duration
from cnncli.runtime.progress import Progress
from cnncli.training.budget import MARGIN_SHARE, WRITING_SECONDS, RunClock, steps_within
from cnncli.training.engine import Loop
from cnncli.training.train import train


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self):
        self.now = 1024.0  # sums of the binary fractions the tests add stay exact

    def __call__(self) -> float:
        return self.now


class Notes(Progress):
    def __init__(self):
        self.lines, self.left = [], []

    def note(self, message: str) -> None:
        self.lines.append(message)

    def time_left(self, seconds):
        self.left.append(seconds)


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("20m", 1200), ("1h30m", 5400), ("1.5h", 5400),
                                           ("45", 45), (" 2M ", 120), ("1h0m30s", 3630)])
def test_a_duration_is_read_in_hours_minutes_and_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "20x", "m", "0s", "-5m", "1m1h", "soon"])
def test_a_duration_that_is_none_is_one_line_naming_the_key(text):
    with pytest.raises(CnncliError, match="train.budget: "):
        parse_duration(text)


def test_a_duration_is_written_in_its_two_largest_units():
    assert [format_duration(s) for s in (42, 250, 3900, 0.2)] == ["42s", "4m10s", "1h05m", "1s"]


def test_a_budget_that_is_no_duration_is_refused_when_the_recipe_is_read(tmp_path):
    with pytest.raises(CnncliError, match="train.budget: must be a duration such as 90s, 20m or 1h30m"):
        load_config(tiny_image_recipe(tmp_path, budget="twenty minutes"))


def brute_steps(seconds, step, left, per_epoch, overhead) -> int:
    """The most steps that fit, by trying every count."""
    best = 0
    for steps in range(0, int(seconds / step) + 2):
        ends = 1 if steps <= left else 1 + -(-(steps - left) // per_epoch)
        if steps * step + ends * overhead <= seconds:
            best = steps
    return best


@pytest.mark.parametrize("seconds, step, left, per_epoch, overhead", [
    (60, 0.1, 10, 10, 1.0), (60, 0.1, 3, 10, 1.0), (5, 0.5, 100, 100, 0.0), (30, 0.2, 7, 40, 4.0),
    (10, 1.0, 5, 5, 20.0), (100, 0.01, 1, 1, 0.3), (0.5, 1.0, 5, 5, 0.1)])
def test_steps_within_is_the_most_steps_whose_epochs_and_their_ends_fit(seconds, step, left, per_epoch, overhead):
    assert steps_within(seconds, step, left, per_epoch, overhead) == brute_steps(seconds, step, left, per_epoch,
                                                                                 overhead)


def a_loop(tmp_path, pace, samples=640, **train_settings):
    """A real training loop (network, optimiser, schedule) for `samples` rows of 8 x 8 images."""
    config = load_config(tiny_image_recipe(tmp_path, batch_size=64, schedule="onecycle", lr=0.1,
                                           **train_settings))
    network = network_for(ImageModality(ImageOptions(size=[8, 8])), config.model, 2)
    return Loop(network, config.train, torch.device("cpu"), samples, pace=pace)


def simulate(loop, pace, clock: FakeClock, step_seconds, validation=1.0, checkpoint=0.5) -> None:
    """Drive `loop` through the engine's calls to its pace, time passing only on the fake clock:
    `step_seconds(step)` per step, then each epoch's validation and checkpoint."""
    epoch = 0
    while not loop.finished and epoch < loop.epochs:
        epoch += 1
        pace.epoch_started(loop, epoch)
        for _ in range(loop.steps_per_epoch):
            clock.now += step_seconds(loop.step)
            loop.optimizer.step()  # no gradients: nothing moves, but the schedule sees a step taken
            loop.step += 1
            pace.stepped(loop)
            if loop.finished:
                break
        clock.now += validation
        pace.validated(64)
        clock.now += checkpoint
    pace.finished()


@pytest.mark.parametrize("name, step_seconds", [("steady", lambda step: 0.1),
                                                ("slowing down", lambda step: 0.1 if step < 200 else 0.25),
                                                ("speeding up", lambda step: 0.3 if step < 50 else 0.1)])
def test_one_network_fills_its_budget_and_ends_before_it(tmp_path, name, step_seconds):
    clock = FakeClock()
    run = RunClock("2m", clock=clock)
    run.plan([1.0], final_rows=128)
    pace = run.pace(640, 64)
    loop = a_loop(tmp_path, pace)
    simulate(loop, pace, clock, step_seconds)
    ending = run.ending_seconds(pace.step_seconds, 64)
    spent = clock.now - run.started + ending
    assert 0.93 * 120 <= spent <= 120, (name, spent)
    assert loop.total_steps == loop.step and loop.epochs > 10  # the recipe's 1 epoch became what fits


def test_the_schedule_is_refitted_to_the_plan_and_ends_at_its_last_step(tmp_path):
    clock = FakeClock()
    run = RunClock("1m", clock=clock)
    pace = run.pace(640, 64)
    loop = a_loop(tmp_path, pace)
    simulate(loop, pace, clock, lambda step: 0.1)
    assert loop.schedule.total_steps == loop.total_steps  # one cycle over the steps the budget allowed
    assert loop.optimizer.param_groups[0]["lr"] < 0.001


def test_trials_and_members_share_the_budget_by_their_weights(tmp_path):
    clock = FakeClock()
    run = RunClock("10m", clock=clock)
    run.plan([0.25, 0.25, 1.0], final_rows=0)
    spans = []
    for _ in range(3):
        started = clock.now
        pace = run.pace(640, 64)
        simulate(a_loop(tmp_path, pace), pace, clock, lambda step: 0.1, validation=0.2, checkpoint=0.1)
        spans.append(clock.now - started)
    usable = 600 * (1 - MARGIN_SHARE) - run.ending_seconds()
    assert spans[0] == pytest.approx(usable / 6, rel=0.05) and spans[1] == pytest.approx(usable / 6, rel=0.05)
    assert spans[2] == pytest.approx(usable * 4 / 6, rel=0.05)
    assert clock.now - run.started + run.ending_seconds() <= 600


def test_without_a_budget_the_time_left_is_estimated_and_the_plan_kept(tmp_path):
    clock, notes = FakeClock(), Notes()
    run = RunClock(None, notes, clock=clock)
    run.plan([1.0, 1.0], final_rows=0)
    pace = run.pace(640, 64)
    loop = a_loop(tmp_path, pace, epochs=4)
    simulate(loop, pace, clock, lambda step: 0.125, validation=0.5, checkpoint=0.5)
    assert loop.epochs == 4 and loop.step == 40  # the recipe's epochs
    # Each network: 4 epochs of 10 steps of 0.125 s, each ending in 1 s of validation and checkpoint
    # (9 s); two networks, then the end of the run: the plots and the bundle's checkpoint.
    ending = WRITING_SECONDS + 0.5
    estimate = next(line for line in notes.lines if line.startswith("estimate:"))
    after_first_epoch = 2.25
    assert estimate == (f"estimate: the whole run takes about {format_duration(9 + 9 + ending)} "
                        f"({format_duration(9 + 9 + ending - after_first_epoch)} from now); "
                        "train.budget (--budget) sets it")
    assert notes.left[-1] == 1 + 9 + ending  # at its last step: its epoch's end, the other network, the ending


def test_a_run_without_a_budget_says_how_long_it_will_take_after_its_first_epoch(tmp_path):
    images = write_two_class_images(tmp_path / "images")
    notes = Notes()
    train(load_config(tiny_image_recipe(images, epochs=3)), tmp_path / "run", notes)
    assert any(line.startswith("estimate: the whole run takes about ") for line in notes.lines)
    assert notes.left and notes.left[-1] is not None


def test_when_augment_auto_gives_up_its_trials_time_goes_to_the_network(tmp_path):
    clock = FakeClock()
    run = RunClock("10m", clock=clock)
    run.plan([0.2, 0.2, 0.2, 0.2, 1.0], final_rows=0)
    first = run.pace(640, 64)
    simulate(a_loop(tmp_path, first), first, clock, lambda step: 0.1, validation=0.2, checkpoint=0.1)
    run.skip(3)  # the other three candidates are not tried
    assert run.weights == [1.0]
    final = run.pace(640, 64)
    assert final.deadline == pytest.approx(run.deadline - run.ending_seconds())


def test_a_trial_after_the_first_takes_no_more_steps_than_the_first_had(tmp_path):
    clock = FakeClock()
    run = RunClock("10m", clock=clock)
    pace = run.pace(640, 64, most_steps=25)  # plenty of time, but the first trial took 25 steps
    loop = a_loop(tmp_path, pace, steps=25)
    simulate(loop, pace, clock, lambda step: 0.1)
    assert loop.step == 25 and loop.total_steps == 25


class SteppingClock(FakeClock):
    """Each reading comes `per_reading` seconds after the one before (a backbone's timed steps
    lie between two readings)."""

    def __init__(self, per_reading: float):
        super().__init__()
        self.per_reading = per_reading

    def __call__(self) -> float:
        self.now += self.per_reading
        return self.now


@pytest.mark.parametrize("step_seconds, auto, fits", [(0.5, False, True), (0.75, False, False),
                                                     (0.25, True, True), (0.375, True, False)])
def test_a_budget_takes_a_backbone_whose_timed_steps_give_it_the_least_epochs(tmp_path, step_seconds, auto, fits):
    from cnncli.training.budget import MIN_EPOCHS, TIMED_STEPS, BackboneFit

    recipe = tiny_image_recipe(tmp_path, budget="1m", batch_size=100)
    config = load_config({**recipe, "augment": "auto", "train": {**recipe["train"], "auto_share": 0.25}} if auto
                         else recipe)
    modality = ImageModality(ImageOptions(size=[8, 8]))
    # 1,000 rows in batches of 100: 10 steps an epoch, MIN_EPOCHS of them in the member's share of 60 s:
    # all of it, or with four augment candidates trained for a quarter of a member each, half
    share = 0.5 if auto else 1.0
    assert len(modality.regularisation_grid(config)) == 4
    assert 10 * MIN_EPOCHS * step_seconds <= 60 * share if fits else 10 * MIN_EPOCHS * step_seconds > 60 * share
    clock = SteppingClock(step_seconds * TIMED_STEPS)  # the reading after the timed steps comes that much later
    fit = BackboneFit(config, modality, 1000, torch.device("cpu"), clock)
    assert fit.member_share == pytest.approx(share)
    assert fit([{"conv": {"channels": 2}}]) is fits
    unbounded = load_config(tiny_image_recipe(tmp_path, batch_size=100))
    assert BackboneFit(unbounded, modality, 1000, torch.device("cpu"), clock)([]) is True  # no budget: all fit


def test_a_budget_too_short_for_the_smallest_network_compares_no_augment_settings(tmp_path):
    from types import SimpleNamespace

    from cnncli.training import autotune
    from cnncli.training.budget import BackboneFit, network_weights

    recipe = tiny_image_recipe(tmp_path, budget="1m", batch_size=100)
    config = load_config({**recipe, "augment": "auto"})
    modality = ImageModality(ImageOptions(size=[8, 8]))
    slow = BackboneFit(config, modality, 1000, torch.device("cpu"), SteppingClock(2.0))  # 1 s a step: 100 s
    assert not slow([{"conv": {"channels": 2}}]) and not slow([{"conv": {"channels": 1}}]) and slow.none_fit
    fast = BackboneFit(config, modality, 1000, torch.device("cpu"), SteppingClock(0.25))
    assert fast([{"conv": {"channels": 2}}]) and not fast.none_fit
    run = SimpleNamespace(config=config, modality=modality, short_budget=slow.none_fit, val=[0], folds=None,
                          clock=RunClock("1m"))
    assert network_weights(run) == [1.0]  # the final network has the whole budget
    notes = Notes()
    choice = autotune.choose(run, lambda run, index: ([], [0]), notes)
    assert choice.record["chosen"] == "flip" and choice.record["reason"] == "train.budget too short to compare settings"
    assert "too short to compare settings (the smallest network would not train 10 epochs" in notes.lines[-1]
    run.short_budget, run.config = False, config
    assert network_weights(run) == [1.0] * 4  # four trials (train.auto_share 1: the winner's is the network)
