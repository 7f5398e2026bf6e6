"""Issue 26, items 1, 2, 5 and 7: the image formats people have, files that are not files, a
recording too loud for finite features, and data that looks wrong. Each test reproduces what went
wrong before; those that could hang or eat the machine's memory run the command line in a child
process with a time limit and a 4 GB address-space limit, so a regression fails instead."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import REPO, tiny_image_recipe
from PIL import Image, features
from typer.testing import CliRunner

from cnncli.cli.app import app
from cnncli.data.schema import DataConfig
from cnncli.data.sources import ReadReport, read_source
from cnncli.data.split import load_splits
from cnncli.errors import CnncliError
from cnncli.modalities.image import ImageModality, ImageOptions
from cnncli.modalities.text import TextModality
from cnncli.recipe.config import load_config

runner = CliRunner()
FIXTURES = REPO / "tests" / "fixtures" / "bundles-v1"
ADDRESS_SPACE = 4_000_000 * 1024  # as tests/test_address_space.py: torch maps about 3.3 GB of it


def cli(*args):
    return runner.invoke(app, [str(argument) for argument in args])


def run_cli(*args, timeout: int = 120) -> subprocess.CompletedProcess:
    """`python -m cnncli ARGS` in a child process with a time and an address-space limit."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    return subprocess.run([sys.executable, "-m", "cnncli", *map(str, args)], capture_output=True, text=True,
                          preexec_fn=limit, timeout=timeout, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text[-2000:]
    return lines[0]


# -- 1. the image formats people have -------------------------------------------------------------

FORMATS = {"BMP": ".bmp", "WEBP": ".webp", "GIF": ".gif", "TIFF": ".tif", "PPM": ".ppm", "PNG": ".png",
           "JPEG": ".jpg"}
LOSSY = {"JPEG", "WEBP"}


