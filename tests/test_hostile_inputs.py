"""Issue 13, items 1 to 3 and 10: markup, lying headers, non-finite numbers and the smaller traps
in what users feed predict, eval and train. Each test reproduces what went wrong before."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import REPO, tiny_image_recipe, write_two_class_images
from typer.testing import CliRunner

from cnncli.cli.app import app

runner = CliRunner()
TEXT_BUNDLE = REPO / "tests" / "fixtures" / "bundles-v1" / "text"
AUDIO_BUNDLE = REPO / "tests" / "fixtures" / "bundles-v1" / "audio"
SAMPLE_WAV = sorted((REPO / "sample_data" / "audio").glob("*.wav"))[0]


def cli(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def lying_png(width: int, height: int) -> bytes:
    """A 45-byte PNG whose header claims width x height pixels and that holds none."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def nan_wav(path: Path, value: float = float("nan")) -> Path:
    soundfile.write(path, np.full(4000, value, dtype=np.float32), 8000, subtype="FLOAT")
    return path


def strict_json(text: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


# -- 1. markup in data ----------------------------------------------------------------------------

MARKUP = ["[/x]", "[bold]b[/bold]"]


@pytest.fixture(scope="module")
def markup_bundle(tmp_path_factory):
    """A bundle whose labels are markup (from a manifest: a folder name cannot hold a slash),
    trained on data whose path is markup too."""
    from cnncli.recipe.config import load_config
    from cnncli.training.train import train

    root = tmp_path_factory.mktemp("markup")
    data = write_two_class_images(root / "[red]data[/red]")
    rows = [f"{folder}/{path.name},{label}" for folder, label in zip(("left", "right"), MARKUP)
            for path in sorted((data / folder).glob("*.png"))]
    manifest = data / "labels.csv"
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    recipe = tiny_image_recipe(data)
    recipe["data"]["train"] = "labels.csv"
    train(load_config(recipe), root / "bundle")
    return root / "bundle", data


def test_markup_in_a_sentence_is_printed_as_typed_in_the_predict_table():
    result = cli("predict", TEXT_BUNDLE, "good film [/quote] indeed", "[bold]x[/bold] y")
    assert result.exit_code == 0, result.output
    assert "good film [/quote] indeed" in result.stdout and "[bold]x[/bold] y" in result.stdout


def test_markup_in_paths_and_labels_is_printed_as_typed_by_predict_and_eval(markup_bundle, tmp_path, monkeypatch):
    bundle, images = markup_bundle
    monkeypatch.chdir(tmp_path)  # short relative paths: the table does not fold them
    picture = Path("[") / "p][i]shot[" / "i].png"  # the path holds [/p] and [i]...[/i]
    picture.parent.mkdir(parents=True)
    shutil.copy(images / "left" / "00.png", picture)
    predicted = cli("predict", bundle, picture, "[bold]missing[/bold].png")
    assert predicted.exit_code == 1, predicted.output  # the missing file is an error row, shown as typed
    assert "[/p][i]shot[/i].png" in predicted.stdout and "[bold]missing[/bold].png" in predicted.stdout
    assert any(label in predicted.stdout for label in MARKUP)
    evaluated = cli("eval", bundle, images / "labels.csv")
    assert evaluated.exit_code == 0, evaluated.output
    assert "[red]data[/red]" in evaluated.stdout
    assert all(label in evaluated.stdout for label in MARKUP)


# -- 2. headers that lie --------------------------------------------------------------------------


def test_a_png_claiming_ten_billion_pixels_is_one_error_row_and_the_batch_is_kept(tiny_bundle, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(lying_png(100_000, 100_000))
    assert bomb.stat().st_size == 45
    good = sorted((tiny_bundle.parent / "images" / "left").glob("*.png"))[:3]
    result = cli("predict", tiny_bundle, good[0], bomb, *good[1:], "--format", "jsonl")
    assert result.exit_code == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["input"] for row in rows] == [str(good[0]), str(bomb), *map(str, good[1:])]
    assert [row["error"] is None for row in rows] == [True, False, True, True]
    assert "bomb.png" in rows[1]["error"] and "pixels" in rows[1]["error"]


def test_eval_and_train_skip_an_image_whose_header_lies_and_name_it(tmp_path):
    images = write_two_class_images(tmp_path / "images")
    (images / "left" / "zz-bomb.png").write_bytes(lying_png(20_000, 9_000))  # past the limit, below 2x Pillow's
    trained = cli("train", images, "--set", "train.epochs=1", "--set", "train.threads=1", "--out", tmp_path / "b")
    assert trained.exit_code == 0, trained.output
    assert "zz-bomb.png" in trained.stderr and "skipped 1" in trained.stderr
    evaluated = cli("eval", tmp_path / "b", images, "--format", "json")
    assert evaluated.exit_code == 0, evaluated.output
    assert any("zz-bomb.png" in message for message in json.loads(evaluated.stdout)["skipped"])


def test_a_wav_whose_header_claims_an_implausible_rate_is_one_error_row(tmp_path):
    lying = tmp_path / "rate.wav"
    content = bytearray(SAMPLE_WAV.read_bytes())
    content[24:28] = struct.pack("<I", 4_000_000_000)  # the fmt chunk's sample rate
    lying.write_bytes(bytes(content))
    result = cli("predict", AUDIO_BUNDLE, lying, SAMPLE_WAV, "--format", "jsonl")
    assert result.exit_code == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert "rate.wav" in rows[0]["error"] and rows[1]["error"] is None


# -- 3. numbers that are not finite ---------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e38])
def test_audio_that_decodes_to_non_finite_values_is_an_error_row(tmp_path, value):
    bad = nan_wav(tmp_path / "bad.wav", value)
    result = cli("predict", AUDIO_BUNDLE, bad, SAMPLE_WAV, "--format", "jsonl")
    assert result.exit_code == 1, result.output
    rows = [strict_json(line) for line in result.stdout.splitlines()]
    assert "bad.wav" in rows[0]["error"] and "finite" in rows[0]["error"]
    assert rows[1]["error"] is None and 0 <= rows[1]["score"] <= 1


def test_a_nan_recording_in_training_data_is_named_and_left_out_and_the_bundle_is_valid_json(tmp_path):
    data = tmp_path / "digits"
    for label in ("0", "1"):
        (data / label).mkdir(parents=True)
        for path in sorted((REPO / "sample_data" / "audio").glob(f"{label}_*.wav"))[:6]:
            shutil.copy(path, data / label / path.name)
    nan_wav(data / "0" / "zz-nan.wav")
    recipe = tmp_path / "audio.yaml"
    recipe.write_text(f"data: {{modality: audio, root: {data}, audio: {{sample_rate: 8000, n_fft: 256, "
                      "hop_length: 128, n_mels: 16}, split: {test_fraction: 0.2, val_fraction: 0.2}}\n"
                      "model: {blocks: [{conv: {channels: 4, kernel: 3}}, {pool: {type: max, size: global}}]}\n"
                      "train: {epochs: 2, batch_size: 4, threads: 1}\n")
    result = cli("train", recipe, "--out", tmp_path / "bundle", "--no-cache")
    assert result.exit_code == 0, result.output
    assert "zz-nan.wav" in result.stderr and "finite" in result.stderr
    info = strict_json((tmp_path / "bundle" / "model.json").read_text())
    assert info["status"] == "complete" and all(np.isfinite(info["modality"]["state"]["mean"]))
    for line in (tmp_path / "bundle" / "log.jsonl").read_text().splitlines():
        assert np.isfinite(strict_json(line)["train_loss"])


def test_a_diverging_run_stops_with_a_clear_message_and_is_never_marked_complete(tmp_path):
    images = write_two_class_images(tmp_path / "images")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(tiny_image_recipe(images, epochs=4, lr=1e9)))  # JSON is YAML
    out = tmp_path / "bundle"
    result = cli("train", recipe, "--out", out)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # besides progress notes
    assert len(errors) == 1 and "training diverged" in errors[0]
    assert not (out / "model.json").exists() or strict_json((out / "model.json").read_text())["status"] == "partial"


