"""data.split.group_regex: validation (and a test fraction) holds out whole groups, e.g. speakers,
so that it measures inputs from groups the network never trained on."""

from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

from cnncli.data.sample import Sample
from cnncli.data.split import file_groups, group_folds, group_fraction, load_splits
from cnncli.errors import CnncliError
from cnncli.modalities.image import ImageModality
from cnncli.recipe.config import load_config
from cnncli.training.train import member_data, prepare

SPEAKERS = ("ann", "bob", "cat", "dan", "eve")


def samples_of(sizes: dict[str, int]) -> list[Sample]:
    return [Sample(locator=f"/data/{i % 2}_{group}_{i}.wav", label=str(i % 2), position=0)
            for group, size in sizes.items() for i in range(size)]


def test_a_group_fraction_holds_out_whole_groups_chosen_by_the_seed():
    samples = samples_of({name: 10 for name in SPEAKERS})
    groups = file_groups(samples, r"_([a-z]+)_")
    kept, held = group_fraction(samples, groups, 0.3, seed=1)
    kept_groups, held_groups = ({s.locator.split("_")[1] for s in part} for part in (kept, held))
    assert not kept_groups & held_groups and kept_groups | held_groups == set(SPEAKERS)
    assert len(held) == 20 and len(kept) == 30  # groups of 10 until 30% is reached: two
    choices = {frozenset(s.locator for s in group_fraction(samples, groups, 0.3, seed)[1]) for seed in range(6)}
    assert len(choices) > 1  # the seed picks which
    assert group_fraction(samples, groups, 0.3, seed=1) == (kept, held)


def test_a_group_fraction_takes_at_least_one_group_and_never_all():
    samples = samples_of({"ann": 40, "bob": 40, "cat": 40})
    groups = file_groups(samples, r"_([a-z]+)_")
    assert len(group_fraction(samples, groups, 0.01, seed=0)[1]) == 40
    kept, held = group_fraction(samples, groups, 0.99, seed=0)
    assert len(kept) == 40 and len(held) == 80


def test_folds_keep_each_group_whole_and_balance_the_sizes():
    samples = samples_of({"ann": 50, "bob": 30, "cat": 20, "dan": 20, "eve": 10, "fay": 10})
    groups = file_groups(samples, r"_([a-z]+)_")
    folds = group_folds(groups, 3, seed=1)
    fold_of = defaultdict(set)
    for group, fold in zip(groups, folds):
        fold_of[group].add(fold)
    assert all(len(found) == 1 for found in fold_of.values())
    assert sorted(Counter(folds).values()) == [40, 50, 50]  # largest first, each to the smallest fold
    assert set(group_folds(groups, 10, seed=1)) == set(range(6))  # one fold per group when there are fewer


def test_a_name_without_a_group_and_a_single_group_are_named():
    samples = samples_of({"ann": 3}) + [Sample(locator="/data/odd.wav", label="1", position=0)]
    with pytest.raises(CnncliError, match=r"/data/odd\.wav: data\.split\.group_regex"):
        file_groups(samples, r"_([a-z]+)_")
    with pytest.raises(CnncliError, match="data.split.group_regex: not a valid regular expression"):
        file_groups(samples, r"_([a-z+_")
    one = samples_of({"ann": 4})
    with pytest.raises(CnncliError, match="found one group .'ann'.; holding out whole groups needs at least two"):
        group_fraction(one, file_groups(one, r"_([a-z]+)_"), 0.2, seed=0)


@pytest.fixture
def speaker_images(tmp_path):
    """Class folders of 8x8 PNGs named label_speaker_index: five speakers of 4, 4, 4, 6 and 6 images."""
    generator = np.random.default_rng(0)
    for label, side in (("left", slice(0, 4)), ("right", slice(4, 8))):
        (tmp_path / "images" / label).mkdir(parents=True)
        for speaker, count in zip(SPEAKERS, (2, 2, 2, 3, 3)):
            for index in range(count):
                pixels = generator.integers(0, 60, size=(8, 8)).astype("uint8")
                pixels[:, side] += 150
                Image.fromarray(pixels).save(tmp_path / "images" / label / f"{label}_{speaker}_{index}.png")
    return tmp_path / "images"


def recipe(folder, tmp_path, *overrides):
    path = tmp_path / "r.yaml"
    path.write_text(
        f"data: {{root: {folder}, image: {{size: [8, 8]}}, split: {{test_pattern: '_eve_', val_fraction: 0.2, "
        "group_regex: '_([a-z]+)_'}}\n"
        "model: {blocks: [{conv: {channels: 4}}, {pool: {size: global}}]}\n"
        "train: {epochs: 1, batch_size: 4, lr: 0.01}\n")
    return load_config(path, list(overrides))


def speakers(samples) -> set[str]:
    return {sample.locator.rsplit("/", 1)[-1].split("_")[1] for sample in samples}


def test_validation_holds_out_speakers_the_training_part_lacks(speaker_images, tmp_path):
    splits = load_splits(recipe(speaker_images, tmp_path), ImageModality)
    assert speakers(splits.test) == {"eve"}
    assert splits.val and not speakers(splits.val) & speakers(splits.train)
    assert splits.record["val_groups"] == sorted(speakers(splits.val))
    assert "whole groups" in splits.record["val_rule"]
    plain = load_splits(recipe(speaker_images, tmp_path, "data.split.group_regex=null"), ImageModality)
    assert speakers(plain.val) & speakers(plain.train)  # stratified by label, every speaker on both sides


def test_each_rotating_member_validates_on_speakers_it_never_trained_on(speaker_images, tmp_path):
    run = prepare(recipe(speaker_images, tmp_path, "train.rotate_val=true", "train.ensemble=4"))
    assert run.splits.fold_count == 4  # four speakers left after eve: a fold each, though 0.2 asks for five
    groups = file_groups(run.splits.train, r"_([a-z]+)_")
    rows = {tuple(x.flatten().tolist()): group for x, group in zip(run.train.inputs, groups)}
    held_by = []
    for index in range(4):
        member_train, member_val = member_data(run, index)
        trained = {rows[tuple(x.flatten().tolist())] for x in member_train.inputs}
        held = {rows[tuple(x.flatten().tolist())] for x in member_val.inputs}
        assert len(held) == 1 and not trained & held
        held_by.append(held.pop())
    assert sorted(held_by) == ["ann", "bob", "cat", "dan"]
