"""Issue 26, items 3, 4, 6 and 8: one writer per output, bundles and --resume files that prove
what they hold, a full disk said in one line, and the smaller ones (control sequences in tables,
formula cells, recipe refusals that name the file, empty mel filters, a corrupt modality state)."""

from __future__ import annotations

import errno
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import REPO, tiny_image_recipe, write_two_class_images
from test_predict import wait_until
from typer.testing import CliRunner

from cnncli.cli.app import app

runner = CliRunner()
BUNDLES = REPO / "tests" / "fixtures" / "bundles-v1"
SAMPLE_WAV = REPO / "sample_data" / "audio" / "0_george_0.wav"


def cli(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def cnncli_process(*args, **options) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnncli", *map(str, args)],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, **options)


def one_line(result) -> str:
    """The one error line that ends a refused command (exit 2, no traceback; training's progress
    lines may come before it)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    last = result.stderr.splitlines()[-1]
    assert last.startswith("error: ") and result.stderr.endswith(last + "\n"), result.stderr
    return last


@pytest.fixture
def long_recipe(tmp_path) -> Path:
    """A recipe whose run lasts minutes (ended by the test), on tiny images."""
    images = write_two_class_images(tmp_path / "images")
    recipe = tmp_path / "long.yaml"
    recipe.write_text(json.dumps(tiny_image_recipe(images, epochs=5000)))
    return recipe


def start_training(recipe: Path, out: Path) -> subprocess.Popen:
    """`cnncli train` in its own process, returned once its first epoch is in the partial bundle."""
    process = cnncli_process("train", recipe, "--out", out, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started = wait_until(lambda: (out / "model.json").exists() or process.poll() is not None)
    assert started and process.poll() is None, process.stderr.read().decode()
    return process


# -- 3. two writers -------------------------------------------------------------------------------


def test_a_second_training_into_the_same_folder_is_refused_naming_the_first_process(long_recipe, tmp_path):
    out = tmp_path / "same"
    first = start_training(long_recipe, out)
    try:
        second = cli("train", long_recipe, "--out", out, "--overwrite", "--set", "train.epochs=1")
        assert f"--out {out}: another cnncli process (pid {first.pid}) is writing there" in one_line(second)
        resumed = cli("train", "--resume", out)  # --resume takes the same lock
        assert f"(pid {first.pid})" in one_line(resumed)
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    assert first.returncode == 143
    assert not (tmp_path / ".same.lock").exists()  # the holder removes its lock when it ends


def test_a_lock_left_by_a_killed_training_is_taken_over(long_recipe, tmp_path):
    out = tmp_path / "same"
    first = start_training(long_recipe, out)
    assert (tmp_path / ".same.lock").read_text().strip() == str(first.pid)
    first.kill()
    first.wait()
    assert (tmp_path / ".same.lock").exists()  # SIGKILL: nothing could clean up, but the kernel freed the flock
    result = cli("train", long_recipe, "--out", out, "--overwrite", "--set", "train.epochs=1")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "model.json").read_text())["status"] == "complete"
    assert not (tmp_path / ".same.lock").exists()


def test_a_second_predict_into_the_same_output_file_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "rows.csv"
    first = cnncli_process("predict", BUNDLES / "text", "-", "-o", out, stdin=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        first.stdin.write(b"a first sentence\n")
        first.stdin.flush()  # then it waits for more lines, its output open
        assert wait_until(lambda: list(tmp_path.glob(".rows.csv.tmp-*"))), first.stderr.read1().decode()
        for resume in ([], ["--resume"]):
            second = cli("predict", BUNDLES / "text", "great", "-o", out, *resume)
            assert f"--output {out}: another cnncli process (pid {first.pid}) is writing there" in one_line(second)
        first.stdin.close()
        assert first.wait(timeout=120) == 0
    finally:
        first.kill()
    assert out.read_text().splitlines()[1].startswith("a first sentence,")
    assert cli("predict", BUNDLES / "text", "great", "-o", out).exit_code == 0  # free again


# -- 4. integrity ---------------------------------------------------------------------------------


def test_fifty_bytes_overwritten_in_the_weights_are_refused_naming_the_bundle(tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    weights = bytearray((bundle / "weights.safetensors").read_bytes())
    header = 8 + int.from_bytes(weights[:8], "little")
    generator = random.Random(26)
    for position in generator.sample(range(header, len(weights)), 50):  # the tensors' bytes, not the header
        weights[position] = generator.randrange(256)
    (bundle / "weights.safetensors").write_bytes(bytes(weights))
    image = sorted((REPO / "sample_data" / "images").rglob("*.png"))[0]
    message = one_line(cli("predict", bundle, image))
    assert str(bundle) in message and "weights.safetensors" in message and "sha256" in message


def test_model_json_and_weights_of_two_versions_of_a_bundle_are_refused(tiny_bundle, tmp_path):
    from cnncli.recipe.config import load_config
    from cnncli.training.train import train

    images = write_two_class_images(tmp_path / "images")
    other = train(load_config(tiny_image_recipe(images, seed=7)), tmp_path / "other", cache=None).bundle
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_bundle, mixed)
    shutil.copy(other / "weights.safetensors", mixed / "weights.safetensors")  # same names and shapes
    message = one_line(cli("predict", mixed, images / "left" / "00.png"))
    assert f"{mixed}: weights.safetensors is not the file model.json was written with" in message
    assert json.loads((tiny_bundle / "model.json").read_text())["weights_sha256"]


def test_bundles_written_before_the_digest_still_load():
    from cnncli.bundle.io import load_bundle

    for kind in ("image", "audio", "text"):
        assert "weights_sha256" not in json.loads((BUNDLES / kind / "model.json").read_text())
        assert load_bundle(BUNDLES / kind).labels


def test_resume_refuses_a_file_started_with_other_options_or_another_bundle(tmp_path):
    out = tmp_path / "rows.csv"
    first = cli("predict", BUNDLES / "text", "great", "dull", "-o", out, "--resume", "--top-k", "2")
    assert first.exit_code == 0, first.output
    record = json.loads((tmp_path / "rows.csv.resume.json").read_text())
    assert record["top_k"] == 2 and record["format"] == "csv"
    refused = one_line(cli("predict", BUNDLES / "text", "great", "dull", "meh", "-o", out, "--resume", "--top-k", "3"))
    assert f"--resume: {out} was started with --top-k 2, not 3" in refused
    refused = one_line(cli("predict", BUNDLES / "text", "great", "dull", "meh", "-o", out, "--resume",
                           "--top-k", "2", "--threshold", "0.9"))
    assert "was started with no --threshold, not --threshold 0.9" in refused
    other = tmp_path / "other"
    shutil.copytree(BUNDLES / "text", other)
    info = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**info, "labels": info["labels"][::-1]}))  # other answers
    refused = one_line(cli("predict", other, "great", "dull", "meh", "-o", out, "--resume", "--top-k", "2"))
    assert f"was started with the bundle {BUNDLES / 'text'}, not {other}" in refused
    resumed = cli("predict", BUNDLES / "text", "great", "dull", "meh", "-o", out, "--resume", "--top-k", "2")
    assert resumed.exit_code == 0 and len(out.read_text().splitlines()) == 4


# -- 6. a full disk -------------------------------------------------------------------------------


def no_space(*args, **kwargs):
    """safetensors' writer on a full disk: what it raises (its own message, with the OS error)."""
    from safetensors import SafetensorError

    Path(args[1]).write_bytes(b"\0" * 100)  # it had begun to write
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def test_a_full_disk_while_training_is_one_line_and_the_old_bundle_survives(tiny_bundle, tmp_path, monkeypatch):
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(json.loads((out / "model.json").read_text())["recipe"]))
    monkeypatch.setattr("cnncli.bundle.io.save_file", no_space)
    message = one_line(cli("train", recipe, "--out", out, "--overwrite"))
    assert f"{out}: no space left on device while writing it; {out} is kept as it was" in message
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bundle", "recipe.json"]  # no temporaries


