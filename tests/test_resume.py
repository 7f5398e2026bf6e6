"""train --resume: a run interrupted after any epoch ends with the weights of a run that never stopped."""

import json

import pytest
import torch
from typer.testing import CliRunner

from cnncli.bundle.io import load_bundle, read_info, read_resume_state
from cnncli.cli.app import app
from cnncli.errors import CnncliError
from cnncli.recipe.config import load_config
from cnncli.runtime.progress import Progress
from cnncli.training.train import train


class Crash(Exception):
    pass


class CrashAtNote(Progress):
    """Fails when the n-th epoch line is about to be logged, i.e. before that epoch's checkpoint."""

    def __init__(self, at: int):
        self.at, self.seen = at, 0

    def epoch(self, record: dict, members: int = 1) -> None:
        self.seen += 1
        if self.seen == self.at:
            raise Crash(str(record))


@pytest.fixture
def recipe(tiny_image_folder, tmp_path):
    """Every random stream in play: dropout, shift/flip augmentation, batch order; a schedule,
    Adam's moments, a weight average and the best epoch on validation."""
    path = tmp_path / "r.yaml"
    path.write_text(
        f"data: {{root: {tiny_image_folder}, image: {{size: [8, 8]}}, split: {{val_fraction: 0.25, test_fraction: 0.2}}}}\n"
        "model: {blocks: [{conv: {channels: 4, batch_norm: true}}, {dropout: 0.3}, {pool: {size: global}}]}\n"
        "train: {epochs: 4, batch_size: 4, lr: 0.01, schedule: cosine, keep: best, ema: 0.9}\n"
        "augment: {shift: 0.1, hflip: true}\n")
    return path


def weights(bundle) -> dict[str, torch.Tensor]:
    return load_bundle(bundle).network.state_dict()


@pytest.mark.parametrize("overrides, crash_at", [([], 3), (["train.ensemble=2"], 4), (["train.ensemble=2"], 5),
                                                (["train.ensemble=2", "train.rotate_val=true"], 5),
                                                (["train.ensemble=2"], 6), (["train.precision=fp16"], 3),
                                                (["train.ema=null", "train.lookahead=true"], 3)])
def test_a_resumed_run_ends_exactly_like_an_uninterrupted_one(recipe, tmp_path, overrides, crash_at):
    config = load_config(recipe, overrides)
    whole = train(config, tmp_path / "whole")
    with pytest.raises(Crash):
        train(config, tmp_path / "cut", CrashAtNote(crash_at))
    assert read_info(tmp_path / "cut")["status"] == "partial"
    saved, state = read_resume_state(tmp_path / "cut")
    assert len(state.history) == crash_at - 1
    resumed = train(saved, tmp_path / "cut", resume=state)
    for (name, ours), theirs in zip(weights(tmp_path / "cut").items(), weights(tmp_path / "whole").values()):
        assert torch.equal(ours, theirs), name
    assert resumed.metrics == whole.metrics
    log = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r.get("member")) for r in log] == [(r["epoch"], r.get("member")) for r in whole.history]
    assert not (tmp_path / "cut" / "resume.json").exists()  # a finished bundle carries no training state


def test_resume_refuses_a_finished_run_and_recipe_changes(recipe, tmp_path):
    config = load_config(recipe)
    train(config, tmp_path / "done")
    with pytest.raises(CnncliError, match="nothing to resume"):
        read_resume_state(tmp_path / "done")
    with pytest.raises(Crash):
        train(config, tmp_path / "cut", CrashAtNote(2))
    with pytest.raises(CnncliError, match="train.epochs: cannot change"):
        read_resume_state(tmp_path / "cut", ["train.epochs=9"])
    config, _ = read_resume_state(tmp_path / "cut", ["train.threads=1"])
    assert config.train.threads == 1


def test_cli_resume_continues_the_bundle_in_place(recipe, tmp_path):
    with pytest.raises(Crash):
        train(load_config(recipe), tmp_path / "cut", CrashAtNote(3))
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "cut"), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bundle"] == str(tmp_path / "cut")
    assert read_info(tmp_path / "cut")["status"] == "complete"
    refused = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "cut")])
    assert refused.exit_code == 2 and "nothing to resume" in refused.output


def test_a_partial_bundle_from_before_the_scaling_keys_still_resumes(recipe, tmp_path):
    with pytest.raises(Crash):
        train(load_config(recipe), tmp_path / "cut", CrashAtNote(2))
    model = tmp_path / "cut" / "model.json"
    info = json.loads(model.read_text())
    for section, key in (("train", "precision"), ("train", "sync_batch_norm"), ("data", "in_memory")):
        del info["recipe"][section][key]
    model.write_text(json.dumps(info))
    config, _ = read_resume_state(tmp_path / "cut")
    assert config.train.precision == "auto"
    with pytest.raises(CnncliError, match="train.precision: cannot change"):
        read_resume_state(tmp_path / "cut", ["train.precision=fp16"])
