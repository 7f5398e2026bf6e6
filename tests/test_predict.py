"""Batch prediction at scale: worker processes, input order, bad inputs, manifests, --lines,
the default format, --resume after a kill, a closed pipe, ^C.

The bundles are the small ones in tests/fixtures/bundles-v1 (image, audio, text), written by an
older cnncli, so these tests also show that bundles without a temperature predict as they did."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, SAMPLE_IMAGES
from typer.testing import CliRunner

from cnncli.bundle.io import load_bundle
from cnncli.cli.app import app
from cnncli.nn.inference import for_inference, network_outputs
from cnncli.verbs.predict import predict

BUNDLES = REPO / "tests" / "fixtures" / "bundles-v1"
SAMPLE_AUDIO = REPO / "sample_data" / "audio"
runner = CliRunner()


def cli(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def cnncli_process(*args, **options) -> subprocess.Popen:
    """`cnncli` as a user runs it at a terminal: its own process, this checkout's code, ^C
    answered. (A test run started in the background by a non-interactive shell ignores SIGINT,
    and so would cnncli, rightly: Python installs its ^C handler only where SIGINT is default.)"""
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "cnncli", *map(str, args)], env=environment,
                            preexec_fn=_default_interrupt, **options)


def _default_interrupt() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def images(count: int) -> list[str]:
    """`count` sample digits, cycling through the 200 in sample_data (so some repeat)."""
    files = sorted(str(path) for path in SAMPLE_IMAGES.rglob("*.png"))
    return [files[index % len(files)] for index in range(count)]


SENTENCES = ["a gripping , funny film", "dull", "an overlong , tedious and utterly charmless mess of a movie that "
             "never once finds its feet", "great", "not bad at all", "the best thing i have seen this year , and the "
             "cast is wonderful from start to finish", "meh ."]


def assert_same_prediction(row, alone) -> None:
    assert (row.input, row.label, row.error) == (alone.input, alone.label, alone.error)
    assert [label for label, _ in row.top] == [label for label, _ in alone.top]
    assert [score for _, score in row.top] == pytest.approx([score for _, score in alone.top], abs=2e-6)


# -- every row is the prediction of its input alone, in input order, with workers on -------------


@pytest.mark.parametrize("kind, make_inputs", [
    ("image", lambda tmp: images(150) + [str(tmp / "missing.png")] + images(60)),
    ("audio", lambda tmp: sorted(str(path) for path in SAMPLE_AUDIO.glob("*.wav"))[:50]),
    ("text", lambda tmp: [SENTENCES[index % len(SENTENCES)] + " !" * (index % 5) for index in range(120)]),
])
def test_every_row_equals_the_prediction_of_its_input_alone_with_workers_on(kind, make_inputs, tmp_path):
    bundle = load_bundle(BUNDLES / kind)
    inputs = make_inputs(tmp_path)
    rows = list(predict(bundle, inputs, top_k=3, batch_size=8, workers=2, chunk_size=16))
    assert [row.input for row in rows] == inputs
    for row, argument in zip(rows, inputs):
        alone, = predict(bundle, [argument], top_k=3, workers=0)
        assert_same_prediction(row, alone)


def test_a_folder_of_ten_thousand_with_one_percent_corrupt_gives_every_good_row_and_one_error_row_each(tmp_path):
    folder = write_digits(tmp_path / "digits", 10_000)
    corrupt = sorted(folder.glob("*.png"))[5::100]
    for path in corrupt:
        path.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = cli("predict", BUNDLES / "image", folder, "--format", "csv")
    assert result.exit_code == 1
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["input"] for row in rows] == [str(path) for path in sorted(folder.glob("*.png"))]
    bad = [row for row in rows if row["error"]]
    assert [row["input"] for row in bad] == [str(path) for path in corrupt] and len(bad) == 100
    assert all("not a readable image" in row["error"] and not row["label"] for row in bad)
    assert all(row["label"] and float(row["score"]) > 0 for row in rows if not row["error"])
    assert "100 of 10000 inputs could not be read" in result.stderr


def write_digits(folder: Path, count: int) -> Path:
    """`count` PNG copies of the sample digits (tiny real files)."""
    folder.mkdir(parents=True)
    for index, source in enumerate(images(count)):
        shutil.copyfile(source, folder / f"{index:05d}.png")
    return folder


# -- manifests and --lines: other columns come through unchanged ----------------------------------


def test_manifest_columns_come_through_unchanged_in_csv(tmp_path):
    digits = images(5)
    manifest = tmp_path / "photos.csv"
    cells = [{"id": f"{index:03d}", "file": os.path.relpath(path, tmp_path), "label": "seven",
              "note": ['has, comma', 'quote "q"', "ünïcode", "=1+1", ""][index]} for index, path in enumerate(digits)]
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["id", "file", "label", "note"])
        writer.writeheader()
        writer.writerows(cells + [{"id": "005", "file": "", "label": "x", "note": "no file"}])
    result = cli("predict", BUNDLES / "image", "--manifest", manifest, "--format", "csv")
    assert result.exit_code == 1  # the row with an empty file cell
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["id", "file", "label", "note", "predicted_label", "score", "top", "error"]
    assert [{key: row[key] for key in ("id", "file", "label", "note")} for row in rows[:5]] == cells
    alone = [row.label for row in predict(load_bundle(BUNDLES / "image"), digits, workers=0)]
    assert [row["predicted_label"] for row in rows[:5]] == alone
    assert rows[5]["note"] == "no file" and "empty 'file'" in rows[5]["error"]


def test_jsonl_manifest_of_sentences_keeps_every_value_as_it_was(tmp_path):
    manifest = tmp_path / "reviews.jsonl"
    records = [{"review_id": index, "sentence": sentence, "meta": {"stars": index % 5, "tags": ["a", "b"]}}
               for index, sentence in enumerate(SENTENCES)]
    manifest.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    result = cli("predict", BUNDLES / "text", "--manifest", manifest, "--format", "jsonl", "--workers", "0")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [{key: row[key] for key in ("review_id", "sentence", "meta")} for row in rows] == records
    alone = [row.label for row in predict(load_bundle(BUNDLES / "text"), SENTENCES, workers=0)]
    assert [row["label"] for row in rows] == alone and "input" not in rows[0]


def test_lines_reads_one_sentence_per_line_and_reports_a_line_it_cannot_decode(tmp_path):
    lines = tmp_path / "sentences.txt"
    lines.write_bytes("\n".join(SENTENCES[:3]).encode() + b"\ncaf\xe9 latin-1\n\n" + SENTENCES[3].encode() + b"\n")
    result = cli("predict", BUNDLES / "text", "--lines", lines, "--format", "jsonl")
    assert result.exit_code == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["input"] for row in rows] == [*SENTENCES[:3], f"{lines}:4", f"{lines}:5", SENTENCES[3]]
    assert rows[3]["error"] == f"{lines}:4: byte 0xe9 at column 4 is not valid utf-8"
    assert rows[4]["error"] == f"{lines}:5: a blank line, not an input"  # issue 26: a lost input says so
    assert all(row["label"] for row in rows if row["error"] is None)


def test_one_source_of_inputs_at_a_time(tmp_path):
    lines = tmp_path / "l.txt"
    lines.write_text("good\n")
    result = cli("predict", BUNDLES / "text", "good", "--lines", lines)
    assert result.exit_code == 2
    assert "give inputs, --manifest FILE, --lines FILE or --stream SOURCE (one of them)" in result.output


# -- output that fits the shell -------------------------------------------------------------------


def test_the_format_follows_the_output_file_and_csv_is_the_default_for_a_pipe(tmp_path):
    piped = cli("predict", BUNDLES / "text", "good", "bad")
    assert piped.stdout.splitlines()[0] == "input,label,score,top,error"
    result = cli("predict", BUNDLES / "text", "good", "bad", "-o", tmp_path / "rows.jsonl")
    assert result.exit_code == 0 and result.stdout == ""
    assert [json.loads(line)["input"] for line in (tmp_path / "rows.jsonl").read_text().splitlines()] == ["good", "bad"]


def test_a_table_on_a_terminal(tmp_path):
    import pty

    leader, follower = pty.openpty()
    process = cnncli_process("predict", BUNDLES / "text", "a gripping film", stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed
            break
        if not chunk:
            break
        shown += chunk
    assert process.wait(timeout=120) == 0
    text = shown.decode()
    assert "a gripping film" in text and "input" in text and "input,label" not in text


def test_threshold_labels_low_scores_unknown():
    bundle = load_bundle(BUNDLES / "text")
    rows = list(predict(bundle, SENTENCES, workers=0))
    cut = sorted(row.score for row in rows)[3]
    limited = list(predict(bundle, SENTENCES, workers=0, threshold=cut))
    assert [row.label for row in limited] == [row.label if row.score >= cut else "unknown" for row in rows]
    assert [row.top for row in limited] == [row.top for row in rows]
    assert "unknown" in [row.label for row in limited] and len(set(row.label for row in limited)) > 1
    result = cli("predict", BUNDLES / "text", "good", "--threshold", "1.5")
    assert result.exit_code == 2 and "--threshold: a probability between 0 and 1" in result.output


def test_a_closed_pipe_ends_quietly(tmp_path):
    lines = tmp_path / "many.txt"
    lines.write_text("".join(f"{SENTENCES[index % 7]} {index}\n" for index in range(20_000)))
    process = cnncli_process("predict", BUNDLES / "text", "--lines", lines, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    head = subprocess.run(["head", "-3"], stdin=process.stdout, capture_output=True, timeout=300)
    process.stdout.close()
    errors = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, errors
    assert head.stdout.decode().splitlines()[0] == "input,label,score,top,error" and len(head.stdout.splitlines()) == 3
    assert "Traceback" not in errors and "Exception ignored" not in errors and "BrokenPipe" not in errors


def test_resume_after_a_kill_writes_the_file_an_uninterrupted_run_writes(tmp_path):
    listing = "".join(path + "\n" for path in images(1300))
    whole = tmp_path / "whole.csv"
    assert cli("predict", BUNDLES / "image", "-", "-o", whole, "--top-k", "2", input=listing).exit_code == 0
    resumed = tmp_path / "resumed.csv"
    process = cnncli_process("predict", BUNDLES / "image", "-", "-o", resumed, "--resume", "--top-k", "2",
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    process.stdin.write("".join(listing.splitlines(keepends=True)[:1100]).encode())  # then it waits for more
    process.stdin.flush()
    workers = wait_for_workers(process, resumed)
    process.kill()
    process.wait()
    with open(resumed, "ab") as handle:
        handle.write(b"sample_data/images/3/t10k-0")  # as if the kill had cut a row short
    assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers)), "orphaned workers"
    assert len(resumed.read_text().splitlines()) < 1300
    result = cli("predict", BUNDLES / "image", "-", "-o", resumed, "--resume", "--top-k", "2", input=listing)
    assert result.exit_code == 0, result.output
    assert resumed.read_bytes() == whole.read_bytes()
    again = cli("predict", BUNDLES / "image", "-", "-o", resumed, "--resume", "--top-k", "2",
                input=listing.replace("/0/", "/1/", 1))
    assert again.exit_code == 2 and "--resume: row 1 of the output is for" in again.output


def test_interrupt_stops_the_workers_and_exits_130_without_a_traceback(tmp_path):
    out = tmp_path / "rows.csv"
    process = cnncli_process("predict", BUNDLES / "image", "-", "-o", out, stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    process.stdin.write("".join(path + "\n" for path in images(1100)).encode())
    process.stdin.flush()
    workers = wait_for_workers(process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    errors = process.stderr.read().decode()
    assert "interrupted" in errors and "Traceback" not in errors
    assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers))
    assert not out.exists() and not list(tmp_path.glob(".rows.csv.tmp-*"))  # no half file under its name


def children(pid: int) -> list[int]:
    try:
        return [int(child) for task in os.listdir(f"/proc/{pid}/task")
                for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:
        return []


def wait_for_workers(process: subprocess.Popen, output: Path | None = None) -> list[int]:
    """The worker processes of a running `cnncli predict` (and, given, once its output has rows)."""
    assert wait_until(lambda: len(children(process.pid)) >= 2 and (
        output is None or (output.exists() and output.stat().st_size > 0))), process.stderr.read1().decode()
    return children(process.pid)


def wait_until(condition, seconds: float = 120.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("kind, inputs", [
    ("image", lambda: images(40)),
    ("audio", lambda: sorted(str(path) for path in SAMPLE_AUDIO.glob("*.wav"))[:20]),
    ("text", lambda: SENTENCES),
])
def test_the_inference_copy_computes_what_the_trained_network_does(kind, inputs):
    bundle = load_bundle(BUNDLES / kind)
    weights = {name: tensor.clone() for name, tensor in bundle.network.state_dict().items()}
    fast = for_inference(bundle.network, torch.device("cpu"))
    samples = list(bundle.modality.expand_inputs(inputs()))
    encoded = bundle.modality.encode_many(samples).tensor
    with torch.no_grad():
        expected = bundle.network.eval()(encoded)
    torch.testing.assert_close(network_outputs(fast, bundle.modality, encoded, 8, torch.device("cpu")), expected,
                               atol=2e-5, rtol=1e-5)
    assert all(torch.equal(tensor, weights[name]) for name, tensor in bundle.network.state_dict().items())
    batch_norms = lambda network: [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]  # noqa: E731
    assert not batch_norms(fast) and (kind == "text" or batch_norms(bundle.network))  # folded into the convolutions
    max_pools = lambda network: [m for m in network.modules() if isinstance(m, torch.nn.AdaptiveMaxPool2d)]  # noqa: E731
    assert not max_pools(fast) and (kind != "text" or max_pools(bundle.network))  # Kim's max over time: one amax


@pytest.mark.parametrize("kernel, stride, size", [(2, None, (9, 14)), (3, None, (11, 7)), ((2, 3), None, (8, 10)),
                                                  (3, 2, (9, 9))])
def test_a_tiling_max_pool_becomes_strided_maxima_with_the_same_values(kernel, stride, size):
    from cnncli.nn.inference import TiledMax

    pool = torch.nn.MaxPool2d(kernel, stride=stride)
    fast = for_inference(torch.nn.Sequential(pool), torch.device("cpu"))
    assert isinstance(fast[0], TiledMax) == (stride is None)  # overlapping windows keep max_pool2d
    x = torch.randn(3, 4, *size, generator=torch.Generator().manual_seed(0))
    x[0, 1, 2, 3] = float("nan")
    for layout in (torch.contiguous_format, torch.channels_last):
        got = fast(x.contiguous(memory_format=layout))
        torch.testing.assert_close(got, pool(x), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("channels, width, kernel, stride, padding, bias", [
    (1, 16, 3, 1, 2, True), (1, 16, 5, 1, 0, True), (2, 7, 4, 2, 1, False), (3, 5, 1, 1, 0, True)])
def test_a_full_width_convolution_becomes_one_product_with_the_same_values(channels, width, kernel, stride, padding,
                                                                            bias):
    from cnncli.nn.blocks import FullWidthConv2d
    from cnncli.nn.inference import RowProduct

    torch.manual_seed(0)
    conv = FullWidthConv2d(channels, 6, (kernel, width), stride=(stride, 1), padding=(padding, 0), bias=bias)
    fast = for_inference(torch.nn.Sequential(conv), torch.device("cpu"))
    assert isinstance(fast[0], RowProduct)
    for rows, length in ((3, kernel), (3, 9), (3, 23), (200, 12), (200, 12), (400, 12)):  # the last two: conv1d's
        x = torch.randn(rows, channels, length, width)
        with torch.no_grad():
            torch.testing.assert_close(fast(x), conv(x), atol=1e-5, rtol=1e-5)


def test_the_convolution_runs_large_batches_and_repeated_shapes_the_product_the_rest(monkeypatch):
    from cnncli.nn.blocks import FullWidthConv2d
    from cnncli.nn.inference import RowProduct

    fast = RowProduct(FullWidthConv2d(1, 4, (3, 8), padding=(2, 0)))
    convolved = []
    real = torch.nn.functional.conv1d
    monkeypatch.setattr(torch.nn.functional, "conv1d", lambda *args: convolved.append(args[0].shape) or real(*args))
    small, large = RowProduct.SMALL, RowProduct.LARGE
    shapes = [(small // 10, 12), (small // 10, 13), (small // 10, 13), (large // 10, 12), (4, 12), (4, 12)]
    with torch.no_grad():
        for rows, length in shapes:
            fast(torch.randn(rows, 1, length, 8))
    # windows: 1,400 (new shape: product), 1,500 twice (the repeat: conv1d), 5,600 (conv1d), 56 (product) twice
    assert [shape[0] for shape in convolved] == [small // 10, large // 10]


def test_resume_keeps_the_whole_chunks_a_run_wrote_and_redoes_the_rest(tmp_path):
    manifest = tmp_path / "reviews.jsonl"
    records = [{"id": index, "sentence": f"{SENTENCES[index % 7]} {index}", "ok": index % 3 == 0}
               for index in range(1100)]
    manifest.write_text("".join(json.dumps(record) + "\n" for record in records))
    whole = tmp_path / "whole.jsonl"
    assert cli("predict", BUNDLES / "text", "--manifest", manifest, "-o", whole).exit_code == 0
    lines = whole.read_text().splitlines(keepends=True)
    assert [json.loads(line)["id"] for line in lines] == list(range(1100))
    marked = json.loads(lines[0]) | {"score": 0.123}  # a row the rerun must keep, not recompute
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps(marked) + "\n" + "".join(lines[1:700]) + lines[700][:25])
    result = cli("predict", BUNDLES / "text", "--manifest", manifest, "-o", partial, "--resume")
    assert result.exit_code == 0, result.output
    resumed = partial.read_text().splitlines(keepends=True)
    assert json.loads(resumed[0])["score"] == 0.123  # the first chunk of 512 rows was kept
    assert resumed[1:] == lines[1:]  # rows 513-700 (an unfinished chunk) were predicted again, as before


def test_resume_with_escaped_formulas_recognises_the_rows_it_wrote(tmp_path):
    lines = tmp_path / "sentences.txt"
    lines.write_text("".join(f"{'=-+@'[index % 4]} {SENTENCES[index % 7]} {index}\n" for index in range(700)))
    whole, partial = tmp_path / "whole.csv", tmp_path / "partial.csv"
    arguments = ("predict", BUNDLES / "text", "--lines", lines, "--escape-formulas")
    assert cli(*arguments, "-o", whole).exit_code == 0
    cells = [row[0] for row in csv.reader(io.StringIO(whole.read_text(encoding="utf-8")))]
    assert cells[1].startswith("'= ") and cells[2].startswith("'- ")  # shown, not run, by a spreadsheet
    partial.write_bytes(b"".join(whole.read_bytes().splitlines(keepends=True)[:600]))
    result = cli(*arguments, "-o", partial, "--resume")
    assert result.exit_code == 0, result.output
    assert partial.read_bytes() == whole.read_bytes()
