"""Small refusals and quiet edges: an empty input argument, digital silence in a recording to
segment, and one writer per output for every command that writes a folder or a file."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile
import torch
from conftest import REPO, write_two_class_images
from typer.testing import CliRunner

from cnncli.cli.app import app
from cnncli.files.lock import writer_lock

runner = CliRunner()
BUNDLES = REPO / "tests" / "fixtures" / "bundles-v1"
SAMPLE_WAV = REPO / "sample_data" / "audio" / "0_george_0.wav"
SAMPLE_IMAGES = REPO / "sample_data" / "images"
SAMPLE_IMAGE = sorted(SAMPLE_IMAGES.rglob("*.png"))[0]


def cli(*args):
    return runner.invoke(app, [str(argument) for argument in args])


def one_line(result) -> str:
    """The one error line (exit 2, no traceback, nothing on stdout) that ends a refused command."""
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith("error: "), result.stderr
    return result.stderr.strip()


# -- an empty input argument ------------------------------------------------------------------------


@pytest.mark.parametrize("kind, wanted", [("text", "a path or a sentence"), ("image", "a path"), ("audio", "a path")])
def test_an_empty_input_argument_is_refused_instead_of_read_as_the_current_folder(tmp_path, monkeypatch, kind,
                                                                                 wanted):
    (tmp_path / "notes.txt").write_text("a sentence that must not be predicted\n")
    (tmp_path / "one.wav").write_bytes(SAMPLE_WAV.read_bytes())
    (tmp_path / "one.png").write_bytes(SAMPLE_IMAGE.read_bytes())
    monkeypatch.chdir(tmp_path)  # what '' would have named
    assert one_line(cli("predict", BUNDLES / kind, "")) == f"error: inputs: argument 1 is empty (''); expected {wanted}"
    assert "argument 2 is empty ('  ')" in one_line(cli("predict", BUNDLES / kind, "one.png", "  ", "-o", "rows.csv"))
    assert not (tmp_path / "rows.csv").exists()


# -- digital silence in a recording to segment --------------------------------------------------------


@pytest.mark.filterwarnings("error")
def test_segmenting_a_recording_with_stretches_of_exact_zeros_warns_of_nothing(tmp_path):
    from cnncli.bundle.io import load_bundle
    from cnncli.modalities.audio.events import events_in
    from cnncli.modalities.audio.options import AudioOptions
    from cnncli.verbs.predict import predict

    speech, rate = soundfile.read(SAMPLE_WAV, dtype="float32")
    silence = np.zeros(2 * rate, dtype=np.float32)
    recording = tmp_path / "gated.wav"
    soundfile.write(recording, np.concatenate([silence, speech, silence, speech, silence[:rate]]), rate)
    rows = list(predict(load_bundle(BUNDLES / "audio"), [str(recording)], segment=True, workers=0))
    assert len(rows) == 2 and not any(row.error for row in rows)  # (an error row would hide a warning raised)
    for remove_dc in (True, False):
        options = AudioOptions(sample_rate=rate, remove_dc=remove_dc)
        blocks = [np.zeros(5 * rate, dtype=np.float32)]  # nothing but zeros: no sound, and no log10(0)
        assert list(events_in(blocks, rate, "zeros", options, lambda waves: torch.zeros(len(waves)))) == []


# -- one writer per output ------------------------------------------------------------------------------


@pytest.mark.parametrize("command, target, flag", [
    (lambda tmp, out: ["eval", BUNDLES / "image", SAMPLE_IMAGES, "--report", out], "report", "--report"),
    (lambda tmp, out: ["inspect", BUNDLES / "image", "--input", SAMPLE_IMAGE, "--out", out], "pictures", "--out"),
    (lambda tmp, out: ["inspect", tmp / "images", "--out", out], "data-view", "--out"),
    (lambda tmp, out: ["export", BUNDLES / "image", "--out", out], "image.onnx", "--out"),
])
def test_a_second_writer_of_a_report_pictures_or_an_export_is_refused_naming_the_first(tmp_path, command, target,
                                                                                      flag):
    write_two_class_images(tmp_path / "images")
    out = tmp_path / target
    with writer_lock(out, flag):  # the first writer: this process, as a running command would hold it
        message = one_line(cli(*command(tmp_path, out)))
    assert message.startswith(f"error: {flag} {out}: another cnncli process (pid {os.getpid()}) is writing there")
    assert not out.exists() and not (tmp_path / f".{target}.lock").exists()


def test_a_report_folder_is_free_again_once_its_writer_has_ended(tmp_path):
    out = tmp_path / "report"
    with writer_lock(out, "--report"):
        assert one_line(cli("eval", BUNDLES / "image", SAMPLE_IMAGES, "--report", out))
    result = cli("eval", BUNDLES / "image", SAMPLE_IMAGES, "--report", out)
    assert result.exit_code == 0, result.output
    assert (out / "metrics.json").exists() and not (tmp_path / ".report.lock").exists()
