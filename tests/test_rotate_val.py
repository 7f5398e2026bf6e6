"""train.rotate_val: a cross-validation ensemble. Member i validates on fold i of the training
data and trains on the others, so the ensemble learns from all of it, and the validation figure
is out-of-fold: every row is scored by a member that never trained on it."""

from collections import Counter

import torch

from cnncli.bundle.io import load_bundle, read_info
from cnncli.data.sample import Sample
from cnncli.data.split import stratified_folds
from cnncli.nn.calibration import fit_temperature
from cnncli.recipe.config import load_config
from cnncli.training.train import member_data, out_of_fold_probabilities, prepare, train


def test_folds_are_stratified_seeded_and_balanced():
    samples = [Sample(locator=f"s{i}", label="ab"[i % 3 == 0], position=i) for i in range(60)]
    folds = stratified_folds(samples, 4, seed=1)
    assert folds == stratified_folds(samples, 4, seed=1) != stratified_folds(samples, 4, seed=2)
    per_fold = Counter((fold, sample.label) for fold, sample in zip(folds, samples))
    assert {per_fold[fold, "a"] for fold in range(4)} == {10} and {per_fold[fold, "b"] for fold in range(4)} == {5}


def recipe(tiny_image_folder, tmp_path, *overrides):
    path = tmp_path / "r.yaml"
    path.write_text(
        f"data: {{root: {tiny_image_folder}, image: {{size: [8, 8]}}, split: {{val_fraction: 0.25, test_fraction: 0.2}}}}\n"
        "model: {blocks: [{conv: {channels: 4}}, {pool: {size: global}}]}\n"
        "train: {epochs: 2, batch_size: 4, lr: 0.01, keep: best, ensemble: 3, rotate_val: true}\n")
    return load_config(path, list(overrides))


def test_each_member_validates_on_its_own_fold_and_trains_on_the_rest(tiny_image_folder, tmp_path):
    run = prepare(recipe(tiny_image_folder, tmp_path))
    assert len(run.val) == 0 and len(run.train) == 20  # 24 images, 4 to test; validation rotates
    rows = {tuple(x.flatten().tolist()): i for i, x in enumerate(run.train.inputs)}
    seen_val = set()
    for index in range(3):
        member_train, member_val = member_data(run, index)
        trained = {rows[tuple(x.flatten().tolist())] for x in member_train.inputs}
        held = {rows[tuple(x.flatten().tolist())] for x in member_val.inputs}
        assert held and not trained & held and trained | held == set(range(20))
        assert not held & seen_val  # members 0-2 hold out different folds
        seen_val |= held
    fourth, _ = member_data(run, 4)  # four folds of 0.25: member 4 reuses fold 0
    assert torch.equal(fourth.inputs, member_data(run, 0)[0].inputs)


def test_the_validation_figure_is_out_of_fold(tiny_image_folder, tmp_path):
    config = recipe(tiny_image_folder, tmp_path)
    outcome = train(config, tmp_path / "bundle")
    info = read_info(tmp_path / "bundle")
    assert info["members"] == 3 and info["split"]["val_rule"].startswith("rotating")
    run = prepare(config)
    held = sum(len(member_data(run, index)[1]) for index in range(3))
    assert outcome.metrics["val"]["n"] == held < 20  # three of the four folds were held out
    assert outcome.metrics["val"]["out_of_fold"] and "out_of_fold" not in outcome.metrics["test"]
    assert [r["member"] for r in outcome.history] == [1, 1, 2, 2, 3, 3]
    # the figure is that of each fold's own member, not the ensemble's (which trained on it)
    members = load_bundle(tmp_path / "bundle").network.members
    probabilities, targets = out_of_fold_probabilities(run, members)
    with torch.no_grad():
        correct = sum(int((member_data(run, i)[1].targets == members[i](member_data(run, i)[1].inputs).argmax(1)).sum())
                      for i in range(3))
    assert len(targets) == held and round(correct / held, 4) == round(outcome.metrics["val"]["accuracy"], 4)
    assert round(float((probabilities.argmax(1) == targets).float().mean()), 4) == round(correct / held, 4)
    calibration = info["calibration"]  # fitted on the same out-of-fold rows
    assert calibration["fitted_on"] == "out_of_fold" and calibration["n"] == held
    assert calibration["temperature"] == round(fit_temperature(probabilities.log(), targets), 4)
