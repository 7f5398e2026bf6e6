"""Text that transfers: untidy real files (empty texts, unknown encodings, named columns), the
sequence length read from the data, regularisation chosen on validation (augment: auto), the
general recipe, and each network's own score beside the ensemble's."""

import json

import pytest
import torch
from conftest import REPO

from cnncli.bundle.io import load_bundle, read_info, read_resume_state
from cnncli.data.sample import Sample
from cnncli.data.schema import DataConfig
from cnncli.data.sources import ReadReport, detect_encoding, read_source
from cnncli.errors import CnncliError
from cnncli.modalities.text import TextModality, TextOptions
from cnncli.modalities.text.modality import length_from_data
from cnncli.modalities.text.options import GENERAL_RECIPE, REGULARISATION_GRID
from cnncli.recipe.config import config_to_dict, load_config
from cnncli.recipe.defaults import recipe_source
from cnncli.runtime.progress import Progress
from cnncli.training.train import train
from cnncli.verbs.predict import predict

TINY = ["train.epochs=2", "data.text.embedding_dim=8", "train.ensemble=2", "train.early_stopping=null",
        "model.blocks.1.parallel.0.0.conv.channels=4", "model.blocks.1.parallel.1.0.conv.channels=4",
        "model.blocks.1.parallel.2.0.conv.channels=4"]


def write_labelled_lines(path, count, start=0, encoding="utf-8", extra=""):
    """'LABEL text' lines where one word decides the label (the word a question asks with)."""
    words = {"0": "who", "1": "where", "2": "when"}
    lines = [f"{i % 3} {words[str(i % 3)]} did the caf\xe9 owner number {i} go" for i in range(start, start + count)]
    path.write_bytes(("\n".join(lines) + "\n" + extra).encode(encoding))
    return path


# -- real files --------------------------------------------------------------------------------


def test_a_line_with_a_label_and_no_text_is_skipped_with_its_line_number(tmp_path):
    path = tmp_path / "reviews.all"
    path.write_text("1 a fine film\n\n0\n0 a dull film\n1 \t \n", encoding="utf-8")
    report = ReadReport()
    samples = read_source(path, DataConfig(modality="text"), TextModality, report)
    assert [(s.label, s.content, s.position) for s in samples] == [("1", "a fine film", 0), ("0", "a dull film", 2)]
    assert report.skipped == [f"{path}:3", f"{path}:5"]  # the file's line numbers, empty lines counted
    assert "skipped 2 line(s) with a label and no text" in report.notes()[-1]


def test_skipped_lines_reach_the_summary_and_the_bundle(tmp_path):
    write_labelled_lines(tmp_path / "train.txt", 30, extra="2\n")
    config = load_config(REPO / "recipes" / "text.yaml", [f"data.root={tmp_path}", "data.train=train.txt", *TINY])
    outcome = train(config, tmp_path / "bundle")
    skipped = outcome.summary()["training"]["skipped_lines"]
    assert skipped == {"count": 1, "lines": [f"{tmp_path / 'train.txt'}:31"]}
    assert read_info(tmp_path / "bundle")["split"]["read"]["skipped"] == skipped["lines"]


@pytest.mark.parametrize("encoding, detected", [("latin-1", "cp1252"), ("utf-8", "utf-8"), ("utf-16", "utf_16")])
def test_auto_encoding_is_detected_reported_and_decodes_the_text(tmp_path, encoding, detected):
    path = write_labelled_lines(tmp_path / "questions.txt", 40, encoding=encoding)
    report = ReadReport()
    samples = read_source(path, DataConfig(modality="text", encoding="auto"), TextModality, report)
    assert report.encodings == {str(path): detected}
    assert samples[0].content == "who did the café owner number 0 go"


def test_valid_utf8_is_read_as_utf8_without_guessing():
    assert detect_encoding("naïve café".encode("utf-8")) == "utf-8"
    assert detect_encoding(b"plain ascii") == "utf-8"