def test_a_full_disk_while_writing_predict_output_is_one_line(tmp_path, monkeypatch):
    out = tmp_path / "rows.csv"
    out.write_text("the previous rows\n")

    def fsync(handle):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    message = one_line(cli("predict", BUNDLES / "text", "great", "-o", out))
    assert f"{out}: no space left on device" in message and f"{out} is kept as it was" in message
    assert out.read_text() == "the previous rows\n" and [path.name for path in tmp_path.iterdir()] == ["rows.csv"]


def small_files(limit: int):
    """For a child process: files may grow to `limit` bytes (past it a write fails with EFBIG, as a
    full disk fails with ENOSPC; Python ignores the SIGXFSZ that comes with it)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def test_writes_the_system_refuses_are_one_line_in_a_real_process(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("a gripping , funny film\n" * 2000)
    out = tmp_path / "rows.csv"
    for arguments in (["-o", out], ["-o", out, "--resume"]):
        done = subprocess.run([sys.executable, "-m", "cnncli", "predict", BUNDLES / "text", "--lines", lines,
                               *arguments], env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                              text=True, preexec_fn=small_files(20_000), timeout=300)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert f"{out}: file too large" in done.stderr.lower()
    assert 0 < out.stat().st_size <= 20_000  # --resume: the rows written so far are kept


# -- 8. smaller ones ------------------------------------------------------------------------------


def test_terminal_control_sequences_from_data_are_shown_escaped_in_tables(tmp_path):
    from io import StringIO

    from cnncli.output import show

    lines = tmp_path / "lines.txt"
    lines.write_text("clear \x1b[2J the screen\nretitle \x1b]0;owned\x07 it\n")
    result = cli("predict", BUNDLES / "text", "--lines", lines, "--format", "table")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "clear \\x1b[2J the screen" in result.stdout and "\\x1b]0;owned\\x07" in result.stdout
    stream = StringIO()
    show("evaluation", {"data": "\x1b[2Jdata", "n": 2, "accuracy": 0.5, "macro_f1": 0.5, "labels": ["a\x1b[31m", "b"],
                "per_class": {"a\x1b[31m": {"precision": 1, "recall": 1, "f1": 1, "support": 1}},
                "confusion_matrix": [[1, 0], [0, 1]]}, "table", stream)
    assert "\x1b" not in stream.getvalue() and "a\\x1b[31m" in stream.getvalue()
    refused = cli("predict", BUNDLES / "text", "--manifest", tmp_path / "no\x1b]0;owned\x07.csv")
    assert "no\\x1b]0;owned\\x07.csv: " in one_line(refused) and "\x1b" not in refused.stderr  # error lines too


def test_escape_formulas_catches_leading_spaces_and_fullwidth_signs():
    from cnncli.output.rows import escape_formula

    for cell in ("=1+1", "  =1+1", "\u3000=1", "\uff1dHYPERLINK(\"x\")", "\uff0b1", "\uff0d1", "\uff20SUM(A1)",
                 " \t@x", "\t1", "\r1", "-1"):
        assert escape_formula(cell) == "'" + cell, cell
    for cell in ("1", "a = b", " plain", "", "   "):
        assert escape_formula(cell) == cell, cell


@pytest.mark.parametrize("blocks", [
    [{"conv": {"channels": 4, "kernel": 3}, "pool": {"size": 2}}],  # two types in one block
    [{"nil": {}}],
    [{"conv": {"channels": 4, "kernel": 3, "colour": 1}}],
    [{"conv": {"kernel": 3}}],
    [{"conv": {"channels": 4, "kernel": 3, "padding": []}}],
    [{"pool": {"type": "median", "size": 2}}],
    [{"conv": {"channels": 10 ** 9, "kernel": 3}}],
    [3],
])
def test_every_refusal_of_a_recipe_names_the_recipe_file(tmp_path, blocks):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({**tiny_image_recipe(tmp_path / "missing"), "model": {"blocks": blocks}}))
    message = one_line(cli("train", recipe, "--out", tmp_path / "out"))
    assert message.startswith(f"error: {recipe}: model.blocks"), message


def test_a_set_into_a_recipe_value_that_is_not_a_section_names_the_recipe_file(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({**tiny_image_recipe(tmp_path), "data": 5}))
    message = one_line(cli("train", recipe, "--set", "data.root=x", "--out", tmp_path / "out"))
    assert f"--set data.root: data in {recipe} is not a section" in message


def test_audio_settings_that_leave_a_mel_band_without_a_frequency_bin_are_refused(tmp_path):
    from cnncli.errors import CnncliError
    from cnncli.recipe.config import load_config

    blocks = {"blocks": [{"conv": {"channels": 4, "kernel": 3}}]}
    recipe = {"data": {"modality": "audio", "root": str(tmp_path), "audio": {"n_fft": 3, "n_mels": 40}},
              "model": blocks}
    with pytest.raises(CnncliError, match=r"data\.audio\.n_mels: 40 of the 40 mel bands would be empty: n_fft 3 "
                                          r"gives 2 frequency bins"):
        load_config(recipe)
    load_config({"data": {"modality": "audio", "root": str(tmp_path), "audio": {"n_fft": 512, "n_mels": 64}},
                 "model": blocks})


def test_the_empty_mel_band_rule_agrees_with_torchaudio_filters():
    import torch
    from torchaudio.functional import melscale_fbanks

    from cnncli.modalities.audio.options import AudioOptions, empty_mel_bands

    generator = random.Random(8)
    for _ in range(300):
        rate = generator.choice([8000, 16000, 22050, 44100])
        options = AudioOptions(sample_rate=rate, n_fft=generator.choice([3, 8, 32, 64, 128, 256, 512, 2048]),
                               n_mels=generator.choice([1, 8, 20, 40, 64, 128, 256]),
                               f_min=generator.choice([0.0, 20.0, 300.0, rate / 4]),
                               f_max=generator.choice([None, rate / 2 - 1, rate / 3]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchaudio's own warning about empty filters
            filters = melscale_fbanks(options.n_fft // 2 + 1, options.f_min, options.f_max or rate / 2,
                                      options.n_mels, rate, norm="slaney", mel_scale="slaney")
        assert empty_mel_bands(options) == int((filters.max(dim=0).values == 0).sum()), options
        assert torch.isfinite(filters).all()


@pytest.mark.parametrize("change", [
    lambda state: state["std"].__setitem__(3, 0.0),  # divides by zero
    lambda state: state["std"].__setitem__(3, -5.0),
    lambda state: state["mean"].__setitem__(3, 1e39),  # past float32: every input would be "not finite"
    lambda state: state["options"].update(n_fft=3),  # all-zero mel filters
])
def test_a_bundle_whose_audio_state_is_corrupt_is_refused_instead_of_every_input(tmp_path, change):
    bundle = tmp_path / "audio"
    shutil.copytree(BUNDLES / "audio", bundle)
    info = json.loads((bundle / "model.json").read_text())
    change(info["modality"]["state"])
    (bundle / "model.json").write_text(json.dumps(info))
    result = cli("predict", bundle, SAMPLE_WAV, SAMPLE_WAV, "--format", "csv", "--workers", 0)
    assert f"{bundle / 'model.json'}: modality.state." in one_line(result) and result.stdout == ""