def test_json_output_never_holds_a_bare_nan():
    from cnncli.errors import CnncliError
    from cnncli.output import show

    with pytest.raises(CnncliError, match="not finite"):
        show("evaluation", {"accuracy": float("nan")}, "json")


# -- 10. the smaller ones -------------------------------------------------------------------------


def test_csv_cells_a_spreadsheet_would_run_are_escaped_on_request():
    sentences = ["=1+1 great", "+good", "-bad", "@SUM(A1)", "plain"]
    raw = cli("predict", TEXT_BUNDLE, "--format", "csv", "--", *sentences)
    escaped = cli("predict", TEXT_BUNDLE, "--format", "csv", "--escape-formulas", "--", *sentences)
    assert raw.exit_code == escaped.exit_code == 0
    first_cells = [line.split(",")[0] for line in escaped.stdout.splitlines()[1:]]
    assert first_cells == ["'=1+1 great", "'+good", "'-bad", "'@SUM(A1)", "plain"]
    assert [line.split(",")[0] for line in raw.stdout.splitlines()[1:]] == sentences


def test_a_text_bundle_reads_a_glob_as_files_and_reports_an_empty_file(tmp_path):
    (tmp_path / "a.txt").write_text("a gripping film\n")
    (tmp_path / "b.txt").write_text("dull\nslow\n")
    (tmp_path / "empty.txt").write_text("\n  \n")
    result = cli("predict", TEXT_BUNDLE, str(tmp_path / "*.txt"), "is it good?", "--format", "jsonl")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["input"] for row in rows] == ["a gripping film", "dull", "slow", str(tmp_path / "empty.txt"),
                                              "is it good?"]
    assert result.exit_code == 1 and "holds no text" in rows[3]["error"]


