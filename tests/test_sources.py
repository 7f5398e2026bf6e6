import json

import numpy as np
import pytest
from conftest import write_idx

from cnncli.data.sample import Sample
from cnncli.data.schema import DataConfig, SplitConfig
from cnncli.data.sources import read_lines, read_source, read_sources
from cnncli.data.split import load_splits, split_test, stratified_fraction
from cnncli.errors import CnncliError
from cnncli.modalities.audio import AudioModality
from cnncli.modalities.image import ImageModality
from cnncli.recipe.config import load_config


def test_class_folders_label_by_folder_name(tiny_image_folder):
    samples = read_source(tiny_image_folder, DataConfig(), ImageModality)
    assert len(samples) == 24
    assert {s.label for s in samples} == {"left", "right"}
    assert samples[0].locator.endswith("left/left00.png")


def test_files_labelled_by_regex(tmp_path):
    for name in ("7_jackson_0.wav", "3_theo_12.wav", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    samples = read_source(tmp_path, DataConfig(label_regex=r"^(\d)_"), AudioModality)
    assert [(s.label, s.locator.rsplit("/", 1)[1]) for s in samples] == [("3", "3_theo_12.wav"), ("7", "7_jackson_0.wav")]


def test_regex_that_does_not_match_names_the_file(tmp_path):
    (tmp_path / "recording.wav").write_bytes(b"x")
    with pytest.raises(CnncliError, match="recording.wav: data.label_regex"):
        read_source(tmp_path, DataConfig(label_regex=r"^(\d)_"), AudioModality)


@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t")])
def test_table_manifest_paths_are_relative_to_it(tmp_path, suffix, delimiter):
    (tmp_path / "pics").mkdir()
    manifest = tmp_path / f"list{suffix}"
    manifest.write_text(f"file{delimiter}kind\npics/a.png{delimiter}cat\npics/b.png{delimiter}dog\n")
    samples = read_source(manifest, DataConfig(path_column="file", label_column="kind"), ImageModality)
    assert [(s.locator, s.label) for s in samples] == [(str(tmp_path / "pics/a.png"), "cat"),
                                                       (str(tmp_path / "pics/b.png"), "dog")]


def test_jsonl_manifest(tmp_path):
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(json.dumps({"path": "x.png", "label": 3}) + "\n\n" + json.dumps({"path": "y.png", "label": 4}) + "\n")
    samples = read_source(manifest, DataConfig(), ImageModality)
    assert [s.label for s in samples] == ["3", "4"]


def test_manifest_missing_column_names_file_and_key(tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,label\nx.png,1\n")
    with pytest.raises(CnncliError, match=r"list\.csv: no column 'category' .* set data\.label_column"):
        read_source(manifest, DataConfig(label_column="category"), ImageModality)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_images_with_their_labels(tmp_path, compress):
    suffix = ".gz" if compress else ""
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, compress)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.array([7, 0, 7], dtype=np.uint8), compress)
    samples = read_source(tmp_path / f"train-images-idx3-ubyte{suffix}", DataConfig(), ImageModality)
    assert [s.label for s in samples] == ["7", "0", "7"]
    assert samples[1].content.tolist() == images[1].tolist()
    assert samples[2].position == 2


def test_truncated_idx_is_reported(tmp_path):
    path = write_idx(tmp_path / "t-images-idx3-ubyte", np.zeros((2, 3, 3), dtype=np.uint8), compress=False)
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(CnncliError, match="truncated idx file"):
        read_source(path, DataConfig(), ImageModality)


def test_text_that_is_not_utf8_names_file_line_and_byte(tmp_path):
    path = tmp_path / "reviews.txt"
    path.write_bytes("fine\nun film tr\xe8s bien\n".encode("latin-1"))
    with pytest.raises(CnncliError, match=r"reviews\.txt:2: byte 0xe8 at column 11 is not valid utf-8"):
        read_lines(path, "utf-8")
    assert read_lines(path, "latin-1")[1] == "un film très bien"


def test_missing_source_names_the_path(tmp_path):
    with pytest.raises(CnncliError, match="nothing-here: no such file or folder"):
        read_sources("nothing-here", DataConfig(root=str(tmp_path)), ImageModality)


def samples(count, labels=("a", "b")):
    return [Sample(f"/d/{labels[i % len(labels)]}_{i}.wav", labels[i % len(labels)], None, i) for i in range(count)]


def test_split_by_file_name_pattern():
    rest, test, rule = split_test(samples(10), SplitConfig(test_pattern=r"_[0-2]\.wav$"))
    assert [s.position for s in test] == [0, 1, 2] and len(rest) == 7 and "matches" in rule


def test_split_by_position():
    _, every, _ = split_test(samples(25), SplitConfig(test_every=10))
    _, ranged, _ = split_test(samples(25), SplitConfig(test_range=[20, 25]))
    assert [s.position for s in every] == [0, 10, 20]
    assert [s.position for s in ranged] == [20, 21, 22, 23, 24]


def test_position_folds_partition_the_data():
    """test_offset picks one of the test_every folds: together the folds are cross-validation."""
    folds = [split_test(samples(25), SplitConfig(test_every=10, test_offset=k))[1] for k in range(10)]
    assert [s.position for s in folds[3]] == [3, 13, 23]
    assert sorted(s.position for fold in folds for s in fold) == list(range(25))


def test_seeded_fraction_is_stratified_and_reproducible():
    kept, held = stratified_fraction(samples(40), 0.25, seed=3)
    assert len(held) == 10 and sorted({s.label for s in held}) == ["a", "b"]
    assert sum(s.label == "a" for s in held) == 5
    assert stratified_fraction(samples(40), 0.25, seed=3)[1] == held
    assert stratified_fraction(samples(40), 0.25, seed=4)[1] != held


def test_splits_are_recorded(tiny_image_folder, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{root: {tiny_image_folder}, split: {{test_fraction: 0.25, val_fraction: 0.2}}}}\n"
                      "model: {blocks: [flatten]}\n")
    splits = load_splits(load_config(recipe), ImageModality)
    assert splits.record["counts"] == {"train": 14, "val": 4, "test": 6}
    assert splits.labels == ["left", "right"]
    assert not {s.locator for s in splits.test} & {s.locator for s in splits.train + splits.val}