@pytest.mark.parametrize("name, body", [
    ("questions.csv", "id,question,type\n1,who wrote it,HUM\n2,where is it,LOC\n3,,HUM\n"),
    ("questions.jsonl", '{"question": "who wrote it", "type": "HUM"}\n{"question": "where is it", "type": "LOC"}\n'
                        '{"question": "", "type": "HUM"}\n'),
])
def test_manifest_text_and_label_columns_are_found_by_name_or_named(tmp_path, name, body):
    (tmp_path / name).write_text(body)
    report = ReadReport()
    found = read_source(tmp_path / name, DataConfig(modality="text"), TextModality, report)
    named = read_source(tmp_path / name, DataConfig(modality="text", text_column="question", label_column="type"),
                        TextModality)
    assert [(s.label, s.content) for s in found] == [(s.label, s.content) for s in named] == [
        ("HUM", "who wrote it"), ("LOC", "where is it")]
    assert report.columns == {"text_column": "question", "label_column": "type"}
    assert report.skipped == [f"{tmp_path / name}:4" if name.endswith(".csv") else f"{tmp_path / name}:3"]


def test_a_column_the_recipe_names_is_never_replaced_by_one_found_by_name(tmp_path):
    (tmp_path / "q.csv").write_text("question,type\nwho,HUM\n")
    with pytest.raises(CnncliError, match="no column 'topic'.*data.label_column"):
        read_source(tmp_path / "q.csv", DataConfig(modality="text", label_column="topic"), TextModality)


def test_a_csv_manifest_trains_end_to_end_with_the_general_recipe(tmp_path):
    rows = ["question,type"] + [f"{['who', 'where', 'when'][i % 3]} is thing {i},{'HLE'[i % 3]}" for i in range(45)]
    (tmp_path / "questions.csv").write_text("\n".join(rows) + "\n")
    source, name = recipe_source(str(tmp_path / "questions.csv"))
    assert name == "questions" and source["augment"] == "auto" and source["data"]["train"] == "questions.csv"
    outcome = train(load_config(source, TINY), tmp_path / "bundle")
    assert read_info(tmp_path / "bundle")["labels"] == ["E", "H", "L"]
    assert outcome.metrics["test"]["n"] == 6  # test_fraction 0.1 of each label's 15, rounded: 2 each
    rows = list(predict(load_bundle(tmp_path / "bundle"), ["where is it"]))
    assert rows[0].error is None and rows[0].label in ("E", "H", "L")


# -- the general recipe --------------------------------------------------------------------------


def test_the_general_text_recipe_file_is_the_one_cnncli_train_uses_for_text_data():
    from_file = config_to_dict(load_config(REPO / "recipes" / "text.yaml"))
    built_in = config_to_dict(load_config(GENERAL_RECIPE))
    for section in ("model", "train", "augment"):
        assert from_file[section] == built_in[section], section
    assert from_file["data"]["text"] == built_in["data"]["text"]
    assert from_file["data"]["encoding"] == built_in["data"]["encoding"] == "auto"


def test_max_length_auto_is_the_99th_percentile_of_training_lengths_and_is_stored():
    assert length_from_data([["w"] * n for n in range(1, 101)]) == 99
    assert length_from_data([["w"] * 3] * 50 + [["w"] * 500]) == 500  # 51 lines: the longest is the 99th percentile
    modality = TextModality(TextOptions(max_length="auto"))
    modality.fit([Sample(f"s{i}", "x", " ".join(["w"] * (1 + i % 7))) for i in range(200)])
    assert modality.options.max_length == 7 and modality.input_shape == (7,)
    assert TextModality.from_state(json.loads(json.dumps(modality.state_dict()))).input_shape == (7,)
    assert "7 tokens" in modality.fitted_notes()[0]


# -- augment: auto -----------------------------------------------------------------------------


def auto_run(tmp_path, name, test_lines):
    write_labelled_lines(tmp_path / "train.txt", 60)
    write_labelled_lines(tmp_path / f"{name}.txt", test_lines, start=1000)
    config = load_config(REPO / "recipes" / "text.yaml", [
        f"data.root={tmp_path}", "data.train=train.txt", f"data.test={name}.txt", *TINY])
    return train(config, tmp_path / name)


def scores(auto: dict) -> list:
    """What a choice saw and chose, without its timings."""
    return [auto["chosen"]] + [(c["name"], c["values"], c["val_accuracy"], c["val_loss"], c["kept_epochs"])
                               for c in auto["candidates"]]


