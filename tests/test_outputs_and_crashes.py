"""Issue 13, items 7 to 9: outputs checked before the work, names that are not UTF-8 written back,
no gap and no leftovers when a bundle is replaced or a process is killed, the umask respected."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from typer.testing import CliRunner

from cnncli.cli.app import app
from cnncli.files.atomic import open_file, remove_stale_temporaries, staged_folder, write_file

runner = CliRunner()
TEXT_BUNDLE = REPO / "tests" / "fixtures" / "bundles-v1" / "text"
QUICKSTART = REPO / "recipes" / "quickstart.yaml"


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def dead_pid() -> int:
    """The id of a process that has just ended (so no process has it, for now)."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(finished.stdout)


# -- 7. outputs checked before the work -----------------------------------------------------------


@pytest.mark.parametrize("make_out", [lambda tmp: Path("/proc/cnncli-x"), lambda tmp: tmp / "file" / "sub"])
def test_train_refuses_an_output_it_could_not_write_before_training(tmp_path, make_out):
    (tmp_path / "file").write_text("a file, not a folder")
    started = time.perf_counter()
    result = cli("train", QUICKSTART, "--set", "data.root=/nonexistent", "--out", make_out(tmp_path))
    assert result.exit_code == 2 and "--out" in result.stderr and "cannot write there" in result.stderr, result.output
    assert "nonexistent" not in result.stderr  # refused before the data were looked at
    assert time.perf_counter() - started < 60  # (no training ran; a loose bound, not a timing test)


def test_predict_refuses_a_folder_as_output_and_eval_a_plot_it_cannot_write(tmp_path):
    result = cli("predict", TEXT_BUNDLE, "fine", "--output", tmp_path)
    assert result.exit_code == 2 and "--output" in result.stderr and "is a folder" in result.stderr
    result = cli("eval", TEXT_BUNDLE, "--plot", "/proc/cnncli-x.png")
    assert result.exit_code == 2 and "--plot /proc/cnncli-x.png: cannot write there" in result.stderr


def test_a_file_name_that_is_not_utf8_is_written_back_as_it_was(tiny_bundle, tmp_path):
    name = os.fsdecode(b"caf\xe9.png")  # latin-1 bytes: \udce9 once decoded
    source = sorted((tiny_bundle.parent / "images" / "left").glob("*.png"))[0]
    shutil.copy(source, tmp_path / name)
    out_csv, out_jsonl = tmp_path / "out.csv", tmp_path / "out.jsonl"
    assert cli("predict", tiny_bundle, tmp_path / name, "--format", "csv", "--output", out_csv).exit_code == 0
    assert os.fsencode(tmp_path / name) in out_csv.read_bytes()
    assert cli("predict", tiny_bundle, tmp_path / name, "--format", "jsonl", "--output", out_jsonl).exit_code == 0
    out_jsonl.read_bytes().decode("utf-8")  # the JSON stays UTF-8 ...
    row = json.loads(out_jsonl.read_text())
    assert os.fsencode(row["input"]) == os.fsencode(tmp_path / name)  # ... and gives the name back
    assert cli("predict", tiny_bundle, tmp_path / name).exit_code == 0  # the table on stdout


# -- 8. crash safety ------------------------------------------------------------------------------


def test_replacing_a_bundle_leaves_the_new_one_and_no_temporaries(tmp_path):
    target = tmp_path / "bundle"
    for version in (b"one", b"two"):
        with staged_folder(target) as staging:
            (staging / "weights").write_bytes(version)
    assert (target / "weights").read_bytes() == b"two"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bundle"]


def test_stale_temporaries_of_dead_processes_are_removed_by_the_next_write(tmp_path):
    gone, alive = dead_pid(), os.getppid()
    stale_folder = tmp_path / f".bundle.tmp-{gone}-0a1b2c3d"
    stale_folder.mkdir()
    (stale_folder / "weights.safetensors").write_bytes(b"half")
    stale_old = tmp_path / f".bundle.old-{gone}-00ff00ff"
    stale_old.mkdir()
    in_progress = tmp_path / f".bundle.tmp-{alive}-deadbeef"
    in_progress.mkdir()
    stale_file = tmp_path / f".out.csv.tmp-{gone}-12345678"
    stale_file.write_text("partial rows")
    unrelated = tmp_path / ".bundle.tmp-notes"
    unrelated.write_text("mine")
    with staged_folder(tmp_path / "bundle") as staging:
        (staging / "model.json").write_text("{}")
    write_file(tmp_path / "out.csv", b"rows\n")
    assert not stale_folder.exists() and not stale_old.exists() and not stale_file.exists()
    assert in_progress.exists() and unrelated.exists()
    assert remove_stale_temporaries(tmp_path / "bundle") == []


def test_sigterm_during_predict_output_leaves_no_temporary_file(tmp_path):
    out = tmp_path / "out.csv"
    process = subprocess.Popen([sys.executable, "-m", "cnncli", "predict", str(TEXT_BUNDLE), "-", "--format", "csv",
                                "--output", str(out)], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    process.stdin.write(b"a first sentence\n")
    process.stdin.flush()
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.csv.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the output is open, and predict waits for more lines on stdin
    assert list(tmp_path.glob(".out.csv.tmp-*")), "predict never opened its output"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert b"terminated" in stderr and b"Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []  # neither out.csv nor its temporary


def test_an_open_file_that_fails_leaves_the_previous_content(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("previous\n")
    with pytest.raises(KeyboardInterrupt):
        with open_file(target) as stream:
            stream.write("half")
            raise KeyboardInterrupt
    assert target.read_text() == "previous\n" and list(tmp_path.iterdir()) == [target]


# -- 9. permissions -------------------------------------------------------------------------------


@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o027, 0o750, 0o640), (0o022, 0o755, 0o644)])
def test_bundles_and_outputs_get_the_permissions_the_umask_allows(tmp_path, umask, folder_mode, file_mode):
    from cnncli.bundle.io import load_bundle, save_bundle

    bundle = load_bundle(TEXT_BUNDLE)
    previous = os.umask(umask)
    try:
        out = save_bundle(tmp_path / "bundle", bundle.network, bundle.config, bundle.labels, bundle.modality,
                          status="complete", split={}, metrics={}, training={}, log=[])
        write_file(tmp_path / "rows.csv", b"x\n")
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == folder_mode
    for path in [*out.iterdir(), tmp_path / "rows.csv"]:
        assert path.stat().st_mode & 0o777 == file_mode, path