def gradient(size: int = 16) -> np.ndarray:
    """8-bit grayscale pixels with every level from dark to bright: clipping or a wrong scale shows."""
    return (np.add.outer(np.arange(size), np.arange(size)) * (255 // (2 * size - 2))).astype(np.uint8)


def writable(kind: str) -> bool:
    Image.init()
    return kind in Image.SAVE and (kind != "WEBP" or features.check("webp"))


def grayscale(size: int = 16) -> ImageModality:
    return ImageModality(ImageOptions(size=[size, size], color="grayscale", normalize=False))


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_every_image_format_this_pillow_writes_is_read(tmp_path, kind):
    if not writable(kind):
        pytest.skip(f"this Pillow cannot write {kind}")
    from cnncli.data.sample import Sample

    pixels = gradient()
    path = tmp_path / f"picture{FORMATS[kind]}"
    Image.fromarray(pixels).save(path, kind, **({"quality": 95} if kind in LOSSY else {}))
    encoded = grayscale().encode(Sample(str(path)))
    difference = np.abs(encoded[0].numpy().astype(int) - pixels.astype(int)).max()
    assert difference <= (12 if kind in LOSSY else 0)


def test_a_pgm_is_read(tmp_path):
    from cnncli.data.sample import Sample

    pixels = gradient()
    path = tmp_path / "picture.pgm"
    Image.fromarray(pixels).save(path, "PPM")  # a grayscale image is written as P5, the PGM format
    assert path.read_bytes().startswith(b"P5")
    assert np.array_equal(grayscale().encode(Sample(str(path)))[0].numpy(), pixels)


@pytest.mark.parametrize("color", ["grayscale", "rgb"])
def test_a_16_bit_png_encodes_as_its_8_bit_original_does(tmp_path, color):
    from cnncli.data.sample import Sample

    pixels = gradient()
    Image.fromarray(pixels).save(tmp_path / "eight.png")
    Image.fromarray(pixels.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    modality = ImageModality(ImageOptions(size=[16, 16], color=color, normalize=False))
    eight, sixteen = (modality.encode(Sample(str(tmp_path / name))).numpy().astype(int)
                      for name in ("eight.png", "sixteen.png"))
    assert np.abs(eight - sixteen).max() <= 1


def test_a_folder_of_bmps_trains(tmp_path):
    from conftest import write_two_class_images

    images = write_two_class_images(tmp_path / "images")
    for png in list(images.rglob("*.png")):
        Image.open(png).save(png.with_suffix(".bmp"), "BMP")
        png.unlink()
    recipe = tmp_path / "bmp.yaml"
    recipe.write_text(json.dumps(tiny_image_recipe(images)))
    result = cli("train", recipe, "--out", tmp_path / "bundle")
    assert result.exit_code == 0, result.output
    assert "skipped" not in result.output
    assert (tmp_path / "bundle" / "weights.safetensors").exists()


# -- 2. files that are not files ------------------------------------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_training_on_a_device_file_is_one_line_not_all_the_memory(tmp_path, device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    recipe = tmp_path / "device.yaml"
    recipe.write_text(json.dumps({"data": {"modality": "text", "root": str(Path(device).parent),
                                           "train": Path(device).name}, "model": {"blocks": ["flatten"]}}))
    for argument in (device, recipe):
        finished = run_cli("train", argument, "--out", tmp_path / "bundle")
        assert finished.returncode not in (0, 1, -9), finished.stderr[-2000:]
        assert device in one_line(finished.stderr) and "not a regular file" in finished.stderr


def test_predict_lines_from_a_device_is_one_line(tmp_path):
    finished = run_cli("predict", FIXTURES / "text", "--lines", "/dev/zero")
    assert finished.returncode not in (0, -9), finished.stderr[-2000:]
    assert "/dev/zero" in one_line(finished.stderr) and "not a regular file" in finished.stderr


def test_read_limited_refuses_what_is_not_a_regular_file(tmp_path):
    from cnncli.files.reading import read_limited

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path in ("/dev/zero", fifo):  # a FIFO with no writer: opening it would wait for one
        with pytest.raises(CnncliError, match="not a regular file"):
            read_limited(path, 1000, "recipe")


def test_a_fifo_as_weights_is_refused_by_predict_and_inspect(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(FIXTURES / "image", bundle)
    (bundle / "weights.safetensors").unlink()
    os.mkfifo(bundle / "weights.safetensors")
    picture = next((REPO / "sample_data" / "images").rglob("*.png"))
    for command in (("predict", bundle, picture), ("inspect", bundle)):
        finished = run_cli(*command, timeout=90)
        assert finished.returncode not in (0, -9), finished.stderr[-2000:]
        assert "weights.safetensors" in one_line(finished.stderr) and "not a regular file" in finished.stderr


def test_a_fifo_as_an_input_is_an_error_row_and_the_batch_goes_on(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    picture = next((REPO / "sample_data" / "images").rglob("*.png"))
    finished = run_cli("predict", FIXTURES / "image", fifo, picture, "--format", "jsonl", timeout=90)
    rows = [json.loads(line) for line in finished.stdout.splitlines()]
    assert finished.returncode == 1, finished.stderr[-2000:]
    assert [row["error"] is None for row in rows] == [False, True]
    assert "pipe.png" in rows[0]["error"] and "not a regular file" in rows[0]["error"]


def test_a_fifo_as_a_long_recording_is_an_error_row(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    finished = run_cli("predict", FIXTURES / "audio", fifo, "--window", "1", "--format", "jsonl", timeout=90)
    rows = [json.loads(line) for line in finished.stdout.splitlines()]
    assert finished.returncode == 1, finished.stderr[-2000:]
    assert len(rows) == 1 and "pipe.wav" in rows[0]["error"] and "not a regular file" in rows[0]["error"]


def test_a_data_root_in_proc_is_refused_in_one_line_at_once(tmp_path):
    recipe = tmp_path / "images.yaml"
    recipe.write_text(json.dumps(tiny_image_recipe(tmp_path)))
    started = time.monotonic()
    result = cli("train", recipe, "--set", "data.root=/proc/self", "--out", tmp_path / "bundle")
    assert time.monotonic() - started < 10
    assert result.exit_code == 2 and not isinstance(result.exception, Exception), result.output
    assert "/proc" in one_line(result.stderr) and "Traceback" not in result.output


def test_unreadable_folders_among_the_data_are_skipped_with_one_warning(tmp_path):
    from conftest import write_two_class_images

    if os.geteuid() == 0:
        pytest.skip("root reads every folder")
    images = write_two_class_images(tmp_path / "images")
    locked = images / "left" / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        report = ReadReport()
        samples = read_source(images, DataConfig(), ImageModality, report)
    finally:
        locked.chmod(0o755)
    assert len(samples) == 16
    assert any("locked" in note and "could not be read" in note for note in report.notes())


def test_an_empty_input_folder_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli("predict", FIXTURES / "image", tmp_path / "empty")
    assert result.exit_code == 1, result.output
    assert "empty" in result.stdout and "no files" in result.stdout


# -- 5. a recording too loud for finite features --------------------------------------------------


def test_a_recording_at_3e38_is_skipped_with_a_warning_and_the_bundle_is_written(tmp_path):
    audio = tmp_path / "audio"
    shutil.copytree(REPO / "sample_data" / "audio", audio)
    speech, rate = soundfile.read(min(audio.glob("3_*.wav")), dtype="float32")
    loud = speech / np.abs(speech).max() * np.float32(3e38)
    assert np.isfinite(loud).all()
    soundfile.write(audio / "3_loud_99.wav", loud.astype(np.float32), rate, subtype="FLOAT")
    result = cli("train", REPO / "recipes" / "audio-quickstart.yaml", "--set", f"data.root={audio}",
                 "--set", "train.epochs=1", "--out", tmp_path / "bundle")
    assert result.exit_code == 0, result.output
    assert "3_loud_99.wav" in result.stderr and "skipped 1 unreadable" in result.stderr
    assert (tmp_path / "bundle" / "weights.safetensors").exists()


# -- 7. data that looks wrong ---------------------------------------------------------------------

WORDS = ["Heute", "Morgen", "Alles", "Nichts", "Wir", "Ihr", "Das", "Die", "Ein", "Kein", "Mein", "Sein"]


def tweets(count: int = 60) -> list[tuple[str, str]]:
    """(text, label) pairs whose first words are nearly all different, as real sentences' are."""
    return [(f"{WORDS[i % len(WORDS)]}{i} war {'gut' if i % 2 else 'schlecht'} heute", "positive" if i % 2
             else "negative") for i in range(count)]


def text_config(root: Path, train: str, **data):
    return load_config({"data": {"modality": "text", "root": str(root), "train": train, **data},
                        "model": {"blocks": [{"pool": {"type": "max", "size": "global"}}]}})


def test_a_tab_separated_txt_file_is_refused_with_what_it_looks_like_and_what_to_set(tmp_path):
    (tmp_path / "tweets.txt").write_text("".join(f"{text}\t{label}\n" for text, label in tweets()))
    with pytest.raises(CnncliError) as refused:
        load_splits(text_config(tmp_path, "tweets.txt"), TextModality)
    message = str(refused.value)
    assert "tweets.txt" in message and "one sample" in message
    assert "tab" in message and "data.header: false" in message
    assert "data.text_column: 0" in message and "data.label_column: 1" in message


def test_the_settings_the_refusal_names_read_that_file(tmp_path):
    (tmp_path / "tweets.txt").write_text("".join(f"{text}\t{label}\n" for text, label in tweets()))
    config = text_config(tmp_path, "tweets.txt", format="manifest", header=False, text_column=0, label_column=1)
    splits = load_splits(config, TextModality)
    assert splits.labels == ["negative", "positive"]
    assert len(splits.train) + len(splits.val) + len(splits.test) == 60


@pytest.mark.parametrize("suffix", [".tsv", ".csv"])
def test_a_table_without_a_header_row_is_recognised(tmp_path, suffix):
    delimiter = "\t" if suffix == ".tsv" else ","
    manifest = tmp_path / f"tweets{suffix}"
    manifest.write_text("".join(f"{text}{delimiter}{label}\n" for text, label in tweets()))
    report = ReadReport()
    samples = read_source(manifest, DataConfig(modality="text"), TextModality, report)
    assert len(samples) == 60 and {sample.label for sample in samples} == {"positive", "negative"}
    assert samples[0].content == tweets()[0][0]
    assert any("no header row" in note for note in report.notes())


def test_train_takes_a_tsv_without_a_header_row(tmp_path):
    manifest = tmp_path / "tweets.tsv"
    manifest.write_text("".join(f"{text}\t{label}\n" for text, label in tweets()))
    result = cli("train", manifest, "--set", "train.epochs=1", "--set", "train.ensemble=1", "--set",
                 "augment.auto=false", "--set", "train.rotate_val=false", "--out", tmp_path / "bundle")
    assert result.exit_code == 0, result.output
    assert "YAML" not in result.output


def test_a_header_row_is_still_a_header(tmp_path):
    manifest = tmp_path / "sentences.tsv"
    manifest.write_text("sentence\tsentiment\n" + "".join(f"{text}\t{label}\n" for text, label in tweets()))
    samples = read_source(manifest, DataConfig(modality="text"), TextModality)
    assert len(samples) == 60 and samples[0].content == tweets()[0][0]


def test_quotes_in_a_tsv_are_characters_and_every_line_is_a_row(tmp_path):
    rows = tweets()
    rows[3] = ('"Nein" sagte er, und ging', rows[3][1])
    rows[10] = ('er sagte "ja', rows[10][1])
    manifest = tmp_path / "tweets.tsv"
    manifest.write_text("text\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows))
    samples = read_source(manifest, DataConfig(modality="text"), TextModality)
    assert [sample.content for sample in samples] == [text for text, _ in rows]


def test_a_csv_row_that_swallows_lines_is_warned_about_with_its_line_numbers(tmp_path):
    rows = tweets(20)
    manifest = tmp_path / "tweets.csv"
    lines = [f"{text},{label}" for text, label in rows]
    lines[4] = '"Ein Anfang,positive'  # the quote runs on until the next quote: lines 6 to 11 vanish
    lines[10] = 'und ein Ende",negative'
    manifest.write_text("text,label\n" + "\n".join(lines) + "\n")
    report = ReadReport()
    samples = read_source(manifest, DataConfig(modality="text"), TextModality, report)
    assert len(samples) == 14
    warning = next(note for note in report.notes() if "one row" in note)
    assert "tweets.csv" in warning and "lines 6-12" in warning


def test_one_bad_jsonl_line_costs_its_row_not_the_run(tmp_path):
    manifest = tmp_path / "tweets.jsonl"
    lines = [json.dumps({"text": text, "label": label}) for text, label in tweets(20)]
    lines[6] = '{"text": "kaputt", "label": '
    manifest.write_text("\n".join(lines) + "\n")
    report = ReadReport()
    samples = read_source(manifest, DataConfig(modality="text"), TextModality, report)
    assert len(samples) == 19
    assert any("tweets.jsonl:7" in note for note in report.notes())


def test_one_bad_jsonl_line_of_a_predict_manifest_is_one_error_row(tmp_path):
    manifest = tmp_path / "inputs.jsonl"
    manifest.write_text('{"text": "a good film"}\nnot json\n{"text": "a bad film"}\n')
    result = cli("predict", FIXTURES / "text", "--manifest", manifest, "--format", "jsonl")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 1, result.output
    assert [row["error"] is None for row in rows] == [True, False, True]
    assert "inputs.jsonl:2" in rows[1]["error"]


def test_blank_and_nul_lines_of_predict_lines_are_rows_with_an_error(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_bytes(b"a good film\n\n   \n\x00\x00\x00\na bad film\n")
    result = cli("predict", FIXTURES / "text", "--lines", lines, "--format", "jsonl")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 1, result.output
    assert [row["error"] is None for row in rows] == [True, False, False, False, True]
    assert "lines.txt:2" in rows[1]["error"] and "lines.txt:4" in rows[3]["error"]