def test_the_encoding_hint_of_predict_does_not_suggest_a_flag_predict_lacks(tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    result = cli("predict", TEXT_BUNDLE, latin, "--format", "jsonl")
    error = json.loads(result.stdout)["error"]
    assert "0xe9" in error and "--set" not in error and "convert the file to utf-8" in error


def test_eval_and_predict_say_when_a_bundle_is_partial(tiny_bundle, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(tiny_bundle, partial)
    info = json.loads((partial / "model.json").read_text())
    (partial / "model.json").write_text(json.dumps({**info, "status": "partial"}))
    image = sorted((tiny_bundle.parent / "images" / "left").glob("*.png"))[0]
    for args in (["predict", partial, image], ["eval", partial]):
        result = cli(*args)
        assert result.exit_code == 0, result.output
        assert "partial bundle" in result.stderr and f"--resume {partial}" in result.stderr


def test_training_into_a_complete_bundle_needs_overwrite(tiny_bundle, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    before = (out / "weights.safetensors").read_bytes()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(tiny_image_recipe(tiny_bundle.parent / "images")))
    refused = cli("train", recipe, "--out", out)
    assert refused.exit_code == 2 and "--overwrite" in refused.stderr
    assert (out / "weights.safetensors").read_bytes() == before
    replaced = cli("train", recipe, "--out", out, "--overwrite", "--set", "train.seed=1")
    assert replaced.exit_code == 0, replaced.output
    assert (out / "weights.safetensors").read_bytes() != before


@pytest.mark.parametrize("size", ["0", "-1"])
def test_a_batch_size_below_one_is_refused_before_any_output(size):
    result = cli("predict", TEXT_BUNDLE, "fine", "--batch-size", size, "--format", "csv")
    assert result.exit_code == 2 and result.stdout == "" and "--batch-size" in result.stderr
