"""`cnncli inspect DATA`: counts, measures and the warnings that would spoil a run, on real
small files written here: unreadable files, class imbalance, duplicates, test overlap."""

from __future__ import annotations

import json
import shutil

import numpy as np
from conftest import write_idx
from PIL import Image
from typer.testing import CliRunner

from cnncli.cli.app import app
from cnncli.data.sample import Sample
from cnncli.verbs.data_view import content_digest

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def write_images(folder, count, seed, size=(12, 10)):
    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(seed)
    for index in range(count):
        Image.fromarray(generator.integers(0, 255, size=size).astype("uint8")).save(folder / f"{seed}-{index:02d}.png")


def test_a_clean_folder_gets_counts_sizes_pictures_and_no_warning(tmp_path):
    write_images(tmp_path / "data" / "cats", 10, 1)
    write_images(tmp_path / "data" / "dogs", 10, 2, size=(20, 16))
    result = cli("inspect", tmp_path / "data", "--out", tmp_path / "seen", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {label: sum(row[part] for part in ("train", "val", "test")) for label, row in summary["classes"].items()} \
        == {"cats": 10, "dogs": 10}
    assert summary["measures"]["height"] == {"min": 12, "median": 16.0, "mean": 16.0, "max": 20}
    assert summary["classes"]["dogs"]["median"] == {"height": 20, "width": 16}
    assert summary["measures"]["mode"]["values"] == {"L": 20}
    assert summary["warnings"] == []
    assert (tmp_path / "seen" / "samples.png").read_bytes()[:4] == b"\x89PNG"
    table = cli("inspect", tmp_path / "data", "--out", tmp_path / "seen")
    assert "no warnings" in table.stdout and "cats" in table.stdout


def test_unreadable_files_imbalance_and_duplicates_are_each_named(tmp_path):
    write_images(tmp_path / "data" / "many", 12, 1)
    write_images(tmp_path / "data" / "few", 4, 2)
    (tmp_path / "data" / "few" / "broken.png").write_bytes(b"not a png")
    shutil.copy(tmp_path / "data" / "many" / "1-00.png", tmp_path / "data" / "few" / "copy.png")
    result = cli("inspect", tmp_path / "data", "--out", tmp_path / "seen", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    warnings = "\n".join(summary["warnings"])
    assert "1 sample cannot be read, e.g. " in warnings and "broken.png: not a readable image" in warnings
    assert "class imbalance: 'many' has" in warnings
    assert "duplicates: 1 sample with the same content as another (1 group, 1 with different labels)" in warnings
    assert sorted(summary["duplicates"][0]["labels"]) == ["few", "many"]


def test_a_test_set_that_overlaps_training_is_found_by_content(tmp_path):
    write_images(tmp_path / "train" / "a", 6, 1)
    write_images(tmp_path / "train" / "b", 6, 2)
    write_images(tmp_path / "test" / "a", 2, 3)
    shutil.copy(tmp_path / "train" / "a" / "1-03.png", tmp_path / "test" / "a" / "renamed.png")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data: {modality: image, root: ., train: train, test: test, image: {size: [8, 8]}}\n"
                      "model: {blocks: [{conv: {channels: 2, kernel: 3}}]}\n")
    result = cli("inspect", recipe, "--data", "--out", tmp_path / "seen", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["overlap"] == [{"test": str(tmp_path / "test" / "a" / "renamed.png"),
                                   "train": str(tmp_path / "train" / "a" / "1-03.png")}]
    assert any(line.startswith("test overlaps training: 1 of 3 test samples have the content")
               for line in summary["warnings"])
    assert any(line.startswith("no test samples for class 'b'") for line in summary["warnings"])
    layers = json.loads(cli("inspect", recipe, "--format", "json").stdout)  # without --data: the network, as before
    assert layers["kind"] == "recipe" and "layers" in layers and "warnings" not in layers


def test_idx_images_and_sentences_are_compared_by_what_they_hold(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, size=(6, 4, 4)).astype("uint8")
    images[5] = images[0]
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([0, 1, 0, 1, 0, 1], dtype="uint8"))
    recipe = tmp_path / "idx.yaml"
    recipe.write_text("data: {modality: image, root: ., train: train-images-idx3-ubyte.gz, image: {size: [4, 4]},"
                      " split: {test_fraction: 0.0, val_fraction: 0.0}}\nmodel: {blocks: [flatten]}\n")
    summary = json.loads(cli("inspect", recipe, "--data", "--out", tmp_path / "seen", "--format", "json").stdout)
    assert summary["duplicates"] == [{"samples": [f"{tmp_path}/train-images-idx3-ubyte.gz#0",
                                                  f"{tmp_path}/train-images-idx3-ubyte.gz#5"],
                                      "parts": ["train", "train"], "labels": ["0", "1"]}]
    assert content_digest(Sample("x", content="a film")) == content_digest(Sample("y", content="a film"))
    assert content_digest(Sample("x", content="a film")) != content_digest(Sample("x", content="a films"))


def test_a_file_of_sentences_is_looked_at_as_train_would_read_it(tmp_path):
    # The general text recipe (cnncli train FILE): data.encoding auto, max_length auto, lines with a
    # label and no text skipped; inspect FILE says so instead of drawing the network.
    lines = [f"{'pos' if i % 2 else 'neg'} {'a fine' if i % 2 else 'a dull'} café film number {i}" for i in range(40)]
    lines[6] = "neg"  # a label, no text
    data = tmp_path / "sentences.txt"
    data.write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    result = cli("inspect", data, "--out", tmp_path / "seen", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert sum(row["train"] + row["val"] + row["test"] for row in summary["classes"].values()) == 39
    assert summary["measures"]["tokens"]["max"] == 6 and "cut" not in summary["measures"]  # max_length: auto
    assert any("skipped 1 line(s) with a label and no text" in line and f"{data}:7" in line
               for line in summary["warnings"])
    assert any(note.startswith(f"{data}: encoding ") for note in summary["notes"])
    table = cli("inspect", data, "--out", tmp_path / "seen")
    assert f"note: {data}: encoding" in table.stdout and "warning: skipped 1 line(s)" in table.stdout