def test_auto_tries_every_candidate_on_validation_and_records_the_best(tmp_path):
    outcome = auto_run(tmp_path, "run", 9)
    auto = outcome.training["auto"]
    assert [c["name"] for c in auto["candidates"]] == [name for name, *_ in REGULARISATION_GRID]
    best = max(auto["candidates"], key=lambda c: (c["val_accuracy"], -c["val_loss"]))
    assert auto["chosen"] == best["name"] and auto["values"] == best["values"]
    info = read_info(tmp_path / "run")
    assert info["training"]["auto"]["chosen"] == auto["chosen"] and info["recipe"]["augment"]["auto"] is True
    assert set(auto["values"]) == {"augment.word_crop", "augment.word_dropout", "model.blocks.0.dropout"}
    assert outcome.training["kept_epoch"][0] == best["kept_epochs"][0]  # the winner's network is member 1
    members = outcome.metrics["test"]["members"]  # each network alone, beside the ensemble
    assert len(members) == 2 and all(0 <= accuracy <= 1 for accuracy in members)
    assert outcome.summary()["metrics"]["test"]["members"] == members


def test_auto_never_looks_at_the_test_split(tmp_path):
    small, large = auto_run(tmp_path, "small", 3), auto_run(tmp_path, "large", 30)
    assert scores(small.training["auto"]) == scores(large.training["auto"])


def test_a_fixed_augment_key_under_auto_is_an_error_naming_the_key(tmp_path):
    write_labelled_lines(tmp_path / "train.txt", 30)
    with pytest.raises(CnncliError, match=r"text.yaml: augment.word_crop: is chosen by augment: auto"):
        load_config(REPO / "recipes" / "text.yaml", [
            f"data.root={tmp_path}", "data.train=train.txt", "augment.word_crop=0.5", *TINY])
    assert not (tmp_path / "bundle").exists()
    fixed = load_config(REPO / "recipes" / "text.yaml", ["augment.auto=false", "augment.word_crop=0.5"])
    assert fixed.augment.word_crop == 0.5 and not fixed.augment.auto
    assert load_config(REPO / "recipes" / "sst2.yaml", ["augment=auto"]).augment.auto


class CrashAtEpoch(Progress):
    """Fails when the n-th epoch of the ensemble (after the choice) is about to be logged."""

    def __init__(self, at: int):
        self.at, self.seen = at, 0

    def epoch(self, record: dict, members: int = 1) -> None:
        self.seen += 1
        if self.seen == self.at:
            raise KeyboardInterrupt


def test_a_resumed_auto_run_keeps_its_choice_and_ends_like_an_uninterrupted_one(tmp_path):
    write_labelled_lines(tmp_path / "train.txt", 60)
    config = load_config(REPO / "recipes" / "text.yaml", [
        f"data.root={tmp_path}", "data.train=train.txt", *TINY, "train.ensemble=3"])
    whole = train(config, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", CrashAtEpoch(2))
    assert read_info(tmp_path / "cut")["training"]["auto"]["chosen"] == whole.training["auto"]["chosen"]
    saved, state = read_resume_state(tmp_path / "cut")
    resumed = train(saved, tmp_path / "cut", resume=state)
    assert resumed.metrics == whole.metrics and scores(resumed.training["auto"]) == scores(whole.training["auto"])
    for (name, ours), theirs in zip(load_bundle(tmp_path / "cut").network.state_dict().items(),
                                    load_bundle(tmp_path / "whole").network.state_dict().values()):
        assert torch.equal(ours, theirs), name


@pytest.mark.slow
@pytest.mark.parametrize("name, paths, floor", [
    ("sst1", ["data.root=../shared/data/sst1", "data.train=stsa.fine.train", "data.val=stsa.fine.dev",
              "data.test=stsa.fine.test"], 0.42),
    ("mpqa", ["data.root=../shared/data/mpqa", "data.train=mpqa.all", "data.split.test_every=10"], 0.83),
])
def test_the_general_recipe_transfers_to_sets_no_recipe_was_tuned_on(tmp_path, monkeypatch, name, paths, floor):
    """Paths only (docs/BENCHMARKS.md: SST-1 0.434, MPQA 0.880 at seed 0; 20-40 minutes each on a
    busy 2-core machine)."""
    monkeypatch.chdir(REPO)
    outcome = train(load_config(REPO / "recipes" / "text.yaml", paths), tmp_path / name)
    assert outcome.metrics["test"]["accuracy"] >= floor
