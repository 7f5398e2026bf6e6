"""The core asks a modality what it can do, never which one it is: cutting one input into spans
(predict --segment, --window), the column names of its samples in a manifest, and reading a data
file of lines for `cnncli train`. Toy modalities defined here show each capability from outside.

The bundles are the small ones in tests/fixtures/bundles-v1 (image and text)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO
from typer.testing import CliRunner

from cnncli.bundle.io import load_bundle
from cnncli.cli.app import app
from cnncli.data.sample import Sample
from cnncli.data.schema import DataConfig
from cnncli.data.sources import read_source
from cnncli.errors import CnncliError
from cnncli.modalities import MODALITIES
from cnncli.modalities.image import ImageModality
from cnncli.modalities.text import TextModality
from cnncli.recipe.defaults import recipe_source
from cnncli.verbs.predict import predict

BUNDLES = REPO / "tests" / "fixtures" / "bundles-v1"
DIGITS = [str(REPO / "sample_data" / "images" / digit / name) for digit, name in
          (("0", "t10k-00003.png"), ("1", "t10k-00002.png"), ("2", "t10k-00001.png"))]


class Plain(ImageModality):
    """An image modality under another name, declaring nothing about spans."""

    name = "plain"


class Sheets(ImageModality):
    """A contact sheet: a file naming one image per line, each line a span it finds (from its
    line number to the next); it cannot slide windows, and drops the spans given `dropped`."""

    name = "sheets"
    finds_spans = True

    def __init__(self, *arguments, **options):
        super().__init__(*arguments, **options)
        self.dropped: set[str] = set()

    def spans(self, locator, batch_size=64, window=None):
        if window is not None:
            return super().spans(locator, batch_size, window)
        paths = Path(locator).read_text().split()
        encoded = self.encode_many([Sample(path) for path in paths])
        return iter([([(float(line), float(line + 1)) for line in range(len(paths))], encoded.tensor)])

    def keeps_found_span(self, label: str) -> bool:
        return label not in self.dropped


def bundle_as(modality_type):
    """The small image bundle, its fitted modality rebuilt as `modality_type`."""
    bundle = load_bundle(BUNDLES / "image")
    bundle.modality = modality_type.from_state(bundle.modality.state_dict())
    return bundle


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# -- spans ----------------------------------------------------------------------------------------


def test_segment_is_refused_at_once_for_an_image_bundle_with_one_line():
    result = cli("predict", BUNDLES / "image", DIGITS[0], "--segment")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "--segment: finds sounds in recordings; this bundle is image" in result.output


def test_a_modality_that_declares_no_spans_gets_the_same_refusal_for_segment():
    with pytest.raises(CnncliError, match=r"^--segment: finds sounds in recordings; this bundle is plain$"):
        list(predict(bundle_as(Plain), [DIGITS[0]], segment=True, workers=0))


def test_a_modality_that_finds_spans_gets_a_row_per_span_each_as_its_image_alone(tmp_path):
    sheet = tmp_path / "sheet.txt"
    sheet.write_text("\n".join(DIGITS) + "\n")
    rows = list(predict(bundle_as(Sheets), [str(sheet)], segment=True, top_k=3, workers=0))
    alone = list(predict(load_bundle(BUNDLES / "image"), DIGITS, top_k=3, workers=0))
    assert [(row.input, row.start, row.end) for row in rows] == [(str(sheet), 0.0, 1.0), (str(sheet), 1.0, 2.0),
                                                                  (str(sheet), 2.0, 3.0)]
    assert [row.top for row in rows] == [row.top for row in alone]


def test_found_spans_the_modality_does_not_keep_are_left_out(tmp_path):
    sheet = tmp_path / "sheet.txt"
    sheet.write_text("\n".join(DIGITS) + "\n")
    bundle = bundle_as(Sheets)
    labels = [row.label for row in predict(bundle, [str(sheet)], segment=True, workers=0)]
    bundle.modality.dropped = {labels[0]}
    kept = list(predict(bundle, [str(sheet)], segment=True, workers=0))
    assert [row.label for row in kept] == [label for label in labels if label != labels[0]]
    windows = list(predict(bundle, [str(sheet)], window=1.0, workers=0))  # only found spans are dropped
    assert [row.error for row in windows] == ["--window: sheets inputs cannot be cut into windows (audio can)"]


# -- a manifest's text column: one list of names, in training and in predict -----------------------


@pytest.mark.parametrize("column", ["question", "sentences", "Tweet"])
def test_predict_finds_a_manifest_text_column_by_the_names_training_finds_it_by(column, tmp_path):
    manifest = tmp_path / "reviews.csv"
    manifest.write_text(f"id,{column},label\n1,a gripping funny film,1\n2,dull,0\n")
    trained = read_source(manifest, DataConfig(modality="text"), TextModality)
    assert [sample.content for sample in trained] == ["a gripping funny film", "dull"]
    result = cli("predict", BUNDLES / "text", "--manifest", manifest, "--format", "jsonl", "--workers", "0")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row[column] for row in rows] == ["a gripping funny film", "dull"]
    assert all(row["error"] is None and row["label"] for row in rows)


# -- a data file of lines belongs to whichever modality reads lines --------------------------------


class Prompts(TextModality):
    """Text under another name, whose manifests keep their sentences in a `prompt` column."""

    name = "prompts"
    content_columns = ("prompt",)


@pytest.fixture
def prompts_instead_of_text():
    """The registry with Prompts where text was (restored afterwards, in the same order)."""
    text = MODALITIES.get("text")
    MODALITIES.unregister("text")
    MODALITIES.register("prompts", Prompts)
    yield
    MODALITIES.unregister("prompts")
    MODALITIES.register("text", text)


def test_a_data_file_for_train_goes_to_the_modality_that_reads_lines_by_its_own_columns(
        prompts_instead_of_text, tmp_path):
    (tmp_path / "asked.csv").write_text("prompt,label\nwho is it,HUM\n")
    (tmp_path / "said.csv").write_text("text,label\nwho is it,HUM\n")
    (tmp_path / "lines.txt").write_text("HUM who is it\nLOC where is it\n")
    source, _ = recipe_source(str(tmp_path / "asked.csv"))
    assert source["data"]["modality"] == "prompts" and source["data"]["train"] == "asked.csv"
    assert recipe_source(str(tmp_path / "said.csv"))[0] == str(tmp_path / "said.csv")  # no column of its names
    assert recipe_source(str(tmp_path / "lines.txt"))[0]["data"]["modality"] == "prompts"
